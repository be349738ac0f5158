"""Issue 15, item 2: the documentation's code runs.

* every ```python block of README.md and docs/own_data.md runs, in order, in a fresh interpreter in
  an empty folder (the README's use the shipped default model, hence ``slow``);
* every ``latenttune ...`` command line in a ```bash block of README.md and docs/*.md parses;
* ``python examples/own_data.py`` runs end to end on the measurement it makes, from an empty folder.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from latenttune.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = [ROOT / "README.md", ROOT / "docs" / "own_data.md"]


def blocks(path: Path, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in a Markdown file, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def _run_python(code: str, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_readme_shows_the_python_api_and_a_simulator_snippet_that_reads_dataclass_fields():
    code = blocks(ROOT / "README.md", "python")
    assert len(code) >= 3
    assert any("track(frames, model, strategy" in c and "result.output_density" in c for c in code)
    simulator = next(c for c in code if "TrainingPairGenerator" in c)
    assert "measured.counts" in simulator and "pair.intensity" in simulator
    assert not re.search(r"^\s*\w+\s*,\s*\w+\s*=\s*.*\.measure\(", simulator, flags=re.M)  # no tuple unpacking


@pytest.mark.slow
@pytest.mark.parametrize("path", RUN, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path):
    code = "\n\n".join(blocks(path, "python"))
    assert code, f"{path.name} has no python block"
    done = _run_python(code, tmp_path)
    assert done.returncode == 0, f"{path.name}:\n{done.stderr[-3000:]}"
    if path.name == "README.md":
        assert (tmp_path / "tracked.png").stat().st_size > 0 and "frame 2: cost" in done.stdout


def _command_lines(path: Path) -> list[str]:
    """``latenttune ...`` lines of the bash blocks: continuations joined, comments cut, elided ones (``...``) left out."""
    lines = []
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("latenttune ") and "..." not in line:
                lines.append(line)
    return lines


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_documented_command_line_parses(path):
    parser = build_parser()
    for line in _command_lines(path):
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as exc:  # argparse's way to say no
            pytest.fail(f"{path.name}: `{line}` does not parse (exit {exc.code})")


def test_the_own_data_commands_are_documented():
    commands = _command_lines(ROOT / "README.md") + _command_lines(ROOT / "docs" / "own_data.md")
    assert any(c.startswith("latenttune prepare ") for c in commands)
    assert any("--frames 10:20" in c for c in commands) and any("--threads 1" in c for c in commands)
    assert "docs/own_data.md" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_own_data_example_runs_end_to_end_on_the_volume_it_makes(tmp_path):
    done = _run_python("", tmp_path, str(ROOT / "examples" / "own_data.py"), "--out", "demo")
    assert done.returncode == 0, done.stderr[-3000:]
    demo = tmp_path / "demo"
    for name in ("prepared.cxi", "results.h5", "own_plot.png", "summary.png"):
        assert (demo / name).stat().st_size > 0, name
    assert len(list((demo / "measured").glob("step_*.npy"))) == 3
    out = done.stdout
    assert out.count("binned 2x2x2 (counts summed)") == 3 and "gap " in out and "hot " in out
    assert "frame 2: cost" in out and "all frames processed" in out
