"""Tests of the crash-safe, resumable results file (latenttune.io.results)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from latenttune.io import ResultsFileError, ResultWriter, read_results

n, k = 4, 3
ATTRS = {
    "model_checksum": "sha256:abc123",
    "controller": {"gain": 0.5, "dither": 0.1, "omega": [1.0, 1.25, 1.5]},
    "versions": {"numpy": np.__version__, "h5py": h5py.__version__},
}
REPO = Path(__file__).resolve().parents[1]


def _row(t: int) -> dict:
    """Deterministic content of frame t (so any duplicate/lost row is detectable)."""
    rng = np.random.default_rng(t)
    return {
        "latent": rng.uniform(-1, 1, k),
        "cost": 0.1 * t + 0.01,
        "density": (rng.random((n, n, n)) + 1j * rng.random((n, n, n))),
        "time": 0.5 * t,
        "steps": 10 + t,
        "timing_s": 0.001 * (t + 1),
        "E_r": 0.2 / (t + 1),
        "status": f"ok{t}",
        "grad": np.full(2, float(t)),
    }


def _append(w: ResultWriter, t: int) -> int:
    return w.append(**_row(t))


def _check_rows(res: dict, frames: range) -> None:
    T = len(frames)
    assert res.num_frames == T
    assert res.latent.shape == (T, k) and res.latent.dtype == np.float32
    assert res.cost.shape == (T,) and res.cost.dtype == np.float32
    assert res.density.shape == (T, n, n, n) and res.density.dtype == np.complex64
    assert res.time.dtype == np.float64 and res.steps.dtype == np.int32
    for i, t in enumerate(frames):
        r = _row(t)
        np.testing.assert_array_equal(res.latent[i], r["latent"].astype(np.float32))
        np.testing.assert_array_equal(res.density[i], r["density"].astype(np.complex64))
        assert res.cost[i] == np.float32(r["cost"])
        assert res.time[i] == r["time"] and res.steps[i] == r["steps"]
        assert res.timing_s[i] == r["timing_s"] and res.E_r[i] == r["E_r"]
        assert res.status[i] == r["status"]
        np.testing.assert_array_equal(res.grad[i], r["grad"])


def test_round_trip_layout_and_attrs(tmp_path):
    path = tmp_path / "run.h5"
    with ResultWriter(path, n=n, k=k, attrs=ATTRS) as w:
        for t in range(4):
            assert _append(w, t) == t
        assert w.num_frames_written == 4
        assert sorted(w.extra_fields) == ["E_r", "grad", "status", "timing_s"]
    assert path.exists() and not Path(str(path) + ".partial").exists()
    res = read_results(path)
    _check_rows(res, range(4))
    assert res.complete is True and res.path == path
    assert res.attrs["model_checksum"] == ATTRS["model_checksum"]
    assert res.attrs["controller"] == ATTRS["controller"]
    assert res.attrs["versions"] == ATTRS["versions"]
    assert res.attrs["n"] == n and res.attrs["k"] == k
    with h5py.File(path, "r") as f:  # plain h5py sees the documented layout
        assert f["latent"].shape == (4, k) and f["density"].shape == (4, n, n, n)
        assert f["cost"].maxshape == (None,) and f.attrs["frames_complete"] == 4


def test_atomic_rename_only_on_close(tmp_path):
    path = tmp_path / "run.h5"
    partial = tmp_path / "run.h5.partial"
    w = ResultWriter(path, n=n, k=k, attrs=ATTRS)
    for t in range(3):
        _append(w, t)
        assert partial.exists() and not path.exists()
        assert read_results(path).num_frames == t + 1  # falls back to the partial
    assert w.close() == path
    assert path.exists() and not partial.exists()


def test_writer_creates_missing_folders(tmp_path):
    path = tmp_path / "new" / "run" / "result.h5"
    w = ResultWriter(path, n=n, k=k, attrs=ATTRS)
    _append(w, 0)
    assert w.close() == path
    assert read_results(path).num_frames == 1


def test_exception_leaves_partial_with_flushed_frames(tmp_path):
    path = tmp_path / "run.h5"
    with pytest.raises(RuntimeError, match="controller diverged"):
        with ResultWriter(path, n=n, k=k, attrs=ATTRS) as w:
            for t in range(3):
                _append(w, t)
            raise RuntimeError("controller diverged")
    assert not path.exists()
    res = read_results(path)
    assert str(res.path).endswith(".partial") and res.complete is False
    _check_rows(res, range(3))


_CRASH = """
import os, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from latenttune.io import ResultWriter
from test_io_results import ATTRS, _append, n, k
w = ResultWriter({path!r}, n=n, k=k, attrs=ATTRS, resume={resume})
for t in range(w.num_frames_written, {stop}):
    _append(w, t)
os._exit(3)  # hard crash: no close, no cleanup
"""


def _crash_run(path: Path, stop: int, resume: bool = False) -> None:
    code = textwrap.dedent(
        _CRASH.format(
            repo=str(REPO), tests=str(REPO / "tests"), path=str(path), stop=stop, resume=resume
        )
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr


def test_hard_crash_then_resume_no_duplicate_or_lost_frames(tmp_path):
    path = tmp_path / "run.h5"
    _crash_run(path, stop=3)
    assert not path.exists()
    _check_rows(read_results(path), range(3))
    _crash_run(path, stop=5, resume=True)  # resumes at 3, crashes again after 5
    _check_rows(read_results(path), range(5))
    with ResultWriter(path, n=n, k=k, attrs=ATTRS, resume=True) as w:
        assert w.num_frames_written == 5
        for t in range(5, 7):
            _append(w, t)
    res = read_results(path)
    _check_rows(res, range(7))
    assert res.complete is True and res.attrs["resume_count"] == 2
    np.testing.assert_array_equal(res.time, 0.5 * np.arange(7))


def test_resume_truncates_misaligned_datasets(tmp_path):
    path = tmp_path / "run.h5"
    partial = Path(str(path) + ".partial")
    w = ResultWriter(path, n=n, k=k, attrs=ATTRS)
    for t in range(3):
        _append(w, t)
    w.abort()
    # simulate a crash in the middle of frame 3: some datasets got a 4th row,
    # frames_complete was not yet updated
    junk = _row(99)
    with h5py.File(partial, "r+") as f:
        for name in ("latent", "cost", "density", "timing_s", "status"):
            ds = f[name]
            ds.resize(4, axis=0)
            ds[3] = junk[name]
        assert f.attrs["frames_complete"] == 3
    res = read_results(path)  # readers trust frames_complete
    _check_rows(res, range(3))
    w = ResultWriter(path, n=n, k=k, attrs=ATTRS, resume=True)
    assert w.num_frames_written == 3
    with h5py.File(partial, "r") as f:
        assert {name: ds.shape[0] for name, ds in f.items()} == {name: 3 for name in f}
    for t in range(3, 6):
        _append(w, t)
    w.close()
    _check_rows(read_results(path), range(6))


def test_resume_after_crash_during_first_frame(tmp_path):
    """Extra datasets created by a crashed first frame do not block the resumed run."""
    path = tmp_path / "run.h5"
    partial = Path(str(path) + ".partial")
    ResultWriter(path, n=n, k=k, attrs=ATTRS).abort()
    with h5py.File(partial, "r+") as f:
        f.create_dataset("old_extra", (1,), np.float64, maxshape=(None,))
        f["latent"].resize(1, axis=0)
    with ResultWriter(path, n=n, k=k, attrs=ATTRS, resume=True) as w:
        assert w.num_frames_written == 0
        _append(w, 0)
    res = read_results(path)
    assert not res.has_field("old_extra")
    _check_rows(res, range(1))


def test_resume_errors(tmp_path):
    path = tmp_path / "run.h5"
    with pytest.raises(FileNotFoundError, match="no partial results file"):
        ResultWriter(path, n=n, k=k, attrs=ATTRS, resume=True)
    w = ResultWriter(path, n=n, k=k, attrs=ATTRS)
    _append(w, 0)
    w.abort()
    bad = dict(ATTRS, model_checksum="sha256:other")
    with pytest.raises(ResultsFileError, match="'model_checksum' differs"):
        ResultWriter(path, n=n, k=k, attrs=bad, resume=True)
    without = {key: v for key, v in ATTRS.items() if key != "model_checksum"}
    with pytest.raises(ResultsFileError, match="model_checksum"):
        ResultWriter(path, n=n, k=k, attrs=without, resume=True)
    with pytest.raises(ResultsFileError, match="`k` = 5 differs"):
        ResultWriter(path, n=n, k=5, attrs=ATTRS, resume=True)
    with pytest.raises(FileExistsError, match="resume=True"):
        ResultWriter(path, n=n, k=k, attrs=ATTRS)
    # other attributes may differ (e.g. package versions): the file keeps its values
    newer = dict(ATTRS, versions={"numpy": "99"})
    with ResultWriter(path, n=n, k=k, attrs=newer, resume=True) as w:
        assert w.num_frames_written == 1
        _append(w, 1)
    assert read_results(path).attrs["versions"] == ATTRS["versions"]
    with pytest.raises(ResultsFileError, match="already complete"):
        ResultWriter(path, n=n, k=k, attrs=ATTRS, resume=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ResultWriter(path, n=n, k=k, attrs=ATTRS)
    with ResultWriter(path, n=n, k=k, attrs=ATTRS, overwrite=True) as w:
        _append(w, 5)
    assert read_results(path).num_frames == 1


def test_append_argument_errors(tmp_path):
    path = tmp_path / "run.h5"
    with pytest.raises(ValueError, match="reserved keys"):
        ResultWriter(path, n=n, k=k, attrs={"frames_complete": 3})
    with pytest.raises(ValueError, match="`n` must be a positive integer"):
        ResultWriter(path, n=0, k=k, attrs=ATTRS)
    with ResultWriter(path, n=n, k=k, attrs=ATTRS) as w:
        r = _row(0)
        with pytest.raises(ValueError, match=r"`latent` must be a real array of shape \(3,\)"):
            w.append(np.zeros(k + 1), r["cost"], r["density"], r["time"], r["steps"])
        with pytest.raises(ValueError, match="`density` must be"):
            w.append(r["latent"], r["cost"], np.zeros((n, n)), r["time"], r["steps"])
        with pytest.raises(ValueError, match="`steps` must be an integer"):
            w.append(r["latent"], r["cost"], r["density"], r["time"], 2.5)
        _append(w, 0)
        with pytest.raises(ValueError, match="extra fields must be the same for every frame"):
            w.append(r["latent"], r["cost"], r["density"], r["time"], r["steps"])
        bad = dict(_row(1), grad=np.zeros(3))
        with pytest.raises(ValueError, match="`grad` must have shape"):
            w.append(**bad)
        assert w.num_frames_written == 1
        _append(w, 1)
    _check_rows(read_results(path), range(2))


def test_read_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_results(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ResultsFileError, match="not a latenttune results file"):
        read_results(other)
