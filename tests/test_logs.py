"""Issue 30, item 7: clean logs and honest timings.

* Every command that shows progress (track, replay, simulate, train, prepare, movie track, movie
  traverse) writes no carriage return when its stdout and stderr go to a file: per-frame lines only.
  On a terminal the progress bar is drawn (a pseudo-terminal test).
* The run's summary states the tracker's time per frame (what the frame lines show) and the wall time.
* ``--help`` shows each option's default once.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_commands

from latenttune.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _run_logged(tmp_path: Path, name: str, *argv: object) -> str:
    """Run ``latenttune ARGV`` with stdout and stderr redirected to one log file; return the log."""
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "latenttune.cli", *map(str, argv)], cwd=tmp_path, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    return text


def _clean(text: str) -> None:
    assert "\r" not in text, "carriage returns (a progress bar) in a log file"
    assert "\x1b[" not in text, "terminal control sequences in a log file"
    assert "it/s]" not in text and "frame/s]" not in text, "a progress bar in a log file"


def _track(tmp_path: Path, checkpoint: Path, out: str = "r.h5") -> str:
    return _run_logged(tmp_path, "track", "track", "--model", checkpoint, "--frames", "2", "--steps-per-frame", "3",
                       "--physics-iterations", "2", "--threads", "1", "--out", out)


def test_track_writes_frame_lines_and_no_carriage_return_to_a_log(tmp_path, tiny_checkpoint):
    log = _track(tmp_path, tiny_checkpoint)
    _clean(log)
    frames = [line for line in log.splitlines() if line.startswith("frame ")]
    assert len(frames) == 2
    # honest timings: the tracker's time per frame (the frame lines') and the wall time, both said
    summary = next(line for line in log.splitlines() if line.startswith("cost: mean"))
    tracker = float(re.search(r"tracker time per frame: mean ([\d.]+) ms", summary).group(1))
    wall = re.search(r"wall time ([\d.]+) s, ([\d.]+) ms per frame \(with reading, truth metrics", summary)
    assert wall, summary
    line_ms = [float(re.search(r"steps +\d+ +([\d.]+) ms", line).group(1)) for line in frames]
    assert tracker == pytest.approx(np.mean(line_ms), abs=0.2)
    assert float(wall.group(2)) >= tracker  # the wall time holds the tracker's and what surrounds it


def test_replay_and_simulate_write_no_carriage_return_to_a_log(tmp_path, tiny_checkpoint):
    simulated = _run_logged(tmp_path, "simulate", "simulate", "growth", "--frames", "2", "--n", "8", "--out", "s.cxi")
    _clean(simulated)
    assert sum(line.startswith("frame ") for line in simulated.splitlines()) == 2
    log = _run_logged(tmp_path, "replay", "replay", "s.cxi", "--model", tiny_checkpoint, "--steps-per-frame", "3",
                      "--physics-iterations", "2", "--threads", "1", "--out", "r.h5", "--no-figure")
    _clean(log)
    assert sum(line.startswith("frame ") for line in log.splitlines()) == 2 and "wall time" in log


def test_train_writes_no_carriage_return_to_a_log(tmp_path, tiny_toml):
    log = _run_logged(tmp_path, "train", "train", "--config", tiny_toml, "--out", "m.pt", "--threads", "1")
    _clean(log)
    assert "validation loss" in log and "best checkpoint" in log


def test_prepare_writes_no_carriage_return_to_a_log(tmp_path, tiny_checkpoint):
    from test_prepare import crystal_volume  # a simulated crystal's counts, Bragg peak off-centre

    np.save(tmp_path / "scan.npy", crystal_volume())
    log = _run_logged(tmp_path, "prepare", "prepare", "scan.npy", "--grid", "16", "--out", "p.cxi")
    _clean(log)
    assert "preparing 1 frame(s)" in log


def test_movies_write_no_carriage_return_to_a_log(tmp_path, tiny_checkpoint):
    _track(tmp_path, tiny_checkpoint)
    log = _run_logged(tmp_path, "movie", "movie", "track", "r.h5", "--out", "m.gif", "--size", "192x108")
    _clean(log)
    assert "wrote 2 frames" in log
    log = _run_logged(tmp_path, "traverse", "movie", "traverse", "--model", tiny_checkpoint, "--frames", "3",
                      "--out", "t.gif", "--size", "192x108")
    _clean(log)
    assert "wrote 3 frames" in log


@pytest.mark.skipif(not hasattr(os, "openpty") or sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_terminal_the_progress_bar_is_drawn(tmp_path):
    """The reverse: with stderr on a terminal the bar redraws itself (carriage returns), stdout still has
    the lines."""
    import fcntl
    import struct
    import termios

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "latenttune.cli", "simulate", "growth", "--frames", "3",
                                "--n", "8", "--out", "s.cxi"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=follower)
    os.close(follower)
    terminal = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        terminal += chunk
    stdout = process.communicate(timeout=120)[0].decode()
    os.close(leader)
    assert process.returncode == 0
    assert b"\r" in terminal and b"simulate growth" in terminal  # the bar, drawn on the terminal
    assert stdout.count("frame ") == 3 and "\r" not in stdout


def test_help_shows_each_default_once():
    for name, parser in cli_commands(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            text = formatter._expand_help(action) if action.help else ""
            stated = len(re.findall(r"\(default\b", text))
            assert stated <= 1, f"`latenttune {' '.join(name)} --help`, {action.option_strings}: {text!r}"
            assert "(default: None)" not in text
    track = dict(cli_commands(build_parser()))[("track",)].format_help()
    folded = " ".join(track.split())
    assert folded.count("(default: 24 for hybrid, 100 for es and gradient)") == 1
    assert "(default: PhysicsSettings' 60; a cold start, e.g. the first frame, runs at least 120)" in folded
    assert "(default: 50)" in folded  # a default the help text does not state is still shown
