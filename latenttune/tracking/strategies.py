"""The tracking strategies and :func:`make_strategy`.

* :class:`ESStrategy` -- extremum seeking (:mod:`controllers`): cost values only, never the
  network's gradient. Starts from the encoder's prediction of the first frame, then carries on
  from the previous frame (``absolute`` mode), or tunes a correction ``delta`` added to the
  encoder's prediction of each new frame, ``z_t = E(I_t) + delta`` (``residual`` mode).
* :class:`HybridStrategy` (the default of the command line) -- ES as above, then the physics stage
  (:mod:`latenttune.tracking.physics_stage`, which it owns) on the voxels.
* :class:`OneShotStrategy` -- the encoder alone, ``z_t = E(I_t)``: the comparator with no
  controller.
* :class:`GradientStrategy` -- gradient descent on ``z`` through autograd. **Uses the network
  gradient**; a comparator, not the project's method.

Each is a :class:`latenttune.tracking.strategy.Strategy`. The default numbers of evaluations per
frame were chosen on the tracking benchmark (``benchmarks/bench_tracking.py``; figures in
``benchmarks/results/`` and ``docs/model_card.md``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from controllers import Controller, ESParams, ExtremumSeeking
from latenttune.model.latent_cost import LatentCost
from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.tracking.physics_stage import PhysicsOutcome, PhysicsStage
from latenttune.tracking.readback import LatentReadback, ReadbackOutcome, ReadbackSettings
from latenttune.tracking.strategy import Strategy
from latenttune.validation import check_bool, check_choice, check_number

__all__ = [
    "ES_STEPS_PER_FRAME",
    "HYBRID_STEPS_PER_FRAME",
    "MODES",
    "STRATEGIES",
    "ESStrategy",
    "GradientStrategy",
    "HybridStrategy",
    "OneShotStrategy",
    "make_strategy",
]

MODES = ("absolute", "residual")
STRATEGIES = ("hybrid", "es", "one-shot", "gradient")

ES_STEPS_PER_FRAME = 100
"""Default cost evaluations per frame of ES alone and of the gradient comparator."""
HYBRID_STEPS_PER_FRAME = 24
"""Default extremum-seeking evaluations per frame of the hybrid tracker's read-back."""


class OneShotStrategy(Strategy):
    """The encoder alone: ``z_t = E(I_t)``, one cost evaluation (to report the cost)."""

    kind = "one-shot"

    def __init__(self, k: int) -> None:
        super().__init__(k, 1)

    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        z = np.asarray(encoded, dtype=np.float64)[None]
        return z, cost(z).astype(np.float64)

    def options(self) -> dict[str, Any]:
        return {}


class _LatentModes(Strategy):
    """A strategy that tunes ``z`` itself (``absolute``) or a correction to the encoder's prediction (``residual``)."""

    def __init__(self, k: int, steps_per_frame: int, mode: str) -> None:
        super().__init__(k, steps_per_frame)
        self.mode = check_choice("mode", mode, MODES)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.mode}"


class ESStrategy(_LatentModes):
    """Extremum seeking on the latent (``absolute``) or on a correction to the encoder (``residual``).

    The controller is driven through the :class:`controllers.Controller` interface only
    (``suggest``/``ingest``/``position``/``reset``/``to_dict``).

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
        network gradient). Default True (without it ES fell behind a moving truth on the
        ``latent-walk`` scenario; ``docs/model_card.md``).
    **es_options
        :class:`controllers.ESParams` fields other than the bounds (``gain``, ``dither``, ...).
    """

    kind = "es"

    def __init__(self, k: int, steps_per_frame: int = ES_STEPS_PER_FRAME, mode: str = "absolute",
                 residual_width: float = 0.5, reseed: bool = True, **es_options: Any) -> None:
        super().__init__(k, steps_per_frame, mode)
        self.reseed = check_bool("reseed", reseed)
        self.residual_width = check_number("residual_width", residual_width, low=0, high=2, open_low=True)
        half = self.residual_width if mode == "residual" else 1.0
        allowed = {f.name for f in dataclasses.fields(ESParams)} - {"lower", "upper"}
        unknown = sorted(set(es_options) - allowed)
        if unknown:
            raise TypeError(f"unknown ES option(s) {unknown}; the ES options are the fields of controllers.ESParams "
                            "other than `lower` and `upper`")
        self._es_options = dict(es_options)
        self.params = ESParams(lower=-half * np.ones(self.k), upper=half * np.ones(self.k), **es_options)
        self.controller: Controller = ExtremumSeeking(self.params)

    @property
    def needs_encoder(self) -> bool:
        return self.mode == "residual" or self.reseed

    def _reseeding(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        """The reseeding comparison of a new frame: ``(latents (2, k), costs (2,))``, or empty arrays."""
        k = self.params.k
        if first or self.mode != "absolute" or not self.reseed or self.steps_per_frame < 3:
            return np.empty((0, k)), np.empty(0)
        current = self.controller.position()
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

    def load_state_dict(self, state: dict[str, Any], previous_output: np.ndarray | None = None) -> None:
        self.controller = ExtremumSeeking.from_dict(state["controller"])

    def options(self) -> dict[str, Any]:
        return {"steps_per_frame": self.steps_per_frame, "mode": self.mode, "residual_width": self.residual_width,
                "reseed": self.reseed, **self._es_options}

    def settings(self) -> dict[str, Any]:
        params = self.params.to_dict()
        out: dict[str, Any] = {"strategy": self.kind, "mode": self.mode, "steps_per_frame": self.steps_per_frame,
                               "reseed": self.reseed, "residual_width": self.residual_width}
        out.update({key: value for key, value in params.items() if key not in out and key not in ("lower", "upper")})
        out.update({"lower": params["lower"], "upper": params["upper"]})
        return out


class HybridStrategy(Strategy):
    """The default tracker: the physics stage on the voxels, and the latent read back from its output.

    Per frame:

    1. **guide**: the previous frame's latent (the prior: a changing sample changes little) and the
       encoders' prediction are evaluated on the measured pattern; the better fit guides the frame;
    2. **physics stage** (:class:`~latenttune.tracking.physics_stage.PhysicsStage`, owned by the
       strategy): phase retrieval on the voxels, warm-started from the previous output and guided
       by the decoded guide (support, a pull weighted by how little the counts constrain, the guide's
       amplitudes where the detector measured nothing);
    3. **read-back** (:class:`~latenttune.tracking.readback.LatentReadback`): the latent's explicit
       crystal parameters are read off the output, and extremum seeking tunes the learned part on
       the real-space misfit to it. The result is the frame's latent and the next frame's prior.

    No part uses the network's gradient.

    Parameters
    ----------
    k : int
        Latent dimension.
    steps_per_frame : int
        Extremum-seeking evaluations per frame in the read-back (default :data:`HYBRID_STEPS_PER_FRAME`;
        four times as many on the run's first frame: :attr:`ReadbackSettings.first_steps`).
    physics : PhysicsSettings, optional
        The physics stage's settings (default :class:`PhysicsSettings()`).
    readback : bool
        Read the latent back from the output (default). False keeps the guide's latent as the
        frame's latent (the physics stage still runs): the "one-shot + physics" comparator.
    gain, dither : float
        The read-back controller's gain and dither amplitude.
    """

    kind = "hybrid"
    has_physics_stage = True
    min_steps = 0

    def __init__(self, k: int, steps_per_frame: int = HYBRID_STEPS_PER_FRAME, physics: PhysicsSettings | None = None,
                 readback: bool = True, gain: float = ReadbackSettings.gain,
                 dither: float = ReadbackSettings.dither) -> None:
        super().__init__(k, steps_per_frame)
        physics = PhysicsSettings() if physics is None else physics
        if not isinstance(physics, PhysicsSettings):
            raise TypeError(f"`physics` must be a PhysicsSettings, got {type(physics).__name__}")
        self.physics = physics
        self.readback = check_bool("readback", readback)
        self.readback_settings = ReadbackSettings(steps=self.steps_per_frame, gain=gain, dither=dither)
        self._stage: PhysicsStage | None = None
        self._previous: np.ndarray | None = None
        self._readback: LatentReadback | None = None
        self._readback_state: dict[str, Any] | None = None
        self._prior: np.ndarray | None = None

    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        """The guide's candidates: the prior (the previous frame's latent) and, when nothing has evaluated it
        yet (a one-encoder model), the encoders' prediction."""
        candidates = []
        if encoded is not None and cost.evaluations == 0:
            candidates.append(np.asarray(encoded, dtype=np.float64))
        if not first and self._prior is not None:
            candidates.append(self._prior)
        if not candidates:
            return np.empty((0, self.k)), np.empty(0)
        z = np.stack(candidates)
        return z, np.concatenate([cost(row) for row in z]).astype(np.float64)

    def refine(self, decoded: np.ndarray, intensity: np.ndarray, mask: np.ndarray, index: int,
               alternatives: list[np.ndarray], device: torch.device | str = "cpu") -> PhysicsOutcome:
        if self._stage is None:
            self._stage = PhysicsStage(self.physics, device, previous=self._previous)
        return self._stage.run(decoded, intensity, mask, index, alternatives=alternatives)

    def settle(self, model: Any, output: np.ndarray, latent: np.ndarray) -> ReadbackOutcome | None:
        if not self.readback:
            self._prior = np.asarray(latent, dtype=np.float64)
            return None
        if self._readback is None:
            self._readback = LatentReadback(model, self.readback_settings, learned_start=model.learned_start)
            if self._readback_state is not None:
                self._readback.load_state_dict(self._readback_state)
        outcome = self._readback.run(model, output, latent)
        self._prior = outcome.latent
        return outcome

    @property
    def previous_output(self) -> np.ndarray | None:
        return self._previous if self._stage is None else self._stage.previous

    @property
    def cost_slots(self) -> int:
        """At most two encoders, the guide's candidates (prediction and prior) and the read-back latent."""
        return 5

    def state_dict(self) -> dict[str, Any]:
        readback = self._readback.state_dict() if self._readback is not None else self._readback_state
        return {"prior": None if self._prior is None else self._prior.tolist(), "readback": readback}

    def load_state_dict(self, state: dict[str, Any], previous_output: np.ndarray | None = None) -> None:
        self._prior = None if state.get("prior") is None else np.asarray(state["prior"], dtype=np.float64)
        self._readback_state = state.get("readback")
        self._readback = None
        self._previous = None if previous_output is None else np.asarray(previous_output, dtype=np.complex64)
        self._stage = None

    def options(self) -> dict[str, Any]:
        return {"steps_per_frame": self.steps_per_frame, "physics": self.physics, "readback": self.readback,
                "gain": self.readback_settings.gain, "dither": self.readback_settings.dither}

    def settings(self) -> dict[str, Any]:
        return {"strategy": self.kind, "steps_per_frame": self.steps_per_frame, "readback": self.readback,
                "gain": self.readback_settings.gain, "dither": self.readback_settings.dither,
                "physics": dataclasses.asdict(self.physics)}


class GradientStrategy(_LatentModes):
    """Adam on ``z`` through autograd of the decoder and forward model. **Uses the network gradient.**

    A comparator that shows what a gradient-based tracker would do; the project's method (ES)
    never uses it. Same modes and box as :class:`ESStrategy`. The only caller of
    :meth:`latenttune.model.latent_cost.LatentCost.with_gradient`.

    Parameters
    ----------
    steps_per_frame : int
        Gradient steps (each one cost evaluation) per frame.
    lr : float
        Adam learning rate (box units).
    mode : {"absolute", "residual"}
    """

    kind = "gradient"
    uses_network_gradient = True

    def __init__(self, k: int, steps_per_frame: int = ES_STEPS_PER_FRAME, lr: float = 0.02,
                 mode: str = "absolute") -> None:
        super().__init__(k, steps_per_frame, mode)
        self.lr = check_number("lr", lr, low=0, open_low=True)
        self.variable = np.zeros(self.k)

    def run_frame(self, cost: LatentCost, encoded: np.ndarray | None, first: bool) -> tuple[np.ndarray, np.ndarray]:
        if self.mode == "absolute" and first:
            self.variable = np.asarray(encoded, dtype=np.float64).copy()
        offset = np.zeros(self.k) if self.mode == "absolute" else np.asarray(encoded, dtype=np.float64)
        param = torch.tensor(self.variable, dtype=torch.float32, device=cost.device, requires_grad=True)
        base = torch.tensor(offset, dtype=torch.float32, device=cost.device)
        optimiser = torch.optim.Adam([param], lr=self.lr)
        latents = np.empty((self.steps_per_frame, self.k))
        costs = np.empty(self.steps_per_frame)
        with torch.enable_grad():
            for step in range(self.steps_per_frame):
                z = (base + param).clamp(-1.0, 1.0)
                value = cost.with_gradient(z[None])[0]
                latents[step], costs[step] = z.detach().cpu().numpy(), float(value.detach())
                optimiser.zero_grad()
                value.backward()
                optimiser.step()
                with torch.no_grad():
                    param.copy_((base + param).clamp(-1.0, 1.0) - base)
        self.variable = param.detach().cpu().numpy().astype(np.float64)
        return latents, costs

    def state_dict(self) -> dict[str, Any]:
        return {"variable": self.variable.tolist()}

    def load_state_dict(self, state: dict[str, Any], previous_output: np.ndarray | None = None) -> None:
        self.variable = np.asarray(state["variable"], dtype=np.float64)

    def options(self) -> dict[str, Any]:
        return {"steps_per_frame": self.steps_per_frame, "lr": self.lr, "mode": self.mode}

    def settings(self) -> dict[str, Any]:
        return {"strategy": self.kind, "mode": self.mode, "steps_per_frame": self.steps_per_frame, "lr": self.lr}


def make_strategy(name: str, k: int, *, steps_per_frame: int | None = None, mode: str = "absolute",
                  **options: Any) -> Strategy:
    """Build a strategy by name: ``"hybrid"``, ``"es"``, ``"one-shot"`` or ``"gradient"``.

    ``steps_per_frame=None`` takes the strategy's own default (:data:`HYBRID_STEPS_PER_FRAME` for the
    hybrid, :data:`ES_STEPS_PER_FRAME` for ES and the gradient comparator). The one-shot strategy
    takes no option at all (it spends one evaluation per frame).
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "one-shot":
        given = sorted([*options, *(["steps_per_frame"] if steps_per_frame is not None else []),
                        *(["mode"] if mode != "absolute" else [])])
        if given:
            raise ValueError(f"the one-shot strategy takes no options, got {given}")
        return OneShotStrategy(k)
    if steps_per_frame is None:
        steps_per_frame = HYBRID_STEPS_PER_FRAME if name == "hybrid" else ES_STEPS_PER_FRAME
    if name == "hybrid":
        if mode != "absolute":
            raise ValueError("the hybrid strategy has no `mode` (its latent is read back from the physics stage's output)")
        return HybridStrategy(k, steps_per_frame=steps_per_frame, **options)
    kinds = {"es": ESStrategy, "gradient": GradientStrategy}
    return kinds[name](k, steps_per_frame=steps_per_frame, mode=mode, **options)
