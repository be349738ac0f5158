"""CXI-style HDF5 diffraction time series: the reader, :class:`CXISeries`.

The writers live in :mod:`latenttune.io.cxi_writer`.

Two layouts are read and written (docs/conventions.md section 6, cxidb spec 1.6):

``stacked``
    ``entry_1/data_1/data`` (T, N, N, N); optional ``entry_1/data_1/time`` (T,)
    in seconds; mask ``entry_1/instrument_1/detector_1/mask`` (N, N, N) or
    (T, N, N, N); ground truth ``entry_1/truth/density`` (T, n, n, n) complex.
``entries``
    one entry per frame: ``entry_1/data_1/data``, ``entry_2/data_1/data``, ...
    each (N, N, N), ordered numerically (``entry_10`` after ``entry_9``). Time
    is either ``entry_1/data_1/time`` (T,) or a scalar ``entry_t/data_1/time``
    in every entry (what the writer writes). A frame's mask is its
    own ``entry_t/instrument_1/detector_1/mask`` (N, N, N) when present, else
    the mask of ``entry_1`` ((N, N, N) constant or (T, N, N, N) per frame).
    Ground truth ``entry_t/truth/density`` (n, n, n).

Masks may have any integer or boolean dtype; nonzero = excluded (CXI bits
0x1 invalid, 0x2 saturated, 0x200 gap, ...). The attributes of the ``truth``
group of ``entry_1`` (scenario name, parameters, seed) are exposed as
:attr:`CXISeries.truth_attrs`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latenttune.io._attrs import read_attrs
from latenttune.io._checks import (
    check_frame_count,
    check_grid,
    check_mask_dtype,
    check_value_dtype,
    frame_to_float32,
    mask_to_bool,
)
from latenttune.io.errors import SeriesFormatError
from latenttune.io.series import Series

__all__ = ["CXISeries", "CXI_VERSION", "MASK_INVALID", "LAYOUTS"]

logger = logging.getLogger(__name__)

CXI_VERSION = 160
"""Value of the root ``cxi_version`` dataset written by the CXI writer."""
MASK_INVALID = 0x1
"""CXI pixel-mask bit written for excluded voxels given as a boolean mask."""

DATA = "data_1/data"
TIME = "data_1/time"
MASK = "instrument_1/detector_1/mask"
TRUTH_GROUP = "truth"
TRUTH = "truth/density"
_ENTRY_RE = re.compile(r"^entry_(\d+)$")
LAYOUTS = ("stacked", "entries")


def _dataset(f: h5py.File, name: str) -> h5py.Dataset | None:
    obj = f.get(name)
    return obj if isinstance(obj, h5py.Dataset) else None


def _read_scalar_text(f: h5py.File, name: str) -> Any:
    obj = f.get(name)
    if isinstance(obj, h5py.Dataset) and obj.shape == ():
        value = obj[()]
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else (
            value.item() if isinstance(value, np.generic) else value
        )
    return None


class CXISeries(Series):
    """A CXI-style HDF5 series, opened read-only with frames read on access.

    Use :func:`latenttune.io.open_series` rather than this class directly.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise SeriesFormatError(path, "<file>", f"cannot be opened as HDF5 ({exc})") from exc
        self._f = f
        try:
            N, times, has_truth, metadata = self._setup(path)
        except BaseException:
            f.close()
            raise
        super().__init__(path, N, times, has_truth, metadata)

    # -- opening ----------------------------------------------------------------
    def _err(self, dataset: str, rule: str, frame: int | None = None) -> SeriesFormatError:
        return SeriesFormatError(self._file, dataset, rule, frame=frame)

    def _setup(self, path: Path) -> tuple[int, np.ndarray, bool, dict[str, Any]]:
        f = self._f
        self._file = path
        first = f"entry_1/{DATA}"
        ds = _dataset(f, first)
        if ds is None:
            raise self._err(
                first,
                "missing data: a CXI series needs 'entry_1/data_1/data' of shape "
                "(T, N, N, N), or one 'entry_<t>/data_1/data' of shape (N, N, N) per frame",
            )
        metadata: dict[str, Any] = {
            "format": "cxi",
            "cxi_version": _read_scalar_text(f, "cxi_version") or f.attrs.get("cxi_version"),
            "root_attrs": read_attrs(f),
            "entry_attrs": read_attrs(f["entry_1"]),
            "program_name": _read_scalar_text(f, "entry_1/program_name"),
            "start_time": _read_scalar_text(f, "entry_1/start_time"),
        }
        if isinstance(metadata["cxi_version"], np.generic):
            metadata["cxi_version"] = metadata["cxi_version"].item()
        if ds.ndim == 4:
            N, times, has_truth = self._setup_stacked(ds, metadata)
        elif ds.ndim == 3:
            N, times, has_truth = self._setup_entries(metadata)
        else:
            raise self._err(
                first,
                "wrong ndim: data must be 4-D (T, N, N, N) for the stacked layout or 3-D "
                f"(N, N, N) for one entry per frame, got shape {ds.shape}",
            )
        tg = f.get(f"entry_1/{TRUTH_GROUP}")
        self._truth_attrs = read_attrs(tg) if isinstance(tg, h5py.Group) else {}
        metadata["truth_attrs"] = self._truth_attrs
        metadata["num_frames"] = int(times.shape[0])
        metadata["N"] = N
        return N, times, has_truth, metadata

    def _check_time_values(self, name: str, values: np.ndarray) -> np.ndarray:
        check_value_dtype(values.dtype, self._file, name, "time")
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise self._err(name, "time stamps must be finite seconds")
        return values

    def _setup_stacked(
        self, ds: h5py.Dataset, metadata: dict[str, Any]
    ) -> tuple[int, np.ndarray, bool]:
        f = self._f
        name = f"entry_1/{DATA}"
        check_value_dtype(ds.dtype, self._file, name, "intensity")
        N = check_grid(ds.shape, self._file, name)
        T = check_frame_count(ds.shape[0], self._file, name)
        if T == 0:
            raise self._err(name, "the series must hold at least one frame, got T = 0")
        self._layout = "stacked"
        self._data = ds
        metadata.update(layout="stacked", dtype=str(ds.dtype))
        for key in f.keys():
            m = _ENTRY_RE.match(key)
            if m and key != "entry_1" and _dataset(f, f"{key}/{DATA}") is not None:
                logger.warning(
                    "%s: stacked layout in entry_1; ignoring data in %s", self._file, key
                )
        # mask
        self._mask_const: np.ndarray | None = None
        self._mask_ds: h5py.Dataset | None = None
        mname = f"entry_1/{MASK}"
        mds = _dataset(f, mname)
        if mds is not None:
            check_mask_dtype(mds.dtype, self._file, mname)
            if mds.shape == (N, N, N):
                self._mask_const = mask_to_bool(mds[()])
                metadata["mask_source"] = f"{mname} (constant)"
            elif mds.shape == (T, N, N, N):
                self._mask_ds = mds
                metadata["mask_source"] = f"{mname} (per frame)"
            else:
                raise self._err(
                    mname,
                    f"mask shape mismatch: must be (N, N, N) = {(N,) * 3} or (T, N, N, N) = "
                    f"{(T,) + (N,) * 3}, got {mds.shape}",
                )
        else:
            metadata["mask_source"] = None
        # time
        tname = f"entry_1/{TIME}"
        tds = _dataset(f, tname)
        if tds is not None:
            if tds.shape != (T,):
                raise self._err(
                    tname, f"time length mismatch: must have shape (T,) = ({T},), got {tds.shape}"
                )
            times = self._check_time_values(tname, tds[()])
            metadata["time_source"] = tname
            metadata["time_from_index"] = False
        else:
            times = np.arange(T, dtype=np.float64)
            metadata["time_source"] = "frame index (no time dataset; time = frame index in seconds)"
            metadata["time_from_index"] = True
        # truth
        self._truth_ds: h5py.Dataset | None = None
        trname = f"entry_1/{TRUTH}"
        trds = _dataset(f, trname)
        if trds is not None:
            n = N // 2
            if trds.ndim != 4 or trds.shape[1:] != (n, n, n):
                raise self._err(
                    trname,
                    f"truth shape must be (T, n, n, n) with n = N/2 = {n}, i.e. "
                    f"{(T, n, n, n)}, got {trds.shape}",
                )
            if trds.shape[0] != T:
                raise self._err(
                    trname,
                    f"truth length mismatch: must hold T = {T} frames, got {trds.shape[0]}",
                )
            self._check_truth_dtype(trname, trds.dtype)
            self._truth_ds = trds
        return N, times, trds is not None

    def _check_truth_dtype(self, name: str, dtype: np.dtype) -> None:
        if np.dtype(dtype).kind not in "iufc":
            raise self._err(name, f"truth must have a numeric (complex) dtype, got {dtype}")

    def _setup_entries(self, metadata: dict[str, Any]) -> tuple[int, np.ndarray, bool]:
        f = self._f
        numbered = sorted(
            (int(m.group(1)), key)
            for key in f.keys()
            if (m := _ENTRY_RE.match(key)) and isinstance(f[key], h5py.Group)
        )
        names = [key for _, key in numbered]
        nums = [num for num, _ in numbered]
        if nums != list(range(1, len(nums) + 1)):
            logger.warning("%s: entry numbers are not consecutive: %s", self._file, names)
        self._layout = "entries"
        self._entries = names
        T = len(names)
        N: int | None = None
        dtypes = set()
        for t, key in enumerate(names):
            name = f"{key}/{DATA}"
            ds = _dataset(f, name)
            if ds is None:
                raise self._err(
                    name,
                    f"missing data: every entry of the one-entry-per-frame layout needs "
                    f"'data_1/data' (N, N, N); {key} has none",
                )
            if ds.ndim != 3:
                raise self._err(
                    name, f"wrong ndim: per-entry data must be 3-D (N, N, N), got shape {ds.shape}"
                )
            check_value_dtype(ds.dtype, self._file, name, "intensity")
            Nt = check_grid(ds.shape, self._file, name)
            if N is None:
                N = Nt
            elif Nt != N:
                raise self._err(
                    name, f"grid size must match entry_1 ({(N,) * 3}), got {ds.shape}"
                )
            dtypes.add(str(ds.dtype))
        assert N is not None  # entry_1 exists (checked by the caller)
        metadata.update(layout="entries", entries=names, dtype=",".join(sorted(dtypes)))
        # masks: per frame, (dataset name, index into it or None)
        self._mask_src: list[tuple[str, int | None] | None] = [None] * T
        first_name = f"entry_1/{MASK}"
        first = _dataset(f, first_name)
        fallback: str | None = None  # "const" or "stack"
        if first is not None:
            check_mask_dtype(first.dtype, self._file, first_name)
            if first.shape == (N, N, N):
                fallback = "const"
            elif first.shape == (T, N, N, N):
                fallback = "stack"
            else:
                raise self._err(
                    first_name,
                    f"mask shape mismatch: must be (N, N, N) = {(N,) * 3} or (T, N, N, N) = "
                    f"{(T,) + (N,) * 3}, got {first.shape}",
                )
        sources = set()
        for t, key in enumerate(names):
            name = f"{key}/{MASK}"
            own = _dataset(f, name) if t > 0 else None
            if own is not None:
                check_mask_dtype(own.dtype, self._file, name)
                if own.shape != (N, N, N):
                    raise self._err(
                        name, f"mask shape mismatch: must be (N, N, N) = {(N,) * 3}, got {own.shape}"
                    )
                self._mask_src[t] = (name, None)
                sources.add("per entry")
            elif fallback == "const":
                self._mask_src[t] = (first_name, None)
                sources.add(f"{first_name} (constant)")
            elif fallback == "stack":
                self._mask_src[t] = (first_name, t)
                sources.add(f"{first_name} (per frame)")
        metadata["mask_source"] = ", ".join(sorted(sources)) if sources else None
        self._mask_cache: dict[str, np.ndarray] = {}
        # time
        tname = f"entry_1/{TIME}"
        tds = _dataset(f, tname)
        if tds is not None and T > 1 and tds.shape == (T,):
            times = self._check_time_values(tname, tds[()])
            metadata["time_source"] = tname
            metadata["time_from_index"] = False
        elif tds is not None and tds.shape not in ((), (1,)):
            raise self._err(
                tname,
                f"time length mismatch: must have shape (T,) = ({T},), or be a scalar per "
                f"entry, got {tds.shape}",
            )
        else:
            values = []
            present = [_dataset(f, f"{key}/{TIME}") for key in names]
            if any(p is not None for p in present):
                for key, p in zip(names, present):
                    name = f"{key}/{TIME}"
                    if p is None:
                        raise self._err(
                            name,
                            "missing time: per-entry time stamps must be present in every "
                            f"entry or in none ({key} has none)",
                        )
                    if p.shape not in ((), (1,)):
                        raise self._err(
                            name, f"per-entry time must be a scalar, got shape {p.shape}"
                        )
                    values.append(self._check_time_values(name, np.asarray(p[()])).reshape(()))
                times = np.array(values, dtype=np.float64)
                metadata["time_source"] = "entry_<t>/data_1/time (per entry)"
                metadata["time_from_index"] = False
            else:
                times = np.arange(T, dtype=np.float64)
                metadata["time_source"] = (
                    "frame index (no time dataset; time = frame index in seconds)"
                )
                metadata["time_from_index"] = True
        # truth
        n = N // 2
        have = [_dataset(f, f"{key}/{TRUTH}") for key in names]
        if any(h is not None for h in have):
            for key, h in zip(names, have):
                name = f"{key}/{TRUTH}"
                if h is None:
                    raise self._err(
                        name,
                        "missing truth: ground truth must be present in every entry or in "
                        f"none ({key} has none)",
                    )
                if h.shape != (n, n, n):
                    raise self._err(
                        name,
                        f"truth shape must be (n, n, n) with n = N/2 = {n}, got {h.shape}",
                    )
                self._check_truth_dtype(name, h.dtype)
            return N, times, True
        return N, times, False

    # -- reading ----------------------------------------------------------------
    @property
    def layout(self) -> str:
        """``"stacked"`` or ``"entries"``."""
        return self._layout

    def _read_mask(self, i: int) -> np.ndarray:
        N = self._N
        if self._layout == "stacked":
            if self._mask_const is not None:
                return self._mask_const.copy()
            if self._mask_ds is not None:
                return mask_to_bool(self._mask_ds[i])
            return np.zeros((N, N, N), dtype=bool)
        src = self._mask_src[i]
        if src is None:
            return np.zeros((N, N, N), dtype=bool)
        name, k = src
        if k is not None:
            return mask_to_bool(self._f[name][k])
        if name == f"entry_1/{MASK}":
            if name not in self._mask_cache:
                self._mask_cache[name] = mask_to_bool(self._f[name][()])
            return self._mask_cache[name].copy()
        return mask_to_bool(self._f[name][()])

    def _read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._layout == "stacked":
            name = f"entry_1/{DATA}"
            raw = self._data[i]
        else:
            name = f"{self._entries[i]}/{DATA}"
            raw = self._f[name][()]
        mask = self._read_mask(i)
        return frame_to_float32(raw, mask), mask  # structure only: values go to the frame policy

    def _read_truth(self, i: int) -> np.ndarray:
        if self._layout == "stacked":
            name = f"entry_1/{TRUTH}"
            assert self._truth_ds is not None
            raw = self._truth_ds[i]
        else:
            name = f"{self._entries[i]}/{TRUTH}"
            raw = self._f[name][()]
        out = np.asarray(raw).astype(np.complex64)
        if not np.isfinite(out).all():
            raise self._err(name, "truth density must be finite", frame=i)
        return out

    def _close(self) -> None:
        self._f.close()
