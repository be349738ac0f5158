"""Detector model, kept apart from the physics: ``sensor(noise(A(x)))``.

``A`` is :func:`sim.forward.forward` (an ideal intensity on the ``N^3`` grid,
peak at index ``N // 2``). This module adds

* :func:`poisson_counts` (noise): photon counting scaled so the *expected*
  total number of photons from the sample is ``photons``, plus a constant
  ``background`` (expected counts per voxel), all Poisson distributed;
* the sensor: :func:`beamstop_mask` (a sphere around ``q = 0``),
  :func:`gap_mask` (planes of dead voxels, like module gaps) and saturation
  (counts above a level are clipped and flagged).

:class:`Detector` composes them. Masks follow the project convention: True
marks a voxel that was NOT measured; its counts are set to 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["Measurement", "Detector", "poisson_counts", "beamstop_mask", "gap_mask"]

logger = logging.getLogger(__name__)


def _check_N(N: int) -> int:
    if isinstance(N, bool) or int(N) != N or N < 2:
        raise ValueError(f"`N` must be an integer >= 2, got {N!r}")
    return int(N)


def _check_intensity(intensity) -> np.ndarray:
    I = np.asarray(intensity)
    if I.ndim < 3 or not (I.shape[-1] == I.shape[-2] == I.shape[-3]):
        raise ValueError(f"`intensity` must be an array (..., N, N, N) ending in a cube, got shape {I.shape}")
    if not np.issubdtype(I.dtype, np.floating) and not np.issubdtype(I.dtype, np.integer):
        raise TypeError(f"`intensity` must be a real array, got dtype {I.dtype}")
    I = I.astype(np.float64, copy=False)
    if not np.all(np.isfinite(I)) or np.any(I < 0):
        raise ValueError("`intensity` must be finite and >= 0")
    totals = I.sum(axis=(-3, -2, -1))
    if np.any(totals <= 0):
        raise ValueError("`intensity` must have a positive total in every pattern")
    return I


def poisson_counts(
    intensity: np.ndarray, photons: float, background: float, rng: np.random.Generator
) -> np.ndarray:
    """Poisson photon counts with ``photons`` expected from the sample per pattern.

    Expected counts are ``photons * I / sum(I) + background`` per voxel (the
    sum over the last three axes, so each pattern of a batch is scaled on its
    own).

    Parameters
    ----------
    intensity : ndarray, shape (..., N, N, N)
        Ideal intensity (any scale), >= 0.
    photons : float
        Expected total counts from the sample, > 0.
    background : float
        Expected background counts per voxel, >= 0.
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    ndarray
        float32 counts, shape of ``intensity``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    photons = _check_photons(photons)
    background = _check_background(background)
    I = _check_intensity(intensity)
    lam = I * (photons / I.sum(axis=(-3, -2, -1), keepdims=True))
    if background > 0:
        lam = lam + background
    return rng.poisson(lam).astype(np.float32)


def beamstop_mask(N: int, radius: float) -> np.ndarray:
    """Boolean ``(N, N, N)`` mask, True within ``radius`` voxels of ``q = 0`` (index ``N // 2``).

    ``radius = 0`` masks nothing; ``radius = 0.5`` masks the central voxel only.
    """
    N = _check_N(N)
    radius = _check_beamstop(radius)
    if radius == 0:
        return np.zeros((N, N, N), dtype=bool)
    x = np.arange(N) - N // 2
    r2 = x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2
    return r2 <= radius**2


def gap_mask(N: int, gaps: tuple[tuple[int, int], ...], width: int) -> np.ndarray:
    """Boolean ``(N, N, N)`` mask of detector gaps.

    Each gap ``(axis, position)`` is a slab of ``width`` voxels perpendicular
    to ``axis``, covering indices ``position - width // 2`` to
    ``position - width // 2 + width - 1`` (clipped to the grid).
    """
    N = _check_N(N)
    gaps = _check_gaps(gaps)
    width = _check_gap_width(width)
    mask = np.zeros((N, N, N), dtype=bool)
    if width == 0:
        return mask
    for axis, pos in gaps:
        if not 0 <= pos < N:
            raise ValueError(f"`gaps` position {pos} must be in [0, {N - 1}] for N = {N}")
        lo = max(pos - width // 2, 0)
        hi = min(pos - width // 2 + width, N)
        index = [slice(None)] * 3
        index[axis] = slice(lo, hi)
        mask[tuple(index)] = True
    return mask


def _check_photons(photons) -> float:
    try:
        p = float(photons)
    except (TypeError, ValueError):
        raise TypeError(f"`photons` must be a number, got {type(photons).__name__}") from None
    if not np.isfinite(p) or p <= 0:
        raise ValueError(f"`photons` must be finite and > 0, got {photons!r}")
    return p


def _check_background(background) -> float:
    b = float(background)
    if not np.isfinite(b) or b < 0:
        raise ValueError(f"`background` must be finite and >= 0 counts per voxel, got {background!r}")
    return b


def _check_beamstop(radius) -> float:
    r = float(radius)
    if not np.isfinite(r) or r < 0:
        raise ValueError(f"`beamstop_radius` must be finite and >= 0 voxels, got {radius!r}")
    return r


def _check_gap_width(width) -> int:
    if isinstance(width, bool) or int(width) != width or width < 0:
        raise ValueError(f"`gap_width` must be an integer >= 0, got {width!r}")
    return int(width)


def _check_gaps(gaps) -> tuple[tuple[int, int], ...]:
    out = []
    try:
        items = list(gaps)
    except TypeError:
        raise ValueError(f"`gaps` must be a sequence of (axis, position) pairs, got {gaps!r}") from None
    for g in items:
        try:
            axis, pos = g
        except (TypeError, ValueError):
            raise ValueError(f"`gaps` must be a sequence of (axis, position) pairs, got item {g!r}") from None
        if isinstance(axis, bool) or int(axis) != axis or axis not in (0, 1, 2):
            raise ValueError(f"`gaps` axis must be 0, 1 or 2, got {axis!r}")
        if isinstance(pos, bool) or int(pos) != pos or pos < 0:
            raise ValueError(f"`gaps` position must be a non-negative integer index, got {pos!r}")
        out.append((int(axis), int(pos)))
    return tuple(out)


@dataclass(frozen=True)
class Measurement:
    """One measured pattern (or a batch).

    Attributes
    ----------
    counts : ndarray
        float32 photon counts ``(..., N, N, N)``; 0 where ``mask`` is True.
    mask : ndarray
        bool, True = not measured (beamstop, gap or saturated).
    saturated : ndarray
        bool, True where the counts exceeded the saturation level (a subset of ``mask``).
    """

    counts: np.ndarray
    mask: np.ndarray
    saturated: np.ndarray


@dataclass(frozen=True)
class Detector:
    """Photon-counting detector: Poisson noise, beamstop, gaps and saturation.

    Parameters
    ----------
    photons : float
        Expected total counts from the sample per pattern (e.g. 1e8), > 0.
    background : float
        Expected background counts per voxel, >= 0 (Poisson too).
    beamstop_radius : float
        Radius (voxels) of the spherical beamstop around ``q = 0``; 0 = none.
    gap_width : int
        Width (voxels) of every detector gap; 0 = no gaps.
    gaps : tuple of (axis, position)
        Gap slabs perpendicular to ``axis`` centred on index ``position``.
    saturation : float or None
        Counts above this level are clipped and masked as saturated; None = never.
    """

    photons: float = 1e8
    background: float = 0.0
    beamstop_radius: float = 0.0
    gap_width: int = 0
    gaps: tuple[tuple[int, int], ...] = ()
    saturation: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "photons", _check_photons(self.photons))
        object.__setattr__(self, "background", _check_background(self.background))
        object.__setattr__(self, "beamstop_radius", _check_beamstop(self.beamstop_radius))
        object.__setattr__(self, "gap_width", _check_gap_width(self.gap_width))
        object.__setattr__(self, "gaps", _check_gaps(self.gaps))
        if self.saturation is not None:
            s = float(self.saturation)
            if not np.isfinite(s) or s <= 0:
                raise ValueError(f"`saturation` must be None or finite and > 0 counts, got {self.saturation!r}")
            object.__setattr__(self, "saturation", s)

    def sensor_mask(self, N: int) -> np.ndarray:
        """Static mask ``(N, N, N)`` of the beamstop and gaps (True = not measured)."""
        return beamstop_mask(N, self.beamstop_radius) | gap_mask(N, self.gaps, self.gap_width)

    def measure(self, intensity: np.ndarray, rng: np.random.Generator) -> Measurement:
        """Measure an ideal intensity: ``sensor(noise(intensity))``.

        Parameters
        ----------
        intensity : ndarray, shape (..., N, N, N)
            Ideal intensity from :func:`sim.forward.forward` (any scale).
        rng : numpy.random.Generator
            Source of the noise.

        Returns
        -------
        Measurement
            Counts (float32, 0 where masked), mask and saturation flags, each
            of the shape of ``intensity``.
        """
        counts = poisson_counts(intensity, self.photons, self.background, rng)
        N = counts.shape[-1]
        static = self.sensor_mask(N)
        if self.saturation is not None:
            saturated = counts > self.saturation
            np.minimum(counts, np.float32(self.saturation), out=counts)
        else:
            saturated = np.zeros(counts.shape, dtype=bool)
        mask = saturated | static
        counts[mask] = 0.0
        return Measurement(counts=counts, mask=mask, saturated=saturated)
