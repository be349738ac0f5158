"""A simulated Bragg scan of a strained crystal, in the detector frame: :func:`strained_crystal_scan`.

For tests, the documentation's walkthrough and the benchmark: what a diffractometer with
:class:`BraggGeometry` records from a crystal with a known displacement field. The crystal is an
ellipsoid (axes ``radius`` object voxels of the prepared grid ``N``), its displacement along ``G``
the sum of a strain gradient (``u = k (r . G_hat)^2 / 2``, so the strain along ``G`` grows
linearly by ``strain_range`` across the crystal) and, optionally, the field of an edge dislocation
through the crystal's centre (:func:`sim.phase.dislocation_displacement`, line normal to ``G``,
Burgers vector with ``G . b = 2 pi``). The object is sampled at the laboratory positions of the
scan's own real-space grid (``(2 pi / L) (B^-1)^T`` for an array of ``L`` voxels: non-orthogonal
for a rocking scan), Fourier transformed, cut to ``shape`` around an off-centre peak, and counted
with Poisson noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latenttune.geometry.setup import BraggGeometry
from latenttune.geometry.transform import FrameTransform, frame_transform
from sim.phase import dislocation_displacement

__all__ = ["StrainedScan", "strained_crystal_scan", "strained_crystal"]


@dataclass(frozen=True, eq=False)
class StrainedScan:
    """A simulated scan and its truth.

    Attributes
    ----------
    counts : ndarray float32
        Photon counts, axes (rocking angle, detector row, detector column).
    peak : ndarray (3,)
        Where the Bragg peak's centre (the q of the reference lattice) lies in ``counts``.
    truth : ndarray complex64, (N/2, N/2, N/2)
        The crystal as a reconstruction on the ``N`` grid centred on ``peak`` sees it: the object
        band-limited to the window's q range (centre at ``N // 4``).
    """

    counts: np.ndarray
    peak: np.ndarray
    truth: np.ndarray

    def truth_for_window(self, centre: np.ndarray) -> np.ndarray:
        """:attr:`truth` for a window centred on input voxel ``centre`` (integer steps from ``peak``): a phase ramp."""
        delta = np.asarray(centre, dtype=float) - self.peak
        n = self.truth.shape[0]
        j = np.indices(self.truth.shape, dtype=float) - n // 2
        return (self.truth * np.exp(-2j * np.pi * np.tensordot(delta, j, axes=1) / (2 * n))).astype(np.complex64)


def _crystal(positions: np.ndarray, index: np.ndarray, g_hat: np.ndarray, g_norm: float, radius: float,
             size_nm: float, strain_range: float, dislocation: bool, lattice_nm: float) -> np.ndarray:
    """Complex density at laboratory ``positions`` (3, ...) nm whose prepared-grid voxel coordinates are ``index``."""
    amplitude = np.clip(radius + 0.5 - np.linalg.norm(index, axis=0), 0.0, 1.0)
    along = np.tensordot(g_hat, positions, axes=1)
    u = 0.5 * (strain_range / size_nm) * along ** 2  # strain along G: strain_range * along / size_nm
    if dislocation:
        line = np.cross(g_hat, [1.0, 0.0, 0.0]) if abs(g_hat[0]) < 0.9 else np.cross(g_hat, [0.0, 1.0, 0.0])
        line /= np.linalg.norm(line)
        glide = np.cross(line, g_hat)
        b_along = 2 * np.pi / g_norm  # G . b = 2 pi: the phase winds once around the line
        b_norm = lattice_nm / np.sqrt(2)  # a/2 <110>
        b = b_along * g_hat + np.sqrt(max(b_norm ** 2 - b_along ** 2, 0.0)) * glide
        field = dislocation_displacement(positions.reshape(3, -1), (0.0, 0.0, 0.0), line, b,
                                         core_radius=0.5 * size_nm / (2 * radius)).reshape(positions.shape)
        u = u + np.tensordot(g_hat, field, axes=1)
    return (amplitude * np.exp(1j * g_norm * u)).astype(np.complex64)


def strained_crystal(transform: FrameTransform, geometry: BraggGeometry, n: int, radius: float = 7.0,
                     strain_range: float = 1e-3, dislocation: bool = True) -> np.ndarray:
    """The truth on the prepared grid's object box ``n^3`` (centre at ``n // 2``), as the reconstruction should be."""
    index = np.indices((n, n, n), dtype=float) - n // 2
    positions = np.tensordot(transform.real_basis, index, axes=1)
    size_nm = 2 * radius * float(np.mean(transform.voxel_size_nm))
    g_hat = transform.G / np.linalg.norm(transform.G)
    return _crystal(positions, index, g_hat, geometry.G_norm, radius, size_nm, strain_range, dislocation,
                    geometry.lattice_constant_nm)


def strained_crystal_scan(geometry: BraggGeometry, rng: np.random.Generator, *, N: int = 64, radius: float = 7.0,
                          strain_range: float = 1e-3, dislocation: bool = True,
                          shape: tuple[int, int, int] = (100, 112, 104), offset: tuple[int, int, int] = (6, -8, 5),
                          photons: float = 1e9) -> StrainedScan:
    """Simulate the scan (see the module docstring).

    Parameters
    ----------
    geometry : BraggGeometry
    rng : numpy.random.Generator
        Draws the Poisson counts.
    N : int
        The grid the scan will be prepared on (binning 1); ``radius`` is in its object voxels.
    radius : float
        Crystal radius, object voxels of the prepared grid.
    strain_range : float
        How much the strain along ``G`` grows across the crystal.
    dislocation : bool
        Add an edge dislocation through the centre.
    shape : three ints
        The recorded array (at most ``2 N`` per axis).
    offset : three ints
        Where the peak lies from the array's centre, voxels.
    photons : float
        Expected total counts.
    """
    L = 2 * N
    if any(s > L for s in shape):
        raise ValueError(f"`shape` must be at most {L} voxels per axis (2 N), got {shape!r}")
    fine = frame_transform(geometry, L)
    coarse = frame_transform(geometry, N)
    index = (np.indices((L, L, L), dtype=float) - L // 2) * (N / L)  # in prepared-grid object voxels
    positions = np.tensordot(fine.real_basis, np.indices((L, L, L), dtype=float) - L // 2, axes=1)
    size_nm = 2 * radius * float(np.mean(coarse.voxel_size_nm))
    g_hat = fine.G / np.linalg.norm(fine.G)
    density = _crystal(positions, index, g_hat, geometry.G_norm, radius, size_nm, strain_range, dislocation,
                       geometry.lattice_constant_nm)
    amplitude = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(density)))
    intensity = np.abs(amplitude) ** 2
    start = [L // 2 - s // 2 - o for s, o in zip(shape, offset)]
    cut = intensity[tuple(slice(a, a + s) for a, s in zip(start, shape))]
    counts = rng.poisson(cut * photons / intensity.sum()).astype(np.float32)
    peak = np.array([L // 2 - a for a in start], dtype=float)
    window = amplitude[(slice(L // 2 - N // 2, L // 2 + N // 2),) * 3]
    band = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(window)))
    n = N // 2
    truth = band[(slice(N // 2 - n // 2, N // 2 + n // 2),) * 3]
    truth = truth / np.abs(truth).max()
    return StrainedScan(counts=counts, peak=peak, truth=truth.astype(np.complex64))
