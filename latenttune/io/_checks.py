"""Validation rules shared by the series readers and writers.

Each check raises :class:`~latenttune.io.errors.SeriesFormatError` naming the
file, the dataset and the rule.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from latenttune.io.errors import SeriesFormatError
from latenttune.limits import MAX_FRAMES, MAX_GRID
from latenttune.outputs import file_status

__all__ = [
    "scan_folder",
    "check_frame_count",
    "check_grid",
    "check_value_dtype",
    "check_mask_dtype",
    "check_frame_values",
    "frame_to_float32",
    "mask_to_bool",
]

PathLike = str | os.PathLike[str]


def scan_folder(folder: PathLike, suffixes: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """The regular files with one of ``suffixes`` and the sub-folders of a frame folder, by name.

    Nothing is dropped silently: a dangling symbolic link (any name: it may have been a frame or a
    time-step folder) and a FIFO, device or socket named like a frame are errors naming the entry,
    so a frame can never go missing and renumber the rest. Nothing is opened.

    Parameters
    ----------
    folder : path
        The folder.
    suffixes : tuple of str
        Lower-case suffixes of the files that hold frames (and the mask).

    Returns
    -------
    (list of Path, list of Path)
        Files and sub-folders, unordered.
    """
    files, folders = [], []
    for item in Path(folder).iterdir():
        st = file_status(item, f"{item.name!r} in {str(folder)!r}")
        if st is None:  # vanished, or a dangling link
            if os.path.islink(item):
                raise SeriesFormatError(folder, item.name, f"a dangling symbolic link (to {os.readlink(item)!r}, which "
                                        "does not exist): restore its target or remove it; a frame is never skipped "
                                        "silently")
            continue
        if stat.S_ISDIR(st.st_mode):
            folders.append(item)
        elif item.suffix.lower() in suffixes:
            if not stat.S_ISREG(st.st_mode):
                raise SeriesFormatError(folder, item.name, "not a regular file (a FIFO, device or socket): frames "
                                        "must be regular files")
            files.append(item)
    return files, folders


def check_frame_count(count: int, file: PathLike, dataset: str) -> int:
    """Refuse a series that declares more than :data:`latenttune.limits.MAX_FRAMES` frames."""
    if int(count) > MAX_FRAMES:
        raise SeriesFormatError(file, dataset, f"declares {int(count):,} frames, more than the {MAX_FRAMES:,} "
                                "latenttune reads in one series: split it")
    return int(count)


def check_grid(shape: tuple[int, ...], file: PathLike, dataset: str) -> int:
    """Check that the last three axes of ``shape`` form an even cube; return N.

    Parameters
    ----------
    shape : tuple of int
        Shape whose last three entries are the diffraction grid.
    file, dataset : str
        Where the shape came from (for the error message).

    Returns
    -------
    int
        The grid size ``N``.
    """
    cube = tuple(int(s) for s in shape[-3:])
    if len(cube) != 3 or not (cube[0] == cube[1] == cube[2]):
        raise SeriesFormatError(
            file, dataset, f"the diffraction grid must be cubic (N, N, N), got {cube}"
        )
    N = cube[0]
    if N < 2 or N % 2:
        raise SeriesFormatError(
            file, dataset, f"the grid size N must be even and >= 2 (N = 2n), got N = {N}"
        )
    if N > MAX_GRID:
        raise SeriesFormatError(
            file, dataset, f"the grid size N must be at most {MAX_GRID} (the largest model grid), got N = {N}"
        )
    return N


def check_value_dtype(dtype: np.dtype, file: PathLike, dataset: str, what: str) -> None:
    """Require a real numeric (integer or floating, not bool) dtype."""
    if np.dtype(dtype).kind not in "iuf":
        raise SeriesFormatError(
            file,
            dataset,
            f"{what} must have a real integer or floating dtype, got {np.dtype(dtype)}",
        )


def check_mask_dtype(dtype: np.dtype, file: PathLike, dataset: str) -> None:
    """Require an integer or boolean mask dtype (nonzero = excluded)."""
    if np.dtype(dtype).kind not in "biu":
        raise SeriesFormatError(
            file,
            dataset,
            "the mask must have an integer or boolean dtype (nonzero = excluded), "
            f"got {np.dtype(dtype)}",
        )


def mask_to_bool(mask: np.ndarray) -> np.ndarray:
    """Convert an integer/bool mask (nonzero = excluded) to bool, True = excluded."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return np.array(mask, dtype=bool, copy=True)
    return mask != 0


def frame_to_float32(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A frame as float32 with excluded (masked) voxels set to 0; measured values untouched.

    What the series readers return: they check structure only, so a NaN, inf or negative value at
    a measured voxel reaches the tracker, whose frame policy
    (:func:`latenttune.frame_policy.frame_problem`) skips the frame instead of ending the run.
    Values that overflow float32 become inf (and so a skipped frame).

    Parameters
    ----------
    values : numpy.ndarray
        The raw frame, shape (N, N, N), real dtype.
    mask : numpy.ndarray of bool or None
        True = excluded.

    Returns
    -------
    numpy.ndarray
        float32 copy of ``values``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(values, dtype=np.float32, copy=True)
    if mask is not None and mask.any():
        out[mask] = 0.0
    return out


def check_frame_values(
    values: np.ndarray,
    mask: np.ndarray,
    file: PathLike,
    dataset: str,
    frame: int,
    what: str = "intensity",
) -> np.ndarray:
    """Check one frame's values over the measured voxels and return float32 (writers).

    Values at excluded (masked) voxels are not checked, because detectors
    commonly flag gaps with negative or non-finite numbers; they are set to 0 in
    the returned array so they cannot poison sums. Measured voxels must be
    finite and non-negative.

    Parameters
    ----------
    values : numpy.ndarray
        The raw frame, shape (N, N, N).
    mask : numpy.ndarray of bool
        True = excluded.
    file, dataset : str
        Where the frame came from (for the error message).
    frame : int
        Frame index (for the error message).
    what : str
        "intensity" or "amplitude".

    Returns
    -------
    numpy.ndarray
        float32 copy of ``values`` with excluded voxels cleaned.
    """
    with np.errstate(over="ignore"):
        out = np.array(values, dtype=np.float32, copy=True)
    if np.dtype(values.dtype).kind == "f":
        bad = ~np.isfinite(out)
        if mask is not None:
            bad &= ~mask
        if bad.any():
            raise SeriesFormatError(
                file,
                dataset,
                f"{what} must be finite at measured voxels, found {int(bad.sum())} "
                "NaN/inf value(s) outside the mask (or values that overflow float32)",
                frame=frame,
            )
    neg = out < 0
    if mask is not None:
        neg &= ~mask
    if neg.any():
        raise SeriesFormatError(
            file,
            dataset,
            f"{what} must be non-negative at measured voxels, found {int(neg.sum())} "
            f"negative value(s) outside the mask (min {float(out[neg].min()):.6g})",
            frame=frame,
        )
    if mask is not None and mask.any():
        out[mask] = 0.0
    return out
