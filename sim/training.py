"""Training pairs (measured intensity, density) drawn from a random mix of samples.

:class:`TrainingPairGenerator` is a frozen configuration; ``sample(index)``
draws everything from ``np.random.default_rng([seed, index])``, so a pair
depends only on ``(seed, index)``: reproducible, order-independent and safe to
call from several processes or DataLoader workers with no shared state.

Families of samples (weights in ``mix``):

``static``
    Random shape (faceted crystal or superellipsoid) with a smooth random
    phase (anisotropic Gaussian random field).
``strained``
    Random shape with the Bragg phase ``2 pi G . u`` of a smooth random
    displacement field, plus a weak smooth phase.
``dislocated``
    Faceted crystal with 1 to ``max_dislocations`` straight dislocations
    (random edge/screw/mixed, visible Burgers vectors) plus a weak smooth phase.
``scenario``
    A random frame of a random time-varying scenario (``growth``,
    ``rotation``, ``strain``, ``dislocation``, ``jump``).

The intensity is the *measured* one: ``forward(d)`` passed through the
:class:`~sim.detector.Detector` template with the photon count drawn
log-uniformly in ``photons_range`` (``photons_range=None`` gives the noise-free
intensity, with the detector's static mask applied). The density's invisible
global phase is removed (``sum(d)`` real and positive) unless
``fix_phase=False``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from sim.descriptor import DislocationLine, SampleDescriptor
from sim.detector import Detector
from sim.forward import forward
from sim.geometry import centred_coords
from sim.phase import (
    DEFAULT_G,
    complex_density,
    dislocation_displacement,
    fix_global_phase,
    gaussian_random_field,
    random_displacement,
    scale_to_range,
    strain_phase,
    visible_burgers_vector,
)
from sim.scenarios import SCENARIOS
from sim.shapes import random_faceted_crystal, random_shape

__all__ = ["TRAINING_FAMILIES", "DEFAULT_MIX", "TrainingPair", "TrainingPairGenerator"]

logger = logging.getLogger(__name__)

#: Sample families a generator can mix.
TRAINING_FAMILIES: tuple[str, ...] = ("static", "strained", "dislocated", "scenario")
#: Default mix weights.
DEFAULT_MIX: tuple[tuple[str, float], ...] = (
    ("static", 0.3),
    ("strained", 0.25),
    ("dislocated", 0.2),
    ("scenario", 0.25),
)
_SCENARIO_NAMES = ("growth", "rotation", "strain", "dislocation", "jump")


@dataclass(frozen=True)
class TrainingPair:
    """A training pair, or a batch of them (arrays stacked on a leading axis).

    Attributes
    ----------
    intensity : ndarray
        float32 ``(N, N, N)`` measured counts (0 where masked), ``N = 2n``.
    density : ndarray
        complex64 ``(n, n, n)`` ground-truth density.
    mask : ndarray
        bool ``(N, N, N)``, True = not measured.
    photons : float or ndarray
        Expected photon count used (``nan`` when noise-free); ``(B,)`` for a batch.
    family : str or tuple of str
        Sample family (with the scenario name for ``scenario``, e.g. ``"scenario:growth"``).
    descriptor : SampleDescriptor or tuple of SampleDescriptor
        Ground truth of what the density is made of (shape, dislocation lines), in the
        density's own centred coordinates; a tuple for a batch.
    """

    intensity: np.ndarray
    density: np.ndarray
    mask: np.ndarray
    photons: Any
    family: Any
    descriptor: Any = None


def _range(
    value, name: str, lo_bound: float, hi_bound: float = math.inf, positive: bool = False
) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a (low, high) pair of numbers, got {value!r}") from None
    ok = np.isfinite(lo) and np.isfinite(hi) and lo_bound <= lo <= hi <= hi_bound
    if positive:
        ok = ok and lo > 0
    if not ok:
        raise ValueError(f"`{name}` must satisfy {lo_bound} <= low <= high <= {hi_bound}, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class TrainingPairGenerator:
    """Configuration of a reproducible stream of training pairs.

    Parameters
    ----------
    n : int
        Object grid size (>= 8); intensities are ``2n`` per axis.
    seed : int
        Base seed; pair ``index`` uses ``default_rng([seed, index])``.
    photons_range : (float, float) or None
        Expected photon counts drawn log-uniformly in this range; None = noise-free.
    detector : Detector
        Detector template (background, beamstop, gaps, saturation); its
        ``photons`` is replaced by the drawn value.
    mix : tuple of (family, weight) or mapping
        Relative weights over :data:`TRAINING_FAMILIES` (missing families weigh 0).
    radius : (float, float)
        Object bounding radius range as a fraction of ``n``.
    max_offset : float
        Object centre offset range per axis (voxels).
    phase_rms_range : (float, float)
        RMS (radians) of the smooth phase of ``static`` samples.
    displacement_range : (float, float)
        RMS displacement (voxels) of ``strained`` samples.
    max_dislocations : int
        Most dislocations in a ``dislocated`` sample (>= 1).
    fix_phase : bool
        Remove the global phase of the density (``sum(d)`` real, >= 0).
    """

    n: int = 32
    seed: int = 0
    photons_range: tuple[float, float] | None = (1e6, 1e9)
    detector: Detector = field(default_factory=Detector)
    mix: tuple[tuple[str, float], ...] = DEFAULT_MIX
    radius: tuple[float, float] = (0.22, 0.33)
    max_offset: float = 0.0
    phase_rms_range: tuple[float, float] = (0.0, 1.0)
    displacement_range: tuple[float, float] = (0.1, 0.6)
    max_dislocations: int = 2
    fix_phase: bool = True

    def __post_init__(self) -> None:
        n = self.n
        if isinstance(n, bool) or int(n) != n or n < 8:
            raise ValueError(f"`n` must be an integer >= 8, got {n!r}")
        object.__setattr__(self, "n", int(n))
        s = self.seed
        if isinstance(s, bool) or int(s) != s or s < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {s!r}")
        object.__setattr__(self, "seed", int(s))
        if self.photons_range is not None:
            object.__setattr__(self, "photons_range", _range(self.photons_range, "photons_range", 0.0, positive=True))
        if not isinstance(self.detector, Detector):
            raise TypeError(f"`detector` must be a sim.detector.Detector, got {type(self.detector).__name__}")
        mix = dict(self.mix.items()) if isinstance(self.mix, Mapping) else None
        if mix is None:
            try:
                mix = dict(self.mix)
            except (TypeError, ValueError):
                raise ValueError(f"`mix` must be a mapping or (family, weight) pairs, got {self.mix!r}") from None
        unknown = sorted(set(mix) - set(TRAINING_FAMILIES))
        if unknown:
            raise ValueError(f"`mix` has unknown families {unknown}; allowed: {list(TRAINING_FAMILIES)}")
        weights = {}
        for k, w in mix.items():
            w = float(w)
            if not np.isfinite(w) or w < 0:
                raise ValueError(f"`mix` weight for {k!r} must be finite and >= 0, got {w!r}")
            weights[k] = w
        if sum(weights.values()) <= 0:
            raise ValueError("`mix` weights must have a positive sum")
        object.__setattr__(self, "mix", tuple((k, weights.get(k, 0.0)) for k in TRAINING_FAMILIES))
        object.__setattr__(self, "radius", _range(self.radius, "radius", 0.0, 0.5, positive=True))
        mo = float(self.max_offset)
        if not np.isfinite(mo) or mo < 0:
            raise ValueError(f"`max_offset` must be finite and >= 0, got {self.max_offset!r}")
        object.__setattr__(self, "max_offset", mo)
        if self.radius[1] * self.n + mo * 3**0.5 > self.n / 2 - 1:
            raise ValueError(
                f"`radius` upper bound {self.radius[1]} * n plus `max_offset` must fit in n/2 - 1 = {self.n / 2 - 1}"
            )
        object.__setattr__(self, "phase_rms_range", _range(self.phase_rms_range, "phase_rms_range", 0.0))
        object.__setattr__(self, "displacement_range", _range(self.displacement_range, "displacement_range", 0.0))
        m = self.max_dislocations
        if isinstance(m, bool) or int(m) != m or m < 1:
            raise ValueError(f"`max_dislocations` must be an integer >= 1, got {m!r}")
        object.__setattr__(self, "max_dislocations", int(m))
        object.__setattr__(self, "fix_phase", bool(self.fix_phase))

    # ------------------------------------------------------------------

    @property
    def N(self) -> int:
        """Diffraction grid size ``2n``."""
        return 2 * self.n

    def rng(self, index: int) -> np.random.Generator:
        """The generator used for pair ``index``: ``default_rng([seed, index])``."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"`index` must be a non-negative integer, got {index!r}")
        return np.random.default_rng([self.seed, int(index)])

    def sample(self, index: int) -> TrainingPair:
        """The training pair number ``index`` (deterministic per ``(seed, index)``)."""
        rng = self.rng(index)
        names = [k for k, _ in self.mix]
        w = np.array([v for _, v in self.mix])
        family = names[int(rng.choice(len(names), p=w / w.sum()))]
        density, label, descriptor = getattr(self, f"_{family}")(rng)
        if self.fix_phase:
            density = fix_global_phase(density)
        ideal = forward(density)
        if self.photons_range is None:
            mask = self.detector.sensor_mask(self.N)
            intensity = np.where(mask, np.float32(0.0), ideal).astype(np.float32)
            photons = float("nan")
        else:
            lo, hi = self.photons_range
            photons = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            meas = replace(self.detector, photons=photons).measure(ideal, rng)
            intensity, mask = meas.counts, meas.mask
        return TrainingPair(intensity=intensity, density=density, mask=mask, photons=photons, family=label,
                            descriptor=descriptor)

    def batch(self, indices: Sequence[int]) -> TrainingPair:
        """Pairs for ``indices`` stacked on a leading axis (``photons`` (B,), ``family`` tuple)."""
        idx = list(indices)
        if not idx:
            raise ValueError("`indices` must not be empty")
        pairs = [self.sample(i) for i in idx]
        return TrainingPair(
            intensity=np.stack([p.intensity for p in pairs]),
            density=np.stack([p.density for p in pairs]),
            mask=np.stack([p.mask for p in pairs]),
            photons=np.array([p.photons for p in pairs]),
            family=tuple(p.family for p in pairs),
            descriptor=tuple(p.descriptor for p in pairs),
        )

    # -- families --------------------------------------------------------

    def _shape(self, rng: np.random.Generator, family: str | None = None):
        return random_shape(rng, self.n, family=family, radius=self.radius, max_offset=self.max_offset)

    def _smooth_phase(self, rng: np.random.Generator, occ: np.ndarray, rms: float) -> np.ndarray:
        corr = rng.uniform(0.08, 0.3, 3) * self.n  # anisotropic correlation lengths
        field = gaussian_random_field(rng, self.n, corr)
        return scale_to_range(field, occ, rms=rms)

    def _static(self, rng: np.random.Generator) -> tuple[np.ndarray, str, SampleDescriptor]:
        shape = self._shape(rng)
        occ = shape.render(self.n)
        phi = self._smooth_phase(rng, occ, rng.uniform(*self.phase_rms_range))
        return complex_density(occ, phi), "static", SampleDescriptor(shape=shape)

    def _strained(self, rng: np.random.Generator) -> tuple[np.ndarray, str, SampleDescriptor]:
        shape = self._shape(rng)
        occ = shape.render(self.n)
        amp = rng.uniform(*self.displacement_range)
        u = random_displacement(rng, self.n, rng.uniform(0.1, 0.25) * self.n, amp)
        phi = strain_phase(u, DEFAULT_G, occ) + self._smooth_phase(rng, occ, rng.uniform(0.0, 0.3))
        return complex_density(occ, phi), "strained", SampleDescriptor(shape=shape)

    def _dislocated(self, rng: np.random.Generator) -> tuple[np.ndarray, str, SampleDescriptor]:
        crystal = random_faceted_crystal(rng, self.n, radius=self.radius, max_offset=self.max_offset)
        occ = crystal.render(self.n)
        coords = centred_coords(self.n)
        G = np.asarray(DEFAULT_G)
        u = np.zeros((3,) + (self.n,) * 3)
        R = crystal.bounding_radius()
        lines = []
        for _ in range(int(rng.integers(1, self.max_dislocations + 1))):
            b = visible_burgers_vector(rng, G)
            kind = rng.integers(3)
            if kind == 0:  # screw
                t = b / np.linalg.norm(b)
            else:
                v = rng.standard_normal(3)
                if kind == 1:  # edge
                    v -= np.dot(v, b) * b / np.dot(b, b)
                t = v / np.linalg.norm(v)
            point = np.asarray(crystal.centre) + rng.uniform(-0.6, 0.6, 3) * R
            nu = rng.uniform(0.25, 0.45)
            u += dislocation_displacement(coords, point, t, b, poisson_ratio=nu)
            lines.append(DislocationLine(point=tuple(point), direction=tuple(t), burgers=tuple(b), G=tuple(G),
                                         poisson_ratio=float(nu)))
        phi = strain_phase(u, G, occ) + self._smooth_phase(rng, occ, rng.uniform(0.0, 0.3))
        return complex_density(occ, phi), "dislocated", SampleDescriptor(shape=crystal, dislocations=tuple(lines))

    def _scenario(self, rng: np.random.Generator) -> tuple[np.ndarray, str, SampleDescriptor]:
        name = _SCENARIO_NAMES[int(rng.integers(len(_SCENARIO_NAMES)))]
        num_frames = int(rng.integers(20, 101))
        sc = SCENARIOS[name].from_rng(rng, n=self.n, num_frames=num_frames)
        t = int(rng.integers(num_frames))
        return sc.density(t), f"scenario:{name}", sc.descriptor(t)
