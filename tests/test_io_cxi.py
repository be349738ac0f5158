"""Tests of the CXI-style HDF5 series reader and writers (latenttune.io.cxi)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from latenttune.frame_policy import frame_problem
from latenttune.io import (
    CXISeriesWriter,
    Frame,
    SeriesFormatError,
    open_series,
    write_series,
)

N = 8
n = N // 2
T = 3


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _series(rng: np.random.Generator, T: int = T) -> tuple[np.ndarray, np.ndarray]:
    intensities = (rng.random((T, N, N, N)) * 100).astype(np.float32)
    truths = (rng.random((T, n, n, n)) * np.exp(1j * rng.random((T, n, n, n)))).astype(
        np.complex64
    )
    return intensities, truths


def _cxi_bits_mask() -> np.ndarray:
    m = np.zeros((N, N, N), dtype=np.uint32)
    m[0, 0, 0] = 0x1  # invalid
    m[1, 2, 3] = 0x2  # saturated
    m[:, 0, :] |= 0x200  # gap
    m[N // 2, N // 2, N // 2] = 0x1 | 0x2
    return m


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------
def test_stacked_round_trip_constant_integer_mask(tmp_path, rng):
    intensities, truths = _series(rng)
    mask = _cxi_bits_mask()
    times = np.array([0.0, 0.25, 1.5])
    path = tmp_path / "stacked.cxi"
    write_series(
        path, intensities, mask=mask, times=times, truths=truths, layout="stacked",
        attrs={"scan": 7, "info": {"beamline": "34-ID-C"}},
        truth_attrs={"scenario": "growth", "params": {"rate": 0.1}, "seed": 5},
    )
    excluded = mask != 0
    with open_series(path) as s:
        assert len(s) == T and s.N == N and s.n == n
        assert s.metadata["layout"] == "stacked"
        assert s.metadata["time_from_index"] is False
        assert s.metadata["cxi_version"] == 160
        assert s.metadata["root_attrs"]["info"] == {"beamline": "34-ID-C"}
        assert s.has_truth
        assert s.truth_attrs == {"scenario": "growth", "params": {"rate": 0.1}, "seed": 5}
        np.testing.assert_array_equal(s.times, times)
        for t in range(T):
            fr = s[t]
            assert isinstance(fr, Frame) and fr.index == t and fr.time == times[t]
            assert fr.intensity.dtype == np.float32 and fr.mask.dtype == np.bool_
            np.testing.assert_array_equal(fr.mask, excluded)
            np.testing.assert_array_equal(fr.intensity[~excluded], intensities[t][~excluded])
            assert np.all(fr.intensity[excluded] == 0)
            tr = s.truth(t)
            assert tr.dtype == np.complex64 and tr.shape == (n, n, n)
            np.testing.assert_array_equal(tr, truths[t])


def test_stacked_file_has_documented_layout_in_plain_h5py(tmp_path, rng):
    intensities, truths = _series(rng)
    mask = np.zeros((N, N, N), bool)
    mask[2] = True
    path = tmp_path / "plain.cxi"
    write_series(path, intensities, mask=mask, times=[0, 1, 2], truths=truths)
    with h5py.File(path, "r") as f:
        assert int(f["cxi_version"][()]) == 160
        data = f["entry_1/data_1/data"]
        assert data.shape == (T, N, N, N) and data.dtype == np.float32
        assert data.chunks == (1, N, N, N) and data.maxshape == (None, N, N, N)
        np.testing.assert_array_equal(data[...], intensities)
        m = f["entry_1/instrument_1/detector_1/mask"]
        assert m.dtype == np.uint32 and m.shape == (N, N, N)
        np.testing.assert_array_equal(m[...], mask.astype(np.uint32) * 0x1)
        np.testing.assert_array_equal(f["entry_1/data_1/time"][...], [0.0, 1.0, 2.0])
        assert f["entry_1/truth/density"].shape == (T, n, n, n)
        assert f["entry_1/truth/density"].dtype == np.complex64
        assert f["entry_1"].attrs["NX_class"] == "NXentry"
        assert f["entry_1/program_name"][()].decode().startswith("latenttune")
        assert "axes" not in f["entry_1/data_1"].attrs


def test_entries_round_trip_per_frame_masks(tmp_path, rng):
    intensities, truths = _series(rng)
    masks = rng.random((T, N, N, N)) < 0.1
    times = [10.0, 11.0, 12.5]
    path = tmp_path / "entries.cxi"
    write_series(path, intensities, mask=masks, times=times, truths=truths, layout="entries")
    with h5py.File(path, "r") as f:
        for t in range(T):
            assert f[f"entry_{t + 1}/data_1/data"].shape == (N, N, N)
            m = f[f"entry_{t + 1}/instrument_1/detector_1/mask"]
            assert m.dtype == np.uint32
            np.testing.assert_array_equal(m[...], masks[t].astype(np.uint32))
    with open_series(path) as s:
        assert s.metadata["layout"] == "entries" and len(s) == T
        np.testing.assert_array_equal(s.times, times)
        for t, fr in enumerate(s):
            assert fr.index == t
            np.testing.assert_array_equal(fr.mask, masks[t])
            np.testing.assert_array_equal(fr.intensity[~masks[t]], intensities[t][~masks[t]])
            np.testing.assert_array_equal(s.truth(t), truths[t])


def test_stacked_per_frame_mask_and_default_time(tmp_path, rng):
    intensities, _ = _series(rng)
    masks = np.zeros((T, N, N, N), dtype=np.int16)
    masks[1, 3, 3, 3] = 0x200
    masks[2, :, :, 0] = 0x2
    path = tmp_path / "pf.cxi"
    write_series(path, intensities, mask=masks)
    with open_series(path) as s:
        assert s.metadata["time_from_index"] is True
        assert "frame index" in s.metadata["time_source"]
        np.testing.assert_array_equal(s.times, [0.0, 1.0, 2.0])
        assert not s.has_truth
        for t in range(T):
            np.testing.assert_array_equal(s[t].mask, masks[t] != 0)
        with pytest.raises(LookupError, match="no ground truth"):
            s.truth(0)


@pytest.mark.parametrize("mask_dtype", [np.bool_, np.uint8, np.int32, np.uint16, np.int64])
def test_any_integer_mask_dtype_nonzero_is_excluded(tmp_path, rng, mask_dtype):
    path = tmp_path / "m.h5"
    raw = rng.integers(0, 3, size=(N, N, N)).astype(mask_dtype)
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = rng.random((2, N, N, N)).astype(np.float64)
        f["entry_1/instrument_1/detector_1/mask"] = raw
    with open_series(path) as s:
        np.testing.assert_array_equal(s[1].mask, raw != 0)


def test_entry_ordering_is_numeric_with_many_entries(tmp_path):
    path = tmp_path / "many.cxi"
    count = 12
    order = [7, 12, 1, 10, 2, 11, 3, 9, 4, 8, 5, 6]  # created out of order
    with h5py.File(path, "w") as f:
        for k in order:
            f[f"entry_{k}/data_1/data"] = np.full((N, N, N), float(k), np.float32)
            f[f"entry_{k}/data_1/time"] = 100.0 + k
    with open_series(path) as s:
        assert len(s) == count
        assert s.metadata["entries"] == [f"entry_{k}" for k in range(1, count + 1)]
        values = [float(fr.intensity[0, 0, 0]) for fr in s]
        assert values == [float(k) for k in range(1, count + 1)]
        np.testing.assert_array_equal(s.times, 100.0 + np.arange(1, count + 1))
        assert s[9].intensity[0, 0, 0] == 10.0  # entry_10 comes after entry_9


def test_entries_mask_rules_own_mask_overrides_entry_1(tmp_path, rng):
    path = tmp_path / "own.cxi"
    const = np.zeros((N, N, N), np.uint32)
    const[0] = 0x1
    own = np.zeros((N, N, N), np.uint8)
    own[:, :, 5] = 1
    with h5py.File(path, "w") as f:
        for k in (1, 2, 3):
            f[f"entry_{k}/data_1/data"] = rng.random((N, N, N))
        f["entry_1/instrument_1/detector_1/mask"] = const
        f["entry_3/instrument_1/detector_1/mask"] = own
    with open_series(path) as s:
        np.testing.assert_array_equal(s[0].mask, const != 0)
        np.testing.assert_array_equal(s[1].mask, const != 0)
        np.testing.assert_array_equal(s[2].mask, own != 0)


def test_entries_with_stacked_mask_in_entry_1(tmp_path, rng):
    path = tmp_path / "stackmask.cxi"
    masks = rng.random((2, N, N, N)) < 0.2
    with h5py.File(path, "w") as f:
        for k in (1, 2):
            f[f"entry_{k}/data_1/data"] = rng.random((N, N, N)).astype(np.float32)
        f["entry_1/instrument_1/detector_1/mask"] = masks.astype(np.uint32)
        f["entry_1/data_1/time"] = np.array([0.5, 0.75])
    with open_series(path) as s:
        np.testing.assert_array_equal(s.times, [0.5, 0.75])
        for t in range(2):
            np.testing.assert_array_equal(s[t].mask, masks[t])


# ---------------------------------------------------------------------------
# Series behaviour
# ---------------------------------------------------------------------------
def test_indexing_iteration_and_close(tmp_path, rng):
    intensities, _ = _series(rng)
    path = tmp_path / "idx.cxi"
    write_series(path, intensities)
    s = open_series(path)
    assert s[-1].index == T - 1 and s[-T].index == 0
    np.testing.assert_array_equal(s[-1].intensity, intensities[-1])
    assert [fr.index for fr in s] == list(range(T))
    with pytest.raises(IndexError, match=r"frame index 3 is out of range for a series of 3"):
        s[T]
    with pytest.raises(IndexError, match="out of range"):
        s[-T - 1]
    with pytest.raises(TypeError, match="integer"):
        s[1.5]  # type: ignore[index]
    assert s[np.int64(1)].index == 1
    s.close()
    assert s.closed
    with pytest.raises(ValueError, match="closed"):
        s[0]
    # context manager closes, file is opened read-only
    with open_series(path) as s2:
        assert s2._f.mode == "r"
    assert s2.closed


def test_frames_are_read_lazily_and_values_are_not_judged(tmp_path, rng):
    """Opening reads no frame; reading checks structure only, so a negative voxel reaches the
    frame policy (which skips the frame) instead of failing the read (issue 14, item 4)."""
    intensities, _ = _series(rng)
    intensities[2, 1, 1, 1] = -5.0
    path = tmp_path / "lazy.h5"
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = intensities
    with open_series(path) as s:
        assert frame_problem(s[1].intensity, s[1].mask) is None
        frame = s[2]
    assert frame.intensity[1, 1, 1] == -5.0
    assert frame_problem(frame.intensity, frame.mask) == "negative intensity"


# ---------------------------------------------------------------------------
# validation errors: file name, dataset path and rule in the message
# ---------------------------------------------------------------------------
def _make(path, build):
    with h5py.File(path, "w") as f:
        build(f)


def _data(f, shape=(2, N, N, N), dtype=np.float32, name="entry_1/data_1/data"):
    f[name] = np.ones(shape, dtype=dtype)


CASES = {
    "missing_data": (lambda f: f.create_group("entry_1/data_1"), "entry_1/data_1/data", "missing data"),
    "wrong_ndim": (lambda f: _data(f, shape=(N, N)), "entry_1/data_1/data", "wrong ndim"),
    "non_cubic": (lambda f: _data(f, shape=(2, N, N, 6)), "entry_1/data_1/data", "cubic"),
    "odd_N": (lambda f: _data(f, shape=(2, 9, 9, 9)), "entry_1/data_1/data", "must be even"),
    "complex_dtype": (
        lambda f: _data(f, dtype=np.complex64), "entry_1/data_1/data", "real integer or floating",
    ),
    "empty_series": (lambda f: _data(f, shape=(0, N, N, N)), "entry_1/data_1/data", "at least one frame"),
    "mask_shape": (
        lambda f: (_data(f), f.create_dataset("entry_1/instrument_1/detector_1/mask", data=np.zeros((4, 4, 4), np.uint32))),
        "entry_1/instrument_1/detector_1/mask",
        "mask shape mismatch",
    ),
    "mask_dtype": (
        lambda f: (_data(f), f.create_dataset("entry_1/instrument_1/detector_1/mask", data=np.zeros((N, N, N), np.float32))),
        "entry_1/instrument_1/detector_1/mask",
        "integer or boolean",
    ),
    "time_length": (
        lambda f: (_data(f), f.create_dataset("entry_1/data_1/time", data=np.arange(3.0))),
        "entry_1/data_1/time",
        "time length mismatch",
    ),
    "time_nonfinite": (
        lambda f: (_data(f), f.create_dataset("entry_1/data_1/time", data=np.array([0.0, np.nan]))),
        "entry_1/data_1/time",
        "finite",
    ),
    "truth_shape": (
        lambda f: (_data(f), f.create_dataset("entry_1/truth/density", data=np.zeros((2, N, N, N), np.complex64))),
        "entry_1/truth/density",
        "n = N/2 = 4",
    ),
    "truth_length": (
        lambda f: (_data(f), f.create_dataset("entry_1/truth/density", data=np.zeros((3, n, n, n), np.complex64))),
        "entry_1/truth/density",
        "truth length mismatch",
    ),
    "entries_missing_data": (
        lambda f: (_data(f, shape=(N, N, N)), f.create_group("entry_2/data_1")),
        "entry_2/data_1/data",
        "missing data",
    ),
    "entries_grid_mismatch": (
        lambda f: (_data(f, shape=(N, N, N)), _data(f, shape=(6, 6, 6), name="entry_2/data_1/data")),
        "entry_2/data_1/data",
        "must match entry_1",
    ),
    "entries_mask_shape": (
        lambda f: (
            _data(f, shape=(N, N, N)),
            _data(f, shape=(N, N, N), name="entry_2/data_1/data"),
            f.create_dataset("entry_2/instrument_1/detector_1/mask", data=np.zeros((2, N, N, N), np.uint8)),
        ),
        "entry_2/instrument_1/detector_1/mask",
        "mask shape mismatch",
    ),
    "entries_truth_shape": (
        lambda f: (
            _data(f, shape=(N, N, N)),
            f.create_dataset("entry_1/truth/density", data=np.zeros((N, N, N), np.complex64)),
        ),
        "entry_1/truth/density",
        "truth shape must be (n, n, n)",
    ),
    "entries_time_missing": (
        lambda f: (
            _data(f, shape=(N, N, N)),
            _data(f, shape=(N, N, N), name="entry_2/data_1/data"),
            f.create_dataset("entry_1/data_1/time", data=1.0),
        ),
        "entry_2/data_1/time",
        "every entry or in none",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_open_validation_errors_name_file_dataset_rule(tmp_path, case):
    build, dataset, rule = CASES[case]
    path = tmp_path / f"bad_{case}.cxi"
    _make(path, build)
    with pytest.raises(SeriesFormatError) as info:
        open_series(path)
    msg = str(info.value)
    assert path.name in msg and f"'{dataset}'" in msg and rule in msg, msg
    assert isinstance(info.value, ValueError)
    assert info.value.dataset == dataset


@pytest.mark.parametrize(
    ("value", "reason"), [(-1.0, "negative intensity"), (np.nan, "non-finite intensity"),
                          (np.inf, "non-finite intensity")]
)
@pytest.mark.parametrize("layout", ["stacked", "entries"])
def test_bad_frame_values_are_read_and_left_to_the_frame_policy(tmp_path, layout, value, reason):
    """Readers check structure only: a NaN/inf/negative voxel is read as it is and the frame
    policy names it (issue 14, item 4; before, the reader raised and the replay ended)."""
    data = np.ones((3, N, N, N), np.float32)
    data[1, 2, 3, 4] = value
    path = tmp_path / f"bad_{layout}.cxi"
    with h5py.File(path, "w") as f:
        if layout == "stacked":
            f["entry_1/data_1/data"] = data
        else:
            for t in range(3):
                f[f"entry_{t + 1}/data_1/data"] = data[t]
    with open_series(path) as s:
        good, bad = s[0], s[1]
    assert frame_problem(good.intensity, good.mask) is None
    np.testing.assert_array_equal(bad.intensity, data[1])
    assert frame_problem(bad.intensity, bad.mask) == reason


def test_bad_values_at_masked_voxels_are_allowed_and_zeroed(tmp_path):
    data = np.ones((1, N, N, N), np.float32)
    data[0, 0, 0, 0] = -1.0  # detector gap flagged with -1
    data[0, 0, 0, 1] = np.nan
    mask = np.zeros((N, N, N), np.uint32)
    mask[0, 0, :2] = 0x200
    path = tmp_path / "gap.cxi"
    with h5py.File(path, "w") as f:
        f["entry_1/data_1/data"] = data
        f["entry_1/instrument_1/detector_1/mask"] = mask
    with open_series(path) as s:
        fr = s[0]
    assert np.all(np.isfinite(fr.intensity)) and fr.intensity.min() == 0.0
    assert fr.intensity[0, 0, 0] == 0.0 and fr.intensity[0, 0, 1] == 0.0


def test_integer_intensities_are_accepted(tmp_path, rng):
    counts = rng.integers(0, 1000, size=(2, N, N, N)).astype(np.uint32)
    path = tmp_path / "counts.cxi"
    write_series(path, counts, dtype="uint32")
    with h5py.File(path, "r") as f:
        assert f["entry_1/data_1/data"].dtype == np.uint32
    with open_series(path) as s:
        np.testing.assert_array_equal(s[1].intensity, counts[1].astype(np.float32))


# ---------------------------------------------------------------------------
# writer behaviour
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["stacked", "entries"])
def test_writer_renames_atomically_only_on_close(tmp_path, rng, layout):
    intensities, _ = _series(rng)
    path = tmp_path / "w.cxi"
    partial = tmp_path / "w.cxi.partial"
    w = CXISeriesWriter(path, N, layout=layout)
    for t in range(T):
        w.append(intensities[t], time=float(t))
        assert not path.exists() and partial.exists()
        with open_series(partial) as s:  # flushed, readable while writing
            assert len(s) == t + 1
    w.close()
    assert path.exists() and not partial.exists()
    with open_series(path) as s:
        assert len(s) == T


def test_writer_creates_missing_folders(tmp_path, rng):
    intensities, _ = _series(rng)
    path = tmp_path / "new" / "series" / "w.cxi"
    w = CXISeriesWriter(path, N)
    w.append(intensities[0], time=0.0)
    w.close()
    with open_series(path) as s:
        assert len(s) == 1


@pytest.mark.parametrize("layout", ["stacked", "entries"])
def test_writer_exception_leaves_readable_partial(tmp_path, rng, layout):
    intensities, truths = _series(rng)
    path = tmp_path / "crash.cxi"
    with pytest.raises(RuntimeError, match="boom"):
        with CXISeriesWriter(path, N, layout=layout, truth=True) as w:
            w.append(intensities[0], time=0.0, truth=truths[0])
            w.append(intensities[1], time=1.0, truth=truths[1])
            raise RuntimeError("boom")
    assert not path.exists()
    with open_series(str(path) + ".partial") as s:
        assert len(s) == 2
        np.testing.assert_array_equal(s[1].intensity, intensities[1])
        np.testing.assert_array_equal(s.truth(1), truths[1])


def test_writer_rejected_append_leaves_file_consistent(tmp_path, rng):
    intensities, truths = _series(rng)
    path = tmp_path / "rej.cxi"
    with CXISeriesWriter(path, N, truth=True) as w:
        w.append(intensities[0], time=0.0, truth=truths[0])
        with pytest.raises(ValueError, match="`truth` must have shape"):
            w.append(intensities[1], time=1.0, truth=truths[1][:2])
        with pytest.raises(ValueError, match="`intensity` .*non-negative"):
            w.append(-intensities[1], time=1.0, truth=truths[1])
        with pytest.raises(ValueError, match="`time` must be given for every frame"):
            w.append(intensities[1], truth=truths[1])
        w.append(intensities[1], time=1.0, truth=truths[1])
        assert w.num_frames == 2
    with open_series(path) as s:
        assert len(s) == 2
        np.testing.assert_array_equal(s.times, [0.0, 1.0])


def test_writer_argument_errors(tmp_path, rng):
    path = tmp_path / "args.cxi"
    with pytest.raises(ValueError, match="`N` must be an even"):
        CXISeriesWriter(path, 7)
    with pytest.raises(ValueError, match="`layout`"):
        CXISeriesWriter(path, N, layout="bogus")
    mask = np.zeros((N, N, N), bool)
    with CXISeriesWriter(path, N, mask=mask) as w:
        with pytest.raises(ValueError, match=r"`intensity` must be a 3-D array of shape \(8, 8, 8\)"):
            w.append(np.ones((N, N)))
        with pytest.raises(ValueError, match="constant mask"):
            w.append(np.ones((N, N, N)), mask=mask)
        with pytest.raises(ValueError, match="truth=False"):
            w.append(np.ones((N, N, N)), truth=np.ones((n, n, n)))
        w.append(np.ones((N, N, N)))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        CXISeriesWriter(path, N)
    with CXISeriesWriter(path, N, overwrite=True) as w:
        w.append(2 * np.ones((N, N, N)))
    with open_series(path) as s:
        assert s[0].intensity[0, 0, 0] == 2.0


@pytest.mark.parametrize("layout", ["stacked", "entries"])
def test_writer_per_frame_mask_given_for_some_frames(tmp_path, rng, layout):
    """A frame without a mask excludes nothing, before or after frames with one."""
    intensities, _ = _series(rng, T=4)
    m = np.zeros((N, N, N), bool)
    m[1] = True
    path = tmp_path / "some.cxi"
    with CXISeriesWriter(path, N, layout=layout) as w:
        w.append(intensities[0])
        w.append(intensities[1], mask=m)
        w.append(intensities[2])
        w.append(intensities[3], mask=m)
    with open_series(path) as s:
        assert [int(fr.mask.sum()) for fr in s] == [0, N * N, 0, N * N]
    # first frame with a mask (entry_1 holds it) must not leak into later entries
    path2 = tmp_path / "first.cxi"
    with CXISeriesWriter(path2, N, layout=layout) as w:
        w.append(intensities[0], mask=m)
        w.append(intensities[1])
    with open_series(path2) as s:
        assert [int(fr.mask.sum()) for fr in s] == [N * N, 0]


def test_write_series_argument_errors(tmp_path, rng):
    intensities, truths = _series(rng)
    with pytest.raises(ValueError, match="`times` must have length T = 3"):
        write_series(tmp_path / "a.cxi", intensities, times=[0.0, 1.0])
    with pytest.raises(ValueError, match="`mask` must have shape"):
        write_series(tmp_path / "b.cxi", intensities, mask=np.zeros((2, N, N, N), bool))
    with pytest.raises(ValueError, match="`intensities` must be 4-D"):
        write_series(tmp_path / "c.cxi", intensities[0])
