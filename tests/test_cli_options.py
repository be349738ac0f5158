"""Issue 15, items 3 and 4: ``--device`` checked up front, ``--threads``, ``replay --frames``, results in a
subfolder that ``movie track`` finds from anywhere, a tiny training config, and what ``simulate
latent-walk`` says. Tiny model (n = 8, k = 4) from ``conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_commands, run_cli

from latenttune.device import set_threads
from latenttune.io import read_results
from latenttune.model import load_model
from latenttune.tracking.replay import replay_series
from latenttune.simulate import simulate_series
from latenttune.tracking import make_strategy
from latenttune.model.training import load_run_config

ROOT = Path(__file__).resolve().parents[1]
K = 4


_cli = run_cli


def _commands(parser=None, prefix=()):
    """Every (sub)command of the CLI with its parser (:func:`conftest.cli_commands`)."""
    return cli_commands(parser, prefix)


def _options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


@pytest.fixture
def series(tmp_path) -> Path:
    return simulate_series("growth", tmp_path / "data" / "s.cxi", num_frames=4, n=8, photons=1e6, seed=2)


# -- devices and threads ---------------------------------------------------------------------------


#: Each command with --device, with inputs that do not exist: the device is checked before them.
DEVICE_ARGV = {
    ("train",): ["--config", "missing.toml", "--out", "m.pt"],
    ("train-cycle-encoder",): ["--model", "missing.pt", "--out", "m.pt"],
    ("evaluate",): ["--model", "missing.pt", "--samples", "1"],
    ("track",): ["--model", "missing.pt", "--frames", "2", "--out", "r.h5"],
    ("replay",): ["missing.cxi", "--model", "missing.pt", "--out", "r.h5"],
    ("movie", "traverse"): ["--model", "missing.pt", "--out", "m.gif"],
}


def test_every_command_with_a_device_option_is_listed_here():
    with_device = {name for name, parser in _commands() if "--device" in _options(parser)}
    assert with_device == set(DEVICE_ARGV)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", sorted(DEVICE_ARGV))
def test_cuda_without_a_gpu_is_one_line_before_anything_else(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, *command, *DEVICE_ARGV[command], "--device", "cuda")
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0] and "missing" not in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_bluesky_example_checks_its_device_first(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "bluesky_tracking.py"), "--device", "cuda",
                           "--out", str(tmp_path / "demo")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "needs a CUDA GPU" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "demo").exists()


HEAVY = [("simulate",), ("train",), ("evaluate",), ("track",), ("replay",), ("movie", "traverse")]


def test_the_heavy_commands_take_threads():
    options = {name: _options(parser) for name, parser in _commands()}
    assert all("--threads" in options[name] for name in HEAVY)
    assert "--threads" not in options[("export",)]  # nothing heavy to thread there


def test_threads_sets_torchs_threads_before_the_command_runs(series, tiny_checkpoint, tmp_path, capsys):
    try:
        code, _, _ = _cli(capsys, "replay", series, "--model", tiny_checkpoint, "--out", tmp_path / "r.h5",
                          "--strategy", "one-shot", "--no-figure", "--threads", "2")
        assert code == 0 and torch.get_num_threads() == 2
        code, _, err = _cli(capsys, "replay", series, "--out", tmp_path / "q.h5", "--threads", "0")
        assert code == 2 and "--threads: must be a positive integer" in err
    finally:
        torch.set_num_threads(1)
    with pytest.raises(ValueError, match="`threads` must be a positive integer"):
        set_threads(0)
    assert set_threads(None) == torch.get_num_threads()


# -- replay --frames A:B ---------------------------------------------------------------------------


def test_replay_frames_tracks_a_range_with_series_frame_numbers(series, tiny_checkpoint, tmp_path, capsys):
    code, out, _ = _cli(capsys, "replay", series, "--model", tiny_checkpoint, "--out", tmp_path / "r.h5",
                        "--steps-per-frame", "3", "--physics-iterations", "2", "--frames", "1:3")
    assert code == 0
    results = read_results(tmp_path / "r.h5")
    assert results.index.tolist() == [1, 2] and list(results.status) == ["ok", "ok"]
    assert [line.split()[1] for line in out.splitlines() if line.startswith("frame ")] == ["1", "2"]
    assert results.attrs["settings"]["frames"] == [1, 3]
    code, _, _ = _cli(capsys, "replay", series, "--model", tiny_checkpoint, "--out", tmp_path / "tail.h5",
                      "--strategy", "one-shot", "--frames", "2:", "--no-figure")
    assert code == 0 and read_results(tmp_path / "tail.h5").index.tolist() == [2, 3]
    for bad, message in (("2:9", "reaches beyond the series: it has 4 frame(s)"), ("3:1", "STOP must be greater"),
                         ("2", "must be START:STOP")):
        code, _, err = _cli(capsys, "replay", series, "--model", tiny_checkpoint, "--out", tmp_path / "x.h5",
                            "--frames", bad)
        assert code == 2 and message in err


def test_a_range_run_resumes_to_the_uninterrupted_costs_and_refuses_another_range(series, tiny_checkpoint, tmp_path):
    loaded = load_model(tiny_checkpoint)
    _, whole = replay_series(series, loaded, make_strategy("es", K, steps_per_frame=4), tmp_path / "a.h5",
                             frames=(1, 4))
    replay_series(series, loaded, make_strategy("es", K, steps_per_frame=4), tmp_path / "b.h5", frames=(1, 4),
                  callback=lambda report: report.record.index == 1)  # stop after the range's first frame
    with pytest.raises(ValueError, match="`frames` differs"):
        replay_series(series, loaded, make_strategy("es", K, steps_per_frame=4), tmp_path / "b.h5", frames=(0, 4),
                      resume=True)
    replay_series(series, loaded, make_strategy("es", K, steps_per_frame=4), tmp_path / "b.h5", frames=(1, 4),
                  resume=True)
    resumed = read_results(tmp_path / "b.h5")
    assert resumed.index.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(resumed.cost, whole.cost.astype(np.float32))


# -- results in a subfolder --------------------------------------------------------------------------


def test_movie_track_finds_the_series_of_results_written_in_a_subfolder(tmp_path, tiny_checkpoint, monkeypatch,
                                                                        capsys):
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    monkeypatch.chdir(work)
    code, _, _ = _cli(capsys, "track", "--model", tiny_checkpoint, "--frames", "2", "--steps-per-frame", "3",
                      "--physics-iterations", "2", "--out", "runs/r.h5", "--no-figure")
    assert code == 0
    assert read_results("runs/r.h5").attrs["series"] == "r.series.cxi"  # relative to the results file
    simulate_series("growth", work / "data" / "s.cxi", num_frames=2, n=8, photons=1e6)
    code, _, _ = _cli(capsys, "replay", "data/s.cxi", "--model", tiny_checkpoint, "--strategy", "one-shot",
                      "--out", "runs/deep/q.h5", "--no-figure")
    assert code == 0 and read_results("runs/deep/q.h5").attrs["series"] == "../../data/s.cxi"
    monkeypatch.chdir(tmp_path)  # somewhere else: was "the results file records the series ... which does not exist"
    for results in (work / "runs" / "r.h5", work / "runs" / "deep" / "q.h5"):
        code, out, err = _cli(capsys, "movie", "track", results, "--out", tmp_path / f"{results.stem}.gif",
                              "--size", "96x64")
        assert code == 0, err
        assert "wrote 2 frames" in out
    # the results and the series moved together still find each other
    moved = tmp_path / "moved"
    work.rename(moved)
    code, _, err = _cli(capsys, "movie", "track", moved / "runs" / "deep" / "q.h5", "--out", tmp_path / "m.gif",
                        "--size", "96x64")
    assert code == 0, err


# -- the tiny training config and latent-walk -------------------------------------------------------


def test_the_tiny_training_config_trains_in_seconds_and_tracks(tmp_path, capsys):
    config_path = ROOT / "configs" / "tiny_model.toml"
    config = load_run_config(config_path)
    assert config.model.n <= 16 and config.train.steps <= 50 and config.train.batch_size <= 4
    out = tmp_path / "tiny.pt"
    try:
        code, printed, _ = _cli(capsys, "train", "--config", config_path, "--out", out, "--threads", "1")
    finally:
        torch.set_num_threads(1)
    assert code == 0 and "completed all steps" in printed
    loaded = load_model(out)
    assert loaded.model.config.n == 16 and loaded.model.latent_dim == 4
    code, _, _ = _cli(capsys, "track", "--model", out, "--frames", "2", "--steps-per-frame", "3",
                      "--physics-iterations", "2", "--out", tmp_path / "t.h5", "--no-figure")
    assert code == 0 and read_results(tmp_path / "t.h5").num_frames == 2


def test_simulate_latent_walk_says_what_it_does(tmp_path, tiny_checkpoint, capsys):
    code, out, _ = _cli(capsys, "simulate", "latent-walk", "--model", tiny_checkpoint, "--n", "8", "--frames", "2",
                        "--out", tmp_path / "w.cxi")
    assert code == 0
    lines = out.splitlines()
    says = [i for i, line in enumerate(lines) if line.startswith("latent-walk: the truth is decoded by model")]
    box = [i for i, line in enumerate(lines) if line.startswith("latent box: z0 [")]
    first_frame = next(i for i, line in enumerate(lines) if line.startswith("frame "))
    assert len(says) == 1 and len(box) == 1 and says[0] < box[0] < first_frame
    assert str(tiny_checkpoint) in lines[says[0]] and "k = 4" in lines[says[0]]
    assert "encoding 64 training-like samples" in out  # the tiny checkpoint stores no box: it says why it waits


# -- hybrid restarts ------------------------------------------------------------------------------


def test_restart_options_reach_the_physics_stage_and_are_checked(series, tiny_checkpoint, tmp_path, capsys):
    code, out, _ = _cli(capsys, "replay", series, "--model", tiny_checkpoint, "--out", tmp_path / "r.h5",
                        "--steps-per-frame", "3", "--physics-iterations", "2", "--restarts", "2",
                        "--restart-llk", "1.2", "--no-figure")
    assert code == 0
    results = read_results(tmp_path / "r.h5")
    physics = results.attrs["settings"]["physics"]
    assert physics["restarts"] == 2 and physics["restart_llk"] == 1.2
    # the two restarts from the decoded density, after the encoder's prediction on frames the previous
    # latent guided (never the first frame)
    assert results.physics_restarts[0] <= 2 and np.all(results.physics_restarts <= 3)
    assert np.all(np.isfinite(results.llk))
    assert "Poisson LLK (about 1 = fits the counts to the noise): median" in out
    # the summary says how many frames stayed above the run's own threshold, and which
    flagged = [str(int(i)) for i in results.index[results.llk > 1.2]]
    verdict = (f"{len(flagged)} of {len(results.llk)} frames stagnated (LLK > 1.2" if flagged
               else "no frame stagnated (every LLK <= 1.2)")
    assert verdict in out and (not flagged or out.split(verdict)[1].splitlines()[0].endswith(" " + ", ".join(flagged)))
    for args, message in ((("--restart-llk", "1"), "`restart_llk` must be a finite number > 1"),
                          (("--restarts", "-1"), "--restarts: must be an integer >= 0"),
                          (("--strategy", "es", "--restarts", "1"), "`--restarts` does not apply to the 'es' strategy")):
        code, _, err = _cli(capsys, "replay", series, "--model", tiny_checkpoint, "--out", tmp_path / "x.h5", *args)
        assert code == 2 and message in err and "Traceback" not in err
