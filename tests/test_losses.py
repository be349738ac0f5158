"""Training losses: their identities and the ambiguities they must not punish."""

from __future__ import annotations

import math

import pytest
import torch

from latenttune.model.losses import (
    LossWeights,
    amplitude_loss,
    centre_density,
    phase_loss,
    real_space_loss,
    reciprocal_loss,
    smoothness_loss,
    twin,
)
from latenttune.physics import forward

n = 8


def _blob(centre: tuple[float, float, float], seed: int, size: int = n, radius: float = 2.6) -> torch.Tensor:
    """A compact, lumpy complex object centred at ``centre``: amplitude in [0, 1], varying phase.

    The support (an ellipsoid of semi-axes about ``radius``) stays off the box edges, so the
    discrete twin is an exact reflection and the object fits the padded diffraction box.
    """
    g = torch.Generator().manual_seed(seed)
    axis = torch.arange(size, dtype=torch.float32)
    x, y, z = torch.meshgrid(axis - centre[0], axis - centre[1], axis - centre[2], indexing="ij")
    r2 = x**2 / radius**2 + y**2 / (1.2 * radius) ** 2 + z**2 / (0.85 * radius) ** 2
    amplitude = (1 - r2).clamp_min(0) * (0.4 + torch.rand(size, size, size, generator=g))
    amplitude = amplitude / amplitude.max()
    a, b, c = 2 * torch.rand(3, generator=g) - 1
    phase = a * x + b * y * y / 3 + c * x * z / 2
    return torch.polar(amplitude, phase).to(torch.complex64)


def _centroid(density: torch.Tensor) -> torch.Tensor:
    w = density.abs()
    idx = torch.arange(density.shape[-1], dtype=w.dtype)
    return torch.stack(
        [(w.sum(dim=tuple(a for a in range(3) if a != axis)) * idx).sum() / w.sum() for axis in range(3)]
    )


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two different batches (2, n, n, n) of centred objects: predictions and targets."""
    pred = torch.stack([_blob((4, 4, 4), 1), _blob((4.2, 3.8, 4), 2)])
    target = torch.stack([_blob((4, 4.3, 3.9), 3, radius=2.2), _blob((3.9, 4, 4.1), 4, radius=2.9)])
    return pred, target


# ---- centring and the twin ------------------------------------------------------------------


def test_centre_density_moves_centroid_to_the_middle_and_keeps_values():
    density = torch.stack([_blob((3.0, 5.0, 2.6), 5, size=16), _blob((10.2, 7.7, 9.4), 6, size=16)])
    centred = centre_density(density)
    for before, after in zip(density, centred):
        assert (_centroid(after) - 8).abs().max() <= 0.5 + 1e-4
        # an integer roll: the same voxel values, rearranged
        assert torch.equal(torch.sort(after.abs().flatten()).values, torch.sort(before.abs().flatten()).values)
        torch.testing.assert_close(after.abs().square().sum(), before.abs().square().sum())
    # already centred objects do not move
    assert torch.equal(centre_density(centred), centred)


def test_twin_is_an_involution_invisible_to_the_intensity(pair):
    _, target = pair
    assert torch.equal(twin(twin(target)), target)
    assert not torch.allclose(twin(target), target)
    torch.testing.assert_close(forward(twin(target)), forward(target), rtol=1e-4, atol=1e-6)


def test_twin_reflects_about_the_centre_index():
    delta = torch.zeros(1, n, n, n, dtype=torch.complex64)
    delta[0, n // 2, n // 2, n // 2] = 1j
    assert torch.equal(twin(delta), delta.conj())
    off = torch.zeros(1, n, n, n, dtype=torch.complex64)
    off[0, n // 2 + 1, n // 2 - 2, n // 2] = 2.0
    assert twin(off)[0, n // 2 - 1, n // 2 + 2, n // 2] == 2.0


# ---- real-space terms -------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.7, -2.0, math.pi])
def test_real_space_loss_ignores_global_phase(pair, angle):
    pred, target = pair
    phased = pred * torch.polar(torch.tensor(1.0), torch.tensor(angle))
    for got, expected in zip(real_space_loss(phased, target), real_space_loss(pred, target)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_real_space_loss_ignores_the_twin(pair):
    pred, target = pair
    for got, expected in zip(real_space_loss(pred, twin(target)), real_space_loss(pred, target)):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    # a prediction equal to the twin of the target (with any global phase) costs nothing
    loss, amp, phase = real_space_loss(twin(target) * 1j, target)
    assert (loss < 1e-5).all() and (amp < 1e-10).all() and (phase < 1e-5).all()
    # while an unrelated prediction does cost something
    assert (real_space_loss(pred, target)[0] > 0.05).all()


def test_real_space_loss_weights(pair):
    pred, target = pair
    loss, amp, phase = real_space_loss(pred, target, LossWeights(amplitude=2.0, phase=0.5))
    torch.testing.assert_close(loss, 2.0 * amp + 0.5 * phase)


def test_amplitude_loss_zero_for_identical_amplitudes(pair):
    pred, target = pair
    assert torch.equal(amplitude_loss(target, target), torch.zeros(2))
    other_phase = torch.polar(target.abs(), pred.angle())
    assert (amplitude_loss(other_phase, target) < 1e-10).all()
    assert (amplitude_loss(pred, target) > 1e-3).all()
    assert amplitude_loss(pred, target).shape == (2,)


def test_phase_loss_range_and_constant_offset(pair):
    pred, target = pair
    g = torch.Generator().manual_seed(9)
    for _ in range(5):
        noisy = torch.polar(torch.rand(2, n, n, n, generator=g), 6 * torch.rand(2, n, n, n, generator=g))
        value = phase_loss(noisy, target)
        assert ((value >= 0) & (value <= 1)).all()
        assert (value > 0.1).all()  # random phases disagree
    offset = phase_loss(target * torch.polar(torch.tensor(0.5), torch.tensor(1.3)), target)
    assert (offset.abs() < 1e-5).all()  # a constant phase offset (and any amplitude scale) is free
    assert phase_loss(target, target).abs().max() < 1e-5


# ---- reciprocal and smoothness terms -------------------------------------------------------------


@pytest.mark.parametrize("flux", [1.0, 1e-3, 1e6])
def test_reciprocal_loss_vanishes_on_own_intensity(pair, flux):
    pred, target = pair
    intensity = forward(pred) * flux
    assert (reciprocal_loss(pred, intensity, None) < 1e-5).all()
    mask = torch.zeros(2 * n, 2 * n, 2 * n, dtype=torch.bool)
    mask[n - 2 : n + 2, n - 2 : n + 2, n - 2 : n + 2] = True
    garbage = torch.where(mask, torch.full_like(intensity, 1e9), intensity)
    assert (reciprocal_loss(pred, garbage, mask) < 1e-5).all()
    assert (reciprocal_loss(pred, forward(target) * flux, None) > 1e-2).all()


def test_smoothness_loss_is_non_negative_and_zero_for_constant_decoder(tiny_model, pair):
    z = torch.rand(2, 4, generator=torch.Generator().manual_seed(3)) - 0.5
    value = smoothness_loss(tiny_model.decode_tensor, z, 0.05, generator=torch.Generator().manual_seed(0))
    assert value.shape == (2,) and (value >= 0).all() and (value > 0).all()
    again = smoothness_loss(tiny_model.decode_tensor, z, 0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(value, again)  # the generator makes it reproducible

    _, target = pair

    def constant(latents: torch.Tensor) -> torch.Tensor:
        return target[:1].expand(latents.shape[0], n, n, n)

    state = torch.random.get_rng_state()
    flat = smoothness_loss(constant, z, 0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flat, torch.zeros(2))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched


def test_smoothness_loss_uses_given_density(tiny_model):
    z = torch.zeros(2, 4)
    density = tiny_model.decode_tensor(z)
    a = smoothness_loss(tiny_model.decode_tensor, z, 0.1, density, torch.Generator().manual_seed(1))
    b = smoothness_loss(tiny_model.decode_tensor, z, 0.1, None, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_smoothness_loss_of_an_affine_decoder(pair):
    """For ``D(z) = D0 + sum_i z_i A_i`` the penalty is ``||sum_i e_i A_i||^2 / (||D0||^2 k)``, whatever the step."""
    _, target = pair
    base = target[0]
    directions = torch.stack([_blob((4, 4, 4), 20 + i) for i in range(3)])  # (k, n, n, n)

    def affine(latents: torch.Tensor) -> torch.Tensor:
        return base + torch.einsum("bk,kxyz->bxyz", latents.to(torch.complex64), directions)

    z = torch.full((2, 3), 0.1)
    e = torch.randn(z.shape, generator=torch.Generator().manual_seed(4))
    expected = torch.einsum("bk,kxyz->bxyz", e.to(torch.complex64), directions).abs().square().sum(dim=(1, 2, 3))
    expected = expected / (affine(z).abs().square().sum(dim=(1, 2, 3)) * 3)
    for step in (1e-3, 1e-2):
        value = smoothness_loss(affine, z, step, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(value, expected, rtol=2e-3, atol=0)


@pytest.mark.parametrize("name", ["amplitude", "phase", "reciprocal", "smoothness"])
def test_loss_weights_reject_negative(name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        LossWeights(**{name: -1.0})
    with pytest.raises(ValueError, match="`smoothness_step`"):
        LossWeights(smoothness_step=0.0)
