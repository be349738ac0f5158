"""Train a cycle encoder: a second encoder that inverts the model's own decoder.

The model's encoder is trained on simulated crystals. A sample inside the decoder's latent space
(the ``latent-walk`` scenario; any sample the decoder draws well) is then often predicted far from
its latent, and the controller starts from a poor guess. The cycle encoder is a copy of the
model's encoder trained on the decoder's own output: each step draws latents ``z`` uniformly in
the latent box the encoder uses (:func:`latenttune.model.latent_walk.latent_spread`, shrunk to
``margin`` of its half-width, as the walk is), decodes them, measures their patterns with Poisson
noise and a beamstop (:class:`sim.Detector`, photons log-uniform in ``photons``) and minimises
``mean(((E_cycle(I) - z) / box_width)^2)``. The decoder and the model's encoder stay fixed (the
model is in eval mode, so the encoder's normalisation keeps its statistics), so everything the
model did before it still does; the tracker asks both encoders and keeps the better-fitting
prediction (:mod:`latenttune.model.encoders`).

Resumable: ``OUT.last.pt`` (see :func:`latenttune.model.training.last_path`) holds the optimiser, the
learning-rate schedule and the random generator every ``checkpoint_every`` steps, and a resumed
run continues the same stream (same weights as an uninterrupted run on the same machine).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latenttune.model.latent_walk import latent_spread
from latenttune.model.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from latenttune.model.network import LatentAutoencoder
from latenttune.physics import forward
from latenttune.model.training import TrainProgress, TrainResult, last_path
from latenttune.validation import check_int, check_number
from sim import Detector

log = logging.getLogger(__name__)

__all__ = ["CycleConfig", "train_cycle_encoder", "with_cycle_encoder"]


@dataclass(frozen=True)
class CycleConfig:
    """Settings of :func:`train_cycle_encoder`.

    Attributes
    ----------
    steps : int
        Optimisation steps.
    batch_size : int
        Latents per step.
    lr, lr_min : float
        Adam's learning rate, cosine-annealed from ``lr`` to ``lr_min`` over ``steps``.
    photons : (float, float)
        Range of the total counts per pattern, drawn log-uniformly.
    beamstop : float
        Beamstop radius (voxels) of every pattern.
    margin : float
        Fraction of the latent box's half-width the latents are drawn from, in ``(0, 1]``.
    seed : int
        Seed of the latents, photon counts and noise.
    checkpoint_every : int
        Steps between resumable checkpoints.
    """

    steps: int = 7000
    batch_size: int = 8
    lr: float = 1e-4
    lr_min: float = 1e-6
    photons: tuple[float, float] = (1e7, 1e9)
    beamstop: float = 1.5
    margin: float = 0.9
    seed: int = 1000
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_int(name, getattr(self, name), low=1)
        check_int("seed", self.seed, low=0)
        lr_min = check_number("lr_min", self.lr_min, low=0, open_low=True)
        check_number("lr", self.lr, low=lr_min)  # 0 < lr_min <= lr
        photons = tuple(float(p) for p in self.photons)
        if len(photons) != 2 or not all(math.isfinite(p) for p in photons) or not 0 < photons[0] <= photons[1]:
            raise ValueError(f"`photons` must be (low, high) with 0 < low <= high, got {self.photons!r}")
        object.__setattr__(self, "photons", photons)
        check_number("beamstop", self.beamstop, low=0)
        check_number("margin", self.margin, low=0, high=1, open_low=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), for checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def with_cycle_encoder(model: LatentAutoencoder) -> LatentAutoencoder:
    """A copy of ``model`` with a cycle encoder initialised as a copy of its encoder (eval mode)."""
    if model.encoder_count > 1:
        raise ValueError("`model` already has a cycle encoder")
    config = dataclasses.replace(model.config, cycle_encoder=True)
    twin = LatentAutoencoder(config)
    state = model.state_dict()
    state.update({"cycle_encoder." + k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    twin.load_state_dict(state)
    return twin.eval().to(next(model.parameters()).device)


def _batch(model: LatentAutoencoder, rng: np.random.Generator, centre: np.ndarray, half: np.ndarray,
           config: CycleConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's ``(latents (B, k), counts (B, N, N, N), mask (N, N, N))``, drawn from ``rng``."""
    B, N = config.batch_size, model.config.N
    z = (centre + half * config.margin * rng.uniform(-1, 1, size=(B, len(centre)))).astype(np.float32)
    with torch.inference_mode():
        density = model.decode_tensor(torch.from_numpy(z)).cpu().numpy()
    counts = np.empty((B, N, N, N), np.float32)
    mask = None
    low, high = np.log10(config.photons)
    for b in range(B):
        detector = Detector(photons=float(10 ** rng.uniform(low, high)), beamstop_radius=config.beamstop)
        measured = detector.measure(forward(density[b]), rng)
        counts[b], mask = measured.counts, measured.mask
    return torch.from_numpy(z), torch.from_numpy(counts), torch.from_numpy(np.asarray(mask))


def _resume(path: Path, config: CycleConfig, base_checksum: str) -> dict[str, Any]:
    state = load_checkpoint(path)
    stored = state["extra"].get("cycle_encoder", {})
    if stored.get("base_checksum") != base_checksum:
        raise ValueError(f"cannot resume from {str(path)!r}: it started from a different model")
    if {**stored.get("config", {}), "steps": None} != {**config.to_dict(), "steps": None}:
        raise ValueError(f"cannot resume from {str(path)!r}: it was trained with different settings")
    if stored["step"] >= config.steps:
        raise ValueError(f"`steps` must exceed the {stored['step']} steps {str(path)!r} has already done, got {config.steps}")
    return state


def train_cycle_encoder(
    loaded: LoadedModel,
    out: str | Path,
    config: CycleConfig | None = None,
    *,
    resume: bool = False,
    callback: Callable[[TrainProgress], bool | None] | None = None,
) -> TrainResult:
    """Train a cycle encoder for ``loaded`` and write the two-encoder model to ``out``.

    Parameters
    ----------
    loaded : LoadedModel
        The model (single encoder) whose decoder the new encoder learns to invert; nothing of it
        changes.
    out : str or Path
        Checkpoint of the two-encoder model (written at the end); ``OUT.last.pt`` is the resumable one.
    config : CycleConfig, optional
        Training settings (defaults: those of the shipped model).
    resume : bool
        Continue from ``OUT.last.pt`` (same model, same settings but ``steps``).
    callback : callable, optional
        ``callback(TrainProgress)`` after every step; returning True stops after a resumable checkpoint.

    Returns
    -------
    TrainResult
        ``fun`` is the final running loss (mean squared latent error in box widths).
    """
    config = config or CycleConfig()
    if not isinstance(config, CycleConfig):
        raise TypeError(f"`config` must be a CycleConfig, got {type(config).__name__}")
    out = Path(out)
    last = last_path(out)
    low, high = (np.asarray(a, dtype=np.float64) for a in latent_spread(loaded))
    centre, half = (low + high) / 2, (high - low) / 2
    width = torch.tensor(high - low, dtype=torch.float32)
    model = with_cycle_encoder(loaded.model)
    params = list(model.cycle_encoder.parameters())
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(params, lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.steps, eta_min=config.lr_min)
    rng = np.random.default_rng(config.seed)
    step, running, elapsed0 = 0, math.nan, 0.0
    if resume:
        state = _resume(last, config, loaded.checksum)
        model.load_state_dict(state["state_dict"])
        optimiser.load_state_dict(state["extra_state"]["optimiser"])
        schedule.load_state_dict(json.loads(state["extra_state"]["schedule"]))
        schedule.T_max = config.steps  # a lengthened or shortened run recomputes the decay from here
        rng.bit_generator.state = json.loads(state["extra_state"]["rng"])
        stored = state["extra"]["cycle_encoder"]
        step, running, elapsed0 = stored["step"], stored["loss"], stored["elapsed_s"]
        log.info("resumed the cycle encoder at step %d of %d", step, config.steps)
    info = {"config": config.to_dict(), "base_checksum": loaded.checksum, "base_path": str(loaded.path),
            "hardware": platform.processor() or platform.machine(), "torch": torch.__version__}
    extra = {**loaded.extra, "latent_spread": {"low": low.tolist(), "high": high.tolist()}}

    def save(path: Path, resumable: bool) -> None:
        cycle = {**info, "step": step, "loss": running, "elapsed_s": elapsed}
        extra_state = None
        if resumable:
            extra_state = {"optimiser": optimiser.state_dict(), "schedule": json.dumps(schedule.state_dict()),
                           "rng": json.dumps(rng.bit_generator.state)}
        save_checkpoint(path, model, recipe=loaded.recipe, extra={**extra, "cycle_encoder": cycle},
                        extra_state=extra_state)

    start = time.perf_counter()
    elapsed = elapsed0
    status, message = 0, f"trained the cycle encoder for {config.steps} steps"
    while step < config.steps:
        z, counts, mask = _batch(model, rng, centre, half, config)
        with torch.enable_grad(), torch.inference_mode(False):
            predicted = model.encode_tensor(counts, mask, 1)
            loss = (((predicted - z) / width) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        value = float(loss.detach())
        running = value if math.isnan(running) else 0.98 * running + 0.02 * value
        elapsed = elapsed0 + time.perf_counter() - start
        stop = bool(callback(TrainProgress(step, config.steps, running, schedule.get_last_lr()[0], elapsed))) if callback else False
        if step % config.checkpoint_every == 0 or step == config.steps or stop:
            save(last, resumable=True)
        if stop:
            status, message = 1, f"stopped by the callback after step {step}"
            break
    if step == config.steps:
        save(out, resumable=False)
    return TrainResult(out=out, nit=step, fun=running, validation={}, elapsed_s=elapsed, status=status, message=message)
