"""Voxel coordinate grids and 3D rotations.

Conventions (docs/conventions.md section 2): the object grid is ``n^3`` and voxel
coordinates are centred, ``x = i - n // 2`` for index ``i`` on every axis, so
the object centre is index ``n // 2``. Coordinate component ``k`` refers to
array axis ``k`` (there is no x/y/z relabelling anywhere in :mod:`sim`).

Rotation matrices ``R`` map body (crystal) coordinates to grid coordinates:
``r_grid = R @ r_body + centre``. Rendering a shape therefore evaluates it at
``r_body = R.T @ (r_grid - centre)`` (:func:`to_body`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "centred_coords",
    "random_rotation",
    "rotation_about_axis",
    "as_rotation_matrix",
    "to_body",
    "rotate_coords",
]


def _check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}")
    return int(n)


@lru_cache(maxsize=16)
def _coords_cached(n: int) -> np.ndarray:
    x = np.arange(n, dtype=np.float64) - n // 2
    grid = np.stack(np.meshgrid(x, x, x, indexing="ij"), axis=0)
    grid.setflags(write=False)
    return grid


def centred_coords(n: int) -> np.ndarray:
    """Centred voxel coordinates of an ``n^3`` box.

    Parameters
    ----------
    n : int
        Grid size (>= 2).

    Returns
    -------
    ndarray
        Read-only float64 array of shape ``(3, n, n, n)``; ``out[k][i0, i1, i2]``
        is ``i_k - n // 2``. Cached: do not modify (copy first).
    """
    return _coords_cached(_check_n(n))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Rotation matrix drawn uniformly from SO(3) (Haar measure).

    A unit quaternion with i.i.d. normal components is uniform on the 3-sphere,
    hence its rotation is uniform on SO(3).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray
        ``(3, 3)`` float64 proper rotation matrix.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    q = rng.standard_normal(4)
    while np.linalg.norm(q) < 1e-12:  # pragma: no cover - probability zero
        q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_about_axis(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about ``axis`` (right-hand rule, Rodrigues).

    Parameters
    ----------
    axis : array_like, shape (3,)
        Rotation axis, any non-zero length.
    angle : float
        Angle in radians.

    Returns
    -------
    ndarray
        ``(3, 3)`` float64 rotation matrix.
    """
    a = np.asarray(axis, dtype=np.float64)
    if a.shape != (3,) or not np.all(np.isfinite(a)) or np.linalg.norm(a) == 0:
        raise ValueError(f"`axis` must be a finite non-zero 3-vector, got {axis!r}")
    if not np.isfinite(angle):
        raise ValueError(f"`angle` must be finite, got {angle!r}")
    a = a / np.linalg.norm(a)
    K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def as_rotation_matrix(rotation, name: str = "rotation", atol: float = 1e-6) -> np.ndarray:
    """Validate and return a proper rotation matrix as a float64 ``(3, 3)`` array.

    Raises
    ------
    ValueError
        If ``rotation`` is not ``(3, 3)``, not orthonormal, or has determinant -1.
    """
    R = np.asarray(rotation, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"`{name}` must be a 3x3 matrix, got shape {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError(f"`{name}` must be finite")
    if not np.allclose(R @ R.T, np.eye(3), atol=atol) or np.linalg.det(R) < 0:
        raise ValueError(f"`{name}` must be a proper rotation matrix (R R^T = I, det R = +1)")
    return R


def to_body(coords: np.ndarray, rotation: np.ndarray, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Body-frame coordinates ``R.T @ (r - centre)`` of grid coordinates ``r``.

    Parameters
    ----------
    coords : ndarray, shape (3, ...)
        Grid coordinates (e.g. from :func:`centred_coords`).
    rotation : ndarray, shape (3, 3)
        Body-to-grid rotation ``R``.
    centre : array_like, shape (3,)
        Body origin in grid coordinates (voxels).

    Returns
    -------
    ndarray
        float64 array with the shape of ``coords``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim < 1 or coords.shape[0] != 3:
        raise ValueError(f"`coords` must have shape (3, ...), got {coords.shape}")
    R = np.asarray(rotation, dtype=np.float64)
    c = np.asarray(centre, dtype=np.float64).reshape((3,) + (1,) * (coords.ndim - 1))
    return np.tensordot(R.T, coords - c, axes=1)


def rotate_coords(coords: np.ndarray, rotation: np.ndarray, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Rotate coordinates about ``centre``: ``R @ (r - centre) + centre``.

    Parameters
    ----------
    coords : ndarray, shape (3, ...)
        Coordinates to rotate.
    rotation : ndarray, shape (3, 3)
        Rotation matrix.
    centre : array_like, shape (3,)
        Fixed point of the rotation.

    Returns
    -------
    ndarray
        float64 array with the shape of ``coords``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim < 1 or coords.shape[0] != 3:
        raise ValueError(f"`coords` must have shape (3, ...), got {coords.shape}")
    R = np.asarray(rotation, dtype=np.float64)
    c = np.asarray(centre, dtype=np.float64).reshape((3,) + (1,) * (coords.ndim - 1))
    return np.tensordot(R, coords - c, axes=1) + c
