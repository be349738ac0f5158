"""The structure the capabilities build on: one results model, one tracking seam, each frame read once.

* a replay reads each measured frame, and each truth frame, from disk exactly once;
* results files of the previous layout (format 1, committed under ``tests/data``) read through the
  results model to the values the reader of that layout returned;
* no code sniffs a strategy's attributes, and no reader looks up results fields by string.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from latenttune.io import open_series, read_results
from latenttune.io.rows import ALIASES, FIELDS
from latenttune.model import LoadedModel
from latenttune.simulate import simulate_series
from latenttune.tracking import make_strategy
from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.tracking.replay import replay_series

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def _counting(series):
    """Wrap a series' raw readers so that every read from disk is counted by frame."""
    reads, truths = Counter(), Counter()
    read_raw, read_truth = series._read_raw, series._read_truth

    def counted_raw(i):
        reads[i] += 1
        return read_raw(i)

    def counted_truth(i):
        truths[i] += 1
        return read_truth(i)

    series._read_raw, series._read_truth = counted_raw, counted_truth
    return reads, truths


@pytest.mark.parametrize("strategy", ["hybrid", "es"])
def test_a_replay_reads_each_frame_and_each_truth_once(tmp_path, lively_model, strategy):
    path = simulate_series("growth", tmp_path / "s.cxi", num_frames=4, n=8, seed=2)
    loaded = LoadedModel(model=lively_model, path=Path("lively.pt"), checksum="lively")
    options = {"physics": PhysicsSettings(iterations=6, er_iterations=2)} if strategy == "hybrid" else {}
    with open_series(path) as series:
        reads, truths = _counting(series)
        replay_series(series, loaded, make_strategy(strategy, lively_model.latent_dim, steps_per_frame=3, **options),
                      tmp_path / "r.h5")
    assert reads == Counter({0: 1, 1: 1, 2: 1, 3: 1})
    assert truths == Counter({0: 1, 1: 1, 2: 1, 3: 1})
    results = read_results(tmp_path / "r.h5")
    assert np.isfinite(results.E_r).all()
    if strategy == "hybrid":  # the output's metrics come from the same single read of the truth
        assert np.isfinite(results.E_r_output).all()


@pytest.mark.parametrize("kind", ["hybrid", "es"])
def test_results_of_the_previous_layout_read_through_the_results_model(kind):
    """Files written by the format-1 writer read to the values the format-1 reader returned."""
    expected = json.loads((DATA / "results_v1_expected.json").read_text())[kind]
    results = read_results(DATA / f"results_v1_{kind}.h5")
    assert results.attrs["format"] == "latenttune-results/1"
    assert results.num_frames == expected["num_frames"] and results.complete == expected["complete"]
    assert results.has_physics == (kind == "hybrid")
    for old_name, value in expected.items():
        if old_name in ("num_frames", "complete", "attr_keys"):
            continue
        new = getattr(results, ALIASES.get(old_name, old_name))
        if isinstance(value, dict):  # a density: its shape and summed amplitude
            assert list(new.shape) == value["shape"], old_name
            assert np.abs(new).astype(np.float64).sum() == pytest.approx(value["abs_sum"], rel=1e-12), old_name
        elif value and isinstance(value[0], str):
            assert [str(v) for v in new] == value, old_name
        else:
            np.testing.assert_array_equal(np.asarray(new, dtype=np.float64), np.asarray(value, dtype=np.float64),
                                          err_msg=old_name)
    assert sorted(results.attrs) == expected["attr_keys"]
    shown = results.reconstruction()
    assert shown.label == ("hybrid" if kind == "hybrid" else "decoded")
    if kind == "hybrid":
        assert results.stagnated is not None and results.summary().frames == results.num_frames


def test_every_renamed_field_is_in_the_schema():
    assert set(ALIASES.values()) <= set(FIELDS)
    assert not set(ALIASES) & set(FIELDS)


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def test_no_code_sniffs_a_strategys_attributes():
    """A strategy says what it is (describe, settings, options); nobody probes it with getattr/hasattr."""
    sniffing = []
    for path in _python_files("latenttune", "benchmarks", "examples"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and node.args and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in ("strategy", "controller")):
                sniffing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not sniffing, sniffing


def test_no_reader_looks_up_results_fields_by_string():
    """Readers use the results model's attributes; string keys live in the results model (io/results.py, io/rows.py)."""
    pattern = re.compile(r"""\b(results|previous|data|res)\[\s*["'][A-Za-z_]+["']\s*\]|read_results\([^)]*\)\[""")
    found = []
    for path in _python_files("latenttune", "benchmarks", "examples"):
        if path.relative_to(ROOT).as_posix() in ("latenttune/io/results.py", "latenttune/io/rows.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, found
