"""The ``latenttune`` command line (simulate, help, errors)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import run_cli
from latenttune.cli import build_parser, main
from latenttune.io import open_series


def _simulate(tmp_path, *extra: str, name: str = "s.cxi") -> str:
    out = str(tmp_path / name)
    assert main(["simulate", "growth", "--frames", "4", "--n", "8", "--seed", "3", "--out", out, *extra]) == 0
    return out


def test_simulate_writes_documented_layout(tmp_path, capsys):
    out = _simulate(tmp_path, "--beamstop", "1.5", "--photons", "1e6")
    printed = capsys.readouterr().out
    assert printed.count("frame ") == 4 and "wrote 4 frames" in printed
    with h5py.File(out, "r") as f:
        assert f["entry_1/data_1/data"].shape == (4, 16, 16, 16)
        assert f["entry_1/data_1/data"].dtype == np.float32
        assert f["entry_1/truth/density"].shape == (4, 8, 8, 8)
        assert f["entry_1/truth/density"].dtype == np.complex64
        assert f["entry_1/data_1/time"].shape == (4,)
        mask = f["entry_1/instrument_1/detector_1/mask"][()]
        assert mask[..., 8, 8, 8].all()  # beamstop at q = 0 excluded
        total = f["entry_1/data_1/data"][0].sum()
        assert 0.5e6 < total < 1.5e6
        assert f.attrs["scenario"] == "growth"
    with open_series(out) as series:
        assert len(series) == 4 and series.has_truth
        np.testing.assert_array_equal(series[2].mask, mask[2] != 0)


def test_simulate_is_reproducible_from_seed(tmp_path):
    a = _simulate(tmp_path, name="a.cxi")
    b = _simulate(tmp_path, name="b.cxi")
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        np.testing.assert_array_equal(fa["entry_1/data_1/data"][()], fb["entry_1/data_1/data"][()])
        np.testing.assert_array_equal(fa["entry_1/truth/density"][()], fb["entry_1/truth/density"][()])


def test_simulate_entries_layout(tmp_path):
    out = _simulate(tmp_path, "--layout", "entries")
    with h5py.File(out, "r") as f:
        assert f["entry_4/data_1/data"].shape == (16, 16, 16)
    assert len(open_series(out)) == 4


def test_existing_output_is_not_overwritten_without_flag(tmp_path, capsys):
    out = _simulate(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "growth", "--frames", "2", "--n", "8", "--out", out])
    assert exc.value.code == 2
    assert "overwrite" in capsys.readouterr().err
    assert len(open_series(out)) == 4  # untouched
    _simulate(tmp_path, "--overwrite")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "nosuch", "--out", "x.cxi"], "invalid choice"),
        (["simulate", "growth", "--frames", "0", "--out", "x.cxi"], "--frames"),
        (["simulate", "growth", "--photons", "-3", "--out", "x.cxi"], "--photons"),
        (["simulate", "growth"], "--out"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_verbose_shows_the_traceback_behind_the_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "replay", "missing.cxi", "--out", "r.h5")
    assert code == 2
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("latenttune replay: error: ") and "missing.cxi" in line

    code, _, err = run_cli(capsys, "-v", "replay", "missing.cxi", "--out", "r.h5")
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.index("Traceback") < err.index(line)  # the traceback comes first, the same one line ends it
    assert err.strip().splitlines()[-1] == line
    assert not (tmp_path / "r.h5").exists()


def test_every_subcommand_documents_its_options():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert "simulate" in subparsers.choices
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"option {action.dest!r} of {name!r} has no help text"


def test_console_script_help():
    exe = shutil.which("latenttune")
    cmd = [exe] if exe else [sys.executable, "-m", "latenttune.cli"]
    out = subprocess.run([*cmd, "simulate", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--frames", "--n", "--photons", "--seed", "--out", "growth", "dislocation"):
        assert option in out
