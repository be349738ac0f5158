"""Time-varying scenarios: complex densities ``d(r, t)`` of an evolving crystal.

A scenario is a frozen dataclass of *all* its parameters. Everything random is
drawn once, up front, by the ``from_rng`` classmethod; frame ``t`` is then
computed lazily and deterministically by :meth:`Scenario.density`, so a long
series costs the memory of one frame and the same seed always gives the same
frames. Random fields are stored as integer seeds (regenerated, and cached, on
demand), so :meth:`Scenario.params` is a small JSON-serialisable dict that can
be stored in a file's attributes.

Scenarios (registry :data:`SCENARIOS`, factory :func:`make_scenario`):

``growth``
    A faceted crystal grows; each facet moves outward at its own rate.
``rotation``
    The crystal (and its phase pattern) tilts slowly about an axis.
``strain``
    A smooth random strain field ramps up linearly in amplitude.
``dislocation``
    A straight dislocation line glides through the crystal.
``jump``
    Static crystal whose shape and phase switch abruptly at frame ``jump_at``.
``fcc-glide``
    The hard case, built atom by atom (:mod:`sim.atomistic`): a faceted FCC crystal grows facet by
    facet and tilts while an edge dislocation glides through it; atoms are binned to the grid.
``latent-walk``
    A hook for a generative model: a smooth Lissajous-like path ``z(t)`` in a
    latent box, decoded by a user-supplied ``decode`` callable.

Conventions: densities are complex64 ``(n, n, n)`` with amplitude in
``[0, 1]`` (the rendered occupancy; ``fcc-glide``: atoms per voxel over the bulk mean, which
fluctuates about 1) and phase zero outside the support. Every
parameter varies continuously with ``t`` (no per-frame normalisation, and no
global-phase fixing, which jumps when ``sum(d)`` passes near zero), so except
for ``jump`` consecutive frames differ little: for the default 50 frames at
n = 32 the relative L2 change per frame is about 0.01 to 0.05 (``strain``,
``rotation``, ``growth``) and up to about 0.2 while a dislocation core crosses
the crystal. ``latent-walk`` returns the decoder output unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
from scipy import ndimage

from sim.atomistic import bin_atoms, bulk_atoms_per_voxel, fcc_sites
from sim.descriptor import DislocationLine, SampleDescriptor
from sim.forward import forward
from sim.geometry import centred_coords, rotation_about_axis
from sim.phase import (
    DEFAULT_G,
    complex_density,
    dislocation_displacement,
    seeded_gaussian_random_field,
    visible_burgers_vector,
)
from sim.shapes import FacetedCrystal, Superellipsoid, max_radius, random_faceted_crystal, random_shape

__all__ = [
    "Scenario",
    "GrowthScenario",
    "RotationScenario",
    "StrainScenario",
    "DislocationScenario",
    "JumpScenario",
    "FCCGlideScenario",
    "LatentWalkScenario",
    "SCENARIOS",
    "make_scenario",
]

logger = logging.getLogger(__name__)

_SEED_MAX = 2**63 - 1


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Convert parameters to JSON-serialisable Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        fam = getattr(type(obj), "family", None)
        if fam is not None:
            out["family"] = fam
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if callable(v) and not dataclasses.is_dataclass(v):
                continue
            out[f.name] = _jsonable(v)
        return out
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (tuple, list)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return repr(obj)


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_MAX))


def _vec3(v, name: str, unit: bool = False) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be a finite 3-vector, got {v!r}")
    if unit:
        norm = np.linalg.norm(a)
        if norm == 0:
            raise ValueError(f"`{name}` must be non-zero")
        a = a / norm
    return tuple(float(x) for x in a)


def _pos(value, name: str, allow_zero: bool = False) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {rule}, got {value!r}")
    return v


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _unit_perpendicular(rng: np.random.Generator, a: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a)
    while True:
        v = rng.standard_normal(3)
        v -= np.dot(v, a) * a
        if np.linalg.norm(v) > 1e-6:
            return v / np.linalg.norm(v)


def _assemble(occupancy: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Complex density with the phase zeroed outside the support."""
    phi = np.where(occupancy > 0, phase, np.float32(0.0))
    return complex_density(occupancy, phi)


def _check_shape_fits(shape, n: int, name: str, scale: float = 1.0) -> None:
    if not isinstance(shape, (FacetedCrystal, Superellipsoid)):
        raise TypeError(f"`{name}` must be a FacetedCrystal or Superellipsoid, got {type(shape).__name__}")
    ext = shape.extent(scale)
    if ext > max_radius(n) + 1e-9:
        raise ValueError(
            f"`{name}` does not fit in the n={n} box: extent {ext:.2f} voxels > n/2 - 1 = {max_radius(n):.2f}"
        )


# ---------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Base of all scenarios: a lazily evaluated series of ``num_frames`` densities.

    Parameters
    ----------
    n : int
        Object grid size (densities are ``(n, n, n)``).
    num_frames : int
        Number of frames ``T``; frame ``t`` is at normalised time ``t / (T - 1)``.
    """

    name: ClassVar[str] = "base"

    n: int = 32
    num_frames: int = 50

    # -- construction -------------------------------------------------------

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or int(self.n) != self.n or self.n < 4:
            raise ValueError(f"`n` must be an integer >= 4, got {self.n!r}")
        if isinstance(self.num_frames, bool) or int(self.num_frames) != self.num_frames or self.num_frames < 1:
            raise ValueError(f"`num_frames` must be an integer >= 1, got {self.num_frames!r}")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "num_frames", int(self.num_frames))

    @classmethod
    def from_rng(cls, rng: np.random.Generator, n: int = 32, num_frames: int = 50, **overrides: Any) -> "Scenario":
        """Draw every random parameter from ``rng``; keyword overrides replace drawn values.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of all randomness (consumed once, here).
        n : int
            Object grid size.
        num_frames : int
            Number of frames.
        **overrides
            Field values (see the class docstring) that replace the drawn ones,
            plus class-specific drawing options.

        Raises
        ------
        ValueError
            For an unknown override name (the message lists the allowed ones).
        """
        rng = _check_rng(rng)
        allowed = {f.name for f in dataclasses.fields(cls) if f.init} | set(cls._draw_options())
        allowed -= {"n", "num_frames"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} for scenario {cls.name!r}; allowed: {sorted(allowed)}"
            )
        # Validate n early so that drawing does not fail obscurely.
        Scenario(n=n, num_frames=num_frames)
        opts = {k: overrides[k] for k in cls._draw_options() if k in overrides}
        fields = cls._draw(rng, int(n), int(num_frames), **opts)
        fields.update({k: v for k, v in overrides.items() if k not in cls._draw_options()})
        return cls(n=n, num_frames=num_frames, **fields)

    @classmethod
    def _draw_options(cls) -> tuple[str, ...]:
        """Keyword options of :meth:`_draw` that steer drawing but are not fields."""
        return ()

    @classmethod
    def _draw(cls, rng: np.random.Generator, n: int, num_frames: int, **opts: Any) -> dict[str, Any]:
        return {}

    # -- frames -------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield the frames lazily, one ``(n, n, n)`` complex64 array at a time."""
        for t in range(self.num_frames):
            yield self.density(t)

    def _check_t(self, t: int) -> int:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"`t` must be an integer frame index, got {type(t).__name__}")
        if not 0 <= t < self.num_frames:
            raise ValueError(f"`t` must be in [0, {self.num_frames - 1}], got {t}")
        return int(t)

    def time_fraction(self, t: int) -> float:
        """Normalised time ``t / (num_frames - 1)`` in ``[0, 1]`` (0 for a single frame)."""
        t = self._check_t(t)
        return t / (self.num_frames - 1) if self.num_frames > 1 else 0.0

    def density(self, t: int) -> np.ndarray:
        """Complex density of frame ``t``, complex64 ``(n, n, n)``."""
        t = self._check_t(t)
        return self._density(t)

    def intensity(self, t: int) -> np.ndarray:
        """Noise-free intensity of frame ``t`` on the ``2n`` grid (:func:`sim.forward.forward`)."""
        return forward(self.density(t))

    def _density(self, t: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def descriptor(self, t: int) -> SampleDescriptor:
        """Ground-truth ingredients of frame ``t`` (shape, dislocation lines); see :mod:`sim.descriptor`."""
        return self._descriptor(self._check_t(t))

    def _descriptor(self, t: int) -> SampleDescriptor:
        return SampleDescriptor()

    def params(self) -> dict[str, Any]:
        """All parameters as a JSON-serialisable dict, with the scenario ``name``."""
        out = {"name": self.name}
        out.update(_jsonable(self))
        return out


# ---------------------------------------------------------------------------
# Crystal + smooth phase, shared by the physical scenarios
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _CrystalScenario(Scenario):
    """A crystal with a static smooth random phase (a Gaussian random field).

    Parameters
    ----------
    crystal : FacetedCrystal or Superellipsoid
        The crystal at ``t = 0``.
    phase_seed : int
        Seed of the smooth phase field.
    phase_corr : float
        Correlation length of the phase field (voxels).
    phase_rms : float
        RMS of the phase field over the box (radians).
    """

    crystal: FacetedCrystal | Superellipsoid = None  # type: ignore[assignment]
    phase_seed: int = 0
    phase_corr: float = 4.0
    phase_rms: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crystal is None:
            raise ValueError("`crystal` is required")
        _check_shape_fits(self.crystal, self.n, "crystal")
        if isinstance(self.phase_seed, bool) or int(self.phase_seed) != self.phase_seed or self.phase_seed < 0:
            raise ValueError(f"`phase_seed` must be a non-negative integer, got {self.phase_seed!r}")
        object.__setattr__(self, "phase_seed", int(self.phase_seed))
        object.__setattr__(self, "phase_corr", _pos(self.phase_corr, "phase_corr"))
        object.__setattr__(self, "phase_rms", _pos(self.phase_rms, "phase_rms", allow_zero=True))

    @staticmethod
    def _draw_crystal(rng: np.random.Generator, n: int, **shape_kw: Any) -> dict[str, Any]:
        crystal = random_faceted_crystal(rng, n, **shape_kw)
        return {
            "crystal": crystal,
            "phase_seed": _seed(rng),
            "phase_corr": float(rng.uniform(0.12, 0.25) * n),
            "phase_rms": float(rng.uniform(0.2, 0.8)),
        }

    def shape_at(self, t: int) -> FacetedCrystal | Superellipsoid:
        """The crystal's shape at frame ``t``."""
        self._check_t(t)
        return self.crystal

    def _descriptor(self, t: int) -> SampleDescriptor:
        return SampleDescriptor(shape=self.shape_at(t))

    def base_phase(self) -> np.ndarray:
        """The static smooth phase over the whole box (float32 radians, read-only)."""
        return seeded_gaussian_random_field(self.phase_seed, self.n, self.phase_corr)[0] * np.float32(
            self.phase_rms
        )


# ---------------------------------------------------------------------------
# growth
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GrowthScenario(_CrystalScenario):
    """A faceted crystal grows; every facet moves outward at its own constant rate.

    Facet ``k`` sits at distance ``d_k(t) = d_k(0) * (1 + (growth_k - 1) * t/(T-1))``,
    so it moves at ``d_k(0) (growth_k - 1) / (T - 1)`` voxels per frame and the
    crystal changes habit as it grows. The smooth phase field is fixed in space.

    Parameters
    ----------
    crystal : FacetedCrystal
        Crystal at ``t = 0``.
    growth : tuple of floats
        Final-over-initial distance ratio per facet (> 0; > 1 grows).
    phase_seed, phase_corr, phase_rms
        Smooth phase field (see the base class).

    ``from_rng`` draws a crystal whose final circumradius is 0.28 n to 0.33 n and
    per-facet ratios in ``[1.2, 2.0]``.
    """

    name: ClassVar[str] = "growth"

    growth: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.crystal, FacetedCrystal):
            raise TypeError(f"`crystal` must be a FacetedCrystal, got {type(self.crystal).__name__}")
        g = np.asarray(self.growth, dtype=np.float64).ravel()
        if g.shape != (len(self.crystal.distances),) or not np.all(np.isfinite(g)) or np.any(g <= 0):
            raise ValueError(
                f"`growth` must hold one positive ratio per facet ({len(self.crystal.distances)}), got {self.growth!r}"
            )
        object.__setattr__(self, "growth", tuple(float(x) for x in g))
        _check_shape_fits(self.final_crystal(), self.n, "growth")

    @classmethod
    def _draw(cls, rng: np.random.Generator, n: int, num_frames: int, **opts: Any) -> dict[str, Any]:
        out = cls._draw_crystal(rng, n, radius=(0.15, 0.2))
        crystal: FacetedCrystal = out["crystal"]
        growth = rng.uniform(1.2, 2.0, len(crystal.distances))
        final = crystal.with_distances(crystal.distance_array * growth)
        target = rng.uniform(0.28, 0.33) * n - np.linalg.norm(crystal.centre)
        k = target / final.bounding_radius()
        out["crystal"] = crystal.with_distances(crystal.distance_array * k)
        out["growth"] = tuple(float(x) for x in growth)
        return out

    def crystal_at(self, t: int) -> FacetedCrystal:
        """The crystal at frame ``t``."""
        tau = self.time_fraction(t)
        g = np.asarray(self.growth)
        return self.crystal.with_distances(self.crystal.distance_array * (1.0 + (g - 1.0) * tau))

    def shape_at(self, t: int) -> FacetedCrystal:
        return self.crystal_at(t)

    def final_crystal(self) -> FacetedCrystal:
        """The crystal at the last frame."""
        return self.crystal.with_distances(self.crystal.distance_array * np.asarray(self.growth))

    def _density(self, t: int) -> np.ndarray:
        occ = self.crystal_at(t).render(self.n)
        return _assemble(occ, self.base_phase())


# ---------------------------------------------------------------------------
# rotation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RotationScenario(_CrystalScenario):
    """The crystal tilts slowly: rotation by ``total_angle * t/(T-1)`` about ``axis``.

    The rotation is about the crystal centre; the smooth phase pattern turns
    with the crystal (sampled by trilinear interpolation of the periodic field).

    Parameters
    ----------
    crystal : FacetedCrystal or Superellipsoid
        Crystal at ``t = 0``.
    axis : (3,) floats
        Rotation axis in grid coordinates (normalised on input).
    total_angle : float
        Angle reached at the last frame, radians (``from_rng``: 10 to 30 degrees).
    phase_seed, phase_corr, phase_rms
        Smooth phase field (see the base class).
    """

    name: ClassVar[str] = "rotation"

    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    total_angle: float = math.radians(20.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "axis", _vec3(self.axis, "axis", unit=True))
        a = float(self.total_angle)
        if not np.isfinite(a):
            raise ValueError(f"`total_angle` must be finite, got {self.total_angle!r}")
        object.__setattr__(self, "total_angle", a)

    @classmethod
    def _draw(cls, rng: np.random.Generator, n: int, num_frames: int, **opts: Any) -> dict[str, Any]:
        out = cls._draw_crystal(rng, n)
        out["axis"] = tuple(float(x) for x in _random_unit(rng))
        out["total_angle"] = float(np.radians(rng.uniform(10.0, 30.0)))
        return out

    def rotation_at(self, t: int) -> np.ndarray:
        """Rotation (3x3) applied to the initial crystal at frame ``t``."""
        return rotation_about_axis(np.asarray(self.axis), self.total_angle * self.time_fraction(t))

    def shape_at(self, t: int) -> FacetedCrystal | Superellipsoid:
        return replace(self.crystal, rotation=self.rotation_at(t) @ self.crystal.rotation_matrix)

    def _density(self, t: int) -> np.ndarray:
        dR = self.rotation_at(t)
        occ = self.shape_at(t).render(self.n)
        phase = self.base_phase()
        if t > 0 and self.total_angle != 0:
            c = np.asarray(self.crystal.centre).reshape(3, 1, 1, 1)
            ref = np.tensordot(dR.T, centred_coords(self.n) - c, axes=1) + c + self.n // 2
            phase = ndimage.map_coordinates(phase, ref, order=1, mode="grid-wrap").astype(np.float32)
        return _assemble(occ, phase)


# ---------------------------------------------------------------------------
# strain
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StrainScenario(_CrystalScenario):
    """A smooth random strain field ramps up linearly in amplitude.

    ``u(r, t) = max_displacement * t/(T-1) * U(r)`` with ``U`` three independent
    unit-RMS Gaussian random fields; phase ``base + 2 pi G . u``.

    Parameters
    ----------
    crystal, phase_seed, phase_corr, phase_rms
        As in the base class.
    strain_seed : int
        Seed of the displacement field.
    strain_corr : float
        Correlation length of the displacement field (voxels).
    max_displacement : float
        RMS displacement per component at the last frame (voxels;
        ``from_rng``: 0.2 to 0.6, i.e. RMS Bragg phase 0.5 to 1.6 rad for Au(111)).
    G : (3,) floats
        Reciprocal-lattice vector, 1/voxel (default Au(111) along axis 0).
    """

    name: ClassVar[str] = "strain"

    strain_seed: int = 0
    strain_corr: float = 5.0
    max_displacement: float = 0.4
    G: tuple[float, float, float] = DEFAULT_G

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.strain_seed, bool) or int(self.strain_seed) != self.strain_seed or self.strain_seed < 0:
            raise ValueError(f"`strain_seed` must be a non-negative integer, got {self.strain_seed!r}")
        object.__setattr__(self, "strain_seed", int(self.strain_seed))
        object.__setattr__(self, "strain_corr", _pos(self.strain_corr, "strain_corr"))
        object.__setattr__(self, "max_displacement", _pos(self.max_displacement, "max_displacement", True))
        object.__setattr__(self, "G", _vec3(self.G, "G"))

    @classmethod
    def _draw(cls, rng: np.random.Generator, n: int, num_frames: int, **opts: Any) -> dict[str, Any]:
        out = cls._draw_crystal(rng, n)
        out["strain_seed"] = _seed(rng)
        out["strain_corr"] = float(rng.uniform(0.12, 0.25) * n)
        out["max_displacement"] = float(rng.uniform(0.2, 0.6))
        return out

    def strain_phase_unit(self) -> np.ndarray:
        """``2 pi G . U`` for the unit-RMS displacement field (float32, whole box)."""
        U = seeded_gaussian_random_field(self.strain_seed, self.n, self.strain_corr, components=3)
        return (2 * np.pi * np.tensordot(np.asarray(self.G), U, axes=1)).astype(np.float32)

    def _density(self, t: int) -> np.ndarray:
        occ = self.crystal.render(self.n)
        a = self.max_displacement * self.time_fraction(t)
        return _assemble(occ, self.base_phase() + np.float32(a) * self.strain_phase_unit())


# ---------------------------------------------------------------------------
# dislocation
# ---------------------------------------------------------------------------


_DISLOCATION_KINDS = ("edge", "screw", "mixed")


@dataclass(frozen=True, kw_only=True)
class DislocationScenario(_CrystalScenario):
    """A straight dislocation line glides through the crystal.

    The line (direction ``line_direction``) passes through
    ``start_point + (end_point - start_point) * t/(T-1)``; its displacement is
    the isotropic Volterra field (:func:`sim.phase.dislocation_displacement`)
    and the phase winds by ``2 pi G . b`` around it.

    Parameters
    ----------
    crystal, phase_seed, phase_corr, phase_rms
        As in the base class.
    burgers : (3,) floats
        Burgers vector (voxels); ``from_rng`` draws an Au a/2<110> vector with
        ``G . b = +-1`` (:func:`sim.phase.visible_burgers_vector`).
    line_direction : (3,) floats
        Line direction (normalised on input).
    start_point, end_point : (3,) floats
        Points on the line at the first and last frames (grid coordinates,
        voxels). ``from_rng`` moves the line along its glide direction from
        1.1 crystal radii before the centre to 1.1 radii past it, in a glide
        plane offset from the centre by up to 0.3 radii.
    G : (3,) floats
        Reciprocal-lattice vector (1/voxel).
    poisson_ratio : float
        Poisson ratio of the isotropic medium.

    ``from_rng`` option ``kind`` in {"edge", "screw", "mixed"} (default random)
    chooses the line direction relative to ``b``.
    """

    name: ClassVar[str] = "dislocation"

    burgers: tuple[float, float, float] = (0.0, 0.0, 0.0)
    line_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    start_point: tuple[float, float, float] = (0.0, 0.0, 0.0)
    end_point: tuple[float, float, float] = (0.0, 0.0, 0.0)
    G: tuple[float, float, float] = DEFAULT_G
    poisson_ratio: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "burgers", _vec3(self.burgers, "burgers"))
        if np.linalg.norm(self.burgers) == 0:
            raise ValueError("`burgers` must be non-zero")
        object.__setattr__(self, "line_direction", _vec3(self.line_direction, "line_direction", unit=True))
        object.__setattr__(self, "start_point", _vec3(self.start_point, "start_point"))
        object.__setattr__(self, "end_point", _vec3(self.end_point, "end_point"))
        object.__setattr__(self, "G", _vec3(self.G, "G"))
        nu = float(self.poisson_ratio)
        if not 0.0 <= nu < 0.5:
            raise ValueError(f"`poisson_ratio` must be in [0, 0.5), got {self.poisson_ratio!r}")
        object.__setattr__(self, "poisson_ratio", nu)

    @classmethod
    def _draw_options(cls) -> tuple[str, ...]:
        return ("kind",)

    @classmethod
    def _draw(cls, rng: np.random.Generator, n: int, num_frames: int, kind: str | None = None) -> dict[str, Any]:
        if kind is None:
            kind = _DISLOCATION_KINDS[int(rng.integers(3))]
        if kind not in _DISLOCATION_KINDS:
            raise ValueError(f"`kind` must be one of {_DISLOCATION_KINDS}, got {kind!r}")
        out = cls._draw_crystal(rng, n)
        out["phase_rms"] = float(rng.uniform(0.1, 0.4))
        G = np.asarray(DEFAULT_G)
        b = visible_burgers_vector(rng, G)
        bh = b / np.linalg.norm(b)
        if kind == "screw":
            t = bh
            glide = _unit_perpendicular(rng, t)
        elif kind == "edge":
            t = _unit_perpendicular(rng, bh)
            glide = bh
        else:
            # Angle between line and b drawn in [30, 60] degrees.
            ang = np.radians(rng.uniform(30.0, 60.0))
            t = np.cos(ang) * bh + np.sin(ang) * _unit_perpendicular(rng, bh)
            glide = bh - np.dot(bh, t) * t
            glide /= np.linalg.norm(glide)
        normal = np.cross(t, glide)
        crystal: FacetedCrystal = out["crystal"]
        R = crystal.bounding_radius()
        c = np.asarray(crystal.centre)
        base = c + rng.uniform(-0.3, 0.3) * R * normal
        out.update(
            burgers=tuple(float(x) for x in b),
            line_direction=tuple(float(x) for x in t),
            start_point=tuple(float(x) for x in base - 1.1 * R * glide),
            end_point=tuple(float(x) for x in base + 1.1 * R * glide),
            G=tuple(float(x) for x in G),
        )
        return out

    @property
    def kind(self) -> str:
        """"screw", "edge" or "mixed", from the angle between line and Burgers vector."""
        c = abs(np.dot(self.burgers, self.line_direction)) / np.linalg.norm(self.burgers)
        return "screw" if c > 1 - 1e-6 else ("edge" if c < 1e-6 else "mixed")

    def line_point(self, t: int) -> np.ndarray:
        """A point on the dislocation line at frame ``t`` (voxels)."""
        tau = self.time_fraction(t)
        return np.asarray(self.start_point) + tau * (np.asarray(self.end_point) - np.asarray(self.start_point))

    def line_at(self, t: int) -> DislocationLine:
        """The dislocation line at frame ``t``."""
        return DislocationLine(point=tuple(self.line_point(t)), direction=self.line_direction, burgers=self.burgers,
                               G=self.G, poisson_ratio=self.poisson_ratio)

    def _descriptor(self, t: int) -> SampleDescriptor:
        return SampleDescriptor(shape=self.crystal, dislocations=(self.line_at(t),))

    def _density(self, t: int) -> np.ndarray:
        occ = self.crystal.render(self.n)
        u = dislocation_displacement(
            centred_coords(self.n), self.line_point(t), self.line_direction, self.burgers, self.poisson_ratio
        )
        phi = (2 * np.pi) * np.tensordot(np.asarray(self.G), u, axes=1)
        return _assemble(occ, self.base_phase() + phi.astype(np.float32))

    def params(self) -> dict[str, Any]:
        out = super().params()
        out["kind"] = self.kind
        return out


# ---------------------------------------------------------------------------
# jump
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JumpScenario(_CrystalScenario):
    """Static crystal whose shape and phase switch abruptly at frame ``jump_at``.

    Frames ``t < jump_at`` show ``crystal`` with the phase of ``phase_seed``;
    frames ``t >= jump_at`` show ``after`` with the phase of ``after_phase_seed``.

    Parameters
    ----------
    crystal, phase_seed, phase_corr, phase_rms
        The state before the jump.
    after : FacetedCrystal or Superellipsoid
        Shape after the jump (``from_rng``: a new random shape of any family).
    after_phase_seed : int
        Seed of the phase field after the jump.
    jump_at : int
        First frame of the new state, ``1 <= jump_at < num_frames``
        (``from_rng`` default ``num_frames // 2``).
    """

    name: ClassVar[str] = "jump"

    after: FacetedCrystal | Superellipsoid = None  # type: ignore[assignment]
    after_phase_seed: int = 1
    jump_at: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.after is None:
            raise ValueError("`after` is required")
        _check_shape_fits(self.after, self.n, "after")
        s = self.after_phase_seed
        if isinstance(s, bool) or int(s) != s or s < 0:
            raise ValueError(f"`after_phase_seed` must be a non-negative integer, got {s!r}")
        object.__setattr__(self, "after_phase_seed", int(s))
        j = self.jump_at
        if isinstance(j, bool) or int(j) != j or not 1 <= j < self.num_frames:
            raise ValueError(f"`jump_at` must be an integer in [1, num_frames - 1 = {self.num_frames - 1}], got {j!r}")
        object.__setattr__(self, "jump_at", int(j))

    @classmethod
    def _draw(cls, rng: np.random.Generator, n: int, num_frames: int, **opts: Any) -> dict[str, Any]:
        out = cls._draw_crystal(rng, n)
        out["after"] = random_shape(rng, n)
        out["after_phase_seed"] = _seed(rng)
        out["jump_at"] = max(1, num_frames // 2)
        return out

    def shape_at(self, t: int) -> FacetedCrystal | Superellipsoid:
        return self.crystal if self._check_t(t) < self.jump_at else self.after

    def _density(self, t: int) -> np.ndarray:
        if t < self.jump_at:
            return _assemble(self.crystal.render(self.n), self.base_phase())
        phase = seeded_gaussian_random_field(self.after_phase_seed, self.n, self.phase_corr)[0]
        return _assemble(self.after.render(self.n), phase * np.float32(self.phase_rms))


# ---------------------------------------------------------------------------
# fcc-glide: an atomistic crystal that grows and tilts while an edge dislocation glides
# ---------------------------------------------------------------------------

#: <110> directions ``v`` with ``(1, 1, 1) . v = +-2``: Burgers vectors ``a/2 v`` seen by the 111 reflection.
_VISIBLE_110 = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [-1, -1, 0], [-1, 0, -1], [0, -1, -1]], dtype=np.float64)
#: {111} plane normals (unnormalised).
_PLANES_111 = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class FCCGlideScenario(Scenario):
    """A faceted FCC crystal, built atom by atom, grows and tilts while an edge dislocation glides.

    Everything is defined in the crystal (body) frame, which tilts with the crystal: the FCC
    lattice (constant ``lattice_constant``, a fraction of a voxel), the facet planes (distance of
    facet ``k`` at frame ``t``: ``d_k(0) (1 + (growth_k - 1) t/(T-1))``), the edge dislocation (Burgers
    vector ``a/2 <110>`` in a {111} glide plane, line through ``start_point + (end_point -
    start_point) t/(T-1)``), a weak smooth displacement field and the reflection ``G = (1, 1, 1)/a``
    (the 111 Bragg peak, kept at the centre of the detector as the crystal tilts). Each frame
    keeps the lattice sites inside the facets, displaces them by the isotropic Volterra field plus
    the smooth field, turns them by ``total_angle t/(T-1)`` about ``axis`` (about the crystal
    centre) and bins them into voxels with the phasor ``exp(2 pi i G . u)``
    (:func:`sim.atomistic.bin_atoms`).

    Unlike the continuum scenarios, the shape has atomic steps, the amplitude an atomistic texture
    and the dislocation a discrete core; nothing here is drawn by the project's models'
    renderers, so it is an independent test of them.

    Parameters
    ----------
    crystal : FacetedCrystal
        Shape at ``t = 0`` (its rotation and centre place the body frame in the grid).
    growth : tuple of floats
        Final-over-initial distance ratio per facet (> 0).
    axis : (3,) floats
        Tilt axis (grid coordinates, normalised on input).
    total_angle : float
        Tilt reached at the last frame (radians).
    lattice_constant : float
        FCC lattice constant (voxels, > 0; ``from_rng``: 0.45, about 44 atoms per voxel).
    burgers, line_direction, start_point, end_point : (3,) floats
        The edge dislocation in the body frame (voxels).
    poisson_ratio : float
        Poisson ratio (gold 0.44).
    strain_seed : int
        Seed of the smooth displacement field (three components, body frame).
    strain_corr, strain_rms : float
        Its correlation length and RMS per component (voxels).
    """

    name: ClassVar[str] = "fcc-glide"

    crystal: FacetedCrystal = None  # type: ignore[assignment]
    growth: tuple[float, ...] = ()
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    total_angle: float = math.radians(15.0)
    lattice_constant: float = 0.45
    burgers: tuple[float, float, float] = (0.0, 0.0, 0.0)
    line_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    start_point: tuple[float, float, float] = (0.0, 0.0, 0.0)
    end_point: tuple[float, float, float] = (0.0, 0.0, 0.0)
    poisson_ratio: float = 0.44
    strain_seed: int = 0
    strain_corr: float = 6.0
    strain_rms: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.crystal, FacetedCrystal):
            raise TypeError(f"`crystal` must be a FacetedCrystal, got {type(self.crystal).__name__}")
        g = np.asarray(self.growth, dtype=np.float64).ravel()
        if g.shape != (len(self.crystal.distances),) or not np.all(np.isfinite(g)) or np.any(g <= 0):
            raise ValueError(
                f"`growth` must hold one positive ratio per facet ({len(self.crystal.distances)}), got {self.growth!r}"
            )
        object.__setattr__(self, "growth", tuple(float(x) for x in g))
        object.__setattr__(self, "axis", _vec3(self.axis, "axis", unit=True))
        a = float(self.total_angle)
        if not np.isfinite(a):
            raise ValueError(f"`total_angle` must be finite, got {self.total_angle!r}")
        object.__setattr__(self, "total_angle", a)
        object.__setattr__(self, "lattice_constant", _pos(self.lattice_constant, "lattice_constant"))
        if self.lattice_constant > 1.0:
            raise ValueError(f"`lattice_constant` must be at most 1 voxel (atoms binned to voxels), got {self.lattice_constant}")
        for name in ("burgers", "line_direction", "start_point", "end_point"):
            object.__setattr__(self, name, _vec3(getattr(self, name), name, unit=name == "line_direction"))
        if np.linalg.norm(self.burgers) == 0:
            raise ValueError("`burgers` must be non-zero")
        nu = float(self.poisson_ratio)
        if not 0.0 <= nu < 0.5:
            raise ValueError(f"`poisson_ratio` must be in [0, 0.5), got {self.poisson_ratio!r}")
        object.__setattr__(self, "poisson_ratio", nu)
        if isinstance(self.strain_seed, bool) or int(self.strain_seed) != self.strain_seed or self.strain_seed < 0:
            raise ValueError(f"`strain_seed` must be a non-negative integer, got {self.strain_seed!r}")
        object.__setattr__(self, "strain_seed", int(self.strain_seed))
        object.__setattr__(self, "strain_corr", _pos(self.strain_corr, "strain_corr"))
        object.__setattr__(self, "strain_rms", _pos(self.strain_rms, "strain_rms", allow_zero=True))
        for t in (0, self.num_frames - 1):
            _check_shape_fits(self.shape_at(t), self.n, "crystal", scale=1.0)

    @classmethod
    def _draw(cls, rng: np.random.Generator, n: int, num_frames: int, **opts: Any) -> dict[str, Any]:
        crystal = random_faceted_crystal(rng, n, radius=(0.17, 0.2))
        growth = rng.uniform(1.1, 1.5, len(crystal.distances))
        final = crystal.with_distances(crystal.distance_array * growth)
        k = rng.uniform(0.26, 0.3) * n / final.bounding_radius()
        crystal = crystal.with_distances(crystal.distance_array * k)
        radius = final.bounding_radius() * k
        a = 0.45
        v = _VISIBLE_110[int(rng.integers(len(_VISIBLE_110)))]
        b = 0.5 * a * v
        planes = [m for m in _PLANES_111 if abs(np.dot(m, v)) < 1e-9]
        m = planes[int(rng.integers(len(planes)))]
        m = m / np.linalg.norm(m)
        glide = b / np.linalg.norm(b)
        line = np.cross(m, glide)
        base = rng.uniform(-0.3, 0.3) * radius * m
        return {
            "crystal": crystal,
            "growth": tuple(float(x) for x in growth),
            "axis": tuple(float(x) for x in _random_unit(rng)),
            "total_angle": float(np.radians(rng.uniform(10.0, 20.0))),
            "lattice_constant": a,
            "burgers": tuple(float(x) for x in b),
            "line_direction": tuple(float(x) for x in line),
            "start_point": tuple(float(x) for x in base - 1.1 * radius * glide),
            "end_point": tuple(float(x) for x in base + 1.1 * radius * glide),
            "strain_seed": _seed(rng),
            "strain_corr": float(rng.uniform(0.15, 0.25) * n),
        }

    @property
    def G(self) -> np.ndarray:
        """The 111 reflection in the body frame, ``(1, 1, 1) / a`` (1/voxel)."""
        return np.ones(3) / self.lattice_constant

    def rotation_at(self, t: int) -> np.ndarray:
        """Body-to-grid rotation at frame ``t`` (the tilt applied to the initial orientation)."""
        tilt = rotation_about_axis(np.asarray(self.axis), self.total_angle * self.time_fraction(t))
        return tilt @ self.crystal.rotation_matrix

    def shape_at(self, t: int) -> FacetedCrystal:
        """The crystal's facets at frame ``t`` (grown and tilted)."""
        tau = self.time_fraction(t)
        g = np.asarray(self.growth)
        distances = self.crystal.distance_array * (1.0 + (g - 1.0) * tau)
        return replace(self.crystal.with_distances(distances), rotation=self.rotation_at(t))

    def line_point(self, t: int) -> np.ndarray:
        """A point on the dislocation line at frame ``t`` (body frame, voxels)."""
        tau = self.time_fraction(t)
        return np.asarray(self.start_point) + tau * (np.asarray(self.end_point) - np.asarray(self.start_point))

    def _descriptor(self, t: int) -> SampleDescriptor:
        R = self.rotation_at(t)
        c = np.asarray(self.crystal.centre)
        line = DislocationLine(point=tuple(R @ self.line_point(t) + c), direction=tuple(R @ np.asarray(self.line_direction)),
                               burgers=tuple(R @ np.asarray(self.burgers)), G=tuple(R @ self.G),
                               poisson_ratio=self.poisson_ratio)
        return SampleDescriptor(shape=self.shape_at(t), dislocations=(line,))

    def _density(self, t: int) -> np.ndarray:
        shape = self.shape_at(t)
        sites = fcc_sites(self.n / 2.0, self.lattice_constant)
        normals = shape.normal_array
        inside = np.all(sites @ normals.T <= shape.distance_array, axis=1)
        body = sites[inside]
        u = dislocation_displacement(body.T, self.line_point(t), self.line_direction, self.burgers,
                                     self.poisson_ratio).T
        if self.strain_rms > 0:
            field = seeded_gaussian_random_field(self.strain_seed, self.n, self.strain_corr, components=3)
            index = (body + self.n // 2).T
            u = u + self.strain_rms * np.stack(
                [ndimage.map_coordinates(field[k], index, order=1, mode="grid-wrap") for k in range(3)], axis=1)
        positions = (body + u) @ shape.rotation_matrix.T + np.asarray(self.crystal.centre)
        phasor = np.exp(2j * np.pi * (u @ self.G))
        return bin_atoms(positions, phasor, self.n, bulk_atoms_per_voxel(self.lattice_constant))


# ---------------------------------------------------------------------------
# latent walk (hook for a generative model)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LatentWalkScenario(Scenario):
    """A smooth walk ``z(t)`` inside a latent box, decoded by a user-supplied model.

    Component ``i`` of the path is ``c_i + h_i * margin * sum_j w_ij sin(2 pi f_ij tau + p_ij)``
    with ``tau = t/(T-1)``, box centre ``c`` and half-width ``h``, and
    ``sum_j |w_ij| = 1``, so the path never leaves the box. Frequencies are in
    cycles per series.

    Parameters
    ----------
    decode : callable
        ``decode(z)`` with ``z`` a float32 array ``(B, k)`` returns a complex
        array ``(B, n, n, n)``. Not part of :meth:`params`.
    lower, upper : tuple of floats
        Latent box bounds, ``(k,)`` each, ``lower < upper``.
    frequencies, phases, weights : tuples of tuples
        ``(k, m)`` path coefficients (``m`` sinusoids per component).
    margin : float
        Fraction of the half-width the path may use, in ``(0, 1]``.

    ``from_rng`` needs ``decode`` and ``latent_bounds``, a pair ``(lower, upper)``
    of ``(k,)`` arrays (e.g. a model's latent bounds); options ``num_modes`` (default 3) and
    ``max_frequency`` (default 1.25 cycles per series; minimum 0.25).
    """

    name: ClassVar[str] = "latent-walk"

    decode: Callable[[np.ndarray], np.ndarray] = field(default=None, compare=False)  # type: ignore[assignment]
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    frequencies: tuple[tuple[float, ...], ...] = ()
    phases: tuple[tuple[float, ...], ...] = ()
    weights: tuple[tuple[float, ...], ...] = ()
    margin: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decode is None or not callable(self.decode):
            raise ValueError(
                "`decode` is required for 'latent-walk': a callable mapping latents (B, k) "
                "to complex densities (B, n, n, n)"
            )
        lo = np.asarray(self.lower, dtype=np.float64).ravel()
        hi = np.asarray(self.upper, dtype=np.float64).ravel()
        if lo.size == 0 or lo.shape != hi.shape or not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)):
            raise ValueError("`lower` and `upper` must be finite arrays of the same shape (k,), k >= 1")
        if np.any(lo >= hi):
            raise ValueError("`lower` must be < `upper` in every latent component")
        k = lo.size
        arrs = {}
        for name in ("frequencies", "phases", "weights"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != k or a.shape[1] < 1 or not np.all(np.isfinite(a)):
                raise ValueError(f"`{name}` must be a finite (k={k}, m) array with m >= 1, got shape {a.shape}")
            arrs[name] = a
        if not (arrs["frequencies"].shape == arrs["phases"].shape == arrs["weights"].shape):
            raise ValueError("`frequencies`, `phases` and `weights` must have the same shape")
        if np.any(np.abs(arrs["weights"]).sum(axis=1) > 1 + 1e-9):
            raise ValueError("`weights` must satisfy sum_j |w_ij| <= 1 for every component i")
        m = float(self.margin)
        if not 0 < m <= 1:
            raise ValueError(f"`margin` must be in (0, 1], got {self.margin!r}")
        object.__setattr__(self, "margin", m)
        object.__setattr__(self, "lower", tuple(float(x) for x in lo))
        object.__setattr__(self, "upper", tuple(float(x) for x in hi))
        for name, a in arrs.items():
            object.__setattr__(self, name, tuple(tuple(float(x) for x in row) for row in a))

    @classmethod
    def _draw_options(cls) -> tuple[str, ...]:
        return ("latent_bounds", "num_modes", "max_frequency")

    @classmethod
    def from_rng(
        cls, rng: np.random.Generator, n: int = 32, num_frames: int = 50, **overrides: Any
    ) -> "LatentWalkScenario":
        if overrides.get("decode") is None:
            raise ValueError(
                "`decode` is required for 'latent-walk': pass decode=callable mapping latents (B, k) "
                "to complex densities (B, n, n, n)"
            )
        if overrides.get("latent_bounds") is None:
            raise ValueError("`latent_bounds` is required for 'latent-walk': (lower, upper) arrays of shape (k,)")
        return super().from_rng(rng, n=n, num_frames=num_frames, **overrides)  # type: ignore[return-value]

    @classmethod
    def _draw(
        cls,
        rng: np.random.Generator,
        n: int,
        num_frames: int,
        latent_bounds: Any = None,
        num_modes: int = 3,
        max_frequency: float = 1.25,
    ) -> dict[str, Any]:
        if latent_bounds is None:
            raise ValueError("`latent_bounds` is required for 'latent-walk'")
        b = np.asarray(latent_bounds, dtype=np.float64)
        if b.ndim != 2 or b.shape[0] != 2:
            raise ValueError(f"`latent_bounds` must be a pair (lower, upper) of (k,) arrays, got shape {b.shape}")
        lo, hi = b[0], b[1]
        if isinstance(num_modes, bool) or int(num_modes) != num_modes or num_modes < 1:
            raise ValueError(f"`num_modes` must be a positive integer, got {num_modes!r}")
        if not np.isfinite(max_frequency) or max_frequency < 0.25:
            raise ValueError(f"`max_frequency` must be >= 0.25 cycles per series, got {max_frequency!r}")
        k, m = lo.size, int(num_modes)
        freqs = rng.uniform(0.25, max_frequency, (k, m))
        phases = rng.uniform(0, 2 * np.pi, (k, m))
        w = rng.uniform(0.2, 1.0, (k, m))
        w /= w.sum(axis=1, keepdims=True)
        return {
            "lower": tuple(lo),
            "upper": tuple(hi),
            "frequencies": tuple(map(tuple, freqs)),
            "phases": tuple(map(tuple, phases)),
            "weights": tuple(map(tuple, w)),
        }

    @property
    def latent_dim(self) -> int:
        """Latent dimension ``k``."""
        return len(self.lower)

    def latent(self, t: int) -> np.ndarray:
        """Latent vector ``z(t)``, float32 ``(k,)``, inside ``[lower, upper]``."""
        tau = self.time_fraction(t)
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        f, p, w = (np.asarray(x) for x in (self.frequencies, self.phases, self.weights))
        s = np.sum(w * np.sin(2 * np.pi * f * tau + p), axis=1)
        z = 0.5 * (lo + hi) + 0.5 * (hi - lo) * self.margin * s
        return np.clip(z, lo, hi).astype(np.float32)

    def latents(self) -> np.ndarray:
        """The whole path, float32 ``(num_frames, k)``."""
        return np.stack([self.latent(t) for t in range(self.num_frames)])

    def _density(self, t: int) -> np.ndarray:
        z = self.latent(t)[None]
        out = np.asarray(self.decode(z))
        n = self.n
        if out.shape == (n, n, n):
            out = out[None]
        if out.shape != (1, n, n, n):
            raise ValueError(
                f"`decode` must return an array of shape (1, {n}, {n}, {n}) for z of shape (1, k), got {out.shape}"
            )
        return out[0].astype(np.complex64)


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

#: Scenario classes by name.
SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls
    for cls in (GrowthScenario, RotationScenario, StrainScenario, DislocationScenario, JumpScenario, FCCGlideScenario,
                LatentWalkScenario)
}


def make_scenario(name: str, rng: np.random.Generator, n: int = 32, num_frames: int = 50, **params: Any) -> Scenario:
    """Build a scenario by name with everything random drawn from ``rng``.

    Parameters
    ----------
    name : str
        One of :data:`SCENARIOS` (``growth``, ``rotation``, ``strain``,
        ``dislocation``, ``jump``, ``fcc-glide``, ``latent-walk``).
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Object grid size.
    num_frames : int
        Number of frames.
    **params
        Overrides and options for the scenario's ``from_rng`` (``latent-walk``
        requires ``decode`` and ``latent_bounds``).

    Raises
    ------
    ValueError
        For an unknown ``name`` (the message lists the allowed names) or bad parameters.
    """
    if name not in SCENARIOS:
        raise ValueError(f"`name` must be one of {sorted(SCENARIOS)}, got {name!r}")
    return SCENARIOS[name].from_rng(rng, n=n, num_frames=num_frames, **params)
