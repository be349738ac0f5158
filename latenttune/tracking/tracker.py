"""The real-time tracking loop: keep a latent vector locked on a changing sample.

For each measured frame ``(intensity, mask)`` the loop builds the frame's cost
``C(z) = amplitude misfit of |F pad(decode(z))|^2 against the frame`` (DESIGN.md section 2;
masked, flux-scale invariant; :class:`latenttune.model.latent_cost.LatentCost`) and lets a *strategy*
improve the latent for ``steps_per_frame`` cost evaluations:

* :class:`ESStrategy` -- extremum seeking (:mod:`controllers`): cost values only, never the
  network's gradient. Starts from the encoder's prediction of the first frame, then carries on
  from the previous frame (``absolute`` mode), or tunes a correction ``delta`` added to the
  encoder's prediction of each new frame, ``z_t = E(I_t) + delta`` (``residual`` mode).
* :class:`OneShotStrategy` -- the encoder alone, ``z_t = E(I_t)``: the comparator with no
  controller.
* :class:`HybridStrategy` (the default of the command line) -- ES as above, then the physics stage
  of :mod:`latenttune.tracking.physics_stage` on the voxels: RAAR/ER with shrink-wrap from the previous frame's
  output, guided by the decoded density, kept only when it fits held-out voxels better and the
  measured pattern no worse. The frame's reported density is then :attr:`FrameRecord.output_density`.
* :class:`GradientStrategy` -- gradient descent on ``z`` through autograd. **Uses the network
  gradient**; a comparator, not the project's method.

On the first good frame the tracker may ask the encoder in ``views`` symmetric views of the pattern
(:mod:`latenttune.model.views`) and keep the view whose prediction fits the measurement best; the run then
works with the model seen through that view (densities stay in the laboratory frame; the view's
index is stored in every record's ``state`` as ``"view"``, so a resumed run keeps it).

A model with a cycle encoder (:attr:`latenttune.model.ModelConfig.cycle_encoder`) predicts every
frame with both encoders and hands the strategy the prediction that fits the frame better
(:func:`latenttune.model.encoders.choose_encoder`); the two evaluations are part of the frame's record.
The hybrid's physics stage gets the other prediction's density too, and tries it as a restart when
the frame's refinement stagnates (:meth:`latenttune.tracking.physics_stage.PhysicsStage.run`): the encoder that fits
the counts best before phase retrieval is not always the one that leads phase retrieval to the
sample.

Every strategy reports the best latent it evaluated on the frame. Frames that
:func:`latenttune.frame_policy.frame_problem` rejects (not finite, negative, no counts) are skipped
with a warning and the last estimate is held. The latent never leaves
the model's box ``[-1, 1]^k``. :func:`track` returns a :class:`TrackResult` (one vocabulary for
every strategy) and calls ``callback(record)`` after each frame; a callback returning True stops
the run (``status`` 1). Its per-frame body is :class:`FrameTracker`, which live callers (the
Bluesky plan :func:`latenttune.bluesky.track_sample`) drive one frame at a time, so a stored live
run replays to the same costs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from controllers import ESParams, ExtremumSeeking, from_unit_box
from latenttune.model.encoders import choose_encoder
from latenttune.frame_policy import frame_problem as _frame_problem
from latenttune.model.latent_cost import LatentCost
from latenttune.model.network import LatentAutoencoder
from latenttune.physics import COSTS, forward
from latenttune.tracking.physics_stage import PhysicsOutcome, PhysicsSettings, PhysicsStage
from latenttune.model.views import ViewedAutoencoder, check_views, choose_view, viewed

log = logging.getLogger(__name__)

__all__ = [
    "FrameRecord",
    "TrackResult",
    "Strategy",
    "ESStrategy",
    "HybridStrategy",
    "OneShotStrategy",
    "GradientStrategy",
    "make_strategy",
    "FrameTracker",
    "track",
    "MODES",
    "STRATEGIES",
]

MODES = ("absolute", "residual")


@dataclass(frozen=True)
class FrameRecord:
    """What the loop did on one frame.

    Attributes
    ----------
    index : int
        Frame index in the series.
    time : float
        Frame time (seconds).
    latent : ndarray, shape (k,)
        Best latent found on this frame (the reported estimate).
    cost : float
        Cost at ``latent`` (NaN for a skipped frame).
    step_costs : ndarray, shape (steps,)
        Cost of every evaluation on this frame, in order.
    encoded : ndarray, shape (k,)
        The encoder's prediction for this frame (NaN when the strategy does not use it).
    density : ndarray, shape (n, n, n), complex64
        ``decode(latent)``.
    seconds : float
        Wall time spent on the frame (encode, evaluations, decode).
    status : str
        ``"ok"`` or ``"skipped: <reason>"``.
    state : dict
        The strategy's serialisable state after the frame (for exact resume), with the tracker's
        ``"view"`` (index in :data:`latenttune.model.views.VIEWS` of the model's view; 0 = identity).
    physics : PhysicsOutcome or None
        The physics stage's outcome on this frame (hybrid tracking; None otherwise and on a
        skipped frame).
    output : ndarray or None
        The frame's reconstruction when it is not ``density`` (hybrid tracking: the physics
        stage's output, held over a skipped frame); see :attr:`output_density`.
    """

    index: int
    time: float
    latent: np.ndarray
    cost: float
    step_costs: np.ndarray
    encoded: np.ndarray
    density: np.ndarray
    seconds: float
    status: str
    state: dict[str, Any] = field(default_factory=dict)
    physics: PhysicsOutcome | None = None
    output: np.ndarray | None = None

    @property
    def output_density(self) -> np.ndarray:
        """The frame's reconstruction: the physics stage's output (hybrid tracking), else ``density``."""
        return self.output if self.output is not None else self.density

    @property
    def steps(self) -> int:
        """Cost evaluations spent on the frame."""
        return int(len(self.step_costs))


@dataclass
class TrackResult:
    """Outcome of :func:`track` (scipy-style vocabulary: ``x``, ``fun``, ``nit``, ``status``, ``message``).

    Attributes
    ----------
    records : list of FrameRecord
        One per processed frame.
    x : ndarray, shape (k,)
        The final latent.
    fun : float
        The final frame's cost.
    nit : int
        Cost evaluations in all.
    status : int
        0 all frames processed; 1 stopped by the callback.
    message : str
    """

    records: list[FrameRecord]
    x: np.ndarray
    fun: float
    nit: int
    status: int
    message: str

    @property
    def latent(self) -> np.ndarray:
        """Latent per frame, shape (T, k)."""
        return np.stack([r.latent for r in self.records])

    @property
    def cost(self) -> np.ndarray:
        """Final cost per frame, shape (T,)."""
        return np.array([r.cost for r in self.records])

    @property
    def density(self) -> np.ndarray:
        """Decoded density per frame, shape (T, n, n, n)."""
        return np.stack([r.density for r in self.records])

    @property
    def output_density(self) -> np.ndarray:
        """Reconstruction per frame (the physics stage's output in hybrid tracking), shape (T, n, n, n)."""
        return np.stack([r.output_density for r in self.records])

    @property
    def seconds(self) -> np.ndarray:
        """Wall time per frame, shape (T,)."""
        return np.array([r.seconds for r in self.records])


class Strategy(Protocol):
    """How the loop improves the latent on one frame."""

    name: str
    uses_network_gradient: bool

    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(evaluated latents (S, k), their costs (S,))`` for this frame."""
        ...

    @property
    def needs_encoder(self) -> bool:
        """Whether :meth:`run_frame` needs the encoder's prediction of every frame."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, enough to continue exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


ES_STEPS_PER_FRAME = 100
"""Default cost evaluations per frame of ES alone and of the gradient comparator."""
HYBRID_STEPS_PER_FRAME = 16
"""Default ES iterations per frame of the hybrid tracker (its physics stage does the fine work)."""


def _check_steps(steps_per_frame: Any) -> int:
    if isinstance(steps_per_frame, bool) or not isinstance(steps_per_frame, (int, np.integer)) or steps_per_frame < 1:
        raise ValueError(f"`steps_per_frame` must be a positive integer, got {steps_per_frame!r}")
    return int(steps_per_frame)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    return mode


class OneShotStrategy:
    """The encoder alone: ``z_t = E(I_t)``, one cost evaluation (to report the cost)."""

    name = "one-shot"
    uses_network_gradient = False
    needs_encoder = True

    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        z = np.asarray(encoded, dtype=np.float64)[None]
        return z, cost(z).astype(np.float64)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class ESStrategy:
    """Extremum seeking on the latent (``absolute``) or on a correction to the encoder (``residual``).

    Parameters
    ----------
    k : int
        Latent dimension.
    steps_per_frame : int
        ES iterations (cost evaluations) per frame.
    mode : {"absolute", "residual"}
        What the controller tunes.
    residual_width : float
        Residual mode: the correction ``delta`` lives in ``[-residual_width, residual_width]^k``.
    reseed : bool
        Absolute mode: on every new frame, first evaluate the cost of the controller's current
        latent and of the encoder's prediction of the frame (two of the frame's cost evaluations)
        and restart the controller from the encoder's prediction when it fits the new frame better.
        A sample that jumps, or moves faster than ES can follow, is then caught by the encoder
        instead of being chased from the old latent; the choice uses cost values only (no
        network gradient). Default True. Measured with the default model on the ``latent-walk``
        scenario (5 frames): without it ES fell behind the moving truth (E_r up to 0.37 where the
        encoder alone reached 0.03-0.13).
    **es_options
        :class:`controllers.ESParams` fields other than the bounds (``gain``, ``dither``, ...).
    """

    name = "es"
    uses_network_gradient = False

    def __init__(self, k: int, steps_per_frame: int = 100, mode: str = "absolute", residual_width: float = 0.5,
                 reseed: bool = True, **es_options: Any) -> None:
        self.steps_per_frame = _check_steps(steps_per_frame)
        self.mode = _check_mode(mode)
        if not isinstance(reseed, (bool, np.bool_)):
            raise TypeError(f"`reseed` must be a bool, got {type(reseed).__name__}")
        self.reseed = bool(reseed)
        if not 0 < residual_width <= 2:
            raise ValueError(f"`residual_width` must be in (0, 2], got {residual_width!r}")
        self.residual_width = float(residual_width)
        half = self.residual_width if mode == "residual" else 1.0
        self.params = ESParams(lower=-half * np.ones(k), upper=half * np.ones(k), **es_options)
        self.controller = ExtremumSeeking(self.params)
        self.name = f"es-{mode}"

    @property
    def needs_encoder(self) -> bool:
        return self.mode == "residual" or self.reseed

    def _reseeding(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        """The reseeding comparison of a new frame: ``(latents (2, k), costs (2,))``, or empty arrays."""
        k = self.params.k
        if first or self.mode != "absolute" or not self.reseed or self.steps_per_frame < 3:
            return np.empty((0, k)), np.empty(0)
        current = from_unit_box(self.params, self.controller.state.z)
        candidates = np.stack([current, np.clip(np.asarray(encoded, dtype=np.float64), self.params.lower, self.params.upper)])
        values = cost(candidates).astype(np.float64)
        if values[1] < values[0]:
            self.controller.reset(candidates[1])
        return candidates, values

    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        if first and self.mode == "absolute":
            self.controller.reset(np.clip(encoded, self.params.lower, self.params.upper))
        if first and self.mode == "residual":
            self.controller.reset(np.zeros(self.params.k))
        seeds, seed_costs = self._reseeding(cost, encoded, first)
        offset = np.zeros(self.params.k) if self.mode == "absolute" else np.asarray(encoded, dtype=np.float64)
        steps = self.steps_per_frame - len(seed_costs)
        latents = np.empty((steps, self.params.k))
        costs = np.empty(steps)
        for step in range(steps):
            z = np.clip(offset + self.controller.suggest(), -1.0, 1.0)
            value = float(cost(z)[0])
            self.controller.ingest(value)
            latents[step], costs[step] = z, value
        return np.concatenate([seeds, latents]), np.concatenate([seed_costs, costs])

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller = ExtremumSeeking.from_dict(state["controller"])


class HybridStrategy(ESStrategy):
    """Extremum seeking on the latent, then the physics stage on the voxels (the default tracker).

    The latent part is :class:`ESStrategy` unchanged (same controller, same costs); the tracking loop
    (:class:`FrameTracker`) runs :class:`latenttune.tracking.physics_stage.PhysicsStage` with ``physics`` after it on
    every good frame. Neither part uses the network's gradient.

    Parameters
    ----------
    k, mode, residual_width, reseed, **es_options
        As for :class:`ESStrategy`.
    steps_per_frame : int
        ES iterations per frame (default ``HYBRID_STEPS_PER_FRAME`` = 16: the physics stage does the
        fine work; on 8 frames of ``fcc-glide``, one torch thread on a busy 2-core CPU, 100 steps
        gave a hybrid mean E_r of 0.0480 at 1.81 s per frame and 30 steps 0.0484 at 0.99 s; with
        the two-encoder default model, 16 steps against 30 on the five-frame benchmark series gave
        0.162 / 0.160 (``latent-walk`` seed 31), 0.080 / 0.080 (seed 0), 0.086 / 0.086 (``strain``
        seed 7) and 0.076 / 0.073 (``dislocation`` seed 31), about 0.2 s less per frame).
    physics : PhysicsSettings, optional
        The physics stage's settings (default :class:`PhysicsSettings()`).
    """

    def __init__(self, k: int, steps_per_frame: int = HYBRID_STEPS_PER_FRAME, mode: str = "absolute",
                 residual_width: float = 0.5, reseed: bool = True, physics: PhysicsSettings | None = None,
                 **es_options: Any) -> None:
        super().__init__(k, steps_per_frame=steps_per_frame, mode=mode, residual_width=residual_width, reseed=reseed,
                         **es_options)
        physics = PhysicsSettings() if physics is None else physics
        if not isinstance(physics, PhysicsSettings):
            raise TypeError(f"`physics` must be a PhysicsSettings, got {type(physics).__name__}")
        self.physics = physics
        self.name = "hybrid" if mode == "absolute" else f"hybrid-{mode}"


class GradientStrategy:
    """Adam on ``z`` through autograd of the decoder and forward model. **Uses the network gradient.**

    A comparator that shows what a gradient-based tracker would do; the project's method (ES)
    never uses it. Same modes and box as :class:`ESStrategy`.

    Parameters
    ----------
    steps_per_frame : int
        Gradient steps (each one cost evaluation) per frame.
    lr : float
        Adam learning rate (box units).
    mode : {"absolute", "residual"}
    """

    name = "gradient"
    uses_network_gradient = True

    def __init__(self, k: int, steps_per_frame: int = 100, lr: float = 0.02, mode: str = "absolute") -> None:
        self.steps_per_frame = _check_steps(steps_per_frame)
        self.mode = _check_mode(mode)
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr!r}")
        self.lr = float(lr)
        self.k = k
        self.variable = np.zeros(k)
        self.name = f"gradient-{mode}"

    @property
    def needs_encoder(self) -> bool:
        return True

    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "absolute" and first:
            self.variable = np.asarray(encoded, dtype=np.float64).copy()
        offset = np.zeros(self.k) if self.mode == "absolute" else np.asarray(encoded, dtype=np.float64)
        model, device = cost.model, cost.device
        param = torch.tensor(self.variable, dtype=torch.float32, device=device, requires_grad=True)
        base = torch.tensor(offset, dtype=torch.float32, device=device)
        cost_function = COSTS[cost.cost_name]
        optimiser = torch.optim.Adam([param], lr=self.lr)
        latents = np.empty((self.steps_per_frame, self.k))
        costs = np.empty(self.steps_per_frame)
        with torch.enable_grad():
            for step in range(self.steps_per_frame):
                z = (base + param).clamp(-1.0, 1.0)
                value = cost_function(forward(model.decode_tensor(z[None])), cost.intensity, cost.mask)[0]
                latents[step], costs[step] = z.detach().cpu().numpy(), float(value.detach())
                optimiser.zero_grad()
                value.backward()
                optimiser.step()
                with torch.no_grad():
                    param.copy_((base + param).clamp(-1.0, 1.0) - base)
        cost.evaluations += self.steps_per_frame
        self.variable = param.detach().cpu().numpy().astype(np.float64)
        return latents, costs

    def state_dict(self) -> dict[str, Any]:
        return {"variable": self.variable.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.variable = np.asarray(state["variable"], dtype=np.float64)


STRATEGIES = ("hybrid", "es", "one-shot", "gradient")


def make_strategy(name: str, k: int, *, steps_per_frame: int | None = None, mode: str = "absolute",
                  **options: Any) -> Strategy:
    """Build a strategy by name: ``"hybrid"``, ``"es"``, ``"one-shot"`` or ``"gradient"``.

    ``steps_per_frame=None`` takes the strategy's own default (``HYBRID_STEPS_PER_FRAME`` for the
    hybrid, ``ES_STEPS_PER_FRAME`` for ES and the gradient comparator).
    """
    if steps_per_frame is None:
        steps_per_frame = HYBRID_STEPS_PER_FRAME if name == "hybrid" else ES_STEPS_PER_FRAME
    if name == "hybrid":
        return HybridStrategy(k, steps_per_frame=steps_per_frame, mode=mode, **options)
    if name == "es":
        return ESStrategy(k, steps_per_frame=steps_per_frame, mode=mode, **options)
    if name == "gradient":
        return GradientStrategy(k, steps_per_frame=steps_per_frame, mode=mode, **options)
    if name == "one-shot":
        if options:
            raise ValueError(f"the one-shot strategy takes no options, got {sorted(options)}")
        return OneShotStrategy()
    raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}, got {name!r}")


class FrameTracker:
    """The per-frame body of the tracking loop, reusable frame by frame (e.g. by a Bluesky plan).

    Holds what carries over between frames: whether the first good frame is still to come, the
    last estimate (held over skipped frames) and its density. :func:`track` is a loop over
    :meth:`step`, so a live caller that feeds the same frames to a fresh tracker with the same
    strategy settings gets exactly the same records (costs, latents) as :func:`track`.

    Parameters
    ----------
    model : LatentAutoencoder
        The model (eval mode).
    strategy : Strategy
        :class:`ESStrategy`, :class:`OneShotStrategy` or :class:`GradientStrategy`; its state
        evolves with every frame.
    first : bool
        True for a fresh run: the first good frame (re)starts the strategy from the encoder.
        False for a resumed run (the strategy's state must already be loaded).
    held_latent : ndarray, optional
        Estimate to hold over skipped frames before the first good one (resume).
    held_output : ndarray, optional
        Hybrid tracking, resume: the last frame's output, the physics stage's warm start.
    views : {1, 24, 48}
        Symmetric views of the first good frame to choose the model's view from
        (:func:`latenttune.model.views.choose_view`); 1 (the default everywhere: the command line,
        :func:`track`, :func:`latenttune.tracking.replay.replay_series`, the Bluesky plan) keeps the identity.
    view : int
        Resume: the view the run already uses (``record.state["view"]``); 0 = identity.

    Attributes
    ----------
    first : bool
        Whether the next good frame is the run's first.
    last_latent : ndarray or None
        The current estimate (None before any).
    last_density : ndarray or None
        Density of the last record returned by :meth:`step`.
    physics : PhysicsStage or None
        The physics stage of a strategy that has one (:class:`HybridStrategy`).
    evaluations : int
        Cost evaluations so far.
    model : LatentAutoencoder or ViewedAutoencoder
        The model seen through :attr:`view`.
    """

    def __init__(self, model: LatentAutoencoder, strategy: Strategy, *, first: bool = True,
                 held_latent: np.ndarray | None = None, held_output: np.ndarray | None = None,
                 views: int = 1, view: int = 0) -> None:
        self.views = check_views(views)
        self.base_model = model.base if isinstance(model, ViewedAutoencoder) else model
        self.model = viewed(self.base_model, view)
        self.strategy = strategy
        self.first = bool(first)
        self.last_latent = None if held_latent is None else np.asarray(held_latent, dtype=np.float64)
        self.last_density: np.ndarray | None = None
        settings = getattr(strategy, "physics", None)
        device = next(model.parameters()).device
        self.physics = None if settings is None else PhysicsStage(settings, device, previous=held_output)
        self.evaluations = 0

    def step(self, intensity: Any, mask: Any, index: int, time_s: float) -> FrameRecord | None:
        """Process one measured frame.

        Parameters
        ----------
        intensity : array_like, shape (N, N, N)
            Measured intensity.
        mask : array_like of bool, shape (N, N, N), or None
            True = voxel not measured.
        index : int
            Frame index (stored in the record).
        time_s : float
            Frame time in seconds (stored in the record).

        Returns
        -------
        FrameRecord or None
            The frame's record; for a bad frame (not finite, or no counts) a ``"skipped: ..."``
            record that holds the last estimate, or None when there is no estimate to hold yet.
        """
        model, strategy = self.model, self.strategy
        intensity = np.asarray(intensity)
        mask = None if mask is None else np.asarray(mask, dtype=bool)
        start = time.perf_counter()
        problem = _frame_problem(intensity, mask)
        if problem is None and mask is not None and not np.all(np.isfinite(intensity)):
            # non-finite values only in unmeasured voxels, which never enter a cost
            intensity = np.where(mask, 0, intensity)
        if problem is not None:
            log.warning("frame %d skipped (%s); holding the last estimate", index, problem)
            if self.last_latent is None:
                log.warning("frame %d skipped before any estimate exists; nothing to hold", index)
                return None
            if self.last_density is not None:
                held_density = self.last_density
            else:
                with torch.inference_mode():
                    held_density = model.decode(self.last_latent)[0].cpu().numpy()
            held_output = None if self.physics is None else self.physics.previous
            record = FrameRecord(
                index=index, time=time_s, latent=self.last_latent, cost=math.nan, step_costs=np.empty(0),
                encoded=np.full_like(self.last_latent, np.nan), density=held_density,
                seconds=time.perf_counter() - start, status=f"skipped: {problem}", state=self._state(),
                output=held_output,
            )
        else:
            encoded = None
            if self.first and self.views > 1:
                choice = choose_view(self.base_model, intensity, mask, views=self.views)
                encoded = choice.latent
                self.model = model = viewed(self.base_model, choice.index)
                log.info("frame %d: view %d of %d fits best (cost %.5f, identity %.5f)", index, choice.index,
                         self.views, choice.costs[choice.index], choice.costs[0])
            cost = LatentCost(model, intensity, mask)
            chosen = (np.empty((0, model.latent_dim)), np.empty(0))
            others = np.empty((0, model.latent_dim))  # the other encoders' predictions
            if (strategy.needs_encoder or self.first) and (encoded is None or model.encoder_count > 1):
                pick = choose_encoder(model, cost)
                encoded, chosen = pick.latent, (pick.latents, pick.costs)
                others = np.delete(pick.latents, pick.index, axis=0)
                if model.encoder_count > 1:
                    log.info("frame %d: encoder %d fits best (costs %s)", index, pick.index,
                             " ".join(f"{c:.5f}" for c in pick.costs))
            latents, costs = strategy.run_frame(cost, encoded, self.first)
            if len(chosen[1]):  # the encoders' predictions were evaluated too: they count, and may be the best
                latents, costs = np.concatenate([chosen[0], latents]), np.concatenate([chosen[1], costs])
            best = int(np.argmin(costs))
            latent = latents[best]
            with torch.inference_mode():
                density = model.decode(latent)[0].cpu().numpy()
            self.evaluations += len(costs)
            outcome = None
            if self.physics is not None:
                with torch.inference_mode():
                    alternatives = list(model.decode(others).cpu().numpy()) if len(others) else []
                outcome = self.physics.run(density, intensity, mask, index, alternatives=alternatives)
            record = FrameRecord(
                index=index, time=time_s, latent=latent, cost=float(costs[best]), step_costs=costs,
                encoded=encoded if encoded is not None else np.full(model.latent_dim, np.nan),
                density=density, seconds=time.perf_counter() - start, status="ok", state=self._state(),
                physics=outcome, output=None if outcome is None else outcome.density,
            )
            self.first = False
            self.last_latent = latent
        self.last_density = record.density
        log.info("frame %d: cost %.5f after %d evaluations (%.3f s)", index, record.cost, record.steps, record.seconds)
        return record

    @property
    def view(self) -> int:
        """The model's view (index in :data:`latenttune.model.views.VIEWS`; 0 = identity)."""
        return self.model.index if isinstance(self.model, ViewedAutoencoder) else 0

    def _state(self) -> dict[str, Any]:
        return {**self.strategy.state_dict(), "view": self.view}


def track(
    frames: Iterable[Any],
    model: LatentAutoencoder,
    strategy: Strategy,
    *,
    callback: Callable[[FrameRecord], bool | None] | None = None,
    start_index: int = 0,
    held_latent: np.ndarray | None = None,
    held_output: np.ndarray | None = None,
    views: int = 1,
    view: int = 0,
) -> TrackResult:
    """Track a time series of measured frames.

    A loop of :meth:`FrameTracker.step` over ``frames``.

    Parameters
    ----------
    frames : iterable
        Frames with ``intensity`` (N, N, N), ``mask`` (N, N, N) bool or None, and optionally ``time``
        and ``index`` attributes (e.g. :class:`latenttune.io.Frame`), or ``(intensity, mask)`` pairs.
    model : LatentAutoencoder
        The model (eval mode).
    strategy : Strategy
        :class:`ESStrategy`, :class:`OneShotStrategy` or :class:`GradientStrategy`.
    callback : callable, optional
        ``callback(record)`` after each frame; returning True stops the run.
    start_index : int
        Index of the first frame (for a resumed run: the strategy's state must already be loaded,
        and ``held_latent`` the last estimate).
    held_latent : ndarray, optional
        Estimate to hold over skipped frames before the first good one (resume).
    held_output : ndarray, optional
        Hybrid tracking, resume: the last frame's output (the physics stage's warm start).
    views : {1, 24, 48}
        Symmetric views of the first good frame to choose the model's view from (:class:`FrameTracker`).
    view : int
        Resume: the run's view (``record.state["view"]`` of its last record).

    Returns
    -------
    TrackResult
    """
    records: list[FrameRecord] = []
    tracker = FrameTracker(model, strategy, first=start_index == 0, held_latent=held_latent, held_output=held_output,
                           views=views, view=view)
    status, message = 0, "all frames processed"
    for position, frame in enumerate(frames):
        if hasattr(frame, "intensity"):
            intensity, mask = frame.intensity, frame.mask
            index = int(getattr(frame, "index", start_index + position))
            frame_time = float(getattr(frame, "time", index))
        else:  # an (intensity, mask) pair: a tuple's ``index`` is a method, not a frame index
            intensity, mask = frame
            index = start_index + position
            frame_time = float(index)
        record = tracker.step(intensity, mask, index, frame_time)
        if record is None:
            continue
        records.append(record)
        if callback is not None and callback(record):
            status, message = 1, f"stopped by the callback after frame {index}"
            break
    x = records[-1].latent if records else np.full(model.latent_dim, np.nan)
    fun = records[-1].cost if records else math.nan
    return TrackResult(records=records, x=x, fun=fun, nit=tracker.evaluations, status=status, message=message)
