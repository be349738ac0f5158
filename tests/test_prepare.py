"""Issue 15, item 1: ``latenttune prepare`` puts measured volumes of any shape on the model's grid.

The measured volumes are made here from the simulator's crystals: a density in a large real-space
box (so the diffraction is finely sampled), its intensity on a 100 x 120 x 90 grid with the
Bragg peak moved off-centre, Poisson counts, and then the defects a detector adds (gap planes, a
dead line, hot pixels and a hot detector pixel, NaN and negative voxels). The model is the tiny
n = 8 one of ``conftest.py`` (grid N = 16).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile

from latenttune.cli import main
from latenttune.io import open_series, read_results
from latenttune.io.measured import open_measured
from latenttune.prepare import (
    DEFAULT_OVERSAMPLING,
    MASK_GAP,
    MASK_HOT,
    PrepareSettings,
    build_mask,
    estimate_oversampling,
    prepare_series,
    prepare_volume,
)
from sim.shapes import random_shape
from sim.training import TrainingPairGenerator

N = 16
SHAPE = (100, 120, 90)
PEAK = (62, 40, 53)


def crystal_volume(shape=SHAPE, peak=PEAK, photons=1e8, seed=0, n_object=16, noise_seed=None) -> np.ndarray:
    """Poisson counts of a simulated crystal (about 8 voxels wide) on ``shape``, Bragg peak at ``peak``."""
    rng = np.random.default_rng(seed)
    density = random_shape(rng, n_object).render(n_object).astype(np.complex64)
    box = np.zeros(shape, np.complex64)
    box[tuple(slice(s // 2 - n_object // 2, s // 2 + n_object // 2) for s in shape)] = density
    intensity = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(box)))) ** 2
    intensity = np.roll(intensity * photons / intensity.sum(), [p - s // 2 for p, s in zip(peak, shape)], (0, 1, 2))
    noise = np.random.default_rng(seed + 1 if noise_seed is None else noise_seed)
    return noise.poisson(intensity).astype(np.float32)


def add_defects(volume: np.ndarray) -> np.ndarray:
    """The defects of a real detector, all inside the window a 16^3 grid takes; True where they are."""
    bad = np.zeros(volume.shape, dtype=bool)
    for where in (np.s_[:, :, 50:52], np.s_[:, 44:46, :]):  # two gap planes through the peak's region
        volume[where] = 0
        bad[where] = True
    volume[:, 30, 60] = 0  # a dead detector pixel: a line along the scan axis
    bad[:, 30, 60] = True
    for voxel in ((60, 38, 55), (70, 50, 45), (55, 20, 65)):  # hot voxels
        volume[voxel] = 5e6
        bad[voxel] = True
    volume[:, 60, 40] += 3e5  # a hot detector pixel, in every frame of the scan
    bad[:, 60, 40] = True
    volume[64:66, 36:40, 58:60] = np.nan
    bad[64:66, 36:40, 58:60] = True
    volume[48, 28, 44] = -1
    bad[48, 28, 44] = True
    return bad


def _blocks(array: np.ndarray, start, binning, reduce):
    """``reduce`` over each output voxel's block of input voxels (outside the array: absent)."""
    out = np.zeros((N, N, N), dtype=float)
    for i in range(N):
        for j in range(N):
            for k in range(N):
                lo = [s + c * b for s, c, b in zip(start, (i, j, k), binning)]
                block = array[tuple(slice(max(a, 0), max(a + b, 0)) for a, b in zip(lo, binning))]
                out[i, j, k] = reduce(block)
    return out


def test_prepares_an_off_centre_volume_with_gaps_and_hot_pixels_into_a_series_that_replays(
        tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "scan"  # three time steps: a folder becomes one series
    folder.mkdir()
    volumes, defects = [], []
    for t in range(3):
        volume = crystal_volume(photons=1e8 * (1 + 0.2 * t), noise_seed=10 + t)
        defects.append(add_defects(volume))
        volumes.append(volume)
        np.save(folder / f"step_{t}.npy", volume)
    out = tmp_path / "prepared.cxi"
    path, reports = prepare_series(folder, out, N)
    assert path == out and len(reports) == 3
    with open_series(out) as series:
        assert len(series) == 3 and series.N == N
        frames = [series[t] for t in range(3)]
    for t, (frame, report, volume, bad) in enumerate(zip(frames, reports, volumes, defects)):
        start, binning = report.start, report.binning
        assert binning == (2, 4, 2)  # oversampling about 10, 18, 8 brought to the model's 4 to 5
        assert "binned 2x4x2 (counts summed)" in report.action and "cropped" in report.action
        # the peak is centred: centre of mass of the central lobe at N // 2 (half a voxel at most)
        lobe = frame.intensity[5:12, 5:12, 5:12].astype(float)
        com = [(lobe.sum(axis=tuple(b for b in range(3) if b != a)) * np.arange(5, 12)).sum() / lobe.sum()
               for a in range(3)]
        np.testing.assert_allclose(com, [N // 2] * 3, atol=0.5)
        # counts conserved: every fully measured bin holds the sum of its input counts, nothing rescaled
        clean = np.where(bad, 0.0, np.nan_to_num(volume.astype(float)))
        expected = _blocks(clean, start, binning, np.sum)
        touched = _blocks(bad, start, binning, lambda b: float(b.any())) > 0
        np.testing.assert_array_equal(frame.mask, touched)  # exactly the bins with a defect: no more, no less
        np.testing.assert_allclose(frame.intensity[~touched], expected[~touched], rtol=1e-6)
        assert frame.intensity[touched].max() == 0 and frame.intensity.max() < 5e6  # no hot voxel got in
        assert report.counts == pytest.approx(clean.sum(), rel=1e-9)
        assert report.counts_kept == pytest.approx(float(frame.intensity.sum(dtype=np.float64)), rel=1e-6)
        assert report.counts_kept + report.counts_outside + report.counts_masked == pytest.approx(report.counts)
        assert report.counts_outside < 0.15 * report.counts  # the window holds the Bragg peak's signal
        assert report.masked["gap"] > 0 and report.masked["hot"] > 0 and report.masked["invalid"] > 0
    # and the series replays
    code = main(["replay", str(out), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "r.h5"),
                 "--steps-per-frame", "3", "--physics-iterations", "2", "--no-figure"])
    assert code == 0
    results = read_results(tmp_path / "r.h5")
    assert results.num_frames == 3 and list(results.status) == ["ok"] * 3
    assert np.isfinite(results.cost).all()


def test_the_cli_says_what_it_did_and_writes_a_series(tmp_path, tiny_checkpoint, capsys):
    volume = crystal_volume()
    add_defects(volume)
    tifffile.imwrite(tmp_path / "vol.tif", volume)
    out = tmp_path / "s.cxi"
    assert main(["prepare", str(tmp_path / "vol.tif"), "--model", str(tiny_checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "preparing 1 frame(s) of shape 100x120x90 for the grid of model" in printed
    assert "binned 2x4x2 (counts summed), cropped to 16^3 around the peak" in printed
    assert "kept " in printed and "outside the window" in printed and "gap " in printed and "hot " in printed
    assert f"latenttune replay {out}" in printed
    with h5py.File(out, "r") as f:
        summary = json.loads(f.attrs["prepare_summary"])
        assert summary["binning"] == [2, 4, 2] and summary["grid"] == N
        mask = f["entry_1/instrument_1/detector_1/mask"][0]
        assert (mask & MASK_GAP).any() and (mask & MASK_HOT).any()  # CXI bits say why
    # an existing output is refused without --overwrite, in one line
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(tmp_path / "vol.tif"), "--grid", "16", "--out", str(out)])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_explicit_binning_sums_blocks_and_a_big_grid_pads_with_masked_voxels():
    volume = crystal_volume(shape=(40, 48, 36), peak=(20, 24, 18), n_object=8, seed=3)
    frame = prepare_volume(volume, 16, PrepareSettings(binning=(2, 2, 2)))
    report = frame.report
    assert report.binning == (2, 2, 2) and "binned 2x2x2" in report.action
    expected = _blocks(volume.astype(float), report.start, report.binning, np.sum)
    inside = frame.mask == 0
    np.testing.assert_allclose(frame.intensity[inside], expected[inside], rtol=1e-6)
    # 64^3 without binning is larger than the 40 x 48 x 36 array: the rest is masked, not invented
    big = prepare_volume(volume, 64, PrepareSettings(binning=(1, 1, 1), edge_margin=0.2))
    assert "reach beyond the measured array" in big.report.action and "cropped" not in big.report.action
    outside = big.report.masked["outside"]
    assert outside == 64 ** 3 - 40 * 48 * 36 and ((big.mask & MASK_GAP) != 0).sum() >= outside
    assert big.report.counts_kept == pytest.approx(float(volume.sum(dtype=np.float64)), rel=1e-6)


def test_a_peak_too_close_to_an_edge_is_refused_with_what_to_change(tmp_path, capsys):
    volume = crystal_volume(peak=(6, 60, 45))
    with pytest.raises(ValueError, match=r"peak at voxel 6\.\d of axis 0 \(length 100\) is .* from the edge"):
        prepare_volume(volume, N)
    np.save(tmp_path / "edge.npy", volume)
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(tmp_path / "edge.npy"), "--grid", "16", "--out", str(tmp_path / "s.cxi")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and "edge_margin" in err
    assert not (tmp_path / "s.cxi").exists() and not (tmp_path / "s.cxi.partial").exists()


def test_an_oversampling_too_low_for_the_model_is_refused():
    L = 48
    r = np.linalg.norm(np.indices((L, L, L)) - L // 2, axis=0)
    ball = (r < 14).astype(np.complex64)  # 28 voxels wide in 48: oversampling 1.7 < 2
    intensity = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(ball)))) ** 2
    counts = np.random.default_rng(0).poisson(intensity * 1e8 / intensity.sum()).astype(np.float32)
    sigma = estimate_oversampling(counts)
    assert np.all(sigma < 2.0) and np.all(sigma > 1.3)
    with pytest.raises(ValueError, match=r"oversampling along axis 0 is 1\.\d+, below 2 .*does not fit in the model"):
        prepare_volume(counts, N, PrepareSettings(edge_margin=0.1))


def test_the_oversampling_estimate_matches_the_models_training_data_and_known_objects():
    pairs = TrainingPairGenerator(n=16, seed=4, photons_range=(1e7, 1e8))
    estimates = [estimate_oversampling(np.where(p.mask, 0, p.intensity)) for p in map(pairs.sample, range(8))]
    assert np.median(estimates) == pytest.approx(DEFAULT_OVERSAMPLING, rel=0.15)
    errors = []
    for seed in range(12):  # crystals of known width (n_object voxels across at most) in 3 n_object voxels
        n_object = (16, 24, 32)[seed % 3]
        density = random_shape(np.random.default_rng(seed), n_object).render(n_object)
        widths = [np.ptp(np.nonzero(np.abs(density).sum(axis=tuple(b for b in range(3) if b != a)) > 0.05)[0]) + 1
                  for a in range(3)]
        box = np.zeros((3 * n_object,) * 3, np.complex64)
        box[:n_object, :n_object, :n_object] = density
        intensity = np.abs(np.fft.fftn(box)) ** 2
        errors.append(estimate_oversampling(intensity) / (3 * n_object / np.array(widths)) - 1)
    errors = np.abs(errors)
    assert np.median(errors) < 0.1 and errors.max() < 0.3  # the documented accuracy (6 % and 26 % measured)


def test_build_mask_finds_gaps_dead_and_hot_pixels_and_nothing_on_a_clean_volume():
    clean = crystal_volume()
    bits = build_mask(clean)
    assert not bits.any()  # no false gap or hot pixel on a clean measurement (peak and fringes included)
    volume = clean.copy()
    bad = add_defects(volume)
    bits = build_mask(volume)
    gap = (bits & MASK_GAP) != 0
    hot = (bits & MASK_HOT) != 0
    assert gap[:, :, 50:52].all() and gap[:, 44:46, :].all() and gap[:, 30, 60].all()
    assert hot[60, 38, 55] and hot[70, 50, 45] and hot[55, 20, 65] and hot[:, 60, 40].all()
    assert (bits[64:66, 36:40, 58:60] & 0x1).all() and bits[48, 28, 44] & 0x1
    assert not (bits != 0)[~bad].any()  # nothing else
    # a user mask keeps its CXI bits; switching the detectors off finds nothing
    user = np.zeros(volume.shape, np.uint32)
    user[0, 0, :] = 0x10
    settings = PrepareSettings(hot_factor=None, gap_min_counts=None)
    off = build_mask(volume, user, settings)
    assert (off[0, 0, :] == 0x10).all() and not (off & (MASK_GAP | MASK_HOT)).any()


def test_a_dim_fringe_minimum_is_not_a_gap_but_an_empty_run_between_ordinary_planes_is():
    profile = [5.0] * 10 + [0.02, 0.0, 0.02] + [5.0] * 5 + [0.0, 0.0] + [5.0] * 10  # counts per voxel, by plane
    volume = np.ones((len(profile), 20, 20)) * np.array(profile)[:, None, None]
    gap = (build_mask(volume) & MASK_GAP) != 0
    assert np.nonzero(gap.all(axis=(1, 2)))[0].tolist() == [18, 19] and not gap[11].any()


def test_centre_frame_follows_each_frame_while_series_keeps_one_window():
    volumes = [crystal_volume(peak=(50 + 2 * t, 60, 45), noise_seed=t) for t in range(2)]
    series_reports = [prepare_volume(v, N, peak=(51, 60, 45), binning=(2, 4, 2)).report for v in volumes]
    assert series_reports[0].start == series_reports[1].start
    own = [prepare_volume(v, N, binning=(2, 4, 2)).report for v in volumes]
    assert own[1].start[0] - own[0].start[0] == 2 and np.allclose([r.peak_offset for r in own], 0, atol=0.5)


def test_settings_are_checked():
    for bad in ({"binning": (0, 1, 1)}, {"binning": (2, 2)}, {"oversampling": -1}, {"centre": "middle"},
                {"edge_margin": 0.7}, {"hot_factor": 0}, {"max_gap_width": 0}, {"oversampling": 1.5}):
        with pytest.raises(ValueError, match="`"):
            PrepareSettings(**bad)
    with pytest.raises(ValueError, match="`N` must be an even integer"):
        prepare_volume(crystal_volume(shape=(40, 40, 40), peak=(20, 20, 20), n_object=8), 15)


# -- input formats ---------------------------------------------------------------------------------


def _small(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(5.0, size=(12, 10, 8)).astype(np.float32)


def test_reads_npy_tif_and_4d_stacks(tmp_path):
    a, b = _small(0), _small(1)
    np.save(tmp_path / "a.npy", a)
    tifffile.imwrite(tmp_path / "b.tif", b)
    np.save(tmp_path / "ab.npy", np.stack([a, b]))
    series = open_measured([tmp_path / "a.npy", tmp_path / "b.tif", tmp_path / "ab.npy"])
    assert len(series) == 4 and series.shape == (12, 10, 8)
    for got, want in zip(series, (a, b, a, b)):
        np.testing.assert_array_equal(got.intensity, want)
        assert got.mask is None and got.intensity.dtype == np.float32  # float32 data is read as float32 (issue 29)


def test_reads_cxi_with_a_detector_mask_and_times_and_an_hdf5_dataset_path(tmp_path):
    data = np.stack([_small(0), _small(1)])
    detector = np.zeros((10, 8), np.uint32)
    detector[3, :] = 0x200
    with h5py.File(tmp_path / "run.cxi", "w") as f:
        f["entry_1/data_1/data"] = data
        f["entry_1/data_1/time"] = [0.5, 1.5]
        f["entry_1/instrument_1/detector_1/mask"] = detector
        f["scan/images"] = data[0]
    series = open_measured(tmp_path / "run.cxi")
    assert len(series) == 2 and series.times == [0.5, 1.5]
    frame = series[1]
    np.testing.assert_array_equal(frame.intensity, data[1])
    assert (frame.mask[:, 3, :] == 0x200).all() and frame.mask.sum() == 0x200 * 12 * 8  # on every detector frame
    one = open_measured(f"{tmp_path / 'run.cxi'}:/scan/images")
    np.testing.assert_array_equal(one[0].intensity, data[0])
    with pytest.raises(ValueError, match="no such dataset.*datasets with 3 or more dimensions"):
        open_measured(f"{tmp_path / 'run.cxi'}:/scan/nothing")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["measurement/volume"] = data[0]
    with pytest.raises(ValueError, match=r"not a CXI file; give the dataset as FILE:/path/to/dataset.*measurement"):
        open_measured(tmp_path / "plain.h5")


def test_reads_cdiutils_and_bcdi_npz_with_their_mask_files(tmp_path):
    data = _small(2)
    mask = np.zeros(data.shape, np.uint8)
    mask[0] = 1
    np.savez(tmp_path / "S12_pynx_input_data.npz", data=data)
    np.savez(tmp_path / "S12_pynx_input_mask.npz", mask=mask)
    frame = open_measured(tmp_path / "S12_pynx_input_data.npz")[0]
    np.testing.assert_array_equal(frame.intensity, data)
    np.testing.assert_array_equal(frame.mask != 0, mask != 0)
    np.savez(tmp_path / "S3_pynx_norm_12_10_8.npz", data=data)
    np.savez(tmp_path / "S3_maskpynx_norm_12_10_8.npz", mask=mask)
    assert (open_measured(tmp_path / "S3_pynx_norm_12_10_8.npz")[0].mask[0] != 0).all()


def test_reads_cohere_experiments_and_a_folder_of_time_steps_with_its_mask(tmp_path):
    data = _small(3)
    for t, scan in enumerate(("scan_9", "scan_10")):  # natural order: 9 before 10
        prep = tmp_path / "exp" / scan / "preprocessed_data"
        prep.mkdir(parents=True)
        tifffile.imwrite(prep / "prep_data.tif", (data + t).T)  # cohere writes its (x, y, z) transposed
    phasing = tmp_path / "exp2" / "phasing_data"
    phasing.mkdir(parents=True)
    tifffile.imwrite(phasing / "data.tif", np.sqrt(data).T)  # amplitudes
    folder_mask = np.zeros(data.shape, bool)
    folder_mask[:, 0, 0] = True
    np.save(tmp_path / "exp" / "mask.npy", folder_mask)
    series = open_measured(tmp_path / "exp")
    assert len(series) == 2 and series.sources[0].endswith("scan_9/preprocessed_data/prep_data.tif")
    np.testing.assert_array_equal(series[1].intensity, data + 1)
    assert (series[0].mask != 0).sum() == folder_mask.sum() and (series[0].mask[:, 0, 0] != 0).all()
    np.testing.assert_allclose(open_measured(tmp_path / "exp2")[0].intensity, data, rtol=1e-5)  # squared back
    with pytest.raises(FileNotFoundError, match="FILE:/path/to/dataset"):
        open_measured(tmp_path / "nothing.npy")
    np.save(tmp_path / "other.npy", np.zeros((5, 5, 5)))
    with pytest.raises(ValueError, match="every frame must have the shape of the first"):
        open_measured([tmp_path / "exp", tmp_path / "other.npy"])
