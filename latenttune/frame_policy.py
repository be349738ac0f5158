"""One policy for measured frames, whatever their source (file, folder, stored run, live detector).

Two steps, kept apart on purpose:

* **Structure** (:func:`checked_frame`): shape, dtype and mask of a frame, turned into the
  tracker's :class:`Frame` (float32 counts, 0 at unmeasured voxels, a bool mask). A frame that
  breaks these rules cannot be a diffraction pattern of this model at all, so the reader or the
  live plan raises (``ValueError`` / ``TypeError`` naming the argument and the rule). Readers
  check structure only: they never reject a frame for its values. Every source (series readers,
  stored runs, the live plan, :func:`latenttune.tracking.track`) goes through this one function,
  and what comes out is trusted downstream (the latent cost, the encoders, the physics stage).
* **Values** (:func:`frame_problem`, :attr:`Frame.problem`): the one function that decides whether
  a structurally valid frame can be tracked. A frame with a NaN/inf or a negative value at a measured voxel, no measured
  voxel, or no counts on the measured voxels is *skipped*: the tracker
  (:class:`latenttune.tracking.FrameTracker`) records it as ``"skipped: <reason>"`` and holds the
  last estimate. Values at masked (unmeasured) voxels never matter: detectors flag gaps with
  negative or non-finite numbers.

So one bad frame never ends a replay, a resumed replay, or a live run.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SKIPPED", "Frame", "NoUsableFrameError", "checked_frame", "frame_problem", "no_usable_frame_error"]

#: Prefix of the status of a skipped frame (``"skipped: <reason>"``).
SKIPPED = "skipped: "


@dataclass(frozen=True, eq=False)
class Frame:
    """One measured diffraction pattern, checked: what the tracker works on.

    Attributes
    ----------
    intensity : numpy.ndarray
        float32 (N, N, N), q = 0 at index N // 2; unmeasured voxels hold 0.
    mask : numpy.ndarray
        bool (N, N, N), True = voxel NOT measured.
    time : float
        Time stamp in seconds.
    index : int
        Position of the frame in its series (0-based, non-negative).
    """

    intensity: np.ndarray
    mask: np.ndarray
    time: float
    index: int

    @functools.cached_property
    def problem(self) -> str | None:
        """Why the frame cannot be tracked (:func:`frame_problem`), or None."""
        return frame_problem(self.intensity, self.mask)

    @property
    def N(self) -> int:
        """Diffraction grid size."""
        return int(self.intensity.shape[-1])


def checked_frame(pattern: Any, mask: Any = None, N: int | None = None, *, index: int = 0,
                  time: float = 0.0) -> Frame:
    """Any source's frame as the tracker's :class:`Frame`: structure checked, float32, unmeasured voxels 0.

    A :class:`Frame` passes through unchanged (it was checked when it was made), after its grid
    size is compared with ``N``.

    Parameters
    ----------
    pattern : array_like, shape (N, N, N), or Frame
        Measured intensity (any real dtype).
    mask : array_like of bool, shape (N, N, N), or None
        True = voxel not measured; None = every voxel measured.
    N : int, optional
        Expected diffraction grid size (any cubic grid when None).
    index, time
        The frame's position in its series and time stamp.

    Raises
    ------
    ValueError
        Wrong shape of ``pattern`` or ``mask``.
    TypeError
        ``pattern`` is not a real numeric array.
    """
    if isinstance(pattern, Frame):
        if N is not None and pattern.intensity.shape != (N, N, N):
            raise ValueError(f"`pattern` must be a 3-D array of shape {(N, N, N)}, got {pattern.intensity.shape}")
        return pattern
    if N is None:
        shape = np.shape(pattern)
        N = int(shape[0]) if len(shape) == 3 and len(set(shape)) == 1 else -1
        if N < 0:
            raise ValueError(f"`pattern` must be a cubic 3-D array (N, N, N), got shape {shape}")
    intensity = np.asarray(pattern)
    if intensity.shape != (N, N, N):
        raise ValueError(f"`pattern` must be a 3-D array of shape {(N, N, N)}, got {intensity.shape}")
    if intensity.dtype.kind not in "iuf":
        raise TypeError(f"`pattern` must have a real numeric dtype, got {intensity.dtype}")
    if mask is None:
        unmeasured = np.zeros((N, N, N), dtype=bool)
    else:
        unmeasured = np.asarray(mask)
        if unmeasured.shape != (N, N, N):
            raise ValueError(f"`mask` must be a 3-D array of shape {(N, N, N)}, got {unmeasured.shape}")
        unmeasured = np.array(unmeasured, dtype=bool)  # a writable copy (stored runs hand out read-only arrays)
    with np.errstate(over="ignore", invalid="ignore"):
        intensity = intensity.astype(np.float32)
    intensity = np.where(unmeasured, np.float32(0), intensity)
    return Frame(intensity=intensity, mask=unmeasured, time=float(time), index=int(index))


def _checked_arguments(intensity: Any, mask: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`frame_problem`'s arguments as arrays, or a TypeError/ValueError naming the argument and the rule."""
    values = np.asarray(intensity) if not isinstance(intensity, np.ndarray) else intensity
    if values.dtype.kind not in "iuf":
        hint = ": pass intensities |F|^2, not complex amplitudes" if values.dtype.kind == "c" else ""
        raise TypeError(f"`intensity` must hold real numbers, got dtype {values.dtype}{hint}")
    if values.ndim != 3:
        raise ValueError(f"`intensity` must be a 3-D array (N, N, N), got shape {values.shape}")
    if mask is None:
        return values, None
    unmeasured = np.asarray(mask) if not isinstance(mask, np.ndarray) else mask
    if unmeasured.dtype != np.bool_:
        raise TypeError(f"`mask` must be a bool array (True = voxel not measured) or None, got dtype "
                        f"{unmeasured.dtype}")
    if unmeasured.shape != values.shape:
        raise ValueError(f"`mask` must have the shape of `intensity` {values.shape}, got {unmeasured.shape}")
    return values, unmeasured


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

    Raises
    ------
    TypeError
        ``intensity`` is not real numbers (e.g. complex amplitudes), or ``mask`` is not boolean.
    ValueError
        ``intensity`` is not 3-D, or ``mask`` does not have its shape.
    """
    intensity, mask = _checked_arguments(intensity, mask)
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


def no_usable_frame_error(reasons: Counter[str] | Iterable[Any], where: Any = None) -> NoUsableFrameError:
    """The error for a series none of whose frames could be tracked, naming the reasons.

    Parameters
    ----------
    reasons : Counter of str, or iterable of frames
        How many frames were skipped for each reason (what the tracker counted while it read them:
        :attr:`latenttune.tracking.tracker.FrameTracker.skipped`), or frames with ``intensity`` and
        ``mask`` to judge (read again).
    where : object, optional
        What was tracked (a path), for the message; taken from ``reasons.path`` when it has one.
    """
    if not isinstance(reasons, Counter):
        frames = reasons
        where = getattr(frames, "path", None) if where is None else where
        reasons = Counter(frame_problem(frame.intensity, frame.mask) for frame in frames)
    total = sum(reasons.values())
    listed = ", ".join(f"{count} x {reason}" for reason, count in reasons.most_common() if reason is not None)
    return NoUsableFrameError(
        f"no usable frame in {str(where) if where is not None else 'the series'}: all {total} frame(s) were "
        f"skipped ({listed or 'none left to track'}); check the data (flux, mask) before tracking"
    )
