"""The physics stage of hybrid tracking: per-run phase retrieval on the voxels, guided by the decoded density.

The latent space holds only what the decoder can draw; the measured pattern holds more. After
extremum seeking has placed the latent on a frame, :class:`PhysicsStage` refines the density on
the voxels with the measured pattern and FFTs alone (no network, no gradient; the kernels are in
:mod:`latenttune.tracking.phase_retrieval`):

* **warm start**: from the previous frame's output (a changing sample changes little between
  frames, so each frame continues the reconstruction of the last one: iterations accumulate over
  the series), unless the decoded density fits the new frame better (a jump); the first frame,
  and any frame after a rejected one, starts from the decoded density;
* **restarts on stagnation**: phase retrieval started from a wrong phase can stall far from the
  crystal (a misplaced dislocation, a strain of the wrong sign) while fitting the counts well above
  their noise. When the frame's result has a Poisson log-likelihood above ``restart_llk``, the
  starts of :func:`restart_plan` run in order while it stays above, and the best fit of all goes
  on;
* **acceptance**: a fixed random ``free_fraction`` of the measured voxels (seeded, the same for the
  whole run) is held out of the modulus constraint, as PyNX does for its free log-likelihood. The
  refined density replaces the decoded one only when it fits the held-out voxels better *and* its
  misfit on all measured voxels (the tracking cost) is no higher. So the hybrid never ends a frame
  with a higher measured misfit than ES alone, and over-fitting the noise is caught by the free
  voxels.

The settings are :class:`latenttune.tracking.physics_settings.PhysicsSettings`; the measured effect
of each choice is in ``benchmarks/results/`` and ``docs/model_card.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latenttune.physics import amplitude_misfit, circular_centre_shifts, forward, free_poisson_llk, poisson_llk
from latenttune.quality import is_stagnated
from latenttune.tracking.phase_retrieval import Measurement, retrieve
from latenttune.tracking.physics_settings import PhysicsSettings

__all__ = ["PhysicsOutcome", "PhysicsStage", "PlannedStart", "RESTART_STARTS", "centred", "guide_weight",
           "restart_plan", "restart_start"]

#: The guide's largest pull per iteration (data that constrain nothing).
GUIDE_WEIGHT_MAX = 0.3
#: Mean counts per measured voxel at which the pull is half its largest (chosen among 10, 25 and 60 on
#: tuning series only, seeds 0-2 at 1e7 and 1e8 photons: see docs/tracking.md).
GUIDE_HALF_COUNTS = 25.0


def centred(density: np.ndarray) -> np.ndarray:
    """``density`` rolled by whole voxels so that its amplitude-weighted centroid sits at index ``n // 2``.

    The rule the model's training densities were centred by (:func:`latenttune.model.losses.centre_shifts`),
    preceded by a circular centring so that an object across the grid's edge is centred too. A
    translation changes no measured intensity, so phase retrieval leaves the object's position free;
    centring its output keeps it where the decoder draws crystals, so that the explicit parameters
    read off it (facet distances from the grid centre) and the next frame's guide (support and pull,
    drawn centred) agree with it.
    """
    d = np.asarray(density)
    amplitude = np.abs(d).astype(np.float64)
    total = float(amplitude.sum())
    if not total > 0 or not np.isfinite(total):
        return d
    shifts = circular_centre_shifts(amplitude)  # then the plain centroid of the object so placed
    for axis, first in enumerate(shifts):
        size = d.shape[axis]
        profile = np.roll(amplitude.sum(axis=tuple(j for j in range(3) if j != axis)), first)
        shifts[axis] = first + int(round(size // 2 - float((profile * np.arange(size)).sum() / total)))
    return np.roll(d, shifts, axis=(0, 1, 2)) if any(shifts) else d


def guide_weight(settings: PhysicsSettings, counts: np.ndarray, unmeasured: np.ndarray, jumped: bool) -> float:
    """The pull towards the guide per iteration: the settings' value, or one derived from the counts.

    Derived: ``w = GUIDE_WEIGHT_MAX / (1 + (c / c0)^2)`` with ``c`` the mean counts per measured voxel
    and ``c0 = GUIDE_HALF_COUNTS``: the relative noise of a measured amplitude is about
    ``1 / (2 sqrt(c))``, so the fewer the counts the less the modulus constraint says and the more
    the prior holds; with plenty of counts the pull vanishes (a prior then only costs accuracy). After a jump (the frame cannot continue the previous output) the phase has to
    be found again and the prior weighs twice as much (at most ``GUIDE_WEIGHT_MAX``).
    """
    if settings.guide_weight is not None:
        return float(settings.guide_weight)
    measured = ~unmeasured
    mean_counts = float(counts[measured].sum(dtype=np.float64)) / max(int(measured.sum()), 1)
    weight = GUIDE_WEIGHT_MAX / (1.0 + (mean_counts / GUIDE_HALF_COUNTS) ** 2)
    return min(GUIDE_WEIGHT_MAX, 2.0 * weight) if jumped else weight


@dataclass(frozen=True)
class PhysicsOutcome:
    """What the physics stage did on one frame.

    Attributes
    ----------
    density : ndarray, shape (n, n, n), complex64
        The frame's output: ``refined`` when accepted, else the decoded density.
    refined : ndarray, shape (n, n, n), complex64
        The refined candidate (on the decoded density's scale).
    accepted : bool
        Whether ``refined`` replaced the decoded density.
    misfit_decoded, misfit_refined : float
        Amplitude misfit (the tracking cost) of each on all measured voxels.
    free_misfit_decoded, free_misfit_refined : float
        Amplitude misfit of each on the held-out voxels.
    warm : bool
        Whether the frame started from the previous frame's output (it does when there is one, warm
        starts are on, and it fits the frame no worse than the decoded density).
    seconds : float
        Wall time of the stage.
    llk : float
        Poisson log-likelihood of ``density`` (PyNX form, about 1 when it explains the counts to
        the noise; :func:`latenttune.physics.poisson_llk`).
    start : str
        Where ``refined`` started: ``"warm"`` (the previous output, first or as a restart), ``"decoded"``, one of
        :data:`RESTART_STARTS` when a restart fitted better, or ``"alternative"`` (``"alternative 2"``
        for the second, ...) when a restart from an alternative candidate did.
    restarts : int
        Restarts run on this frame (0 unless the first refinement stagnated), alternatives included.
    stagnated : bool
        Whether ``llk`` is still above ``restart_llk`` after the restarts: phase retrieval did not
        bring the frame's output to the noise level, so its density is less certain than the
        others' (:mod:`latenttune.quality`).
    llk_free : float
        Free log-likelihood of ``density``: the Poisson LLK on the held-out voxels, the flux scale
        fitted on the others (PyNX's free LLK; :func:`latenttune.physics.free_poisson_llk`).
    """

    density: np.ndarray
    refined: np.ndarray
    accepted: bool
    misfit_decoded: float
    misfit_refined: float
    free_misfit_decoded: float
    free_misfit_refined: float
    warm: bool
    seconds: float
    llk: float = math.nan
    start: str = "decoded"
    restarts: int = 0
    stagnated: bool = False
    llk_free: float = math.nan


#: Starts of a restart, cycled: the decoded density with its phase negated (a dislocation's
#: winding or a strain's sign the encoder got backwards), with a flat phase, with a random phase.
RESTART_STARTS = ("phase-negated", "flat-phase", "random-phase")


def restart_start(decoded: np.ndarray, kind: str, seed: tuple[int, ...] = (0,)) -> np.ndarray:
    """The start of one restart (:data:`RESTART_STARTS`) made from the decoded density."""
    decoded = np.asarray(decoded, dtype=np.complex64)
    if kind == "phase-negated":
        return np.conj(decoded)
    if kind == "flat-phase":
        return np.abs(decoded).astype(np.complex64)
    if kind == "random-phase":
        phase = np.random.default_rng(seed).random(decoded.shape)
        return (np.abs(decoded) * np.exp(2j * np.pi * phase)).astype(np.complex64)
    raise ValueError(f"`kind` must be one of {list(RESTART_STARTS)}, got {kind!r}")


@dataclass(frozen=True, eq=False)
class PlannedStart:
    """One further start a stagnated frame may try (:func:`restart_plan`).

    Attributes
    ----------
    kind : str
        What it is: ``"warm"`` (the previous output), ``"alternative"`` (``"alternative 2"``, ...: another
        candidate density of the frame) or one of :data:`RESTART_STARTS`.
    guide : ndarray, shape (n, n, n), complex64
        The density that gives the first support (and the pull target).
    start : ndarray or None
        Where the iterate starts (None: from the guide).
    iterations : int
        How long it runs.
    """

    kind: str
    guide: np.ndarray
    start: np.ndarray | None
    iterations: int


def restart_plan(settings: PhysicsSettings, decoded: np.ndarray, previous: np.ndarray | None, warm: bool,
                 alternatives: Sequence[np.ndarray], index: int) -> list[PlannedStart]:
    """The starts a stagnated frame tries, in order, while it stays stagnated.

    1. the previous output, when there is one and the frame did not start from it (the decoded
       density fitted better): a short warm run (``iterations``);
    2. each of ``alternatives`` (e.g. the encoders' predictions that did not guide the frame) as
       guide and start, ``cold_iterations`` long;
    3. unless the frame went back to the previous output in 1., ``settings.restarts`` starts made from
       the decoded density (:data:`RESTART_STARTS`, cycled with the frame index so consecutive
       stagnated frames try different ones; a random phase is seeded by settings, frame and
       restart), ``cold_iterations`` long.

    ``settings.restarts == 0`` plans nothing at all.
    """
    if settings.restarts == 0:
        return []
    planned: list[PlannedStart] = []
    if settings.warm_start and not warm and previous is not None and previous.shape == decoded.shape:
        planned.append(PlannedStart("warm", decoded, previous, settings.iterations))
    planned += [PlannedStart("alternative" if j == 0 else f"alternative {j + 1}", a, None, settings.cold_iterations)
                for j, a in enumerate(alternatives)]
    went_back = bool(planned) and planned[0].kind == "warm"
    for r in range(0 if went_back else settings.restarts):
        kind = RESTART_STARTS[(int(index) + r) % len(RESTART_STARTS)]
        start = restart_start(decoded, kind, (settings.seed, int(index), r))
        planned.append(PlannedStart(kind, decoded, start, settings.cold_iterations))
    return planned


class PhysicsStage:
    """The per-run state of the physics stage: the held-out voxels and the previous frame's output.

    Parameters
    ----------
    settings : PhysicsSettings, optional
    device : str or torch.device
        Where to iterate (the model's device).
    previous : ndarray, shape (n, n, n), complex, optional
        Output of the frame before (to resume a run).
    """

    def __init__(self, settings: PhysicsSettings | None = None, device: str | torch.device = "cpu",
                 previous: np.ndarray | None = None) -> None:
        self.settings = PhysicsSettings() if settings is None else settings
        if not isinstance(self.settings, PhysicsSettings):
            raise TypeError(f"`settings` must be a PhysicsSettings, got {type(self.settings).__name__}")
        self.device = torch.device(device)
        self.previous = None if previous is None else np.asarray(previous, dtype=np.complex64)
        self._free: dict[tuple[int, ...], np.ndarray] = {}

    def held_out(self, shape: tuple[int, ...]) -> np.ndarray:
        """The held-out voxels of the run for grid ``shape`` (drawn once from the settings' seed)."""
        if shape not in self._free:
            rng = np.random.default_rng(self.settings.seed)
            self._free[shape] = rng.random(shape) < self.settings.free_fraction
        return self._free[shape]

    def run(self, decoded: np.ndarray, intensity: np.ndarray, mask: np.ndarray | None, index: int = 0,
            alternatives: Sequence[np.ndarray] = ()) -> PhysicsOutcome:
        """Refine one frame's decoded density and decide whether to keep the result.

        Parameters
        ----------
        decoded : ndarray, shape (n, n, n), complex
            ``decode(z)`` of the frame's latent.
        intensity : ndarray, shape (2n, 2n, 2n)
            The frame's checked counts (:func:`latenttune.frame_policy.checked_frame`).
        mask : bool ndarray or None
            True = not measured.
        index : int
            The frame's index: picks the restart starts (and seeds a random one), so a resumed run
            repeats them exactly.
        alternatives : sequence of ndarray, shape (n, n, n), complex
            Other candidate densities of the frame (the tracker passes the encoders' predictions
            that did not guide the frame: the chosen one when the previous frame's latent guided
            it, and a two-encoder model's other one), tried as restarts when the first refinement
            stagnates (:func:`restart_plan`); a frame that does not stagnate never runs them.
        """
        alternatives = [np.asarray(a, dtype=np.complex64) for a in alternatives]
        if any(a.shape != np.shape(decoded) for a in alternatives):
            raise ValueError(f"every one of `alternatives` must have the shape of `decoded` {np.shape(decoded)}")
        start_time = time.perf_counter()
        settings = self.settings
        decoded = np.asarray(decoded, dtype=np.complex64)
        intensity = np.asarray(intensity, dtype=np.float32)
        unmeasured = np.zeros(intensity.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        held = self.held_out(intensity.shape) & ~unmeasured
        judged_on = ~held  # True = not counted: only the held-out voxels count
        measurement = Measurement.prepare(intensity, unmeasured, held, self.device)
        previous = self.previous if self.previous is not None and self.previous.shape == decoded.shape else None
        warm = settings.warm_start and previous is not None
        decoded_intensity = forward(decoded)
        if warm:  # start from the previous output unless the decoded density already fits this frame better
            fits = amplitude_misfit(np.stack([decoded_intensity, forward(previous)]), intensity, unmeasured)
            warm = bool(fits[1] <= fits[0])

        weight = guide_weight(settings, intensity, unmeasured, jumped=previous is not None and not warm)

        def attempt(guide: np.ndarray, start: np.ndarray | None, iterations: int | None) -> tuple[np.ndarray, np.ndarray]:
            x = retrieve(guide, measurement, settings, start=start, iterations=iterations, guide_weight=weight,
                         fill=settings.fill_unmeasured)
            return x, forward(x)

        refined, predicted = attempt(decoded, previous if warm else None, None)
        start, restarts = ("warm" if warm else "decoded"), 0
        misfit = float(amplitude_misfit(predicted, intensity, unmeasured))
        planned: list[PlannedStart] | None = None
        while float(poisson_llk(predicted, intensity, unmeasured)) > settings.restart_llk:
            if planned is None:  # planned only when the frame first stagnates
                planned = restart_plan(settings, decoded, previous, warm, alternatives, index)
            if restarts >= len(planned):
                break
            plan = planned[restarts]
            candidate = attempt(plan.guide, plan.start, plan.iterations)
            restarts += 1
            candidate_misfit = float(amplitude_misfit(candidate[1], intensity, unmeasured))
            if candidate_misfit < misfit:
                (refined, predicted), start, misfit = candidate, plan.kind, candidate_misfit
        moved = centred(refined)  # where the decoder draws crystals (a translation changes no intensity)
        if moved is not refined:
            refined, predicted = moved, forward(moved)
        pair = np.stack([decoded_intensity, predicted])
        misfits = amplitude_misfit(pair, intensity, unmeasured)
        free = amplitude_misfit(pair, intensity, judged_on)
        accepted = bool(free[1] < free[0] and misfits[1] <= misfits[0] and np.isfinite(refined).all())
        output = refined if accepted else centred(decoded)
        self.previous = output
        llk = float(poisson_llk(pair[1 if accepted else 0], intensity, unmeasured))
        llk_free = free_poisson_llk(pair[1 if accepted else 0], intensity, unmeasured, held)
        return PhysicsOutcome(
            density=output, refined=refined, accepted=accepted, misfit_decoded=float(misfits[0]),
            misfit_refined=float(misfits[1]), free_misfit_decoded=float(free[0]), free_misfit_refined=float(free[1]),
            warm=bool(warm), seconds=time.perf_counter() - start_time, llk=llk, start=start, restarts=restarts,
            stagnated=is_stagnated(llk, settings.restart_llk), llk_free=llk_free,
        )
