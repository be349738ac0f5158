"""Parameters of Scheinker's bounded extremum seeking (ES), validated once at construction.

The controller works in a normalised box ``[-1, 1]^k``: the caller's bounds ``lower < upper`` are
mapped affinely onto it (see :func:`controllers.extremum_seeking.to_unit_box`). All amplitudes
(``dither``, ``dither_min``) are in these normalised units, where the box has half-width 1.

Update (discrete form, docs/conventions.md section 4), for parameter ``i`` at step ``n``::

    z_i(n+1) = clip(z_i(n) + dt * sqrt(alpha_i * omega_i) * cos(omega_i * n * dt + k * C(n)), -1, 1)
    alpha_i  = omega_i * D(n)**2

with ``sin`` instead of ``cos`` for the parameters flagged in ``sine`` (cosine/sine pairs). For a
constant cost each coordinate oscillates with amplitude ``D`` about its centre; on average ``z``
follows ``-(k * alpha / 2) * grad C`` (gradient descent without a gradient), and every step is
bounded by ``dt * omega_i * D``.

Defaults and why
----------------
``gain = 1.0``
    With the default cost normalisation the normalised cost is O(1), so ``k * dC`` per step is
    O(0.1 to 1) for dither-induced cost changes of 10 % to 100 %: the range of docs/conventions.md
    section 4,
    in the middle of the published 0.2 (cernml-extremum-seeking) to 2 (Xopt) range.
``dither = 0.1``
    Dither amplitude ``D`` (the oscillation amplitude, 5 % of the box width); the upper end of the
    0.05 to 0.1 range (Xopt's ``oscillation_size`` default), large enough to be seen in the cost
    over model error and noise. It is also the maximum amplitude under decay or adaptation.
``dither_min = dither / 10``
    Floor for decay and adaptation, so a controller never loses the dither it needs to track.
``omega = linspace(1, 1.75, k)``
    Distinct frequencies, one per parameter; with ``pairs=True`` the first ``ceil(k/2)``
    parameters use ``cos`` at ``linspace(1, 1.75, ceil(k/2))`` and the rest use ``sin`` at the
    same frequencies, in order.
``dt = 2*pi / (10 * max(omega))``
    About ten samples per period of the fastest dither.
``decay_rate = 1.0``
    No decay: a persistent dither is what lets ES track a moving optimum.
``cost_normalisation = "ema"``, ``cost_memory = 100``
    The cost is divided by an exponential moving average of ``|C|`` with a memory of 100 steps
    (about six periods of the slowest dither, so the scale does not follow and cancel the
    dither-induced variation). This makes the trajectory invariant to the unknown scale of the
    cost (photon flux, misfit definition) and keeps ``k * C`` per step O(0.1 to 1) as the cost
    level changes during a run. ``"first"`` divides by the first non-zero ``|C|`` instead and
    ``"none"`` uses the raw cost (then ``gain`` carries the scale). A cost with a large constant
    offset (variation much smaller than its level) should be shifted by the caller or used with
    ``"none"``: only the variation of ``k * C`` drives ES.
``adapt = False``
    Adaptive dither, off by default (see :class:`ESParams`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["COST_NORMALISATIONS", "ESParams", "default_frequencies"]

#: Accepted values of :attr:`ESParams.cost_normalisation`.
COST_NORMALISATIONS: tuple[str, ...] = ("none", "first", "ema")


def default_frequencies(k: int, pairs: bool = False) -> tuple[tuple[float, ...], tuple[bool, ...]]:
    """Default dither frequencies and sine flags for ``k`` parameters.

    Parameters
    ----------
    k : int
        Number of parameters (>= 1).
    pairs : bool
        False: ``omega = linspace(1, 1.75, k)``, all cosines. True: ``m = ceil(k/2)``
        frequencies ``linspace(1, 1.75, m)``; parameters ``0..m-1`` use ``cos`` and parameters
        ``m..k-1`` use ``sin`` at frequencies ``0..k-m-1``.

    Returns
    -------
    omega : tuple of float
        Angular frequency per parameter (radians per unit time).
    sine : tuple of bool
        True where the parameter's dither is ``sin`` rather than ``cos``.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"`k` must be an integer >= 1, got {k!r}")
    k = int(k)
    if not pairs:
        return tuple(float(w) for w in np.linspace(1.0, 1.75, k)), (False,) * k
    m = -(-k // 2)
    base = [float(w) for w in np.linspace(1.0, 1.75, m)]
    return tuple(base + base[: k - m]), (False,) * m + (True,) * (k - m)


def _positive_finite(name: str, value: Any, *, upper: float | None = None, closed_upper: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
    if upper is not None:
        if closed_upper and v > upper:
            raise ValueError(f"`{name}` must be in (0, {upper:g}], got {value!r}")
        if not closed_upper and v >= upper:
            raise ValueError(f"`{name}` must be in (0, {upper:g}), got {value!r}")
    return v


def _vector(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{name}` must be a 1-D sequence of real numbers, got {value!r}") from exc
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must contain only finite numbers, got {arr.tolist()}")
    return arr


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return bool(value)


@dataclass(frozen=True)
class ESParams:
    """Validated, immutable parameters of bounded extremum seeking.

    ``None`` fields are resolved to their defaults in ``__post_init__``; after construction every
    field holds a concrete value (sequences as tuples), so ``ESParams(**p.to_dict()) == p``.

    Parameters
    ----------
    lower, upper : sequence of float, shape (k,)
        Caller's bounds; finite, ``lower < upper`` element-wise. Mapped onto ``[-1, 1]^k``.
    gain : float
        ``k`` in the update, > 0 (typically 0.2 to 2). Default 1.0.
    dither : float
        Dither amplitude ``D`` in normalised units, in (0, 1]. Default 0.1. Initial and maximum
        amplitude when ``decay_rate < 1`` or ``adapt`` is on.
    dither_min : float or None
        Floor of the amplitude under decay and adaptation, in [0, dither] (> 0 when ``adapt``).
        Default ``dither / 10``.
    omega : sequence of float or None
        Angular dither frequency per parameter, finite and > 0; the pairs ``(omega_i, sine_i)``
        must be distinct. Default from :func:`default_frequencies`.
    sine : sequence of bool or None
        True where parameter ``i`` uses ``sin`` instead of ``cos``. Default from
        :func:`default_frequencies` (all False unless ``pairs``).
    pairs : bool
        Only used when ``omega`` is None: choose ``ceil(k/2)`` frequencies in cosine/sine pairs.
    dt : float or None
        Time step, > 0. Default ``2*pi / (10 * max(omega))``.
    decay_rate : float
        Per-step decay of the amplitude, in (0, 1]; 1.0 = no decay. After ``n`` steps the
        amplitude is ``max(dither * decay_rate**n, dither_min)`` (times the adaptive factor when
        ``adapt``), computed from the step counter so a resumed run decays identically.
    adapt : bool
        Adaptive dither amplitude, for misfit-like costs (>= 0, small at the optimum). A fast
        exponential moving average ``f`` of ``|C|`` (memory ``adapt_memory`` steps) and its
        largest value so far ``p`` are kept, and the amplitude is
        ``D = clip(E * (f / p)**adapt_exponent, dither_min, dither)`` with ``E`` the decay
        envelope (``dither * decay_rate**n``). The dither (and the residual oscillation) shrinks
        as the cost falls below its peak and grows back toward ``dither`` when the cost rises
        (the optimum moved). Scale-free (a ratio of costs). ``p`` never decays;
        :meth:`ExtremumSeeking.reset` clears it.
    adapt_exponent : float
        Exponent of the adaptive factor, in (0, 1]. Default 0.25: on a quadratic cost
        ``D`` goes as the square root of the distance to the optimum, which keeps enough dither
        to move while far away (ES speed goes as ``D**2``) and shrinks it near the optimum.
        0.5 makes ``D`` proportional to the distance (stronger, slower from far starts).
    adapt_memory : float
        Memory of ``f`` in steps, >= 1. Default 20 (about one period of the slowest default
        dither, which averages the dither-induced cost oscillation out).
    cost_normalisation : {"none", "first", "ema"}
        How the cost is scaled before it enters the phase (see module docstring). Default "ema".
    cost_memory : float
        Memory in steps of the ``"ema"`` scale, >= 1. Default 100.
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    gain: float = 1.0
    dither: float = 0.1
    dither_min: float | None = None
    omega: tuple[float, ...] | None = None
    sine: tuple[bool, ...] | None = None
    pairs: bool = False
    dt: float | None = None
    decay_rate: float = 1.0
    adapt: bool = False
    adapt_exponent: float = 0.25
    adapt_memory: float = 20.0
    cost_normalisation: str = "ema"
    cost_memory: float = 100.0

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        lower = _vector("lower", self.lower)
        upper = _vector("upper", self.upper)
        if lower.shape != upper.shape:
            raise ValueError(
                f"`lower` and `upper` must have the same length, got {lower.size} and {upper.size}"
            )
        if not np.all(lower < upper):
            bad = np.flatnonzero(~(lower < upper)).tolist()
            raise ValueError(f"`lower` must be < `upper` element-wise, violated at indices {bad}")
        if not np.all(np.isfinite(upper - lower)):
            raise ValueError("`upper - lower` must be finite (bounds too far apart)")
        k = lower.size
        put("lower", tuple(float(v) for v in lower))
        put("upper", tuple(float(v) for v in upper))

        put("gain", _positive_finite("gain", self.gain))
        put("dither", _positive_finite("dither", self.dither, upper=1.0))
        put("pairs", _flag("pairs", self.pairs))
        put("adapt", _flag("adapt", self.adapt))

        if self.dither_min is None:
            put("dither_min", self.dither / 10.0)
        else:
            dm = self.dither_min
            if isinstance(dm, bool) or not isinstance(dm, (int, float, np.integer, np.floating)):
                raise TypeError(f"`dither_min` must be a real number, got {type(dm).__name__}")
            dm = float(dm)
            if not (0.0 <= dm <= self.dither):
                raise ValueError(f"`dither_min` must be in [0, dither={self.dither:g}], got {dm!r}")
            if self.adapt and dm <= 0.0:
                raise ValueError(f"`dither_min` must be > 0 when `adapt` is True, got {dm!r}")
            put("dither_min", dm)

        d_omega, d_sine = default_frequencies(k, self.pairs)
        if self.omega is None:
            omega = np.asarray(d_omega)
        else:
            omega = _vector("omega", self.omega)
            if omega.size != k:
                raise ValueError(f"`omega` must have one frequency per parameter ({k}), got {omega.size}")
            if np.any(omega <= 0):
                raise ValueError(f"`omega` must be > 0, got {omega.tolist()}")
        if self.sine is None:
            sine = d_sine if self.omega is None else (False,) * k
        else:
            sine = tuple(self.sine)
            if len(sine) != k:
                raise ValueError(f"`sine` must have one flag per parameter ({k}), got {len(sine)}")
            sine = tuple(_flag("sine", s) for s in sine)
        keys = list(zip(omega.tolist(), sine))
        if len(set(keys)) != k:
            raise ValueError(
                "`omega` must be distinct per parameter (a frequency may appear twice only as a "
                f"cosine/sine pair), got omega={omega.tolist()}, sine={list(sine)}"
            )
        put("omega", tuple(float(w) for w in omega))
        put("sine", sine)

        if self.dt is None:
            put("dt", 2.0 * math.pi / (10.0 * max(self.omega)))
        else:
            put("dt", _positive_finite("dt", self.dt))

        put("decay_rate", _positive_finite("decay_rate", self.decay_rate, upper=1.0))
        put("adapt_exponent", _positive_finite("adapt_exponent", self.adapt_exponent, upper=1.0))
        am = _positive_finite("adapt_memory", self.adapt_memory)
        if am < 1.0:
            raise ValueError(f"`adapt_memory` must be >= 1 (steps), got {self.adapt_memory!r}")
        put("adapt_memory", am)

        if self.cost_normalisation not in COST_NORMALISATIONS:
            raise ValueError(
                f"`cost_normalisation` must be one of {COST_NORMALISATIONS}, got {self.cost_normalisation!r}"
            )
        cm = _positive_finite("cost_memory", self.cost_memory)
        if cm < 1.0:
            raise ValueError(f"`cost_memory` must be >= 1 (steps), got {self.cost_memory!r}")
        put("cost_memory", cm)

    # -- derived quantities -------------------------------------------------------------------

    @property
    def k(self) -> int:
        """Number of tuned parameters."""
        return len(self.lower)

    def alpha(self, dither: float | None = None) -> np.ndarray:
        """``alpha_i = omega_i * D**2`` for amplitude ``D`` (default :attr:`dither`), shape (k,)."""
        d = self.dither if dither is None else float(dither)
        return np.asarray(self.omega, dtype=np.float64) * d**2

    def max_step(self, dither: float | None = None) -> np.ndarray:
        """Largest possible change per step, ``dt * sqrt(alpha_i * omega_i)``, normalised units."""
        omega = np.asarray(self.omega, dtype=np.float64)
        return self.dt * np.sqrt(self.alpha(dither) * omega)

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (lists and plain scalars); ``ESParams(**d)`` rebuilds it exactly."""
        d = asdict(self)
        for key in ("lower", "upper", "omega", "sine"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ESParams:
        """Inverse of :meth:`to_dict` (unknown keys raise ``TypeError``)."""
        if not isinstance(d, dict):
            raise TypeError(f"`d` must be a dict, got {type(d).__name__}")
        return cls(**d)
