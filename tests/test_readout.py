"""The physical readout of a latent (:mod:`latenttune.model.readout`) and everywhere it is shown.

Read-out quantities against a simulated crystal's own descriptor, the laboratory frame of a symmetric
view and the twin, the results file's readout fields (units, the :class:`~latenttune.io.Results`
attributes), the readout figure and ``OUT.readout.png``, the :class:`~latenttune.bluesky.LatentTracker`
signals, and ``benchmarks/bench_readout.py`` end to end. Small physics-structured models (n = 8 and
16), built here; the default model is not used.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from latenttune.io import read_results
from latenttune.io.rows import FIELDS, READOUT_SHAPES
from latenttune.model import LatentAutoencoder, LoadedModel, ModelConfig, save_checkpoint
from latenttune.model.crystal import (
    NORMALS,
    PhysicalLayout,
    misorientation_degrees,
    parameters_from_descriptor,
    render_physical,
)
from latenttune.model.readout import (
    PHASE_TERMS,
    READOUT_FIELDS,
    PhysicalReadout,
    facet_activity,
    read_out,
    readout_rows,
    twin_readout,
)
from latenttune.model.symmetry import VIEWS
from latenttune.model.views import viewed
from latenttune.simulate import simulate_series
from latenttune.tracking import make_strategy
from latenttune.tracking.replay import replay_series
from latenttune.tracking.tracker import FrameRecord
from sim.descriptor import DislocationLine, SampleDescriptor
from sim.geometry import centred_coords
from sim.phase import DEFAULT_G, visible_burgers_vector
from sim.shapes import random_faceted_crystal

ROOT = Path(__file__).resolve().parents[1]
n = 16
layout = PhysicalLayout(n)


def _physical_model(size: int = n, seed: int = 0, residual: bool = False) -> LatentAutoencoder:
    """A small physics-structured model (2 learned numbers); ``residual``: non-zero residual heads."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LatentAutoencoder(ModelConfig(n=size, latent_dim=2, encoder_channels=(4, 8), decoder_channels=(8, 4),
                                              hidden=16, physical=True))
        if residual:
            with torch.no_grad():
                for head in (model.decoder.amplitude, model.decoder.phasor):
                    head.weight.normal_(0.0, 0.3)
    return model.eval()


def _sample(seed: int, point=(0.4, -0.7, 0.3)) -> SampleDescriptor:
    rng = np.random.default_rng(seed)
    crystal = random_faceted_crystal(rng, n, radius=(0.25, 0.3))
    G = np.asarray(DEFAULT_G)
    b = visible_burgers_vector(rng, G)
    t = rng.standard_normal(3)
    t /= np.linalg.norm(t)
    line = DislocationLine(point=tuple(point), direction=tuple(t), burgers=tuple(b), G=tuple(G), poisson_ratio=0.3)
    return SampleDescriptor(shape=crystal, dislocations=(line,))


def _latent(descriptor: SampleDescriptor, learned=(0.3, -0.4), phase=None) -> np.ndarray:
    return np.concatenate([parameters_from_descriptor(descriptor, layout, phase_coefficients=phase), learned])


def _decode(model, z) -> np.ndarray:
    with torch.no_grad():
        return model.decode(z)[0].numpy()


# -- names --------------------------------------------------------------------------------------------------


def test_readout_names_are_stable_and_in_the_schema():
    assert READOUT_FIELDS == (
        "readout_orientation_deg", "readout_facet_distances", "readout_active_facets", "readout_size",
        "readout_phase_coefficients", "readout_dislocation_present", "readout_dislocation_winding",
        "readout_dislocation_point", "readout_dislocation_direction", "readout_learned_norm",
        "readout_learned_fraction",
    )
    assert [name for name, f in FIELDS.items() if f.group == "readout"] == list(READOUT_FIELDS)
    units = {name: FIELDS[name].units for name in READOUT_FIELDS}
    assert units["readout_orientation_deg"] == "deg" and units["readout_phase_coefficients"] == "rad"
    assert units["readout_size"] == units["readout_facet_distances"] == units["readout_dislocation_point"] == "voxel"
    assert all(FIELDS[name].description for name in READOUT_FIELDS)
    assert PHASE_TERMS == ("x", "y", "z", "x^2", "y^2", "z^2", "xy", "xz", "yz")
    assert {f.name for f in dataclasses.fields(PhysicalReadout)} == {
        "orientation_matrix", "orientation_deg", "facet_distances", "active_facets", "size_voxels",
        "phase_coefficients", "dislocation_present", "dislocation_winding", "dislocation_point",
        "dislocation_direction", "learned_norm", "learned_fraction"}


# -- the readout against the descriptor ---------------------------------------------------------------------


def _faces(crystal) -> tuple[np.ndarray, np.ndarray]:
    """Grid normals of the crystal's faces of positive area, and the areas (voxels^2)."""
    from scipy.spatial import ConvexHull

    vertices = crystal.vertices() @ crystal.rotation_matrix.T + np.asarray(crystal.centre)
    normals, areas = [], []
    for normal, distance in zip(crystal.normal_array @ crystal.rotation_matrix.T, crystal.distance_array):
        on = vertices[np.abs((vertices - crystal.centre) @ normal - distance) < 1e-6]
        if len(on) >= 3:
            e1 = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
            e1 /= np.linalg.norm(e1)
            flat = np.stack([on @ e1, on @ np.cross(normal, e1)], axis=1)
            normals.append(normal)
            areas.append(ConvexHull(flat).volume)
    return np.array(normals), np.array(areas)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_read_out_gives_back_the_descriptors_crystal_and_line(seed):
    descriptor = _sample(seed)
    crystal, line = descriptor.shape, descriptor.dislocations[0]
    model = _physical_model()
    z = _latent(descriptor)
    readout = read_out(z, model, _decode(model, z))
    assert misorientation_degrees(readout.orientation_matrix, crystal.rotation_matrix) < 0.5
    np.testing.assert_allclose(readout.orientation_deg, np.degrees(z[:3] * np.pi / 4))
    # the distance of every active plane is the crystal's support value in its direction
    vertices = crystal.vertices() @ crystal.rotation_matrix.T + np.asarray(crystal.centre)
    grid_normals = NORMALS @ readout.orientation_matrix.T
    support = (grid_normals @ vertices.T).max(axis=1)
    active = readout.active_facets
    assert active.dtype == bool and active.shape == (26,) and active.sum() >= 6
    np.testing.assert_allclose(readout.facet_distances[active], support[active], atol=0.05)
    # active planes are faces of the crystal; every face of more than 4 voxels^2 is active
    faces, areas = _faces(crystal)
    matches = np.abs(grid_normals @ faces.T - 1) < 1e-6  # (26 planes, faces)
    assert all(matches[j].any() for j in np.flatnonzero(active))
    assert all(active[matches[:, f]].all() for f in np.flatnonzero(areas > 4))
    # size: the equivalent-sphere radius of the rendered crystal's volume
    volume = crystal.render(n).sum()
    assert readout.size_voxels == pytest.approx((3 * volume / (4 * np.pi)) ** (1 / 3), rel=0.01)
    # the dislocation: on the true line, the true winding about the true direction
    t = np.asarray(line.direction)
    offset = readout.dislocation_point - np.asarray(line.point)
    assert np.linalg.norm(offset - np.dot(offset, t) * t) < 0.1
    assert abs(np.dot(readout.dislocation_point, readout.dislocation_direction)) < 1e-9  # closest to the centre
    sign = np.sign(np.dot(readout.dislocation_direction, t))
    assert readout.dislocation_present and readout.dislocation_winding == sign * round(line.winding)
    # an untrained residual draws nothing: the decoded density is the explicit crystal
    assert readout.learned_fraction < 1e-5
    assert readout.learned_norm == pytest.approx(0.5)


def test_phase_coefficients_the_learned_fraction_and_no_dislocation():
    descriptor = SampleDescriptor(shape=_sample(3).shape)
    phase = np.array([0.5, -0.3, 0.2, 0.8, -0.6, 0.1, 0.4, -0.2, 0.3])
    z = _latent(descriptor, phase=phase)
    readout = read_out(z, _physical_model())
    np.testing.assert_allclose(readout.phase_coefficients, phase, atol=1e-12)
    assert not readout.dislocation_present and readout.dislocation_winding == 0
    assert math.isnan(readout.learned_fraction)  # no decoded density given
    model = _physical_model(residual=True)
    with_residual = read_out(z, model, _decode(model, z))
    assert 0.01 < with_residual.learned_fraction < 2
    rows = readout_rows(with_residual)
    assert list(rows) == list(READOUT_FIELDS)
    assert all(rows[name].shape == shape for name, shape in READOUT_SHAPES.items())


def test_read_out_of_a_model_without_explicit_parameters_is_none_and_bad_input_is_refused(tiny_model):
    assert read_out(np.zeros(tiny_model.latent_dim), tiny_model) is None
    model = _physical_model()
    with pytest.raises(ValueError, match="`latent` must hold 50 finite numbers"):
        read_out(np.zeros(49), model)
    with pytest.raises(ValueError, match="NaN"):
        read_out(np.full(50, np.nan), model)
    with pytest.raises(ValueError, match="`density` must have shape"):
        read_out(np.zeros(50), model, np.zeros((8, 8, 8)))
    with pytest.raises(TypeError, match="`model`"):
        read_out(np.zeros(50), object())


def test_facet_activity_of_a_cube():
    # a cube of half-width 5: its six {100} planes bound it; the {110} and {111} planes at their support
    # distances touch only its edges and corners
    distances = np.concatenate([np.full(6, 5.0), np.full(12, 10 / np.sqrt(2)), np.full(8, 15 / np.sqrt(3))])
    active = facet_activity(np.eye(3), distances, n)
    assert active.tolist() == [True] * 6 + [False] * 20
    distances[6:18] = 6.0  # {110} planes cut the edges
    assert facet_activity(np.eye(3), distances, n).tolist() == [True] * 18 + [False] * 8


def _circulation(density: np.ndarray, point: np.ndarray, direction: np.ndarray, radius: float = 2.5) -> float:
    """Phase turns (in units of 2 pi) of ``density`` counter-clockwise about ``direction`` around ``point``."""
    e1 = np.cross(direction, [0.3, 0.5, 0.8])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(direction, e1)
    angles = np.linspace(0, 2 * np.pi, 97)[:-1]
    loop = point[:, None] + radius * (np.cos(angles) * e1[:, None] + np.sin(angles) * e2[:, None])
    index = loop + density.shape[0] // 2
    values = map_coordinates(density.real, index, order=1) + 1j * map_coordinates(density.imag, index, order=1)
    return float(np.angle(np.roll(values, -1) * np.conj(values)).sum() / (2 * np.pi))


@pytest.mark.parametrize("view", [5, 30])  # a rotation and an improper view
def test_the_readout_is_in_the_laboratory_frame_of_a_view(view):
    assert VIEWS[view].is_rotation == (view < 24)
    descriptor = _sample(4, point=(0.3, 0.2, -0.4))
    phase = np.array([0.2, -0.1, 0.3, 0.5, -0.4, 0.2, 0.3, -0.2, 0.1])
    z = _latent(descriptor, phase=phase)
    base = _physical_model()
    model = viewed(base, view)
    lab = _decode(model, z)
    readout = read_out(z, model, lab)
    assert readout.learned_fraction < 1e-5  # the explicit crystal was mapped like the decoded density
    # the amplitude the lab readout's planes draw is the lab density's
    coords = centred_coords(n).reshape(3, -1)
    sdf = ((NORMALS @ readout.orientation_matrix.T) @ coords - readout.facet_distances[:, None]).max(axis=0)
    np.testing.assert_allclose(np.clip(0.5 - sdf, 0, 1).reshape(n, n, n), np.abs(lab), atol=1e-4)
    assert np.all(np.abs(readout.orientation_deg) <= 45 + 1e-6)
    # the lab readout's line carries the winding of the lab density
    turns = _circulation(lab, readout.dislocation_point, readout.dislocation_direction)
    assert turns == pytest.approx(readout.dislocation_winding, abs=0.05) and readout.dislocation_winding != 0
    # the lab readout's polynomial is the lab density's smooth phase (no line: the polynomial alone)
    flat = z.copy()
    flat[layout.slice("dislocation")] = 0.0
    flat[layout.slice("dislocation").start] = 1.0  # a direction, winding 0
    smooth = read_out(flat, model)
    x = centred_coords(n) / (n / 4)
    basis = np.stack([x[0], x[1], x[2], x[0] ** 2, x[1] ** 2, x[2] ** 2, x[0] * x[1], x[0] * x[2], x[1] * x[2]])
    expected = np.tensordot(smooth.phase_coefficients, basis, axes=1)
    drawn = _decode(model, flat)
    inside = np.abs(drawn) > 0.5
    np.testing.assert_allclose(np.angle(drawn * np.exp(-1j * expected))[inside], 0, atol=1e-3)


def test_twin_readout_is_the_readout_of_the_twin_parameters():
    from latenttune.model.crystal import _TWIN_PERM

    descriptor = _sample(5)
    phase = np.array([0.2, -0.1, 0.3, 0.5, -0.4, 0.2, 0.3, -0.2, 0.1])
    z = _latent(descriptor, phase=phase)
    twinned = z.copy()
    twinned[layout.slice("facets")] = z[layout.slice("facets")][_TWIN_PERM]
    twinned[layout.slice("phase")][3:] *= -1
    dis = twinned[layout.slice("dislocation")]
    dis[3:6] = layout.line_point_units(-layout.line_point(dis[3:6]))
    dis[6] = -dis[6]
    model = _physical_model()
    expected, got = read_out(twinned, model), twin_readout(read_out(z, model))
    for name in ("orientation_deg", "facet_distances", "active_facets", "phase_coefficients", "dislocation_point",
                 "dislocation_direction"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), atol=1e-6, err_msg=name)
    assert got.dislocation_winding == expected.dislocation_winding == -read_out(z, model).dislocation_winding
    # and the twin's parameters draw the twin density conj(d(-r))
    amplitude, phase_drawn = render_physical(torch.tensor(np.stack([z, twinned])[:, :48], dtype=torch.float32), layout)
    d, t = torch.polar(amplitude, phase_drawn).numpy()
    twin_of_d = np.conj(np.roll(np.flip(d), 1, axis=(0, 1, 2)))
    np.testing.assert_allclose(np.abs(t), np.abs(twin_of_d), atol=1e-4)


# -- results files, the figure and the command line ------------------------------------------------------------


@pytest.fixture
def physical_run(tmp_path):
    """A replay of a 3-frame growth series (n = 8) with a tiny physics-structured model (es, 3 steps)."""
    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=3, n=8, photons=1e6, seed=2)
    model = _physical_model(size=8, residual=True)
    loaded = LoadedModel(model=model, path=Path("physical.pt"), checksum="physical")
    path, _ = replay_series(series, loaded, make_strategy("es", model.latent_dim, steps_per_frame=3), tmp_path / "r.h5")
    return path, model


def test_a_replay_writes_the_readout_with_units_and_results_read_it(physical_run):
    path, model = physical_run
    with h5py.File(path, "r") as f:
        for name in READOUT_FIELDS:
            assert f[name].shape == (3, *READOUT_SHAPES[name]), name
            assert f[name].attrs["units"] == FIELDS[name].units and f[name].attrs["description"], name
        assert f["readout_active_facets"].dtype == np.int8
    results = read_results(path)
    assert results.has_readout
    for row in range(results.num_frames):
        expected = readout_rows(read_out(results.latent[row], model, results.density[row]))
        for name in READOUT_FIELDS:
            value = getattr(results, name)
            assert value.dtype == float and value.shape == (3, *READOUT_SHAPES[name])
            np.testing.assert_allclose(value[row], expected[name].astype(float), rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.all(results.readout_learned_fraction > 0)


def test_a_resumed_replay_keeps_the_readout_fields_of_its_first_rows(tmp_path, monkeypatch):
    import latenttune.tracking.replay as replay

    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=3, n=8, photons=1e6, seed=2)
    model = _physical_model(size=8)
    loaded = LoadedModel(model=model, path=Path("physical.pt"), checksum="physical")

    def run(out, **kwargs):
        strategy = make_strategy("es", model.latent_dim, steps_per_frame=3)
        return replay_series(series, loaded, strategy, out, **kwargs)[0]

    run(tmp_path / "r.h5", callback=lambda report: report.record.index == 0)  # stopped after frame 0
    results = read_results(run(tmp_path / "r.h5", resume=True))
    assert results.has_readout and np.isfinite(results.readout_size).all() and results.num_frames == 3
    # a partial file begun without the readout (an older latenttune) resumes without it
    with monkeypatch.context() as patched:
        patched.setattr(replay, "read_out", lambda *args: None)
        run(tmp_path / "old.h5", callback=lambda report: report.record.index == 0)
    results = read_results(run(tmp_path / "old.h5", resume=True))
    assert results.num_frames == 3 and not results.has_readout


def test_results_without_a_readout_read_as_nan(tmp_path, lively_model):
    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=2, n=8, photons=1e6, seed=2)
    loaded = LoadedModel(model=lively_model, path=Path("lively.pt"), checksum="lively")
    path, _ = replay_series(series, loaded, make_strategy("one-shot", lively_model.latent_dim), tmp_path / "r.h5")
    results = read_results(path)
    assert not results.has_readout
    for name in READOUT_FIELDS:
        value = getattr(results, name)
        assert value.shape == (2, *READOUT_SHAPES[name]) and np.isnan(value).all(), name
    from latenttune.plots import readout_figure

    with pytest.raises(ValueError, match="no physical readout"):
        readout_figure(results)


def test_readout_figure_draws_its_panels(physical_run, tmp_path):
    from latenttune.plots import READOUT_PANELS, readout_figure

    path, _ = physical_run
    figure = readout_figure(read_results(path), tmp_path / "r.readout.png")
    assert (tmp_path / "r.readout.png").stat().st_size > 0
    axes = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == list(READOUT_PANELS)
    assert all(ax.get_xlabel() == "frame" and ax.get_ylabel() for ax in axes)
    assert "deg" in axes[0].get_ylabel() and "voxels" in axes[1].get_ylabel() and "rad" in axes[2].get_ylabel()
    assert len(axes[0].get_lines()) == 3 and len(axes[2].get_lines()) == 9
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == list(PHASE_TERMS)


def test_replay_saves_the_readout_figure_and_checks_its_name_first(tmp_path, capsys):
    from conftest import run_cli

    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=2, n=8, photons=1e6, seed=2)
    save_checkpoint(tmp_path / "physical.pt", _physical_model(size=8))
    argv = ["replay", series, "--model", tmp_path / "physical.pt", "--strategy", "es", "--steps-per-frame", "3",
            "--out", tmp_path / "r.h5"]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and f"readout figure: {tmp_path / 'r.readout.png'}" in out
    assert (tmp_path / "r.readout.png").exists() and (tmp_path / "r.png").exists()
    (tmp_path / "r.h5").unlink()
    (tmp_path / "r.png").unlink()
    code, _, err = run_cli(capsys, *argv)  # the readout figure is still there: refused before anything is written
    assert code != 0 and "OUT.readout.png" in err and not (tmp_path / "r.h5").exists()
    code, out, _ = run_cli(capsys, *argv[:-2], "--out", tmp_path / "q.h5", "--no-figure")
    assert code == 0 and "readout figure" not in out and not (tmp_path / "q.readout.png").exists()


# -- the Bluesky tracker --------------------------------------------------------------------------------------


def _record(z: np.ndarray, density: np.ndarray, status: str = "ok", view: int = 0) -> FrameRecord:
    return FrameRecord(index=0, time=0.0, latent=z, cost=0.1 if status == "ok" else math.nan, step_costs=np.ones(3),
                       encoded=np.full(z.size, np.nan), density=density, seconds=0.01, status=status,
                       state={"view": view})


def test_latent_tracker_publishes_the_readout(tiny_model):
    from latenttune.bluesky import LatentTracker

    model = _physical_model(residual=True)
    z = _latent(_sample(6))
    density = _decode(model, z)
    tracker = LatentTracker.for_model(model)
    tracker.set(_record(z, density))
    reading, described = tracker.read(), tracker.describe()
    expected = readout_rows(read_out(z, model, density))
    for name in READOUT_FIELDS:
        key = f"tracker_{name}"
        np.testing.assert_allclose(reading[key]["value"], expected[name].astype(float), err_msg=name)
        shape = list(READOUT_SHAPES[name])
        if shape:
            assert described[key]["dtype"] == "array" and described[key]["shape"] == shape, name
            assert described[key]["dtype_numpy"] == "<f8", name
        else:
            assert described[key]["dtype"] == "number" and described[key]["shape"] == [], name
    assert reading["tracker_readout_dislocation_present"]["value"] == 1.0
    # a skipped frame publishes the held latent's readout; no estimate: NaN
    tracker.set(_record(z, density, status="skipped: no counts"))
    assert tracker.readout_size.get() == pytest.approx(float(expected["readout_size"]))
    tracker.set(None)
    assert all(np.isnan(getattr(tracker, name).get()).all() for name in READOUT_FIELDS)
    # a view: the record's view maps the readout to the laboratory frame
    lab = _decode(viewed(model, 30), z)
    tracker.set(_record(z, lab, view=30))
    np.testing.assert_allclose(tracker.readout_dislocation_point.get(),
                               read_out(z, viewed(model, 30), lab).dislocation_point)
    # without a model (or with a model without explicit parameters) the readout stays NaN
    plain = LatentTracker(50, n)
    plain.set(_record(z, density))
    assert all(np.isnan(getattr(plain, name).get()).all() for name in READOUT_FIELDS)
    assert LatentTracker.for_model(tiny_model).model is None
    with pytest.raises(ValueError, match="sized for"):
        LatentTracker(49, n, model=model)


def test_a_bluesky_run_carries_the_readout_signals():
    from bluesky import RunEngine

    from latenttune.bluesky import LatentTracker, SimulatedCDIDetector, track_sample
    from sim import Detector, make_scenario

    model = _physical_model(size=8)
    scenario = make_scenario("growth", np.random.default_rng(0), n=8, num_frames=2)
    detector = SimulatedCDIDetector(scenario, Detector(photons=1e6, beamstop_radius=1.5), np.random.default_rng(1))
    docs = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(track_sample(detector, LatentTracker.for_model(model), model, make_strategy("one-shot", model.latent_dim),
                    num=2))
    descriptor = next(d for name, d in docs if name == "descriptor" and d["name"] == "primary")
    assert descriptor["data_keys"]["tracker_readout_orientation_deg"]["shape"] == [3]
    events = [d for name, d in docs if name == "event" and d["descriptor"] == descriptor["uid"]]
    assert len(events) == 2
    assert all(np.isfinite(e["data"]["tracker_readout_size"]) for e in events)
    assert all(np.shape(e["data"]["tracker_readout_dislocation_point"]) == (3,) for e in events)


# -- the benchmark --------------------------------------------------------------------------------------------


def _bench():
    """``benchmarks/bench_readout.py`` as a module (it finds ``bench_tracking`` next to itself)."""
    if "bench_readout" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_readout", ROOT / "benchmarks" / "bench_readout.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_readout"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_readout"]


def test_bench_readout_scores_the_truths_own_parameters_as_exact_and_finds_the_twin():
    from latenttune.metrics import real_space_error
    from latenttune.model.losses import centre_shifts

    br = _bench()
    model = _physical_model()
    for name in ("dislocation", "strain"):
        scenario = br.regenerate(name, 0, n, 3)
        stored = scenario.density(1)
        truth = br.frame_truth(scenario, 1, stored, n)
        # the dislocation scenario's line crosses the crystal half-way, not at the start
        assert truth.line_inside == (name == "dislocation")
        assert not br.frame_truth(scenario, 0, scenario.density(0), n).line_inside
        shift = centre_shifts(torch.from_numpy(stored[None]))[0]
        u = parameters_from_descriptor(scenario.descriptor(1), layout, shift=shift,
                                       phase_coefficients=truth.phase_coefficients)
        z = np.concatenate([u, [0.0, 0.0]])
        explicit = br.explicit_density(z, model, 0)
        assert not real_space_error(truth.density, explicit).twin
        scores = br.score_frame(read_out(z, model), truth, twin=False)
        assert scores["orientation_deg"] < 0.1 and scores["facet_relative"] < 1e-3
        assert scores["phase_signs_right"] == 1.0 and scores["phase_signs_compared"] > 0
        if name == "dislocation":
            assert scores["line_voxels"] < 1e-3 and scores["dislocation_drawn"] == 1.0
        # the twin of the explicit crystal is recognised, and its twin readout scores the same
        twinned = np.conj(np.roll(np.flip(explicit), 1, axis=(0, 1, 2)))
        assert real_space_error(truth.density, twinned).twin
        as_twin = br.score_frame(twin_readout(read_out(z, model)), truth, twin=True)
        assert as_twin["facet_relative"] < 1e-3 and as_twin["phase_signs_right"] == 1.0


def test_bench_readout_refuses_a_scenario_that_is_not_the_series(tmp_path):
    from latenttune.io import open_series
    from sim import make_scenario

    br = _bench()
    path = simulate_series("growth", tmp_path / "s.cxi", num_frames=2, n=8, seed=3)
    with open_series(path) as series:
        br.check_regenerated(br.regenerate("growth", 3, 8, 2), series)
        with pytest.raises(br.TruthMismatch, match="differs from the truth stored"):
            br.check_regenerated(make_scenario("growth", np.random.default_rng(3), n=8, num_frames=2), series)


def test_bench_readout_runs_end_to_end(tmp_path, capsys):
    br = _bench()
    save_checkpoint(tmp_path / "physical.pt", _physical_model())
    out = tmp_path / "readout"
    assert br.main(["--model", str(tmp_path / "physical.pt"), "--scenarios", "growth,strain,dislocation",
                    "--frames", "2", "--method", "one-shot", "--torch-threads", "1", "--out", str(out)]) == 0
    table = out.with_suffix(".md").read_text()
    assert "orientation error (deg, median)" in table and "| dislocation | 2 |" in table
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["scenario"] for r in report["rows"]] == ["growth", "strain", "dislocation"]
    rows = {r["scenario"]: r for r in report["rows"]}
    assert math.isfinite(rows["growth"]["orientation_deg_median"]) and math.isfinite(rows["growth"]["readout_ms"])
    assert math.isfinite(rows["dislocation"]["line_voxels_median"]) and math.isnan(rows["growth"]["line_voxels_median"])
    assert len(report["per_frame"]["strain"]) == 2
