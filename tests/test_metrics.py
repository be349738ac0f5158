"""Tests for latenttune.metrics: identities and invariances of the figures of merit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latenttune.metrics import (
    AlignmentResult,
    amplitude_error,
    chi,
    phase_rms,
    poisson_llk,
    r_factor,
    real_space_error,
    real_space_errors,
)
from sim.forward import crop, fft_centred, forward, ifft_centred, pad

N_OBJ = 16


def _object(n: int = N_OBJ, centre=(0.0, 0.0, 0.0), radius: float = 5.0) -> np.ndarray:
    """Smooth, compact, asymmetric complex object (not equal to its own twin)."""
    x = np.arange(n) - n // 2
    X, Y, Z = np.meshgrid(x - centre[0], x - centre[1], x - centre[2], indexing="ij")
    r2 = (X / radius) ** 2 + (Y / (0.8 * radius)) ** 2 + (Z / (0.7 * radius)) ** 2
    rho = np.clip(1 - r2, 0, None) ** 3
    lobe = ((X - 2.5) ** 2 + (Y + 1) ** 2 + Z**2) / 6.0
    rho = rho + 0.6 * np.clip(1 - lobe, 0, None) ** 3
    phi = 0.1 * X + 0.025 * Y**2 - 0.04 * X * Z
    return (rho * np.exp(1j * phi)).astype(np.complex64)


def _fourier_shift(d: np.ndarray, t) -> np.ndarray:
    """Move ``d`` by ``+t`` voxels (subpixel) with a Fourier shift on the padded grid."""
    N = 2 * d.shape[0]
    f = np.fft.fftshift(np.fft.fftfreq(N))
    ramp = np.exp(
        -2j * np.pi * (f[:, None, None] * t[0] + f[None, :, None] * t[1] + f[None, None, :] * t[2])
    )
    return crop(ifft_centred(fft_centred(pad(d.astype(np.complex128))) * ramp))


def _twin(d: np.ndarray) -> np.ndarray:
    return np.conj(np.flip(d))


# ------------------------------------------------------------------ real space error


D0 = _object()
SHIFTED = np.roll(D0, (2, -1, 1), axis=(0, 1, 2)) * (0.5 * np.exp(1j * 0.7))


@pytest.mark.parametrize(
    "estimate, expect_twin",
    [
        (D0, False),
        (np.exp(1j * 2.1) * D0, False),
        (np.roll(D0, (3, 0, -2), axis=(0, 1, 2)), False),
        (_twin(D0), True),
        (SHIFTED, False),
        (_twin(SHIFTED), True),
        (np.roll(_twin(D0), (-1, 2, 0), axis=(0, 1, 2)) * np.exp(-1j), True),
    ],
    ids=["copy", "phase", "shift", "twin", "shift+phase+scale", "twin+shift+phase", "twin+roll"],
)
def test_exact_ambiguities_give_zero_error(estimate, expect_twin):
    res = real_space_error(D0, estimate)
    assert isinstance(res, AlignmentResult)
    assert res.error < 1e-5
    assert res.twin is expect_twin
    assert res.aligned.dtype == np.complex64 and res.aligned.shape == D0.shape
    np.testing.assert_allclose(res.aligned, D0, atol=1e-5)


def test_shift_and_gamma_recovered():
    res = real_space_error(D0, SHIFTED)
    # estimate = D0 moved by +(2, -1, 1): aligning needs t = -(2, -1, 1)
    np.testing.assert_allclose(res.shift, (-2.0, 1.0, -1.0), atol=1e-12)
    assert abs(res.gamma - 2.0 * np.exp(-1j * 0.7)) < 1e-5
    assert not res.aligned.flags.writeable


def test_twin_search_matters():
    twin = _twin(SHIFTED)
    assert real_space_error(D0, twin, twin=False).error > 0.1
    assert real_space_error(D0, twin, twin=True).error < 1e-5


@pytest.mark.parametrize("t", [(0.4, 0.0, 0.0), (0.4, -0.3, 0.25)])
def test_subpixel_shift(t):
    est = _fourier_shift(D0, t)
    res = real_space_error(D0, est)
    assert res.error < 1e-2
    np.testing.assert_allclose(res.shift, -np.asarray(t), atol=0.051)
    coarse = real_space_error(D0, est, subpixel=False)
    assert coarse.error > 10 * res.error
    assert all(float(s).is_integer() for s in coarse.shift)


def test_error_grows_with_noise_and_is_bounded_by_noise_norm():
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(D0.shape) + 1j * rng.standard_normal(D0.shape)) / math.sqrt(2)
    errors = []
    for level in (0.003, 0.01, 0.03, 0.1, 0.3):
        est = D0 + level * np.abs(D0).max() * noise
        e = real_space_error(D0, est).error
        # the identity alignment (t = 0, gamma = 1) is one candidate of the minimum
        bound = np.linalg.norm(est - D0) / np.linalg.norm(D0)
        assert e <= bound + 1e-9
        errors.append(e)
    assert np.all(np.diff(errors) > 0)
    assert errors[0] < 0.05 and errors[-1] > 0.3


def test_unrelated_objects_give_large_error():
    other = _object(centre=(2, -1, 1), radius=4.0)[::-1].transpose(1, 0, 2)
    res = real_space_error(D0, other)
    assert 0.4 < res.error <= 1.0
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(D0.shape) + 1j * rng.standard_normal(D0.shape)
    assert real_space_error(D0, noise).error > 0.8


def test_invariant_to_estimate_scale_and_matches_fienup_form():
    est = _fourier_shift(D0, (0.3, 1.0, -0.2)) + 0.05 * _object(centre=(1, 1, 0), radius=3.0)
    a = real_space_error(D0, est)
    b = real_space_error(D0, 3.7 * np.exp(0.4j) * est)
    assert abs(a.error - b.error) < 1e-9
    assert abs(b.gamma * 3.7 * np.exp(0.4j) - a.gamma) < 1e-9 * abs(a.gamma)
    # integer search: compare with a brute-force circular-free correlation over all shifts
    r = real_space_error(D0, est, subpixel=False, twin=False)
    d0 = D0.astype(np.complex128)
    best = 0.0
    n = N_OBJ
    P0 = np.zeros((2 * n,) * 3, complex)
    P0[:n, :n, :n] = d0
    for s in np.ndindex(3, 3, 3):
        t = np.array(s) - 1 + np.round(r.shift).astype(int)
        P = np.zeros((2 * n,) * 3, complex)
        P[:n, :n, :n] = est
        P = np.roll(P, t, axis=(0, 1, 2))
        best = max(best, abs(np.vdot(P, P0)) ** 2 / (np.vdot(P, P).real * np.vdot(d0, d0).real))
    assert abs(r.error - math.sqrt(1 - best)) < 1e-9


def test_accepts_real_and_torch_inputs():
    import torch

    res = real_space_error(torch.from_numpy(D0), torch.from_numpy(SHIFTED))
    assert res.error < 1e-5
    assert real_space_error(np.abs(D0), np.roll(np.abs(D0), 1, axis=0)).error < 1e-6


def test_real_space_errors_batch():
    ests = np.stack([D0, SHIFTED, _fourier_shift(D0, (0.4, 0, 0))])
    errs = real_space_errors(D0, ests)
    assert errs.shape == (3,) and errs.dtype == np.float64
    for e, est in zip(errs, ests):
        assert e == real_space_error(D0, est).error
    np.testing.assert_allclose(real_space_errors(np.stack([D0] * 3), ests), errs)
    with pytest.raises(ValueError, match="`estimates`"):
        real_space_errors(D0, D0)
    with pytest.raises(ValueError, match="`references`"):
        real_space_errors(D0[:8], ests)


@pytest.mark.parametrize(
    "ref, est, kwargs, match",
    [
        (np.zeros_like(D0), D0, {}, "`reference`"),
        (D0, np.zeros_like(D0), {}, "`estimate`"),
        (D0, D0[:8, :8, :8], {}, "same shape|shape of `reference`"),
        (D0[0], D0[0], {}, "3-D"),
        (D0, D0, {"upsample_factor": 0}, "`upsample_factor`"),
        (D0, D0, {"upsample_factor": 2.5}, "`upsample_factor`"),
        (D0, np.where(D0 != 0, np.nan, 0), {}, "finite"),
    ],
)
def test_real_space_error_bad_inputs(ref, est, kwargs, match):
    with pytest.raises(ValueError, match=match):
        real_space_error(ref, est, **kwargs)


# ------------------------------------------------------------------------ phase rms


def test_phase_rms_zero_for_aligned_copy():
    assert phase_rms(D0, SHIFTED) < 1e-4
    assert phase_rms(D0, _twin(SHIFTED)) < 1e-4
    # without alignment a global phase offset shows up as itself
    assert abs(phase_rms(D0, D0 * np.exp(-0.3j), align=False) - 0.3) < 1e-6


def test_phase_rms_measures_phase_noise():
    rng = np.random.default_rng(3)
    sigma = 0.1
    est = D0 * np.exp(1j * sigma * rng.standard_normal(D0.shape))
    support = np.abs(D0) > 0.1 * np.abs(D0).max()
    assert support.sum() > 100
    value = phase_rms(D0, np.roll(est, (1, 1, 0), axis=(0, 1, 2)) * np.exp(0.5j))
    assert abs(value - sigma) < 0.2 * sigma
    assert abs(phase_rms(D0, est, align=False) - value) < 0.05 * sigma


def test_phase_rms_bad_inputs():
    with pytest.raises(ValueError, match="`support_threshold`"):
        phase_rms(D0, D0, support_threshold=1.0)
    with pytest.raises(ValueError, match="shape of `reference`"):
        phase_rms(D0, D0[:8, :8, :8], align=False)


# --------------------------------------------------------------- reciprocal space


TINY_P = np.array([1.0, 4.0]).reshape(1, 1, 2)
TINY_M = np.array([4.0, 4.0]).reshape(1, 1, 2)


def test_hand_computed_values():
    # |F| = (1, 2), A = (2, 2), sum(A^2) = 8, sum(A) = 4, s = (2 + 4) / 5 = 1.2
    assert amplitude_error(TINY_P, TINY_M, scale=False) == pytest.approx(1 / 8, rel=1e-14)
    assert amplitude_error(TINY_P, TINY_M) == pytest.approx(0.8 / 8, rel=1e-14)
    assert chi(TINY_P, TINY_M) == pytest.approx(math.sqrt(0.1), rel=1e-14)
    assert r_factor(TINY_P, TINY_M, scale=False) == pytest.approx(0.25, rel=1e-14)
    assert r_factor(TINY_P, TINY_M) == pytest.approx((0.8 + 0.4) / 4, rel=1e-14)
    # s_p = 8/5, Ic = (1.6, 6.4): LLK = 4 ln(4/1.6) + 4 ln(4/6.4) + (1.6 + 6.4 - 8)
    assert poisson_llk(TINY_P, TINY_M) == pytest.approx(4 * math.log(2.5 * 0.625), rel=1e-14)
    assert poisson_llk(TINY_P, TINY_M, scale=False) == pytest.approx(
        4 * math.log(4) + 1 - 4 + 0, rel=1e-14
    )
    assert isinstance(amplitude_error(TINY_P, TINY_M), float)


def test_amplitude_error_is_design_cost_and_zero_for_scaled_copy():
    I = forward(D0)
    assert amplitude_error(1e5 * I, I) < 1e-14
    assert r_factor(3.0 * I, I) < 1e-7
    expected = (math.sqrt(3) - 1) ** 2
    assert amplitude_error(3.0 * I, I, scale=False) == pytest.approx(expected, rel=1e-6)
    # docs/conventions.md section 2 cost: sum((s sqrt(Ip) - sqrt(Im))^2) / sum(Im)
    Ip = forward(_object(radius=4.5)).astype(np.float64)
    Im = I.astype(np.float64)
    s = np.sum(np.sqrt(Ip * Im)) / np.sum(Ip)
    cost = np.sum((s * np.sqrt(Ip) - np.sqrt(Im)) ** 2) / np.sum(Im)
    assert amplitude_error(Ip, Im) == pytest.approx(cost, rel=1e-12)
    # the fitted scale can only help
    assert amplitude_error(Ip, Im) <= amplitude_error(Ip, Im, scale=False)


def test_masked_voxels_are_ignored():
    rng = np.random.default_rng(4)
    Ip = forward(_object(radius=4.5)).astype(np.float64)
    Im = rng.poisson(1e3 * forward(D0) / forward(D0).max()).astype(np.float64)
    mask = rng.random(Im.shape) < 0.2
    expected = {
        f: f(Ip[~mask].reshape(1, 1, -1), Im[~mask].reshape(1, 1, -1))
        for f in (amplitude_error, r_factor, poisson_llk)
    }
    Ip_bad, Im_bad = Ip.copy(), Im.copy()
    Ip_bad[mask] = 1e9
    Im_bad[mask] = np.where(rng.random(mask.sum()) < 0.5, np.nan, -5.0)
    for f, value in expected.items():
        assert f(Ip_bad, Im_bad, mask) == pytest.approx(value, rel=1e-12)
        assert f(Ip_bad, Im_bad, mask.astype(np.uint8)) == pytest.approx(value, rel=1e-12)
        assert f(Ip, Im, mask) != pytest.approx(f(Ip, Im), rel=1e-6)


def test_batched_patterns():
    I1, I2 = forward(D0), forward(_object(radius=4.5))
    pred = np.stack([I1, I2])
    meas = np.stack([2 * I1, I1])
    mask = np.zeros(I1.shape, bool)
    mask[16, 16, 16] = True
    for f in (amplitude_error, r_factor, poisson_llk):
        out = f(pred, meas, mask)
        assert isinstance(out, np.ndarray) and out.shape == (2,)
        for k in range(2):
            assert out[k] == pytest.approx(f(pred[k], meas[k], mask), rel=1e-12)
    out = chi(pred, meas)
    np.testing.assert_allclose(out, np.sqrt(amplitude_error(pred, meas)))


def test_poisson_llk_is_one_at_noise_level():
    rng = np.random.default_rng(5)
    lam = rng.uniform(10, 1000, size=(32, 32, 32))
    counts = rng.poisson(lam).astype(np.float64)
    llk = poisson_llk(7.3 * lam, counts)  # unknown flux scale is fitted
    assert abs(llk - 1.0) < 0.05
    assert poisson_llk(lam, counts, scale=False) == pytest.approx(
        poisson_llk(lam, counts), abs=0.01
    )
    # a wrong model is clearly worse
    wrong = lam * (1 + 0.3 * rng.standard_normal(lam.shape)).clip(0.1)
    assert poisson_llk(wrong, counts) > 3.0
    # a realistic pattern: counts from the forward model, low-count voxels masked
    I = forward(D0).astype(np.float64)
    lam = 1e4 * I / I.max()
    mask = lam < 10
    assert (~mask).sum() > 500
    counts = rng.poisson(lam).astype(np.float64)
    assert abs(poisson_llk(I, counts, mask) - 1.0) < 0.15
    assert poisson_llk(forward(_object(radius=4.5)), counts, mask) > 5.0


def test_poisson_llk_infinite_when_prediction_misses_counts():
    assert poisson_llk(np.array([0.0, 1.0]).reshape(1, 1, 2), TINY_M, scale=False) == math.inf


@pytest.mark.parametrize("func", [amplitude_error, r_factor, poisson_llk])
def test_intensity_bad_inputs(func):
    I = forward(D0)
    with pytest.raises(ValueError, match="same shape"):
        func(I, I[:-1])
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        func(I[0], I[0])
    with pytest.raises(ValueError, match="`measured_intensity` must be >= 0"):
        func(I, I - 1.0)
    with pytest.raises(ValueError, match="`predicted_intensity` must be finite"):
        func(np.full_like(I, np.nan), I)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        func(I, I, np.zeros((4, 4, 4), bool))
    with pytest.raises(TypeError, match="`mask`"):
        func(I, I, np.zeros(I.shape, float))
    with pytest.raises(ValueError, match="at least one voxel unmasked"):
        func(I, I, np.ones(I.shape, bool))
    with pytest.raises(ValueError, match="`measured_intensity` must have some signal"):
        amplitude_error(I, np.zeros_like(I))
    with pytest.raises(ValueError, match="`measured_intensity` must have some signal"):
        r_factor(I, np.zeros_like(I))
    with pytest.raises(ValueError, match="`predicted_intensity` must have some signal"):
        poisson_llk(np.zeros_like(I), I)
