"""The out-of-family test series generator (benchmarks/out_of_family.py).

* the file it writes opens with ``open_series``: N = 2n, truth, beamstop mask, Poisson counts;
* its forward model is the project's (``sim.forward.forward``) and its beamstop sim's;
* a dislocation frame's phase winds by +-2 pi around the drawn line;
* its shapes carry facets outside the training families {100}/{110}/{111};
* a seed gives one series, another seed another;
* it is written apart from the training simulator: no import of sim.shapes, sim.phase,
  sim.scenarios, sim.training, sim.atomistic or latenttune.model (checked on the source and on
  what importing it loads).
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from latenttune.io import open_series

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "benchmarks" / "out_of_family.py"
FORBIDDEN = ("sim.shapes", "sim.phase", "sim.scenarios", "sim.training", "sim.atomistic", "latenttune.model")


def _load():
    spec = importlib.util.spec_from_file_location("out_of_family", SOURCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("out_of_family", module)
    spec.loader.exec_module(module)
    return module


oof = _load()


@pytest.fixture(scope="module")
def small():
    """n = 16, 3 frames of the hardest kind, with a jump before the last frame."""
    settings = oof.OutOfFamilySettings(n=16, frames=3, kind="mixed", photons=1e6, beamstop=1.5, jump_at=2)
    return oof.generate(settings, 11)


def test_the_written_series_opens_with_truth_mask_times_and_poisson_counts(small, tmp_path):
    path = oof.write(small, tmp_path / "s.cxi")
    with pytest.raises(FileExistsError):
        oof.write(small, path)
    with open_series(path) as series:
        assert len(series) == 3 and series.N == 32 and series.n == 16 and series.has_truth
        np.testing.assert_array_equal(series.times, [0.0, 1.0, 2.0])
        attrs = series.metadata["root_attrs"]
        assert attrs["generator"] == "out-of-family" and attrs["generator_version"] == oof.GENERATOR_VERSION
        assert attrs["kind"] == "mixed" and attrs["seed"] == 11 and attrs["photons"] == 1e6
        assert len(attrs["truth_frames"]) == 3 and attrs["truth_frames"][2]["jumped"]
        beamstop = oof.beamstop_mask(32, 1.5)
        for t, frame in enumerate(series):
            truth = series.truth(t)
            assert truth.dtype == np.complex64 and truth.shape == (16, 16, 16)
            np.testing.assert_array_equal(truth, small.densities[t])
            np.testing.assert_array_equal(frame.mask, beamstop)
            assert frame.mask.sum() == 19 and np.all(frame.intensity[frame.mask] == 0)
            counts = frame.intensity.astype(np.float64)
            assert np.all(counts == np.round(counts)) and counts.min() >= 0
            intensity = oof.forward_intensity(truth).astype(np.float64)
            expected = 1e6 * intensity / intensity.sum()
            measured = expected[~frame.mask].sum()
            assert abs(counts.sum() - measured) < 5 * np.sqrt(measured)
            assert counts.sum() > 0.5e6
            bright = (expected > 20) & ~frame.mask
            assert bright.sum() > 500
            chi2 = np.mean((counts[bright] - expected[bright]) ** 2 / expected[bright])
            assert 0.85 < chi2 < 1.15  # Poisson: variance = mean


def test_the_forward_model_and_beamstop_are_the_projects():
    from sim.detector import beamstop_mask
    from sim.forward import forward

    rng = np.random.default_rng(3)
    for n in (8, 9):
        d = (rng.standard_normal((n,) * 3) + 1j * rng.standard_normal((n,) * 3)).astype(np.complex64)
        np.testing.assert_array_equal(oof.forward_intensity(d), forward(d))
    np.testing.assert_array_equal(oof.beamstop_mask(32, 1.5), beamstop_mask(32, 1.5))


def _circulation(density, point, direction, radius, m=64):
    """Sum of wrapped phase steps of the (trilinearly interpolated) density on a loop about a line."""
    n = density.shape[0]
    t = np.asarray(direction)
    e1 = np.cross(t, [1.0, 0.0, 0.0] if abs(t[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(t, e1)
    phi = np.linspace(0.0, 2 * np.pi, m, endpoint=False)
    points = np.asarray(point)[None] + radius * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    index = (points + n // 2).T
    z = ndimage.map_coordinates(density.real, index, order=1) + 1j * ndimage.map_coordinates(
        density.imag, index, order=1)
    return float(np.angle(np.roll(z, -1) / z).sum()), float(np.abs(z).min())


@pytest.mark.parametrize("seed", [1, 2, 5])  # edge, mixed, screw
def test_the_phase_winds_by_2pi_around_the_drawn_dislocation(seed):
    series = oof.generate(oof.OutOfFamilySettings(n=32, frames=1, kind="glide"), seed)
    truth = series.truth[0]
    line = truth["dislocation"]
    assert line["inside"] and abs(line["winding"]) == 1
    G, b = np.array(truth["G"]), np.array(line["burgers"])
    assert abs(G @ b) == pytest.approx(1.0, abs=1e-4)  # G . b = +-1 for a/2<110>
    assert np.linalg.norm(b) == pytest.approx(truth["lattice_constant"] / np.sqrt(2), rel=1e-4)
    centre, point, t = np.array(truth["centre"]), np.array(line["point"]), np.array(line["direction"])
    closest = point + np.dot(centre - point, t) * t
    circulation, amplitude = _circulation(series.densities[0], closest, t, 2.5)
    assert amplitude > 0.5  # the loop lies inside the crystal
    assert circulation == pytest.approx(2 * np.pi * line["winding"], abs=0.3)


def test_the_shapes_have_facets_outside_the_training_families(small):
    for truth in small.truth:
        families = {"".join(sorted((str(abs(h)) for h in f["hkl"]), reverse=True)) for f in truth["shape"]["facets"]}
        assert families - set(oof.TRAINING_FACET_FAMILIES), families
        assert "110" not in families
        normals = np.array([f["normal"] for f in truth["shape"]["facets"]])
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
        assert 0.2 * 16 < truth["shape"]["bounding_radius"] <= 16 / 2 - 3 + 1e-6


def test_tilt_and_jump_rotate_the_crystal_as_described(small):
    R = [np.array(t["orientation"]) for t in small.truth]

    def angle(a, b):
        return np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)))

    assert angle(R[0], R[1]) < 4.0  # mixed: a small tilt
    assert 15.0 < angle(R[1], R[2]) < 26.0  # the jump: about 20 degrees more
    tilt = oof.generate(oof.OutOfFamilySettings(n=16, frames=2, kind="tilt", photons=1e5), 4)
    assert 10.0 - 1e-6 <= angle(*(np.array(t["orientation"]) for t in tilt.truth)) <= 15.0 + 1e-6


def test_the_same_seed_gives_the_same_series_and_another_seed_another(small):
    again = oof.generate(small.settings, 11)
    np.testing.assert_array_equal(again.densities, small.densities)
    np.testing.assert_array_equal(again.intensities, small.intensities)
    assert again.truth == small.truth
    other = oof.generate(small.settings, 12)
    assert not np.array_equal(other.densities, small.densities)
    assert other.truth[0]["orientation"] != small.truth[0]["orientation"]


def test_it_imports_nothing_of_the_training_simulator():
    tree = ast.parse(SOURCE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    bad = {m for m in imported for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not bad, bad
    assert "importlib" not in imported and "__import__" not in SOURCE.read_text()
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('m', {str(SOURCE)!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules['m'] = m; spec.loader.exec_module(m); "
            f"print(sorted(k for k in sys.modules if k in {FORBIDDEN!r} or k == 'sim'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"kind": "spin"}, ValueError, "`kind`"),
    ({"n": 8}, ValueError, "`n` must be an integer >= 16"),
    ({"n": "32"}, TypeError, "`n`"),
    ({"frames": 3, "jump_at": 3}, ValueError, "`jump_at`"),
    ({"photons": -1.0}, ValueError, "`photons`"),
    ({"beamstop": 40.0}, ValueError, "`beamstop`"),
    ({"reflection": "220"}, ValueError, "`reflection`"),
    ({"lattice_constant": 0.1}, ValueError, "`lattice_constant`"),
])
def test_bad_settings_are_refused_by_name(kwargs, error, words):
    with pytest.raises(error, match=words):
        oof.OutOfFamilySettings(**kwargs)


def test_bad_arguments_to_generate_are_refused():
    with pytest.raises(TypeError, match="`settings`"):
        oof.generate({"n": 16}, 0)
    with pytest.raises(TypeError, match="`rng`"):
        oof.generate(oof.OutOfFamilySettings(n=16, frames=1), "seed")


def test_the_command_line_writes_a_series_and_reports_each_frame(tmp_path, capsys):
    out = tmp_path / "cli.cxi"
    code = oof.main(["--out", str(out), "--frames", "2", "--n", "16", "--photons", "1e5", "--seed", "3",
                     "--kind", "strain"])
    captured = capsys.readouterr()
    assert code == 0 and captured.out == ""
    assert "frame 1/2" in captured.err and "frame 2/2" in captured.err
    with open_series(out) as series:
        assert len(series) == 2 and series.metadata["root_attrs"]["kind"] == "strain"
        strain = series.metadata["root_attrs"]["truth_frames"][1]["strain"]
        assert strain["gradient"]["kappa"] != 0 and strain["radial"]["epsilon"] != 0
    assert oof.main(["--out", str(out), "--n", "16", "--frames", "1"]) == 1  # exists: refused
