"""Physics refinement after tracking (:mod:`latenttune.refine`) and its use in replay."""

from __future__ import annotations


import numpy as np
import pytest
from scipy import ndimage

import sim
from latenttune.io import read_results
from latenttune.metrics import real_space_error
from latenttune.model import load_model, save_checkpoint
from latenttune.refine import RefineSettings, refine_density
from latenttune.replay import replay_series
from latenttune.simulate import simulate_series
from latenttune.tracking import make_strategy

n = 16


@pytest.fixture(scope="module")
def frame():
    """(truth, counts, mask, blurred start) on a 16^3 object grid with a beamstop."""
    rng = np.random.default_rng(3)
    truth = sim.make_scenario("growth", rng, n=n, num_frames=2).density(1)
    measured = sim.Detector(photons=1e8, beamstop_radius=1.0).measure(sim.forward(truth), rng)
    # a rounded, blurred version of the truth: what a decoder that cannot draw facets gives
    start = ndimage.gaussian_filter(np.abs(truth), 1.5).astype(np.complex64)
    return truth, measured.counts, measured.mask, start


def test_refinement_recovers_detail_the_start_lacks(frame):
    truth, counts, mask, start = frame
    before = real_space_error(truth, start).error
    after = real_space_error(truth, refine_density(start, counts, mask)).error
    assert after < 0.7 * before, (before, after)


def test_refinement_keeps_the_truth_and_the_scale(frame):
    truth, counts, mask, _ = frame
    refined = refine_density(truth, counts, mask, RefineSettings(iterations=20, hio_iterations=0))
    assert real_space_error(truth, refined).error < 0.05
    # scaled back to the start's units, not the detector's
    assert 0.8 < np.abs(refined).max() / np.abs(truth).max() < 1.25


def test_masked_voxels_are_left_free(frame):
    """Counts in masked voxels do not matter."""
    truth, counts, mask, start = frame
    settings = RefineSettings(iterations=10, hio_iterations=5)
    garbage = counts.copy()
    garbage[mask] = 1e9
    np.testing.assert_allclose(refine_density(start, garbage, mask, settings),
                               refine_density(start, counts, mask, settings), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"iterations": 0}, "`iterations`"),
        ({"iterations": 10, "hio_iterations": 11}, "`hio_iterations`"),
        ({"beta": 1.5}, "`beta`"),
        ({"support_threshold": 1.0}, "`support_threshold`"),
        ({"support_dilation": -1}, "`support_dilation`"),
        ({"shrinkwrap_sigma": 0.0}, "`shrinkwrap_sigma`"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RefineSettings(**kwargs)


def test_bad_inputs(frame):
    truth, counts, mask, _ = frame
    with pytest.raises(ValueError, match="`intensity` must have shape"):
        refine_density(truth, counts[:-2, :-2, :-2], None)
    with pytest.raises(ValueError, match="`density` must be a cubic"):
        refine_density(truth[:, :, :4], counts, mask)
    with pytest.raises(ValueError, match="`density` must be finite and not all zero"):
        refine_density(np.zeros_like(truth), counts, mask)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        refine_density(truth, counts, mask[:4])
    with pytest.raises(TypeError, match="`settings`"):
        refine_density(truth, counts, mask, settings={"iterations": 5})


def test_replay_stores_the_refined_density_and_its_errors(tmp_path, lively_model):
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, lively_model)
    loaded = load_model(checkpoint)
    small = loaded.model.config.n
    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=3, n=small, photons=1e6, seed=4)
    settings = RefineSettings(iterations=10, hio_iterations=8)
    path, _ = replay_series(series, loaded, make_strategy("es", 4, steps_per_frame=4), tmp_path / "r.h5",
                            refine=settings)
    r = read_results(path)
    assert r["refined_density"].shape == (3, small, small, small)
    assert r["refined_density"].dtype == np.complex64
    assert np.all(np.isfinite(r["E_r_refined"])) and np.all(np.isfinite(r["E_q_refined"]))
    assert np.all(r["refined_seconds"] > 0)
    assert r["attrs"]["refine"]["iterations"] == 10
    # the tracking itself is untouched by the refinement
    plain, _ = replay_series(series, loaded, make_strategy("es", 4, steps_per_frame=4), tmp_path / "p.h5")
    np.testing.assert_array_equal(read_results(plain)["cost"], r["cost"])
    with pytest.raises(TypeError, match="`refine`"):
        replay_series(series, loaded, make_strategy("one-shot", 4), tmp_path / "x.h5", refine=10)
