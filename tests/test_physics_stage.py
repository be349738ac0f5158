"""The physics stage of hybrid tracking (:mod:`latenttune.tracking.physics_stage`) and its use in the tracking loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

import sim
from latenttune.io import open_series, read_results
from latenttune.metrics import real_space_error
from latenttune.model import load_model, save_checkpoint
from latenttune.physics import amplitude_misfit, forward, poisson_llk
from latenttune.tracking.phase_retrieval import refine_density
from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.tracking.physics_stage import (GUIDE_HALF_COUNTS, GUIDE_WEIGHT_MAX, RESTART_STARTS, PhysicsStage,
                                               centred, guide_weight, restart_start)
from latenttune.tracking.replay import replay_series
from latenttune.simulate import simulate_series
from latenttune.tracking import HybridStrategy, make_strategy

n = 16


@pytest.fixture(scope="module")
def frames():
    """Four consecutive frames of a growing crystal (frames 10-13 of 30): (truth, counts, mask, blurred start),
    16^3 grid, beamstop."""
    rng = np.random.default_rng(3)
    scenario = sim.make_scenario("growth", rng, n=n, num_frames=30)
    out = []
    for t in range(10, 14):
        truth = scenario.density(t)
        measured = sim.Detector(photons=1e8, beamstop_radius=1.0).measure(sim.forward(truth), rng)
        # a rounded, blurred version of the truth: what a decoder that cannot draw facets gives
        start = ndimage.gaussian_filter(np.abs(truth), 1.5).astype(np.complex64)
        out.append((truth, measured.counts, measured.mask, start))
    return out


@pytest.fixture(scope="module")
def frame(frames):
    return frames[1]


def test_a_cold_start_runs_longer_than_a_warm_one(frame):
    truth, counts, mask, start = frame
    settings = PhysicsSettings(iterations=5, cold_iterations=40, er_iterations=2)
    cold = refine_density(start, counts, mask, settings)
    np.testing.assert_array_equal(cold, refine_density(start, counts, mask, PhysicsSettings(iterations=40, cold_iterations=40,
                                                                                           er_iterations=2)))
    warm = refine_density(start, counts, mask, settings, start=start)
    np.testing.assert_array_equal(warm, refine_density(start, counts, mask, PhysicsSettings(iterations=5, er_iterations=2),
                                                       start=start))


def _textbook_refinement(guide, counts, mask, settings, start=None):
    """RAAR + ER with shrink-wrap written plainly on the centred grid (``fft_centred`` every step)."""
    import torch

    from latenttune.physics import crop, fft_centred, ifft_centred, pad
    from latenttune.tracking.phase_retrieval import Measurement, _blur, _dilate, _flux_scale, _threshold_support

    free = np.asarray(mask, dtype=bool)
    A = torch.from_numpy(np.sqrt(np.where(free, 0.0, counts.clip(min=0))).astype(np.float32))
    constrained = torch.from_numpy(~free)
    g = torch.from_numpy(pad(np.asarray(guide, dtype=np.complex64)))
    x = g if start is None else torch.from_numpy(pad(np.asarray(start, dtype=np.complex64)))
    scale = _flux_scale(x, Measurement(A, constrained))
    x, g = x * scale, g * scale
    box = torch.from_numpy(pad(np.ones(guide.shape, dtype=bool)))
    support = _dilate(_threshold_support(g.abs(), settings.support_threshold), settings.guide_dilation)
    if start is not None:
        support |= _threshold_support(_blur(x.abs(), settings.shrinkwrap_sigma), settings.support_threshold)
    support &= box
    iterations = settings.iterations if start is not None else settings.cold_iterations
    for i in range(iterations):
        F = fft_centred(x)
        projected = ifft_centred(torch.where(constrained, A * F / (F.abs() + 1e-12), F))
        if i < iterations - settings.er_iterations:
            x = torch.where(support, projected, settings.beta * x + (1 - 2 * settings.beta) * projected)
        else:
            x = torch.where(support, projected, torch.zeros((), dtype=x.dtype))
        if settings.shrinkwrap_every and (i + 1) % settings.shrinkwrap_every == 0 and i + 1 < iterations:
            support = _threshold_support(_blur(x.abs(), settings.shrinkwrap_sigma), settings.support_threshold) & box
    x = torch.where(support, x, torch.zeros((), dtype=x.dtype))
    return crop(x.numpy()) / scale


@pytest.mark.parametrize("warm", [False, True])
def test_the_fast_loop_matches_the_textbook_iteration(frame, warm):
    """The loop runs in the FFT's uncentred layout for speed; it must compute the same iterates."""
    truth, counts, mask, start = frame
    settings = PhysicsSettings(iterations=12, cold_iterations=25, er_iterations=3, shrinkwrap_every=5)
    kwargs = {"start": truth} if warm else {}
    fast = refine_density(start, counts, mask, settings, **kwargs)
    reference = _textbook_refinement(start, counts, mask, settings, **kwargs)
    assert np.abs(fast - reference).max() <= 1e-4 * np.abs(reference).max()
    assert real_space_error(truth, fast).error == pytest.approx(real_space_error(truth, reference).error, abs=1e-4)


@pytest.mark.parametrize("voxels", [0, 1, 2, 4])
def test_the_support_dilation_is_a_cube_max_pool(voxels):
    """The CPU dilation (shifted ORs in numpy) equals the 3-D max pool of the same cube, edges included."""
    import torch

    from latenttune.tracking.phase_retrieval import _dilate, _masked

    rng = np.random.default_rng(voxels)
    for shape_size, density in ((3, 0.2), (16, 0.01), (17, 0.3)):
        support = torch.from_numpy(rng.random((shape_size,) * 3) < density)
        support[0, -1, shape_size // 2] = True  # a voxel on the grid's edge: nothing wraps round
        pooled = torch.nn.functional.max_pool3d(support.float()[None, None], 2 * voxels + 1, stride=1,
                                                padding=voxels)[0, 0] > 0.5
        before = support.clone()
        assert torch.equal(_dilate(support, voxels), pooled)
        assert torch.equal(support, before)  # the input is left as it was
        values = torch.from_numpy(rng.random((shape_size,) * 3).astype(np.float32))
        assert torch.equal(_masked(values, support), values[support])


def test_refinement_recovers_detail_the_guide_lacks(frame):
    truth, counts, mask, start = frame
    before = real_space_error(truth, start).error
    after = real_space_error(truth, refine_density(start, counts, mask)).error
    assert after < 0.6 * before, (before, after)


def test_refinement_keeps_the_truth_and_the_scale(frame):
    truth, counts, mask, _ = frame
    # RAAR/ER started at the truth stays at the noise level of the data (0.04-0.06 here, at n = 16),
    # where HIO drifts away (E_r 0.25 in 200 iterations at n = 32, see the module docstring)
    refined = refine_density(truth, counts, mask, PhysicsSettings(iterations=100))
    assert real_space_error(truth, refined).error < 0.08
    # scaled back to the guide's units, not the detector's
    assert 0.8 < np.abs(refined).max() / np.abs(truth).max() < 1.25


def test_masked_and_held_out_voxels_are_left_free(frame):
    """Counts in masked or held-out voxels do not matter."""
    truth, counts, mask, start = frame
    settings = PhysicsSettings(iterations=10, er_iterations=3)
    held = np.zeros_like(mask)
    held[::7, ::5, ::3] = True
    garbage = counts.copy()
    garbage[mask | held] = 1e9
    np.testing.assert_allclose(refine_density(start, garbage, mask, settings, held_out=held),
                               refine_density(start, counts, mask, settings, held_out=held), atol=1e-6)


def test_the_guide_pull_moves_the_result_towards_the_guide(frame):
    truth, counts, mask, start = frame
    free = refine_density(start, counts, mask, PhysicsSettings(guide_weight=0.0))
    pulled = refine_density(start, counts, mask, PhysicsSettings(guide_weight=0.3))
    assert real_space_error(start, pulled).error < real_space_error(start, free).error


def test_the_derived_pull_falls_with_the_counts_and_doubles_after_a_jump():
    unmeasured = np.zeros((4, 4, 4), dtype=bool)
    unmeasured[0] = True  # ignored: only measured voxels count
    auto = PhysicsSettings()

    def weight(mean_counts, jumped=False):
        counts = np.full((4, 4, 4), mean_counts)
        counts[0] = 1e9
        return guide_weight(auto, counts, unmeasured, jumped)

    assert weight(GUIDE_HALF_COUNTS) == pytest.approx(GUIDE_WEIGHT_MAX / 2)
    weights = [weight(c) for c in (0.0, 1.0, 10.0, 100.0, 1000.0)]
    assert weights[0] == pytest.approx(GUIDE_WEIGHT_MAX) and all(np.diff(weights) < 0) and weights[-1] < 1e-3
    assert weight(100.0, jumped=True) == pytest.approx(2 * weight(100.0))
    assert weight(1.0, jumped=True) == pytest.approx(GUIDE_WEIGHT_MAX)  # never above the largest pull
    assert guide_weight(PhysicsSettings(guide_weight=0.05), np.ones((4, 4, 4)), unmeasured, True) == 0.05


def test_the_stage_never_keeps_a_worse_fit_than_the_decoded_density(frames):
    """Whatever the guide, the frame's output fits the measured pattern at least as well as the decoded density."""
    rng = np.random.default_rng(0)
    guides = [frames[0][3], frames[0][0], (rng.random((n, n, n)) * np.exp(2j * np.pi * rng.random((n, n, n)))).astype(np.complex64)]
    for guide in guides:
        stage = PhysicsStage(PhysicsSettings(iterations=20, er_iterations=5))
        for truth, counts, mask, _ in frames:
            outcome = stage.run(guide, counts, mask)
            predicted = forward(np.stack([guide, outcome.density]))
            decoded_misfit, output_misfit = amplitude_misfit(predicted, counts, mask)
            assert output_misfit <= decoded_misfit + 1e-7
            assert outcome.misfit_decoded == pytest.approx(decoded_misfit, rel=1e-5)
            if outcome.accepted:
                assert outcome.free_misfit_refined < outcome.free_misfit_decoded
                np.testing.assert_array_equal(outcome.density, outcome.refined)
            else:
                np.testing.assert_array_equal(outcome.density, guide)


def test_warm_start_carries_across_frames(frames):
    """Each frame continues from the previous output: better than restarting from the guide, and resumable."""
    settings = PhysicsSettings(iterations=12, cold_iterations=12, er_iterations=4)
    warm = PhysicsStage(settings)
    cold = PhysicsStage(PhysicsSettings(iterations=12, cold_iterations=12, er_iterations=4, warm_start=False))
    warm_errors, cold_errors, outcomes = [], [], []
    for truth, counts, mask, guide in frames:
        w, c = warm.run(guide, counts, mask), cold.run(guide, counts, mask)
        outcomes.append(w)
        warm_errors.append(real_space_error(truth, w.density).error)
        cold_errors.append(real_space_error(truth, c.density).error)
    assert [o.warm for o in outcomes] == [False, True, True, True]
    assert np.mean(warm_errors[1:]) < np.mean(cold_errors[1:]), (warm_errors, cold_errors)
    # a stage resumed with the stored output of frame 2 gives exactly what the running stage gave on frame 3
    resumed = PhysicsStage(settings, previous=outcomes[2].density)
    truth, counts, mask, guide = frames[3]
    np.testing.assert_array_equal(resumed.run(guide, counts, mask).density, outcomes[3].density)


def test_a_stagnated_frame_is_restarted_and_the_best_fit_is_kept(frames):
    """Above ``restart_llk`` the stage tries the restart starts in turn and keeps the best fit of all."""
    truth, counts, mask, guide = frames[0]
    base = dict(iterations=10, cold_iterations=20, er_iterations=4)
    plain = PhysicsStage(PhysicsSettings(**base, restarts=0)).run(guide, counts, mask, index=0)
    assert plain.restarts == 0 and plain.start == "decoded"
    # a threshold just above 1: every refinement of a noisy frame counts as stagnated, so all restarts run
    restarted = PhysicsStage(PhysicsSettings(**base, restarts=3, restart_llk=1.0 + 1e-9)).run(guide, counts, mask, index=0)
    assert restarted.restarts == 3
    assert restarted.stagnated  # still above the threshold after every restart: reported as less certain
    assert restarted.start in ("decoded", *RESTART_STARTS)
    assert restarted.misfit_refined <= plain.misfit_refined + 1e-7  # a restart is kept only when it fits better
    shown = forward(restarted.density)
    assert restarted.llk == pytest.approx(float(poisson_llk(shown, counts, mask)), rel=1e-5)
    # a threshold no refinement reaches: no restart, the same result as without restarts
    calm = PhysicsStage(PhysicsSettings(**base, restarts=3, restart_llk=1e6)).run(guide, counts, mask, index=0)
    assert calm.restarts == 0 and not calm.stagnated
    np.testing.assert_array_equal(calm.density, plain.density)
    # the verdict is the output's LLK against the threshold, with or without restarts
    assert plain.stagnated == (plain.llk > PhysicsSettings().restart_llk)


def test_an_alternative_candidate_is_tried_before_the_usual_restarts(frames):
    """A stagnated frame tries the other encoder's density (here the truth) first, and keeps it when it fits better."""
    truth, counts, mask, guide = frames[0]
    rng = np.random.default_rng(1)
    poor = (np.abs(guide) * np.exp(2j * np.pi * rng.random(guide.shape))).astype(np.complex64)  # a bad guide
    settings = PhysicsSettings(iterations=20, cold_iterations=40, er_iterations=5, restarts=1, restart_llk=1.0 + 1e-9)
    plain = PhysicsStage(settings).run(poor, counts, mask, index=0)
    helped = PhysicsStage(settings).run(poor, counts, mask, index=0, alternatives=[truth])
    assert plain.restarts == 1 and plain.start in ("decoded", RESTART_STARTS[0])
    assert helped.restarts == 2  # the alternative, then the usual restart (every refinement counts as stagnated)
    assert helped.start == "alternative" and helped.accepted
    assert real_space_error(truth, helped.density).error < 0.5 * real_space_error(truth, plain.density).error
    # a frame that does not stagnate never runs them
    calm = PhysicsStage(dataclasses.replace(settings, restart_llk=1e6)).run(poor, counts, mask, alternatives=[truth])
    assert calm.restarts == 0 and calm.start == "decoded"
    never = PhysicsStage(dataclasses.replace(settings, restarts=0)).run(poor, counts, mask, alternatives=[truth])
    assert never.restarts == 0  # restarts=0: no restart of any kind
    with pytest.raises(ValueError, match="`alternatives`"):
        PhysicsStage(settings).run(poor, counts, mask, alternatives=[truth[:4]])


def test_a_declined_warm_start_is_tried_when_the_frame_stagnates(frames):
    """The decoded density fitted better than the previous output, so the frame started from it; stagnated, it
    tries the previous output too (a short warm run) instead of the usual restarts."""
    truth0, (truth, counts, mask, _) = frames[0][0], frames[1]
    settings = PhysicsSettings(iterations=20, cold_iterations=40, er_iterations=5, restarts=1, restart_llk=1.0 + 1e-9)
    stage = PhysicsStage(settings, previous=truth0)
    decoded = truth  # fits frame 1 better than the previous output (frame 0's truth) does
    fits = amplitude_misfit(np.stack([forward(decoded), forward(truth0)]), counts, mask)
    assert fits[0] < fits[1]  # the premise: the previous output is declined as the first start
    outcome = stage.run(decoded, counts, mask, index=1)  # every refinement counts as stagnated (threshold 1)
    assert not outcome.warm and outcome.restarts == 1  # the warm restart, and no usual one after it
    assert outcome.start in ("decoded", "warm")
    no_warm = PhysicsStage(dataclasses.replace(settings, warm_start=False), previous=truth0).run(decoded, counts, mask, index=1)
    assert no_warm.restarts == 1 and no_warm.start in ("decoded", RESTART_STARTS[1])  # warm starts off: the usual restart
    first = PhysicsStage(settings).run(decoded, counts, mask, index=1)  # no previous output: nothing to go back to
    assert first.restarts == 1


def test_restart_starts_come_from_the_decoded_density(frame):
    truth = frame[0]
    np.testing.assert_allclose(restart_start(truth, "phase-negated"), np.conj(truth))
    flat = restart_start(truth, "flat-phase")
    np.testing.assert_allclose(flat, np.abs(truth), atol=1e-6)
    random_a, random_b = restart_start(truth, "random-phase", (0, 5, 0)), restart_start(truth, "random-phase", (0, 6, 0))
    np.testing.assert_allclose(np.abs(random_a), np.abs(truth), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(random_a, restart_start(truth, "random-phase", (0, 5, 0)))  # seeded
    assert not np.allclose(random_a, random_b)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        restart_start(truth, "zero")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"iterations": 0}, "`iterations`"),
        ({"iterations": 10, "er_iterations": 11}, "`er_iterations`"),
        ({"iterations": 10, "cold_iterations": 9}, "`cold_iterations`"),
        ({"beta": 1.5}, "`beta`"),
        ({"support_threshold": 1.0}, "`support_threshold`"),
        ({"guide_dilation": -1}, "`guide_dilation`"),
        ({"shrinkwrap_sigma": 0.0}, "`shrinkwrap_sigma`"),
        ({"guide_weight": 1.0}, "`guide_weight`"),
        ({"free_fraction": 0.0}, "`free_fraction`"),
        ({"warm_start": "yes"}, "`warm_start`"),
        ({"restarts": -1}, "`restarts`"),
        ({"restart_llk": 1.0}, "`restart_llk`"),
        ({"restart_llk": float("inf")}, "`restart_llk`"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        PhysicsSettings(**kwargs)


def test_bad_inputs(frame):
    truth, counts, mask, _ = frame
    with pytest.raises(ValueError, match="`intensity` must have shape"):
        refine_density(truth, counts[:-2, :-2, :-2], None)
    with pytest.raises(ValueError, match="`guide` must be a cubic"):
        refine_density(truth[:, :, :4], counts, mask)
    with pytest.raises(ValueError, match="`guide` must be finite and not all zero"):
        refine_density(np.zeros_like(truth), counts, mask)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        refine_density(truth, counts, mask[:4])
    with pytest.raises(ValueError, match="`start`"):
        refine_density(truth, counts, mask, start=np.zeros_like(truth))
    with pytest.raises(TypeError, match="`settings`"):
        refine_density(truth, counts, mask, settings={"iterations": 5})
    with pytest.raises(TypeError, match="`physics`"):
        HybridStrategy(4, physics={"iterations": 5})


def test_hybrid_replay_stores_the_refined_density_and_never_fits_worse_than_es(tmp_path, lively_model):
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, lively_model)
    loaded = load_model(checkpoint)
    small = loaded.model.config.n
    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=4, n=small, photons=1e7, seed=4)
    hybrid = make_strategy("hybrid", loaded.model.latent_dim, steps_per_frame=6,
                           physics=PhysicsSettings(iterations=15, er_iterations=5))
    path, result = replay_series(series, loaded, hybrid, tmp_path / "h.h5")
    r = read_results(path)
    assert r.attrs["strategy"] == "hybrid" and r.attrs["settings"]["physics"]["iterations"] == 15
    assert r.output_density.shape == (4, small, small, small) and r.output_density.dtype == np.complex64
    assert np.all(np.isfinite(r.E_r_output)) and np.all(np.isfinite(r.E_q_output))
    assert set(np.unique(r.physics_accepted)) <= {0, 1} and np.all(r.physics_seconds > 0)
    assert r.physics_warm[0] == 0 and set(np.unique(r.physics_warm)) <= {0, 1}  # the first frame starts cold
    # a one-encoder model: its prediction is the one alternative, on frames the previous latent guided
    assert set(r.physics_start) <= {"warm", "decoded", "alternative", *RESTART_STARTS}
    assert np.all((r.physics_restarts >= 0) & (r.physics_restarts <= 2))
    with open_series(series) as s:  # the stored LLK is the shown density's
        llk = [float(poisson_llk(forward(r.output_density[t]), s[t].intensity, s[t].mask)) for t in range(4)]
    np.testing.assert_allclose(r.llk, llk, rtol=1e-5)
    # the frame's reconstruction never fits the measured pattern worse than the latent that guided it
    # (the best of the evaluations before the physics stage; the last one is the read-back latent's)
    with open_series(series) as s:
        for t in range(4):
            output = amplitude_misfit(forward(r.output_density[t]), s[t].intensity, s[t].mask)
            guide = np.nanmin(r.step_costs[t][: r.steps[t] - 1])
            assert output <= guide + 1e-6
    # the reported cost is the read-back latent's, evaluated on the measured pattern
    np.testing.assert_array_equal(r.cost, [r.step_costs[t][r.steps[t] - 1] for t in range(4)])
    # replay streams the densities to the file: the result keeps the per-frame figures only
    np.testing.assert_array_equal(result.cost.astype(np.float32), r.cost)
    with pytest.raises(ValueError, match="densities were not kept"):
        result.output_density


def test_hybrid_resume_continues_the_warm_start_exactly(tmp_path, lively_model):
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, lively_model)
    loaded = load_model(checkpoint)
    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=4, n=loaded.model.config.n, photons=1e7, seed=5)

    def strategy():
        return make_strategy("hybrid", loaded.model.latent_dim, steps_per_frame=5,
                             physics=PhysicsSettings(iterations=10, er_iterations=3))

    whole, _ = replay_series(series, loaded, strategy(), tmp_path / "whole.h5")
    replay_series(series, loaded, strategy(), tmp_path / "parts.h5", callback=lambda report: report.record.index == 1)
    parts, _ = replay_series(series, loaded, strategy(), tmp_path / "parts.h5", resume=True)
    a, b = read_results(whole), read_results(parts)
    for name in ("output_density", "physics_accepted", "cost", "latent"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    from latenttune.io import ResultsFileError

    replay_series(series, loaded, strategy(), tmp_path / "other.h5", callback=lambda report: report.record.index == 0)
    other = make_strategy("hybrid", loaded.model.latent_dim, steps_per_frame=5,
                          physics=PhysicsSettings(iterations=11, er_iterations=3))
    with pytest.raises(ResultsFileError, match="`physics`"):
        replay_series(series, loaded, other, tmp_path / "other.h5", resume=True)


@pytest.mark.parametrize("offset", [(0, 0, 0), (2, -1, 3), (7, 7, -7)])
def test_centred_puts_the_amplitude_centroid_at_the_grid_centre_by_whole_voxels(frame, offset):
    truth = frame[0]
    centre = np.asarray(centred(truth))
    moved = np.roll(centre, offset, axis=(0, 1, 2))  # (7, 7, -7) carries the crystal across the grid's edge
    back = centred(moved)
    np.testing.assert_array_equal(back, centre)  # a whole-voxel roll, undone exactly
    weight = np.abs(back)
    centroid = [float((weight.sum(axis=tuple(j for j in range(3) if j != a)) * np.arange(n)).sum() / weight.sum())
                for a in range(3)]
    assert np.all(np.abs(np.asarray(centroid) - n // 2) <= 0.5), centroid
    np.testing.assert_allclose(forward(back), forward(centre), rtol=1e-4, atol=1e-3)  # no intensity changed


def test_the_stage_returns_its_output_centred_where_the_decoder_draws_crystals(frames):
    truth, counts, mask, start = frames[1]
    off_centre = np.roll(start, (2, -2, 1), axis=(0, 1, 2))  # a guide drawn off the grid's centre
    outcome = PhysicsStage(PhysicsSettings(iterations=20, cold_iterations=40, er_iterations=2)).run(off_centre, counts,
                                                                                                 mask)
    np.testing.assert_array_equal(outcome.density, centred(outcome.density))
    assert real_space_error(truth, outcome.density).error < real_space_error(truth, off_centre).error
