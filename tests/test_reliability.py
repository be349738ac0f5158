"""Issue 14: no code from data files, nothing overwritten or mixed, every bad frame skipped, clean
errors and interruptions.

One section per item of the issue; ``docs/reliability.md`` lists every input and misuse tried
here with its outcome and test. The model is the tiny ``lively_model`` of ``conftest.py`` (n = 8,
k = 4, 16^3 diffraction grid).
"""

from __future__ import annotations

import os
import pickle
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import msgpack
import msgpack_numpy
import numpy as np
import pytest
import torch
from conftest import run_cli

from latenttune.io import ResultsFileError, SeriesFormatError, open_series, read_results, write_amplitude_frames
from latenttune.model import load_model
from latenttune.plots import tracking_summary
from latenttune.tracking.replay import replay_series
from latenttune.simulate import simulate_series
from latenttune.tracking import make_strategy

K, n, N = 4, 8, 16
STEPS = 3
ROOT = Path(__file__).resolve().parents[1]


def _simulate(path: Path, frames: int = 4, seed: int = 2, photons: float = 1e6) -> Path:
    return simulate_series("growth", path, num_frames=frames, n=n, photons=photons, seed=seed)


@pytest.fixture
def series_path(tmp_path) -> Path:
    return _simulate(tmp_path / "growth.cxi")


def _es(**options):
    return make_strategy("es", K, steps_per_frame=STEPS, **options)


_cli = run_cli  # the CLI in-process: (exit status, stdout, stderr)


def _error_line(err: str, command: str) -> str:
    """The one error line of a failed command (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"latenttune {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _replay_argv(series, checkpoint, out, *extra) -> list[str]:
    return ["replay", str(series), "--model", str(checkpoint), "--out", str(out), "--steps-per-frame", str(STEPS),
            *extra]


def _partial(out: Path) -> Path:
    return Path(str(out) + ".partial")


def _stacked(series: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with open_series(series) as s:
        return (np.stack([f.intensity for f in s]), np.stack([f.mask for f in s]), s.times)


def _write_cxi(path: Path, intensities: np.ndarray, mask: np.ndarray | None = None) -> Path:
    """A stacked CXI series written with h5py (the series writer refuses bad values on purpose)."""
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = intensities
        if mask is not None:
            f["entry_1/instrument_1/detector_1/mask"] = mask.astype(np.uint32)
    return path


# == 1. no code from data files ===================================================================


class _Payload:
    """Unpickling this creates a folder: the visible effect of running code from a data file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil_array(marker: Path) -> dict:
    """msgpack-numpy's encoding of an object array, whose data msgpack_numpy.decode unpickles."""
    return {b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1], b"data": pickle.dumps(_Payload(marker))}


def _run_documents(patterns, masks=None, extra_start=None) -> list[tuple[str, dict]]:
    """The documents of a minimal stored tracking run (what MsgpackStorage writes), by hand."""
    keys = {"pattern": "cdi_pattern", "mask": "cdi_mask" if masks is not None else None, "frame_index": None,
            "sample_time": None, "latent": "tracker_latent", "cost": "tracker_cost", "es_steps": "tracker_es_steps",
            "status": "tracker_status"}
    start = {"uid": "run-0001", "time": 100.0, "latenttune": {"keys": keys, "k": K, "n": n}, **(extra_start or {})}
    data_keys = {"cdi_pattern": {"dtype": "array", "shape": [N, N, N], "dtype_numpy": "<f4", "source": "sim"}}
    data = {"cdi_pattern": list(patterns)}
    if masks is not None:
        data_keys["cdi_mask"] = {"dtype": "array", "shape": [N, N, N], "dtype_numpy": "|b1", "source": "sim"}
        data["cdi_mask"] = list(masks)
    times = [101.0 + t for t in range(len(patterns))]
    return [
        ("start", start),
        ("descriptor", {"uid": "desc-1", "name": "primary", "run_start": "run-0001", "data_keys": data_keys}),
        ("event_page", {"descriptor": "desc-1", "time": times, "seq_num": list(range(1, len(times) + 1)),
                        "data": data, "timestamps": {k: times for k in data}}),
        ("stop", {"uid": "stop-1", "run_start": "run-0001", "exit_status": "success"}),
    ]


def _write_run(path: Path, documents) -> Path:
    with open(path, "wb") as f:
        for item in documents:
            f.write(msgpack.packb(list(item), default=msgpack_numpy.encode))
    return path


@pytest.fixture
def evil_run(tmp_path, series_path) -> tuple[Path, Path]:
    """A run file whose start document carries a pickle payload; and the folder it would create."""
    marker = tmp_path / "pwned"
    intensities, masks, _ = _stacked(series_path)
    documents = _run_documents(intensities, masks, extra_start={"note": _evil_array(marker)})
    return _write_run(tmp_path / "evil.msgpack", documents), marker


def test_the_crafted_payload_is_a_real_exploit_for_msgpack_numpy(tmp_path):
    """Sanity check of the payload: the decoder used before issue 14 runs it."""
    marker = tmp_path / "pwned-by-msgpack-numpy"
    packed = msgpack.packb({"x": _evil_array(marker)})
    msgpack.unpackb(packed, object_hook=msgpack_numpy.decode, raw=False)
    assert marker.is_dir()


def test_crafted_msgpack_run_is_refused_and_runs_nothing(evil_run, checkpoint, tmp_path, capsys):
    path, marker = evil_run
    with pytest.raises(SeriesFormatError, match="pickle"):
        open_series(path)
    from latenttune.bluesky.storage import read_documents

    with pytest.raises(ValueError, match="pickle"):
        list(read_documents(path))
    code, _, err = _cli(capsys, *_replay_argv(path, checkpoint, tmp_path / "r.h5"))
    assert code == 2 and "pickle" in _error_line(err, "replay")
    assert not marker.exists()  # nothing in the file was executed
    assert not (tmp_path / "r.h5").exists() and not _partial(tmp_path / "r.h5").exists()


def test_crafted_array_in_an_event_is_refused_too(tmp_path, series_path):
    marker = tmp_path / "pwned"
    intensities, masks, _ = _stacked(series_path)
    documents = _run_documents(intensities, masks)
    documents[2][1]["data"]["cdi_pattern"][1] = _evil_array(marker)
    path = _write_run(tmp_path / "evil-event.msgpack", documents)
    with pytest.raises(SeriesFormatError, match="refused"):
        open_series(path)
    assert not marker.exists()


@pytest.mark.parametrize("value", [
    np.arange(24, dtype="<f4").reshape(2, 3, 4), np.zeros((2, 2), dtype=bool), np.array([1, -2], dtype=">i8"),
    np.array([1 + 2j], dtype=np.complex64), np.array(["ab", "c"]), np.array([b"xy"]), np.float32(1.5),
    np.int64(-7), 3 + 4j,
])
def test_safe_decoder_reads_plain_arrays_like_msgpack_numpy(value):
    from latenttune.io.msgpack_safe import decode_object

    packed = msgpack.packb({"v": value}, default=msgpack_numpy.encode)
    ours = msgpack.unpackb(packed, object_hook=decode_object, raw=False)["v"]
    theirs = msgpack.unpackb(packed, object_hook=msgpack_numpy.decode, raw=False)["v"]
    assert type(ours) is type(theirs)
    np.testing.assert_array_equal(ours, theirs)
    assert np.asarray(ours).dtype == np.asarray(theirs).dtype


@pytest.mark.parametrize("bad, rule", [
    ({b"nd": True, b"type": [["a", "<f4"]], b"kind": b"V", b"shape": [1], b"data": b"\0" * 4}, "kind"),
    ({b"nd": True, b"type": "|O", b"kind": b"", b"shape": [1], b"data": b"\0" * 8}, "refused"),
    ({b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [3], b"data": b"\0" * 4}, "12 bytes"),
    ({b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [-1], b"data": b""}, "shape"),
    ({b"nd": False, b"type": "|O", b"data": b"\0" * 8}, "refused"),
])
def test_safe_decoder_refuses_what_it_cannot_build_from_bytes(bad, rule):
    from latenttune.io.msgpack_safe import UnsafeContentError, decode_object

    with pytest.raises(UnsafeContentError, match=rule):
        msgpack.unpackb(msgpack.packb({"v": bad}), object_hook=decode_object, raw=False)


# == 2. nothing overwritten through output names ================================================


def _digest(path: Path) -> bytes:
    return path.read_bytes()


def test_out_that_is_the_summary_figure_is_refused(series_path, checkpoint, tmp_path, capsys):
    out = tmp_path / "r.png"
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, out))
    assert code == 2 and "summary figure" in _error_line(err, "replay")
    assert not out.exists() and not _partial(out).exists()


def test_out_that_is_the_input_series_is_refused_even_with_overwrite(series_path, checkpoint, capsys):
    before = _digest(series_path)
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, series_path, "--overwrite"))
    assert code == 2 and "input series" in _error_line(err, "replay")
    assert _digest(series_path) == before


def test_replay_series_never_writes_over_its_series(tmp_path, series_path, loaded):
    """The library refuses it too, not only the CLI."""
    before = _digest(series_path)
    with pytest.raises(ValueError, match="is the series"):
        replay_series(series_path, loaded, _es(), series_path, overwrite=True)
    named_like_partial = tmp_path / "r.h5.partial"
    named_like_partial.write_bytes(before)
    with pytest.raises(ValueError, match="is the series"):
        replay_series(named_like_partial, loaded, _es(), tmp_path / "r.h5", overwrite=True)
    assert _digest(series_path) == before and _digest(named_like_partial) == before


def test_input_that_is_a_partial_output_is_refused(series_path, checkpoint, tmp_path, capsys):
    out = tmp_path / "r.h5"
    renamed = tmp_path / "r.h5.partial"
    renamed.write_bytes(series_path.read_bytes())
    code, _, err = _cli(capsys, *_replay_argv(renamed, checkpoint, out, "--overwrite"))
    assert code == 2 and "input series" in _error_line(err, "replay")
    assert _digest(renamed) == _digest(series_path)


def test_out_that_is_the_model_is_refused(series_path, checkpoint, capsys):
    before = _digest(checkpoint)
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, checkpoint, "--overwrite", "--no-figure"))
    assert code == 2 and "model checkpoint" in _error_line(err, "replay")
    assert _digest(checkpoint) == before


def test_existing_summary_figure_is_not_replaced_without_overwrite(series_path, checkpoint, tmp_path, capsys):
    out = tmp_path / "r.h5"
    figure = tmp_path / "r.png"
    figure.write_bytes(b"my figure")
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, out))
    assert code == 2 and "r.png" in _error_line(err, "replay") and "--overwrite" in err
    assert figure.read_bytes() == b"my figure"
    assert not out.exists() and not _partial(out).exists()  # refused before any work
    code, _, _ = _cli(capsys, *_replay_argv(series_path, checkpoint, out, "--overwrite"))
    assert code == 0 and figure.read_bytes() != b"my figure" and out.exists()


def test_track_out_that_is_its_figure_is_refused(checkpoint, tmp_path, capsys):
    out = tmp_path / "t.png"
    code, _, err = _cli(capsys, "track", "--frames", "2", "--model", checkpoint, "--out", out)
    assert code == 2 and "summary figure" in _error_line(err, "track")
    assert not list(tmp_path.glob("t.*"))


def test_train_does_not_replace_a_checkpoint_without_overwrite(tiny_toml, checkpoint, capsys):
    before = _digest(checkpoint)
    code, _, err = _cli(capsys, "train", "--config", tiny_toml, "--out", checkpoint)
    assert code == 2 and "--overwrite" in _error_line(err, "train")
    assert _digest(checkpoint) == before


# == 3. resume never mixes runs ==================================================================


def _stopped_after(frame: int):
    return lambda report: report.record.index == frame


@pytest.fixture
def interrupted(tmp_path, loaded, series_path) -> Path:
    """A replay stopped after frame 1 (two rows in OUT.partial)."""
    out = tmp_path / "r.h5"
    replay_series(series_path, loaded, _es(), out, callback=_stopped_after(1))
    assert read_results(_partial(out)).num_frames == 2
    return out


@pytest.mark.parametrize("change, named", [
    ({"strategy": lambda: _es(mode="residual")}, "`mode`"),
    ({"strategy": lambda: _es(gain=2.0)}, "`gain`"),
    ({"strategy": lambda: _es(dither=0.05)}, "`dither`"),
    ({"strategy": lambda: _es(reseed=False)}, "`reseed`"),
    ({"strategy": lambda: make_strategy("es", K, steps_per_frame=STEPS + 1)}, "`steps_per_frame`"),
    ({"strategy": lambda: make_strategy("gradient", K, steps_per_frame=STEPS)}, "`strategy`"),
    ({"strategy": lambda: make_strategy("one-shot", K)}, "`strategy`"),
    ({"strategy": lambda: make_strategy("hybrid", K, steps_per_frame=STEPS)}, "`strategy`"),
    ({"series": "other"}, "the series differs"),
    ({"series": "rewritten"}, "series content differs"),
])
def test_resume_refuses_any_difference_and_names_it(interrupted, loaded, series_path, tmp_path, change, named):
    reference = tmp_path / "reference.h5"
    replay_series(series_path, loaded, _es(), reference)
    strategy = change.get("strategy", _es)()
    series = series_path
    if change.get("series") == "other":
        series = _simulate(tmp_path / "other.cxi", seed=2)  # same content, another file
    if change.get("series") == "rewritten":  # same file name, other content
        saved = tmp_path / "saved.cxi"
        series_path.rename(saved)
        _simulate(series_path, seed=9)
    partial = _partial(interrupted)
    before = read_results(partial)
    with pytest.raises(ResultsFileError, match=named) as info:
        replay_series(series, loaded, strategy, interrupted, resume=True)
    assert "\n" not in str(info.value)
    after = read_results(partial)  # untouched by the refusal
    assert after.num_frames == 2 and after.attrs["resume_count"] == before.attrs["resume_count"] == 0
    if change.get("series") == "rewritten":
        series_path.unlink()
        saved.rename(series_path)
    replay_series(series_path, loaded, _es(), interrupted, resume=True)  # the right settings still resume
    final, ref = read_results(interrupted), read_results(reference)
    for name in ("latent", "cost", "density", "index", "step_costs", "series_sha256"):
        np.testing.assert_array_equal(getattr(final, name), getattr(ref, name), err_msg=name)


def test_resume_with_another_gain_on_the_command_line_is_one_line(series_path, checkpoint, tmp_path, capsys):
    out = tmp_path / "r.h5"
    argv = _replay_argv(series_path, checkpoint, out, "--no-figure", "--strategy", "es")
    replay_series(series_path, load_model(checkpoint), _es(), out, callback=_stopped_after(0))
    code, _, err = _cli(capsys, *argv, "--resume", "--gain", "2")
    assert code == 2 and "`gain` differs" in _error_line(err, "replay")
    code, _, err = _cli(capsys, *argv, "--resume", "--strategy", "gradient")
    assert code == 2 and "`strategy` differs" in _error_line(err, "replay")  # was a KeyError
    assert _cli(capsys, *argv, "--resume")[0] == 0


def test_resume_of_a_file_without_identity_is_refused(interrupted, loaded, series_path):
    with h5py.File(_partial(interrupted), "r+") as f:
        del f.attrs["settings"]
    with pytest.raises(ResultsFileError, match="no 'settings'"):
        replay_series(series_path, loaded, _es(), interrupted, resume=True)


def test_results_store_the_series_identity_and_settings(tmp_path, loaded, series_path):
    out = tmp_path / "r.h5"
    replay_series(series_path, loaded, _es(gain=1.5), out)
    r = read_results(out)
    assert r.attrs["series_identity"] == {"path": str(series_path.resolve()), "uid": None}
    settings = r.attrs["settings"]
    assert settings["strategy"] == "es" and settings["mode"] == "absolute" and settings["gain"] == 1.5 and settings["steps_per_frame"] == STEPS
    assert settings["model_checksum"] == loaded.checksum and settings["device"] == "cpu" and "physics" not in settings
    assert len(set(r.series_sha256)) == r.num_frames == 4


# == 4. one frame policy: a bad frame is skipped and recorded, from every source ==================


def test_frame_policy_reasons():
    from latenttune.frame_policy import frame_problem

    ok = np.ones((N, N, N), np.float32)
    mask = np.zeros((N, N, N), bool)
    mask[0] = True
    cases = {"nan": (np.nan, None), "inf": (np.inf, None), "negative": (-1.0, None)}
    expected = {"nan": "non-finite intensity", "inf": "non-finite intensity", "negative": "negative intensity"}
    for name, (value, _) in cases.items():
        bad = ok.copy()
        bad[3, 3, 3] = value
        assert frame_problem(bad, None) == expected[name]
        masked = ok.copy()
        masked[0, 1, 1] = value  # the same value where nothing was measured does not matter
        assert frame_problem(masked, mask) is None
    assert frame_problem(np.zeros_like(ok), None) == "no counts on the measured voxels"
    assert frame_problem(ok, np.ones_like(mask)) == "no measured voxels"
    assert frame_problem(ok, mask) is None


BAD = {1: np.nan, 2: -3.0, 3: np.inf}
REASONS = {1: "skipped: non-finite intensity", 2: "skipped: negative intensity", 3: "skipped: non-finite intensity"}


def _corrupt(intensities: np.ndarray, masks: np.ndarray) -> np.ndarray:
    out = intensities.copy()
    for t, value in BAD.items():
        voxel = tuple(np.argwhere(~masks[t])[5])
        out[(t, *voxel)] = value
    return out


def _assert_skipped_and_held(results: dict) -> None:
    status = list(results.status)
    assert results.num_frames == 5 and status[0] == "ok" and status[4] == "ok", status
    for t, reason in REASONS.items():
        assert status[t] == reason
        np.testing.assert_array_equal(results.latent[t], results.latent[0])  # held
        assert np.isnan(results.cost[t]) and results.steps[t] == 0
    assert np.isfinite(results.cost[[0, 4]]).all()


def _bad_cxi(tmp_path) -> Path:
    intensities, masks, _ = _stacked(_simulate(tmp_path / "good.cxi", frames=5))
    return _write_cxi(tmp_path / "bad.cxi", _corrupt(intensities, masks), masks)


def test_bad_frames_in_a_file_are_skipped_and_recorded(tmp_path, checkpoint, capsys):
    out = tmp_path / "r.h5"
    code, printed, err = _cli(capsys, *_replay_argv(_bad_cxi(tmp_path), checkpoint, out))
    assert code == 0, err
    _assert_skipped_and_held(read_results(out))
    assert printed.count("skipped: ") == 3
    assert (tmp_path / "r.png").exists()


@pytest.mark.parametrize("kind", ["folder", "npy"])
def test_bad_frames_in_cohere_frames_are_skipped_and_recorded(tmp_path, loaded, kind):
    intensities, _, _ = _stacked(_simulate(tmp_path / "good.cxi", frames=5))
    amplitudes = np.sqrt(intensities)
    for t, value in BAD.items():
        amplitudes[t, 1, 2, 3] = value  # no mask: every voxel measured
    if kind == "folder":
        source = tmp_path / "frames"
        write_amplitude_frames(source, intensities)
        for t in BAD:
            np.save(source / f"frame_{t}.npy", amplitudes[t])
    else:
        source = tmp_path / "frames.npy"
        np.save(source, amplitudes)
    replay_series(source, loaded, _es(), tmp_path / "r.h5")
    _assert_skipped_and_held(read_results(tmp_path / "r.h5"))


def test_a_bad_frame_is_skipped_also_after_resume(tmp_path, loaded):
    series = _bad_cxi(tmp_path)
    reference, out = tmp_path / "reference.h5", tmp_path / "r.h5"
    replay_series(series, loaded, _es(), reference)
    replay_series(series, loaded, _es(), out, callback=_stopped_after(0))
    replay_series(series, loaded, _es(), out, resume=True)  # before: the reader raised at frame 1 again
    final = read_results(out)
    _assert_skipped_and_held(final)
    ref = read_results(reference)
    for name in ("latent", "cost", "density", "status", "series_sha256"):
        np.testing.assert_array_equal(getattr(final, name), getattr(ref, name), err_msg=name)


def test_bad_frames_live_and_in_the_stored_run_are_skipped_and_recorded(tmp_path, loaded, checkpoint, capsys):
    """Live (Bluesky plan with a detector whose readout is corrupted on some frames) and stored (the
    run's msgpack file replayed): the same frames are skipped, the latent held, the run goes on."""
    from bluesky import RunEngine

    from latenttune.bluesky import LatentTracker, MsgpackStorage, SimulatedCDIDetector, track_sample
    from sim import Detector, make_scenario

    class FaultyReadout(SimulatedCDIDetector):
        """The simulated detector, with one corrupted voxel in chosen frames."""

        def measure(self, frame: int, current: float):
            counts, mask = super().measure(frame, current)
            if frame in BAD:
                counts = counts.copy()
                counts[tuple(np.argwhere(~mask)[5])] = BAD[frame]
            return counts, mask

    scenario = make_scenario("growth", np.random.default_rng(0), n=n, num_frames=5)
    detector = FaultyReadout(scenario, Detector(photons=1e6, beamstop_radius=1.5), np.random.default_rng(1))
    RE = RunEngine({}, call_returns_result=True)
    storage = MsgpackStorage(tmp_path / "runs")
    RE.subscribe(storage)
    events = []
    RE.subscribe(lambda name, doc: events.append(doc) if name == "event" and "tracker_status" in doc["data"] else None)
    result = RE(track_sample(detector, LatentTracker.for_model(loaded), loaded, _es(), num=5))
    assert result.exit_status == "success"  # a negative voxel used to end the live run (encoder error)
    live_status = [e["data"]["tracker_status"] for e in events]
    assert live_status == ["ok", *REASONS.values(), "ok"]
    out = tmp_path / "stored.h5"
    code, _, err = _cli(capsys, *_replay_argv(storage.paths[-1], checkpoint, out, "--strategy", "es", "--no-figure"))
    assert code == 0, err
    stored = read_results(out)
    _assert_skipped_and_held(stored)
    np.testing.assert_array_equal(stored.cost, np.array([e["data"]["tracker_cost"] for e in events], np.float32))


# == 5. expected failures are one line and exit status 2 =========================================


def _no_usable_series(tmp_path, case: str) -> Path:
    if case == "tiny flux":
        return _simulate(tmp_path / "dim.cxi", frames=3, photons=1e-3)
    intensities, masks, _ = _stacked(_simulate(tmp_path / "good.cxi", frames=3))
    if case == "all zero":
        return _write_cxi(tmp_path / "zero.cxi", np.zeros_like(intensities), masks)
    return _write_cxi(tmp_path / "masked.cxi", intensities, np.ones_like(masks))


@pytest.mark.parametrize("case", ["all zero", "all masked", "tiny flux"])
def test_no_usable_frame_is_a_clear_error_and_leaves_no_file(tmp_path, checkpoint, capsys, case):
    out = tmp_path / "r.h5"
    code, _, err = _cli(capsys, *_replay_argv(_no_usable_series(tmp_path, case), checkpoint, out))
    line = _error_line(err, "replay")  # was: KeyError 'E_r' and an empty results file marked complete
    assert code == 2 and "no usable frame" in line and "all 3 frame(s) were skipped" in line
    assert not out.exists() and not _partial(out).exists() and not (tmp_path / "r.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_one_line(series_path, checkpoint, tmp_path, capsys, tiny_toml):
    for argv in (_replay_argv(series_path, checkpoint, tmp_path / "r.h5", "--device", "cuda"),
                 ["evaluate", "--model", str(checkpoint), "--device", "cuda", "--samples", "1"],
                 ["train", "--config", str(tiny_toml), "--out", str(tmp_path / "m.pt"), "--device", "cuda"]):
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and "needs a CUDA GPU" in _error_line(err, argv[0])


def _edit_checkpoint(path: Path, edit) -> Path:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def test_checkpoint_whose_weights_do_not_fit_its_config_is_one_line(series_path, checkpoint, tmp_path, capsys):
    _edit_checkpoint(checkpoint, lambda p: p["config"].update(latent_dim=5))
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, tmp_path / "r.h5"))
    assert code == 2 and "do not match the checkpoint's config" in _error_line(err, "replay")


def test_uid_on_a_cxi_file_is_one_line(series_path, checkpoint, tmp_path, capsys):
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, tmp_path / "r.h5", "--uid", "abc"))
    assert code == 2 and "without --uid" in _error_line(err, "replay")


def test_uid_on_a_catalog_file_that_is_not_one_is_one_line(checkpoint, tmp_path, capsys):
    pytest.importorskip("tiled")
    junk = tmp_path / "catalog.db"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    code, _, err = _cli(capsys, *_replay_argv(junk, checkpoint, tmp_path / "r.h5", "--uid", "abc"))
    assert code == 2 and "cannot be opened as a tiled catalog" in _error_line(err, "replay")


@pytest.mark.parametrize("damage", ["garbage", "not results", "rows missing", "bad state"])
def test_corrupt_partial_on_resume_is_one_line(series_path, checkpoint, tmp_path, capsys, damage):
    out = tmp_path / "r.h5"
    replay_series(series_path, load_model(checkpoint), _es(), out, callback=_stopped_after(1))
    partial = _partial(out)
    if damage == "garbage":
        partial.write_bytes(b"\x89HDF\r\n" + os.urandom(2000))
    elif damage == "not results":
        with h5py.File(partial, "w") as f:
            f["x"] = 1
    elif damage == "rows missing":
        with h5py.File(partial, "r+") as f:
            f.attrs["frames_complete"] = 7
    else:
        with h5py.File(partial, "r+") as f:
            f.attrs["frames_complete"] = 2
            del f["strategy_state"]
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, out, "--resume", "--no-figure"))
    assert code == 2 and str(partial) in _error_line(err, "replay")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tiled_server_is_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    pytest.importorskip("tiled")
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)  # tiled retries for 25 s by default
    url = f"http://127.0.0.1:{_free_port()}/"
    code, _, err = _cli(capsys, *_replay_argv(url, checkpoint, tmp_path / "r.h5", "--uid", "abc"))
    assert code == 2 and "cannot reach the tiled server" in _error_line(err, "replay")


@pytest.fixture(scope="module")
def tiled_server_with_key():
    """A real tiled server (temporary catalog) that requires the API key "secret"."""
    pytest.importorskip("tiled")
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tiled", "serve", "catalog", "--temp", "--api-key", "secret",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "api/v1/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:  # pragma: no cover
            pytest.fail("the tiled server (the dev extra's tiled[server]) did not answer within 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("key", [None, "wrong"])
def test_tiled_server_without_the_key_is_one_line(tiled_server_with_key, checkpoint, tmp_path, capsys, monkeypatch,
                                                   key):
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    if key is not None:
        monkeypatch.setenv("TILED_API_KEY", key)
    code, _, err = _cli(capsys, *_replay_argv(tiled_server_with_key, checkpoint, tmp_path / "r.h5", "--uid", "x"))
    assert code == 2 and "API key" in _error_line(err, "replay")


class _TruthSpy(list):
    """Ground truth per series frame that remembers which frames were asked for."""

    def __init__(self, items) -> None:
        super().__init__(items)
        self.asked: list[int] = []

    def __getitem__(self, i):
        self.asked.append(int(i))
        return super().__getitem__(i)


def test_a_skipped_first_frame_does_not_shift_the_summary_figure(tmp_path, loaded, series_path):
    intensities, masks, _ = _stacked(series_path)
    intensities[0] = 0.0
    dark = _write_cxi(tmp_path / "dark-first.cxi", intensities, masks)
    with h5py.File(dark, "a") as f, h5py.File(series_path, "r") as g:
        f["entry_1/truth/density"] = g["entry_1/truth/density"][()]
    out = tmp_path / "r.h5"
    replay_series(dark, loaded, _es(), out)
    results = read_results(out)
    assert results.index.tolist() == [1, 2, 3]  # frame 0 had no estimate to hold: no row
    with open_series(dark) as s:
        truth = _TruthSpy([s.truth(t) for t in range(len(s))])
    tracking_summary(results, tmp_path / "r.png", truth=truth)
    assert sorted(set(truth.asked)) == [1, 2, 3]  # row r is shown against the truth of frame index[r]


# == 6. integrity =================================================================================


def test_checkpoint_with_altered_weights_is_refused(series_path, checkpoint, tmp_path, capsys):
    def alter(payload):
        name = sorted(payload["state_dict"])[0]
        payload["state_dict"][name] = payload["state_dict"][name] + 1e-3

    _edit_checkpoint(checkpoint, alter)
    with pytest.raises(ValueError, match="do not match the checkpoint's checksum"):
        load_model(checkpoint)
    code, _, err = _cli(capsys, *_replay_argv(series_path, checkpoint, tmp_path / "r.h5"))
    assert code == 2 and "checksum" in _error_line(err, "replay")


@pytest.mark.parametrize("strategy, option", [
    ("one-shot", ["--gain", "2"]), ("one-shot", ["--dither", "0.05"]), ("one-shot", ["--lr", "0.1"]),
    ("one-shot", ["--no-reseed"]), ("one-shot", ["--mode", "residual"]), ("one-shot", ["--steps-per-frame", "7"]),
    ("gradient", ["--gain", "2"]), ("gradient", ["--dither", "0.05"]), ("gradient", ["--no-reseed"]),
    ("es", ["--lr", "0.1"]), ("es", ["--mode", "residual", "--no-reseed"]),
])
def test_options_the_strategy_ignores_are_errors(series_path, checkpoint, tmp_path, capsys, strategy, option):
    out = tmp_path / "r.h5"
    argv = ["replay", str(series_path), "--model", str(checkpoint), "--out", str(out), "--strategy", strategy, *option]
    code, _, err = _cli(capsys, *argv)
    line = _error_line(err, "replay")
    assert code == 2 and ("--no-reseed" if "--no-reseed" in option else option[0]) in line
    assert not out.exists() and not _partial(out).exists()


# == 7. interrupted track: Ctrl-C stops cleanly, --resume continues ==============================


def _start_cli(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "latenttune.cli", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _frames_in(partial: Path) -> int:
    try:
        return int(read_results(partial).num_frames)
    except Exception:  # absent, or caught mid-write
        return 0


def _interrupt_after_frames(proc: subprocess.Popen, partial: Path, frames: int, presses: int = 1) -> tuple[int, str]:
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and _frames_in(partial) < frames:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    try:
        _, err = proc.communicate(timeout=60)  # it must stop: never ignore Ctrl-C
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
    return proc.returncode, err


def test_track_interrupted_by_ctrl_c_resumes_to_the_uninterrupted_run(checkpoint, tmp_path, capsys):
    options = ["--frames", "6", "--photons", "1e6", "--model", str(checkpoint), "--steps-per-frame", "400",
               "--no-figure"]
    out = tmp_path / "t.h5"
    code, err = _interrupt_after_frames(_start_cli(["track", *options, "--out", str(out)]), _partial(out), 1)
    assert code == 130 and "Traceback" not in err, err
    kept = read_results(_partial(out))
    assert 1 <= kept.num_frames < 6 and not kept.complete
    command = err.strip().splitlines()[-1].split("continue with: ")[-1]
    argv = shlex.split(command)
    assert argv[:2] == ["latenttune", "track"] and argv[-1] == "--resume"
    assert _cli(capsys, *argv[1:])[0] == 0  # the printed command continues the run
    reference = tmp_path / "ref.h5"
    assert _cli(capsys, "track", *options, "--out", str(reference))[0] == 0
    final, ref = read_results(out), read_results(reference)
    assert final.complete and final.num_frames == 6 and final.attrs["resume_count"] == 1
    for name in ("latent", "cost", "density", "index", "step_costs", "status", "series_sha256"):
        np.testing.assert_array_equal(getattr(final, name), getattr(ref, name), err_msg=name)


def test_track_resume_refuses_other_simulation_settings(checkpoint, tmp_path, capsys):
    out = tmp_path / "t.h5"
    base = ["track", "--frames", "3", "--photons", "1e6", "--model", str(checkpoint), "--steps-per-frame", "2",
            "--no-figure", "--out", str(out)]
    replay_dir = tmp_path / "t.series.cxi"
    _simulate(replay_dir, frames=3, seed=0)  # what `track` simulates with these options
    replay_series(replay_dir, load_model(checkpoint), make_strategy("es", K, steps_per_frame=2), out,
                  callback=_stopped_after(0))
    code, _, err = _cli(capsys, *base, "--resume", "--seed", "5")
    assert code == 2 and "`--seed` differs" in _error_line(err, "track")
    code, _, err = _cli(capsys, *base, "--resume", "--frames", "4")
    assert code == 2 and "`--frames` differs" in _error_line(err, "track")
    code, _, err = _cli(capsys, *base[:-1], str(tmp_path / "never.h5"), "--resume")
    assert code == 2 and "nothing to resume" in _error_line(err, "track")


def test_a_second_ctrl_c_stops_at_once_and_leaves_a_resumable_file(series_path, checkpoint, tmp_path):
    out = tmp_path / "r.h5"
    partial = _partial(out)
    proc = _start_cli(["replay", str(series_path), "--model", str(checkpoint), "--out", str(out),
                       "--steps-per-frame", "4000", "--no-figure"])
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and _frames_in(partial) < 1:
        time.sleep(0.02)
    first = time.monotonic()
    while proc.poll() is None and time.monotonic() < deadline and _frames_in(partial) < 2:
        time.sleep(0.02)
    frame_seconds = time.monotonic() - first
    pressed = time.monotonic()
    code, err = _interrupt_after_frames(proc, partial, 2, presses=2)
    stopped_in = time.monotonic() - pressed
    assert code == 130 and "Traceback" not in err and "continue with: latenttune replay" in err, err
    assert stopped_in < 0.5 * frame_seconds, (stopped_in, frame_seconds)  # did not wait for the frame to end
    assert read_results(partial).num_frames == 2  # the interrupted frame left no row


@pytest.mark.parametrize("delay", [0.5, 2.0])
def test_ctrl_c_before_tracking_stops_the_command(series_path, checkpoint, tmp_path, delay):
    out = tmp_path / "r.h5"
    proc = _start_cli(["replay", str(series_path), "--model", str(checkpoint), "--out", str(out),
                       "--steps-per-frame", "1000", "--no-figure"])
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
    assert proc.returncode in (130, -signal.SIGINT)  # stopped, never ignored
    assert not out.exists() or read_results(out).complete
    if _partial(out).exists():
        read_results(_partial(out))  # whatever was kept is readable
