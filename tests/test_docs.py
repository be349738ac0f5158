"""Issues 15 and 30: the documentation's code runs.

* every ```python block of README.md and docs/own_data.md runs, in order, in a fresh interpreter in
  an empty folder (the README's use the shipped default model, hence ``slow``);
* every ``latenttune ...`` command line in a ```bash block of README.md and docs/*.md parses;
* every command line of every ```bash block of README.md and docs/*.md RUNS, in order, in a folder
  holding the inputs the docs name (:func:`world`), with the smaller sizes of :data:`SUBSTITUTIONS`
  (each with its reason); benchmarks have their options checked (``--help`` after them), and the
  few commands :data:`SKIPPED` names are left out with their reason;
* ``python examples/own_data.py`` runs end to end on the measurement it makes, from an empty folder;
* README.md stays a front door: under 260 lines.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    # issue 30: the output says whether frames stagnated (per frame and in one summary sentence)
    assert re.search(r"^(no frame stagnated|\d+ of 3 frames stagnated)", out, flags=re.M)



def test_the_readme_is_a_front_door_under_260_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 260, f"README.md has {len(lines)} lines: move walkthroughs and tables to docs/"
    text = "\n".join(lines)
    for link in ("docs/own_data.md#from-your-measurement-to-a-strain-map", "docs/results.md", "docs/tracking.md",
                 "LICENSE", "CITATION.cff", "CHANGELOG.md", "docs/conventions.md", "docs/formats.md"):
        assert f"]({link})" in text, link
    added = text.split("## What the network and the controller add\n", 1)[1].split("\n## ", 1)[0]
    assert "PLACEHOLDER" not in text and "benchmarks/results/ablation.md" in added and "| hybrid" in added


def test_the_readme_command_table_names_every_sub_command():
    parser = build_parser()
    table = (ROOT / "README.md").read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    names = next(a for a in parser._actions if hasattr(a, "_name_parser_map")).choices
    for name in names:
        assert f"`latenttune {name}" in table, f"`latenttune {name}` missing from the README's command table"


# -- every documented command runs ------------------------------------------------------------------------

#: What the doc test runs instead of a documented value, and why (applied in order to every command line).
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"--model default\b", "--model test_model.pt", "the shipped model makes every command slow: a tiny model "
                                                    "trained from configs/tiny_model.toml stands in"),
    (r"configs/default_model\.toml", "configs/tiny_model.toml", "a 4.4-hour training: only its tiny-config twin"),
    (r"--steps 20000\b", "--steps 60", "lengthen the tiny run (40 steps) instead"),
    (r"--frames (?:12|20|24|50|60|120)\b", "--frames 3", "three frames instead of a long series"),
    (r"--frames 10:20\b", "--frames 1:3", "frames of the 3-frame test series"),
    (r"--frame (?:5|10)\b", "--frame 1", "a frame of the 3-frame test series"),
    (r"@39\b", "@2", "a frame of the 3-frame test series"),
    (r"--samples 64\b", "--samples 2", "two held-out samples"),
    (r"--steps-per-frame 100\b", "--steps-per-frame 5", "fewer ES steps per frame"),
]

#: Sub-commands whose default model is the shipped one: the test gives them the tiny model when the line
#: names none. Options added when a line does not give them: small movie frames, a few training steps.
TAKES_MODEL = ("track", "replay", "prepare", "static", "evaluate", "train-cycle-encoder", "movie traverse",
               "examples/bluesky_tracking.py")
APPEND = {"movie": ["--size", "192x108"], "train-cycle-encoder": ["--steps", "2"],
          "examples/bluesky_tracking.py": ["--frames", "6"]}

#: Documented commands the test does not run, and why.
SKIPPED: list[tuple[str, str]] = [
    (r"^python -m pip install", "installs packages (network, changes the environment)"),
    (r"^python -m pytest$", "the test suite itself"),
    (r"^torchrun ", "starts 4 processes for distributed training; the tiny-config twin runs instead"),
    (r"^tiled serve ", "starts a network server"),
    (r"https?://", "needs a running tiled server"),
]


def _doc_commands(path: Path) -> list[str]:
    """Every command line of the bash blocks: continuations joined, comments cut."""
    lines = []
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(" ".join(line.split()))
    return lines


def _as_run(line: str, folder: Path) -> tuple[str, list[str]] | str:
    """What the test runs for a documented ``line``: ("cli" | "python", argv), or the reason it is skipped."""
    for pattern, reason in SKIPPED:
        if re.search(pattern, line):
            return reason
    for pattern, replacement, _ in SUBSTITUTIONS:
        line = re.sub(pattern, replacement, line)
    if "<uid>" in line:  # the newest stored Bluesky run of this folder
        runs = sorted(folder.glob("**/runs/*.msgpack"), key=lambda p: p.stat().st_mtime)
        assert runs, f"`{line}` needs a stored run: none made by the commands before it"
        line = line.replace("<uid>", runs[-1].stem)
    # files of the repository (configs, example and benchmark scripts) are read from it, not the test folder
    argv = [str(ROOT / a) if a.startswith(("configs/", "examples/", "benchmarks/")) and (ROOT / a).is_file() else a
            for a in shlex.split(line)]
    if argv[0] == "latenttune":
        argv = argv[1:]
        kind = " ".join(argv[:2]) if argv[0] == "movie" else argv[0]
    elif argv[:2] == ["python", "-m"] and argv[2] == "latenttune.cli":
        argv, kind = argv[3:], argv[3]
    elif argv[0] == "python" and argv[1].startswith(str(ROOT / "benchmarks")):
        return "python", [*argv[1:], "--help"]  # a benchmark runs for minutes to hours: its options are checked
    elif argv[0] == "python" and argv[1].startswith(str(ROOT / "examples")):
        argv, kind = argv[1:], "examples/" + Path(argv[1]).name
    else:
        raise AssertionError(f"the doc test does not know how to run `{line}`: add it to SKIPPED with a reason")
    if kind in TAKES_MODEL and "--model" not in argv:
        argv += ["--model", "test_model.pt"]
    for key, extra in APPEND.items():
        if kind.startswith(key) and extra[0] not in argv:
            argv += extra
    if "--threads" not in argv and kind in ("train", "evaluate", "track", "replay", "simulate", "movie traverse",
                                            "train-cycle-encoder"):
        argv += ["--threads", "1"]
    return ("python", argv) if kind.startswith("examples/") else ("cli", argv)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The inputs the docs' commands name, made small: a tiny model, measured-looking volumes, series, a
    geometry file, a results file without strain fields."""
    import h5py

    from latenttune.cli import main
    from latenttune.geometry import BraggGeometry
    from latenttune.geometry.synthetic import strained_crystal_scan

    folder = tmp_path_factory.mktemp("world")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["train", "--config", str(ROOT / "configs" / "tiny_model.toml"), "--out", "test_model.pt",
                     "--threads", "1"]) == 0
        for name in ("crystal.pt", "my_model.pt"):
            shutil.copy("test_model.pt", name)
        geometry = BraggGeometry(energy_kev=9, detector_distance_m=1.0, pixel_size_um=55, rocking_step_deg=0.01,
                                 reflection="111", lattice_constant_nm=0.4078)
        volumes = [strained_crystal_scan(geometry, np.random.default_rng(seed), N=32, radius=3.5,
                                         shape=(50, 56, 52), offset=(3, -4, 2), photons=1e9).counts
                   for seed in range(3)]
        np.save("VOL.npy", volumes[0])
        np.save("scan_0042.npy", np.stack(volumes))
        Path("experiment").mkdir()
        for t, volume in enumerate(volumes):
            np.save(f"experiment/scan_{t}.npy", volume)
        with h5py.File("scan.cxi", "w") as f:
            f["entry_1/data_1/data"] = volumes[0]
        Path("geometry.toml").write_text(
            'energy_kev = 9\ndetector_distance_m = 1.0\npixel_size_um = 55\nrocking_step_deg = 0.01\n'
            'reflection = "111"\nlattice_constant_nm = 0.4078\npreset = "six-circle"\n'
            'sample_angles_deg = [3.0, 17.0]\ndetector_angles_deg = [6.0, 33.0]\ndirect_beam = [28, 26]\n')
        assert main(["simulate", "growth", "--frames", "3", "--n", "16", "--out", "run.cxi"]) == 0
        flags = ["--energy-kev", "9", "--detector-distance-m", "1.0", "--pixel-size-um", "55",
                 "--rocking-step-deg", "0.01", "--reflection", "111", "--lattice-constant-nm", "0.4078"]
        assert main(["prepare", "VOL.npy", *flags, "--model", "test_model.pt", "--out", "strained_input.cxi"]) == 0
        from latenttune.model import load_model
        from latenttune.tracking import make_strategy
        from latenttune.tracking.physics_settings import PhysicsSettings
        from latenttune.tracking.replay import replay_series

        loaded = load_model("test_model.pt")
        strategy = make_strategy("hybrid", loaded.model.latent_dim, steps_per_frame=3,
                                 physics=PhysicsSettings(iterations=10, restarts=0))
        replay_series("strained_input.cxi", loaded, strategy, "old_results.h5", postprocess=False)
    finally:
        os.chdir(cwd)
    return folder


def _run_command(kind: str, argv: list[str], folder: Path) -> tuple[int, str]:
    if kind == "cli":
        from latenttune.cli import main

        cwd = os.getcwd()
        os.chdir(folder)
        try:
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        finally:
            os.chdir(cwd)
        return code, ""
    done = _run_python("", folder, *argv, timeout=600)
    return done.returncode, done.stdout[-2000:] + done.stderr[-2000:]


#: The documents with commands to run (a page without a bash block has none).
COMMAND_DOCS = [path for path in DOCS if _doc_commands(path)]


def test_the_readme_and_the_walkthroughs_have_commands_to_run():
    assert {"README.md", "own_data.md", "movies.md", "bluesky.md"} <= {path.name for path in COMMAND_DOCS}


@pytest.mark.parametrize("path", COMMAND_DOCS, ids=lambda p: p.name)
def test_every_documented_command_runs(path, world, tmp_path, capsys):
    commands = _doc_commands(path)
    folder = tmp_path / "docs"
    shutil.copytree(world, folder)
    ran = []
    for line in commands:
        what = _as_run(line, folder)
        if isinstance(what, str):
            continue  # SKIPPED, with its reason
        kind, argv = what
        code, output = _run_command(kind, argv, folder)
        captured = capsys.readouterr()
        assert code == 0, (f"{path.name}: `{line}` (run as {kind} {' '.join(argv)}) failed with {code}:\n"
                           f"{output}{captured.out[-2000:]}{captured.err[-2000:]}")
        ran.append(line)
    assert ran or all(isinstance(_as_run(line, folder), str) for line in commands)


def test_license_and_citation_are_at_the_root():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("BSD 3-Clause License") and "Copyright (c) 2026, latenttune developers" in license_text
    assert 'license = { text = "BSD-3-Clause" }' in (ROOT / "pyproject.toml").read_text()
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "BSD-3-Clause"
    for key in ("message", "title", "authors", "type", "version"):
        assert cff[key], key
    references = cff["references"]
    assert all({"type", "title", "authors"} <= set(r) for r in references)  # what CFF 1.2.0 requires of each
    assert "10.1038/s41524-024-01482-5" in [r.get("doi") for r in references]
    cited = {(r["journal"], r.get("volume"), str(r.get("start"))) for r in references}
    assert ("npj Computational Materials", 7, "175") in cited and ("Applied Physics Reviews", 8, "021407") in cited
    assert (ROOT / "CONTRIBUTING.md").is_file() and (ROOT / "CHANGELOG.md").is_file()
