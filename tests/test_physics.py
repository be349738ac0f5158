"""Identities of the forward model and the costs (docs/conventions.md section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latenttune.physics import amplitude_misfit, crop, forward, pad, poisson_llk


def _random_object(rng: np.random.Generator, n: int = 8, batch: tuple[int, ...] = ()) -> np.ndarray:
    """A compact random complex object inside the n-box (so the box oversamples it)."""
    shape = batch + (n, n, n)
    amp = rng.random(shape)
    core = np.zeros((n, n, n))
    core[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1
    phase = rng.uniform(-np.pi, np.pi, shape)
    return (amp * core * np.exp(1j * phase)).astype(np.complex64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_pad_crop_round_trip_and_centre(rng):
    d = _random_object(rng, 8, (2,))
    p = pad(d)
    assert p.shape == (2, 16, 16, 16)
    assert np.array_equal(crop(p), d)
    # object index n//2 lands on box index N//2
    assert p[1, 8, 8, 8] == d[1, 4, 4, 4]
    # everything outside the central block is zero
    assert np.abs(p).sum() == pytest.approx(np.abs(d).sum(), rel=1e-6)


def test_parseval(rng):
    d = _random_object(rng, 8, (3,))
    intensity = forward(d)
    assert intensity.dtype == np.float32
    assert intensity.shape == (3, 16, 16, 16)
    np.testing.assert_allclose(intensity.sum(axis=(1, 2, 3)), (np.abs(d) ** 2).sum(axis=(1, 2, 3)), rtol=1e-5)


def test_peak_at_centre_for_positive_object(rng):
    d = np.abs(_random_object(rng, 8)).astype(np.complex64)
    intensity = forward(d)
    assert np.unravel_index(np.argmax(intensity), intensity.shape) == (8, 8, 8)


def test_intensity_blind_to_global_phase_translation_and_twin(rng):
    d = _random_object(rng, 8)
    reference = forward(d)
    scale = reference.max()
    phase_rotated = forward(d * np.exp(1j * 0.7).astype(np.complex64))
    translated = forward(np.roll(d, (1, -2, 1), axis=(0, 1, 2)))  # object stays inside the box
    twin = forward(np.conj(np.flip(d)))
    for other in (phase_rotated, translated, twin):
        np.testing.assert_allclose(other, reference, atol=2e-5 * scale)
    # and it is not blind to everything: a different object differs
    assert np.abs(forward(_random_object(rng, 8)) - reference).max() > 1e-2 * scale


def test_numpy_and_torch_agree(rng):
    d = _random_object(rng, 8, (2,))
    measured = forward(_random_object(rng, 8)) * 1e3
    mask = np.zeros(measured.shape, bool)
    mask[6:10, 6:10, 6:10] = True
    i_np = forward(d)
    i_t = forward(torch.from_numpy(d))
    assert isinstance(i_t, torch.Tensor) and i_t.dtype == torch.float32
    np.testing.assert_allclose(i_t.numpy(), i_np, rtol=1e-5, atol=1e-6 * i_np.max())
    for cost in (amplitude_misfit, poisson_llk):
        c_np = cost(i_np, measured, mask)
        c_t = cost(i_t, torch.from_numpy(measured), torch.from_numpy(mask))
        assert c_np.shape == (2,) and tuple(c_t.shape) == (2,)
        np.testing.assert_allclose(c_t.numpy(), c_np, rtol=1e-4)


def test_amplitude_misfit_flux_invariant_and_bounded(rng):
    d = _random_object(rng, 8)
    intensity = forward(d)
    assert amplitude_misfit(intensity, 37.0 * intensity) == pytest.approx(0.0, abs=1e-6)
    other = forward(_random_object(rng, 8))
    c = float(amplitude_misfit(other, intensity))
    assert 0.01 < c <= 1.0
    assert float(amplitude_misfit(other * 5, intensity * 1e4)) == pytest.approx(c, rel=1e-4)


def test_amplitude_misfit_hand_computed():
    pred = np.zeros((2, 2, 2))
    meas = np.zeros((2, 2, 2))
    pred[0, 0, 0], pred[1, 1, 1] = 1.0, 4.0  # amplitudes 1, 2
    meas[0, 0, 0], meas[1, 1, 1] = 4.0, 4.0  # amplitudes 2, 2
    s = (1 * 2 + 2 * 2) / (1 + 4)  # 1.2
    expected = ((s * 1 - 2) ** 2 + (s * 2 - 2) ** 2) / 8.0
    assert float(amplitude_misfit(pred, meas)) == pytest.approx(expected, rel=1e-12)


def test_masked_voxels_never_enter_the_cost(rng):
    d = _random_object(rng, 8)
    measured = forward(_random_object(rng, 8))
    mask = np.zeros(measured.shape, bool)
    mask[8, :, :] = True
    garbage = measured.copy()
    garbage[mask] = 1e9
    for cost in (amplitude_misfit, poisson_llk):
        assert float(cost(forward(d), garbage, mask)) == pytest.approx(float(cost(forward(d), measured, mask)), rel=1e-6)
        assert float(cost(forward(d), garbage, mask)) != pytest.approx(float(cost(forward(d), garbage)), rel=1e-3)


def test_poisson_llk_is_about_one_at_the_noise_level(rng):
    d = np.abs(_random_object(rng, 16)).astype(np.complex64)
    intensity = forward(d).astype(np.float64)
    intensity = intensity / intensity.sum() * 3e6 + 50.0  # moderate counts everywhere
    counts = rng.poisson(intensity).astype(np.float64)
    llk_true = float(poisson_llk(intensity, counts))
    assert llk_true == pytest.approx(1.0, abs=0.05)
    llk_wrong = float(poisson_llk(np.roll(intensity, 1, axis=0), counts))
    assert llk_wrong > 2 * llk_true


def test_batched_costs_broadcast_against_one_pattern(rng):
    d = _random_object(rng, 8, (4,))
    measured = forward(d[2]) * 100
    costs = amplitude_misfit(forward(d), measured)
    assert costs.shape == (4,)
    assert int(np.argmin(costs)) == 2
    for b in range(4):
        assert costs[b] == pytest.approx(float(amplitude_misfit(forward(d[b]), measured)), rel=1e-5)


@pytest.mark.parametrize("cost", [amplitude_misfit, poisson_llk])
def test_torch_vjp_matches_finite_differences(rng, cost):
    d = torch.from_numpy(_random_object(rng, 4).astype(np.complex128)).requires_grad_(True)
    measured = torch.from_numpy(forward(_random_object(rng, 4)).astype(np.float64) * 100 + 1.0)
    mask = torch.zeros(measured.shape, dtype=torch.bool)
    mask[4, 4, :] = True
    assert torch.autograd.gradcheck(lambda x: cost(forward(x), measured, mask), (d,), eps=1e-6, atol=1e-6)


def test_bad_inputs_raise_clear_errors(rng):
    with pytest.raises(ValueError, match="`d` must"):
        pad(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="cubic"):
        forward(np.zeros((4, 4, 5), np.complex64))
    with pytest.raises(ValueError, match="same \\(N, N, N\\) grid"):
        amplitude_misfit(np.ones((8, 8, 8)), np.ones((16, 16, 16)))
    with pytest.raises(ValueError, match="`mask` must"):
        amplitude_misfit(np.ones((8, 8, 8)), np.ones((8, 8, 8)), np.zeros((4, 4, 4), bool))
    with pytest.raises(ValueError, match="`n`"):
        crop(np.ones((8, 8, 8)), 9)
