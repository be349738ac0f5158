"""Static-scan mode: one measured volume, several starts, the best by free log-likelihood.

Phase retrieval from one start can stall far from the crystal; PyNX users run several starts and
keep the runs whose free log-likelihood is lowest. :func:`static_scan` does that with the model's
help: the starts are the encoders' predictions, those of other symmetric views of the pattern
(each encoded in its view and brought back), and random latents of the model's box (or any
densities the caller adds). Each start is refined by the physics stage on the voxels (a fresh
:class:`~latenttune.tracking.physics_stage.PhysicsStage`: the same held-out voxels for every start,
no warm start, no restart), and the refinements are ranked by their free log-likelihood, the
Poisson LLK on the held-out voxels (:func:`latenttune.physics.free_poisson_llk`): the voxels none
of them fitted, so the ranking does not reward over-fitting. The best is kept; optionally the
best few, aligned to it (translation, global phase and the twin removed, as for the real-space
error), are averaged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latenttune.metrics import real_space_error
from latenttune.model.views import viewed
from latenttune.physics import forward, free_poisson_llk, poisson_llk
from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.tracking.physics_stage import PhysicsStage
from latenttune.validation import check_int

log = logging.getLogger(__name__)

__all__ = ["StaticRun", "StaticScan", "StaticStart", "static_scan", "static_starts"]


@dataclass(frozen=True, eq=False)
class StaticStart:
    """A start: its name, its density (object grid, laboratory frame) and its latent (NaN for a given density)."""

    name: str
    density: np.ndarray
    latent: np.ndarray


@dataclass(frozen=True, eq=False)
class StaticRun:
    """One start refined: the refinement, its LLK on the fitted voxels and its free LLK."""

    start: StaticStart
    density: np.ndarray
    llk: float
    llk_free: float
    seconds: float


@dataclass(frozen=True, eq=False)
class StaticScan:
    """The outcome of :func:`static_scan`.

    Attributes
    ----------
    runs : list of StaticRun
        Every start's refinement, lowest free LLK first.
    average : ndarray or None
        The aligned average of the best ``average`` runs (None when not asked for).
    """

    runs: list[StaticRun]
    average: np.ndarray | None

    @property
    def best(self) -> StaticRun:
        """The run with the lowest free LLK."""
        return self.runs[0]

    def table(self) -> str:
        """The ranking, one line per start."""
        return "\n".join(f"{i + 1:3d}. {r.start.name:<22s} free LLK {r.llk_free:8.3f}  LLK {r.llk:8.3f}  "
                         f"{r.seconds:5.1f} s" for i, r in enumerate(self.runs))


def static_starts(model: torch.nn.Module, intensity: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, *,
                  views: int = 4, random: int = 2) -> list[StaticStart]:
    """The model's starts for a volume: every encoder's prediction, ``views - 1`` further views, ``random`` random latents.

    Parameters
    ----------
    model : LatentAutoencoder
    intensity, mask : ndarray
        The prepared volume (counts) and its mask (True = not measured).
    rng : numpy.random.Generator
        Draws the random latents.
    views : int
        Symmetric views to encode the pattern in (the identity first; at most 48).
    random : int
        Random latents, uniform in the model's box.
    """
    check_int("views", views, low=1, high=48)
    check_int("random", random, low=0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    starts = []
    with torch.inference_mode():
        for v in range(views):
            seen = model if v == 0 else viewed(model, v)
            for e in range(model.encoder_count):
                z = seen.encode(intensity, mask, encoder=e)
                name = ("encoder" if v == 0 else f"view {v}") + (f" {e}" if model.encoder_count > 1 else "")
                starts.append(StaticStart(name, seen.decode(z)[0].cpu().numpy(), z[0].cpu().numpy()))
        low, high = (np.asarray(b, dtype=np.float64) for b in model.latent_bounds)
        for r in range(random):
            z = rng.uniform(low, high)
            starts.append(StaticStart(f"random {r}", model.decode(z.astype(np.float32))[0].cpu().numpy(), z))
    return starts


def static_scan(intensity: np.ndarray, mask: np.ndarray | None, starts: Sequence[StaticStart], *,
                settings: PhysicsSettings | None = None, average: int = 0) -> StaticScan:
    """Refine every start on the volume and rank them by free LLK (see the module docstring).

    Parameters
    ----------
    intensity, mask : ndarray
        The prepared volume (counts, ``(N, N, N)``) and its mask (True = not measured).
    starts : sequence of StaticStart
        At least one (:func:`static_starts`, plus any of the caller's).
    settings : PhysicsSettings, optional
        The refinement (its ``iterations``, ``cold_iterations`` and held-out voxels); restarts are off:
        the starts are the restarts.
    average : int
        Average the best ``average`` runs after aligning them to the best (0 or 1: no average).
    """
    starts = list(starts)
    if not starts or not all(isinstance(s, StaticStart) for s in starts):
        raise ValueError("`starts` must hold at least one StaticStart")
    check_int("average", average, low=0, high=len(starts))
    settings = PhysicsSettings(restarts=0) if settings is None else settings
    intensity = np.asarray(intensity, dtype=np.float32)
    unmeasured = np.zeros(intensity.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    runs = []
    for start in starts:
        began = time.perf_counter()
        stage = PhysicsStage(settings)  # fresh: no warm start; the same held-out voxels (the settings' seed)
        outcome = stage.run(np.asarray(start.density, dtype=np.complex64), intensity, unmeasured)
        held = stage.held_out(intensity.shape)
        predicted = forward(outcome.refined)
        run = StaticRun(start, outcome.refined, float(poisson_llk(predicted, intensity, unmeasured)),
                        free_poisson_llk(predicted, intensity, unmeasured, held), time.perf_counter() - began)
        log.info("start %s: free LLK %.3f, LLK %.3f", start.name, run.llk_free, run.llk)
        runs.append(run)
    runs.sort(key=lambda r: (not np.isfinite(r.llk_free), r.llk_free))
    mean = None
    if average > 1:
        best = runs[0].density
        aligned = [best] + [real_space_error(best, r.density).aligned for r in runs[1:average]]
        scales = [np.vdot(best, a) / max(np.vdot(a, a).real, 1e-30) for a in aligned]  # common phase and scale
        mean = np.mean([s * a for s, a in zip(scales, aligned)], axis=0).astype(np.complex64)
    return StaticScan(runs, mean)
