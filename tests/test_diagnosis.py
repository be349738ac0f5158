"""The representation-floor diagnosis (:mod:`latenttune.model.diagnosis`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sim
from latenttune.model.diagnosis import invariant_error_squared, representation_floor
from latenttune.model.losses import twin
from latenttune.metrics import real_space_error


def test_invariant_error_ignores_shift_twin_and_global_phase():
    d0 = sim.make_scenario("dislocation", np.random.default_rng(1), n=16, num_frames=2).density(1)
    t = torch.from_numpy(d0)
    moved = torch.roll(t, shifts=(2, -1, 3), dims=(0, 1, 2)) * np.exp(0.7j)
    twinned = twin(t[None])[0].resolve_conj()
    values = invariant_error_squared(torch.stack([t, moved.to(t.dtype), twinned]), t)
    np.testing.assert_allclose(values.numpy(), 0.0, atol=1e-5)
    other = sim.make_scenario("growth", np.random.default_rng(2), n=16, num_frames=2).density(0)
    e2 = float(invariant_error_squared(torch.from_numpy(other)[None], t)[0])
    assert e2 == pytest.approx(real_space_error(d0, other).error ** 2, abs=0.03)


def test_floor_of_a_decodable_density_is_near_zero(lively_model):
    rng = np.random.default_rng(0)
    z_true = rng.uniform(-0.6, 0.6, lively_model.latent_dim)
    with torch.no_grad():
        truth = lively_model.decode(z_true)[0].numpy()
        start = lively_model.decode(np.zeros(lively_model.latent_dim))[0].numpy()
    result = representation_floor(lively_model, truth, z0=np.zeros(lively_model.latent_dim), starts=3, steps=200, lr=0.05,
                                  rng=rng)
    assert result.error < 0.5 * real_space_error(truth, start).error
    assert result.error == pytest.approx(result.start_errors.min())
    assert result.latent.shape == (lively_model.latent_dim,) and np.all(np.abs(result.latent) < 1)


def test_floor_errors(lively_model):
    n = lively_model.config.n
    with pytest.raises(ValueError, match="`truth` must have shape"):
        representation_floor(lively_model, np.ones((n + 1,) * 3, complex))
    with pytest.raises(ValueError, match="`starts`"):
        representation_floor(lively_model, np.ones((n,) * 3, complex), starts=0)
    with pytest.raises(ValueError, match="`z0`"):
        representation_floor(lively_model, np.ones((n,) * 3, complex), z0=[0.0])
    with pytest.raises(ValueError, match="not all zero"):
        representation_floor(lively_model, np.zeros((n,) * 3, complex))
