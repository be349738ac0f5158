"""CXI-style HDF5 diffraction time series: writers (:class:`CXISeriesWriter`, :func:`write_series`).

Files follow the layouts read by :class:`latenttune.io.cxi.CXISeries` (see that
module for the layouts).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latenttune.io._attrs import write_attrs
from latenttune.io._checks import check_frame_values
from latenttune.io.cxi import (
    CXI_VERSION,
    DATA,
    LAYOUTS,
    MASK,
    MASK_INVALID,
    TIME,
    TRUTH,
    TRUTH_GROUP,
    _dataset,
)
from latenttune.io.errors import SeriesFormatError
from latenttune.io.partial import PartialFile
from latenttune.validation import check_choice, check_number, is_integer

__all__ = ["CXISeriesWriter", "write_series"]

logger = logging.getLogger(__name__)


def _program_name() -> str:
    from latenttune import __version__

    return f"latenttune {__version__}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _mask_to_cxi(mask: Any, N: int, name: str) -> np.ndarray:
    """Coerce a user mask (bool or integer, nonzero = excluded) to CXI uint32."""
    m = np.asarray(mask)
    if m.shape != (N, N, N):
        raise ValueError(f"`{name}` must have shape (N, N, N) = {(N,) * 3}, got {m.shape}")
    if m.dtype.kind == "b":
        return m.astype(np.uint32) * np.uint32(MASK_INVALID)
    if m.dtype.kind in "iu":
        if m.size and (m.min() < 0 or m.max() > 0xFFFFFFFF):
            return (m != 0).astype(np.uint32) * np.uint32(MASK_INVALID)
        return m.astype(np.uint32)  # keeps CXI bits
    raise TypeError(
        f"`{name}` must be a boolean or integer array (nonzero = excluded), got dtype {m.dtype}"
    )


class CXISeriesWriter(PartialFile):
    """Write a diffraction time series to a CXI-style HDF5 file, frame by frame.

    Frames go to ``path + ".partial"``, flushed after each :meth:`append`; a
    successful :meth:`close` (or leaving the ``with`` block normally) renames it
    atomically to ``path``. When the ``with`` block exits with an exception (or on
    :meth:`abort`), the datasets are trimmed to the frames completely written and the
    ``.partial`` file is left readable with :func:`~latenttune.io.open_series`;
    :meth:`discard` deletes it (:class:`latenttune.io.partial.PartialFile`).

    Parameters
    ----------
    path : str or os.PathLike
        Final file name (``.cxi`` or ``.h5``).
    N : int
        Diffraction grid size, even.
    layout : {"stacked", "entries"}
        ``entry_1/data_1/data`` (T, N, N, N), or one ``entry_t`` per frame.
    attrs : dict, optional
        Root attributes (dicts/lists are JSON-encoded).
    truth : bool
        Whether every frame carries a ground-truth density (n, n, n).
    overwrite : bool
        Replace an existing ``path``; otherwise an existing file is an error.
    mask : array_like, optional
        Constant mask (N, N, N), bool or integer (nonzero = excluded), written
        once to ``entry_1/instrument_1/detector_1/mask``. Per-frame masks are
        then not allowed.
    truth_attrs : dict, optional
        Attributes of the ``entry_1/truth`` group (scenario name, params, seed).
    dtype : str
        Storage dtype of the intensities (default float32; e.g. "uint32" for counts).
    compression : str, optional
        h5py compression filter for the frame data, e.g. "gzip".

    Notes
    -----
    Written following cxidb 1.6 where cheap: a root ``cxi_version`` dataset
    (160), ``entry_1/start_time`` and ``entry_1/program_name`` datasets, NeXus
    ``NX_class`` attributes, plain ``data_1/data`` without ``axes`` and a
    uint32 mask (bit 0x1 for voxels given as True; integer masks keep their bits).
    Per-frame time is ``entry_1/data_1/time`` (T,) in the stacked layout and a
    scalar ``entry_t/data_1/time`` in the entries layout.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        N: int,
        layout: str = "stacked",
        attrs: Mapping[str, Any] | None = None,
        truth: bool = False,
        overwrite: bool = False,
        *,
        mask: Any = None,
        truth_attrs: Mapping[str, Any] | None = None,
        dtype: str | np.dtype = "float32",
        compression: str | None = None,
    ) -> None:
        if not is_integer(N) or N < 2 or N % 2:
            raise ValueError(f"`N` must be an even integer >= 2 (N = 2n), got {N!r}")
        check_choice("layout", layout, LAYOUTS)
        self._dtype = np.dtype(dtype)
        if self._dtype.kind not in "iuf":
            raise ValueError(f"`dtype` must be a real integer or floating dtype, got {self._dtype}")
        super().__init__(path)  # partial file: path + ".partial", kept on failure
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"`path` exists (pass overwrite=True to replace it): {self.path}")
        if self.partial_path.exists():
            logger.warning("replacing stale partial file %s", self.partial_path)
        self.N = int(N)
        self.n = self.N // 2
        self.layout = layout
        self._truth = bool(truth)
        self._compression = compression
        self._const_mask = None if mask is None else _mask_to_cxi(mask, self.N, "mask")
        self._count = 0
        self._time_mode: bool | None = None  # decided at the first append
        self._mask_mode = False  # per-frame masks seen
        if truth_attrs and not self._truth:
            raise ValueError("`truth_attrs` given but `truth` is False")
        self.partial_path.parent.mkdir(parents=True, exist_ok=True)  # like `mkdir -p`: a new run folder
        self._f = h5py.File(self.partial_path, "w")
        try:
            self._init_file(attrs, truth_attrs)
        except BaseException:
            self._f.close()
            raise

    def _init_file(
        self, attrs: Mapping[str, Any] | None, truth_attrs: Mapping[str, Any] | None
    ) -> None:
        f = self._f
        write_attrs(f, attrs)
        f.create_dataset("cxi_version", data=np.int32(CXI_VERSION))
        e1 = self._new_entry(1)
        N, n = self.N, self.n
        if self._const_mask is not None:
            e1[MASK.rsplit("/", 1)[0]].create_dataset("mask", data=self._const_mask)
        if self._truth:
            tg = e1.create_group(TRUTH_GROUP)
            write_attrs(tg, truth_attrs)
        if self.layout == "stacked":
            e1.create_dataset(
                DATA,
                shape=(0, N, N, N),
                maxshape=(None, N, N, N),
                chunks=(1, N, N, N),
                dtype=self._dtype,
                compression=self._compression,
            )
            if self._truth:
                e1.create_dataset(
                    TRUTH,
                    shape=(0, n, n, n),
                    maxshape=(None, n, n, n),
                    chunks=(1, n, n, n),
                    dtype=np.complex64,
                )
        f.flush()

    def _new_entry(self, k: int) -> h5py.Group:
        name = f"entry_{k}"
        e = self._f.require_group(name)
        e.attrs["NX_class"] = "NXentry"
        e.create_dataset("start_time", data=_now())
        e.create_dataset("program_name", data=_program_name())
        d = e.create_group("data_1")
        d.attrs["NX_class"] = "NXdata"
        d.attrs["signal"] = "data"
        ins = e.create_group("instrument_1")
        ins.attrs["NX_class"] = "NXinstrument"
        det = ins.create_group("detector_1")
        det.attrs["NX_class"] = "NXdetector"
        return e

    @property
    def num_frames(self) -> int:
        """Number of frames completely written so far."""
        return self._count

    def append(
        self,
        intensity: Any,
        mask: Any = None,
        time: float | None = None,
        truth: Any = None,
    ) -> int:
        """Write one frame and flush it to disk.

        Parameters
        ----------
        intensity : array_like
            Real, (N, N, N), finite and non-negative at measured voxels.
        mask : array_like, optional
            Per-frame mask (N, N, N), bool or integer, nonzero = excluded.
            Not allowed when a constant mask was given at construction.
        time : float, optional
            Time stamp in seconds; give it for every frame or for none.
        truth : array_like, optional
            Ground-truth density (n, n, n); required iff ``truth=True``.

        Returns
        -------
        int
            Index of the frame just written.
        """
        self._check_open("writer")
        N, n, t = self.N, self.n, self._count
        # -- validate everything before touching the file --
        I = np.asarray(intensity)
        if I.shape != (N, N, N):
            raise ValueError(
                f"`intensity` must be a 3-D array of shape {(N,) * 3}, got {I.shape}"
            )
        if I.dtype.kind not in "iuf":
            raise TypeError(f"`intensity` must be real (integer or floating), got dtype {I.dtype}")
        m = None
        if mask is not None:
            if self._const_mask is not None:
                raise ValueError(
                    "`mask` was given per frame, but a constant mask was given at construction"
                )
            m = _mask_to_cxi(mask, N, "mask")
        excluded = (m != 0) if m is not None else (
            self._const_mask != 0 if self._const_mask is not None else None
        )
        try:
            check_frame_values(I, excluded, self.partial_path, "intensity", t, "intensity")
        except SeriesFormatError as exc:
            raise ValueError(f"`intensity` (frame {t}): {exc.rule}") from None
        if self._time_mode is None:
            time_mode = time is not None
        else:
            time_mode = self._time_mode
            if (time is not None) != time_mode:
                raise ValueError(
                    f"`time` must be given for every frame or for none (frame 0 "
                    f"{'had' if time_mode else 'had no'} time, frame {t} "
                    f"{'has none' if time is None else 'has one'})"
                )
        if time is not None:
            time = check_number("time", float(time))  # seconds
        d = None
        if self._truth:
            if truth is None:
                raise ValueError("`truth` is required for every frame (the writer has truth=True)")
            d = np.asarray(truth)
            if d.shape != (n, n, n):
                raise ValueError(
                    f"`truth` must have shape (n, n, n) = {(n,) * 3} with n = N/2, got {d.shape}"
                )
            if d.dtype.kind not in "iufc":
                raise TypeError(f"`truth` must be numeric (complex), got dtype {d.dtype}")
            d = d.astype(np.complex64)
        elif truth is not None:
            raise ValueError("`truth` was given but the writer was created with truth=False")
        Iw = I.astype(self._dtype)
        # -- write --
        try:
            if self.layout == "stacked":
                self._write_stacked(t, Iw, m, time, d)
            else:
                self._write_entry(t, Iw, m, time, d)
            self._f.flush()
        except BaseException:
            self._trim()
            raise
        self._time_mode = time_mode
        self._count = t + 1
        return t

    def _grow(self, name: str, t: int, value: np.ndarray) -> None:
        ds = self._f[name]
        ds.resize(t + 1, axis=0)
        ds[t] = value

    def _write_stacked(
        self, t: int, I: np.ndarray, m: np.ndarray | None, time: float | None, d: np.ndarray | None
    ) -> None:
        f, N = self._f, self.N
        if time is not None:
            if "time" not in f["entry_1/data_1"]:
                f["entry_1/data_1"].create_dataset(
                    "time", shape=(0,), maxshape=(None,), chunks=(1024,), dtype=np.float64
                )
            self._grow(f"entry_1/{TIME}", t, np.float64(time))
        mname = f"entry_1/{MASK}"
        if m is not None and not self._mask_mode:
            # per-frame masks start now; earlier frames read as "nothing excluded"
            f["entry_1/instrument_1/detector_1"].create_dataset(
                "mask",
                shape=(t, N, N, N),
                maxshape=(None, N, N, N),
                chunks=(1, N, N, N),
                dtype=np.uint32,
                fillvalue=0,
                compression="gzip",
            )
            self._mask_mode = True
        if self._mask_mode:
            self._grow(mname, t, m if m is not None else np.zeros((N, N, N), np.uint32))
        if d is not None:
            self._grow(f"entry_1/{TRUTH}", t, d)
        self._grow(f"entry_1/{DATA}", t, I)

    def _write_entry(
        self, t: int, I: np.ndarray, m: np.ndarray | None, time: float | None, d: np.ndarray | None
    ) -> None:
        f, N = self._f, self.N
        e = f["entry_1"] if t == 0 else self._new_entry(t + 1)
        if time is not None:
            e["data_1"].create_dataset("time", data=np.float64(time))
        if m is not None:
            self._mask_mode = True
        if self._mask_mode and self._const_mask is None:
            e["instrument_1/detector_1"].create_dataset(
                "mask",
                data=m if m is not None else np.zeros((N, N, N), np.uint32),
                compression="gzip",
            )
        if d is not None:
            e.require_group(TRUTH_GROUP).create_dataset("density", data=d)
        e["data_1"].create_dataset("data", data=I, compression=self._compression)

    def _trim(self) -> None:
        """Drop anything written beyond the last complete frame (after an error)."""
        try:
            f, t = self._f, self._count
            if self.layout == "stacked":
                for name in (f"entry_1/{DATA}", f"entry_1/{TIME}", f"entry_1/{MASK}", f"entry_1/{TRUTH}"):
                    ds = _dataset(f, name)
                    if ds is not None and ds.maxshape[0] is None and ds.shape[0] > t:
                        ds.resize(t, axis=0)
            else:
                name = f"entry_{t + 1}"
                if t > 0 and name in f:
                    del f[name]
                elif t == 0:
                    for sub in (DATA, TIME, TRUTH):
                        if sub in f["entry_1"]:
                            del f["entry_1"][sub]
                    if self._const_mask is None and MASK in f["entry_1"]:
                        del f["entry_1"][MASK]
            f.flush()
        except Exception:  # pragma: no cover - best effort on a failing file
            logger.exception("could not trim %s after a failed append", self.partial_path)

    def annotate(self, attrs: Mapping[str, Any] | None = None,
                 instrument: Mapping[str, tuple[Any, str, str]] | None = None) -> None:
        """Add root attributes and ``entry_1/instrument_1/<path>`` datasets ``(value, units, description)``."""
        write_attrs(self._f, attrs or {})
        group = self._f["entry_1/instrument_1"]
        for path, (value, units, description) in (instrument or {}).items():
            if path in group:
                del group[path]
            ds = group.create_dataset(path, data=value)
            ds.attrs["units"], ds.attrs["description"] = units, description
        self._f.flush()

    # -- closing (PartialFile hooks) ---------------------------------------------------
    def close(self) -> Path:
        """Close the file and rename ``path.partial`` to ``path`` atomically; returns ``path``.

        Raises
        ------
        ValueError
            If no frame was appended (the ``.partial`` file is left in place).
        """
        return super().close()

    def abort(self) -> None:
        """Close without renaming: keep the readable ``.partial`` file."""
        super().abort()

    def _finish(self) -> None:
        self._f.close()
        if self._count == 0:
            raise ValueError(
                f"no frame was appended; nothing renamed (partial file left at {self.partial_path})"
            )

    def _release(self) -> None:
        if self._f:  # still open: drop an incomplete frame first
            self._trim()
            self._f.close()

    def _on_closed(self) -> None:
        logger.info("wrote %d frame(s) to %s", self._count, self.path)

    def _on_aborted(self) -> None:
        logger.warning(
            "left %d complete frame(s) in partial file %s", self._count, self.partial_path
        )

    def _on_discarded(self) -> None:
        logger.info("discarded %s", self.partial_path)


def write_series(
    path: str | os.PathLike[str],
    intensities: Any,
    mask: Any = None,
    times: Sequence[float] | np.ndarray | None = None,
    truths: Any = None,
    layout: str = "stacked",
    attrs: Mapping[str, Any] | None = None,
    *,
    truth_attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    dtype: str | np.dtype = "float32",
    compression: str | None = None,
) -> Path:
    """Write a whole series to a CXI-style HDF5 file (see :class:`CXISeriesWriter`).

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    intensities : array_like
        (T, N, N, N), or a sequence of T arrays (N, N, N).
    mask : array_like, optional
        Constant (N, N, N) or per-frame (T, N, N, N); bool or integer, nonzero = excluded.
    times : array_like, optional
        (T,) seconds.
    truths : array_like, optional
        (T, n, n, n) ground-truth densities.
    layout : {"stacked", "entries"}
        File layout.
    attrs, truth_attrs, overwrite, dtype, compression
        As for :class:`CXISeriesWriter`.

    Returns
    -------
    pathlib.Path
        The final file.
    """
    frames = list(intensities) if not isinstance(intensities, np.ndarray) else intensities
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise ValueError(
            f"`intensities` must be 4-D (T, N, N, N) or a sequence of (N, N, N), got shape "
            f"{frames.shape}"
        )
    T = len(frames)
    if T == 0:
        raise ValueError("`intensities` must hold at least one frame")
    N = int(np.shape(frames[0])[-1])
    const_mask = None
    frame_masks = None
    if mask is not None:
        m = np.asarray(mask)
        if m.ndim == 3:
            const_mask = m
        elif m.ndim == 4 and m.shape[0] == T:
            frame_masks = m
        else:
            raise ValueError(
                f"`mask` must have shape (N, N, N) or (T, N, N, N) with T = {T}, got {m.shape}"
            )
    if times is not None and len(times) != T:
        raise ValueError(f"`times` must have length T = {T}, got {len(times)}")
    if truths is not None and len(truths) != T:
        raise ValueError(f"`truths` must have length T = {T}, got {len(truths)}")
    with CXISeriesWriter(
        path,
        N,
        layout=layout,
        attrs=attrs,
        truth=truths is not None,
        overwrite=overwrite,
        mask=const_mask,
        truth_attrs=truth_attrs,
        dtype=dtype,
        compression=compression,
    ) as w:
        for t in range(T):
            w.append(
                frames[t],
                mask=None if frame_masks is None else frame_masks[t],
                time=None if times is None else float(times[t]),
                truth=None if truths is None else truths[t],
            )
    return Path(path)
