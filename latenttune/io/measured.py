"""Measured 3D intensities as users have them, before they are put on the model's grid.

:func:`open_measured` reads what ``latenttune prepare`` (:mod:`latenttune.prepare`) starts from:
volumes of any shape, in their own axis order, with the Bragg peak anywhere. Each input is one of

* a ``.npy`` array or a ``.tif``/``.tiff`` stack: (Z, Y, X) is one volume, (T, Z, Y, X) a time series;
* a ``.npz`` archive (bcdi / cdiutils preprocessed data, e.g. ``S1_pynx_input_data.npz``): the array
  ``data`` (or the only array), a ``mask`` array in the same archive or in the sibling mask file
  (``..._data.npz`` -> ``..._mask.npz``, ``..._pynx_...`` -> ``..._maskpynx_...``);
* a CXI file (PyNX, cdiutils, this project): ``entry_1/data_1/data`` (3-D, or 4-D for a series),
  or one ``entry_<t>/data_1/data`` per frame; mask ``entry_1/instrument_1/detector_1/mask``
  (the 2-D detector mask is applied to every detector frame of the volume), times
  ``entry_1/data_1/time``;
* any HDF5 dataset given as ``FILE:/path/to/dataset`` (3-D or 4-D);
* a cohere experiment folder: ``preprocessed_data/prep_data.tif`` (intensity), else
  ``phasing_data/data.tif`` or ``data/data.tif`` (amplitudes, squared here); read in cohere's axis
  order (its ``read_tif`` transposes the TIFF stack);
* a folder of time steps: volume files and/or cohere experiment folders (e.g. ``scan_54/``),
  ordered naturally by name, each one frame; a ``mask.npy`` / ``mask.tif`` in the folder applies to
  every frame.

Several inputs are frames in the order given. Values are intensities (photon counts) unless the
format stores amplitudes (cohere's ``data.tif``) or ``amplitude=True``. A user mask (``mask=``:
any single-volume input above, 3-D like the data or 2-D like the detector frames) is nonzero where
voxels were not measured. Readers check structure (dimensions, dtypes, shapes agree); values
(NaN, negative, hot pixels) are judged by :mod:`latenttune.prepare`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import tifffile

from latenttune.io._checks import check_frame_count, scan_folder
from latenttune.io.cohere import natural_key
from latenttune.io.errors import SeriesFormatError
from latenttune.io.series import HDF5_SUFFIXES
from latenttune.limits import check_voxels
from latenttune.outputs import check_input

__all__ = ["MeasuredVolume", "MeasuredSeries", "open_measured", "read_mask", "COHERE_FILES"]

logger = logging.getLogger(__name__)

#: Files of a cohere experiment folder, in order of preference: (path, holds amplitudes).
COHERE_FILES: tuple[tuple[str, bool], ...] = tuple(
    (f"{folder}/{name}.{suffix}", amplitude)
    for folder, name, amplitude in (("preprocessed_data", "prep_data", False), ("phasing_data", "data", True),
                                    ("data", "data", True))
    for suffix in ("tif", "tiff", "npy")
)
VOLUME_SUFFIXES = (".npy", ".npz", ".tif", ".tiff", *HDF5_SUFFIXES)
MASK_STEM = "mask"
_CXI_DATA = "entry_1/data_1/data"
_CXI_MASK = "instrument_1/detector_1/mask"
_CXI_TIME = "entry_1/data_1/time"


@dataclass(frozen=True, eq=False)
class MeasuredVolume:
    """One measured 3D intensity, as read.

    Attributes
    ----------
    intensity : ndarray, float32 or float64, 3-D
        Photon counts in the file's axis order; may hold NaN or negative values (not measured).
        float32 when the file's values fit it exactly (float32, float16 and 8- or 16-bit integer
        data, as detectors write), float64 otherwise.
    mask : ndarray of uint32 or None
        Same shape, nonzero = not measured (the file's mask, any bits kept), or None.
    time : float or None
        Time stamp in seconds when the file has one.
    source : str
        Where it came from (file, dataset, frame).
    """

    intensity: np.ndarray
    mask: np.ndarray | None
    time: float | None
    source: str


@dataclass(frozen=True)
class _Entry:
    """How to read one frame, without reading it yet."""

    shape: tuple[int, int, int]
    read: Callable[[], tuple[np.ndarray, np.ndarray | None]]
    time: float | None
    source: str


class MeasuredSeries:
    """Measured volumes read lazily, one per frame, all of one shape.

    Use :func:`open_measured`.

    Attributes
    ----------
    shape : tuple of int
        The volumes' shape (3-D).
    sources : list of str
        Where each frame comes from.
    files : list of Path
        The files and folders read (inputs and masks): what an output must never be.
    """

    def __init__(self, entries: Sequence[_Entry], user_mask: np.ndarray | None,
                 files: Sequence[Path] = ()) -> None:
        if not entries:
            raise ValueError("`inputs` hold no measured volume")
        first = entries[0]
        for entry in entries[1:]:
            if entry.shape != first.shape:
                raise ValueError(f"every frame must have the shape of the first, {first.shape} ({first.source}); "
                                 f"{entry.source} has {entry.shape}")
        self._entries = list(entries)
        self.shape = first.shape
        self._user_mask = None if user_mask is None else _mask_for(user_mask, self.shape, "`mask`")
        self.sources = [entry.source for entry in entries]
        self.files = list(files)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> MeasuredVolume:
        entry = self._entries[index]
        intensity, mask = entry.read()
        if intensity.shape != self.shape:
            raise ValueError(f"{entry.source}: shape changed since opening: {intensity.shape}, expected {self.shape}")
        if mask is not None:
            mask = _mask_for(mask, self.shape, entry.source)
        if self._user_mask is not None:
            mask = self._user_mask.copy() if mask is None else mask | self._user_mask
        return MeasuredVolume(intensity=intensity, mask=mask, time=entry.time, source=entry.source)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def times(self) -> list[float] | None:
        """Time stamps of every frame when all frames have one, else None."""
        times = [entry.time for entry in self._entries]
        return None if any(t is None for t in times) else [float(t) for t in times]


# -- masks ---------------------------------------------------------------------------------------


def _mask_for(mask: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``mask`` as uint32 CXI bits of ``shape``: 3-D as is, 2-D (detector frame) on every frame."""
    m = np.asarray(mask)
    if m.dtype.kind == "b":
        m = m.astype(np.uint32)
    elif m.dtype.kind in "iu":
        m = np.where(m != 0, np.maximum(m, 1), 0).astype(np.uint32) if m.size and m.min() < 0 else m.astype(np.uint32)
    elif m.dtype.kind == "f":
        m = (np.nan_to_num(m, nan=1.0) != 0).astype(np.uint32)
    else:
        raise TypeError(f"{what} must be a boolean, integer or float mask (nonzero = not measured), got {m.dtype}")
    if m.shape == tuple(shape):
        return m
    if m.ndim == 2 and m.shape == tuple(shape[1:]):
        return np.broadcast_to(m, shape).copy()
    raise ValueError(f"{what} must have the data's shape {tuple(shape)} (or {tuple(shape[1:])}, one detector frame), "
                     f"got {m.shape}")


def read_mask(spec: str | os.PathLike[str]) -> np.ndarray:
    """A user mask from any single-volume input (``.npy``, ``.tif``, ``.npz``, ``FILE:/dataset``).

    Returns the raw array (2-D or 3-D); nonzero = not measured. Its declared shape is bounded
    (:func:`latenttune.limits.check_voxels`) before it is read.
    """
    path, dataset = _split_dataset(spec)
    what = f"the mask {os.fspath(spec)!r}"
    if dataset is not None:
        check_voxels(what, _h5_shape(path, dataset), _MASK_BYTES_PER_VOXEL)
        return _read_h5(path, dataset, None)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            name = MASK_STEM if MASK_STEM in archive.files else _only(archive.files, path)
        check_voxels(what, _npz_shape(path, name), _MASK_BYTES_PER_VOXEL)
        with np.load(path, allow_pickle=False) as archive:
            return np.asarray(archive[name])
    if suffix in (".npy", ".tif", ".tiff"):
        check_voxels(what, _header(path), _MASK_BYTES_PER_VOXEL)
        return _read_array(path)
    raise SeriesFormatError(path, "<mask>", "a mask must be .npy, .tif, .npz or FILE.h5:/dataset")


#: Bytes per voxel a mask takes at least once read (as stored, then as uint32 CXI bits).
_MASK_BYTES_PER_VOXEL = 5


# -- single files ----------------------------------------------------------------------------------


def _split_dataset(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``FILE:/dataset`` -> (FILE, "/dataset"); an existing path -> (path, None).

    The file (or folder) is checked before anything opens it: a link loop, a dangling link, a FIFO
    or a device is refused in one line (:func:`latenttune.outputs.check_input`).
    """
    text = os.fspath(spec)
    if os.path.lexists(text):
        return check_input(text, "`input`", directory=True), None
    head, sep, tail = text.rpartition(":")
    if sep and head and os.path.lexists(head) and tail:
        return check_input(head, "`input`"), tail
    raise FileNotFoundError(f"`input` does not exist: {text!r} (an HDF5 dataset is given as FILE:/path/to/dataset)")


def _only(names: Sequence[str], path: Path) -> str:
    if "data" in names:
        return "data"
    if len(names) == 1:
        return names[0]
    raise SeriesFormatError(path, "<archive>", f"holds several arrays {sorted(names)} and none named 'data'")


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        return tifffile.imread(path)
    except (ValueError, OSError, tifffile.TiffFileError) as exc:
        raise SeriesFormatError(path, "<array>", f"cannot be read as an array ({exc})") from exc


def _header(path: Path) -> tuple[int, ...]:
    try:
        if path.suffix.lower() == ".npy":
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        with tifffile.TiffFile(path) as tf:
            return tuple(tf.series[0].shape)
    except (ValueError, OSError, tifffile.TiffFileError) as exc:
        raise SeriesFormatError(path, "<array>", f"cannot be read as an array ({exc})") from exc


def _exact_in_float32(dtype: np.dtype) -> bool:
    """True when every value of ``dtype`` is a float32 value (float32/16, 8- and 16-bit integers)."""
    return (dtype.kind == "f" and dtype.itemsize <= 4) or (dtype.kind in "iu" and dtype.itemsize <= 2)


def _values(raw: np.ndarray, where: str, amplitude: bool) -> np.ndarray:
    """Counts as float32 when that loses nothing (half the memory of float64), else float64."""
    a = np.asarray(raw)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{where}: intensities must be real numbers, got dtype {a.dtype}")
    with np.errstate(invalid="ignore", over="ignore"):
        if not amplitude and _exact_in_float32(a.dtype):
            return a.astype(np.float32)
        a = a.astype(np.float64)
        return a * np.abs(a) if amplitude else a  # a negative amplitude stays negative: not measured


def _volumes(shape: tuple[int, ...], where: str) -> int | None:
    """None for one 3-D volume, T for a (T, Z, Y, X) series; anything else is an error."""
    if len(shape) == 3:
        return None
    if len(shape) == 4:
        return check_frame_count(shape[0], where, "<array>")
    raise SeriesFormatError(where, "<array>", f"must be 3-D (one volume) or 4-D (T volumes), got shape {shape}")


def _array_entries(path: Path, amplitude: bool, transpose: bool = False) -> list[_Entry]:
    shape = _header(path)
    count = _volumes(shape, str(path))
    order = (lambda a: a.T) if transpose else (lambda a: a)

    def read(t: int | None) -> tuple[np.ndarray, None]:
        data = np.load(path, mmap_mode="r", allow_pickle=False) if path.suffix.lower() == ".npy" else _read_array(path)
        return _values(order(data if t is None else data[t]), str(path), amplitude), None

    volume = tuple(shape[-3:])[::-1] if transpose else tuple(shape[-3:])
    if count is None:
        return [_Entry(volume, lambda: read(None), None, str(path))]
    return [_Entry(volume, (lambda t=t: read(t)), None, f"{path}[{t}]") for t in range(count)]


def _sibling_mask(path: Path) -> Path | None:
    """The mask file bcdi / cdiutils write next to a preprocessed ``.npz``."""
    name = path.name
    for old, new in (("_data", "_mask"), ("_pynx_", "_maskpynx_"), ("data", "mask")):
        if old in name:
            candidate = path.with_name(name.replace(old, new, 1))
            if candidate != path and candidate.is_file():
                return candidate
    return None


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of array ``key`` of a ``.npz`` archive from its header (nothing decompressed)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SeriesFormatError(path, key, f"cannot be read as a .npz array ({exc})") from exc
    return tuple(int(s) for s in shape)


def _npz_entries(path: Path, amplitude: bool) -> list[_Entry]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            key = _only([n for n in names if n != MASK_STEM], path)
    except (ValueError, OSError) as exc:
        raise SeriesFormatError(path, "<archive>", f"cannot be read as a .npz archive ({exc})") from exc
    shape = _npz_shape(path, key)
    if _volumes(shape, str(path)) is not None:
        raise SeriesFormatError(path, key, f"a preprocessed .npz must hold one 3-D volume, got shape {shape}")
    sibling = None if MASK_STEM in names else _sibling_mask(path)

    def read() -> tuple[np.ndarray, np.ndarray | None]:
        with np.load(path, allow_pickle=False) as archive:
            data = _values(archive[key], f"{path}:{key}", amplitude)
            mask = np.asarray(archive[MASK_STEM]) if MASK_STEM in archive.files else None
        if sibling is not None:
            mask = read_mask(sibling)
        return data, mask

    if sibling is not None:
        logger.info("%s: using the mask in %s", path, sibling)
    return [_Entry(shape, read, None, f"{path}:{key}")]


def _read_h5(path: Path, dataset: str, index: int | None) -> np.ndarray:
    try:
        with h5py.File(path, "r") as f:
            obj = f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                raise SeriesFormatError(path, dataset, "no such dataset")
            return np.asarray(obj[()] if index is None else obj[index])
    except OSError as exc:
        raise SeriesFormatError(path, dataset, f"cannot be read ({exc})") from exc


def _h5_shape(path: Path, dataset: str) -> tuple[int, ...]:
    try:
        with h5py.File(path, "r") as f:
            obj = f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                found = []
                f.visititems(lambda name, o: found.append(f"/{name} {o.shape}")
                             if isinstance(o, h5py.Dataset) and o.ndim >= 3 else None)
                hint = f"; datasets with 3 or more dimensions: {', '.join(found[:8])}" if found else ""
                raise SeriesFormatError(path, dataset, f"no such dataset{hint}")
            return tuple(obj.shape)
    except OSError as exc:
        raise SeriesFormatError(path, dataset, f"cannot be opened as HDF5 ({exc})") from exc


def _dataset_entries(path: Path, dataset: str, amplitude: bool, mask: str | None = None,
                     times: np.ndarray | None = None) -> list[_Entry]:
    shape = _h5_shape(path, dataset)
    count = _volumes(shape, f"{path}:{dataset}")
    mask_shape = None if mask is None else _h5_shape(path, mask)

    def read(t: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        data = _values(_read_h5(path, dataset, t), f"{path}:{dataset}", amplitude)
        if mask is None:
            return data, None
        per_frame = t is not None and mask_shape is not None and len(mask_shape) == 4
        return data, _read_h5(path, mask, t if per_frame else None)

    def time(t: int) -> float | None:
        return None if times is None or t >= len(times) else float(times[t])

    if count is None:
        return [_Entry(tuple(shape), lambda: read(None), time(0), f"{path}:{dataset}")]
    return [_Entry(tuple(shape[1:]), (lambda t=t: read(t)), time(t), f"{path}:{dataset}[{t}]") for t in range(count)]


def _cxi_entries(path: Path, amplitude: bool) -> list[_Entry]:
    try:
        with h5py.File(path, "r") as f:
            names = sorted((k for k in f if k.startswith("entry_") and k[6:].isdigit()), key=lambda k: int(k[6:]))
            has = {name: isinstance(f.get(f"{name}/data_1/data"), h5py.Dataset) for name in names}
            mask = {name: isinstance(f.get(f"{name}/{_CXI_MASK}"), h5py.Dataset) for name in names}
            times = np.asarray(f[_CXI_TIME][()], dtype=np.float64).ravel() if isinstance(
                f.get(_CXI_TIME), h5py.Dataset) else None
            found = []
            if not has.get("entry_1"):
                f.visititems(lambda name, o: found.append(f"/{name} {o.shape}")
                             if isinstance(o, h5py.Dataset) and o.ndim >= 3 else None)
    except OSError as exc:
        raise SeriesFormatError(path, "<file>", f"cannot be opened as HDF5 ({exc})") from exc
    if not has.get("entry_1"):
        hint = f" (datasets with 3 or more dimensions: {', '.join(found[:8])})" if found else ""
        raise SeriesFormatError(path, _CXI_DATA, "not a CXI file; give the dataset as FILE:/path/to/dataset" + hint)
    first_mask = f"entry_1/{_CXI_MASK}" if mask.get("entry_1") else None
    entries = _dataset_entries(path, _CXI_DATA, amplitude, first_mask, times)
    for name in names[1:]:  # one entry per frame
        if has[name]:
            own = f"{name}/{_CXI_MASK}" if mask[name] else first_mask
            entries += _dataset_entries(path, f"{name}/data_1/data", amplitude, own)
    return entries


def _file_entries(path: Path, amplitude: bool) -> list[_Entry]:
    suffix = path.suffix.lower()
    if suffix in (".npy", ".tif", ".tiff"):
        return _array_entries(path, amplitude)
    if suffix == ".npz":
        return _npz_entries(path, amplitude)
    if suffix in HDF5_SUFFIXES or h5py.is_hdf5(path):
        return _cxi_entries(path, amplitude)
    raise SeriesFormatError(path, "<file>", f"unsupported input: expected .npy, .npz, .tif, a CXI/HDF5 file or a "
                            f"folder, got suffix {suffix or '(none)'!r}")


# -- folders -------------------------------------------------------------------------------------


def _cohere_file(folder: Path) -> tuple[Path, bool] | None:
    for relative, amplitude in COHERE_FILES:
        if os.path.lexists(folder / relative):  # a dangling link or a FIFO is refused, never passed over
            return check_input(folder / relative, "cohere data file"), amplitude
    return None


def _folder_entries(folder: Path, amplitude: bool) -> tuple[list[_Entry], np.ndarray | None]:
    cohere = _cohere_file(folder)
    if cohere is not None:  # one cohere experiment: one frame
        path, stored_amplitude = cohere
        return _array_entries(path, amplitude or stored_amplitude, transpose=path.suffix.lower() != ".npy"), None
    files, folders = scan_folder(folder, VOLUME_SUFFIXES)  # a dangling link or a FIFO is named, never skipped
    items = sorted(files + folders, key=lambda p: natural_key(p.name))
    masks = [p for p in files if p.stem.lower() == MASK_STEM]
    if len(masks) > 1:
        raise SeriesFormatError(folder, MASK_STEM, f"at most one mask file is allowed, found {[m.name for m in masks]}")
    entries: list[_Entry] = []
    for item in items:
        if item in masks:
            continue
        if item in folders and _cohere_file(item) is not None:
            found, _ = _folder_entries(item, amplitude)
        elif item in files:
            found = _file_entries(item, amplitude)
        else:
            continue
        if len(found) != 1:
            raise SeriesFormatError(item, "<array>", f"a time step in a folder must be one 3-D volume, found {len(found)}")
        entries += found
    if not entries:
        raise SeriesFormatError(folder, "<frames>", "no measured volume in the folder (.npy, .npz, .tif, .cxi/.h5 files "
                                "or cohere experiment folders with preprocessed_data/prep_data.tif)")
    return entries, None if not masks else read_mask(masks[0])


def open_measured(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    mask: str | os.PathLike[str] | np.ndarray | None = None,
    amplitude: bool = False,
) -> MeasuredSeries:
    """Open measured volumes (one or several inputs, each one frame or a series) for :mod:`latenttune.prepare`.

    Parameters
    ----------
    inputs : path or sequence of paths
        Files, ``FILE:/dataset`` paths or folders (see the module docstring); several inputs are
        frames in the order given.
    mask : path or ndarray, optional
        A user mask for every frame (3-D like the data, or 2-D like one detector frame; nonzero = not
        measured), e.g. ``mask.npy`` or ``file.h5:/entry/mask``.
    amplitude : bool
        The inputs hold amplitudes (square roots of intensities); they are squared.

    Returns
    -------
    MeasuredSeries

    Raises
    ------
    FileNotFoundError
        An input does not exist.
    SeriesFormatError
        An input breaks a layout rule (the message names the file, dataset and rule).
    ValueError
        The frames differ in shape, or the mask does not fit them.
    """
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not specs:
        raise ValueError("`inputs` must name at least one file or folder")
    entries: list[_Entry] = []
    folder_masks = []
    files: list[Path] = []
    for spec in specs:
        path, dataset = _split_dataset(spec)
        files.append(path)
        if dataset is not None:
            entries += _dataset_entries(path, dataset, amplitude)
        elif path.is_dir():
            found, folder_mask = _folder_entries(path, amplitude)
            entries += found
            if folder_mask is not None:
                folder_masks.append(folder_mask)
        else:
            entries += _file_entries(path, amplitude)
    user = None
    for given in [*folder_masks, *([] if mask is None else [mask])]:
        if isinstance(given, (str, os.PathLike)):
            files.append(_split_dataset(given)[0])
        raw = read_mask(given) if isinstance(given, (str, os.PathLike)) else np.asarray(given)
        shape = entries[0].shape if entries else raw.shape
        bits = _mask_for(raw, shape, "`mask`")
        user = bits if user is None else user | bits
    logger.info("opened %d measured volume(s) of shape %s", len(entries), entries[0].shape if entries else None)
    return MeasuredSeries(entries, user, files)

