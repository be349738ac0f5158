"""The autoencoder: shapes and bounds, flux and mask invariances, smoothness, checkpoints, input checks."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest
import torch

from latenttune.model import (
    SCHEMA_VERSION,
    LatentAutoencoder,
    ModelConfig,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

K, n, N = 4, 8, 16


def _latents(count: int, seed: int = 0, spread: float = 1.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(count, K, generator=g) - 0.5) * spread


def _random_mask(seed: int = 0, fraction: float = 0.2) -> np.ndarray:
    mask = np.random.default_rng(seed).random((N, N, N)) < fraction
    mask[N // 2, N // 2, N // 2] = True  # a beamstop-like voxel at q = 0
    return mask


# ---- shapes and bounds --------------------------------------------------------------------


def test_encode_shape_and_open_box(tiny_model, tiny_patterns):
    intensity, _ = tiny_patterns
    z = tiny_model.encode(intensity)
    assert z.shape == (3, K) and z.dtype == torch.float32
    assert (z.abs() < 1).all()
    single = tiny_model.encode(intensity[1])
    assert single.shape == (1, K)
    # even huge pre-activations stay inside the open box (tanh bound)
    assert tiny_model.latent_bounds[0].tolist() == [-1.0] * K and tiny_model.latent_bounds[1].tolist() == [1.0] * K


def test_encode_stays_in_the_box_when_saturated(tiny_config, tiny_patterns):
    intensity, _ = tiny_patterns
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        model = LatentAutoencoder(tiny_config).eval()
    with torch.no_grad():
        model.encoder.head[-1].weight.mul_(1e4)  # pre-activations far outside [-1, 1]
        z = model.encode(intensity)
    assert z.abs().max() <= 1 and z.abs().max() > 0.99


def test_decode_shape_dtype_and_amplitude_range(lively_model):
    z = torch.cat([_latents(5), torch.ones(1, K), -torch.ones(1, K)])
    d = lively_model.decode(z)
    assert d.shape == (7, n, n, n) and d.dtype == torch.complex64
    amplitude = d.abs()
    assert amplitude.min() >= 0 and amplitude.max() <= 1
    assert lively_model.decode(z[0].numpy()).shape == (1, n, n, n)  # numpy (k,) accepted


@pytest.mark.parametrize("factor", [1e-3, 37.5, 1e4])
def test_encode_is_flux_independent(tiny_model, tiny_patterns, factor):
    intensity, _ = tiny_patterns
    mask = _random_mask(1)
    z = tiny_model.encode(intensity, mask)
    z_scaled = tiny_model.encode(intensity * np.float32(factor), mask)
    torch.testing.assert_close(z_scaled, z, atol=1e-6, rtol=0)


def test_mask_acts_only_through_masked_voxels(tiny_model, tiny_patterns):
    intensity, _ = tiny_patterns
    mask = _random_mask(2)
    zeros = np.where(mask, 0.0, intensity).astype(np.float32)
    garbage_values = np.random.default_rng(3).uniform(-1e6, 1e9, intensity.shape).astype(np.float32)
    garbage = np.where(mask, garbage_values, intensity).astype(np.float32)
    z_zeros = tiny_model.encode(zeros, mask)
    z_garbage = tiny_model.encode(garbage, mask)
    assert torch.equal(z_zeros, z_garbage)
    # the same mask given per pattern (B, N, N, N) is the same thing
    assert torch.equal(tiny_model.encode(garbage, np.broadcast_to(mask, intensity.shape).copy()), z_zeros)
    # and the mask does matter: unmasked, the garbage changes the encoding
    assert not torch.allclose(tiny_model.encode(np.abs(garbage)), z_zeros, atol=1e-4)


# ---- smoothness of the decoder ---------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_model", "lively_model"])
def test_nearby_latents_decode_to_nearby_densities(fixture, request):
    model = request.getfixturevalue(fixture)
    z = _latents(4, seed=5, spread=1.2)
    u = torch.randn(4, K, generator=torch.Generator().manual_seed(6))
    u = u / u.norm(dim=1, keepdim=True)
    with torch.no_grad():
        d0 = model.decode(z)
        norm = d0.abs().square().sum(dim=(1, 2, 3)).sqrt()

        def relative_change(eps: float) -> torch.Tensor:
            return (model.decode(z + eps * u) - d0).abs().square().sum(dim=(1, 2, 3)).sqrt() / norm

        big, small = relative_change(1e-2), relative_change(1e-3)
    assert (big < 0.1).all()
    assert (small > 0).all()
    ratio = big / small
    assert ((ratio > 7) & (ratio < 13)).all(), ratio  # linear in eps: a Lipschitz, differentiable decoder


# ---- batch of one --------------------------------------------------------------------------


@pytest.mark.parametrize("no_grad", [True, False])
def test_batch_of_one_equals_batched_path(lively_model, tiny_patterns, no_grad):
    z = _latents(2, seed=7)
    intensity, _ = tiny_patterns
    with torch.set_grad_enabled(not no_grad):
        one = lively_model.decode(z[0][None])
        batched = lively_model.decode(z)[0]
        z_one = lively_model.encode(intensity[:1])
        z_batched = lively_model.encode(intensity)[0]
    assert one.shape == (1, n, n, n) and z_one.shape == (1, K)
    torch.testing.assert_close(one[0], batched, atol=1e-5, rtol=0)
    torch.testing.assert_close(z_one[0], z_batched, atol=1e-5, rtol=0)
    assert one.requires_grad is not no_grad  # the doubling shortcut is inference-only


def test_cpu_fast_path_equals_torch_reference_path(lively_model, tiny_patterns):
    """oneDNN in channels-last with fused heads gives what plain torch conv3d gives, values and gradients."""
    z = _latents(3, seed=11).requires_grad_(True)
    intensity, _ = tiny_patterns
    fast = lively_model.decode(z)
    (fast_grad,) = torch.autograd.grad(fast.abs().square().sum(), z)
    fast_z = lively_model.encode(intensity)
    with torch.backends.mkldnn.flags(enabled=False):
        reference = lively_model.decode(z)
        (reference_grad,) = torch.autograd.grad(reference.abs().square().sum(), z)
        reference_z = lively_model.encode(intensity)
    # float32 sums over 27 x C_in terms in another order: agreement to float32 rounding, no better
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast_grad, reference_grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_z, reference_z, atol=1e-5, rtol=1e-4)


# ---- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip_is_bit_exact(tmp_path, lively_model, tiny_patterns):
    path = tmp_path / "model.pt"
    recipe = {"model": lively_model.config.to_dict(), "train": {"steps": 3}}
    checksum = save_checkpoint(path, lively_model, recipe=recipe, extra={"note": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # atomic: no temporary left

    loaded = load_model(path)
    assert loaded.checksum == checksum and loaded.recipe == recipe and loaded.extra == {"note": "test"}
    assert loaded.model.config == lively_model.config
    assert not loaded.model.training
    intensity, _ = tiny_patterns
    z = _latents(3, seed=8)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(intensity), lively_model.encode(intensity))
        assert torch.equal(loaded.model.decode(z), lively_model.decode(z))

    raw = torch.load(path, weights_only=True)
    assert raw["schema_version"] == SCHEMA_VERSION
    assert raw["config"] == lively_model.config.to_dict()
    assert "recipe" in raw and "state_dict" in raw
    ckpt = load_checkpoint(path)
    assert ckpt["config"] == lively_model.config and ckpt["recipe"] == recipe and ckpt["extra_state"] == {}


def test_checksum_tracks_the_weights(tmp_path, tiny_model, lively_model):
    a = save_checkpoint(tmp_path / "a.pt", tiny_model)
    b = save_checkpoint(tmp_path / "b.pt", lively_model)
    again = save_checkpoint(tmp_path / "c.pt", tiny_model)
    assert a == again and a != b


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not a checkpoint", "not a readable latenttune checkpoint"),
        ("truncated", "not a readable latenttune checkpoint"),
        (_torch_bytes([1, 2, 3]), "no schema_version"),
        (_torch_bytes({"state_dict": {}}), "no schema_version"),
        (_torch_bytes({"schema_version": SCHEMA_VERSION + 98, "config": {}}), f"schema {SCHEMA_VERSION + 98}"),
        (_torch_bytes({"schema_version": SCHEMA_VERSION, "state_dict": {}}), "lacks"),
    ],
    ids=["garbage", "truncated", "not-a-dict", "no-schema", "wrong-schema", "missing-keys"],
)
def test_bad_checkpoint_is_a_clear_value_error(tmp_path, tiny_model, content, message):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        save_checkpoint(path, tiny_model)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(path)


def test_checkpoint_with_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"schema_version": SCHEMA_VERSION, "payload": Fraction(1, 3)}, path)  # not an allowed global
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(path)


# ---- configuration --------------------------------------------------------------------------


def test_model_config_round_trip_and_checks(tiny_config):
    assert ModelConfig.from_dict(tiny_config.to_dict()) == tiny_config
    assert tiny_config.N == 16
    with pytest.raises(ValueError, match="colour"):
        ModelConfig.from_dict({**tiny_config.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="`n`"):
        ModelConfig(n=12, decoder_channels=(8, 4, 2))  # 12 is not divisible by 2**3
    with pytest.raises(ValueError, match="`latent_dim`"):
        ModelConfig(latent_dim=0)
    with pytest.raises(ValueError, match="`encoder_channels`"):
        ModelConfig(encoder_channels=())


# ---- bad inputs ---------------------------------------------------------------------------


def _good_intensity() -> np.ndarray:
    return np.ones((N, N, N), np.float32)


def _with(value_at, value) -> np.ndarray:
    x = _good_intensity()
    x[value_at] = value
    return x


@pytest.mark.parametrize(
    "intensity, mask, error, name",
    [
        (np.ones((N, N), np.float32), None, ValueError, "`intensity`"),
        (np.ones((n, n, n), np.float32), None, ValueError, "`intensity`"),  # object grid, not diffraction grid
        (np.ones((2, 1, N, N, N), np.float32), None, ValueError, "`intensity`"),
        (_with((1, 2, 3), np.nan), None, ValueError, "`intensity`"),
        (_with((1, 2, 3), np.inf), None, ValueError, "`intensity`"),
        (_with((1, 2, 3), -5.0), None, ValueError, "`intensity`"),
        (_good_intensity().astype(np.complex64), None, TypeError, "`intensity`"),
        (_good_intensity() > 0, None, TypeError, "`intensity`"),
        (_good_intensity(), np.zeros((N, N), bool), ValueError, "`mask`"),
        (_good_intensity(), np.zeros((n, n, n), bool), ValueError, "`mask`"),
        (np.ones((2, N, N, N), np.float32), np.zeros((3, N, N, N), bool), ValueError, "`mask`"),
    ],
    ids=["2d", "object-grid", "5d", "nan", "inf", "negative", "complex", "bool", "mask-2d", "mask-grid", "mask-batch"],
)
def test_encode_rejects_bad_input(tiny_model, intensity, mask, error, name):
    with pytest.raises(error, match=name):
        tiny_model.encode(intensity, mask)


def test_negative_values_are_allowed_where_masked(tiny_model):
    intensity = _with((1, 2, 3), -5.0)
    mask = np.zeros((N, N, N), bool)
    mask[1, 2, 3] = True
    assert torch.equal(tiny_model.encode(intensity, mask), tiny_model.encode(_with((1, 2, 3), 0.0), mask))


@pytest.mark.parametrize(
    "z, error",
    [
        (np.zeros(K + 1, np.float32), ValueError),
        (np.zeros((2, 3, K), np.float32), ValueError),
        (np.zeros((2, K - 1), np.float32), ValueError),
        (np.array([0.0, np.nan, 0.0, 0.0], np.float32), ValueError),
        (np.array([0.0, np.inf, 0.0, 0.0]), ValueError),
        (np.zeros(K, np.complex64), TypeError),
        (torch.zeros(K, dtype=torch.complex64), TypeError),
    ],
    ids=["long", "3d", "short", "nan", "inf", "complex-numpy", "complex-torch"],
)
def test_decode_rejects_bad_latents(tiny_model, z, error):
    with pytest.raises(error, match="`z`"):
        tiny_model.decode(z)


def test_decode_accepts_float64_and_integer_latents(tiny_model):
    z = np.array([0.25, -0.5, 0.0, 1.0])
    expected = tiny_model.decode(torch.tensor(z, dtype=torch.float32))
    assert torch.equal(tiny_model.decode(z), expected)
    assert torch.equal(tiny_model.decode(np.zeros(K, int)), tiny_model.decode(np.zeros(K, np.float32)))


def test_forward_is_encode_then_decode(tiny_model, tiny_patterns):
    intensity, _ = tiny_patterns
    x = torch.from_numpy(intensity)
    with torch.no_grad():
        z, d = tiny_model(x)
        assert torch.equal(z, tiny_model.encode(intensity))
        assert torch.equal(d, tiny_model.decode(z))
    assert isinstance(tiny_model, LatentAutoencoder)
