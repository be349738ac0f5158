"""Tests of the cohere-style amplitude readers (latenttune.io.cohere) and open_series dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from latenttune.frame_policy import frame_problem
from latenttune.io import SeriesFormatError, open_series, write_amplitude_frames
from latenttune.io.cohere import natural_key

N = 8


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_natural_key_orders_digit_runs_numerically():
    names = ["frame_10.npy", "frame_2.npy", "frame_1.npy", "Frame_3.npy", "frame_100.npy"]
    assert sorted(names, key=natural_key) == [
        "frame_1.npy", "frame_2.npy", "Frame_3.npy", "frame_10.npy", "frame_100.npy",
    ]


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".tiff"])
def test_directory_natural_order_amplitude_squared_and_mask(tmp_path, rng, suffix):
    T = 12
    amps = (rng.random((T, N, N, N)) * 10).astype(np.float32)
    for t in rng.permutation(T):  # created in random order
        p = tmp_path / f"frame_{t}{suffix}"
        if suffix == ".npy":
            np.save(p, amps[t])
        else:
            tifffile.imwrite(p, amps[t])
    mask = np.zeros((N, N, N), np.uint8)
    mask[N // 2 - 1 : N // 2 + 1, N // 2 - 1 : N // 2 + 1, :] = 1  # beamstop
    if suffix == ".npy":
        np.save(tmp_path / "mask.npy", mask)
    else:
        tifffile.imwrite(tmp_path / "mask.tif", mask)
    (tmp_path / "notes.txt").write_text("ignored")
    excl = mask != 0
    with open_series(tmp_path, amplitude=True) as s:
        assert len(s) == T and s.N == N and s.n == N // 2 and not s.has_truth
        assert s.metadata["files"] == [f"frame_{t}{suffix}" for t in range(T)]
        assert s.metadata["time_from_index"] is True and "frame index" in s.metadata["time_source"]
        assert s.metadata["mask_source"].startswith("mask.")
        np.testing.assert_array_equal(s.times, np.arange(T, dtype=float))
        for t, fr in enumerate(s):
            assert fr.index == t and fr.time == float(t)
            assert fr.intensity.dtype == np.float32
            np.testing.assert_array_equal(fr.mask, excl)
            np.testing.assert_allclose(fr.intensity[~excl], amps[t][~excl] ** 2, rtol=1e-6)
            assert np.all(fr.intensity[excl] == 0)


@pytest.mark.parametrize("fmt", ["npy", "tif"])
def test_write_amplitude_frames_round_trip(tmp_path, rng, fmt):
    intensities = (rng.random((3, N, N, N)) * 50).astype(np.float32)
    mask = np.zeros((N, N, N), bool)
    mask[0] = True
    files = write_amplitude_frames(tmp_path / "d", intensities, mask=mask, fmt=fmt)
    assert [f.name for f in files] == [f"frame_{t}.{fmt}" for t in range(3)]
    with open_series(tmp_path / "d", amplitude=True) as s:
        assert len(s) == 3  # the mask file is not a frame
        for t in range(3):
            np.testing.assert_array_equal(s[t].mask, mask)
            np.testing.assert_allclose(s[t].intensity[~mask], intensities[t][~mask], rtol=1e-5)


def test_single_npy_4d_and_3d(tmp_path, rng):
    amps = rng.random((4, N, N, N)).astype(np.float64)
    p4 = tmp_path / "series.npy"
    np.save(p4, amps)
    with open_series(p4, amplitude=True) as s:
        assert len(s) == 4 and s.metadata["layout"] == "npy"
        np.testing.assert_allclose(s[-1].intensity, (amps[-1] ** 2).astype(np.float32))
        assert not s[0].mask.any()
        assert [fr.index for fr in s] == [0, 1, 2, 3]
        with pytest.raises(IndexError, match="out of range"):
            s[4]
    p3 = tmp_path / "one.npy"
    np.save(p3, amps[0])
    with open_series(p3, amplitude=True) as s:
        assert len(s) == 1
        np.testing.assert_allclose(s[0].intensity, (amps[0] ** 2).astype(np.float32))


# ---------------------------------------------------------------------------
# validation errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "reason"), [(-0.5, "negative intensity"), (np.nan, "non-finite intensity")])
def test_bad_amplitude_in_directory_reaches_the_frame_policy(tmp_path, value, reason):
    """A negative or NaN amplitude is read (a negative amplitude as a negative intensity), and the
    frame policy names it (issue 14, item 4; before, the reader raised and the replay ended)."""
    for t in range(3):
        a = np.ones((N, N, N), np.float32)
        if t == 2:
            a[1, 1, 1] = value
        np.save(tmp_path / f"frame_{t}.npy", a)
    with open_series(tmp_path, amplitude=True) as s:
        assert frame_problem(s[1].intensity, s[1].mask) is None
        frame = s[2]
    assert frame_problem(frame.intensity, frame.mask) == reason
    assert np.isnan(frame.intensity[1, 1, 1]) or frame.intensity[1, 1, 1] == -(value**2)


def test_bad_amplitude_in_single_npy_reaches_the_frame_policy(tmp_path):
    a = np.ones((3, N, N, N), np.float32)
    a[1, 0, 0, 0] = -1
    p = tmp_path / "neg.npy"
    np.save(p, a)
    with open_series(p) as s:
        assert frame_problem(s[1].intensity, s[1].mask) == "negative intensity"
        assert frame_problem(s[0].intensity, s[0].mask) is None


def _dir_case(tmp_path, case):
    d = tmp_path / case
    d.mkdir()
    ok = np.ones((N, N, N), np.float32)
    if case == "odd_N":
        np.save(d / "frame_0.npy", np.ones((9, 9, 9), np.float32))
        return d, "frame_0.npy", "must be even"
    if case == "non_cubic":
        np.save(d / "frame_0.npy", np.ones((N, N, 6), np.float32))
        return d, "frame_0.npy", "cubic"
    if case == "wrong_ndim":
        np.save(d / "frame_0.npy", np.ones((N, N), np.float32))
        return d, "frame_0.npy", "wrong ndim"
    if case == "grid_mismatch":
        np.save(d / "frame_0.npy", ok)
        np.save(d / "frame_1.npy", np.ones((6, 6, 6), np.float32))
        return d, "frame_1.npy", "must match the first frame"
    if case == "complex":
        np.save(d / "frame_0.npy", ok.astype(np.complex64))
        return d, "frame_0.npy", "real integer or floating"
    if case == "mask_shape":
        np.save(d / "frame_0.npy", ok)
        np.save(d / "mask.npy", np.zeros((4, 4, 4), np.uint8))
        return d, "mask.npy", "mask shape mismatch"
    if case == "mask_dtype":
        np.save(d / "frame_0.npy", ok)
        np.save(d / "mask.npy", np.zeros((N, N, N), np.float64))
        return d, "mask.npy", "integer or boolean"
    if case == "mixed":
        np.save(d / "frame_0.npy", ok)
        tifffile.imwrite(d / "frame_1.tif", ok)
        return d, "<frames>", "all .npy or all .tif"
    if case == "empty":
        return d, "<frames>", "missing data"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["odd_N", "non_cubic", "wrong_ndim", "grid_mismatch", "complex", "mask_shape", "mask_dtype",
     "mixed", "empty"],
)
def test_directory_validation_errors(tmp_path, case):
    d, dataset, rule = _dir_case(tmp_path, case)
    with pytest.raises(SeriesFormatError) as info:
        open_series(d)
    msg = str(info.value)
    assert f"'{dataset}'" in msg and rule in msg, msg
    assert case in msg  # the directory (or a file inside it) is named


@pytest.mark.parametrize(
    ("shape", "dtype", "rule"),
    [
        ((2, 2, N, N, N), np.float32, "wrong ndim"),
        ((2, 9, 9, 9), np.float32, "must be even"),
        ((2, N, N, 4), np.float32, "cubic"),
        ((2, N, N, N), np.complex64, "real integer or floating"),
        ((0, N, N, N), np.float32, "at least one frame"),
    ],
)
def test_single_npy_validation_errors(tmp_path, shape, dtype, rule):
    p = tmp_path / "bad_single.npy"
    np.save(p, np.ones(shape, dtype))
    with pytest.raises(SeriesFormatError) as info:
        open_series(p)
    msg = str(info.value)
    assert "bad_single.npy" in msg and "'<array>'" in msg and rule in msg, msg


def test_open_series_dispatch_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_series(tmp_path / "nope.cxi")
    p = tmp_path / "notes.txt"
    p.write_text("not data")
    with pytest.raises(SeriesFormatError, match=r"notes\.txt.*unsupported input"):
        open_series(p)
    bogus = tmp_path / "bogus.cxi"
    bogus.write_bytes(b"not an hdf5 file")
    with pytest.raises(SeriesFormatError, match=r"bogus\.cxi.*cannot be opened as HDF5"):
        open_series(bogus)
