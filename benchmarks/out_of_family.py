"""Out-of-family test series: atomistic crystals the project's model was never trained on.

Run (from the repository root)::

    python benchmarks/out_of_family.py --out s.cxi --frames 12 --photons 1e8 --seed 101 \\
        [--n 32] [--beamstop 1.5] [--kind mixed] [--jump-at FRAME]

Writes a CXI series (``latenttune.io.open_series`` reads it) of a crystal that changes while it
is measured, with its ground-truth densities and a JSON description of every frame's truth, to
check that tracking generalises beyond the training simulator. It is written apart from that
simulator (it imports nothing of ``sim``; see ``docs/out_of_family.md``) and is never used for
training:

* the crystal is built from atoms: an FCC lattice (constant 1.0 to 1.6 voxels), each atom
  displaced by ``u(r)``, kept if it lies inside the shape, and splatted onto the grid with a
  Gaussian kernel carrying its Bragg phasor ``exp(2 pi i G . u)`` (a few vacancies make the
  amplitude inside not exactly flat; the surface is atomically rough);
* Wulff-like shapes with {311}, {210} and {221} facets besides {100} and {111} (no {110}), optional
  rounded edges and an elongation, in any orientation;
* straight dislocations of any line direction (edge, screw or mixed, ``b = a/2 <110>``, full
  isotropic Volterra field) and time-varying nonlinear strains (a rotating strain gradient, a
  growing core-shell misfit, a Gaussian bump, a strain wave);
* series kinds ``growth``, ``tilt``, ``glide``, ``strain`` and ``mixed``, with an optional abrupt jump.

Conventions kept (docs/conventions.md, section 2): object grid ``n^3``, centred coordinates ``x = i - n // 2``
(component ``k`` along array axis ``k``), diffraction grid ``N = 2 n`` with
``I = |fftshift(fftn(ifftshift(pad(d)), norm="ortho"))|^2`` (``q = 0`` at index ``N // 2``), counts
``Poisson(photons I / sum(I))``, a centred spherical beamstop masked (True = not measured, counts 0),
Bragg phase ``phi = 2 pi G . u`` with ``G`` in 1/voxel (no ``2 pi``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import permutations, product
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy.spatial import HalfspaceIntersection, QhullError

from latenttune.io import write_series

__all__ = [
    "FACET_FAMILIES",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "KINDS",
    "REFLECTIONS",
    "TRAINING_FACET_FAMILIES",
    "OutOfFamilySeries",
    "OutOfFamilySettings",
    "beamstop_mask",
    "dislocation_displacement",
    "facet_normals",
    "forward_intensity",
    "generate",
    "main",
    "measure",
    "random_rotation",
    "rotation_about_axis",
    "splat_atoms",
    "write",
]

logger = logging.getLogger("latenttune.benchmarks.out_of_family")

#: Name written to the file's ``generator`` attribute.
GENERATOR_NAME = "out-of-family"
#: Version of the recipe; bump it whenever the same seed would give a different series.
GENERATOR_VERSION = "1.0"
#: Series kinds (``--kind``).
KINDS: tuple[str, ...] = ("growth", "tilt", "glide", "strain", "mixed")
#: Bragg reflections offered, as Miller indices of the cubic cell (``G = hkl / a``).
REFLECTIONS: dict[str, tuple[int, int, int]] = {"111": (1, 1, 1), "200": (2, 0, 0)}
#: Facet families of the shapes ({110} left out on purpose; the training shapes have 100/110/111 only).
FACET_FAMILIES: tuple[str, ...] = ("100", "111", "311", "210", "221")
#: Families the training simulator's shapes are cut by (for reference and the tests).
TRAINING_FACET_FAMILIES: tuple[str, ...] = ("100", "110", "111")
_EXOTIC = ("311", "210", "221")

#: Splatting kernel footprint: 4 grid nodes per axis (floor(x) - 1 .. floor(x) + 2), reach <= 2 voxels.
_KERNEL_NODES = 4
#: Voxels kept free between the crystal's bounding radius and the box faces (kernel reach + 1).
_BOX_MARGIN = 3.0
#: Smallest facet area (voxels^2, before rounding) counted as present.
_MIN_FACET_AREA = 1.0


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if not _is_int(value):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        rule = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be an integer {rule}, got {value!r}")
    return int(value)


def _num(name: str, value: Any, low: float, high: float = math.inf, open_low: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if open_low else v >= low) and v <= high
    if not ok:
        lo = "(" if open_low else "["
        hi = f"{high:g}]" if math.isfinite(high) else "inf)"
        raise ValueError(f"`{name}` must be a finite number in {lo}{low:g}, {hi}, got {value!r}")
    return v


def _check_rng(rng: Any) -> tuple[np.random.Generator, int | None]:
    if isinstance(rng, np.random.Generator):
        return rng, None
    if _is_int(rng) and rng >= 0:
        return np.random.default_rng(int(rng)), int(rng)
    raise TypeError(f"`rng` must be a numpy.random.Generator or a non-negative integer seed, got {rng!r}")


# ---------------------------------------------------------------------------
# Settings and result
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutOfFamilySettings:
    """What to generate (everything else is drawn from the random generator).

    Parameters
    ----------
    n : int
        Object grid size (>= 16); the diffraction grid is ``N = 2 n``.
    frames : int
        Number of frames ``T`` (>= 1).
    kind : {"growth", "tilt", "glide", "strain", "mixed"}
        How the crystal changes over the series (see the module docstring).
    photons : float
        Expected photons per frame from the sample (> 0), before the beamstop.
    beamstop : float
        Radius of the centred spherical beamstop, voxels (>= 0, < N / 2; 0 masks nothing).
    jump_at : int, optional
        First frame after an abrupt re-orientation (about 20 degrees) and change of size and
        habit; ``1 <= jump_at <= frames - 1``.
    frame_interval : float
        Seconds between frames (> 0).
    reflection : {"111", "200"}
        Bragg reflection ``hkl``; ``G = hkl / a`` in the crystal frame.
    lattice_constant : float, optional
        FCC lattice constant ``a`` in voxels, in [0.6, 2.0]; drawn in [1.0, 1.6] when None.
    kernel_sigma : float
        Standard deviation of the Gaussian splatting kernel, voxels, in [0.3, 1.0].
    vacancy_fraction : float
        Fraction of lattice sites left empty (fixed per site over the series), in [0, 0.2].
    """

    n: int = 32
    frames: int = 12
    kind: str = "mixed"
    photons: float = 1e8
    beamstop: float = 1.5
    jump_at: int | None = None
    frame_interval: float = 1.0
    reflection: str = "111"
    lattice_constant: float | None = None
    kernel_sigma: float = 0.6
    vacancy_fraction: float = 0.02

    def __post_init__(self) -> None:
        n = _int("n", self.n, 16)
        frames = _int("frames", self.frames, 1)
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {list(KINDS)}, got {self.kind!r}")
        photons = _num("photons", self.photons, 0.0, open_low=True)
        beamstop = _num("beamstop", self.beamstop, 0.0)
        if beamstop >= n:  # N / 2 = n
            raise ValueError(f"`beamstop` must be < N / 2 = {n} voxels, got {self.beamstop!r}")
        jump_at = self.jump_at
        if jump_at is not None:
            if frames < 2:
                raise ValueError(f"`jump_at` needs at least 2 frames, got frames = {frames}")
            jump_at = _int("jump_at", jump_at, 1, frames - 1)
        if not isinstance(self.reflection, str) or self.reflection not in REFLECTIONS:
            raise ValueError(f"`reflection` must be one of {list(REFLECTIONS)}, got {self.reflection!r}")
        a = self.lattice_constant
        if a is not None:
            a = _num("lattice_constant", a, 0.6, 2.0)
        for name, value in (
            ("n", n), ("frames", frames), ("photons", photons), ("beamstop", beamstop), ("jump_at", jump_at),
            ("frame_interval", _num("frame_interval", self.frame_interval, 0.0, open_low=True)),
            ("lattice_constant", a),
            ("kernel_sigma", _num("kernel_sigma", self.kernel_sigma, 0.3, 1.0)),
            ("vacancy_fraction", _num("vacancy_fraction", self.vacancy_fraction, 0.0, 0.2)),
        ):
            object.__setattr__(self, name, value)

    @property
    def N(self) -> int:
        """Diffraction grid size ``2 n``."""
        return 2 * self.n


@dataclass(frozen=True, eq=False)
class OutOfFamilySeries:
    """A generated series and its truth.

    Attributes
    ----------
    settings : OutOfFamilySettings
        What was asked for.
    seed : int or None
        The seed, when :func:`generate` was given one (None for a Generator).
    densities : ndarray
        complex64 ``(T, n, n, n)`` ground-truth densities ``rho exp(i phi)``.
    intensities : ndarray
        float32 ``(T, N, N, N)`` Poisson counts; 0 where ``mask`` is True.
    mask : ndarray
        bool ``(N, N, N)`` beamstop mask, True = not measured (the same for every frame).
    times : ndarray
        float64 ``(T,)`` seconds.
    truth : tuple of dict
        JSON-ready description of each frame's truth (see ``docs/out_of_family.md``).
    description : dict
        JSON-ready description of what was drawn for the whole series.
    """

    settings: OutOfFamilySettings
    seed: int | None
    densities: np.ndarray
    intensities: np.ndarray
    mask: np.ndarray
    times: np.ndarray
    truth: tuple[dict[str, Any], ...]
    description: dict[str, Any]

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.densities.shape[0])

    @property
    def n(self) -> int:
        """Object grid size."""
        return self.settings.n

    @property
    def N(self) -> int:
        """Diffraction grid size ``2 n``."""
        return self.settings.N

    def attrs(self) -> dict[str, Any]:
        """The file's root attributes (nested values are JSON-encoded by the writer)."""
        s = self.settings
        return {
            "generator": GENERATOR_NAME,
            "generator_version": GENERATOR_VERSION,
            "purpose": "out-of-family test series; never used for training",
            "kind": s.kind,
            "seed": self.seed,
            "photons": s.photons,
            "beamstop_radius": s.beamstop,
            "n": s.n,
            "frames": self.num_frames,
            "jump_at": s.jump_at,
            "settings": asdict(s),
            "series": self.description,
            "truth_frames": list(self.truth),
            "phase_convention": "phi = 2 pi G . u, G in 1/voxel without 2 pi",
            "coordinates": "centred voxels x = i - n // 2, component k along array axis k",
        }


# ---------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------


def facet_normals(family: str) -> tuple[np.ndarray, np.ndarray]:
    """All planes of a cubic facet family ``{hkl}``.

    Parameters
    ----------
    family : str
        One of :data:`FACET_FAMILIES` (or "110").

    Returns
    -------
    hkl : ndarray
        int64 ``(m, 3)`` Miller indices (6 for {100}, 8 for {111}, 24 for {311}, {210}, {221}).
    normals : ndarray
        float64 ``(m, 3)`` unit outward normals in the crystal frame.
    """
    if family not in FACET_FAMILIES + ("110",):
        raise ValueError(f"`family` must be one of {list(FACET_FAMILIES)}, got {family!r}")
    base = [int(c) for c in family]
    rows = {tuple(s * p for s, p in zip(signs, perm)) for perm in permutations(base)
            for signs in product((1, -1), repeat=3)}
    hkl = np.array(sorted(rows), dtype=np.int64)
    return hkl, hkl / np.linalg.norm(hkl, axis=1, keepdims=True)


def _family_of(hkl: Sequence[int]) -> str:
    return "".join(str(v) for v in sorted((abs(int(x)) for x in hkl), reverse=True))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    while np.linalg.norm(v) < 1e-9:  # pragma: no cover - probability zero
        v = rng.standard_normal(3)
    return _unit(v)


def _random_perpendicular(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    """A unit vector uniform on the circle perpendicular to ``v``."""
    w = _random_unit(rng)
    w = w - np.dot(w, v) * v
    while np.linalg.norm(w) < 1e-6:  # pragma: no cover - probability ~0
        w = _random_unit(rng)
        w = w - np.dot(w, v) * v
    return _unit(w)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly (Haar measure) from SO(3), as a ``(3, 3)`` matrix.

    A unit quaternion with independent normal components is uniform on the 3-sphere.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    w, x, y, z = _unit(rng.standard_normal(4))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotation_about_axis(axis: Sequence[float], angle: float) -> np.ndarray:
    """Right-handed rotation by ``angle`` radians about ``axis`` (Rodrigues' formula)."""
    k = np.asarray(axis, dtype=np.float64)
    if k.shape != (3,) or not np.all(np.isfinite(k)) or np.linalg.norm(k) == 0:
        raise ValueError(f"`axis` must be a finite non-zero 3-vector, got {axis!r}")
    k = _unit(k)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def _angle_between(R1: np.ndarray, R2: np.ndarray) -> float:
    c = (np.trace(R1.T @ R2) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


@dataclass(frozen=True)
class _Polytope:
    """A convex polytope's facts that the truth reports."""

    radius: float  # bounding radius (with the rounding), voxels
    areas: np.ndarray  # (F,) planar facet areas before rounding, voxels^2
    present: np.ndarray  # (F,) bool


def _polytope(normals: np.ndarray, distances: np.ndarray, rounding: float | None,
              stretch_inv: np.ndarray, elongation: float) -> _Polytope:
    """Vertices, facet areas and presence of ``{x : normals . x <= distances}`` (cut by the rounding)."""
    halfspaces = np.hstack([normals, -distances[:, None]])
    try:
        vertices = HalfspaceIntersection(halfspaces, np.zeros(3)).intersections
    except QhullError:  # pragma: no cover - degenerate input: joggle
        vertices = HalfspaceIntersection(halfspaces, np.zeros(3), qhull_options="QJ").intersections
    radius = float(np.max(np.linalg.norm(vertices, axis=1)))
    if rounding is not None:
        radius = min(radius, rounding * max(elongation, 1.0))
    tol = 1e-7 * max(1.0, float(np.max(distances)))
    areas = np.zeros(len(distances))
    present = np.zeros(len(distances), dtype=bool)
    on_plane = np.abs(vertices @ normals.T - distances[None, :]) < tol  # (V, F)
    for k in np.flatnonzero(on_plane.sum(axis=0) >= 3):
        pts = np.unique(np.round(vertices[on_plane[:, k]], 9), axis=0)
        if len(pts) < 3:
            continue
        c = pts.mean(axis=0)
        e1 = _unit(pts[0] - c) if np.linalg.norm(pts[0] - c) > 0 else _unit(np.cross(normals[k], [1.0, 0.3, 0.1]))
        e2 = np.cross(normals[k], e1)
        rel = pts - c
        order = np.argsort(np.arctan2(rel @ e2, rel @ e1))
        x, y = (rel @ e1)[order], (rel @ e2)[order]
        areas[k] = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
        inside_rounding = rounding is None or np.linalg.norm(stretch_inv @ c) <= rounding
        present[k] = areas[k] >= _MIN_FACET_AREA and inside_rounding
    return _Polytope(radius=radius, areas=areas, present=present)


# ---------------------------------------------------------------------------
# Displacement fields
# ---------------------------------------------------------------------------


def dislocation_displacement(points: np.ndarray, line_point: Sequence[float], line_direction: Sequence[float],
                             burgers: Sequence[float], poisson_ratio: float, core_radius: float = 0.5,
                             reference_radius: float = 1.0) -> np.ndarray:
    """Isotropic-elasticity displacement of a straight dislocation of any orientation.

    With ``t`` the unit line direction, the Burgers vector splits into a screw part
    ``b_s = (b . t) t`` and an edge part ``b_e``. In the frame ``e1 = b_e / |b_e|``,
    ``e2 = t x e1`` with ``x, y`` the coordinates of ``r - line_point`` and
    ``theta = atan2(y, x)`` (Hirth and Lothe, ch. 3)::

        u = |b_s| theta / (2 pi) t
          + |b_e| / (2 pi) [theta + x y / (2 (1 - nu) rho^2)] e1
          - |b_e| / (2 pi) [(1 - 2 nu) / (4 (1 - nu)) ln(rho^2 / R^2) + (x^2 - y^2) / (4 (1 - nu) rho^2)] e2

    with ``rho^2 = x^2 + y^2 + core_radius^2`` and ``R = reference_radius`` (a rigid shift only).
    ``G . u`` winds by ``G . b`` counter-clockwise about ``t``.

    Parameters
    ----------
    points : ndarray
        ``(M, 3)`` positions, voxels.
    line_point, line_direction, burgers : (3,) floats
        A point on the line, its direction (normalised here) and the Burgers vector (voxels).
    poisson_ratio : float
        ``nu`` in [0, 0.5).
    core_radius, reference_radius : float
        Core regularisation and the radius where the logarithmic term vanishes (voxels, > 0).

    Returns
    -------
    ndarray
        float64 ``(M, 3)`` displacements, voxels.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"`points` must have shape (M, 3), got {p.shape}")
    nu = _num("poisson_ratio", poisson_ratio, 0.0, 0.4999)
    core = _num("core_radius", core_radius, 0.0, open_low=True)
    ref = _num("reference_radius", reference_radius, 0.0, open_low=True)
    t = _unit(np.asarray(line_direction, dtype=np.float64))
    b = np.asarray(burgers, dtype=np.float64)
    b_screw = float(np.dot(b, t))
    b_edge_vec = b - b_screw * t
    b_edge = float(np.linalg.norm(b_edge_vec))
    if b_edge > 1e-12:
        e1 = b_edge_vec / b_edge
    else:
        helper = np.eye(3)[int(np.argmin(np.abs(t)))]
        e1 = _unit(helper - np.dot(helper, t) * t)
    e2 = np.cross(t, e1)
    rel = p - np.asarray(line_point, dtype=np.float64)[None, :]
    x, y = rel @ e1, rel @ e2
    theta = np.arctan2(y, x)
    u = (b_screw / (2 * np.pi)) * theta[:, None] * t[None, :]
    if b_edge > 1e-12:
        rho2 = x * x + y * y + core * core
        ux = theta + x * y / (2 * (1 - nu) * rho2)
        uy = (1 - 2 * nu) / (4 * (1 - nu)) * np.log(rho2 / (ref * ref)) + (x * x - y * y) / (4 * (1 - nu) * rho2)
        u = u + (b_edge / (2 * np.pi)) * (ux[:, None] * e1[None, :] - uy[:, None] * e2[None, :])
    return u


@dataclass(frozen=True, eq=False)
class _Dislocation:
    burgers: np.ndarray  # body frame, voxels
    burgers_index: tuple[int, int, int]  # b = a/2 [uvw]
    direction: np.ndarray  # body unit line direction
    glide_normal: np.ndarray
    glide_direction: np.ndarray
    base: np.ndarray  # body point on the line where the glide coordinate is 0
    s_start: float
    s_end: float
    character: str
    core_radius: float
    reference_radius: float

    def point(self, tau: float) -> np.ndarray:
        return self.base + (self.s_start + (self.s_end - self.s_start) * tau) * self.glide_direction


@dataclass(frozen=True, eq=False)
class _Strain:
    """Smooth displacement fields (crystal frame, relative to the crystal centre); zero amplitude = absent."""

    g_hat: np.ndarray
    bump_amplitude: float = 0.0  # voxels along g_hat
    bump_centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    bump_width: float = 1.0
    wave_amplitude: float = 0.0  # voxels along g_hat
    wave_vector: np.ndarray = field(default_factory=lambda: np.zeros(3))  # cycles per voxel
    wave_phase0: float = 0.0
    wave_phase_rate: float = 0.0  # radians over the series
    gradient_kappa0: float = 0.0  # 1/voxel; u = kappa/2 (s . m)^2 g_hat
    gradient_kappa1: float = 0.0
    gradient_direction0: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    gradient_axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    gradient_turn: float = 0.0  # radians over the series
    radial_epsilon1: float = 0.0  # misfit at the last frame
    radial_core: float = 1.0  # voxels

    def gradient_direction(self, tau: float) -> np.ndarray:
        return rotation_about_axis(self.gradient_axis, self.gradient_turn * tau) @ self.gradient_direction0

    def displacement(self, s: np.ndarray, tau: float) -> np.ndarray:
        u = np.zeros_like(s)
        along = np.zeros(len(s))
        if self.bump_amplitude:
            d2 = np.sum((s - self.bump_centre) ** 2, axis=1)
            along += self.bump_amplitude * np.exp(-d2 / (2 * self.bump_width**2))
        if self.wave_amplitude:
            along += self.wave_amplitude * np.sin(2 * np.pi * (s @ self.wave_vector)
                                                  + self.wave_phase0 + self.wave_phase_rate * tau)
        kappa = self.gradient_kappa0 + (self.gradient_kappa1 - self.gradient_kappa0) * tau
        if kappa:
            along += 0.5 * kappa * (s @ self.gradient_direction(tau)) ** 2
        u += along[:, None] * self.g_hat[None, :]
        eps = self.radial_epsilon1 * tau
        if eps:
            r = np.linalg.norm(s, axis=1)
            rc = self.radial_core
            scale = np.where(r <= rc, eps, eps * rc**3 / np.maximum(r, 1e-9) ** 3)  # u = s * scale
            u += scale[:, None] * s
        return u

    def describe(self, tau: float, R: np.ndarray, centre: np.ndarray, G: float) -> dict[str, Any]:
        """Coefficients at ``tau`` in grid coordinates, with the peak Bragg phase each gives (radians)."""
        out: dict[str, Any] = {"bump": None, "wave": None, "gradient": None, "radial": None}
        if self.bump_amplitude:
            out["bump"] = {"amplitude": self.bump_amplitude, "direction": R @ self.g_hat,
                           "centre": R @ self.bump_centre + centre, "width": self.bump_width,
                           "peak_phase": 2 * np.pi * G * self.bump_amplitude}
        if self.wave_amplitude:
            out["wave"] = {"amplitude": self.wave_amplitude, "direction": R @ self.g_hat,
                           "wave_vector": R @ self.wave_vector,
                           "phase": self.wave_phase0 + self.wave_phase_rate * tau,
                           "peak_phase": 2 * np.pi * G * self.wave_amplitude}
        kappa = self.gradient_kappa0 + (self.gradient_kappa1 - self.gradient_kappa0) * tau
        if self.gradient_kappa0 or self.gradient_kappa1:
            out["gradient"] = {"kappa": kappa, "gradient_direction": R @ self.gradient_direction(tau),
                               "direction": R @ self.g_hat}
        if self.radial_epsilon1:
            out["radial"] = {"epsilon": self.radial_epsilon1 * tau, "core_radius": self.radial_core,
                             "centre": centre}
        return out


# ---------------------------------------------------------------------------
# Rendering and measuring
# ---------------------------------------------------------------------------


def _fcc_sites(radius: float, a: float, origin: np.ndarray) -> np.ndarray:
    """FCC sites (lattice constant ``a``, shifted by ``origin``) within ``radius`` of 0."""
    basis = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    m = math.ceil(radius / a) + 1
    cells = np.arange(-m, m + 1, dtype=np.float64)
    grid = np.stack(np.meshgrid(cells, cells, cells, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    sites = ((grid + basis[None]) * a).reshape(-1, 3) + origin
    return sites[np.einsum("ij,ij->i", sites, sites) <= radius * radius]


def splat_atoms(positions: np.ndarray, weights: np.ndarray, n: int, sigma: float,
                atoms_per_voxel: float) -> np.ndarray:
    """Deposit complex atom weights onto the ``n^3`` grid with a normalised Gaussian kernel.

    Each atom spreads its weight over the 4 nearest grid nodes per axis (64 in all) with
    separable Gaussian weights of standard deviation ``sigma`` that sum to 1.

    Parameters
    ----------
    positions : ndarray
        ``(M, 3)`` centred voxel coordinates (0 at index ``n // 2``).
    weights : ndarray
        ``(M,)`` complex weights (Bragg phasors).
    n : int
        Grid size.
    sigma : float
        Kernel standard deviation, voxels.
    atoms_per_voxel : float
        Divisor: atoms in a bulk voxel, so the bulk amplitude is about 1.

    Returns
    -------
    ndarray
        complex64 ``(n, n, n)``.

    Raises
    ------
    ValueError
        If a kernel footprint leaves the grid (the crystal does not fit the box).
    """
    p = np.asarray(positions, dtype=np.float64)
    w = np.asarray(weights)
    if p.ndim != 2 or p.shape[1] != 3 or w.shape != (p.shape[0],):
        raise ValueError(f"`positions` must be (M, 3) and `weights` (M,), got {p.shape} and {w.shape}")
    nodes = np.floor(p).astype(np.int64)[:, :, None] - 1 + np.arange(_KERNEL_NODES)  # (M, 3, 4)
    k = np.exp(-((nodes - p[:, :, None]) ** 2) / (2.0 * sigma * sigma))
    k /= k.sum(axis=2, keepdims=True)
    index = nodes + n // 2
    if index.size and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"the crystal does not fit the {n}^3 box with its splatting kernel")
    flat = ((index[:, 0, :, None, None] * n + index[:, 1, None, :, None]) * n + index[:, 2, None, None, :]).ravel()
    kw = (k[:, 0, :, None, None] * k[:, 1, None, :, None] * k[:, 2, None, None, :]).reshape(len(p), -1)
    real = np.bincount(flat, weights=(kw * w.real[:, None]).ravel(), minlength=n**3)
    imag = np.bincount(flat, weights=(kw * w.imag[:, None]).ravel(), minlength=n**3)
    return ((real + 1j * imag) / atoms_per_voxel).reshape(n, n, n).astype(np.complex64)


def forward_intensity(density: np.ndarray, N: int | None = None) -> np.ndarray:
    """``|fftshift(fftn(ifftshift(pad(d)), norm="ortho"))|^2`` on the ``N^3`` grid (default ``2 n``).

    The project's forward model (``sim/forward.py``) re-implemented: ``pad`` puts object index
    ``n // 2`` on box index ``N // 2``; ``q = 0`` lands on index ``N // 2``.

    Parameters
    ----------
    density : ndarray
        Complex ``(n, n, n)``.
    N : int, optional
        Diffraction grid size (>= n), default ``2 n``.

    Returns
    -------
    ndarray
        float32 ``(N, N, N)`` for complex64 input.
    """
    d = np.asarray(density)
    if d.ndim != 3 or len(set(d.shape)) != 1:
        raise ValueError(f"`density` must be a cube (n, n, n), got shape {d.shape}")
    n = d.shape[0]
    N = 2 * n if N is None else _int("N", N, n)
    box = np.zeros((N, N, N), dtype=np.result_type(d.dtype, np.complex64))
    start = N // 2 - n // 2
    box[start:start + n, start:start + n, start:start + n] = d
    F = sfft.fftshift(sfft.fftn(sfft.ifftshift(box), norm="ortho", workers=-1))
    return (F.real * F.real + F.imag * F.imag).astype(F.real.dtype, copy=False)


def beamstop_mask(N: int, radius: float) -> np.ndarray:
    """bool ``(N, N, N)``, True within ``radius`` voxels of ``q = 0`` (index ``N // 2``)."""
    N = _int("N", N, 2)
    radius = _num("radius", radius, 0.0)
    if radius == 0:
        return np.zeros((N, N, N), dtype=bool)
    x = np.arange(N) - N // 2
    return x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2 <= radius * radius


def measure(intensity: np.ndarray, photons: float, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts ``Poisson(photons I / sum(I))`` as float32, 0 where ``mask`` is True."""
    I = np.asarray(intensity, dtype=np.float64)
    total = I.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("`intensity` must have a positive finite total")
    counts = rng.poisson(_num("photons", photons, 0.0, open_low=True) * I / total).astype(np.float32)
    counts[np.asarray(mask, dtype=bool)] = 0.0
    return counts


# ---------------------------------------------------------------------------
# The drawn series
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Plan:
    settings: OutOfFamilySettings
    a: float
    hkl: np.ndarray
    g_body: np.ndarray
    poisson_ratio: float
    orientation: np.ndarray
    centre: np.ndarray
    lattice_origin: np.ndarray
    facet_hkl: np.ndarray
    facet_normals: np.ndarray
    distances: np.ndarray  # frame 0, voxels
    growth: np.ndarray  # per facet, last-over-first distance ratio
    rounding: float | None  # frame 0, voxels
    elongation: float
    elongation_axis: np.ndarray  # body
    tilt_axis: np.ndarray  # grid
    tilt_angle: float  # radians at the last frame
    jump_rotation: np.ndarray
    jump_scale: float
    jump_jitter: np.ndarray
    dislocation: _Dislocation | None
    strain: _Strain
    sites: np.ndarray
    vacant: np.ndarray

    @property
    def stretch_inv(self) -> np.ndarray:
        v = self.elongation_axis
        return np.eye(3) + (1.0 / self.elongation - 1.0) * np.outer(v, v)

    def tau(self, t: int) -> float:
        T = self.settings.frames
        return t / (T - 1) if T > 1 else 0.0

    def jumped(self, t: int) -> bool:
        return self.settings.jump_at is not None and t >= self.settings.jump_at

    def orientation_at(self, t: int) -> np.ndarray:
        R = rotation_about_axis(self.tilt_axis, self.tilt_angle * self.tau(t)) @ self.orientation
        return self.jump_rotation @ R if self.jumped(t) else R

    def shape_at(self, t: int, scale: float = 1.0) -> tuple[np.ndarray, float | None]:
        """Facet distances and rounding radius at frame ``t`` (times ``scale``)."""
        tau = self.tau(t)
        d = self.distances * (1.0 + (self.growth - 1.0) * tau) * scale
        r = None if self.rounding is None else self.rounding * (1.0 + (float(self.growth.mean()) - 1.0) * tau) * scale
        if self.jumped(t):
            d = d * self.jump_scale * self.jump_jitter
            r = None if r is None else r * self.jump_scale
        return d, r

    def polytope_at(self, t: int, scale: float = 1.0) -> _Polytope:
        d, r = self.shape_at(t, scale)
        return _polytope(self.facet_normals, d, r, self.stretch_inv, self.elongation)


def _size_bounds(n: int) -> tuple[float, float]:
    """Bounding-radius range: 0.25 n to 0.4 n, the top lowered so the crystal fits with its kernel."""
    return 0.25 * n, min(0.4 * n, n / 2.0 - _BOX_MARGIN)


def _check_frames(T: int, jump_at: int | None) -> list[int]:
    """Frames to check when drawing the shape (all of them up to 24, else a spread with the jump)."""
    if T <= 24:
        return list(range(T))
    picks = set(np.linspace(0, T - 1, 16).round().astype(int).tolist())
    if jump_at is not None:
        picks |= {jump_at - 1, jump_at}
    return sorted(picks)


def _draw_shape(rng: np.random.Generator, s: OutOfFamilySettings) -> dict[str, Any]:
    """Relative facet distances (d_100 ~ 1), elongation, rounding and growth rates."""
    hkls, normals, families = [], [], []
    for fam in FACET_FAMILIES:
        h, m = facet_normals(fam)
        hkls.append(h)
        normals.append(m)
        families += [fam] * len(h)
    hkl, M = np.concatenate(hkls), np.concatenate(normals)
    fam_arr = np.array(families)
    base = np.isin(fam_arr, ("100", "111"))
    d = np.ones(len(M))
    d[fam_arr == "111"] = rng.uniform(0.82, 1.08)
    d[base] *= rng.uniform(0.97, 1.03, int(base.sum()))
    vertices = HalfspaceIntersection(np.hstack([M[base], -d[base, None]]), np.zeros(3)).intersections
    support = np.max(M @ vertices.T, axis=1)  # support function of the {100}+{111} body
    for fam in _EXOTIC:  # cut the corners and edges: each exotic family at 90-98 % of the support
        sel = fam_arr == fam
        d[sel] = support[sel] * rng.uniform(0.90, 0.98) * rng.uniform(0.985, 1.015, int(sel.sum()))
    if rng.random() < 0.7:
        elongation, axis = float(rng.uniform(1.1, 1.35)), _random_unit(rng)
        d = d * np.sqrt(1.0 + (elongation**2 - 1.0) * (M @ axis) ** 2)
    else:
        elongation, axis = 1.0, np.array([0.0, 0.0, 1.0])
    stretch_inv = np.eye(3) + (1.0 / elongation - 1.0) * np.outer(axis, axis)
    rounding = None
    if rng.random() < 0.6:
        verts = HalfspaceIntersection(np.hstack([M, -d[:, None]]), np.zeros(3)).intersections
        rounding = float(rng.uniform(0.88, 0.97) * np.max(np.linalg.norm(verts @ stretch_inv.T, axis=1)))
    if s.kind in ("growth", "mixed"):
        lo, hi = (1.15, 1.45) if s.kind == "growth" else (1.05, 1.25)
        rates = {fam: rng.uniform(lo, hi) for fam in FACET_FAMILIES}
        growth = np.array([rates[f] for f in families]) * rng.uniform(0.97, 1.03, len(M))
        growth = np.maximum(growth, 1.0)
    else:
        growth = np.ones(len(M))
    return {"hkl": hkl, "normals": M, "distances": d, "elongation": elongation, "elongation_axis": axis,
            "rounding": rounding, "growth": growth}


def _draw_plan(s: OutOfFamilySettings, rng: np.random.Generator) -> _Plan:
    a = s.lattice_constant if s.lattice_constant is not None else float(rng.uniform(1.0, 1.6))
    hkl = np.array(REFLECTIONS[s.reflection], dtype=np.float64)
    g_body = hkl / a
    nu = float(rng.uniform(0.3, 0.44))
    orientation = random_rotation(rng)
    centre = rng.uniform(-0.5, 0.5, 3)
    lattice_origin = rng.uniform(0.0, a, 3)
    tilt_axis = _random_unit(rng)
    tilt_deg = {"tilt": rng.uniform(10.0, 15.0), "mixed": rng.uniform(3.0, 6.0)}.get(s.kind, 0.0)
    tilt_angle = math.radians(tilt_deg) * (1.0 if rng.random() < 0.5 else -1.0)
    jump_rotation = rotation_about_axis(_random_unit(rng), math.radians(rng.uniform(18.0, 22.0)))
    jump_scale = float(rng.uniform(0.8, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.2))
    lower, upper = _size_bounds(s.n)
    upper -= float(np.linalg.norm(centre))
    frames = _check_frames(s.frames, s.jump_at)
    for attempt in range(100):
        shape = _draw_shape(rng, s)
        jitter = rng.uniform(0.94, 1.06, len(shape["distances"]))
        plan = _Plan(
            settings=s, a=a, hkl=hkl, g_body=g_body, poisson_ratio=nu, orientation=orientation, centre=centre,
            lattice_origin=lattice_origin, facet_hkl=shape["hkl"], facet_normals=shape["normals"],
            distances=shape["distances"], growth=shape["growth"], rounding=shape["rounding"],
            elongation=shape["elongation"], elongation_axis=shape["elongation_axis"], tilt_axis=tilt_axis,
            tilt_angle=tilt_angle, jump_rotation=jump_rotation, jump_scale=jump_scale, jump_jitter=jitter,
            dislocation=None, strain=_Strain(g_hat=_unit(g_body)), sites=np.zeros((0, 3)),
            vacant=np.zeros(0, dtype=bool),
        )
        polys = [plan.polytope_at(t) for t in frames]
        radii = np.array([p.radius for p in polys])
        k_lo, k_hi = lower / radii.min(), upper / radii.max()
        scale = float(rng.uniform(k_lo, k_hi)) if k_lo <= k_hi else float(k_hi)
        exotic = np.isin([_family_of(h) for h in plan.facet_hkl], _EXOTIC)
        polys = [plan.polytope_at(t, scale) for t in frames]
        if all(np.any(p.present & exotic) for p in polys):
            break
        logger.debug("shape draw %d had a frame without a {311}/{210}/{221} facet; drawing again", attempt)
    else:  # pragma: no cover - never seen
        raise RuntimeError("could not draw a shape with a {311}/{210}/{221} facet in every frame")
    if k_lo > k_hi:
        logger.info("the size range %.2f-%.2f n is too narrow for this growth at n = %d: the smallest frame "
                    "has radius %.2f voxels", lower / s.n, upper / s.n, s.n, radii.min() * scale)
    radius_max = max(p.radius for p in polys)
    assert radius_max + np.linalg.norm(centre) <= s.n / 2.0 - _BOX_MARGIN + 1e-9, "crystal does not fit the box"
    distances = plan.distances * scale
    rounding = None if plan.rounding is None else plan.rounding * scale
    r_in = float(distances.min())  # a proxy for the inradius at frame 0

    g_hat = _unit(g_body)
    G = float(np.linalg.norm(g_body))
    strain_kw: dict[str, Any] = {"g_hat": g_hat}
    # A static Gaussian bump in every kind: a local inclusion.
    bump_phase = {"mixed": rng.uniform(0.3, 0.8), "glide": rng.uniform(0.2, 0.5)}.get(s.kind, rng.uniform(0.4, 1.0))
    strain_kw.update(bump_amplitude=float(bump_phase * (1 if rng.random() < 0.5 else -1) / (2 * np.pi * G)),
                     bump_centre=_random_unit(rng) * rng.uniform(0.0, 0.4) * r_in,
                     bump_width=float(rng.uniform(0.25, 0.45) * r_in))
    if s.kind in ("growth", "tilt", "strain"):  # a strain wave; it travels in `strain`
        strain_kw.update(wave_amplitude=float(rng.uniform(0.2, 0.5) / (2 * np.pi * G)),
                         wave_vector=_random_unit(rng) / (rng.uniform(1.2, 2.5) * r_in),
                         wave_phase0=float(rng.uniform(0.0, 2 * np.pi)),
                         wave_phase_rate=float(rng.uniform(0.5, 1.0) * np.pi) if s.kind == "strain" else 0.0)
    if s.kind in ("strain", "mixed"):  # a rotating, growing strain gradient and a growing core-shell misfit
        strong = s.kind == "strain"
        phase0 = rng.uniform(0.3, 0.8) if strong else rng.uniform(0.2, 0.5)
        phase1 = rng.uniform(1.5, 2.5) if strong else rng.uniform(0.8, 1.4)
        m0 = _random_unit(rng)
        sign = 1 if rng.random() < 0.5 else -1
        radial_phase = (rng.uniform(1.0, 2.0) if strong else rng.uniform(0.5, 1.0)) * (1 if rng.random() < 0.5 else -1)
        core = float(rng.uniform(0.35, 0.6) * r_in)
        strain_kw.update(gradient_kappa0=float(sign * phase0 / (np.pi * G * r_in**2)),
                         gradient_kappa1=float(sign * phase1 / (np.pi * G * r_in**2)),
                         gradient_direction0=m0, gradient_axis=_random_perpendicular(rng, m0),
                         gradient_turn=float(math.radians(rng.uniform(60.0, 120.0))),
                         radial_epsilon1=float(radial_phase / (2 * np.pi * G * core)), radial_core=core)
    strain = _Strain(**strain_kw)

    dislocation = None
    if s.kind in ("glide", "mixed"):
        dislocation = _draw_dislocation(rng, s.kind, a, g_body, r_in, radius_max)

    ball = radius_max + 2.0
    sites = _fcc_sites(ball, a, lattice_origin - a * np.round(lattice_origin / a))
    vacant = rng.random(len(sites)) < s.vacancy_fraction
    return _Plan(
        settings=s, a=a, hkl=hkl, g_body=g_body, poisson_ratio=nu, orientation=orientation, centre=centre,
        lattice_origin=lattice_origin, facet_hkl=plan.facet_hkl, facet_normals=plan.facet_normals,
        distances=distances, growth=plan.growth, rounding=rounding, elongation=plan.elongation,
        elongation_axis=plan.elongation_axis, tilt_axis=tilt_axis, tilt_angle=tilt_angle,
        jump_rotation=jump_rotation, jump_scale=jump_scale, jump_jitter=plan.jump_jitter,
        dislocation=dislocation, strain=strain, sites=sites, vacant=vacant,
    )


def _draw_dislocation(rng: np.random.Generator, kind: str, a: float, g_body: np.ndarray, r_in: float,
                      radius: float) -> _Dislocation:
    """An a/2<110> dislocation seen by ``g_body`` (G . b = +-1), line in any direction, gliding."""
    candidates = [v for v in (np.array(r) for r in {tuple(x) for x in facet_normals("110")[0]})
                  if abs(np.dot(g_body, 0.5 * a * v)) > 1e-9]
    candidates.sort(key=tuple)
    v = candidates[int(rng.integers(len(candidates)))]
    b = 0.5 * a * v.astype(np.float64)
    bh = _unit(b)
    character = ("edge", "screw", "mixed")[int(rng.integers(3))] if kind == "glide" else "mixed"
    if character == "screw":
        t = bh * (1 if rng.random() < 0.5 else -1)
        normal = _random_perpendicular(rng, t)
    elif character == "edge":
        t = _random_perpendicular(rng, bh)
        normal = _unit(np.cross(t, bh))
    else:  # uniform on the sphere, kept where the line-to-b angle is 15-75 degrees (or 105-165)
        while True:
            t = _random_unit(rng)
            if 0.26 <= abs(np.dot(t, bh)) <= 0.966:
                break
        normal = _unit(np.cross(t, bh))
    glide = _unit(np.cross(normal, t))
    offset = rng.uniform(-0.15, 0.15) * r_in
    if kind == "glide":
        s0 = rng.uniform(-0.4, -0.15) * r_in
        s1 = s0 + rng.uniform(1.0, 2.0) * r_in  # may leave the crystal
    else:
        s0 = rng.uniform(-0.35, -0.1) * r_in
        s1 = s0 + rng.uniform(0.5, 0.9) * r_in
    return _Dislocation(burgers=b, burgers_index=tuple(int(x) for x in v), direction=t, glide_normal=normal,
                        glide_direction=glide, base=offset * normal, s_start=float(s0), s_end=float(s1),
                        character=character, core_radius=0.5 * a, reference_radius=float(radius))


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


def _inside(s: np.ndarray, plan: _Plan, distances: np.ndarray, rounding: float | None) -> np.ndarray:
    ok = np.all(s @ plan.facet_normals.T <= distances[None, :], axis=1)
    if rounding is not None:
        ok &= np.linalg.norm(s @ plan.stretch_inv.T, axis=1) <= rounding
    return ok


def _vec(v: Any, digits: int = 6) -> Any:
    """Plain JSON numbers, rounded."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 0:
        return round(float(arr), digits)
    return [_vec(x, digits) for x in arr]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, float, np.floating)):
        return _vec(obj)
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


def _frame(plan: _Plan, t: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The density of frame ``t`` and its truth description."""
    s = plan.settings
    tau = plan.tau(t)
    R = plan.orientation_at(t)
    distances, rounding = plan.shape_at(t)
    poly = _polytope(plan.facet_normals, distances, rounding, plan.stretch_inv, plan.elongation)
    near = np.einsum("ij,ij->i", plan.sites, plan.sites) <= (poly.radius + 1.5) ** 2
    s0 = plan.sites[near]
    u = plan.strain.displacement(s0, tau)
    d = plan.dislocation
    if d is not None:
        u += dislocation_displacement(s0, d.point(tau), d.direction, d.burgers, plan.poisson_ratio,
                                      d.core_radius, d.reference_radius)
    pos = s0 + u
    keep = _inside(pos, plan, distances, rounding) & ~plan.vacant[near]
    phasor = np.exp(2j * np.pi * (u[keep] @ plan.g_body))
    grid_pos = pos[keep] @ R.T + plan.centre
    density = splat_atoms(grid_pos, phasor, s.n, s.kernel_sigma, 4.0 / plan.a**3)

    G = R @ plan.g_body
    present = np.flatnonzero(poly.present)
    families = {fam: int(sum(_family_of(plan.facet_hkl[k]) == fam for k in present)) for fam in FACET_FAMILIES}
    truth: dict[str, Any] = {
        "frame": t,
        "time": t * s.frame_interval,
        "jumped": plan.jumped(t),
        "orientation": R,
        "centre": plan.centre,
        "lattice_constant": plan.a,
        "reflection": [int(x) for x in plan.hkl],
        "G": G,
        "shape": {
            "bounding_radius": poly.radius,
            "atoms": int(keep.sum()),
            "facets": [{"hkl": [int(x) for x in plan.facet_hkl[k]], "normal": R @ plan.facet_normals[k],
                        "distance": distances[k], "area": poly.areas[k]} for k in present],
            "families": families,
            "elongation": {"factor": plan.elongation, "axis": R @ plan.elongation_axis},
            "rounding": None if rounding is None else {"radius": rounding},
        },
        "dislocation": None,
        "strain": plan.strain.describe(tau, R, plan.centre, float(np.linalg.norm(plan.g_body))),
    }
    if d is not None:
        point_body = d.point(tau)
        lam = np.linspace(-poly.radius, poly.radius, 401)
        on_line = point_body[None, :] + lam[:, None] * d.direction[None, :]
        angle = math.degrees(math.acos(min(1.0, abs(float(np.dot(d.direction, _unit(d.burgers)))))))
        truth["dislocation"] = {
            "point": R @ point_body + plan.centre,
            "direction": R @ d.direction,
            "burgers": R @ d.burgers,
            "burgers_index": "a/2[" + " ".join(str(x) for x in d.burgers_index) + "]",
            "character": d.character,
            "line_burgers_angle_deg": angle,
            "glide_plane_normal": R @ d.glide_normal,
            "glide_direction": R @ d.glide_direction,
            "poisson_ratio": plan.poisson_ratio,
            "core_radius": d.core_radius,
            "winding": round(float(np.dot(plan.g_body, d.burgers))),
            "inside": bool(np.any(_inside(on_line, plan, distances, rounding))),
        }
    return density, _jsonable(truth)


def _describe_plan(plan: _Plan) -> dict[str, Any]:
    s = plan.settings
    d = plan.dislocation
    return _jsonable({
        "kind": s.kind,
        "lattice_constant": plan.a,
        "reflection": [int(x) for x in plan.hkl],
        "poisson_ratio": plan.poisson_ratio,
        "vacancy_fraction": s.vacancy_fraction,
        "kernel_sigma": s.kernel_sigma,
        "facet_families": list(FACET_FAMILIES),
        "facet_hkl": plan.facet_hkl.tolist(),
        "facet_growth": plan.growth,
        "tilt": {"axis": plan.tilt_axis, "total_angle_deg": math.degrees(plan.tilt_angle)},
        "jump": None if s.jump_at is None else {
            "at": s.jump_at, "angle_deg": _angle_between(np.eye(3), plan.jump_rotation), "scale": plan.jump_scale},
        "dislocation": None if d is None else {
            "character": d.character, "glide_start": d.s_start, "glide_end": d.s_end},
        "sites": len(plan.sites),
    })


def generate(settings: OutOfFamilySettings, rng: np.random.Generator | int,
             progress: Callable[[int, dict[str, Any], float], None] | None = None) -> OutOfFamilySeries:
    """Generate an out-of-family series.

    Parameters
    ----------
    settings : OutOfFamilySettings
        What to generate.
    rng : numpy.random.Generator or int
        Source of randomness, or a seed (then recorded in the file's attributes).
    progress : callable, optional
        Called after each frame as ``progress(t, truth_of_frame_t, seconds_for_frame_t)``.

    Returns
    -------
    OutOfFamilySeries
    """
    if not isinstance(settings, OutOfFamilySettings):
        raise TypeError(f"`settings` must be an OutOfFamilySettings, got {type(settings).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"`progress` must be callable or None, got {type(progress).__name__}")
    rng, seed = _check_rng(rng)
    s = settings
    plan = _draw_plan(s, rng)
    logger.info("out-of-family %s series: %d frames at n = %d, a = %.3f voxels, %d lattice sites",
                s.kind, s.frames, s.n, plan.a, len(plan.sites))
    mask = beamstop_mask(s.N, s.beamstop)
    densities = np.empty((s.frames, s.n, s.n, s.n), dtype=np.complex64)
    intensities = np.empty((s.frames, s.N, s.N, s.N), dtype=np.float32)
    truth = []
    for t in range(s.frames):
        t0 = time.perf_counter()
        densities[t], frame_truth = _frame(plan, t)
        intensities[t] = measure(forward_intensity(densities[t]), s.photons, mask, rng)
        truth.append(frame_truth)
        seconds = time.perf_counter() - t0
        logger.debug("frame %d: %d atoms, %.3f s", t, frame_truth["shape"]["atoms"], seconds)
        if progress is not None:
            progress(t, frame_truth, seconds)
    times = np.arange(s.frames, dtype=np.float64) * s.frame_interval
    return OutOfFamilySeries(settings=s, seed=seed, densities=densities, intensities=intensities, mask=mask,
                             times=times, truth=tuple(truth), description=_describe_plan(plan))


def write(series: OutOfFamilySeries, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``series`` with :func:`latenttune.io.write_series` (stacked CXI layout, truth included).

    Parameters
    ----------
    series : OutOfFamilySeries
        From :func:`generate`.
    path : str or Path
        Output file (``.cxi`` or ``.h5``).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
    """
    if not isinstance(series, OutOfFamilySeries):
        raise TypeError(f"`series` must be an OutOfFamilySeries, got {type(series).__name__}")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"`overwrite` must be a bool, got {type(overwrite).__name__}")
    truth_attrs = {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION,
                   "kind": series.settings.kind, "seed": series.seed}
    return write_series(path, series.intensities, mask=series.mask, times=series.times, truths=series.densities,
                        attrs=series.attrs(), truth_attrs=truth_attrs, overwrite=bool(overwrite))


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate a series and write it; a progress line per frame on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output CXI file")
    parser.add_argument("--frames", type=int, default=12, help="number of frames")
    parser.add_argument("--photons", type=float, default=1e8, help="expected photons per frame")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--n", type=int, default=32, help="object grid size (diffraction grid 2n)")
    parser.add_argument("--beamstop", type=float, default=1.5, help="beamstop radius, voxels")
    parser.add_argument("--kind", choices=KINDS, default="mixed", help="how the crystal changes")
    parser.add_argument("--jump-at", type=int, default=None, help="frame of an abrupt re-orientation")
    parser.add_argument("--reflection", choices=sorted(REFLECTIONS), default="111", help="Bragg reflection")
    parser.add_argument("--lattice-constant", type=float, default=None, help="FCC constant, voxels (default drawn)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    try:
        settings = OutOfFamilySettings(n=args.n, frames=args.frames, kind=args.kind, photons=args.photons,
                                       beamstop=args.beamstop, jump_at=args.jump_at, reflection=args.reflection,
                                       lattice_constant=args.lattice_constant)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if Path(args.out).exists() and not args.overwrite:
        print(f"error: {args.out} exists (pass --overwrite to replace it)", file=sys.stderr)
        return 1

    def report(t: int, truth: dict[str, Any], seconds: float) -> None:
        disl = truth["dislocation"]
        where = "" if disl is None else f", dislocation {'inside' if disl['inside'] else 'outside'}"
        print(f"frame {t + 1}/{settings.frames}: {seconds:.2f} s, {truth['shape']['atoms']} atoms, "
              f"radius {truth['shape']['bounding_radius']:.1f} voxels{where}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    series = generate(settings, args.seed, progress=report)
    path = write(series, args.out, overwrite=args.overwrite)
    print(f"wrote {path}: {series.num_frames} frames, N = {settings.N}, kind {settings.kind}, seed {args.seed}, "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
