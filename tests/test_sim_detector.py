"""Tests of sim.detector: noise statistics, beamstop, gaps, saturation, validation."""

from __future__ import annotations

import numpy as np
import pytest

from sim.detector import Detector, Measurement, beamstop_mask, gap_mask, poisson_counts
from sim.forward import forward
from sim.shapes import Superellipsoid


@pytest.fixture(scope="module")
def intensity() -> np.ndarray:
    return forward(Superellipsoid.sphere(3.0).render(8).astype(np.complex64))  # (16, 16, 16)


def test_total_counts_match_photons(intensity):
    rng = np.random.default_rng(0)
    totals = [Detector(photons=1e6).measure(intensity, rng).counts.sum(dtype=np.float64) for _ in range(20)]
    # Poisson total: mean 1e6, std 1e3; the mean of 20 has std ~224.
    assert abs(np.mean(totals) - 1e6) < 1500
    assert 300 < np.std(totals) < 2000


def test_counts_are_poisson_and_expected_shape(intensity):
    m = Detector(photons=1e5).measure(intensity, np.random.default_rng(1))
    assert isinstance(m, Measurement)
    assert m.counts.dtype == np.float32 and m.mask.dtype == bool and m.counts.shape == intensity.shape
    assert np.all(m.counts == np.round(m.counts)) and m.counts.min() >= 0
    assert not m.mask.any()
    # Expected counts vs measured per voxel: chi^2 per voxel ~ 1 where the rate is large.
    lam = intensity / intensity.sum() * 1e5
    big = lam > 20
    chi2 = np.mean((m.counts[big] - lam[big]) ** 2 / lam[big])
    assert 0.7 < chi2 < 1.3


def test_background_adds_poisson_counts(intensity):
    m = Detector(photons=10.0, background=2.0).measure(intensity, np.random.default_rng(2))
    # Far from q = 0 the sample contributes ~nothing: mean ~ background.
    corner = m.counts[:4, :4, :4]
    assert corner.mean() == pytest.approx(2.0, abs=0.5)


def test_reproducible_with_same_rng(intensity):
    det = Detector(photons=1e4, background=0.1)
    a = det.measure(intensity, np.random.default_rng(5)).counts
    b = det.measure(intensity, np.random.default_rng(5)).counts
    c = det.measure(intensity, np.random.default_rng(6)).counts
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_beamstop_mask_covers_centre_sphere(intensity):
    N = intensity.shape[0]
    m = Detector(photons=1e6, beamstop_radius=2.0).measure(intensity, np.random.default_rng(3))
    x = np.arange(N) - N // 2
    r = np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2)
    assert np.array_equal(m.mask, r <= 2.0)
    assert m.mask[N // 2, N // 2, N // 2] and m.mask[N // 2 + 2, N // 2, N // 2]
    assert not m.mask[N // 2 + 3, N // 2, N // 2]
    assert np.all(m.counts[m.mask] == 0)
    assert not beamstop_mask(N, 0.0).any()
    assert beamstop_mask(N, 0.5).sum() == 1


def test_gap_masks():
    mask = gap_mask(16, ((0, 5), (2, 10)), width=2)
    # Slab along axis 0 at indices 4 and 5 (position 5, width 2).
    assert mask[4, 0, 0] and mask[5, 15, 15] and not mask[6, 0, 0] and not mask[3, 0, 0]
    assert mask[:, :, 9:11].all() and not mask[0, 0, 11] and not mask[0, 0, 8]
    assert mask.sum() == 2 * 256 + 2 * 256 - 2 * 2 * 16
    assert not gap_mask(16, ((0, 5),), width=0).any()


def test_detector_with_gaps_and_beamstop_zeroes_masked(intensity):
    det = Detector(photons=1e6, beamstop_radius=1.0, gap_width=1, gaps=((1, 3),))
    m = det.measure(intensity, np.random.default_rng(4))
    assert m.mask[:, 3, :].all() and m.mask[8, 8, 8]
    assert np.all(m.counts[m.mask] == 0)
    np.testing.assert_array_equal(m.mask, det.sensor_mask(16))


def test_saturation_clips_and_masks(intensity):
    det = Detector(photons=1e7, saturation=5e4)
    m = det.measure(intensity, np.random.default_rng(5))
    lam = intensity / intensity.sum() * 1e7
    # lam > 6e4 lies > 40 sigma above the level: always saturated; lam < 4e4 never.
    assert np.all(m.saturated[lam > 6e4])
    assert m.saturated.any() and np.all(m.mask[m.saturated])
    assert m.counts.max() <= 5e4
    assert np.all(m.counts[m.saturated] == 0)
    assert not m.saturated[lam < 4e4].any()


def test_batched_patterns_scaled_each(intensity):
    batch = np.stack([intensity, 3.0 * intensity])
    m = Detector(photons=1e6, beamstop_radius=0.5).measure(batch, np.random.default_rng(6))
    assert m.counts.shape == batch.shape and m.mask.shape == batch.shape
    totals = m.counts.sum(axis=(1, 2, 3), dtype=np.float64)
    lost = (intensity / intensity.sum())[8, 8, 8] * 1e6
    np.testing.assert_allclose(totals, 1e6 - lost, rtol=0.01)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(photons=0.0), "photons"),
        (dict(photons=np.inf), "photons"),
        (dict(background=-1.0), "background"),
        (dict(beamstop_radius=-0.5), "beamstop_radius"),
        (dict(gap_width=-1), "gap_width"),
        (dict(gap_width=1.5), "gap_width"),
        (dict(gaps=((3, 1),)), "gaps"),
        (dict(gaps=(5,)), "gaps"),
        (dict(saturation=0.0), "saturation"),
    ],
)
def test_detector_validation(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        Detector(**kwargs)


def test_measure_validation(intensity):
    det = Detector()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="`intensity`"):
        det.measure(np.ones((4, 4)), rng)
    with pytest.raises(ValueError, match="`intensity`"):
        det.measure(-intensity, rng)
    with pytest.raises(ValueError, match="`intensity`"):
        det.measure(np.zeros((4, 4, 4)), rng)
    with pytest.raises(ValueError, match="`gaps`"):
        Detector(gap_width=1, gaps=((0, 40),)).measure(intensity, rng)
    with pytest.raises(TypeError, match="`rng`"):
        poisson_counts(intensity, 1e3, 0.0, 0)
