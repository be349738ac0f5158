"""cohere-style amplitude frames: a directory of ``.npy``/``.tif`` files, or one ``.npy``.

cohere stores the measured diffraction as AMPLITUDES (square root of the
intensity) with the peak at the centre of the array. Here each frame is read
lazily and returned as ``intensity = amplitude**2`` (float32) when the reader is
told the frames hold amplitudes (``amplitude=True``, the classes' default);
:func:`latenttune.io.open_series`, which every command uses, reads such files as
photon counts unless told otherwise (``--amplitude``), as ``latenttune prepare`` does.

Directory layout
    ``*.npy`` or ``*.tif``/``*.tiff`` files (one kind per directory), one
    (N, N, N) frame each, ordered naturally by name (``frame_2`` before
    ``frame_10``). An optional ``mask.npy`` / ``mask.tif`` (N, N, N), integer or
    boolean, nonzero = excluded, is applied to every frame and is not a frame.
    A dangling symbolic link in the folder, or a FIFO or device named like a
    frame, is an error naming it (a frame is never dropped silently).
Single file
    one ``.npy`` of shape (T, N, N, N) or (N, N, N), memory-mapped.

Neither format stores time stamps: the frame index is used as the time in
seconds, as ``metadata["time_source"]`` says.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from latenttune.io._checks import (
    check_frame_count,
    check_grid,
    check_mask_dtype,
    check_value_dtype,
    frame_to_float32,
    mask_to_bool,
    scan_folder,
)
from latenttune.io.errors import SeriesFormatError
from latenttune.io.series import Series
from latenttune.validation import check_choice

__all__ = ["CohereDirSeries", "NpySeries", "natural_key", "write_amplitude_frames"]

logger = logging.getLogger(__name__)

FRAME_SUFFIXES = (".npy", ".tif", ".tiff")
MASK_STEM = "mask"
_TIME_NOTE = "frame index (no time stamps in this format; time = frame index in seconds)"


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs numerically (``frame_2`` < ``frame_10``)."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy or .tif file without reading its data."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype = tuple(arr.shape), arr.dtype
            del arr
            return shape, dtype
        with tifffile.TiffFile(path) as tf:
            s = tf.series[0]
            return tuple(s.shape), np.dtype(s.dtype)
    except (ValueError, OSError, tifffile.TiffFileError) as exc:
        raise SeriesFormatError(path, "<array>", f"cannot be read as an array ({exc})") from exc


def _amplitude_to_intensity(raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Intensity of an amplitude frame (in float64 when the input is wider than float32).

    ``amplitude * |amplitude|``: the square of a valid (non-negative) amplitude, while a negative
    amplitude stays negative, so the frame policy (:func:`latenttune.frame_policy.frame_problem`)
    sees it and skips the frame; masked voxels hold 0.
    """
    if np.dtype(raw.dtype).itemsize <= 4 and raw.dtype.kind == "f":
        a = frame_to_float32(raw, mask)
        return a * np.abs(a)
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.asarray(raw, dtype=np.float64)
        out = (a * np.abs(a)).astype(np.float32)
    out[mask] = 0.0
    return out


def _load(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    return tifffile.imread(path)


class CohereDirSeries(Series):
    """A directory of cohere-style amplitude frames, read lazily.

    Use :func:`latenttune.io.open_series` rather than this class directly.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding the frames (and optionally ``mask.npy``/``mask.tif``).
    amplitude : bool
        The frames hold amplitudes (cohere's convention: squared here); False: intensities
        (photon counts), as :func:`latenttune.io.open_series` reads a folder unless told otherwise.
    """

    def __init__(self, directory: str | os.PathLike[str], amplitude: bool = True) -> None:
        self._amplitude = bool(amplitude)
        d = Path(directory)
        files, _ = scan_folder(d, FRAME_SUFFIXES)  # a dangling link or a FIFO is named, never skipped
        masks = [p for p in files if p.stem.lower() == MASK_STEM]
        frames = sorted(
            (p for p in files if p.stem.lower() != MASK_STEM), key=lambda p: natural_key(p.name)
        )
        if not frames:
            raise SeriesFormatError(
                d, "<frames>", "missing data: no *.npy or *.tif amplitude frames in the directory"
            )
        kinds = {("npy" if p.suffix.lower() == ".npy" else "tif") for p in frames}
        if len(kinds) > 1:
            raise SeriesFormatError(
                d, "<frames>", "frames must be all .npy or all .tif, found both kinds"
            )
        N: int | None = None
        for p in frames:
            shape, dtype = _header(p)
            if len(shape) != 3:
                raise SeriesFormatError(
                    p, p.name, f"wrong ndim: an amplitude frame must be 3-D (N, N, N), got {shape}"
                )
            check_value_dtype(dtype, p, p.name, "amplitude")
            Np = check_grid(shape, p, p.name)
            if N is None:
                N = Np
            elif Np != N:
                raise SeriesFormatError(
                    p, p.name, f"grid size must match the first frame ({(N,) * 3}), got {shape}"
                )
        assert N is not None
        mask = None
        if len(masks) > 1:
            raise SeriesFormatError(
                d, "mask", f"at most one mask file is allowed, found {[m.name for m in masks]}"
            )
        if masks:
            mp = masks[0]
            shape, dtype = _header(mp)
            check_mask_dtype(dtype, mp, mp.name)
            if shape != (N, N, N):
                raise SeriesFormatError(
                    mp, mp.name, f"mask shape mismatch: must be (N, N, N) = {(N,) * 3}, got {shape}"
                )
            mask = mask_to_bool(_load(mp))
        self._frames = frames
        self._mask = mask
        metadata = {
            "format": "cohere",
            "layout": "directory",
            "file_kind": kinds.pop(),
            "files": [p.name for p in frames],
            "quantity": "amplitude (intensity = amplitude**2)" if amplitude else "intensity (photon counts)",
            "mask_source": masks[0].name if masks else None,
            "time_source": _TIME_NOTE,
            "time_from_index": True,
            "num_frames": len(frames),
            "N": N,
        }
        super().__init__(d, N, np.arange(len(frames), dtype=np.float64), False, metadata)

    def _read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        p = self._frames[i]
        amp = _load(p)
        N = self._N
        if amp.shape != (N, N, N):
            raise SeriesFormatError(
                p, p.name, f"frame shape changed since opening: must be {(N,) * 3}, got {amp.shape}",
                frame=i,
            )
        mask = self._mask.copy() if self._mask is not None else np.zeros((N, N, N), bool)
        return (_amplitude_to_intensity(amp, mask) if self._amplitude else frame_to_float32(amp, mask)), mask


class NpySeries(Series):
    """One ``.npy`` file of amplitudes, (T, N, N, N) or (N, N, N), memory-mapped.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file.
    amplitude : bool
        It holds amplitudes (squared here); False: intensities (photon counts).
    """

    def __init__(self, path: str | os.PathLike[str], amplitude: bool = True) -> None:
        self._amplitude = bool(amplitude)
        p = Path(path)
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SeriesFormatError(p, "<array>", f"cannot be read as a .npy array ({exc})") from exc
        if arr.ndim == 3:
            arr = arr[np.newaxis]
        elif arr.ndim != 4:
            raise SeriesFormatError(
                p,
                "<array>",
                f"wrong ndim: amplitudes must be 4-D (T, N, N, N) or 3-D (N, N, N), got {arr.shape}",
            )
        check_value_dtype(arr.dtype, p, "<array>", "amplitude")
        N = check_grid(arr.shape, p, "<array>")
        T = check_frame_count(arr.shape[0], p, "<array>")
        if T == 0:
            raise SeriesFormatError(p, "<array>", "the series must hold at least one frame, got T = 0")
        self._arr: np.ndarray | None = arr
        metadata = {
            "format": "cohere",
            "layout": "npy",
            "quantity": "amplitude (intensity = amplitude**2)" if amplitude else "intensity (photon counts)",
            "mask_source": None,
            "time_source": _TIME_NOTE,
            "time_from_index": True,
            "num_frames": T,
            "N": N,
        }
        super().__init__(p, N, np.arange(T, dtype=np.float64), False, metadata)

    def _read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._arr is not None
        N = self._N
        mask = np.zeros((N, N, N), dtype=bool)
        raw = np.asarray(self._arr[i])
        return (_amplitude_to_intensity(raw, mask) if self._amplitude else frame_to_float32(raw, mask)), mask

    def _close(self) -> None:
        self._arr = None


def write_amplitude_frames(
    directory: str | os.PathLike[str],
    intensities: Any,
    mask: Any = None,
    fmt: str = "npy",
    prefix: str = "frame_",
) -> list[Path]:
    """Export intensities as a cohere-style directory of amplitude frames.

    Parameters
    ----------
    directory : str or os.PathLike
        Target directory (created if missing).
    intensities : array_like
        (T, N, N, N) or a sequence of (N, N, N) non-negative intensities.
    mask : array_like, optional
        (N, N, N) bool/integer mask (nonzero = excluded), saved as ``mask.<fmt>``.
    fmt : {"npy", "tif"}
        File format.
    prefix : str
        File name prefix; frames are ``<prefix><t>.<fmt>``.

    Returns
    -------
    list of pathlib.Path
        The frame files, in order.
    """
    check_choice("fmt", fmt, ("npy", "tif"))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for t, I in enumerate(intensities):
        I = np.asarray(I, dtype=np.float32)
        if I.ndim != 3:
            raise ValueError(f"`intensities` frames must be 3-D (N, N, N), got {I.shape} at {t}")
        if (I < 0).any() or not np.isfinite(I).all():
            raise ValueError(f"`intensities` must be finite and non-negative (frame {t})")
        amp = np.sqrt(I)
        p = d / f"{prefix}{t}.{fmt}"
        if fmt == "npy":
            np.save(p, amp)
        else:
            tifffile.imwrite(p, amp)
        out.append(p)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype.kind not in "biu":
            raise TypeError(f"`mask` must be boolean or integer, got dtype {m.dtype}")
        m = m.astype(np.uint8) if m.dtype.kind == "b" else m
        if fmt == "npy":
            np.save(d / "mask.npy", m)
        else:
            tifffile.imwrite(d / "mask.tif", m)
    return out
