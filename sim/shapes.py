"""Amplitude (support) shapes on the ``n^3`` object grid, with anti-aliased edges.

Every shape is a frozen dataclass of its parameters (all plain floats and
tuples, so :func:`dataclasses.asdict` of it is JSON-serialisable) with a
:meth:`render` method giving its occupancy on an ``n^3`` grid, values in
``[0, 1]``. Edges are anti-aliased by a partial-volume rule: from an
approximate signed distance ``s(r)`` to the surface (voxel units, negative
inside) the occupancy is ``clip(0.5 - s, 0, 1)``, exact for a plane aligned
with the grid and a close approximation otherwise. Edge voxels therefore take
fractional values, and small motions of a surface change the rendering
continuously (the time-varying scenarios rely on this).

Shapes are placed with a body-to-grid rotation ``rotation`` and a centre offset
``centre`` (voxels, relative to the grid centre index ``n // 2``); see
:mod:`sim.geometry`. A ``scale`` factor passed to :meth:`render` multiplies all
lengths of the body (not the offset), which is how growth is expressed.

Sizes: an object must fit inside the ``n``-box so that the zero-padded ``2n``
box oversamples it by at least 2 per axis. :meth:`render` raises if the
shape's bounding radius plus its offset exceeds ``n / 2 - 1``;
:func:`random_shape` draws radii of 0.22 n to 0.33 n by default.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace
from typing import ClassVar, Union

import numpy as np

from sim.geometry import as_rotation_matrix, centred_coords, random_rotation, to_body

__all__ = [
    "FACET_FAMILIES",
    "family_normals",
    "partial_volume",
    "Superellipsoid",
    "FacetedCrystal",
    "Shape",
    "random_superellipsoid",
    "random_faceted_crystal",
    "random_shape",
    "max_radius",
]

logger = logging.getLogger(__name__)

_IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

#: Crystallographic facet families of a cubic crystal (gold): Miller index ``{hkl}``.
FACET_FAMILIES: tuple[str, ...] = ("100", "110", "111")


def family_normals(family: str) -> np.ndarray:
    """Unit outward normals of all planes of a cubic ``{hkl}`` family.

    Parameters
    ----------
    family : {"100", "110", "111"}
        Facet family.

    Returns
    -------
    ndarray
        ``(m, 3)`` float64 unit vectors: 6 for {100}, 12 for {110}, 8 for {111}.
    """
    if family not in FACET_FAMILIES:
        raise ValueError(f"`family` must be one of {FACET_FAMILIES}, got {family!r}")
    hkl = np.array([int(c) for c in family], dtype=np.float64)
    out = set()
    for perm in itertools.permutations(hkl):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            v = tuple(float(s * p) for s, p in zip(signs, perm))
            out.add(tuple(0.0 if x == 0 else x for x in v))
    arr = np.array(sorted(out), dtype=np.float64)
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


def partial_volume(signed_distance: np.ndarray) -> np.ndarray:
    """Occupancy ``clip(0.5 - s, 0, 1)`` (float32) of a voxel at signed distance ``s``."""
    return np.clip(0.5 - np.asarray(signed_distance), 0.0, 1.0).astype(np.float32)


def max_radius(n: int) -> float:
    """Largest bounding radius plus offset (voxels) that :meth:`render` accepts, ``n/2 - 1``."""
    return n / 2.0 - 1.0


def _as_vec3(v, name: str) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be a finite 3-vector, got {v!r}")
    return tuple(float(x) for x in a)


def _as_rotation_tuple(rotation) -> tuple[tuple[float, float, float], ...]:
    R = as_rotation_matrix(rotation, "rotation")
    return tuple(tuple(float(x) for x in row) for row in R)


def _check_render_args(n: int, scale: float) -> tuple[int, float]:
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"`scale` must be a finite positive number, got {scale!r}")
    return int(n), float(scale)


def _fibonacci_sphere(m: int) -> np.ndarray:
    k = np.arange(m) + 0.5
    z = 1.0 - 2.0 * k / m
    phi = np.pi * (1.0 + 5.0**0.5) * k
    rho = np.sqrt(1.0 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


_DIRECTIONS = _fibonacci_sphere(4000)


class _ShapeMixin:
    """Rendering shared by all shapes (subclasses provide ``_sdf_body``)."""

    rotation: tuple[tuple[float, float, float], ...]
    centre: tuple[float, float, float]

    @property
    def rotation_matrix(self) -> np.ndarray:
        """Body-to-grid rotation as a ``(3, 3)`` float64 array."""
        return np.array(self.rotation, dtype=np.float64)

    def bounding_radius(self, scale: float = 1.0) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def extent(self, scale: float = 1.0) -> float:
        """Largest distance (voxels) from the grid centre reached by the shape."""
        return self.bounding_radius(scale) + float(np.linalg.norm(self.centre))

    def signed_distance(self, n: int, scale: float = 1.0) -> np.ndarray:
        """Approximate signed distance to the surface (voxels, < 0 inside), ``(n, n, n)`` float64.

        Accurate to first order within about a voxel of the surface, which is
        all the partial-volume rule uses.
        """
        n, scale = _check_render_args(n, scale)
        body = to_body(centred_coords(n), self.rotation_matrix, self.centre)
        return self._sdf_body(body, scale)

    def render(self, n: int, scale: float = 1.0) -> np.ndarray:
        """Occupancy in ``[0, 1]`` on an ``n^3`` grid (float32), anti-aliased edges.

        Parameters
        ----------
        n : int
            Object grid size.
        scale : float
            Multiplies all body lengths (growth); the centre offset is unchanged.

        Raises
        ------
        ValueError
            If the scaled shape does not fit in the box (extent > ``n/2 - 1``).
        """
        n, scale = _check_render_args(n, scale)
        ext = self.extent(scale)
        if ext > max_radius(n) + 1e-9:
            raise ValueError(
                f"shape does not fit in the n={n} box: bounding radius + offset = {ext:.2f} voxels "
                f"exceeds n/2 - 1 = {max_radius(n):.2f}; reduce its size, `scale` or `centre`"
            )
        return partial_volume(self.signed_distance(n, scale))

    def _sdf_body(self, body: np.ndarray, scale: float) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Superellipsoid(_ShapeMixin):
    """Superellipsoid ``|x/a|^(2/e) + |y/b|^(2/e) + |z/c|^(2/e) <= 1`` in the body frame.

    Parameters
    ----------
    semi_axes : tuple of 3 floats
        ``(a, b, c)`` in voxels, along body axes 0, 1, 2.
    exponent : float
        ``e`` in ``(0, 2]``: 1 gives an ellipsoid, small values a rounded box,
        2 an octahedron.
    rotation : 3x3 nested tuple
        Body-to-grid rotation (proper rotation matrix).
    centre : tuple of 3 floats
        Offset of the body origin from the grid centre, voxels.

    Notes
    -----
    The level function ``g = F^(e/2)`` (``F`` the left-hand side) is
    homogeneous of degree 1, so ``(g - 1) / |grad g|`` is a first-order signed
    distance that stays well behaved for boxy exponents.
    """

    family: ClassVar[str] = "superellipsoid"

    semi_axes: tuple[float, float, float]
    exponent: float = 1.0
    rotation: tuple[tuple[float, float, float], ...] = _IDENTITY
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        axes = _as_vec3(self.semi_axes, "semi_axes")
        if min(axes) <= 0:
            raise ValueError(f"`semi_axes` must be positive, got {self.semi_axes!r}")
        e = float(self.exponent)
        if not (np.isfinite(e) and 0.05 <= e <= 2.0):
            raise ValueError(f"`exponent` must be in [0.05, 2], got {self.exponent!r}")
        object.__setattr__(self, "semi_axes", axes)
        object.__setattr__(self, "exponent", e)
        object.__setattr__(self, "rotation", _as_rotation_tuple(self.rotation))
        object.__setattr__(self, "centre", _as_vec3(self.centre, "centre"))

    @classmethod
    def sphere(cls, radius: float, centre=(0.0, 0.0, 0.0)) -> "Superellipsoid":
        """Sphere of ``radius`` voxels."""
        return cls(semi_axes=(radius, radius, radius), exponent=1.0, centre=centre)

    @classmethod
    def ellipsoid(cls, semi_axes, rotation=_IDENTITY, centre=(0.0, 0.0, 0.0)) -> "Superellipsoid":
        """Ellipsoid with the given semi-axes (voxels)."""
        return cls(semi_axes=semi_axes, exponent=1.0, rotation=rotation, centre=centre)

    def _gauge(self, p: np.ndarray) -> np.ndarray:
        """Degree-1 level function ``g`` of body coordinates ``p`` (3, ...) scaled by the axes."""
        q = 2.0 / self.exponent
        F = np.abs(p[0]) ** q + np.abs(p[1]) ** q + np.abs(p[2]) ** q
        return F ** (self.exponent / 2.0)

    def bounding_radius(self, scale: float = 1.0) -> float:
        """Largest distance of the surface from the body origin (voxels).

        Exact (the longest semi-axis) for ``exponent >= 1``, where the shape lies
        inside its ellipsoid; for boxier shapes sampled over 4000 directions and
        padded by 0.2 % (never beyond the bounding-box corner).
        """
        a = np.asarray(self.semi_axes) * scale
        if self.exponent >= 1.0:
            return float(a.max())
        g = self._gauge(_DIRECTIONS.T / a[:, None])
        return float(min(np.max(1.0 / g) * 1.002, np.linalg.norm(a)))

    def _sdf_body(self, body: np.ndarray, scale: float) -> np.ndarray:
        a = np.asarray(self.semi_axes, dtype=np.float64).reshape(3, 1, 1, 1) * scale
        e = self.exponent
        q = 2.0 / e
        p = body / a
        ap = np.abs(p)
        powq = ap**q
        F = powq[0] + powq[1] + powq[2]
        g = F ** (e / 2.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # grad_k g = F^(e/2 - 1) |p_k|^(q - 1) sign(p_k) / a_k
            pref = F ** (e / 2.0 - 1.0)
            comp = np.where(ap > 0, powq / np.where(ap > 0, ap, 1.0), 0.0) / a
            grad = pref * np.sqrt(np.sum(comp * comp, axis=0))
            s = (g - 1.0) / grad
        # At the body origin the gradient is undefined; it is deep inside.
        return np.where(np.isfinite(s), s, -np.inf)


@dataclass(frozen=True, kw_only=True)
class FacetedCrystal(_ShapeMixin):
    """Convex faceted crystal: intersection of half-spaces ``n_k . r <= d_k`` (body frame).

    Parameters
    ----------
    normals : tuple of 3-tuples
        Outward facet normals in the body (crystal) frame; normalised on input.
        Typically drawn from the cubic {100}, {110}, {111} families
        (:func:`family_normals`); must bound a finite polytope.
    distances : tuple of floats
        Facet distances from the body origin (voxels), all > 0, so the origin
        is strictly inside.
    rotation, centre
        As for :class:`Superellipsoid`.

    Notes
    -----
    The signed distance is ``max_k (n_k . r - d_k)``: exact near facets, a slight
    under-estimate outside near edges and corners.
    """

    family: ClassVar[str] = "faceted"

    normals: tuple[tuple[float, float, float], ...]
    distances: tuple[float, ...]
    rotation: tuple[tuple[float, float, float], ...] = _IDENTITY
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        N = np.asarray(self.normals, dtype=np.float64)
        d = np.asarray(self.distances, dtype=np.float64)
        if N.ndim != 2 or N.shape[1] != 3 or N.shape[0] < 4:
            raise ValueError(f"`normals` must be a sequence of at least 4 3-vectors, got shape {N.shape}")
        if not np.all(np.isfinite(N)) or np.any(np.linalg.norm(N, axis=1) == 0):
            raise ValueError("`normals` must be finite non-zero vectors")
        if d.shape != (N.shape[0],):
            raise ValueError(
                f"`distances` must have one value per normal ({N.shape[0]}), got shape {d.shape}"
            )
        if not np.all(np.isfinite(d)) or np.any(d <= 0):
            raise ValueError("`distances` must be finite and > 0 (the origin must be inside)")
        N = N / np.linalg.norm(N, axis=1, keepdims=True)
        object.__setattr__(self, "normals", tuple(tuple(float(x) for x in row) for row in N))
        object.__setattr__(self, "distances", tuple(float(x) for x in d))
        object.__setattr__(self, "rotation", _as_rotation_tuple(self.rotation))
        object.__setattr__(self, "centre", _as_vec3(self.centre, "centre"))
        V = _polytope_vertices(N, d)
        if V is None:
            raise ValueError("`normals` do not bound a finite crystal (they must positively span 3D)")
        V.setflags(write=False)
        # Not a dataclass field: kept out of asdict(), equality and repr.
        object.__setattr__(self, "_vertices", V)

    @property
    def normal_array(self) -> np.ndarray:
        """Facet normals, ``(m, 3)`` float64."""
        return np.array(self.normals, dtype=np.float64)

    @property
    def distance_array(self) -> np.ndarray:
        """Facet distances, ``(m,)`` float64."""
        return np.array(self.distances, dtype=np.float64)

    def with_distances(self, distances) -> "FacetedCrystal":
        """Copy with new facet distances (e.g. during growth)."""
        return replace(self, distances=tuple(float(x) for x in np.asarray(distances).ravel()))

    def vertices(self, scale: float = 1.0) -> np.ndarray:
        """Corners of the polytope in the body frame, ``(v, 3)`` float64 (voxels)."""
        return np.array(self._vertices) * scale

    def bounding_radius(self, scale: float = 1.0) -> float:
        """Exact circumradius about the body origin (largest vertex distance), voxels."""
        return float(np.max(np.linalg.norm(self._vertices, axis=1))) * scale

    def _sdf_body(self, body: np.ndarray, scale: float) -> np.ndarray:
        N = self.normal_array
        d = self.distance_array * scale
        proj = np.tensordot(N, body, axes=1)  # (m, n, n, n)
        return np.max(proj - d.reshape(-1, 1, 1, 1), axis=0)


Shape = Union[Superellipsoid, FacetedCrystal]


def _polytope_vertices(N: np.ndarray, d: np.ndarray) -> np.ndarray | None:
    """Vertices of ``{r : N r <= d}`` (d > 0), or None when unbounded."""
    # Bounded iff the normals positively span R^3: every direction v has max_k n_k.v > 0.
    dirs = np.concatenate([_DIRECTIONS, -N], axis=0)
    if np.min(np.max(dirs @ N.T, axis=1)) <= 1e-9:
        return None
    m = N.shape[0]
    idx = np.array(list(itertools.combinations(range(m), 3)))
    A = N[idx]  # (t, 3, 3)
    b = d[idx]  # (t, 3)
    det = np.linalg.det(A)
    ok = np.abs(det) > 1e-9
    if not np.any(ok):
        return None
    x = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    inside = np.all(x @ N.T <= d + 1e-7 * (1.0 + np.abs(d)), axis=1)
    V = x[inside]
    if V.shape[0] < 4:
        return None
    return np.unique(np.round(V, 9), axis=0)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_radius_range(n: int, radius: tuple[float, float], max_offset: float) -> tuple[float, float]:
    lo, hi = (float(x) for x in radius)
    if not (0 < lo <= hi):
        raise ValueError(f"`radius` must be a range (lo, hi) with 0 < lo <= hi (fractions of n), got {radius!r}")
    if max_offset < 0:
        raise ValueError(f"`max_offset` must be >= 0, got {max_offset!r}")
    if hi * n + max_offset * 3**0.5 > max_radius(n) + 1e-9:
        raise ValueError(
            f"`radius` upper bound {hi} * n plus `max_offset` does not fit in the n={n} box "
            f"(limit n/2 - 1 = {max_radius(n):.2f} voxels)"
        )
    return lo, hi


def _random_centre(rng: np.random.Generator, max_offset: float) -> tuple[float, float, float]:
    if max_offset == 0:
        return (0.0, 0.0, 0.0)
    return tuple(float(x) for x in rng.uniform(-max_offset, max_offset, 3))


def random_superellipsoid(
    rng: np.random.Generator,
    n: int,
    radius: tuple[float, float] = (0.22, 0.33),
    exponent: tuple[float, float] = (0.25, 1.6),
    max_offset: float = 0.0,
) -> Superellipsoid:
    """Random superellipsoid with bounding radius drawn uniformly in ``radius * n``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Object grid size.
    radius : (float, float)
        Range of bounding radius as a fraction of ``n``.
    exponent : (float, float)
        Range of the shape exponent (drawn log-uniformly).
    max_offset : float
        Centre offset drawn uniformly in ``[-max_offset, max_offset]^3`` voxels.
    """
    rng = _check_rng(rng)
    lo, hi = _check_radius_range(n, radius, max_offset)
    e_lo, e_hi = (float(x) for x in exponent)
    if not (0.05 <= e_lo <= e_hi <= 2.0):
        raise ValueError(f"`exponent` must be a range within [0.05, 2], got {exponent!r}")
    e = float(np.exp(rng.uniform(np.log(e_lo), np.log(e_hi))))
    aspect = rng.uniform(0.6, 1.0, 3)
    aspect[rng.integers(3)] = 1.0
    shape = Superellipsoid(
        semi_axes=tuple(aspect), exponent=e, rotation=random_rotation(rng),
        centre=_random_centre(rng, max_offset),
    )
    target = rng.uniform(lo, hi) * n
    k = target / shape.bounding_radius()
    return replace(shape, semi_axes=tuple(float(a * k) for a in shape.semi_axes))


_BASES = {
    # Bounded base polytopes made of whole crystallographic families.
    "octahedron": ("111", None),
    "cube": ("100", None),
    "tetrahedron": ("111", np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / 3**0.5),
}


def random_faceted_crystal(
    rng: np.random.Generator,
    n: int,
    radius: tuple[float, float] = (0.22, 0.33),
    num_planes: tuple[int, int] = (4, 20),
    max_offset: float = 0.0,
) -> FacetedCrystal:
    """Random gold-like convex nanocrystal with {111}, {100} and {110} facets.

    A bounded base (octahedron of {111}, cube of {100}, or a {111}
    tetrahedron; weights 0.6/0.3/0.1) with per-facet distance jitter of +-10 %
    is truncated by extra planes from the other families, each placed between
    60 % and 95 % of the base's extent in its direction, so every extra plane
    cuts a corner or an edge (truncated octahedra, cuboctahedra, ...). The
    whole crystal is then scaled so its circumradius is drawn uniformly in
    ``radius * n``, and rotated uniformly at random.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Object grid size.
    radius : (float, float)
        Circumradius range as a fraction of ``n``.
    num_planes : (int, int)
        Inclusive range of the total number of facets (4 to 26).
    max_offset : float
        Centre offset drawn uniformly in ``[-max_offset, max_offset]^3`` voxels.
    """
    rng = _check_rng(rng)
    lo, hi = _check_radius_range(n, radius, max_offset)
    p_lo, p_hi = (int(x) for x in num_planes)
    if not (4 <= p_lo <= p_hi <= 26):
        raise ValueError(f"`num_planes` must be a range within [4, 26], got {num_planes!r}")
    names = list(_BASES)
    weights = np.array([0.6, 0.3, 0.1])
    # Only bases with no more planes than allowed.
    sizes = np.array([8, 6, 4])
    weights = np.where(sizes <= p_hi, weights, 0.0)
    base = names[rng.choice(3, p=weights / weights.sum())]
    fam, explicit = _BASES[base]
    base_normals = family_normals(fam) if explicit is None else explicit
    m0 = base_normals.shape[0]
    base_d = rng.uniform(0.9, 1.1, m0)
    all_normals = np.concatenate([family_normals(f) for f in FACET_FAMILIES])
    is_base = np.any(np.abs(all_normals @ base_normals.T - 1.0) < 1e-9, axis=1)
    candidates = all_normals[~is_base]
    total = int(rng.integers(max(p_lo, m0), p_hi + 1))
    extra = candidates[rng.choice(len(candidates), size=total - m0, replace=False)]
    V = _polytope_vertices(base_normals, base_d)
    extra_d = np.max(extra @ V.T, axis=1) * rng.uniform(0.6, 0.95, extra.shape[0]) if len(extra) else np.zeros(0)
    crystal = FacetedCrystal(
        normals=tuple(map(tuple, np.concatenate([base_normals, extra]))),
        distances=tuple(np.concatenate([base_d, extra_d])),
        rotation=random_rotation(rng),
        centre=_random_centre(rng, max_offset),
    )
    target = rng.uniform(lo, hi) * n
    return crystal.with_distances(crystal.distance_array * (target / crystal.bounding_radius()))


def random_shape(
    rng: np.random.Generator,
    n: int,
    family: str | None = None,
    radius: tuple[float, float] = (0.22, 0.33),
    max_offset: float = 0.0,
    faceted_probability: float = 0.6,
) -> Shape:
    """Random shape of a random family.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Object grid size.
    family : {"faceted", "superellipsoid"}, optional
        Force a family; by default faceted with probability ``faceted_probability``.
    radius : (float, float)
        Bounding radius range as a fraction of ``n``.
    max_offset : float
        Centre offset range (voxels, per axis).
    faceted_probability : float
        Probability of a faceted crystal when ``family`` is None.
    """
    rng = _check_rng(rng)
    if not 0.0 <= faceted_probability <= 1.0:
        raise ValueError(f"`faceted_probability` must be in [0, 1], got {faceted_probability!r}")
    if family is None:
        family = "faceted" if rng.random() < faceted_probability else "superellipsoid"
    if family == "faceted":
        return random_faceted_crystal(rng, n, radius=radius, max_offset=max_offset)
    if family == "superellipsoid":
        return random_superellipsoid(rng, n, radius=radius, max_offset=max_offset)
    raise ValueError(f"`family` must be 'faceted', 'superellipsoid' or None, got {family!r}")
