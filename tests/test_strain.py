"""Issue 28: geometry, frame transform, displacement and strain, the results file and its VTI, input traps."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy import ndimage

from latenttune.cli import main
from latenttune.geometry import BraggGeometry, Diffractometer, frame_transform
from latenttune.geometry.synthetic import strained_crystal, strained_crystal_scan
from latenttune.io import open_series, read_results
from latenttune.io.quantity import looks_like, quantity_warning
from latenttune.postprocess import phase_gradient, postprocess_density

FLAGS = ["--energy-kev", "9", "--detector-distance-m", "1.0", "--pixel-size-um", "55", "--rocking-step-deg", "0.01",
         "--reflection", "111", "--lattice-constant-nm", "0.4078"]
GOLD = BraggGeometry(9, 1.0, 55, 0.01, "111", 0.4078)


def cli(argv: list[str]) -> int:
    """Run the command line; its exit code (argparse's error exit included)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def _rocking_geometry() -> BraggGeometry:
    """A full, non-orthogonal geometry: six-circle layout, the detector out of the vertical plane too."""
    setup = Diffractometer(("z-", "x+"), (3.0, 17.0), ("z-", "x+"), (6.0, 33.0), rocking_circle=1,
                           direct_beam=(120.0, 250.0))
    return BraggGeometry(9, 0.8, (55, 75), 0.008, "111", 0.4078, diffractometer=setup)


def test_frame_transform_matches_xrayutilities_over_a_non_orthogonal_window():
    import xrayutilities as xu

    geometry, N, binning, centre = _rocking_geometry(), 64, (1, 2, 1), (40.0, 150.0, 230.0)
    t = frame_transform(geometry, N, binning, centre)
    assert np.abs(t.axis_angles_deg - 90).max() > 5  # a rocking scan's grid is not orthogonal
    # xrayutilities' q of every corner of the window, from the angles, against the linear map
    s = geometry.diffractometer
    qconv = xu.experiment.QConversion(list(s.sample_circles), list(s.detector_circles), list(s.beam_direction))
    qconv.init_area(s.detector_row_direction, s.detector_column_direction, cch1=s.direct_beam[0],
                    cch2=s.direct_beam[1], Nch1=600, Nch2=600, distance=geometry.detector_distance_m,
                    pwidth1=55e-6, pwidth2=75e-6)
    worst = 0.0
    for corner in np.ndindex(2, 2, 2):
        i = np.array(corner) * (N - 1)  # prepared voxel
        pos = np.asarray(centre) + (i - N // 2) * np.asarray(binning)  # input voxel: rocking index, row, column
        eta = s.sample_angles_deg[1] + pos[0] * geometry.rocking_step_deg
        qx, qy, qz = qconv.area(s.sample_angles_deg[0], eta, *s.detector_angles_deg, en=9000.0,
                                roi=(int(pos[1]), int(pos[1]) + 1, int(pos[2]), int(pos[2]) + 1))
        q_xu = 10 * np.array([qx.ravel()[0], qy.ravel()[0], qz.ravel()[0]])  # 1/nm
        q_lin = t.q_centre + t.q_step @ (i - N // 2)
        worst = max(worst, np.linalg.norm(q_lin - q_xu) / np.linalg.norm(t.q_step @ np.full(3, N)))
    assert worst < 5e-3, worst  # the Ewald sphere's curvature: 2.8e-3 of the window's q span here


def test_voxel_size_of_the_simple_geometry_against_the_textbook_formulas():
    N = 64
    t = frame_transform(GOLD, N)
    lam, D, p = GOLD.wavelength_nm, 1.0e9, 55e3  # nm
    dw, two_theta = math.radians(0.01), math.radians(GOLD.two_theta_deg)
    assert t.voxel_size_nm[2] == pytest.approx(lam * D / (N * p), rel=1e-4)  # detector columns: lambda D / (N p)
    # voxel volume lambda^3 D^2 / (N^3 p^2 dw sin 2theta)
    assert t.voxel_volume_nm3 == pytest.approx(lam ** 3 * D ** 2 / (N ** 3 * p ** 2 * dw * math.sin(two_theta)), rel=1e-3)
    assert np.linalg.norm(t.G) == pytest.approx(2 * math.pi * math.sqrt(3) / 0.4078)
    assert t.axis_angles_deg[0] == pytest.approx(90 + GOLD.two_theta_deg / 2, abs=0.05)  # sheared by theta


def test_postprocessing_recovers_the_strain_gradient_and_stays_right_next_to_a_dislocation():
    t = frame_transform(GOLD, 64)
    gradient_only = postprocess_density(strained_crystal(t, GOLD, 32, dislocation=False), t, GOLD)
    inside = ndimage.binary_erosion(gradient_only.support, iterations=2)
    along = np.tensordot(t.G / np.linalg.norm(t.G), np.tensordot(t.real_basis, np.indices((32,) * 3) - 16, axes=1),
                         axes=1)
    size_nm = 14 * float(np.mean(t.voxel_size_nm))
    expected = 1e-3 * along / size_nm  # the simulated strain: 1e-3 across the crystal
    expected -= np.median(expected[gradient_only.support])
    error = gradient_only.strain[inside] - expected[inside]
    assert np.sqrt(np.mean(error ** 2)) < 0.02 * 1e-3
    assert np.ptp(gradient_only.strain[inside]) > 0.5e-3
    # with the dislocation: the wrapped gradient's strain differs from the gradient-only one only near the line
    both = postprocess_density(strained_crystal(t, GOLD, 32), t, GOLD)
    assert np.isfinite(both.strain).all() and abs(both.mean) < 1e-4
    # unwrapping then differentiating fails at the vortex; the wrapped gradient never jumps by 2 pi
    grad = phase_gradient(strained_crystal(t, GOLD, 32), both.support)
    assert np.nanmax(np.abs(grad)) <= np.pi


def test_geometry_flags_are_checked_and_say_what_is_missing(tmp_path, capsys):
    with pytest.raises(ValueError, match="reflection"):
        BraggGeometry(9, 1.0, 55, 0.01, "11", 0.4078)
    with pytest.raises(ValueError, match="rocking_step_deg"):
        BraggGeometry(9, 1.0, 55, 0.0, "111", 0.4078)
    vol = tmp_path / "v.npy"
    np.save(vol, strained_crystal_scan(GOLD, np.random.default_rng(0), photons=1e7).counts)
    code = cli(["prepare", str(vol), "--grid", "64", "--out", str(tmp_path / "s.cxi"), "--energy-kev", "9"])
    assert code == 2 and "--detector-distance-m" in capsys.readouterr().err
    assert cli(["prepare", str(vol), "--grid", "64", "--out", str(tmp_path / "s.cxi")]) == 0
    assert "no measurement geometry" in capsys.readouterr().out


def test_quantity_heuristic_names_the_option():
    counts = np.random.default_rng(0).poisson(50.0, (20, 20, 20)).astype(np.float32)
    assert looks_like(counts) == "counts" and looks_like(np.sqrt(counts)) == "amplitudes"
    assert "--amplitude" in quantity_warning(np.sqrt(counts), amplitude=False)
    assert "drop --amplitude" in quantity_warning(counts, amplitude=True)
    assert quantity_warning(counts, amplitude=False) is None and quantity_warning(np.sqrt(counts), True) is None
    assert looks_like(counts * 0.37 + 0.1) is None  # normalised data: no opinion


def test_input_traps_in_the_commands(tmp_path, capsys):
    rng = np.random.default_rng(1)
    scan = strained_crystal_scan(GOLD, rng, photons=1e8)
    raw = tmp_path / "raw.npy"
    np.save(raw, scan.counts)
    # a raw volume sent to replay: the prepare command to run
    assert cli(["replay", str(raw), "--out", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err
    assert "latenttune prepare" in err and str(raw) in err and "cubic" not in err.splitlines()[-1][:30]
    # amplitudes given to prepare as intensities: a warning naming --amplitude
    amp = tmp_path / "amp.npy"
    np.save(amp, np.sqrt(scan.counts))
    assert cli(["prepare", str(amp), "--grid", "64", "--bin", "1", "--out", str(tmp_path / "a.cxi")]) == 0
    assert "pass --amplitude" in capsys.readouterr().err
    assert cli(["prepare", str(raw), "--grid", "64", "--amplitude", "--out", str(tmp_path / "b.cxi")]) == 0
    assert "drop --amplitude" in capsys.readouterr().err
    # a folder of .npy frames means intensities everywhere; --amplitude says amplitudes
    folder = tmp_path / "frames"
    folder.mkdir()
    frame = rng.poisson(5.0, (16, 16, 16)).astype(np.float32)
    np.save(folder / "frame_0.npy", frame)
    with open_series(folder) as s:
        np.testing.assert_array_equal(s[0].intensity, frame)
    with open_series(folder, amplitude=True) as s:
        np.testing.assert_array_equal(s[0].intensity, frame ** 2)


@pytest.mark.slow
def test_prepare_with_geometry_then_replay_gives_displacement_strain_and_a_vti_vtk_reads(tmp_path, capsys):
    """The issue's flow: prepare VOL with the geometry flags, replay, export; read back with h5py and VTK."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    vol = tmp_path / "VOL.npy"
    np.save(vol, strained_crystal_scan(GOLD, np.random.default_rng(2), photons=1e9).counts)
    s, r, vti = tmp_path / "s.cxi", tmp_path / "r.h5", tmp_path / "r.vti"
    assert cli(["prepare", str(vol), *FLAGS, "--out", str(s)]) == 0
    out = capsys.readouterr().out
    assert "voxel size" in out and "resolution" in out and "simple approximation" in out
    assert cli(["replay", str(s), "--out", str(r), "--physics-iterations", "20", "--restarts", "0",
                "--no-figure"]) == 0
    out = capsys.readouterr().out
    frame_line = next(line for line in out.splitlines() if line.startswith("frame    0"))
    assert "free LLK" in frame_line and "strain" in frame_line
    with h5py.File(r, "r") as f:
        for name, units in (("displacement", "nm"), ("strain", ""), ("phase", "rad"), ("llk_free", "")):
            assert f[name].attrs["units"] == units and f[name].attrs["description"]
        assert f["displacement"].shape == (1, 32, 32, 32)
        voxel = f["geometry/voxel_size"]
        assert voxel.attrs["units"] == "nm" and np.all(np.asarray(voxel) > 10)
        assert f["geometry/energy"][()] == 9 and list(f["geometry/reflection"][()]) == [1, 1, 1]
        assert f["prepare/binning"].shape == (3,) and f["prepare/peak"].shape == (1, 3)
        for name, ds in f.items():  # every dataset says its units and meaning
            if isinstance(ds, h5py.Dataset):
                assert "units" in ds.attrs and "description" in ds.attrs, name
        assert "E_q" not in f and "E_r" not in f and "phase_rms" not in f  # no duplicate, no truth on measured data
    results = read_results(r)
    assert results.has_strain and np.isfinite(results.llk_free).all()
    assert abs(results.strain_mean[0]) < 1e-4 and 0 < results.strain_std[0] < 2e-3
    assert cli(["export", str(r), "--frame", "0", "--out", str(vti)]) == 0
    reader = vtk.vtkXMLImageDataReader()
    reader.SetFileName(str(vti))
    reader.Update()
    image = reader.GetOutput()
    spacing = np.array(image.GetSpacing())
    assert np.allclose(spacing, abs(np.linalg.det(results.attrs["frame_transform"]["real_basis"])) ** (1 / 3))
    assert 15 < spacing[0] < 40  # nm
    points = image.GetPointData()
    strain = vtk_to_numpy(points.GetArray("strain"))
    support = vtk_to_numpy(points.GetArray("support")) > 0
    assert vtk_to_numpy(points.GetArray("displacement")).shape == strain.shape and support.sum() > 100
    assert abs(strain[support].mean() - results.strain_mean[0]) < 1e-4
    g = vtk_to_numpy(image.GetFieldData().GetArray("G"))
    assert np.linalg.norm(g) == pytest.approx(GOLD.G_norm)
    direction = np.array([image.GetDirectionMatrix().GetElement(i, j) for i in range(3) for j in range(3)])
    assert np.allclose(direction.reshape(3, 3)[:, 2], g / np.linalg.norm(g))  # the image's z axis is along G


@pytest.mark.slow
def test_end_to_end_strain_gradient_and_dislocation_against_the_truth(tmp_path):
    """Simulate the scan, prepare with the geometry, replay, post-process; the heterogeneous strain against the truth.

    The truth is the crystal's strain field (a 1e-3 gradient plus an edge dislocation's field); its
    range is the 1st to 99th percentile inside the support. The reconstruction can only hold what the
    window's q range measures, so the recovered strain is held against the truth band-limited to that
    range (the strain of the crystal at the reconstruction's resolution): within 10 % of the range,
    RMS. The figures against the point-sampled field are printed too (run with ``-s``): there the
    dislocation's core, narrower than a voxel, dominates, and even the band-limited truth is off by
    about 10 % of the range.
    """
    from latenttune.metrics import real_space_error
    from latenttune.model import load_model
    from latenttune.prepare import PrepareSettings, prepare_series
    from latenttune.tracking import make_strategy
    from latenttune.tracking.physics_settings import PhysicsSettings
    from latenttune.tracking.replay import replay_series

    scan = strained_crystal_scan(GOLD, np.random.default_rng(1), photons=1e9)
    vol = tmp_path / "vol.npy"
    np.save(vol, scan.counts)
    series, reports = prepare_series([vol], tmp_path / "s.cxi", 64, PrepareSettings(binning=(1, 1, 1)), geometry=GOLD)
    loaded = load_model("default")
    strategy = make_strategy("hybrid", loaded.model.latent_dim,
                             physics=PhysicsSettings(iterations=150, cold_iterations=150, restarts=1))
    out, _ = replay_series(series, loaded, strategy, tmp_path / "r.h5", views=48)
    results = read_results(out)
    assert results.has_strain and np.isfinite(results.llk_free).all()
    transform = frame_transform(GOLD, 64, (1, 1, 1))
    np.testing.assert_allclose(results.attrs["frame_transform"]["real_basis"], transform.real_basis, rtol=1e-9)
    truth = scan.truth_for_window(np.array(reports[0].start) + 32)
    exact = postprocess_density(strained_crystal(transform, GOLD, 32), transform, GOLD)  # the point-sampled field
    inside = ndimage.binary_erosion(exact.support, iterations=1)  # surface voxels' gradients mix in the outside
    span = np.percentile(exact.strain[inside], 99) - np.percentile(exact.strain[inside], 1)
    assert span > 1e-3  # the gradient's 1e-3 plus the dislocation's field
    measured = postprocess_density(truth, transform, GOLD)  # the truth at the reconstruction's resolution
    alignment = real_space_error(truth, results.density_at(0))
    recon = postprocess_density(alignment.aligned.astype(np.complex64), transform, GOLD)
    both = inside & recon.support & measured.support

    def rms(a, b, where):
        return float(np.sqrt(np.mean((a[where] - b[where]) ** 2)))

    error = rms(recon.strain, measured.strain, both)
    print(f"truth strain range (1-99 %) {span:.2e}; reconstruction E_r {alignment.error:.3f}; RMS strain error "
          f"against the band-limited truth {error:.2e} ({error / span:.1%} of the range); against the point-sampled "
          f"field: reconstruction {rms(recon.strain, exact.strain, both) / span:.1%}, band-limited truth itself "
          f"{rms(measured.strain, exact.strain, inside) / span:.1%}")
    assert both.sum() > 0.8 * inside.sum()
    assert error < 0.10 * span, (error, span)


def test_the_results_file_layout_is_documented_in_one_place():
    from pathlib import Path

    from latenttune.io.rows import FIELDS

    text = (Path(__file__).resolve().parents[1] / "docs" / "results_file.md").read_text()
    missing = [name for name in FIELDS if f"`{name}`" not in text]
    assert not missing, missing


def test_static_scan_keeps_the_start_with_the_lowest_free_llk_and_not_the_deliberately_bad_one():
    from latenttune.physics import forward
    from latenttune.tracking.physics_settings import PhysicsSettings
    from latenttune.tracking.static import StaticStart, static_scan

    rng = np.random.default_rng(3)
    n = 8
    r = np.linalg.norm(np.indices((n, n, n)) - n // 2, axis=0)
    truth = ((r < 2.6) * np.exp(0.8j * (np.indices((n, n, n))[0] - n // 2) ** 2 / 9)).astype(np.complex64)
    intensity = rng.poisson(forward(truth) * 2e6 / forward(truth).sum()).astype(np.float32)
    nan = np.full(4, np.nan)
    bad = (rng.random((n, n, n)) * np.exp(2j * np.pi * rng.random((n, n, n)))).astype(np.complex64)  # noise
    starts = [StaticStart("bad: noise", bad, nan), StaticStart("near the truth", np.abs(truth).astype(np.complex64),
                                                               nan),
              StaticStart("also bad: a shell", ((r > 2.5) & (r < 3.5)).astype(np.complex64), nan)]
    scan = static_scan(intensity, None, starts, settings=PhysicsSettings(iterations=30, cold_iterations=30,
                                                                         restarts=0), average=2)
    free = [run.llk_free for run in scan.runs]
    assert free == sorted(free) and np.isfinite(free).all()
    assert scan.best.start.name == "near the truth"
    assert scan.best.llk_free < 0.5 * min(run.llk_free for run in scan.runs if run.start.name.startswith(("bad", "also")))
    assert scan.average is not None and scan.average.shape == (n, n, n)
    assert "free LLK" in scan.table().splitlines()[0] and "near the truth" in scan.table().splitlines()[0]


@pytest.mark.slow
def test_static_command_and_strain_command_on_a_prepared_volume(tmp_path, capsys):
    vol = tmp_path / "VOL.npy"
    np.save(vol, strained_crystal_scan(GOLD, np.random.default_rng(4), photons=1e9).counts)
    s = tmp_path / "s.cxi"
    assert cli(["prepare", str(vol), *FLAGS, "--out", str(s)]) == 0
    capsys.readouterr()
    assert cli(["static", str(s), "--out", str(tmp_path / "st.h5"), "--iterations", "20", "--views", "2",
                "--random", "1"]) == 0
    out = capsys.readouterr().out
    ranking = [line for line in out.splitlines() if "free LLK" in line and line.strip()[:2].rstrip(".").isdigit()]
    free = [float(line.split("free LLK")[1].split()[0]) for line in ranking]
    assert len(free) >= 4 and free == sorted(free)  # encoders, a second view, a random latent
    st = read_results(tmp_path / "st.h5")
    assert st.llk_free[0] == pytest.approx(free[0], abs=1e-3) and st.has_strain
    # a results file without the fields (post-processing off), then the strain command adds them
    from latenttune.model import load_model
    from latenttune.tracking import make_strategy
    from latenttune.tracking.physics_settings import PhysicsSettings
    from latenttune.tracking.replay import replay_series

    loaded = load_model("default")
    strategy = make_strategy("hybrid", loaded.model.latent_dim, physics=PhysicsSettings(iterations=10, restarts=0))
    plain, _ = replay_series(s, loaded, strategy, tmp_path / "plain.h5", postprocess=False)
    assert not read_results(plain).has_strain
    assert cli(["strain", str(plain), "--out", str(tmp_path / "strained.h5")]) == 0
    added = read_results(tmp_path / "strained.h5")
    assert added.has_strain and np.isfinite(added.strain_std).all()
    with h5py.File(tmp_path / "strained.h5", "r") as f:
        assert f["strain"].attrs["units"] == "" and f["geometry/voxel_size"].attrs["units"] == "nm"


def test_the_bluesky_tracker_publishes_the_mean_strain_a_live_plot_can_follow():
    import dataclasses

    from latenttune.bluesky.devices import LatentTracker
    from latenttune.postprocess.frames import FramePostprocessor
    from latenttune.tracking.physics_stage import PhysicsOutcome
    from latenttune.tracking.tracker import FrameRecord

    t = frame_transform(GOLD, 64)
    density = strained_crystal(t, GOLD, 32)
    post = FramePostprocessor(GOLD, t)
    record = FrameRecord(index=0, time=0.0, latent=np.zeros(4), cost=0.1, step_costs=np.array([0.1]),
                         encoded=np.zeros(4), density=density, seconds=0.1, status="ok", state={})
    outcome = PhysicsOutcome(density=density, refined=density, accepted=True, misfit_decoded=0.2, misfit_refined=0.1,
                             free_misfit_decoded=0.2, free_misfit_refined=0.1, warm=False, seconds=0.1, llk=1.1,
                             llk_free=1.3)
    tracker = LatentTracker(4, 32, postprocess=post)
    assert "tracker_strain_mean" in tracker.hints["fields"]
    tracker.set(dataclasses.replace(record, physics=outcome, output=density))
    reading = tracker.read()
    expected = postprocess_density(density, t, GOLD)
    assert reading["tracker_strain_mean"]["value"] == pytest.approx(expected.mean)
    assert reading["tracker_strain_std"]["value"] == pytest.approx(expected.std)
    assert reading["tracker_llk_free"]["value"] == 1.3
    plain = LatentTracker(4, 32)
    plain.set(record)
    assert math.isnan(plain.read()["tracker_strain_mean"]["value"])


def test_strain_figure_names_planes_units_and_scale(tmp_path):
    """The figure of a post-processed results file held in memory: planes named, units, a scale bar in nm."""
    from matplotlib.figure import Figure

    from latenttune.io import Results
    from latenttune.postprocess.figure import strain_figure
    from latenttune.postprocess.frames import FramePostprocessor

    t = frame_transform(GOLD, 64)
    density = strained_crystal(t, GOLD, 32)
    row = FramePostprocessor(GOLD, t).row(density, 32)
    fields = {"cost": [0.1], "density": density[None], **{k: np.asarray(v)[None] for k, v in row.items()}}
    results = Results.from_fields(fields, {"frame_transform": t.to_dict()})
    texts = []
    original = Figure.savefig

    def capture(self, *args, **kwargs):
        texts.extend(text.get_text() for ax in self.axes for text in [ax.title, ax.xaxis.label, ax.yaxis.label])
        texts.extend(child.txt_label.get_text() for ax in self.axes for child in ax.artists
                     if hasattr(child, "txt_label"))
        return original(self, *args, **kwargs)

    Figure.savefig = capture
    try:
        out = strain_figure(results, tmp_path / "s.png")
    finally:
        Figure.savefig = original
    assert out.stat().st_size > 10_000
    assert any("x-y plane (normal to G)" in t for t in texts) and any("(nm)" in t for t in texts)
    assert any(t.endswith(" nm") and t[0].isdigit() for t in texts)  # the scale bar
    assert any("strain along G" in t for t in texts)  # colour-bar label (units)


def test_the_tracking_movie_caption_carries_the_strain():
    from latenttune.io import Results
    from latenttune.movies.tracking_movie import frame_captions

    fields = {"cost": [0.1, 0.2], "density": np.zeros((2, 4, 4, 4), np.complex64), "strain": np.zeros((2, 4, 4, 4)),
              "strain_mean": [1.5e-4, -2e-5], "strain_std": [3e-4, 2e-4]}
    captions = frame_captions(Results.from_fields(fields), np.arange(2), np.full(2, np.nan), "E_r")
    assert "strain +1.5e-04 +- 3.0e-04" in captions[0] and "strain -2.0e-05" in captions[1]


def test_geometry_from_a_cxi_input_a_geometry_file_and_a_preset(tmp_path, capsys):
    import argparse

    from latenttune.cli.geometry_options import geometry_from_args
    from latenttune.geometry import load_geometry

    counts = strained_crystal_scan(GOLD, np.random.default_rng(5), photons=1e8).counts
    cxi = tmp_path / "scan.cxi"
    with h5py.File(cxi, "w") as f:  # as PyNX / cdiutils write the instrument
        f["entry_1/data_1/data"] = counts
        f["entry_1/instrument_1/source_1/energy"] = 9.0 * 1.602176634e-16  # J
        f["entry_1/instrument_1/detector_1/distance"] = 1.0
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 55e-6
        f["entry_1/instrument_1/detector_1/y_pixel_size"] = 55e-6
    out = tmp_path / "s.cxi"
    assert cli(["prepare", str(cxi), "--grid", "64", "--rocking-step-deg", "0.01", "--reflection", "111",
                "--lattice-constant-nm", "0.4078", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "geometry: 9 keV" in printed and "voxel size" in printed
    with h5py.File(out, "r") as f:  # the prepared series carries the instrument fields and the full record
        assert f["entry_1/instrument_1/detector_1/distance"][()] == 1.0
        assert f["entry_1/instrument_1/source_1/energy"].attrs["units"] == "J"
    # a geometry file naming a preset: the full case
    toml = tmp_path / "geometry.toml"
    toml.write_text('energy_kev = 9\ndetector_distance_m = 0.8\npixel_size_um = [55, 75]\nrocking_step_deg = 0.008\n'
                    'reflection = "111"\nlattice_constant_nm = 0.4078\npreset = "six-circle"\n'
                    'sample_angles_deg = [3.0, 17.0]\ndetector_angles_deg = [6.0, 33.0]\ndirect_beam = [120, 250]\n')
    geometry = load_geometry(toml)
    assert geometry.full and geometry.diffractometer.rocking_circle == 1 and geometry.pixel_size_um == (55.0, 75.0)
    args = argparse.Namespace(geometry=str(toml), preset=None, sample_angles_deg=None, detector_angles_deg=None,
                              direct_beam=None, energy_kev=None, detector_distance_m=None, pixel_size_um=None,
                              rocking_step_deg=None, reflection=None, lattice_constant_nm=None)
    from_args = geometry_from_args(args, [str(cxi)])
    assert from_args.detector_distance_m == 0.8 and from_args.full  # the file overrides the CXI's instrument
    with pytest.raises(ValueError, match="unknown geometry keys"):
        toml.write_text(toml.read_text() + "wavelength = 1\n")
        load_geometry(toml)


def test_full_geometry_gives_the_lattice_strain_from_the_peak_position():
    two_theta_b = GOLD.two_theta_deg
    measured = two_theta_b * (1 - 2e-3)  # the peak sits at a smaller angle: an expanded lattice
    setup = Diffractometer(("x+",), (measured / 2,), ("x+",), (measured,), direct_beam=(0.0, 0.0))
    full = BraggGeometry(9, 1.0, 55, 0.01, "111", 0.4078, diffractometer=setup)
    t = frame_transform(full, 64, centre=(0.0, 0.0, 0.0), peak=(0.0, 0.0, 0.0))
    expected = math.sin(math.radians(two_theta_b / 2)) / math.sin(math.radians(measured / 2)) - 1
    frame = postprocess_density(strained_crystal(t, full, 32, dislocation=False), t, full)
    assert frame.lattice_strain == pytest.approx(expected, rel=0.02) and frame.lattice_strain > 1e-3
    # a Bragg peak 2 voxels off the window centre along each axis: a phase ramp, read as the peak's q
    shift = np.array([2.0, -2.0, 2.0])
    j = np.indices((32,) * 3) - 16
    ramped = strained_crystal(t, full, 32, dislocation=False) * np.exp(2j * np.pi * np.tensordot(shift, j, axes=1) / 64)
    moved = postprocess_density(ramped.astype(np.complex64), t, full)
    q_peak = t.q_centre + t.q_step @ shift
    assert moved.lattice_strain == pytest.approx(full.G_norm / np.linalg.norm(q_peak) - 1, abs=2e-5)
    np.testing.assert_allclose(moved.strain[moved.support], frame.strain[frame.support], atol=2e-5)
    simple = postprocess_density(strained_crystal(frame_transform(GOLD, 64), GOLD, 32), frame_transform(GOLD, 64), GOLD)
    assert math.isnan(simple.lattice_strain)  # the simple approximation cannot measure it
