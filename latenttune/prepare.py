"""Put a measured 3D intensity on the model's grid: ``latenttune prepare``.

A measurement comes in any shape and axis order with the Bragg peak anywhere
(:mod:`latenttune.io.measured` reads it); the model wants an ``N^3`` grid (``N = 2n``) with the
peak at index ``N // 2`` and a mask of what was not measured (DESIGN.md sections 2 and 5). For
each series :func:`prepare_series` does, in order:

1. **Mask** (:func:`build_mask`, CXI pixel-mask bits): the user's or file's mask (bits kept);
   NaN, inf and negative voxels (``0x1`` invalid); hot pixels, a voxel brighter than
   ``hot_factor * (median of its measured neighbours + 1)`` (``0x4``); detector gaps, a run of at
   most ``max_gap_width`` planes or lines whose counts sum to exactly 0 while the nearest planes or
   lines on both sides hold at least ``gap_min_counts`` (``0x200``; a Poisson line with that many
   counts expected is empty with probability below ``exp(-gap_min_counts)``).
2. **Oversampling** (:func:`estimate_oversampling`): per axis, from the extent of the object's
   autocorrelation along the axis, which is the inverse Fourier transform of the intensity's
   projection onto that axis (the same idea as cohere's ``get_oversample_ratio``). Oversampling
   ``s`` means the object spans ``1/s`` of the real-space field of view; the model's object box is
   half of it (``n = N/2``), so ``s < min_oversampling`` (2) is an error.
3. **Binning** (:func:`choose_binning`): counts are summed over ``b`` voxels per axis (binning
   divides the oversampling by ``b``), ``b`` chosen so that the oversampling comes closest to the
   model's training data (``oversampling``, :data:`DEFAULT_OVERSAMPLING`) without going below
   ``min_oversampling``; cropping alone keeps the oversampling and drops the outer q range.
4. **Peak** (:func:`find_peak`): the centre of mass of the central lobe of the Bragg peak
   (iterated in a box of the lobe's width around the brightest smoothed voxel), of the whole
   series (``centre="series"``: one window, so the sample's changes stay in the frames) or of each
   frame (``centre="frame"``).
5. **Window**: ``N`` bins per axis, with the bin holding the peak at ``N // 2``; parts of the
   window outside the measured array are masked (``0x200``), and so is every bin with a masked
   voxel in it (its sum would be short). No count is rescaled: the prepared frame holds exactly
   the counts of the fully measured bins, and the report says how many counts fell outside the
   window or in masked bins.

The peak must leave at least ``edge_margin * N`` measured output voxels on each side, or the
frame is refused with a message that says what to change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from latenttune.io.cxi import MASK_INVALID
from latenttune.io.cxi_writer import CXISeriesWriter
from latenttune.io.measured import MeasuredSeries, MeasuredVolume, open_measured

log = logging.getLogger(__name__)

__all__ = [
    "PrepareSettings",
    "FramePreparation",
    "PreparedFrame",
    "build_mask",
    "estimate_oversampling",
    "find_peak",
    "choose_binning",
    "prepare_volume",
    "prepare_series",
    "MASK_HOT",
    "MASK_GAP",
    "DEFAULT_OVERSAMPLING",
]

#: CXI pixel-mask bit of a hot pixel.
MASK_HOT = 0x4
#: CXI pixel-mask bit of a voxel with no detector behind it: a detector gap, or outside the array.
MASK_GAP = 0x200
#: Oversampling of the default model's training data by :func:`estimate_oversampling`: median 4.6
#: (10th-90th percentile 3.7-5.3) over 40 pairs of the default recipe (n = 32, radius 0.22-0.33 n).
DEFAULT_OVERSAMPLING = 4.5
#: Autocorrelation threshold (fraction of its value next to the origin) that marks the object's
#: extent, and the ratio of the threshold crossing to the object's width along the axis, measured on
#: the training shapes (median 0.765, 10th-90th percentile 0.70-0.83).
_AUTOCORR_THRESHOLD = 0.02
_AUTOCORR_EXTENT = 0.765
_REASONS = ("mask", "invalid", "hot", "gap", "outside")
#: Deepest unmeasured region (voxels from a measured one) filled before the oversampling is estimated.
_FILL_STEPS = 8
_CENTRES = ("series", "frame")


def _positive(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number{' or None' if allow_none else ''}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PrepareSettings:
    """How :func:`prepare_series` puts measured volumes on the model's grid.

    Attributes
    ----------
    binning : tuple of 3 ints or None
        Voxels summed per output voxel along each axis; None chooses it (:func:`choose_binning`).
    oversampling : float
        The oversampling automatic binning aims at (default: the model's training data).
    min_oversampling : float
        Below this the object does not fit in the model's ``n^3`` object box (``N = 2n``): an error.
    edge_margin : float
        The peak must have at least ``edge_margin * N`` measured output voxels on each side.
    centre : {"series", "frame"}
        One window for the whole series, around the peak of the summed frames (the sample's
        changes, a moving peak included, stay visible), or each frame centred on its own peak.
    hot_factor : float or None
        A voxel brighter than ``hot_factor * (median of its measured neighbours + 1)`` (26 at most)
        is a hot pixel; None finds none.
    gap_min_counts : float or None
        A run of planes or lines with no counts is a detector gap when the nearest planes or lines
        on both sides (within ``max_gap_width``) hold at least this many counts; None finds none.
    max_gap_width : int
        Widest gap found, in voxels.
    """

    binning: tuple[int, int, int] | None = None
    oversampling: float = DEFAULT_OVERSAMPLING
    min_oversampling: float = 2.0
    edge_margin: float = 0.25
    centre: str = "series"
    hot_factor: float | None = 100.0
    gap_min_counts: float | None = 20.0
    max_gap_width: int = 8

    def __post_init__(self) -> None:
        if self.binning is not None:
            b = tuple(self.binning) if isinstance(self.binning, (tuple, list)) else None
            if b is None or len(b) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                                               for v in b):
                raise ValueError(f"`binning` must be None or three integers >= 1, got {self.binning!r}")
            object.__setattr__(self, "binning", tuple(int(v) for v in b))
        object.__setattr__(self, "oversampling", _positive(self.oversampling, "oversampling"))
        object.__setattr__(self, "min_oversampling", _positive(self.min_oversampling, "min_oversampling"))
        if self.oversampling < self.min_oversampling:
            raise ValueError(f"`oversampling` ({self.oversampling}) must be >= `min_oversampling` "
                             f"({self.min_oversampling})")
        margin = self.edge_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 0.5:
            raise ValueError(f"`edge_margin` must be in [0, 0.5), got {margin!r}")
        if self.centre not in _CENTRES:
            raise ValueError(f"`centre` must be one of {_CENTRES}, got {self.centre!r}")
        object.__setattr__(self, "hot_factor", _positive(self.hot_factor, "hot_factor", allow_none=True))
        object.__setattr__(self, "gap_min_counts", _positive(self.gap_min_counts, "gap_min_counts", allow_none=True))
        w = self.max_gap_width
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"`max_gap_width` must be an integer >= 1, got {w!r}")


# -- mask ----------------------------------------------------------------------------------------


def _shift(a: np.ndarray, s: int, axis: int) -> np.ndarray:
    """``a`` moved by ``s`` along ``axis`` (``out[i] = a[i - s]``), zero-filled, no wrap-around."""
    out = np.zeros_like(a)
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


def _reasons(intensity: np.ndarray, mask: np.ndarray | None, settings: PrepareSettings) -> dict[str, np.ndarray]:
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
    reasons = _reasons(intensity, mask, settings)
    bits = np.zeros(reasons["mask"].shape, dtype=np.uint32)
    if mask is not None:
        given = np.asarray(mask)
        bits |= given.astype(np.uint32) if given.dtype.kind in "iu" and given.min(initial=0) >= 0 else \
            reasons["mask"].astype(np.uint32) * np.uint32(MASK_INVALID)
    bits[reasons["invalid"]] |= np.uint32(MASK_INVALID)
    bits[reasons["hot"]] |= np.uint32(MASK_HOT)
    bits[reasons["gap"]] |= np.uint32(MASK_GAP)
    return bits


# -- oversampling and peak ---------------------------------------------------------------------------


def _fill(values: np.ndarray, weight: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Unmeasured voxels filled from their measured neighbours, layer by layer (``steps`` voxels deep).

    ``weight`` is how much of each voxel was measured (1: all of it); the filled voxels get weight 1.
    A gap through the peak would otherwise leave a notch in the projections, whose sharp edges
    show up as a long tail of the autocorrelation (a much too low oversampling).
    """
    values, weight = values.copy(), weight.copy()
    for _ in range(steps):
        missing = weight < 1
        if not missing.any():
            break
        total = ndimage.uniform_filter(values * weight, 3, mode="constant")
        norm = ndimage.uniform_filter(weight, 3, mode="constant")
        reach = missing & (norm > 1e-9)
        if not reach.any():
            break
        blend = weight[reach]
        values[reach] = blend * values[reach] + (1 - blend) * total[reach] / norm[reach]
        weight[reach] = 1.0
    return values, weight


def _projection(values: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """Counts per slice normal to ``axis``, scaled up for unmeasured voxels; empty slices interpolated."""
    others = tuple(a for a in range(3) if a != axis)
    counts = values.sum(axis=others)
    measured = weight.sum(axis=others)
    full = float(np.prod([values.shape[a] for a in others]))
    good = measured > 0
    if not good.any():
        return np.zeros_like(counts)
    p = np.zeros_like(counts)
    p[good] = counts[good] * full / measured[good]
    if not good.all():
        x = np.arange(len(p))
        p[~good] = np.interp(x[~good], x[good], p[good])
    return p


def estimate_oversampling(intensity: np.ndarray, measured: np.ndarray | None = None) -> np.ndarray:
    """Oversampling ratio along each axis: the field of view over the object's width.

    The projection of the intensity onto an axis is the Fourier transform of the object's
    autocorrelation along that axis, whose extent is the object's width ``D``. It is read where the
    autocorrelation falls below 2 % of its value next to the origin (the origin itself holds the
    background), calibrated on the training shapes.

    Parameters
    ----------
    intensity : ndarray, 3-D
        Counts, 0 at unmeasured voxels.
    measured : ndarray of bool or float, optional
        Where (or how often) each voxel was measured; slices are scaled up for the rest.

    Returns
    -------
    ndarray, shape (3,)
        ``L / D`` per axis (``L``: the array's length). A value near ``1.5`` or below means the
        autocorrelation never fell: the object is at least half the field of view.

    Notes
    -----
    Accuracy, against the width of 12 simulated crystals along each axis (36 axes): median error
    6 %, largest 26 % (``tests/test_prepare.py``). Masked voxels are filled from their neighbours
    first, so a gap through the peak does not shorten the estimate.
    """
    values = np.asarray(intensity, dtype=np.float64)
    weight = np.ones(values.shape) if measured is None else np.asarray(measured, dtype=np.float64)
    if measured is not None:
        values, weight = _fill(np.where(weight > 0, values / np.maximum(weight, 1e-12), 0.0) * (weight > 0), weight,
                               steps=_FILL_STEPS)
    out = np.empty(3)
    for axis in range(3):
        p = _projection(values, weight, axis)
        L = len(p)
        a = np.abs(np.fft.ifft(p))
        ref = a[1] if L > 2 else 0.0
        if not ref > 0:
            raise ValueError(f"`intensity` has no counts to estimate the oversampling from (axis {axis})")
        level = a[1: L // 2 + 1] / ref
        below = np.nonzero(level < _AUTOCORR_THRESHOLD)[0]
        if below.size == 0:
            x = L / 2.0
        else:
            i = int(below[0])  # level[i] = a[i + 1]
            x = float(i + 1)
            if i > 0 and level[i - 1] > level[i]:
                x = i + (level[i - 1] - _AUTOCORR_THRESHOLD) / (level[i - 1] - level[i])
        out[axis] = L * _AUTOCORR_EXTENT / x
    return out


def find_peak(intensity: np.ndarray, oversampling: Sequence[float] | None = None) -> np.ndarray:
    """Centre of mass of the Bragg peak's central lobe, in voxels (float, one per axis).

    Starts at the brightest voxel of the intensity smoothed over 3^3 voxels and takes the centre
    of mass in a box reaching the lobe's first minimum (``oversampling`` voxels from the centre,
    at least 2), moved to it until it stops moving.

    Parameters
    ----------
    intensity : ndarray, 3-D
        Counts, 0 at unmeasured voxels.
    oversampling : sequence of 3 floats, optional
        From :func:`estimate_oversampling` (default: estimated here).
    """
    values = np.asarray(intensity, dtype=np.float64)
    if not values.sum() > 0:
        raise ValueError("`intensity` has no counts: there is no Bragg peak to find")
    sigma = estimate_oversampling(values) if oversampling is None else np.asarray(oversampling, dtype=float)
    half = np.maximum(2, np.ceil(sigma)).astype(int)
    centre = np.array(np.unravel_index(np.argmax(ndimage.uniform_filter(values, 3)), values.shape))
    com = centre.astype(float)
    for _ in range(20):
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, values.shape)
        box = values[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        total = box.sum()
        if not total > 0:
            break
        com = np.array([(box.sum(axis=tuple(b for b in range(3) if b != a)) * np.arange(lo[a], hi[a])).sum() / total
                        for a in range(3)])
        moved = np.rint(com).astype(int)
        if np.array_equal(moved, centre):
            break
        centre = moved
    return com


def choose_binning(oversampling: Sequence[float], settings: PrepareSettings | None = None) -> tuple[int, int, int]:
    """Binning per axis that brings the oversampling closest to ``settings.oversampling``.

    Never below ``settings.min_oversampling`` (at least 1); ``settings.binning`` when given.
    """
    settings = PrepareSettings() if settings is None else settings
    if settings.binning is not None:
        return settings.binning
    out = []
    for s in np.asarray(oversampling, dtype=float):
        b = max(1, int(round(s / settings.oversampling)))
        while b > 1 and s / b < settings.min_oversampling:
            b -= 1
        out.append(b)
    return tuple(out)  # type: ignore[return-value]


# -- one volume ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePreparation:
    """What :func:`prepare_volume` did to one measured volume.

    Attributes
    ----------
    source : str
        Where the volume came from.
    shape : tuple of int
        Its shape.
    peak : tuple of float
        The peak (centre of mass) the window is centred on, in input voxels.
    binning : tuple of int
        Input voxels summed per output voxel along each axis.
    start : tuple of int
        First input voxel of the window along each axis (negative: the window starts outside).
    grid : int
        Output grid ``N``.
    oversampling : tuple of float
        Estimated oversampling of the input, per axis (of the series' sum with ``centre="series"``).
    counts : float
        Counts at the measured voxels of the input.
    counts_kept : float
        Counts in the prepared frame (the fully measured bins of the window).
    counts_outside : float
        Counts outside the window.
    counts_masked : float
        Counts inside the window, in bins with a masked voxel.
    masked : dict of str to int
        Masked output voxels by first reason: ``mask`` (user or file mask), ``invalid`` (NaN,
        negative), ``hot``, ``gap`` (detector gap), ``outside`` (beyond the measured array).
    peak_offset : tuple of float
        Centre of mass of the prepared frame's central lobe minus ``N // 2``, per axis.
    """

    source: str
    shape: tuple[int, ...]
    peak: tuple[float, ...]
    binning: tuple[int, ...]
    start: tuple[int, ...]
    grid: int
    oversampling: tuple[float, ...]
    counts: float
    counts_kept: float
    counts_outside: float
    counts_masked: float
    masked: dict[str, int] = field(default_factory=dict)
    peak_offset: tuple[float, ...] = (0.0, 0.0, 0.0)

    @property
    def oversampling_out(self) -> tuple[float, ...]:
        """Oversampling of the prepared frame (binning divides it)."""
        return tuple(s / b for s, b in zip(self.oversampling, self.binning))

    @property
    def action(self) -> str:
        """What was done, in words: binned and/or cropped (and padded where the window leaves the array)."""
        N = self.grid
        spans = [N * b for b in self.binning]
        parts = []
        if any(b > 1 for b in self.binning):
            parts.append(f"binned {'x'.join(map(str, self.binning))} (counts summed)")
        cropped = [a for a, (L, w) in enumerate(zip(self.shape, spans)) if L > w]
        parts.append(f"cropped to {N}^3 around the peak" if cropped else f"placed on {N}^3 around the peak")
        padded = [a for a, (s, L, w) in enumerate(zip(self.start, self.shape, spans)) if s < 0 or s + w > L]
        if padded:
            axes = f"axes {', '.join(map(str, padded))} reach" if len(padded) > 1 else f"axis {padded[0]} reaches"
            parts.append(f"{axes} beyond the measured array (masked)")
        return ", ".join(parts)

    def line(self) -> str:
        """One human-readable line."""
        def pct(x: float) -> str:
            return f"{100 * x / self.counts:.1f}%" if self.counts > 0 else "n/a"

        total = self.grid ** 3
        reasons = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in self.masked.items() if v)
        return (f"{self.source}: peak at ({', '.join(f'{c:.1f}' for c in self.peak)}) of "
                f"{'x'.join(map(str, self.shape))}; {self.action}; kept {pct(self.counts_kept)} of "
                f"{self.counts:.4g} counts ({pct(self.counts_outside)} outside the window, {pct(self.counts_masked)} "
                f"in masked bins); masked {100 * sum(self.masked.values()) / total:.1f}%"
                f"{f' ({reasons})' if reasons else ''}; oversampling "
                f"{', '.join(f'{s:.1f}' for s in self.oversampling_out)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for a file's attributes)."""
        return {**dataclasses.asdict(self), "action": self.action}


@dataclass(frozen=True, eq=False)
class PreparedFrame:
    """A measured volume on the model's grid.

    Attributes
    ----------
    intensity : ndarray, float32, (N, N, N)
        Counts, peak at ``N // 2``; 0 at masked voxels.
    mask : ndarray, uint32, (N, N, N)
        CXI pixel-mask bits, nonzero = not measured.
    report : FramePreparation
    """

    intensity: np.ndarray
    mask: np.ndarray
    report: FramePreparation


def _window_start(peak: np.ndarray, binning: Sequence[int], N: int) -> np.ndarray:
    """First input voxel per axis of the window whose bin ``N // 2`` is centred on ``peak``."""
    b = np.asarray(binning)
    return np.rint(peak - (b - 1) / 2.0).astype(int) - (N // 2) * b


def _cut(array: np.ndarray, start: np.ndarray, binning: Sequence[int], N: int, fill: Any) -> np.ndarray:
    """The window of ``N * b`` input voxels per axis from ``start``, shaped (N, b0, N, b1, N, b2)."""
    spans = [N * b for b in binning]
    out = np.full(spans, fill, dtype=array.dtype)
    src, dst = [], []
    for s, w, L in zip(start, spans, array.shape):
        lo, hi = max(s, 0), min(s + w, L)
        if hi <= lo:
            return out.reshape(N, binning[0], N, binning[1], N, binning[2])
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out.reshape(N, binning[0], N, binning[1], N, binning[2])


def _check_fit(source: str, peak: np.ndarray, shape: Sequence[int], binning: Sequence[int],
               oversampling: np.ndarray, N: int, settings: PrepareSettings) -> None:
    """Refuse a frame whose object would not fit the model's box or whose peak is too near an edge."""
    for axis, (s, b) in enumerate(zip(oversampling, binning)):
        if s / b < settings.min_oversampling:
            how = f" after binning by {b}" if b > 1 else ""
            raise ValueError(
                f"{source}: the oversampling along axis {axis} is {s / b:.2f}{how}, below {settings.min_oversampling:g} "
                f"(`min_oversampling`): the object spans more than half of the field of view, so it does not fit "
                f"in the model's n^3 object box (N = 2n); it needs finer sampling of the diffraction (smaller "
                f"angular or detector steps){' or less binning' if b > 1 else ''}")
    need = settings.edge_margin * N
    for axis, (c, L, b) in enumerate(zip(peak, shape, binning)):
        room = min(c + 0.5, L - 0.5 - c) / b
        if room < need:
            raise ValueError(
                f"{source}: the Bragg peak at voxel {c:.1f} of axis {axis} (length {L}) is {room:.1f} output voxels "
                f"from the edge of the measured volume{f' after binning by {b}' if b > 1 else ''}; the model needs at "
                f"least {need:g} measured voxels on each side of the peak (`edge_margin` {settings.edge_margin:g} of "
                f"N = {N}): measure with the peak nearer the middle of the detector and of the scan, or bin more")


def prepare_volume(
    volume: MeasuredVolume | np.ndarray,
    N: int,
    settings: PrepareSettings | None = None,
    *,
    peak: Sequence[float] | None = None,
    binning: Sequence[int] | None = None,
    oversampling: Sequence[float] | None = None,
) -> PreparedFrame:
    """Put one measured volume on the ``N^3`` grid (see the module docstring for the steps).

    Parameters
    ----------
    volume : MeasuredVolume or ndarray
        The measured counts (an ndarray: no mask, source ``"<array>"``).
    N : int
        The model's diffraction grid (even).
    settings : PrepareSettings, optional
    peak, binning, oversampling : optional
        Found from this volume when not given (a series passes those of its sum).

    Returns
    -------
    PreparedFrame

    Raises
    ------
    ValueError
        The volume has no counts, its oversampling is too low for the model, or the peak is too
        close to an edge (the message names the axis, the numbers and what to change).
    """
    settings = PrepareSettings() if settings is None else settings
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 4 or N % 2:
        raise ValueError(f"`N` must be an even integer >= 4 (the model's grid, N = 2n), got {N!r}")
    if not isinstance(volume, MeasuredVolume):
        volume = MeasuredVolume(np.asarray(volume), None, None, "<array>")
    reasons = _reasons(volume.intensity, volume.mask, settings)
    bad = np.logical_or.reduce([reasons[k] for k in ("mask", "invalid", "hot", "gap")])
    with np.errstate(invalid="ignore"):
        values = np.where(bad, 0.0, np.asarray(volume.intensity, dtype=np.float64))
    counts = float(values.sum())
    if not counts > 0:
        raise ValueError(f"{volume.source}: no counts at the measured voxels")
    sigma = estimate_oversampling(values, ~bad) if oversampling is None else np.asarray(oversampling, dtype=float)
    centre = find_peak(values, sigma) if peak is None else np.asarray(peak, dtype=float)
    b = tuple(int(v) for v in (choose_binning(sigma, settings) if binning is None else binning))
    _check_fit(volume.source, centre, values.shape, b, sigma, N, settings)
    start = _window_start(centre, b, N)
    window = _cut(values, start, b, N, 0.0)
    outside = ~_cut(np.ones(values.shape, dtype=bool), start, b, N, False).all(axis=(1, 3, 5))
    binned = {k: _cut(v, start, b, N, False).any(axis=(1, 3, 5)) for k, v in reasons.items()}
    binned["outside"] = outside & ~np.logical_or.reduce(list(binned.values()))
    masked_out = np.logical_or.reduce(list(binned.values()))
    sums = window.sum(axis=(1, 3, 5))
    intensity = np.where(masked_out, 0.0, sums)
    bits = np.zeros((N, N, N), dtype=np.uint32)
    file_bits = None if volume.mask is None else _cut(np.asarray(volume.mask, dtype=np.uint32), start, b, N, 0)
    if file_bits is not None:
        bits |= np.bitwise_or.reduce(file_bits, axis=(1, 3, 5)).astype(np.uint32)
    for reason, bit in (("invalid", MASK_INVALID), ("hot", MASK_HOT), ("gap", MASK_GAP), ("outside", MASK_GAP)):
        bits[binned[reason]] |= np.uint32(bit)
    first = np.zeros((N, N, N), dtype=bool)
    masked = {}
    for reason in _REASONS:
        only = binned[reason] & ~first
        masked[reason] = int(only.sum())
        first |= binned[reason]
    kept = float(intensity.sum())
    offset = find_peak(intensity, np.asarray(sigma) / np.asarray(b)) - N // 2 if kept > 0 else np.full(3, np.nan)
    report = FramePreparation(
        source=volume.source, shape=tuple(int(s) for s in values.shape), peak=tuple(float(c) for c in centre),
        binning=b, start=tuple(int(s) for s in start), grid=int(N), oversampling=tuple(float(s) for s in sigma),
        counts=counts, counts_kept=kept, counts_outside=counts - float(window.sum()),
        counts_masked=float(window.sum()) - kept, masked=masked, peak_offset=tuple(float(o) for o in offset),
    )
    log.info("%s", report.line())
    return PreparedFrame(intensity=intensity.astype(np.float32), mask=bits, report=report)


# -- a series ----------------------------------------------------------------------------------------


def _series_sum(series: MeasuredSeries, settings: PrepareSettings) -> tuple[np.ndarray, np.ndarray]:
    """Counts summed over the frames (masked voxels left out) and the fraction of frames measuring each voxel."""
    total = np.zeros(series.shape)
    measured = np.zeros(series.shape)
    for volume in series:
        reasons = _reasons(volume.intensity, volume.mask, settings)
        bad = np.logical_or.reduce(list(reasons.values()))
        with np.errstate(invalid="ignore"):
            total += np.where(bad, 0.0, np.asarray(volume.intensity, dtype=np.float64))
        measured += ~bad
    return total, measured / len(series)


def prepare_series(
    inputs: MeasuredSeries | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    N: int,
    settings: PrepareSettings | None = None,
    *,
    overwrite: bool = False,
    callback: Callable[[FramePreparation], object] | None = None,
) -> tuple[Path, list[FramePreparation]]:
    """Prepare measured volumes and write them as one CXI series the other commands read.

    Parameters
    ----------
    inputs : MeasuredSeries, path or sequence of paths
        What :func:`latenttune.io.measured.open_measured` opens (a folder of time steps is one
        series); give a :class:`MeasuredSeries` for a user mask or amplitudes.
    out : str or Path
        The CXI file (written to ``OUT.partial`` and renamed when complete).
    N : int
        The model's diffraction grid (``model.config.N``).
    settings : PrepareSettings, optional
    overwrite : bool
        Replace an existing ``out``.
    callback : callable, optional
        ``callback(report)`` after each frame is written.

    Returns
    -------
    (Path, list of FramePreparation)
        The series file and what was done to each frame.
    """
    settings = PrepareSettings() if settings is None else settings
    series = inputs if isinstance(inputs, MeasuredSeries) else open_measured(inputs)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    total, measured = _series_sum(series, settings)
    if not total.sum() > 0:
        raise ValueError(f"`inputs` hold no counts at measured voxels ({len(series)} frame(s))")
    sigma = estimate_oversampling(total, measured)
    binning = choose_binning(sigma, settings)
    common = find_peak(total, sigma) if settings.centre == "series" else None
    times = series.times
    reports: list[FramePreparation] = []
    summary = {"grid": int(N), "binning": list(binning), "oversampling": [float(s) for s in sigma],
               "centre": settings.centre, "peak": None if common is None else [float(c) for c in common]}
    attrs = {
        "prepared_by": "latenttune prepare",
        "prepare_settings": json.dumps(dataclasses.asdict(settings)),
        "prepare_summary": json.dumps(summary),
        "prepare_inputs": json.dumps(series.sources[:1000]),
        "time_source": "the inputs' time stamps" if times is not None else "frame index (the inputs have none)",
    }
    if common is not None:  # one window for all: refuse it before writing anything
        _check_fit(f"the sum of {len(series)} frame(s)", common, series.shape, binning, sigma, int(N), settings)
    writer = CXISeriesWriter(out, int(N), attrs=attrs, overwrite=overwrite, compression="gzip")
    try:
        for index, volume in enumerate(series):
            frame = prepare_volume(volume, N, settings, peak=common, binning=binning, oversampling=sigma)
            time = float(index) if times is None else times[index]
            writer.append(frame.intensity, mask=frame.mask, time=time)
            reports.append(frame.report)
            if callback is not None:
                callback(frame.report)
        writer.close()
    except BaseException:
        writer.abort()
        writer.partial_path.unlink(missing_ok=True)  # a prepared series is made again, never resumed
        raise
    log.info("prepared %d frame(s) into %s", len(reports), out)
    return out, reports
