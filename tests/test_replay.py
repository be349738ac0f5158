"""Offline replay (:func:`latenttune.tracking.replay.replay_series`), resume after an interruption or a real
kill, and the ``latenttune track`` / ``latenttune replay`` commands.

The model is the tiny ``lively_model`` of ``conftest.py`` saved with
:func:`latenttune.model.save_checkpoint` and loaded back with :func:`latenttune.model.load_model`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from latenttune.cli import main
from latenttune.io import open_series, read_results, write_amplitude_frames, write_series
from latenttune.model import load_model, save_checkpoint
from latenttune.tracking.replay import FrameReport, replay_series
from latenttune.simulate import simulate_series
from latenttune.tracking import make_strategy

K, n, N = 4, 8, 16
ROOT = Path(__file__).resolve().parents[1]

#: Per-frame datasets a replay writes (docs/conventions.md section 6 and :mod:`latenttune.tracking.replay`).
PER_FRAME = ("latent", "cost", "density", "time", "steps", "index", "step_costs", "seconds", "status",
             "strategy_state", "E_r", "phase_rms")


@pytest.fixture
def checkpoint(tmp_path, lively_model) -> Path:
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, lively_model)
    return path


@pytest.fixture
def loaded(checkpoint):
    return load_model(checkpoint)


def _simulate(path: Path, frames: int = 4, layout: str = "stacked", seed: int = 2) -> Path:
    return simulate_series("growth", path, num_frames=frames, n=n, photons=1e6, seed=seed, layout=layout)


@pytest.fixture
def series_path(tmp_path) -> Path:
    return _simulate(tmp_path / "growth.cxi")


def _es(steps: int = 6):
    return make_strategy("es", K, steps_per_frame=steps)


def _same_run(a, b) -> None:
    """Two results hold the same frames, bit for bit (timings aside)."""
    assert a.num_frames == b.num_frames
    for name in ("latent", "cost", "density", "time", "steps", "index", "step_costs", "E_r", "E_q", "phase_rms"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert list(a.strategy_state) == list(b.strategy_state)
    assert list(a.status) == list(b.status)


# -- the results file ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["stacked", "entries"])
def test_replay_cxi_writes_the_documented_results(tmp_path, loaded, layout):
    series = _simulate(tmp_path / f"s_{layout}.cxi", layout=layout)
    out = tmp_path / "r.h5"
    reports = []
    path, result = replay_series(series, loaded, _es(6), out, callback=reports.append)
    assert path == out and out.exists()
    assert not Path(str(out) + ".partial").exists()
    assert result.status == 0 and len(result.records) == 4
    assert all(isinstance(r, FrameReport) for r in reports) and len(reports) == 4
    r = read_results(out)
    assert r.complete and r.num_frames == 4
    for name in PER_FRAME:
        assert r.has_field(name), name
    assert r.latent.shape == (4, K) and r.latent.dtype == np.float32
    assert r.cost.shape == (4,) and r.cost.dtype == np.float32
    assert r.density.shape == (4, n, n, n) and r.density.dtype == np.complex64
    assert r.time.shape == (4,) and r.steps.tolist() == [6] * 4
    assert r.step_costs.shape == (4, 6) and np.isfinite(r.step_costs).all()
    assert r.seconds.shape == (4,) and np.all(r.seconds > 0)
    assert list(r.status) == ["ok"] * 4 and r.index.tolist() == [0, 1, 2, 3]
    # the controller's step counter grows by the frame's ES steps, or restarts when ES reseeds
    for t, s in enumerate(r.strategy_state):
        assert 1 <= json.loads(s)["controller"]["state"]["n"] <= 6 * (t + 1)
    np.testing.assert_array_equal(r.cost, result.cost.astype(np.float32))
    np.testing.assert_array_equal(r.cost, r.step_costs.min(axis=1))
    # ground truth present: every per-frame error is finite and E_r / phase RMS are sane
    assert np.isfinite(r.E_r).all() and np.all((r.E_r >= 0) & (r.E_r <= 1))
    assert np.isfinite(r.E_q).all() and np.isfinite(r.phase_rms).all()
    assert not r.has_field("E_q")  # format 3 stores no E_q: it equals the cost, which the reader gives for it
    np.testing.assert_allclose(r.E_q, r.cost, rtol=0)
    np.testing.assert_allclose([rep.metrics.E_q for rep in reports], r.cost, rtol=1e-5)
    np.testing.assert_allclose([rep.metrics.E_r for rep in reports], r.E_r)
    attrs = r.attrs
    assert attrs["model_checksum"] == loaded.checksum
    assert attrs["strategy"] == "es-absolute" and attrs["steps_per_frame"] == 6
    assert attrs["uses_network_gradient"] in (False, 0)
    versions = attrs["versions"] if isinstance(attrs["versions"], dict) else json.loads(attrs["versions"])
    assert {"torch", "numpy", "h5py"} <= set(versions)
    # the raw file: the documented names and dtypes
    with h5py.File(out, "r") as f:
        assert f["latent"].dtype == np.float32 and f["density"].dtype == np.complex64


def test_both_cxi_layouts_replay_identically(tmp_path, loaded):
    stacked = _simulate(tmp_path / "a.cxi", layout="stacked")
    entries = _simulate(tmp_path / "b.cxi", layout="entries")
    replay_series(stacked, loaded, _es(), tmp_path / "a.h5")
    replay_series(entries, loaded, _es(), tmp_path / "b.h5")
    _same_run(read_results(tmp_path / "a.h5"), read_results(tmp_path / "b.h5"))


def test_replay_cohere_amplitude_frames_without_truth(tmp_path, loaded, series_path):
    with open_series(series_path) as series:
        intensities = np.stack([f.intensity for f in series])
        mask = series[0].mask
    frames_dir = tmp_path / "cohere"
    write_amplitude_frames(frames_dir, intensities, mask=mask)
    out = tmp_path / "c.h5"
    path, result = replay_series(open_series(frames_dir, amplitude=True), loaded, _es(), out)
    assert path == out and not Path(str(out) + ".partial").exists()
    r = read_results(out)
    assert r.num_frames == 4 and r.latent.shape == (4, K) and r.density.dtype == np.complex64
    assert np.isnan(r.E_r).all() and np.isnan(r.phase_rms).all()  # no truth
    assert not any(r.has_field(name) for name in ("E_r", "phase_rms", "E_r_output"))  # no truth fields stored
    assert np.isfinite(r.E_q).all() and np.isfinite(r.cost).all()
    np.testing.assert_array_equal(r.time, np.arange(4.0))


def test_replay_one_shot_and_gradient(tmp_path, loaded, series_path):
    _, one = replay_series(series_path, loaded, make_strategy("one-shot", K), tmp_path / "o.h5")
    r = read_results(tmp_path / "o.h5")
    assert r.attrs["strategy"] == "one-shot" and r.steps.tolist() == [1] * 4
    _, grad = replay_series(series_path, loaded, make_strategy("gradient", K, steps_per_frame=3), tmp_path / "g.h5")
    g = read_results(tmp_path / "g.h5")
    assert g.attrs["strategy"] == "gradient-absolute" and g.attrs["uses_network_gradient"] in (True, 1)
    assert g.step_costs.shape == (4, 3) and np.isfinite(g.cost).all()


def test_existing_output_needs_overwrite(tmp_path, loaded, series_path):
    out = tmp_path / "r.h5"
    replay_series(series_path, loaded, _es(2), out)
    with pytest.raises(FileExistsError, match="overwrite"):
        replay_series(series_path, loaded, _es(2), out)
    replay_series(series_path, loaded, _es(3), out, overwrite=True)
    assert read_results(out).steps.tolist() == [3] * 4


def test_series_grid_must_match_the_model(tmp_path, loaded):
    big = simulate_series("growth", tmp_path / "big.cxi", num_frames=2, n=16, photons=1e6)
    with pytest.raises(ValueError, match=r"N = 32.*N = 16"):
        replay_series(big, loaded, _es(), tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / "r.h5.partial").exists()


# -- resume ----------------------------------------------------------------------------------


def test_resume_after_the_callback_stopped_the_run(tmp_path, loaded, series_path):
    reference = tmp_path / "ref.h5"
    replay_series(series_path, loaded, _es(), reference)
    out = tmp_path / "r.h5"
    path, result = replay_series(series_path, loaded, _es(), out, callback=lambda rep: rep.record.index == 1)
    partial = Path(str(out) + ".partial")
    assert path == partial and partial.exists() and not out.exists()
    assert result.status == 1 and len(result.records) == 2
    assert read_results(partial).num_frames == 2
    path, result = replay_series(series_path, loaded, _es(), out, resume=True)
    assert path == out and not partial.exists()
    assert [r.index for r in result.records] == [2, 3]
    final = read_results(out)
    assert final.attrs["resume_count"] == 1
    _same_run(final, read_results(reference))


def test_resume_a_complete_run_is_refused(tmp_path, loaded, series_path):
    out = tmp_path / "r.h5"
    replay_series(series_path, loaded, _es(2), out)
    with pytest.raises(ValueError, match="already complete"):
        replay_series(series_path, loaded, _es(2), out, resume=True)


def test_resume_with_a_bad_leading_frame_processes_every_frame_once(tmp_path, loaded, series_path):
    """A first frame with no counts has no estimate to hold and gets no row; resume still
    continues after the last frame written, not after as many frames as there are rows."""
    with open_series(series_path) as series:
        intensities = np.stack([f.intensity for f in series])
        times = series.times
    intensities[0] = 0.0
    path = write_series(tmp_path / "dark.cxi", intensities, times=times)
    reference = tmp_path / "ref.h5"
    replay_series(path, loaded, _es(), reference)
    out = tmp_path / "r.h5"
    replay_series(path, loaded, _es(), out, callback=lambda rep: rep.record.index == 2)
    assert read_results(Path(str(out) + ".partial")).num_frames == 2  # frames 1 and 2
    replay_series(path, loaded, _es(), out, resume=True)
    final, ref = read_results(out), read_results(reference)
    np.testing.assert_array_equal(final.time, times[1:])
    _same_run(final, ref)


def _poll_frames(partial: Path) -> int:
    try:
        return int(read_results(partial).num_frames)
    except Exception:  # absent, or caught mid-write by a reader without file locking
        return 0


def test_resume_after_a_real_kill_matches_an_uninterrupted_run(tmp_path, checkpoint, loaded):
    frames, steps = 8, 200
    series = _simulate(tmp_path / "s.cxi", frames=frames, seed=4)
    out = tmp_path / "killed.h5"
    partial = Path(str(out) + ".partial")
    argv = ["replay", str(series), "--model", str(checkpoint), "--out", str(out), "--strategy", "es",
            "--steps-per-frame", str(steps), "--no-figure"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "latenttune.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while proc.poll() is None and time.monotonic() < deadline:
            done = _poll_frames(partial)
            if done >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and done < 2:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the replay was not killed mid-way: rc {proc.returncode}, {err!r}"
    assert partial.exists() and not out.exists()
    left = read_results(partial).num_frames
    assert 2 <= left < frames
    assert main([*argv, "--resume"]) == 0
    assert out.exists() and not partial.exists()
    final = read_results(out)
    assert final.num_frames == frames and final.complete
    np.testing.assert_array_equal(final.time, np.arange(float(frames)))  # every frame exactly once
    reference = tmp_path / "reference.h5"
    replay_series(series, loaded, make_strategy("es", K, steps_per_frame=steps), reference)
    _same_run(final, read_results(reference))


# -- the command line -------------------------------------------------------------------------


def test_track_command_writes_results_series_and_figure(tmp_path, checkpoint, loaded, capsys):
    out = tmp_path / "r.h5"
    argv = ["track", "--scenario", "growth", "--frames", "3", "--model", str(checkpoint), "--steps-per-frame", "5",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    series, figure = tmp_path / "r.series.cxi", tmp_path / "r.png"
    assert out.exists() and series.exists() and figure.exists()
    frame_lines = [line for line in printed.splitlines() if line.startswith("frame ")]
    assert len(frame_lines) == 3
    assert all("cost" in line and "E_r" in line for line in frame_lines)
    import matplotlib.image

    image = matplotlib.image.imread(figure)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas
    r = read_results(out)
    assert r.num_frames == 3 and np.isfinite(r.E_r).all()
    with open_series(series) as s:
        assert len(s) == 3 and s.has_truth and s.N == N
    # replaying the recorded series with the same model and options reproduces the costs exactly
    again = tmp_path / "again.h5"
    assert main(["replay", str(series), "--model", str(checkpoint), "--steps-per-frame", "5", "--out", str(again),
                 "--no-figure"]) == 0
    assert not (tmp_path / "again.png").exists()
    _same_run(read_results(again), r)
    # and so does the library call
    _, result = replay_series(series, loaded, make_strategy("hybrid", K, steps_per_frame=5), tmp_path / "lib.h5")
    np.testing.assert_array_equal(result.cost.astype(np.float32), r.cost)


def test_replay_of_a_missing_series_exits_2(tmp_path, checkpoint, capsys):
    missing = tmp_path / "nosuch.cxi"
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(missing), "--model", str(checkpoint), "--out", str(tmp_path / "r.h5")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "latenttune replay: error" in err and "does not exist" in err and "nosuch.cxi" in err
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / "r.h5.partial").exists()


def test_replay_of_a_series_with_the_wrong_grid_exits_2(tmp_path, checkpoint, capsys):
    big = simulate_series("growth", tmp_path / "big.cxi", num_frames=2, n=16, photons=1e6)
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(big), "--model", str(checkpoint), "--out", str(tmp_path / "r.h5")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "N = 32" in err and "N = 16" in err


def test_resume_without_a_partial_file_exits_2(tmp_path, checkpoint, series_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(series_path), "--model", str(checkpoint), "--out", str(tmp_path / "r.h5"), "--resume"])
    assert exc.value.code == 2
    assert "partial" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, options",
    [
        ("track", ["--scenario", "--frames", "--photons", "--beamstop", "--seed", "--out", "--model", "--strategy",
                   "--mode", "--steps-per-frame", "--gain", "--dither", "--lr", "--overwrite", "--no-figure"]),
        ("replay", ["series", "--out", "--resume", "--model", "--strategy", "--mode", "--steps-per-frame", "--gain",
                    "--dither", "--lr", "--overwrite", "--no-figure"]),
    ],
)
def test_help_lists_the_options(command, options, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text, option
