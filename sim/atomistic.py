"""Atomistic crystals binned to the voxel grid (as in the 3D-CDI-NN simulation pipeline).

The continuum scenarios of :mod:`sim.scenarios` render an occupancy from signed distances and add
analytic phase fields; real crystals are made of atoms. Here a face-centred cubic (FCC) lattice
is cut by facet planes, its sites are displaced by a displacement field ``u``, and every atom is
dropped into the voxel that contains it (nearest-voxel binning) with the Bragg phasor
``exp(2 pi i G . u)`` of the reflection ``G``. The voxel value is the sum over its atoms divided by
the number of atoms a voxel holds in the bulk, so the amplitude is about 1 inside and falls off
over a voxel at the surface, with the atomic-scale texture (steps on facets, counts that vary
from voxel to voxel with the lattice's orientation) that the continuum rendering lacks.

Lengths are in voxels; the lattice constant is a fraction of a voxel (many atoms per voxel).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["FCC_BASIS", "fcc_sites", "bin_atoms", "bulk_atoms_per_voxel"]

#: The four sites of the conventional FCC cell, in units of the lattice constant.
FCC_BASIS = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])


def bulk_atoms_per_voxel(lattice_constant: float) -> float:
    """Atoms per voxel in the bulk, ``4 / a^3``."""
    a = float(lattice_constant)
    if not np.isfinite(a) or a <= 0:
        raise ValueError(f"`lattice_constant` must be finite and > 0, got {lattice_constant!r}")
    return 4.0 / a**3


@lru_cache(maxsize=4)
def _sites_in_ball(radius: float, lattice_constant: float) -> np.ndarray:
    a = lattice_constant
    m = int(np.ceil(radius / a)) + 1
    cells = np.arange(-m, m + 1, dtype=np.float64)
    grid = np.stack(np.meshgrid(cells, cells, cells, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    sites = ((grid + FCC_BASIS[None]) * a).reshape(-1, 3)
    sites = sites[np.einsum("ij,ij->i", sites, sites) <= radius * radius]
    sites.setflags(write=False)
    return sites


def fcc_sites(radius: float, lattice_constant: float) -> np.ndarray:
    """FCC lattice sites within ``radius`` of the origin (a site sits at the origin).

    Parameters
    ----------
    radius : float
        Ball radius (voxels, > 0).
    lattice_constant : float
        Cubic lattice constant ``a`` (voxels, > 0).

    Returns
    -------
    ndarray, shape (M, 3)
        Read-only float64 site positions (cached: do not modify).
    """
    r, a = float(radius), float(lattice_constant)
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"`radius` must be finite and > 0, got {radius!r}")
    bulk_atoms_per_voxel(a)
    if (2 * r / a) ** 3 * 4 > 5e7:
        raise ValueError(f"`radius` {r} / `lattice_constant` {a} would need more than 5e7 sites")
    return _sites_in_ball(r, a)


def bin_atoms(positions: np.ndarray, weights: np.ndarray, n: int, atoms_per_voxel: float) -> np.ndarray:
    """Sum complex atom weights into the voxels that contain the atoms.

    Parameters
    ----------
    positions : ndarray, shape (M, 3)
        Atom positions in centred voxel coordinates (0 at index ``n // 2``).
    weights : ndarray, shape (M,)
        Complex weight per atom (its Bragg phasor).
    n : int
        Grid size.
    atoms_per_voxel : float
        Normalisation: atoms in a full bulk voxel.

    Returns
    -------
    ndarray, shape (n, n, n), complex64

    Raises
    ------
    ValueError
        If an atom falls outside the grid.
    """
    pos = np.asarray(positions, dtype=np.float64)
    w = np.asarray(weights)
    if pos.ndim != 2 or pos.shape[1] != 3 or w.shape != (pos.shape[0],):
        raise ValueError(f"`positions` must be (M, 3) and `weights` (M,), got {pos.shape} and {w.shape}")
    index = np.rint(pos).astype(np.int64) + n // 2
    if index.size and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"atoms fall outside the {n}^3 grid: shrink the crystal or move it to the centre")
    flat = np.ravel_multi_index(index.T, (n, n, n))
    real = np.bincount(flat, weights=w.real, minlength=n**3)
    imag = np.bincount(flat, weights=w.imag, minlength=n**3)
    return ((real + 1j * imag) / atoms_per_voxel).reshape(n, n, n).astype(np.complex64)
