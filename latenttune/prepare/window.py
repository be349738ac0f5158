"""Where the object sits in a measured volume: oversampling, the Bragg peak, binning and the window.

``prepare`` estimates the oversampling per axis from the extent of the object's autocorrelation
(the inverse Fourier transform of the intensity's projection onto the axis, the idea behind
cohere's ``get_oversample_ratio``), chooses the binning that brings it closest to the model's
training data without going below ``min_oversampling``, finds the centre of mass of the Bragg
peak's central lobe, and cuts the ``N^3`` window with the peak at ``N // 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from latenttune.prepare.settings import DEFAULT_OVERSAMPLING, PrepareSettings

__all__ = ["estimate_oversampling", "find_peak", "choose_binning", "window_start", "cut_window", "check_fit",
           "DEFAULT_OVERSAMPLING"]

#: Autocorrelation threshold (fraction of its value next to the origin) that marks the object's
#: extent, and the ratio of the threshold crossing to the object's width along the axis: the median
#: of that ratio over the training shapes (its spread across shapes bounds the estimate's accuracy,
#: see :func:`estimate_oversampling`).
_AUTOCORR_THRESHOLD = 0.02
_AUTOCORR_EXTENT = 0.765
#: Deepest unmeasured region (voxels from a measured one) filled before the oversampling is estimated.
_FILL_STEPS = 8





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
    Accuracy, against the width of simulated crystals of known size along each axis: within the
    bounds ``tests/test_prepare.py`` checks (median error under 10 %, largest under 30 %), the
    residual spread of the crystal shapes' autocorrelation extent. Masked voxels are filled from their neighbours
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


def window_start(peak: np.ndarray, binning: Sequence[int], N: int) -> np.ndarray:
    """First input voxel per axis of the window whose bin ``N // 2`` is centred on ``peak``."""
    b = np.asarray(binning)
    return np.rint(peak - (b - 1) / 2.0).astype(int) - (N // 2) * b


def cut_window(array: np.ndarray, start: np.ndarray, binning: Sequence[int], N: int, fill: Any) -> np.ndarray:
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


def check_fit(source: str, peak: np.ndarray, shape: Sequence[int], binning: Sequence[int],
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
