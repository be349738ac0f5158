"""The controller's hot path ``LatentCost``: values, masking, agreement with the physics costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latenttune.model.latent_cost import LatentCost
from latenttune.physics import amplitude_misfit, forward, poisson_llk

K, n, N = 4, 8, 16


def _latents(count: int, seed: int) -> torch.Tensor:
    return (torch.rand(count, K, generator=torch.Generator().manual_seed(seed)) - 0.5) * 1.6


@pytest.fixture
def z0() -> torch.Tensor:
    return _latents(1, seed=11)[0]


@pytest.fixture
def measured(lively_model, z0) -> np.ndarray:
    """Noise-free pattern of the decoded ``z0`` at a flux of 1e6 (numpy float32)."""
    with torch.no_grad():
        return (forward(lively_model.decode(z0)) * 1e6)[0].numpy()


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((N, N, N), bool)
    m[N // 2 - 1 : N // 2 + 2, N // 2 - 1 : N // 2 + 2, N // 2 - 1 : N // 2 + 2] = True  # beamstop
    m[:, 3, :] = True  # a detector gap
    return m


def test_shape_and_dtype(lively_model, measured):
    cost = LatentCost(lively_model, measured)
    values = cost(_latents(5, seed=1).numpy())
    assert isinstance(values, np.ndarray) and values.shape == (5,) and values.dtype == np.float32
    one = cost(np.zeros(K))
    assert one.shape == (1,) and one.dtype == np.float32
    assert cost.evaluations == 6
    values, density = cost.evaluate(_latents(2, seed=2))
    assert values.shape == (2,) and density.shape == (2, n, n, n) and density.dtype == torch.complex64


def test_own_noise_free_pattern_costs_nothing(lively_model, measured, z0):
    cost = LatentCost(lively_model, measured)
    at_truth = cost(z0)[0]
    assert at_truth < 1e-5
    others = cost(_latents(6, seed=3))
    assert (others > at_truth).all() and (others > 1e-3).all()
    # the flux is unknown: any overall scale of the pattern gives the same answer
    np.testing.assert_allclose(LatentCost(lively_model, measured * 1e-4)(z0), cost(z0), atol=1e-6)


def test_masked_voxels_are_ignored(lively_model, measured, mask):
    garbage = np.where(mask, np.float32(1e12), measured).astype(np.float32)
    zeros = np.where(mask, np.float32(0), measured).astype(np.float32)
    z = _latents(4, seed=4)
    masked_garbage = LatentCost(lively_model, garbage, mask)(z)
    np.testing.assert_array_equal(masked_garbage, LatentCost(lively_model, zeros, mask)(z))
    assert not np.allclose(masked_garbage, LatentCost(lively_model, garbage)(z), atol=1e-3)
    # a (1, N, N, N) mask is the same mask
    np.testing.assert_array_equal(LatentCost(lively_model, garbage, mask[None])(z), masked_garbage)


@pytest.mark.parametrize(
    "z", [np.zeros(K + 1), np.zeros((2, K - 1)), np.zeros((2, 3, K)), np.zeros(())], ids=["long", "short", "3d", "scalar"]
)
def test_bad_latent_shape_names_z(lively_model, measured, z):
    with pytest.raises(ValueError, match="`z`"):
        LatentCost(lively_model, measured)(z)


def test_bad_construction(lively_model, measured, mask):
    with pytest.raises(ValueError, match="`cost`"):
        LatentCost(lively_model, measured, cost="chi2")
    with pytest.raises(ValueError, match="`intensity`"):
        LatentCost(lively_model, np.stack([measured, measured]))
    with pytest.raises(ValueError, match="`intensity`"):
        LatentCost(lively_model, np.zeros_like(measured))
    with pytest.raises(ValueError, match="`intensity`"):
        LatentCost(lively_model, measured[:8])
    with pytest.raises(ValueError, match="`mask`"):
        LatentCost(lively_model, measured, np.stack([mask, mask]))


@pytest.mark.parametrize("name, function", [("amplitude", amplitude_misfit), ("poisson", poisson_llk)])
@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_the_physics_cost_exactly(lively_model, measured, mask, name, function, use_mask):
    counts = np.random.default_rng(5).poisson(measured).astype(np.float32)  # real counts for the Poisson cost
    m = mask if use_mask else None
    z = _latents(3, seed=6)
    got = LatentCost(lively_model, counts, m, cost=name)(z)
    with torch.no_grad():
        expected = function(
            forward(lively_model.decode(z)), torch.from_numpy(counts), None if m is None else torch.from_numpy(m)
        )
    np.testing.assert_array_equal(got, expected.numpy().astype(np.float32))
    assert name == "poisson" or (got < 1).all()
