"""Reading a physics-structured model's explicit crystal parameters off a density, with no network.

The physics stage's output is close to the sample; the latent is not. This module closes the loop:
it reads the 48 explicit parameters of :mod:`latenttune.model.crystal` (orientation, 26 facet
distances, 9 phase coefficients, a dislocation line) straight from a complex density, by geometry
and linear least squares, so the latent can start next to what the measurement shows. Nothing here
evaluates the network or its gradient.

* **Amplitude and support**: the amplitude is normalised by the median of its bright part (a
  crystal's interior is flat), and the support is where it exceeds 1/2: the level at which the
  decoder's partial-volume occupancy ``clip(0.5 - sdf, 0, 1)`` puts the facet plane.
* **Orientation**: a faceted crystal's surface normals cluster at its facet normals. The outward
  normals of the smoothed amplitude at the surface are compared with the 26 plane normals under
  every rotation of a grid over the parameter box (the fundamental zone of the cubic group), scored
  by ``sum_i w_i max_j (R n_j . s_i)^p``; the best rotation is refined by a shrinking local search.
  A previous frame's rotation makes the search local (a tracked crystal turns little per frame).
* **Facet distances**: start at the support function ``h_j = max_{r in support} (R n_j . r)``, then
  Gauss-Newton steps on ``|occupancy(d) - amplitude|^2`` in the transition band of each plane (the
  occupancy's derivative there is 1). Planes that touch nothing sit just outside the crystal.
* **Dislocation**: the wrapped phase winds by 2 pi around a dislocation line. Plaquettes of the
  support whose phase circulation is +-2 pi mark the line; a robust principal-axis fit gives its
  direction and a point, the sign of the circulation its winding.
* **Phase**: the 9 polynomial coefficients and the three edge-field coefficients of the line are
  linear in the phase, fitted by least squares to the wrapped phase differences between neighbouring
  support voxels (after the line's winding field is removed), so the fit never unwraps the phase.

The result's parameters go into the first 48 entries of a latent; :func:`explicit_latent` builds
that latent with a given learned part.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from latenttune.model.crystal import (
    _EDGE_MAX,
    _GROUP,
    _ORIENTATION_MAX,
    _PHASE_MAX,
    _REFERENCE,
    _WINDING_GAIN,
    NORMALS,
    PhysicalLayout,
    misorientation_degrees,
)
from latenttune.validation import check_int, check_number
from sim.geometry import centred_coords

log = logging.getLogger(__name__)

__all__ = ["ExplicitFit", "DislocationFit", "FitSettings", "fit_explicit", "explicit_latent"]

_CORE_RADIUS2 = 0.25  # the decoder's dislocation core: r2 = x^2 + y^2 + 0.5^2
#: The 26 neighbours of a point of the rotation-vector grid, as unit steps.
_OFFSETS = np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)],
                    dtype=np.float64)
_AXIS_OFFSETS = np.concatenate([np.eye(3), -np.eye(3)])
#: Offsets (in steps) of the points the line search near the surface tries around a centre.
_SURFACE_LINE_GRID = [(a, c) for a in (-1, 0, 1) for c in (-1, 0, 1)]
#: One of each opposite pair of the 26 plane normals (the first non-zero component positive).
_HALF_NORMALS = NORMALS[[v[np.flatnonzero(v)[0]] > 0 for v in NORMALS]]

#: A global search brings to its lowest facet misfit only the candidates whose misfit after the alignment
#: search is within this factor of the lowest (the others are other crystals, not the same one a little off).
_MISFIT_SHORTLIST = 4.0
#: Orientations whose facet misfit is within this fraction of the lowest (plus :data:`_TIE_FLOOR`, the
#: misfit's resolution: a hundredth of a percent of the density's power) fit the shape equally well:
#: a box reads as well with its faces on {100} planes as 45 degrees off about one axis, with four of
#: them on {110} planes; the amplitude cannot tell them apart (nor can the intensity, the shape being
#: the same), so such ties are decided by the surface energy of each reading.
_ORIENTATION_TIE = 0.05
_TIE_FLOOR = 1e-4
#: Tied orientations closer than this (degrees, cubic symmetry removed) are the same reading.
_DISTINCT_DEG = 5.0
#: Surface energy per unit area of each of the 26 planes relative to {111}, by the nearest-neighbour
#: broken-bond model of an FCC crystal: {100} 2/sqrt(3), {110} sqrt(6)/2 (the order of gold's
#: measured and computed surface energies, and why its crystals are bounded by {111} and {100} faces).
_PLANE_ENERGY = np.concatenate([np.full(6, 2 / math.sqrt(3)), np.full(12, math.sqrt(6) / 2), np.ones(8)])


@dataclass(frozen=True)
class FitSettings:
    """How :func:`fit_explicit` reads a density.

    Attributes
    ----------
    grid_step_deg : float
        Step of the global orientation grid over the parameter box (first frame).
    local_step_deg : float
        First step of the local orientation search (it halves until ``min_step_deg``).
    min_step_deg : float
        Last step of the local search.
    misfit_step_deg : float
        First step of the orientation search on the facet misfit that follows the alignment search of
        a global search (each candidate is brought to its own lowest misfit before they are compared;
        it halves until ``min_step_deg``); a local search (from ``previous``) starts at twice
        ``min_step_deg``.
    edge_margin_deg : float
        A local search whose previous orientation lies this close to the edge of the rotation-vector
        box also starts from the other cubic-equivalent descriptions near or inside the box (a search
        cannot cross the edge, so a turning crystal would stay behind there).
    sharpness : int
        Exponent ``p`` of the normal-alignment score.
    facet_iterations : int
        Gauss-Newton steps of the facet distances.
    min_vortices : int
        Vortex plaquettes needed before a dislocation line is fitted.
    line_tolerance : float
        Vortex plaquettes farther than this (voxels) from the fitted line are outliers.
    surface_line_trigger : float
        With no vortex line inside, a line near the surface is searched for when the smooth phase
        fit's mean squared residual (rad^2 per neighbour difference) exceeds this (inf: never).
    surface_line_ratio : float
        Such a line is kept when it brings the misfit near it below this fraction of the no-line fit's.
    surface_line_radius : float
        The neighbourhood (voxels) of the worst misfit that candidate lines are compared on.
    """

    grid_step_deg: float = 5.625
    local_step_deg: float = 2.0
    min_step_deg: float = 0.25
    misfit_step_deg: float = 1.0
    edge_margin_deg: float = 5.0
    sharpness: int = 16
    facet_iterations: int = 8
    min_vortices: int = 4
    line_tolerance: float = 2.0
    surface_line_trigger: float = 4e-3
    surface_line_ratio: float = 0.5
    surface_line_radius: float = 6.0

    def __post_init__(self) -> None:
        for name in ("grid_step_deg", "local_step_deg", "min_step_deg", "misfit_step_deg", "line_tolerance",
                     "surface_line_radius"):
            check_number(name, getattr(self, name), low=0.0, open_low=True)
        check_number("edge_margin_deg", self.edge_margin_deg, low=0.0)
        check_int("sharpness", self.sharpness, low=1)
        check_int("facet_iterations", self.facet_iterations, low=0)
        check_int("min_vortices", self.min_vortices, low=2)
        if not isinstance(self.surface_line_trigger, (int, float)) or not self.surface_line_trigger >= 0:
            raise ValueError(f"`surface_line_trigger` must be a number >= 0 (inf: no search), got "
                             f"{self.surface_line_trigger!r}")
        check_number("surface_line_ratio", self.surface_line_ratio, low=0.0, high=1.0, open_low=True)


@dataclass(frozen=True)
class DislocationFit:
    """A dislocation line read off a density's phase.

    Attributes
    ----------
    point : ndarray, shape (3,)
        The point of the line closest to the grid centre (voxels, centred coordinates).
    direction : ndarray, shape (3,)
        Unit tangent, oriented so that the phase winds by ``+2 pi winding`` around it.
    winding : int
        +1 (the orientation of ``direction`` makes it so).
    edge : ndarray, shape (3,)
        The three edge-field coefficients (radians) of the decoder's Volterra field.
    vortices : int
        Vortex plaquettes that support the line (0: a line at or just under the surface, found by
        the phase misfit it leaves, see :class:`FitSettings`).
    """

    point: np.ndarray
    direction: np.ndarray
    winding: int
    edge: np.ndarray
    vortices: int


@dataclass(frozen=True)
class ExplicitFit:
    """The explicit parameters read off one density.

    Attributes
    ----------
    parameters : ndarray, shape (48,)
        Box units, the layout of :class:`latenttune.model.crystal.PhysicalLayout`.
    rotation : ndarray, shape (3, 3)
        The crystal's orientation (the rotation vector of ``parameters`` inside the box).
    facet_distances : ndarray, shape (26,)
        Plane distances from the grid centre (voxels).
    phase_coefficients : ndarray, shape (9,)
        Radians.
    dislocation : DislocationFit or None
    support : ndarray of bool, shape (n, n, n)
    alignment : float
        The orientation score per surface voxel (1 = every surface normal on a plane normal).
    without_line : ExplicitFit or None
        For a line found near the surface (``dislocation.vortices == 0``): the fit of the same
        crystal with no line (its smooth phase fitted alone), so that a caller can keep whichever
        draws the density better (the read-back does).
    orientation_ties : int
        How many distinct orientations (more than 5 degrees apart) fitted the amplitude as well as the
        best in a global search (facet misfit within 5 % of the lowest, plus 1e-4; 1: no tie). With
        several, the shape alone does not fix the orientation; the one whose faces have the lowest
        surface energy was chosen.
    """

    parameters: np.ndarray
    rotation: np.ndarray
    facet_distances: np.ndarray
    phase_coefficients: np.ndarray
    dislocation: DislocationFit | None
    support: np.ndarray = field(repr=False)
    alignment: float = math.nan
    without_line: ExplicitFit | None = field(default=None, repr=False)
    orientation_ties: int = 1


def _rotations(vectors: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(G, 3, 3)`` of rotation vectors ``(G, 3)`` (radians).

    The Rodrigues formula of :func:`latenttune.model.crystal.rotation_matrices` in numpy (the searches
    call it hundreds of times per frame on a few vectors, where torch's per-call overhead dominates).
    """
    omega = np.asarray(vectors, dtype=np.float64)
    theta = np.linalg.norm(omega, axis=-1)[:, None, None]
    wx, wy, wz = omega[:, 0], omega[:, 1], omega[:, 2]
    zero = np.zeros_like(wx)
    K = np.stack([zero, -wz, wy, wz, zero, -wx, -wy, wx, zero], axis=-1).reshape(-1, 3, 3)
    a = np.sinc(theta / math.pi)  # sin(t)/t
    b = 0.5 * np.square(np.sinc(theta / (2 * math.pi)))  # (1 - cos t)/t^2
    return np.eye(3) + a * K + b * (K @ K)


def _surface_normals(amplitude: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outward unit normals, weights and positions of the amplitude's surface voxels."""
    smooth = ndimage.gaussian_filter(amplitude, 1.0, mode="constant")
    gradient = np.stack(np.gradient(smooth))
    magnitude = np.sqrt((gradient ** 2).sum(axis=0))
    surface = (smooth > 0.2) & (smooth < 0.8) & (magnitude > 0.05)
    normals = -gradient[:, surface].T / magnitude[surface][:, None]
    return normals, magnitude[surface], coords[:, surface].T


class _AlignmentScore:
    """``score(R) = mean_i w_i max_j (R n_j . s_i)_+^p`` for batches of rotations."""

    def __init__(self, normals: np.ndarray, weights: np.ndarray, sharpness: int) -> None:
        self.normals, self.weights, self.p = normals, weights / weights.sum(), sharpness

    def thinned(self, points: int) -> _AlignmentScore:
        """The same score on at most ``points`` evenly picked surface voxels (for a coarse search)."""
        stride = max(1, len(self.normals) // points)
        return _AlignmentScore(self.normals[::stride], self.weights[::stride], self.p)

    def __call__(self, rotations: np.ndarray, chunk: int = 256) -> np.ndarray:
        out = np.empty(len(rotations))
        for start in range(0, len(rotations), chunk):
            # (R n_j) . s_i for the 13 normals of one of each opposite pair, as s_i . (R n_j): the
            # 3 x 13 products per rotation first, then one matrix product with the surface normals
            rotated = rotations[start:start + chunk] @ _HALF_NORMALS.T  # (g, 3, 13)
            # max_j (n_j . s)_+ over the 26 normals = max |n_j . s| over one of each opposite pair
            cos = np.abs(self.normals @ rotated).max(axis=-1)  # (g, i)
            out[start:start + chunk] = _power(cos, self.p) @ self.weights
        return out


def _power(x: np.ndarray, p: int) -> np.ndarray:
    """``x ** p`` for an integer ``p >= 1`` by repeated squaring (numpy's ``**`` calls ``pow`` per element)."""
    result = None
    while True:
        if p & 1:
            result = x if result is None else result * x
        p >>= 1
        if not p:
            return result
        x = x * x


def _local_search(score: _AlignmentScore, start: np.ndarray, step: float, settings: FitSettings) -> tuple[np.ndarray, float]:
    """Pattern search on the rotation vector (radians) from ``start``; the step halves until ``min_step_deg``."""
    limit = _ORIENTATION_MAX
    best = np.asarray(start, dtype=np.float64)
    best_value = float(score(_rotations(best[None]))[0])
    while step >= math.radians(settings.min_step_deg):
        candidates = np.clip(best + step * _OFFSETS, -limit, limit)
        values = score(_rotations(candidates))
        index = int(np.argmax(values))
        if values[index] > best_value:
            best, best_value = candidates[index], float(values[index])
        else:
            step /= 2
    return best, best_value


def _global_candidates(score: _AlignmentScore, settings: FitSettings, count: int = 6) -> list[np.ndarray]:
    """The best distinct rotation vectors of a grid over the parameter box (surface points thinned)."""
    limit = _ORIENTATION_MAX
    step = math.radians(settings.grid_step_deg)
    axis = np.arange(-limit, limit + 1e-9, step)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    values = score.thinned(300)(_rotations(grid))
    chosen: list[np.ndarray] = []
    for index in np.argsort(values)[::-1]:
        if all(np.abs(grid[index] - c).max() > 1.5 * step for c in chosen):
            chosen.append(grid[index])
            if len(chosen) == count:
                break
    return chosen


def _edge_equivalents(vector: np.ndarray, margin: float) -> list[np.ndarray]:
    """The other cubic-equivalent descriptions of ``vector`` inside the box, when ``vector`` is within
    ``margin`` (radians) of the box's edge; else nothing.

    A local search cannot cross the edge of the rotation-vector box, so a crystal that keeps turning
    would stay behind there; past the edge it goes on as another of the 24 descriptions of the same
    orientation, one that lies inside the box.
    """
    from scipy.spatial.transform import Rotation

    vector = np.asarray(vector, dtype=np.float64)
    if np.abs(vector).max() < _ORIENTATION_MAX - margin:
        return []
    R = _rotations(vector[None])[0]
    equivalents = Rotation.from_matrix(np.stack([R @ h for h in _GROUP])).as_rotvec()
    inside = np.abs(equivalents).max(axis=1) <= _ORIENTATION_MAX + margin
    return [np.clip(e, -_ORIENTATION_MAX, _ORIENTATION_MAX) for e in equivalents[inside]
            if not np.allclose(e, vector, atol=1e-6)]


def _misfit_search(facets: _FacetProblem, start: np.ndarray, distances: np.ndarray, misfit: float,
                   settings: FitSettings, first_step_deg: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Pattern search on the rotation vector for the lowest facet misfit, from ``start`` (radians).

    The alignment score peaks a degree or two off a faceted crystal's orientation, and there the
    facet misfit of the right orientation can be higher than that of one 45 degrees off about a cube
    axis (both are among the 26 planes: a box reads as well as a {110} prism with {100} caps), so
    the candidates are compared after each has been brought to its own lowest misfit.
    """
    limit = _ORIENTATION_MAX
    best, best_value = np.asarray(start, dtype=np.float64), misfit  # ``distances``, ``misfit``: at ``start``
    step = math.radians(first_step_deg)
    while step >= math.radians(settings.min_step_deg):
        improved = False
        for offset in _AXIS_OFFSETS:
            candidate = np.clip(best + step * offset, -limit, limit)
            d, value = facets(_rotations(candidate[None])[0], settings.facet_iterations)
            if value < best_value:
                best, best_value, distances, improved = candidate, value, d, True
                break
        if not improved:
            step /= 2
    return best, distances, best_value


class _FacetProblem:
    """What every facet-distance fit of one density shares: the voxels near its support, their targets.

    Built once per :func:`fit_explicit` (the orientation searches call it tens of times per frame).

    Raises
    ------
    ValueError
        The density has no support.
    """

    def __init__(self, amplitude: np.ndarray, support: np.ndarray, coords: np.ndarray) -> None:
        if not support.any():
            raise ValueError("the density has no support (no voxel above half its bright level)")
        near = ndimage.binary_dilation(support, iterations=2)  # the only voxels a plane's occupancy can change
        self.coords = np.ascontiguousarray(coords[:, near])  # (3, M)
        self.inside = support[near]
        self.target = np.clip(amplitude[near], 0.0, 1.0)
        outside = np.square(np.clip(amplitude[~near], 0.0, 1.0)).sum()  # far voxels: the occupancy there is 0
        self.outside = float(outside)
        self.norm = max(float(np.square(self.target).sum()) + self.outside, 1e-12)
        self.columns = np.arange(self.coords.shape[1])

    def __call__(self, rotation: np.ndarray, iterations: int) -> tuple[np.ndarray, float]:
        """Plane distances (voxels) whose partial-volume occupancy matches the amplitude best, and the misfit left."""
        t = self._positions(rotation)
        inside, target, columns = self.inside, self.target, self.columns
        d = t[inside].max(axis=0) + 0.5
        for _ in range(iterations):
            sdf = t - d
            active = sdf.argmax(axis=1)
            occupancy = np.clip(0.5 - sdf[columns, active], 0.0, 1.0)
            band = (occupancy > 0.0) & (occupancy < 1.0) | (occupancy == 0.0) & (target > 0.05)
            counts = np.bincount(active[band], minlength=26)
            steps = np.bincount(active[band], weights=(target - occupancy)[band], minlength=26)
            moved = counts > 0
            d[moved] += steps[moved] / counts[moved]
        sdf = t - d
        active = sdf.argmax(axis=1)
        occupancy = np.clip(0.5 - sdf[columns, active], 0.0, 1.0)
        misfit = float((np.square(target - occupancy).sum() + self.outside) / self.norm)
        touched = np.bincount(active[inside], minlength=26) > 0
        d[~touched] = np.maximum(d[~touched], t[inside][:, ~touched].max(axis=0) + 1.0)  # cuts nothing
        return d, misfit

    def _positions(self, rotation: np.ndarray) -> np.ndarray:
        """Each nearby voxel's position along each rotated plane normal ``R n_j``, voxel-major ``(M, 26)``
        (the per-voxel maximum over the planes then runs along contiguous memory)."""
        return np.ascontiguousarray(((NORMALS @ rotation.T) @ self.coords).T)

    def surface_energy(self, rotation: np.ndarray, distances: np.ndarray) -> float:
        """The crystal's surface energy (units of the {111} energy times voxel area) for these planes.

        Each face's area is the number of voxels within half a voxel of its plane (a slab one voxel
        thick along the normal) where that plane bounds the crystal.
        """
        t = self._positions(rotation) - distances
        active = t.argmax(axis=1)
        on_face = np.abs(t[self.columns, active]) < 0.5
        return float(_PLANE_ENERGY[active[on_face]].sum())


def _lowest_energy_of_ties(facets: _FacetProblem, found: list[tuple]) -> tuple[tuple, int]:
    """The orientation a global search keeps, and how many distinct orientations tied for it.

    ``found`` holds ``(misfit, vector, alignment, distances)`` of each candidate brought to its
    lowest facet misfit. Candidates within :data:`_ORIENTATION_TIE` of the lowest misfit (plus
    :data:`_TIE_FLOOR`) fit the shape equally well; among them the reading with the lowest surface
    energy wins.
    """
    lowest = min(f[0] for f in found)
    tied: list[tuple] = []
    rotations: list[np.ndarray] = []
    for candidate in sorted(found, key=lambda f: f[0]):
        if candidate[0] > (1.0 + _ORIENTATION_TIE) * lowest + _TIE_FLOOR:
            break
        rotation = _rotations(candidate[1][None])[0]
        if all(misorientation_degrees(rotation, other) > _DISTINCT_DEG for other in rotations):
            tied.append(candidate)
            rotations.append(rotation)
    if len(tied) == 1:
        return tied[0], 1
    energies = [facets.surface_energy(rotation, t[3]) for rotation, t in zip(rotations, tied)]
    chosen = tied[int(np.argmin(energies))]
    log.info("explicit fit: %d orientations fit the shape within %.0f %% (facet misfit %.3g-%.3g); kept the one "
             "of lowest surface energy (%s)", len(tied), 100 * _ORIENTATION_TIE, tied[0][0], tied[-1][0],
             ", ".join(f"{e:.0f}" for e in energies))
    return chosen, len(tied)


def _vortices(phase: np.ndarray, support: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(V, 3)`` and oriented tangents ``(V, 3)`` of the plaquettes the wrapped phase winds around."""
    centres, tangents = [], []
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3  # (b, c, a) right-handed

        def at(db: int, dc: int) -> tuple[slice, ...]:
            index = [slice(None)] * 3
            index[b] = slice(db, phase.shape[b] - 1 + db)
            index[c] = slice(dc, phase.shape[c] - 1 + dc)
            return tuple(index)

        corners = [at(0, 0), at(1, 0), at(1, 1), at(0, 1)]
        loop = sum(_wrapped_fast(phase[corners[(i + 1) % 4]] - phase[corners[i]]) for i in range(4))
        winding = np.rint(loop / (2 * np.pi)).astype(int)
        inside = np.logical_and.reduce([support[k] for k in corners])
        hits = (winding != 0) & inside
        if not hits.any():
            continue
        where = np.argwhere(hits)
        centre = np.stack([coords[axis][corners[0]][hits] for axis in range(3)], axis=1).astype(np.float64)
        centre[:, b] += 0.5
        centre[:, c] += 0.5
        tangent = np.zeros((len(where), 3))
        tangent[:, a] = np.sign(winding[hits])
        centres.append(centre)
        tangents.append(tangent)
    if not centres:
        return np.empty((0, 3)), np.empty((0, 3))
    return np.concatenate(centres), np.concatenate(tangents)


def _line(centres: np.ndarray, tangents: np.ndarray, settings: FitSettings) -> tuple[np.ndarray, np.ndarray, int] | None:
    """A robust straight-line fit through vortex plaquettes: (point, oriented unit direction, count)."""
    keep = np.ones(len(centres), dtype=bool)
    for _ in range(3):
        if keep.sum() < settings.min_vortices:
            return None
        mean = centres[keep].mean(axis=0)
        _, _, vt = np.linalg.svd(centres[keep] - mean, full_matrices=False)
        direction = vt[0]
        offset = centres - mean
        distance = np.linalg.norm(offset - np.outer(offset @ direction, direction), axis=1)
        new = distance < settings.line_tolerance
        if np.array_equal(new, keep):
            break
        keep = new
    if keep.sum() < settings.min_vortices:
        return None
    orientation = float((tangents[keep] @ direction).sum())
    if orientation == 0.0:
        return None
    direction = direction * np.sign(orientation)
    point = mean - (mean @ direction) * direction  # the line's point closest to the grid centre
    return point, direction, int(keep.sum())


def _line_frame(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's in-plane axes ``e1, e2`` across a line of unit ``direction``."""
    e1 = _REFERENCE - np.dot(_REFERENCE, direction) * direction
    e1 = e1 / np.linalg.norm(e1)
    return e1, np.cross(direction, e1)


def _wrapped(x: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * x))


def _wrapped_fast(x: np.ndarray) -> np.ndarray:
    """``x`` wrapped into ``[-pi, pi)`` by arithmetic (``_wrapped`` but for ``+pi``, which maps to ``-pi``)."""
    return np.mod(x + np.pi, 2 * np.pi) - np.pi


def _neighbour_pairs() -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Index pairs ``(lo, hi)`` that select each voxel and its neighbour along each axis."""
    pairs = []
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        pairs.append((tuple(lo), tuple(hi)))
    return pairs


_NEIGHBOURS = _neighbour_pairs()


def _smooth_basis(coords: np.ndarray, layout: PhysicalLayout) -> list[np.ndarray]:
    """The decoder's nine smooth-phase fields (linear and quadratic in the scaled coordinates)."""
    x = coords / layout.phase_length
    return [x[0], x[1], x[2], x[0] ** 2, x[1] ** 2, x[2] ** 2, x[0] * x[1], x[0] * x[2], x[1] * x[2]]


def _phase_fit(density: np.ndarray, support: np.ndarray, coords: np.ndarray, layout: PhysicalLayout,
               line: tuple[np.ndarray, np.ndarray, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial and edge-field coefficients (radians) by least squares on wrapped phase differences."""
    basis = _smooth_basis(coords, layout)
    winding_field = np.zeros(support.shape)
    edge_fields: list[np.ndarray] = []
    core = np.zeros(support.shape, dtype=bool)
    if line is not None:
        point, direction, _ = line
        e1, e2 = _line_frame(direction)
        rel = coords - point[:, None, None, None]
        u = np.tensordot(e1, rel, axes=1)
        v = np.tensordot(e2, rel, axes=1)
        r2 = u ** 2 + v ** 2 + _CORE_RADIUS2
        winding_field = np.arctan2(v, u)
        edge_fields = [2 * u * v / r2, (u ** 2 - v ** 2) / r2, np.log(r2)]
        core = u ** 2 + v ** 2 < 1.5 ** 2  # the vortex core: differences there are not smooth
    fields = basis + edge_fields
    rows, rhs = [], []
    phase = np.angle(density)
    usable = support & ~core
    for lo, hi in _NEIGHBOURS:
        both = usable[lo] & usable[hi]
        measured = _wrapped(phase[hi] - phase[lo]) - _wrapped(winding_field[hi] - winding_field[lo])
        rhs.append(_wrapped(measured[both]))
        rows.append(np.stack([(f[hi] - f[lo])[both] for f in fields], axis=1))
    A, b = np.concatenate(rows), np.concatenate(rhs)
    if len(b) < len(fields):
        return np.zeros(9), np.zeros(3)
    normal = A.T @ A  # normal equations: a few unknowns, tens of thousands of differences
    try:
        coefficients = np.linalg.solve(normal + 1e-9 * np.trace(normal) * np.eye(len(fields)), A.T @ b)
    except np.linalg.LinAlgError:  # pragma: no cover - a degenerate support
        coefficients = np.linalg.lstsq(A, b, rcond=None)[0]
    return coefficients[:9], (coefficients[9:] if line is not None else np.zeros(3))


class _PhaseDifferences:
    """The wrapped phase differences between neighbouring voxels of a support, and the smooth basis's.

    What the line search near the surface evaluates candidate lines on (pairs, not grids: each
    candidate touches only the pairs near where the no-line fit misfits most).
    """

    def __init__(self, phase: np.ndarray, usable: np.ndarray, coords: np.ndarray, layout: PhysicalLayout) -> None:
        basis = _smooth_basis(coords, layout)
        lo_points, hi_points, measured, rows = [], [], [], []
        for lo, hi in _NEIGHBOURS:
            both = usable[lo] & usable[hi]
            lo_points.append(np.stack([c[lo][both] for c in coords], axis=1))
            hi_points.append(np.stack([c[hi][both] for c in coords], axis=1))
            measured.append(_wrapped_fast(phase[hi] - phase[lo])[both])
            rows.append(np.stack([(f[hi] - f[lo])[both] for f in basis], axis=1))
        self.lo, self.hi = np.concatenate(lo_points), np.concatenate(hi_points)  # (M, 3)
        self.measured, self.basis = np.concatenate(measured), np.concatenate(rows)  # (M,), (M, 9)

    def residual(self) -> np.ndarray:
        """The squared residual of each difference after the smooth (no-line) least-squares fit of all of them."""
        return np.square(self.basis @ _least_squares(self.basis, self.measured) - self.measured)

    def misfit(self, rows: np.ndarray, line: tuple[np.ndarray, np.ndarray] | None = None) -> float:
        """Mean squared residual of the least-squares phase fit on the differences ``rows`` (indices),
        with a line's winding and edge fields when ``line`` = (point, unit direction) is given."""
        A, b = self.basis[rows], self.measured[rows]
        if line is not None:
            point, direction = line
            e1, e2 = _line_frame(direction)
            fields = []
            for ends in (self.lo[rows], self.hi[rows]):
                rel = ends - point
                u, v = rel @ e1, rel @ e2
                r2 = u ** 2 + v ** 2 + _CORE_RADIUS2
                fields.append((np.arctan2(v, u), np.stack([2 * u * v / r2, (u ** 2 - v ** 2) / r2, np.log(r2)], 1),
                               u ** 2 + v ** 2 >= 1.5 ** 2))
            (w_lo, e_lo, far_lo), (w_hi, e_hi, far_hi) = fields
            keep = far_lo & far_hi  # differences across the core are not smooth
            A = np.concatenate([A, e_hi - e_lo], axis=1)[keep]
            b = _wrapped_fast(b - _wrapped_fast(w_hi - w_lo))[keep]
        if len(b) < 4 * A.shape[1]:
            return math.inf
        return float(np.mean(np.square(A @ _least_squares(A, b) - b)))


def _least_squares(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmin |A c - b|`` by the (slightly regularised) normal equations: few unknowns, many rows."""
    normal = A.T @ A
    return np.linalg.solve(normal + 1e-9 * np.trace(normal) * np.eye(A.shape[1]), A.T @ b)


def _near_surface_line(phase: np.ndarray, usable: np.ndarray, coords: np.ndarray, layout: PhysicalLayout,
                       rotation: np.ndarray, settings: FitSettings) -> tuple[np.ndarray, np.ndarray, int] | None:
    """A dislocation line at or just under the surface, where no vortex plaquette lies inside the crystal.

    Such a line still bends the phase of the crystal next to it: the smooth phase fit misfits there.
    When the fit's mean squared residual exceeds ``settings.surface_line_trigger``, straight lines
    along the crystal's 13 plane-normal directions (both winding senses) through a 3 x 3 grid of
    points 2 voxels apart around where it misfits most are tried on the differences near there, then
    the best one's neighbours 1 voxel apart; the best is kept when it takes that local misfit below
    ``settings.surface_line_ratio`` of the no-line fit's. The trigger was set between the highest
    misfit of frames without a line (2.8e-3) and the lowest of frames with a line but no vortex
    inside (5.4e-3) on tuning series (seeds 0 and 1 of the four scenarios, 8 frames each).
    """
    differences = _PhaseDifferences(phase, usable, coords, layout)
    if len(differences.measured) < 4 * differences.basis.shape[1]:
        return None
    residual = differences.residual()
    if float(residual.mean()) <= settings.surface_line_trigger:
        return None
    middle = 0.5 * (differences.lo + differences.hi)
    hot = middle[np.argsort(residual)[-20:]].mean(axis=0)  # where the smooth phase misfits most
    rows = np.flatnonzero(np.linalg.norm(middle - hot, axis=1) <= settings.surface_line_radius)
    reference = differences.misfit(rows)
    best, best_value = None, math.inf
    for direction in _HALF_NORMALS @ rotation.T:  # coarse: every direction and sense, points 2 voxels apart
        direction = direction / np.linalg.norm(direction)
        e1, e2 = _line_frame(direction)
        for a, c in _SURFACE_LINE_GRID:
            for sense in (direction, -direction):
                value = differences.misfit(rows, (hot + 2 * a * e1 + 2 * c * e2, sense))
                if value < best_value:
                    best, best_value = (hot + 2 * a * e1 + 2 * c * e2, sense), value
    if best is None:  # too few differences near the misfit to compare lines on
        return None
    centre, direction = best
    e1, e2 = _line_frame(direction)
    for a, c in _SURFACE_LINE_GRID:  # fine: the best line's neighbours one voxel apart
        value = differences.misfit(rows, (centre + a * e1 + c * e2, direction))
        if value < best_value:
            best, best_value = (centre + a * e1 + c * e2, direction), value
    if not best_value <= reference * settings.surface_line_ratio:
        return None
    point, direction = best
    return point - (point @ direction) * direction, direction, 0


def fit_explicit(density: np.ndarray, layout: PhysicalLayout, *, previous: ExplicitFit | None = None,
                 settings: FitSettings | None = None) -> ExplicitFit:
    """Read the explicit crystal parameters off a complex density (no network).

    Parameters
    ----------
    density : ndarray, shape (n, n, n), complex
        A reconstruction on the model's object grid (e.g. the physics stage's output), in the
        laboratory frame of the model's decoded densities.
    layout : PhysicalLayout
        The model's parameter layout (``PhysicalLayout(model.config.n)``).
    previous : ExplicitFit, optional
        The previous frame's fit: the orientation search starts from its rotation (local) instead
        of searching the whole box.
    settings : FitSettings, optional

    Returns
    -------
    ExplicitFit

    Raises
    ------
    ValueError
        A density of the wrong shape, not finite, or with no bright voxel.
    """
    settings = FitSettings() if settings is None else settings
    n = layout.n
    d = np.asarray(density)
    if d.shape != (n, n, n):
        raise ValueError(f"`density` must have shape {(n, n, n)} for this layout, got {d.shape}")
    if not np.isfinite(d).all() or not np.abs(d).any():
        raise ValueError("`density` must be finite and not all zero")
    coords = np.asarray(centred_coords(n), dtype=np.float64)
    amplitude = np.abs(d).astype(np.float64)
    bright = amplitude[amplitude > 0.5 * amplitude.max()]
    amplitude = amplitude / float(np.median(bright))
    support = amplitude > 0.5
    normals, weights, _ = _surface_normals(amplitude, coords)
    if len(normals) < 10:
        raise ValueError("the density has too few surface voxels to read an orientation from")
    score = _AlignmentScore(normals, weights, settings.sharpness)
    if previous is not None:
        starts, step = [previous.parameters[:3] * _ORIENTATION_MAX], math.radians(settings.local_step_deg)
        starts += _edge_equivalents(starts[0], math.radians(settings.edge_margin_deg))
    else:
        starts, step = _global_candidates(score, settings), math.radians(settings.grid_step_deg) / 2
    local = score.thinned(400)
    facets = _FacetProblem(amplitude, support, coords)
    found = []
    for start in starts:  # several starts: the one whose crystal matches the amplitude best wins
        vector, alignment = _local_search(local, start, step, settings)
        distances, misfit = facets(_rotations(vector[None])[0], settings.facet_iterations)
        found.append((misfit, vector, alignment, distances))
    lowest = min(f[0] for f in found)
    if previous is None:
        # a global search: compare the close candidates at their own lowest facet misfit
        for i, (misfit, vector, alignment, distances) in enumerate(found):
            if misfit <= _MISFIT_SHORTLIST * lowest:
                vector, distances, misfit = _misfit_search(facets, vector, distances, misfit, settings,
                                                           settings.misfit_step_deg)
                found[i] = (misfit, vector, alignment, distances)
        (misfit, vector, alignment, distances), ties = _lowest_energy_of_ties(facets, found)
    else:
        # a local search starts from the previous frame's orientation, a fraction of a degree away (a
        # smaller first step); its other starts (edge equivalents) describe the same crystal, so one of
        # them is refined only while it fits better than the best refined so far
        best = math.inf
        for i, (misfit, vector, alignment, distances) in enumerate(found):
            if i == 0 or misfit < best:
                vector, distances, misfit = _misfit_search(facets, vector, distances, misfit, settings,
                                                           2 * settings.min_step_deg)
                found[i] = (misfit, vector, alignment, distances)
                best = min(best, misfit)
        (misfit, vector, alignment, distances), ties = min(found, key=lambda f: f[0]), 1
    rotation = _rotations(vector[None])[0]
    interior = ndimage.binary_erosion(support)
    # the crystal's body, holes closed: a dislocation core is darker than the crystal around it. Not
    # eroded: a line a voxel or two under the surface winds only around plaquettes there (on the
    # benchmark series eroding lost such lines and found no line the truth lacked either way)
    body = ndimage.binary_fill_holes(ndimage.binary_closing(support, iterations=2))
    centres, tangents = _vortices(np.angle(d), body & (amplitude > 0.02), coords)
    line = _line(centres, tangents, settings) if len(centres) >= settings.min_vortices else None
    fitted_on = interior if interior.sum() > 50 else support
    without_line = None
    if line is None and settings.surface_line_trigger < math.inf:
        line = _near_surface_line(np.angle(d), fitted_on, coords, layout, rotation, settings)
        if line is not None:  # the same crystal without that line, for a caller to compare
            smooth, _ = _phase_fit(d, fitted_on, coords, layout, None)
            without_line = _assembled(layout, vector, rotation, distances, smooth, None, support, alignment)
    polynomial, edge = _phase_fit(d, fitted_on, coords, layout, line)
    dislocation = None
    if line is not None:
        point, direction, count = line
        dislocation = DislocationFit(point=point, direction=direction, winding=1, edge=edge, vortices=count)
    fit = _assembled(layout, vector, rotation, distances, polynomial, dislocation, support, alignment)
    if without_line is not None:  # the same orientation, so the same tie
        without_line = replace(without_line, orientation_ties=ties)
    return replace(fit, without_line=without_line, orientation_ties=ties)


def _assembled(layout: PhysicalLayout, vector: np.ndarray, rotation: np.ndarray, distances: np.ndarray,
               polynomial: np.ndarray, dislocation: DislocationFit | None, support: np.ndarray,
               alignment: float) -> ExplicitFit:
    """The :class:`ExplicitFit` of read-off quantities, with its box-unit parameters."""
    parameters = np.zeros(layout.size)
    parameters[layout.slice("orientation")] = vector / _ORIENTATION_MAX
    parameters[layout.slice("facets")] = layout.distance_units(distances)
    parameters[layout.slice("phase")] = polynomial / _PHASE_MAX
    if dislocation is not None:
        block = np.concatenate([dislocation.direction, layout.line_point_units(dislocation.point),
                                [1.0 / _WINDING_GAIN], dislocation.edge / _EDGE_MAX])
        parameters[layout.slice("dislocation")] = block
    return ExplicitFit(parameters=np.clip(parameters, -1.0, 1.0), rotation=rotation, facet_distances=distances,
                       phase_coefficients=polynomial, dislocation=dislocation, support=support, alignment=alignment)


def explicit_latent(fit: ExplicitFit, learned: np.ndarray) -> np.ndarray:
    """A latent with ``fit``'s explicit parameters and the given learned part, shape (48 + len(learned),)."""
    return np.concatenate([fit.parameters, np.asarray(learned, dtype=np.float64)])
