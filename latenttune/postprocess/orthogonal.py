"""Resampling a reconstruction onto a cubic grid in the crystal frame (for figures and ParaView)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from latenttune.geometry import FrameTransform

__all__ = ["orthogonalise"]


def orthogonalise(volumes: dict[str, np.ndarray], support: np.ndarray, transform: FrameTransform,
                  centre: np.ndarray) -> tuple[dict[str, np.ndarray], float, np.ndarray]:
    """Resample object-grid ``volumes`` onto a cubic grid in the crystal frame.

    The grid's spacing is the cube root of the reconstruction's voxel volume; it spans the
    support's extent plus two voxels; linear interpolation (the support: nearest voxel).

    Parameters
    ----------
    volumes : dict of str to ndarray (n, n, n)
        Real volumes on the object grid.
    support : bool ndarray (n, n, n)
    transform : FrameTransform
    centre : ndarray (3,)
        Object-grid voxel put at the crystal frame's origin (the support's centre of mass).

    Returns
    -------
    (dict, float, ndarray)
        The resampled volumes (and ``support``), the spacing (nm) and the grid's first point (nm,
        crystal frame).
    """
    T = transform.real_basis
    R = transform.lab_to_crystal
    h = abs(np.linalg.det(T)) ** (1 / 3)
    inside = np.argwhere(support) - centre
    crystal = (R @ T @ inside.T).T  # crystal-frame positions of the support's voxels, nm
    low = np.floor(crystal.min(axis=0) / h) - 2
    high = np.ceil(crystal.max(axis=0) / h) + 2
    axes = [np.arange(a, b + 1) * h for a, b in zip(low, high)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # crystal-frame positions, nm
    index = np.tensordot(np.linalg.inv(R @ T), grid, axes=1) + centre[:, None, None, None]
    out = {name: ndimage.map_coordinates(np.asarray(v, dtype=np.float64), index, order=1, cval=0.0).astype(np.float32)
           for name, v in volumes.items()}
    out["support"] = ndimage.map_coordinates(support.astype(np.float32), index, order=0, cval=0.0).astype(np.float32)
    return out, float(h), low * h
