"""The hybrid tracker's refined densities reach every output: summary figure, movie, export, Bluesky view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latenttune.io import read_results
from latenttune.model import LoadedModel
from latenttune.tracking.physics_settings import PhysicsSettings


@pytest.fixture
def hybrid_run(tmp_path, lively_model):
    """A 4-frame simulated series (n = 8, with truth) tracked by the hybrid strategy: (results path, series path)."""
    from latenttune.tracking.replay import replay_series
    from latenttune.simulate import simulate_series
    from latenttune.tracking import make_strategy

    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=4, n=8, seed=1)
    loaded = LoadedModel(model=lively_model, path=Path("lively.pt"), checksum="lively")
    strategy = make_strategy("hybrid", lively_model.latent_dim, steps_per_frame=4,
                             physics=PhysicsSettings(iterations=12, er_iterations=4))
    results, _ = replay_series(series, loaded, strategy, tmp_path / "r.h5")
    return results, series


def _decoded_only(results_path: Path, out: Path) -> Path:
    """A copy of a results file without the hybrid fields: what a plain ES run would have written."""
    import h5py

    out.write_bytes(results_path.read_bytes())
    with h5py.File(out, "r+") as f:
        for name in ("output_density", "physics_accepted", "E_r_output", "E_q_output"):
            del f[name]
    return out


def test_reconstruction_picks_the_refined_density_and_says_so(hybrid_run, tmp_path):
    results = read_results(hybrid_run[0])
    shown = results.reconstruction()
    assert shown.label == "hybrid"
    np.testing.assert_array_equal(shown.density, results.output_density)
    np.testing.assert_array_equal(shown.refined, results.physics_accepted.astype(bool))
    assert shown.row_label(0) in ("refined", "decoded (refinement not kept)")
    decoded = results.reconstruction("decoded")
    assert decoded.label == "decoded" and decoded.row_label(0) == "decoded"
    np.testing.assert_array_equal(decoded.density, results.density)
    plain = read_results(_decoded_only(hybrid_run[0], tmp_path / "plain.h5"))
    assert plain.reconstruction().label == "decoded"
    with pytest.raises(ValueError, match="no refined densities"):
        plain.reconstruction("hybrid")
    with pytest.raises(ValueError, match="`which`"):
        results.reconstruction("best")


def test_summary_figure_draws_the_refined_density(hybrid_run, tmp_path):
    from PIL import Image

    from latenttune.plots import tracking_summary

    results = read_results(hybrid_run[0])
    # make the refined density unmistakable: a different object from the decoded one
    assert not np.allclose(results.output_density, results.density)
    a = tracking_summary(results, tmp_path / "hybrid.png", title="t")
    b = tracking_summary(read_results(_decoded_only(hybrid_run[0], tmp_path / "p.h5")), tmp_path / "plain.png", title="t")
    pixels_a, pixels_b = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    assert pixels_a.shape == pixels_b.shape
    assert (np.abs(pixels_a.astype(int) - pixels_b.astype(int)).sum(axis=-1) > 30).sum() > 200


def test_movie_captions_say_what_each_frame_shows_and_which_stagnated(hybrid_run):
    from latenttune.movies.tracking_movie import frame_captions

    results = read_results(hybrid_run[0])
    T = results.num_frames
    results.llk = np.array([1.1, 2.7] + [1.2] * (T - 2))  # frame 1 stayed above the threshold 1.5
    captions = frame_captions(results, np.arange(T), np.full(T, 0.05), "E_r")
    assert len(captions) == T and all("E_r 0.050   showing: " in c for c in captions)
    assert captions[1].endswith("STAGNATED (LLK 2.70: less certain)")
    assert not any("STAGNATED" in c for i, c in enumerate(captions) if i != 1)
    results.has_physics = False  # results of a tracker without a physics stage: no verdict
    assert not any("STAGNATED" in c for c in frame_captions(results, np.arange(T), np.full(T, np.nan), "E_r"))


def test_movie_time_axis_is_the_frame_unless_the_series_has_real_times(hybrid_run):
    """Issue 30: a simulated series stores its frame numbers as times: no "t = 2 s" for frame 2."""
    from latenttune.movies.tracking_movie import _error_trace, frame_captions, has_real_times

    results = read_results(hybrid_run[0])
    T = results.num_frames
    index = np.arange(T)
    assert np.array_equal(results.time, index)  # what the simulator writes
    assert not has_real_times(results.time, index)
    assert not any(" t = " in c for c in frame_captions(results, index, np.full(T, 0.05), "E_r"))
    results.time = 12.5 + 0.5 * index  # a measured series with time stamps
    assert has_real_times(results.time, index)
    captions = frame_captions(results, index, np.full(T, 0.05), "E_r")
    assert captions[1].startswith("frame 1   t = 13 s   cost ")
    # without truth the second trace is the LLK, never E_q (the cost again, in a results file without truth)
    results.E_r = np.full(T, np.nan)
    results.E_r_output = np.full(T, np.nan)
    results.llk = np.linspace(1.1, 1.4, T)
    values, label = _error_trace(results)
    assert label == "LLK" and np.allclose(values, results.llk)


def test_tracking_movie_plays_the_refined_density(hybrid_run, tmp_path):
    from latenttune.io import open_series
    from latenttune.movies.tracking_movie import tracking_frames

    results_path, series_path = hybrid_run
    with open_series(series_path) as series:
        hybrid = list(tracking_frames(read_results(results_path), series, size=(320, 180)))
        plain = list(tracking_frames(read_results(_decoded_only(results_path, tmp_path / "p.h5")), series,
                                     size=(320, 180)))
    assert len(hybrid) == 4
    assert any((np.abs(a.astype(int) - b.astype(int)).sum(axis=-1) > 30).sum() > 100 for a, b in zip(hybrid, plain))


def test_export_writes_the_refined_density_by_default(hybrid_run, tmp_path, capsys):
    from test_vtk_export import read_vti

    from latenttune.cli import main
    from latenttune.movies.vtk_export import export_result_frame

    results_path = hybrid_run[0]
    results = read_results(results_path)
    path, shown = export_result_frame(results_path, 2, tmp_path / "f2.vti")
    assert shown in ("refined", "decoded (refinement not kept)")
    _, arrays = read_vti(path)
    np.testing.assert_array_equal(arrays["amplitude"], np.abs(results.output_density[2]).astype(np.float32))
    path, shown = export_result_frame(results_path, 2, tmp_path / "d2.vti", which="decoded")
    assert shown == "decoded"
    _, arrays = read_vti(path)
    np.testing.assert_array_equal(arrays["amplitude"], np.abs(results.density[2]).astype(np.float32))
    assert main(["export", str(results_path), "--frame", "1", "--out", str(tmp_path / "c.vti")]) == 0
    out = capsys.readouterr().out
    assert "refined density" in out or "decoded (refinement not kept) density" in out
    # the command says when the exported frame stagnated, against the threshold the run was tracked with
    # (the tiny model fits no frame to the noise; a copy tracked with a threshold at its median LLK
    # has frames on both sides)
    import h5py

    from latenttune.io._attrs import encode_attr

    median = float(np.median(results.llk))
    copy = tmp_path / "threshold.h5"
    copy.write_bytes(Path(results_path).read_bytes())
    with h5py.File(copy, "r+") as f:
        settings = results.attrs["settings"]
        f.attrs["settings"] = encode_attr({**settings, "physics": {**settings["physics"], "restart_llk": median}})
    for path, threshold in ((results_path, 1.5), (copy, median)):
        for frame in range(results.num_frames):
            assert main(["export", str(path), "--frame", str(frame), "--out", str(tmp_path / f"e{frame}.vti"),
                         "--overwrite"]) == 0
            said = "note: this frame stagnated (LLK" in capsys.readouterr().out
            assert said == bool(results.llk[frame] > threshold)
    assert main(["export", str(results_path), "--frame", "1", "--out", str(tmp_path / "d1.vti"), "--density",
                 "decoded"]) == 0
    assert "stagnated" not in capsys.readouterr().out  # the LLK is not the decoded density's


def test_bluesky_tracker_publishes_the_refined_density(lively_model):
    from latenttune.bluesky.devices import LatentTracker
    from latenttune.tracking import FrameTracker, make_strategy

    import sim

    rng = np.random.default_rng(0)
    truth = sim.make_scenario("growth", rng, n=8, num_frames=2).density(1)
    measured = sim.Detector(photons=1e7).measure(sim.forward(truth), rng)
    frames = FrameTracker(lively_model, make_strategy("hybrid", lively_model.latent_dim, steps_per_frame=3,
                                                      physics=PhysicsSettings(iterations=10, er_iterations=3)))
    record = frames.step(measured.counts, measured.mask, 0, 0.0)
    tracker = LatentTracker.for_model(lively_model)
    tracker.set(record)
    plane = record.output_density[4]
    np.testing.assert_array_equal(tracker.amplitude_slice.get(), np.abs(plane).astype(np.float32))
    assert tracker.shows.get() == ("refined" if record.physics.accepted else "decoded (refinement not kept)")
    es = FrameTracker(lively_model, make_strategy("es", lively_model.latent_dim, steps_per_frame=3))
    tracker.set(es.step(measured.counts, measured.mask, 0, 0.0))
    assert tracker.shows.get() == "decoded"
