"""Tests of sim.training: reproducible, independent training pairs."""

from __future__ import annotations


import numpy as np
import pytest

from sim.detector import Detector
from sim.forward import forward
from sim.training import TRAINING_FAMILIES, TrainingPair, TrainingPairGenerator

N_SMALL = 12


def test_pair_shapes_and_types():
    p = TrainingPairGenerator(n=N_SMALL, seed=0).sample(0)
    assert isinstance(p, TrainingPair)
    assert p.intensity.dtype == np.float32 and p.intensity.shape == (24, 24, 24)
    assert p.density.dtype == np.complex64 and p.density.shape == (12, 12, 12)
    assert p.mask.dtype == bool and p.mask.shape == (24, 24, 24)
    assert 1e6 <= p.photons <= 1e9
    assert p.family.split(":")[0] in TRAINING_FAMILIES
    assert np.abs(p.density).max() <= 1.0 + 1e-6


def test_reproducible_per_index_and_order_independent():
    g = TrainingPairGenerator(n=N_SMALL, seed=3)
    a = g.sample(7)
    for i in (1, 2, 3):
        g.sample(i)
    b = TrainingPairGenerator(n=N_SMALL, seed=3).sample(7)
    for x, y in ((a, b), (a, g.sample(7))):
        np.testing.assert_array_equal(x.intensity, y.intensity)
        np.testing.assert_array_equal(x.density, y.density)
        np.testing.assert_array_equal(x.mask, y.mask)
        assert x.photons == y.photons and x.family == y.family


def test_different_indices_and_seeds_differ():
    g = TrainingPairGenerator(n=N_SMALL, seed=3)
    d = [g.sample(i).density for i in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(d[i], d[j])
    assert not np.array_equal(g.sample(0).density, TrainingPairGenerator(n=N_SMALL, seed=4).sample(0).density)


@pytest.mark.parametrize("family", TRAINING_FAMILIES)
def test_each_family(family):
    g = TrainingPairGenerator(n=N_SMALL, seed=1, mix={family: 1.0}, photons_range=(1e7, 1e7))
    for i in range(2):
        p = g.sample(i)
        assert p.family.split(":")[0] == family
        # Photons: total counts match the drawn expectation.
        assert p.photons == pytest.approx(1e7)
        assert abs(p.intensity.sum(dtype=np.float64) - 1e7) < 6 * np.sqrt(1e7)
        # Global phase removed: sum(d) real and positive.
        s = p.density.sum(dtype=np.complex128)
        assert abs(s.imag) <= 1e-3 * abs(s) + 1e-6 and s.real >= 0


def test_noise_free_mode_and_detector_mask():
    det = Detector(beamstop_radius=1.5, gap_width=1, gaps=((2, 3),))
    g = TrainingPairGenerator(n=N_SMALL, seed=2, photons_range=None, detector=det)
    p = g.sample(0)
    assert np.isnan(p.photons)
    np.testing.assert_array_equal(p.mask, det.sensor_mask(24))
    ideal = forward(p.density)
    np.testing.assert_allclose(p.intensity[~p.mask], ideal[~p.mask], rtol=1e-6)
    assert np.all(p.intensity[p.mask] == 0)
    noisy = TrainingPairGenerator(n=N_SMALL, seed=2, detector=det).sample(0)
    assert noisy.mask[12, 12, 12] and np.all(noisy.intensity[noisy.mask] == 0)


def test_photons_log_uniform_in_range():
    g = TrainingPairGenerator(n=8, seed=5, photons_range=(1e6, 1e9), mix={"static": 1.0})
    logp = np.log10([g.sample(i).photons for i in range(40)])
    assert logp.min() >= 6 and logp.max() <= 9
    assert 6.8 < logp.mean() < 8.2 and logp.std() > 0.5


def test_batch_stacks_samples():
    g = TrainingPairGenerator(n=8, seed=0)
    b = g.batch([4, 1, 4])
    assert b.intensity.shape == (3, 16, 16, 16) and b.density.shape == (3, 8, 8, 8)
    assert b.mask.shape == (3, 16, 16, 16) and b.photons.shape == (3,) and len(b.family) == 3
    np.testing.assert_array_equal(b.density[1], g.sample(1).density)
    np.testing.assert_array_equal(b.intensity[0], b.intensity[2])


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(n=4), "n"),
        (dict(seed=-1), "seed"),
        (dict(photons_range=(1e9, 1e6)), "photons_range"),
        (dict(photons_range=(0.0, 1e6)), "photons_range"),
        (dict(mix={"melted": 1.0}), "mix"),
        (dict(mix={"static": -1.0}), "mix"),
        (dict(mix={"static": 0.0}), "mix"),
        (dict(radius=(0.3, 0.6)), "radius"),
        (dict(max_offset=5.0), "radius"),
        (dict(max_dislocations=0), "max_dislocations"),
    ],
)
def test_config_validation(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        TrainingPairGenerator(**kwargs)


def test_index_validation():
    g = TrainingPairGenerator(n=8)
    with pytest.raises(ValueError, match="`index`"):
        g.sample(-1)
    with pytest.raises(ValueError, match="`indices`"):
        g.batch([])
    with pytest.raises(TypeError, match="`detector`"):
        TrainingPairGenerator(detector="pilatus")
