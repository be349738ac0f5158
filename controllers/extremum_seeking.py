"""Scheinker's bounded extremum seeking: a pure step and a suggest/ingest controller.

The pure core is :func:`es_step`, ``(ESParams, ESState, cost) -> ESState``: no side effects, numpy
only, bit-identical outputs for identical inputs, so runs can be replayed and golden-tested.
:class:`ExtremumSeeking` wraps it in the ``suggest() -> z`` / ``ingest(cost)`` loop shared by all
controllers (:class:`controllers.protocol.Controller`)::

    es = ExtremumSeeking(lower=lo, upper=hi, z0=z_start)
    for frame in frames:
        z = es.suggest()          # caller's units, within [lo, hi]
        es.ingest(cost(z, frame)) # cost measured at that z

The equations, the normalised box and the defaults are documented in :mod:`controllers.es_params`.
Step ``n`` uses the phase ``omega * n * dt`` with the controller's own step counter ``n``, which
persists across frames and through :meth:`ExtremumSeeking.to_dict` / ``from_dict``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from controllers.es_params import ESParams

__all__ = [
    "ESState",
    "ExtremumSeeking",
    "es_step",
    "from_unit_box",
    "initial_state",
    "to_unit_box",
]

logger = logging.getLogger(__name__)

_FORMAT = "latenttune.controllers.ExtremumSeeking"
_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------
# Mapping between the caller's bounds and the normalised box [-1, 1]^k
# ---------------------------------------------------------------------------


def to_unit_box(params: ESParams, z: Any, *, name: str = "z") -> np.ndarray:
    """Map caller-unit ``z`` (shape (k,)) to the normalised box: ``2*(z - lower)/(upper - lower) - 1``.

    Raises ``ValueError`` (naming the argument as ``name``) if ``z`` has the wrong shape, is not
    finite or lies outside the bounds. The result is clipped to ``[-1, 1]`` (removes rounding
    overshoot only).
    """
    arr = np.asarray(z, dtype=np.float64)
    lo = np.asarray(params.lower)
    hi = np.asarray(params.upper)
    if arr.shape != lo.shape:
        raise ValueError(f"`{name}` must have shape ({params.k},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite, got {arr.tolist()}")
    if np.any(arr < lo) or np.any(arr > hi):
        bad = np.flatnonzero((arr < lo) | (arr > hi)).tolist()
        raise ValueError(f"`{name}` must lie within [lower, upper], violated at indices {bad}")
    return np.clip(2.0 * (arr - lo) / (hi - lo) - 1.0, -1.0, 1.0)


def from_unit_box(params: ESParams, u: Any) -> np.ndarray:
    """Map normalised ``u`` in ``[-1, 1]^k`` to caller units: ``lower + (u + 1)*(upper - lower)/2``.

    The result is clipped to ``[lower, upper]``, so it is always within the caller's bounds.
    """
    arr = np.asarray(u, dtype=np.float64)
    lo = np.asarray(params.lower)
    hi = np.asarray(params.upper)
    return np.clip(lo + (arr + 1.0) * (hi - lo) / 2.0, lo, hi)


# ---------------------------------------------------------------------------
# State and pure step
# ---------------------------------------------------------------------------


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class ESState:
    """Immutable state of bounded ES after ``n`` steps (all positions normalised, in ``[-1, 1]``).

    Attributes
    ----------
    n : int
        Number of steps taken (costs ingested); the next step uses phase ``omega * n * dt``.
    z : tuple of float
        Current position, where the next cost is to be measured.
    dither : float
        Dither amplitude ``D`` the next step uses.
    cost_scale : float
        Running cost scale (0.0 until a non-zero cost is seen; unused with ``"none"``).
    cost_fast : float
        Moving average of ``|C|`` for the adaptive dither (0.0 before the first cost).
    cost_peak : float
        Largest ``cost_fast`` so far (the adaptive dither's reference level).
    last_cost : float or None
        Raw cost of the last step.
    best_z : tuple of float or None
        Position with the lowest raw cost seen so far.
    best_cost : float or None
        That lowest cost.
    """

    n: int
    z: tuple[float, ...]
    dither: float
    cost_scale: float = 0.0
    cost_fast: float = 0.0
    cost_peak: float = 0.0
    last_cost: float | None = None
    best_z: tuple[float, ...] | None = None
    best_cost: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or int(self.n) != self.n or self.n < 0:
            raise ValueError(f"`n` must be an integer >= 0, got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))
        z = np.asarray(self.z, dtype=np.float64)
        if z.ndim != 1 or not np.all(np.isfinite(z)) or np.any(np.abs(z) > 1.0):
            raise ValueError(f"`z` must be a 1-D finite sequence within [-1, 1], got {self.z!r}")
        object.__setattr__(self, "z", tuple(z.tolist()))
        if not (math.isfinite(self.dither) and self.dither >= 0):
            raise ValueError(f"`dither` must be finite and >= 0, got {self.dither!r}")
        for name in ("cost_scale", "cost_fast", "cost_peak"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"`{name}` must be finite and >= 0, got {v!r}")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "dither", float(self.dither))
        object.__setattr__(self, "last_cost", _opt_float(self.last_cost))
        object.__setattr__(self, "best_cost", _opt_float(self.best_cost))
        if self.best_z is not None:
            bz = np.asarray(self.best_z, dtype=np.float64)
            if bz.shape != z.shape:
                raise ValueError(f"`best_z` must have the shape of `z` {z.shape}, got {bz.shape}")
            object.__setattr__(self, "best_z", tuple(bz.tolist()))
        if (self.best_z is None) != (self.best_cost is None):
            raise ValueError("`best_z` and `best_cost` must be both None or both set")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; floats survive ``json`` exactly (shortest round-trip repr)."""
        return {
            "n": self.n,
            "z": list(self.z),
            "dither": self.dither,
            "cost_scale": self.cost_scale,
            "cost_fast": self.cost_fast,
            "cost_peak": self.cost_peak,
            "last_cost": self.last_cost,
            "best_z": None if self.best_z is None else list(self.best_z),
            "best_cost": self.best_cost,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ESState:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise TypeError(f"`d` must be a dict, got {type(d).__name__}")
        return cls(**d)


def initial_state(params: ESParams, z0: Any = None) -> ESState:
    """State at step 0 starting from ``z0`` in caller units (default: the centre of the bounds)."""
    u = np.zeros(params.k) if z0 is None else to_unit_box(params, z0, name="z0")
    return ESState(n=0, z=tuple(u.tolist()), dither=params.dither)


def _check_cost(cost: Any) -> float:
    if isinstance(cost, bool) or not isinstance(cost, (int, float, np.integer, np.floating)):
        arr = np.asarray(cost)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise TypeError(f"`cost` must be a real scalar, got {type(cost).__name__}")
        cost = arr.item()
    c = float(cost)
    if not math.isfinite(c):
        raise ValueError(f"`cost` must be finite, got {c!r}")
    return c


def es_step(params: ESParams, state: ESState, cost: float) -> ESState:
    """One step of bounded extremum seeking (pure).

    ``cost`` is the raw cost measured at ``state.z``. Returns the state at step ``n + 1``::

        c      = cost / scale                 (scale from `cost_normalisation`)
        z'     = clip(z + dt*sqrt(alpha*omega)*cos(omega*n*dt + gain*c), -1, 1)
        alpha  = omega * D**2                 (sin for parameters flagged in `sine`)
        D'     = clip(dither * decay_rate**(n+1) * (fast/peak)**adapt_exponent, dither_min, dither)
                 (the last factor only with `adapt`; fast = moving average of |C|,
                  peak = its largest value so far)

    Parameters
    ----------
    params : ESParams
    state : ESState
        Current state; ``len(state.z) == params.k``.
    cost : float
        Finite raw cost at ``state.z``.

    Returns
    -------
    ESState
        New state; ``params`` and ``state`` are not modified.

    Raises
    ------
    ValueError
        If ``cost`` is not finite or ``state`` does not match ``params``.
    """
    c_raw = _check_cost(cost)
    if len(state.z) != params.k:
        raise ValueError(f"`state.z` must have {params.k} entries (params.k), got {len(state.z)}")
    z = np.asarray(state.z, dtype=np.float64)
    abs_c = abs(c_raw)

    # Cost normalisation: only the variation of k*C matters.
    scale = state.cost_scale
    if params.cost_normalisation == "first":
        if scale == 0.0:
            scale = abs_c
    elif params.cost_normalisation == "ema":
        beta = 1.0 - 1.0 / params.cost_memory
        scale = abs_c if scale == 0.0 else beta * scale + (1.0 - beta) * abs_c
    c = c_raw / scale if (params.cost_normalisation != "none" and scale > 0.0) else c_raw

    # The ES update in the normalised box.
    omega = np.asarray(params.omega, dtype=np.float64)
    alpha = omega * state.dither**2
    arg = omega * state.n * params.dt + params.gain * c
    sine = np.asarray(params.sine, dtype=bool)
    trig = np.cos(arg) if not sine.any() else np.where(sine, np.sin(arg), np.cos(arg))
    z_new = np.clip(z + params.dt * np.sqrt(alpha * omega) * trig, -1.0, 1.0)

    # Dither amplitude for the next step: decay envelope, adaptation, then [dither_min, dither].
    n_new = state.n + 1
    dither = params.dither * params.decay_rate**n_new if params.decay_rate != 1.0 else params.dither
    fast, peak = state.cost_fast, state.cost_peak
    if params.adapt:
        if fast == 0.0 and peak == 0.0:
            fast = abs_c
        else:
            b_fast = 1.0 - 1.0 / params.adapt_memory
            fast = b_fast * fast + (1.0 - b_fast) * abs_c
        peak = max(peak, fast)
        if peak > 0.0:
            dither *= (fast / peak) ** params.adapt_exponent
    dither = min(max(dither, params.dither_min), params.dither)

    if state.best_cost is None or c_raw < state.best_cost:
        best_z, best_cost = state.z, c_raw
    else:
        best_z, best_cost = state.best_z, state.best_cost

    return ESState(
        n=n_new,
        z=tuple(z_new.tolist()),
        dither=dither,
        cost_scale=scale if params.cost_normalisation != "none" else 0.0,
        cost_fast=fast,
        cost_peak=peak,
        last_cost=c_raw,
        best_z=best_z,
        best_cost=best_cost,
    )


# ---------------------------------------------------------------------------
# suggest/ingest controller
# ---------------------------------------------------------------------------


class ExtremumSeeking:
    """Bounded extremum seeking with the ``suggest``/``ingest`` interface.

    Parameters
    ----------
    params : ESParams, optional
        Parameters; alternatively pass the :class:`ESParams` fields as keyword arguments
        (``lower`` and ``upper`` are then required). Not both.
    z0 : array_like, optional
        Start in caller units, within ``[lower, upper]``; default the centre of the bounds.
    **kwargs
        :class:`ESParams` fields when ``params`` is not given.

    Notes
    -----
    Use ``z = es.suggest(); es.ingest(cost_at(z))`` repeatedly. ``suggest`` may be called more
    than once before ``ingest`` (it returns the same point); ``ingest`` without a pending
    ``suggest`` raises ``RuntimeError``. The whole controller round-trips through JSON with
    :meth:`to_dict` / :meth:`from_dict` and then continues bit-identically.
    """

    def __init__(self, params: ESParams | None = None, *, z0: Any = None, **kwargs: Any) -> None:
        if params is None:
            if "lower" not in kwargs or "upper" not in kwargs:
                raise TypeError("`lower` and `upper` are required when `params` is not given")
            params = ESParams(**kwargs)
        elif kwargs:
            raise TypeError(f"pass either `params` or ESParams keyword arguments, not both: {sorted(kwargs)}")
        if not isinstance(params, ESParams):
            raise TypeError(f"`params` must be an ESParams, got {type(params).__name__}")
        self._params = params
        self._state = initial_state(params, z0)
        self._z0 = self._state.z
        self._pending = False

    # -- properties -----------------------------------------------------------------------------

    @property
    def params(self) -> ESParams:
        """The (immutable) parameters."""
        return self._params

    @property
    def state(self) -> ESState:
        """The current (immutable) state; positions are normalised."""
        return self._state

    @property
    def n(self) -> int:
        """Number of costs ingested so far."""
        return self._state.n

    @property
    def dither(self) -> float:
        """Current dither amplitude (normalised units)."""
        return self._state.dither

    @property
    def best(self) -> tuple[np.ndarray, float] | None:
        """``(z, cost)`` with the lowest cost ingested so far (``z`` in caller units), or None."""
        s = self._state
        if s.best_z is None or s.best_cost is None:
            return None
        return from_unit_box(self._params, s.best_z), s.best_cost

    # -- the loop -------------------------------------------------------------------------------

    def suggest(self) -> np.ndarray:
        """The point at which to measure the next cost, caller units, shape (k,), within bounds."""
        self._pending = True
        return from_unit_box(self._params, self._state.z)

    def position(self) -> np.ndarray:
        """The current point in caller units (what :meth:`suggest` would return), without a pending suggestion."""
        return from_unit_box(self._params, self._state.z)

    def ingest(self, cost: float) -> None:
        """Advance one step with the finite ``cost`` measured at the last suggested point."""
        if not self._pending:
            raise RuntimeError("`ingest` called without a pending `suggest`: call suggest() first")
        self._state = es_step(self._params, self._state, cost)
        self._pending = False
        logger.debug("ES step %d: cost=%g dither=%g", self._state.n, self._state.last_cost, self._state.dither)

    def reset(self, z0: Any = None) -> None:
        """Restart at step 0 from ``z0`` (caller units; default the start given at construction)."""
        if z0 is None:
            self._state = ESState(n=0, z=self._z0, dither=self._params.dither)
        else:
            self._state = initial_state(self._params, z0)
            self._z0 = self._state.z
        self._pending = False

    def set_state(self, state: ESState) -> None:
        """Replace the state (e.g. one produced by :func:`es_step`); drops any pending suggestion."""
        if not isinstance(state, ESState):
            raise TypeError(f"`state` must be an ESState, got {type(state).__name__}")
        if len(state.z) != self._params.k:
            raise ValueError(f"`state.z` must have {self._params.k} entries, got {len(state.z)}")
        self._state = state
        self._pending = False

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot: parameters, state, start point and pending flag."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "params": self._params.to_dict(),
            "state": self._state.to_dict(),
            "z0": list(self._z0),
            "pending": self._pending,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtremumSeeking:
        """Rebuild a controller from :meth:`to_dict` output; it continues exactly where it was."""
        if not isinstance(d, dict):
            raise TypeError(f"`d` must be a dict, got {type(d).__name__}")
        if d.get("format") != _FORMAT or d.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"`d` must come from ExtremumSeeking.to_dict (format {_FORMAT!r}, version "
                f"{_FORMAT_VERSION}), got format {d.get('format')!r}, version {d.get('version')!r}"
            )
        params = ESParams.from_dict(d["params"])
        obj = cls(params)
        state = ESState.from_dict(d["state"])
        obj.set_state(state)
        z0 = ESState(n=0, z=d["z0"], dither=params.dither).z
        if len(z0) != params.k:
            raise ValueError(f"`z0` must have {params.k} entries, got {len(z0)}")
        obj._z0 = z0
        obj._pending = bool(d["pending"])
        return obj

    def __repr__(self) -> str:
        p, s = self._params, self._state
        return (
            f"ExtremumSeeking(k={p.k}, gain={p.gain:g}, dither={s.dither:g}, n={s.n}, "
            f"cost_normalisation={p.cost_normalisation!r})"
        )
