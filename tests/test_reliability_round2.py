"""Issue 29: no command writes over an input, every size is bounded before it is allocated, malformed
files are answered in one line, the Python API validates at its boundary.

One section per part of the issue; ``docs/reliability.md`` (round 2) lists every case tried here
with its outcome before and after. The model is the tiny ``lively_model`` of ``conftest.py``
(n = 8, k = 4, 16^3 diffraction grid). Cases that must be shown under an address-space limit or
against a hang run the CLI in a child process (``python -m latenttune.cli`` from this checkout).
"""

from __future__ import annotations

import copy
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_tables, toml_text

from latenttune.bluesky.storage import MsgpackStorage
from latenttune.frame_policy import frame_problem
from latenttune.io import open_series, read_results, write_amplitude_frames
from latenttune.model import load_model, save_checkpoint
from latenttune.outputs import check_outputs
from latenttune.simulate import simulate_series
from latenttune.tracking import make_strategy, track
from latenttune.tracking.replay import replay_series

K, n, N = 4, 8, 16
ROOT = Path(__file__).resolve().parents[1]
_cli = run_cli  # the CLI in-process: (exit status, stdout, stderr)


def _simulate(path: Path, frames: int = 3, seed: int = 2) -> Path:
    return simulate_series("growth", path, num_frames=frames, n=n, photons=1e6, seed=seed)


@pytest.fixture
def series_path(tmp_path) -> Path:
    return _simulate(tmp_path / "s.cxi")


def _error_line(err: str, command: str) -> str:
    """The one error line of a failed command (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"latenttune {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _replay(series, checkpoint, out, *extra) -> list:
    return ["replay", series, "--model", checkpoint, "--out", out, "--strategy", "one-shot", "--no-figure", *extra]


def _results(tmp_path, series_path, checkpoint, name: str = "r.h5") -> Path:
    out = tmp_path / name
    code, _, _ = _cli_quiet(_replay(series_path, checkpoint, out))
    assert code == 0 and out.exists()
    return out


def _cli_quiet(argv) -> tuple[int, str, str]:
    """The CLI in-process without capsys (for fixtures): (exit status, '', '')."""
    from latenttune.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, "", ""


def _child(argv: list, *, limit_bytes: int | None = None, timeout: float = 60) -> tuple[int, str, float]:
    """``python -m latenttune.cli ARGV`` in a child process (this checkout), optionally under RLIMIT_AS.

    Returns (exit status, stderr, seconds including start-up); a hang past ``timeout`` is a failure.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "latenttune.cli", *map(str, argv)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout, preexec_fn=limit, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`latenttune {' '.join(map(str, argv))}` did not answer within {timeout} s")
    return done.returncode, done.stderr, time.monotonic() - start


# == 1. no command writes over an input ===========================================================


def test_simulate_never_writes_over_its_model(checkpoint, capsys):
    before = checkpoint.read_bytes()
    code, _, err = _cli(capsys, "simulate", "latent-walk", "--frames", "2", "--n", n, "--model", checkpoint,
                        "--out", checkpoint, "--overwrite")
    assert code == 2 and "refusing to write over an input" in _error_line(err, "simulate")
    assert checkpoint.read_bytes() == before  # was: the model replaced by the simulated series


def test_simulate_writes_only_series_suffixes(tmp_path, capsys):
    code, _, err = _cli(capsys, "simulate", "growth", "--frames", "1", "--n", n, "--out", tmp_path / "s.txt")
    assert code == 2 and "must end in .cxi or .h5" in _error_line(err, "simulate")
    assert not list(tmp_path.iterdir())  # was: HDF5 written to s.txt
    with pytest.raises(ValueError, match="`out` .* must end in .cxi or .h5"):
        simulate_series("growth", tmp_path / "s.txt", num_frames=1, n=n)


def test_prepare_never_writes_over_a_dataset_input(series_path, capsys):
    before = series_path.read_bytes()
    code, _, err = _cli(capsys, "prepare", f"{series_path}:/entry_1/data_1/data", "--grid", N, "--out", series_path,
                        "--overwrite")
    assert code == 2 and "refusing to write over an input" in _error_line(err, "prepare")
    assert series_path.read_bytes() == before  # was: the measured data destroyed


def test_prepare_never_writes_over_its_mask(series_path, tmp_path, capsys):
    mask = tmp_path / "m.h5"
    with h5py.File(mask, "w") as f:
        f["mask"] = np.zeros((N, N, N), np.uint8)
    before = mask.read_bytes()
    code, _, err = _cli(capsys, "prepare", series_path, "--mask", f"{mask}:/mask", "--grid", N, "--out", mask,
                        "--overwrite")
    assert code == 2 and "the mask (--mask)" in _error_line(err, "prepare")
    assert mask.read_bytes() == before  # was: the mask destroyed


def test_prepare_never_writes_over_a_file_in_an_input_folder(series_path, tmp_path, capsys):
    folder = tmp_path / "steps"
    folder.mkdir()
    for t in range(2):
        (folder / f"step_{t}.cxi").write_bytes(series_path.read_bytes())
    before = (folder / "step_1.cxi").read_bytes()
    code, _, err = _cli(capsys, "prepare", folder, "--grid", N, "--out", folder / "step_1.cxi", "--overwrite")
    assert code == 2 and "inside" in _error_line(err, "prepare")
    assert (folder / "step_1.cxi").read_bytes() == before


def test_prepare_library_never_writes_over_its_inputs(series_path):
    from latenttune.prepare import prepare_series

    before = series_path.read_bytes()
    with pytest.raises(ValueError, match="refusing to write over an input"):
        prepare_series(f"{series_path}:/entry_1/data_1/data", series_path, N, overwrite=True)
    assert series_path.read_bytes() == before


def test_results_must_end_in_h5(series_path, checkpoint, tmp_path, capsys, loaded):
    for name in ("r.vti", "r.gif", "r.mp4", "r.cxi"):
        code, _, err = _cli(capsys, *_replay(series_path, checkpoint, tmp_path / name))
        assert code == 2 and "must end in .h5 (a results file)" in _error_line(err, "replay")
    with pytest.raises(ValueError, match="must end in .h5"):
        replay_series(series_path, loaded, make_strategy("one-shot", K), tmp_path / "r.vti")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cxi", "tiny.pt"]  # was: r.vti written


@pytest.mark.parametrize("command", ["export", "movie"])
def test_export_and_movie_never_write_over_their_results(series_path, checkpoint, tmp_path, capsys, command):
    suffix = ".vti" if command == "export" else ".gif"
    results = _results(tmp_path, series_path, checkpoint).rename(tmp_path / f"r{suffix}")  # as `replay` made it before
    before = results.read_bytes()
    argv = (["export", results] if command == "export" else ["movie", "track", results, "--size", "64x64"])
    code, _, err = _cli(capsys, *argv, "--out", results, "--overwrite")
    assert code == 2 and "the results file" in _error_line(err, command)
    assert results.read_bytes() == before  # was: the results replaced by the export / movie


def test_outputs_are_compared_as_files_links_followed(series_path, checkpoint, tmp_path, capsys):
    hard = tmp_path / "hard.h5"
    os.link(series_path, hard)
    soft = tmp_path / "soft.h5"
    soft.symlink_to(series_path)
    before = series_path.read_bytes()
    for out in (hard, soft):
        code, _, err = _cli(capsys, *_replay(series_path, checkpoint, out, "--overwrite"))
        assert code == 2 and "the input series" in _error_line(err, "replay")
    assert series_path.read_bytes() == before


def test_output_directories_and_fifos_are_refused_before_any_work(series_path, checkpoint, tmp_path, capsys):
    folder = tmp_path / "out.h5"
    folder.mkdir()
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    for out, rule in ((folder, "is a directory"), (fifo, "FIFO")):
        code, printed, err = _cli(capsys, *_replay(series_path, checkpoint, out, "--overwrite"))
        assert code == 2 and rule in _error_line(err, "replay") and "frame" not in printed  # nothing tracked
    code, _, err = _cli(capsys, "simulate", "growth", "--frames", "1", "--n", n, "--out", tmp_path, "--overwrite")
    assert code == 2 and "is a directory" in _error_line(err, "simulate")


def test_symlink_loops_are_one_line(series_path, checkpoint, tmp_path, capsys):
    loop = tmp_path / "loop.cxi"
    loop.symlink_to(loop)
    code, _, err = _cli(capsys, *_replay(loop, checkpoint, tmp_path / "r.h5"))
    assert code == 2 and "symbolic-link loop" in _error_line(err, "replay")  # was: RuntimeError from Path.resolve
    out_loop = tmp_path / "o.h5"
    out_loop.symlink_to(out_loop)
    code, _, err = _cli(capsys, *_replay(series_path, checkpoint, out_loop))
    assert code == 2 and "symbolic-link loop" in _error_line(err, "replay")


def test_the_bluesky_storage_never_writes_over_a_file(tmp_path):
    existing = tmp_path / "run-1.msgpack"
    existing.write_bytes(b"another run")
    storage = MsgpackStorage(tmp_path)
    with pytest.raises(FileExistsError, match="the run file"):
        storage("start", {"uid": "run-1", "time": 0.0})
    assert existing.read_bytes() == b"another run"
    from latenttune.bluesky.storage import _ExternalArrays  # the tiled storage's per-run array files

    arrays = _ExternalArrays(lambda name, doc: None, tmp_path)
    arrays("start", {"uid": "run-2", "time": 0.0})
    taken = tmp_path / "run-2_primary_desc-abc.h5"
    taken.write_bytes(b"another file")
    descriptor = {"uid": "desc-abcdef", "name": "primary",
                  "data_keys": {"p": {"dtype": "array", "shape": [2, 2, 2], "dtype_numpy": "<f4"}}}
    with pytest.raises(FileExistsError, match="array file"):
        arrays("descriptor", descriptor)
    assert taken.read_bytes() == b"another file"  # was: replaced by an empty HDF5 file


def test_check_outputs_rules():
    """The guard itself, on names that need no file: suffix kinds and output pairs."""
    with pytest.raises(ValueError, match="must end in .mp4 or .gif"):
        check_outputs({"--out": "m.avi"}, kinds={"--out": "movie"})
    with pytest.raises(ValueError, match="is also"):
        check_outputs({"--out": "a/../r.h5", "the figure": "r.h5"})
    check_outputs({"--out": "r.h5"}, {"the series": "https://example.org/run"})  # a URL is no file


# == 2. sizes bounded before they are allocated (under a 4 GB address-space limit) ===============

_LIMIT = 4_000_000 * 1024  # `ulimit -v 4000000`


def _edited_checkpoint(tmp_path: Path, source: Path, **config) -> Path:
    payload = torch.load(source, weights_only=True)
    payload["config"].update(config)
    out = tmp_path / f"edited-{'-'.join(config)}.pt"
    torch.save(payload, out)
    return out


def _toml(tmp_path: Path, name: str, **model) -> Path:
    tables = tiny_tables()
    tables["model"].update(model)
    path = tmp_path / name
    path.write_text(toml_text(tables))
    return path


def _big_dataset(tmp_path: Path, side: int) -> str:
    path = tmp_path / f"declared{side}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", shape=(side, side, side), dtype="f4")  # declared, never written: a 2 KB file
    return f"{path}:/data"


_ALLOCATION_CASES = {
    "checkpoint hidden": (lambda t, s, c: _replay(s, _edited_checkpoint(t, c, hidden=268435456), t / "r.h5"),
                          "do not match the checkpoint's config"),
    "checkpoint channels": (lambda t, s, c: _replay(s, _edited_checkpoint(t, c, decoder_channels=[8192, 4]),
                                                    t / "r.h5"), "do not match the checkpoint's config"),
    "steps per frame": (lambda t, s, c: ["replay", s, "--model", c, "--out", t / "r.h5", "--strategy", "es",
                                         "--steps-per-frame", "1000000000000"], "--steps-per-frame"),
    "simulate n 4096": (lambda t, s, c: ["simulate", "growth", "--n", "4096", "--out", t / "big.cxi"], "--n"),
    "simulate n 512": (lambda t, s, c: ["simulate", "growth", "--n", "512", "--out", t / "big.cxi"],
                       "address-space limit"),
    "prepare 4096^3": (lambda t, s, c: ["prepare", _big_dataset(t, 4096), "--grid", N, "--out", t / "p.cxi"],
                       "voxels, more than"),
    "prepare 2048^3": (lambda t, s, c: ["prepare", _big_dataset(t, 2048), "--grid", N, "--out", t / "p.cxi"],
                       "address-space limit"),
    "train hidden": (lambda t, s, c: ["train", "--config", _toml(t, "h.toml", hidden=268435456), "--out", t / "m.pt"],
                     "address-space limit"),
    "train n 4096": (lambda t, s, c: ["train", "--config", _toml(t, "n.toml", n=4096), "--out", t / "m.pt"], "`n`"),
    "threads": (lambda t, s, c: _replay(s, c, t / "r.h5", "--threads", "100000"), "--threads"),
}


@pytest.mark.parametrize("case", sorted(_ALLOCATION_CASES))
def test_sizes_are_refused_before_they_are_allocated(tmp_path, series_path, checkpoint, case):
    make_argv, named = _ALLOCATION_CASES[case]
    argv = make_argv(tmp_path, series_path, checkpoint)
    code, err, seconds = _child(argv, limit_bytes=_LIMIT)
    line = _error_line(err, argv[0])  # was: a traceback (MemoryError, allocator RuntimeError) or an abort
    assert code == 2 and named in line and seconds < 15, (seconds, line)


def test_the_checkpoint_config_has_a_checksum_of_its_own(checkpoint, series_path, tmp_path, capsys):
    payload = torch.load(checkpoint, weights_only=True)
    assert "config_checksum" in payload and payload["checksum"]  # the weights' checksum is kept as it was
    payload["config_checksum"] = "0" * 16
    torch.save(payload, tmp_path / "altered.pt")
    code, _, err = _cli(capsys, *_replay(series_path, tmp_path / "altered.pt", tmp_path / "r.h5"))
    assert code == 2 and "config checksum" in _error_line(err, "replay")
    del payload["config_checksum"]  # a checkpoint written before the config checksum still loads
    torch.save(payload, tmp_path / "older.pt")
    assert load_model(tmp_path / "older.pt").checksum == load_model(checkpoint).checksum


def _torch_allocator_error():
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 549755813888 bytes. Error code 12 (Cannot allocate memory)")


def _numpy_allocation_error():
    np.zeros((2**20, 2**20, 2**10))  # 8 PiB: numpy's "Unable to allocate", nothing allocated


def _memory_error():
    raise MemoryError()


@pytest.mark.parametrize("fail", [_torch_allocator_error, _numpy_allocation_error, _memory_error])
def test_memory_errors_are_one_line_and_traced_with_v(tmp_path, capsys, monkeypatch, fail):
    import latenttune.simulate

    monkeypatch.setattr(latenttune.simulate, "simulate_series", lambda *args, **kwargs: fail())
    argv = ["simulate", "growth", "--frames", "1", "--n", n, "--out", tmp_path / "s.cxi"]
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and "out of memory" in _error_line(err, "simulate")  # was: a traceback, exit status 1
    code, _, err = _cli(capsys, "-v", *argv)
    assert code == 2 and "Traceback" in err


# == 3. malformed inputs answered in one line ======================================================


def _run_documents(series_path: Path) -> list[list]:
    """The documents of a minimal stored tracking run (what MsgpackStorage writes), by hand."""
    with open_series(series_path) as s:
        patterns, masks = [f.intensity for f in s], [f.mask for f in s]
    keys = {"pattern": "cdi_pattern", "mask": "cdi_mask", "frame_index": None, "sample_time": None,
            "latent": None, "cost": None, "es_steps": None, "status": None}
    data_keys = {"cdi_pattern": {"dtype": "array", "shape": [N, N, N], "source": "sim"},
                 "cdi_mask": {"dtype": "array", "shape": [N, N, N], "source": "sim"}}
    times = [101.0 + t for t in range(len(patterns))]
    return [
        ["start", {"uid": "run-0001", "time": 100.0, "latenttune": {"keys": keys, "k": K, "n": n}}],
        ["descriptor", {"uid": "desc-1", "name": "primary", "run_start": "run-0001", "data_keys": data_keys}],
        ["event_page", {"descriptor": "desc-1", "time": times, "seq_num": list(range(1, len(times) + 1)),
                        "data": {"cdi_pattern": patterns, "cdi_mask": masks}}],
        ["stop", {"uid": "stop-1", "run_start": "run-0001", "exit_status": "success"}],
    ]


def _write_run(path: Path, documents) -> Path:
    import msgpack
    import msgpack_numpy

    with open(path, "wb") as f:
        for item in documents:
            f.write(msgpack.packb(item, default=msgpack_numpy.encode))
    return path


def _del(index: int, *keys: str):
    def edit(docs):
        target = docs[index][1]
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return edit


def _set(index: int, value):
    def edit(docs):
        docs[index][1] = value
    return edit


def _shorten(index: int, *keys: str):
    def edit(docs):
        target = docs[index][1]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = target[keys[-1]][:2]
    return edit


MALFORMED_RUNS = {  # the 8, and the page lengths both ways
    "descriptor without data_keys": (_del(1, "data_keys"), "'data_keys'"),
    "descriptor without uid": (_del(1, "uid"), "'uid'"),
    "descriptor of the wrong type": (_set(1, 5), "must be a mapping"),
    "start of the wrong type": (_set(0, [1, 2]), "must be a mapping"),
    "event without its descriptor": (_del(2, "descriptor"), "'descriptor'"),
    "event without its pattern": (_del(2, "data", "cdi_pattern"), "no pattern"),
    "event page with fewer times": (_shorten(2, "time"), "one value per event"),
    "start without time": (_del(0, "time"), "'time'"),
    "event page with fewer patterns": (_shorten(2, "data", "cdi_pattern"), "one value per event"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_RUNS))
def test_malformed_run_files_are_one_line(series_path, checkpoint, tmp_path, capsys, case):
    edit, named = MALFORMED_RUNS[case]
    documents = _run_documents(series_path)
    edit(documents)
    run = _write_run(tmp_path / "run.msgpack", documents)
    out = tmp_path / "r.h5"
    code, _, err = _cli(capsys, *_replay(run, checkpoint, out))
    assert code == 2 and named in _error_line(err, "replay")  # was: KeyError/AttributeError/IndexError (or accepted)
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_a_well_formed_run_file_still_replays(series_path, checkpoint, tmp_path, capsys):
    run = _write_run(tmp_path / "run.msgpack", _run_documents(series_path))
    code, _, _ = _cli(capsys, *_replay(run, checkpoint, tmp_path / "r.h5"))
    assert code == 0 and read_results(tmp_path / "r.h5").num_frames == 3


def _frames_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    write_amplitude_frames(folder, np.random.default_rng(0).poisson(5.0, (3, N, N, N)).astype(np.float32))
    return folder


@pytest.mark.parametrize("entry", ["frame_1b.npy", "mask.npy", "scan_2"])
def test_dangling_links_in_frame_folders_are_named(tmp_path, checkpoint, capsys, entry):
    folder = _frames_folder(tmp_path)
    (folder / entry).symlink_to(tmp_path / "gone.npy")
    code, _, err = _cli(capsys, *_replay(folder, checkpoint, tmp_path / "r.h5"))
    line = _error_line(err, "replay")  # was: the frame dropped and the rest renumbered, or the mask ignored
    assert code == 2 and entry in line and "dangling symbolic link" in line
    code, _, err = _cli(capsys, "prepare", folder, "--grid", N, "--out", tmp_path / "p.cxi")  # the measured reader
    assert code == 2 and entry in _error_line(err, "prepare")


def test_a_fifo_named_like_a_frame_is_named(tmp_path, checkpoint, capsys):
    folder = _frames_folder(tmp_path)
    os.mkfifo(folder / "frame_9.npy")
    code, _, err = _cli(capsys, *_replay(folder, checkpoint, tmp_path / "r.h5"))
    assert code == 2 and "frame_9.npy" in _error_line(err, "replay") and "not a regular file" in err


def _fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


_FIFO_CASES = {
    "replay series": lambda t, s, c: _replay(_fifo(t, "f.cxi"), c, t / "r.h5"),
    "replay model": lambda t, s, c: _replay(s, _fifo(t, "m.pt"), t / "r.h5"),
    "prepare input": lambda t, s, c: ["prepare", _fifo(t, "v.npy"), "--grid", N, "--out", t / "p.cxi"],
    "prepare mask": lambda t, s, c: ["prepare", s, "--mask", _fifo(t, "m.npy"), "--grid", N, "--out", t / "p.cxi"],
    "train config": lambda t, s, c: ["train", "--config", _fifo(t, "c.toml"), "--out", t / "m.pt"],
}


@pytest.mark.parametrize("case", sorted(_FIFO_CASES))
def test_fifos_are_refused_within_5_s(tmp_path, series_path, checkpoint, case):
    argv = _FIFO_CASES[case](tmp_path, series_path, checkpoint)
    code, err, seconds = _child(argv, timeout=20)  # was: blocked forever
    assert code == 2 and "FIFO" in _error_line(err, argv[0]) and seconds < 5, (seconds, err)


def test_no_usable_frame_walks_only_the_requested_range(tmp_path, checkpoint, capsys):
    declared = tmp_path / "declared.cxi"
    with h5py.File(declared, "w") as f:  # 2,000,000 frames declared, none written (all read as zeros)
        f.create_dataset("entry_1/data_1/data", shape=(2_000_000, N, N, N), dtype="f4", chunks=(1, N, N, N))
    start = time.monotonic()
    code, _, err = _cli(capsys, *_replay(declared, checkpoint, tmp_path / "r.h5", "--frames", "0:3"))
    line = _error_line(err, "replay")
    assert code == 2 and "all 3 frame(s) were skipped" in line and time.monotonic() - start < 30


def test_a_series_declaring_too_many_frames_is_one_line(tmp_path, checkpoint, capsys):
    declared = tmp_path / "declared.cxi"
    with h5py.File(declared, "w") as f:
        f.create_dataset("entry_1/data_1/data", shape=(2**40, N, N, N), dtype="f4", chunks=(1, N, N, N))
    code, _, err = _cli(capsys, *_replay(declared, checkpoint, tmp_path / "r.h5"))
    assert code == 2 and "frames, more than" in _error_line(err, "replay")


# == 4. the Python API validates at its boundary ====================================================


def _frames(series_path):
    with open_series(series_path) as s:
        return list(s)


_API_CASES = {
    "track(model=None)": (lambda m, l, f, s: track(f, None, make_strategy("es", K, steps_per_frame=2)), "`model`"),
    "track(strategy='es')": (lambda m, l, f, s: track(f, m, "es"), "`strategy`"),
    "replay_series(strategy=None)": (lambda m, l, f, s: replay_series(s, l, None, s.with_name("r.h5")),
                                     "`strategy`"),
    "replay_series(loaded=model)": (lambda m, l, f, s: replay_series(s, m, make_strategy("es", K),
                                                                      s.with_name("r.h5")), "`loaded`"),
    "frame_problem([[1.0]])": (lambda m, l, f, s: frame_problem([[1.0]], None), "`intensity`"),
    "frame_problem(complex)": (lambda m, l, f, s: frame_problem(np.ones((N, N, N), np.complex64), None),
                               "`intensity`"),
    "frame_problem(mask of another shape)": (lambda m, l, f, s: frame_problem(np.ones((N, N, N)),
                                                                              np.zeros((2, 2, 2), bool)), "`mask`"),
    "make_strategy('es', k=-1)": (lambda m, l, f, s: make_strategy("es", -1), "`k`"),
    "make_strategy(steps_per_frame=10**12)": (lambda m, l, f, s: make_strategy("es", K, steps_per_frame=10**12),
                                              "`steps_per_frame`"),
    "strategy of k=3 on the k=4 model": (lambda m, l, f, s: track(f, m, make_strategy("es", 3)), "`strategy`"),
    "track(start_index=-1)": (lambda m, l, f, s: track(f, m, make_strategy("es", K), start_index=-1),
                              "`start_index`"),
    "held latent of the wrong length": (lambda m, l, f, s: track(f, m, make_strategy("es", K), start_index=1,
                                                                 held_latent=np.zeros(K + 1)), "`held_latent`"),
    "make_strategy('one-shot', steps_per_frame=5)": (lambda m, l, f, s: make_strategy("one-shot", K,
                                                                                      steps_per_frame=5),
                                                     "steps_per_frame"),
    "track(frames=None)": (lambda m, l, f, s: track(None, m, make_strategy("es", K)), "`frames`"),
    "track(callback=5)": (lambda m, l, f, s: track(f, m, make_strategy("es", K), callback=5), "`callback`"),
    "set_threads(10**6)": (lambda m, l, f, s: __import__("latenttune.device").device.set_threads(10**6),
                           "`threads`"),
    "simulate_series(photons=1e300)": (lambda m, l, f, s: simulate_series("growth", s.with_name("x.cxi"), n=n,
                                                                          photons=1e300), "`photons`"),
    "simulate_series(seed=10**23)": (lambda m, l, f, s: simulate_series("growth", s.with_name("x.cxi"), n=n,
                                                                        seed=10**23), "`seed`"),
}


@pytest.mark.parametrize("case", sorted(_API_CASES))
def test_the_api_validates_at_its_boundary(loaded, series_path, case):
    call, argument = _API_CASES[case]
    with pytest.raises((TypeError, ValueError), match=argument):
        call(loaded.model, loaded, _frames(series_path), series_path)
    assert sorted(p.name for p in series_path.parent.iterdir()) == ["s.cxi", "tiny.pt"]  # nothing left behind


# == 5. messages that say what to change ============================================================


def test_photons_and_seed_out_of_range_leave_nothing(tmp_path, capsys):
    for option, value, rule in (("--photons", "1e300", "at most 1e+18"), ("--seed", "99999999999999999999999",
                                                                          "2^63 - 1")):
        code, _, err = _cli(capsys, "simulate", "growth", "--frames", "2", "--n", n, option, value,
                            "--out", tmp_path / "s.cxi")
        assert code == 2 and rule in _error_line(err, "simulate")  # was: "lam value too large", an HDF5 dtype error
    assert not list(tmp_path.iterdir())  # was: a partial file left behind


def test_a_bfloat16_checkpoint_says_to_convert_it(loaded, series_path, tmp_path, capsys):
    model = copy.deepcopy(loaded.model).to(torch.bfloat16)
    payload = torch.load(loaded.path, weights_only=True)
    payload["state_dict"] = {k: v for k, v in model.state_dict().items()}
    torch.save(payload, tmp_path / "bf16.pt")
    code, _, err = _cli(capsys, *_replay(series_path, tmp_path / "bf16.pt", tmp_path / "r.h5"))
    assert code == 2 and "float32" in _error_line(err, "replay")  # was: "Got unsupported ScalarType BFloat16"


@pytest.mark.parametrize("field", ["recipe", "extra"])
def test_a_damaged_json_field_names_the_checkpoint(checkpoint, series_path, tmp_path, capsys, field):
    payload = torch.load(checkpoint, weights_only=True)
    payload[field] = "{bad json"
    torch.save(payload, checkpoint)
    code, _, err = _cli(capsys, *_replay(series_path, checkpoint, tmp_path / "r.h5"))
    line = _error_line(err, "replay")  # was: "Expecting property name ..." without the file
    assert code == 2 and str(checkpoint.name) in line and f"`{field}`" in line


def test_training_settings_are_named(write_tiny_toml, tmp_path, capsys):
    for override, named in (({"batch_size": True}, "`train.batch_size`"), ({"lr": float("inf")}, "`train.lr`")):
        config = write_tiny_toml("bad.toml", **override)
        code, _, err = _cli(capsys, "train", "--config", config, "--out", tmp_path / "m.pt", "--overwrite")
        assert code == 2 and named in _error_line(err, "train")
    assert not (tmp_path / "m.pt").exists()


def test_a_tiny_volume_says_what_to_give(tmp_path, capsys):
    np.save(tmp_path / "tiny.npy", np.full((4, 4, 4), 5.0, np.float32))
    code, _, err = _cli(capsys, "prepare", tmp_path / "tiny.npy", "--grid", N, "--out", tmp_path / "p.cxi")
    assert code == 2 and "at least 8 voxels" in _error_line(err, "prepare")  # was: a numpy broadcast error


def test_a_missing_checkpoint_and_config_still_say_so(tmp_path, capsys, series_path):
    code, _, err = _cli(capsys, *_replay(series_path, tmp_path / "none.pt", tmp_path / "r.h5"))
    assert code == 2 and "does not exist" in _error_line(err, "replay")
    code, _, err = _cli(capsys, "train", "--config", tmp_path / "none.toml", "--out", tmp_path / "m.pt")
    assert code == 2 and "does not exist" in _error_line(err, "train")


def test_the_default_model_still_loads():
    loaded = load_model("default")
    assert loaded.checksum and loaded.model.latent_dim > 0


def test_save_checkpoint_round_trip_keeps_the_weights_checksum(lively_model, tmp_path):
    checksum = save_checkpoint(tmp_path / "a.pt", lively_model)
    assert load_model(tmp_path / "a.pt").checksum == checksum
