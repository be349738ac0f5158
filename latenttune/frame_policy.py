"""One policy for measured frames, whatever their source (file, folder, stored run, live detector).

Two steps, kept apart on purpose:

* **Structure** (:func:`prepare_frame`): shape, dtype and mask of a frame. A frame that breaks
  these rules cannot be a diffraction pattern of this model at all, so the reader or the live plan
  raises (``ValueError`` / ``TypeError`` naming the argument and the rule). Readers check
  structure only: they never reject a frame for its values.
* **Values** (:func:`frame_problem`): the one function that decides whether a structurally valid
  frame can be tracked. A frame with a NaN/inf or a negative value at a measured voxel, no measured
  voxel, or no counts on the measured voxels is *skipped*: the tracker
  (:class:`latenttune.tracking.FrameTracker`) records it as ``"skipped: <reason>"`` and holds the
  last estimate. Values at masked (unmeasured) voxels never matter: detectors flag gaps with
  negative or non-finite numbers.

So one bad frame never ends a replay, a resumed replay, or a live run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["SKIPPED", "NoUsableFrameError", "frame_problem", "no_usable_frame_error", "prepare_frame"]

#: Prefix of the status of a skipped frame (``"skipped: <reason>"``).
SKIPPED = "skipped: "


def prepare_frame(pattern: Any, mask: Any, N: int) -> tuple[np.ndarray, np.ndarray]:
    """The tracker's view of a measured frame: float32 intensity with masked voxels set to 0.

    Checks structure only (shape and dtype); the values are judged by :func:`frame_problem`.
    Used live by the Bluesky plan and offline by the stored-run reader
    (:class:`latenttune.io.runs.RunSeries`), so both feed the tracker bit-identical arrays.

    Parameters
    ----------
    pattern : array_like, shape (N, N, N)
        Measured intensity (any real dtype).
    mask : array_like of bool, shape (N, N, N), or None
        True = voxel not measured; None = every voxel measured.
    N : int
        Expected diffraction grid size.

    Returns
    -------
    (intensity, mask)
        float32 (N, N, N) and bool (N, N, N).

    Raises
    ------
    ValueError
        Wrong shape of ``pattern`` or ``mask``.
    TypeError
        ``pattern`` is not a real numeric array.
    """
    intensity = np.asarray(pattern)
    if intensity.shape != (N, N, N):
        raise ValueError(f"`pattern` must be a 3-D array of shape {(N, N, N)}, got {intensity.shape}")
    if intensity.dtype.kind not in "iuf":
        raise TypeError(f"`pattern` must have a real numeric dtype, got {intensity.dtype}")
    if mask is None:
        mask = np.zeros((N, N, N), dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != (N, N, N):
            raise ValueError(f"`mask` must be a 3-D array of shape {(N, N, N)}, got {mask.shape}")
        mask = np.array(mask, dtype=bool)  # a writable copy (stored runs hand out read-only arrays)
    with np.errstate(over="ignore", invalid="ignore"):
        intensity = intensity.astype(np.float32)
    return np.where(mask, np.float32(0), intensity), mask


def frame_problem(intensity: np.ndarray, mask: np.ndarray | None) -> str | None:
    """Why a measured frame cannot be tracked, or None when it can.

    The single decision behind every skipped frame. Only measured voxels (``mask`` False) count.

    Parameters
    ----------
    intensity : numpy.ndarray
        The frame's intensity.
    mask : numpy.ndarray of bool or None
        True = voxel not measured; None = every voxel measured.

    Returns
    -------
    str or None
        ``"non-finite intensity"``, ``"negative intensity"``, ``"no measured voxels"`` or
        ``"no counts on the measured voxels"``; None for a usable frame.
    """
    measured = intensity if mask is None else intensity[~mask]
    if measured.size == 0:
        return "no measured voxels"
    if not np.all(np.isfinite(measured)):
        return "non-finite intensity"
    if np.any(measured < 0):
        return "negative intensity"
    if not float(measured.sum(dtype=np.float64)) > 0:
        return "no counts on the measured voxels"
    return None


class NoUsableFrameError(ValueError):
    """Every frame of a series was skipped: there is nothing to track."""


def no_usable_frame_error(frames: Iterable[Any]) -> NoUsableFrameError:
    """The error for a series none of whose frames can be tracked, naming the reasons.

    Parameters
    ----------
    frames : iterable
        The series (frames with ``intensity`` and ``mask``); read again to count the reasons.
    """
    reasons = Counter(frame_problem(frame.intensity, frame.mask) for frame in frames)
    total = sum(reasons.values())
    where = getattr(frames, "path", None)
    listed = ", ".join(f"{count} x {reason}" for reason, count in reasons.most_common() if reason is not None)
    return NoUsableFrameError(
        f"no usable frame in {str(where) if where is not None else 'the series'}: all {total} frame(s) were "
        f"skipped ({listed or 'none left to track'}); check the data (flux, mask) before tracking"
    )
