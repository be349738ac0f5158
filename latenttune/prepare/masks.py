"""What a measured volume did not measure: the CXI pixel mask that ``latenttune prepare`` builds.

A voxel is excluded for one of :data:`REASONS`: the user's or file's mask (its bits kept); NaN, inf
or negative counts (``0x1`` invalid); a hot pixel, brighter than ``hot_factor * (median of its
measured neighbours + 1)`` (``0x4``); a detector gap, a run of at most ``max_gap_width`` planes or
lines whose counts sum to exactly 0 between planes or lines with at least ``gap_min_counts``
(``0x200``; a Poisson line with that many counts expected is empty with probability below
``exp(-gap_min_counts)``).
"""

from __future__ import annotations

import numpy as np

from latenttune.io.cxi import MASK_INVALID
from latenttune.prepare.settings import PrepareSettings

__all__ = ["build_mask", "reasons", "MASK_HOT", "MASK_GAP", "REASONS"]

#: CXI pixel-mask bit of a hot pixel.
MASK_HOT = 0x4
#: CXI pixel-mask bit of a voxel with no detector behind it: a detector gap, or outside the array.
MASK_GAP = 0x200
REASONS = ("mask", "invalid", "hot", "gap", "outside")
"""Why an output voxel is masked, in the order a voxel is counted under its first reason."""


# -- mask ----------------------------------------------------------------------------------------


def _shift(a: np.ndarray, s: int, axis: int) -> np.ndarray:
    """``a`` moved by ``s`` along ``axis`` (``out[i] = a[i - s]``), zero-filled, no wrap-around."""
    out = np.zeros_like(a)
    if abs(s) >= a.shape[axis]:  # moved out entirely (a short axis: a small volume)
        return out
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if s >= 0:
        src[axis], dst[axis] = slice(0, a.shape[axis] - s), slice(s, None)
    else:
        src[axis], dst[axis] = slice(-s, None), slice(0, a.shape[axis] + s)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _flanked_zeros(sums: np.ndarray, min_counts: float, width: int) -> np.ndarray:
    """Runs of zeros in ``sums``, at most ``width`` long, whose nearest non-zero entries on both sides
    (along some axis) hold at least ``min_counts``.

    The nearest neighbours, not any within reach: a dim fringe minimum between bright fringes is
    flanked by dim entries, a detector gap by ordinary ones.
    """
    zero = sums == 0
    found = np.zeros(sums.shape, dtype=bool)
    for axis in range(sums.ndim):
        sides = []
        for sign in (1, -1):
            nearest = np.zeros(sums.shape)  # sum of the nearest non-zero entry on this side (0: none in reach)
            seen = np.zeros(sums.shape, dtype=bool)
            for s in range(1, width + 1):
                shifted = _shift(sums, sign * s, axis)
                new = ~seen & (shifted != 0)
                nearest[new] = shifted[new]
                seen |= new
            sides.append(nearest >= min_counts)
        found |= sides[0] & sides[1]
    return found & zero


def _gaps(values: np.ndarray, min_counts: float, width: int) -> np.ndarray:
    """Empty planes and lines between counted ones (``values``: measured counts, 0 elsewhere)."""
    gaps = np.zeros(values.shape, dtype=bool)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        planes = _flanked_zeros(values.sum(axis=others), min_counts, width)
        gaps |= np.expand_dims(planes, others)
        lines = _flanked_zeros(values.sum(axis=axis), min_counts, width)
        gaps |= np.expand_dims(lines, axis)
    return gaps


_NEIGHBOURS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)])


def _hot(values: np.ndarray, masked: np.ndarray, factor: float, chunk: int = 100_000) -> np.ndarray:
    """Voxels brighter than ``factor * (median of their measured neighbours + 1)`` (26 neighbours at most)."""
    hot = np.zeros(values.shape, dtype=bool)
    candidates = np.argwhere((values > factor) & ~masked)  # the median is >= 0: nothing dimmer can be hot
    if not len(candidates):
        return hot
    padded = np.pad(np.where(masked, np.nan, values), 1, mode="constant", constant_values=np.nan)
    for start in range(0, len(candidates), chunk):
        idx = candidates[start: start + chunk]
        around = idx[:, None, :] + 1 + _NEIGHBOURS[None]
        neighbours = padded[around[..., 0], around[..., 1], around[..., 2]]
        seen = np.isfinite(neighbours).any(axis=1)  # a voxel with no measured neighbour is never called hot
        median = np.full(len(idx), np.inf)
        median[seen] = np.nanmedian(neighbours[seen], axis=1)
        bright = values[idx[:, 0], idx[:, 1], idx[:, 2]] > factor * (median + 1.0)
        hot[tuple(idx[bright].T)] = True
    return hot


def reasons(intensity: np.ndarray, mask: np.ndarray | None, settings: PrepareSettings) -> dict[str, np.ndarray]:
    """Why each voxel is not measured: boolean arrays ``mask``, ``invalid``, ``hot``, ``gap``."""
    values = np.asarray(intensity, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"`intensity` must be a 3-D array, got shape {values.shape}")
    user = np.zeros(values.shape, dtype=bool) if mask is None else np.asarray(mask) != 0
    if user.shape != values.shape:
        raise ValueError(f"`mask` must have the shape of `intensity` {values.shape}, got {user.shape}")
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(values) | (values < 0)
    clean = np.where(user | invalid, 0.0, values)
    gap = (np.zeros(values.shape, dtype=bool) if settings.gap_min_counts is None
           else _gaps(clean, settings.gap_min_counts, settings.max_gap_width))
    hot = (np.zeros(values.shape, dtype=bool) if settings.hot_factor is None
           else _hot(clean, user | invalid | gap, settings.hot_factor))
    return {"mask": user, "invalid": invalid, "hot": hot, "gap": gap}


def build_mask(intensity: np.ndarray, mask: np.ndarray | None = None,
               settings: PrepareSettings | None = None) -> np.ndarray:
    """The CXI pixel mask of a measured volume: what :func:`prepare_series` excludes.

    Parameters
    ----------
    intensity : ndarray, 3-D
        Measured counts (any shape).
    mask : ndarray, optional
        The user's or file's mask, same shape, nonzero = not measured (its integer bits are kept).
    settings : PrepareSettings, optional
        ``hot_factor``, ``gap_min_counts`` and ``max_gap_width``.

    Returns
    -------
    ndarray of uint32
        0 = measured; bits ``0x1`` (NaN, inf, negative, or a boolean user mask), the user mask's
        own bits, :data:`MASK_HOT`, :data:`MASK_GAP`.
    """
    settings = PrepareSettings() if settings is None else settings
    why = reasons(intensity, mask, settings)
    bits = np.zeros(why["mask"].shape, dtype=np.uint32)
    if mask is not None:
        given = np.asarray(mask)
        bits |= given.astype(np.uint32) if given.dtype.kind in "iu" and given.min(initial=0) >= 0 else \
            why["mask"].astype(np.uint32) * np.uint32(MASK_INVALID)
    bits[why["invalid"]] |= np.uint32(MASK_INVALID)
    bits[why["hot"]] |= np.uint32(MASK_HOT)
    bits[why["gap"]] |= np.uint32(MASK_GAP)
    return bits
