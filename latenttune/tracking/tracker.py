"""The real-time tracking loop: keep a latent vector locked on a changing sample.

For each measured frame the loop checks it once (:func:`latenttune.frame_policy.checked_frame`),
builds the frame's cost ``C(z) = amplitude misfit of |F pad(decode(z))|^2 against the frame``
(masked, flux-scale invariant; :class:`latenttune.model.latent_cost.LatentCost`) and lets a
*strategy* (:mod:`latenttune.tracking.strategies`) improve the latent; the strategy may then work on
the voxels (the hybrid's physics stage). :class:`FrameTracker` is one frame, as a few named steps:

1. :meth:`~FrameTracker._skip` -- a frame that :attr:`~latenttune.frame_policy.Frame.problem`
   rejects (not finite, negative, no counts) is recorded as ``"skipped: <reason>"`` and the last
   estimate is held;
2. :meth:`~FrameTracker._choose_view` -- on the first good frame the encoder may be asked in
   ``views`` symmetric views of the pattern (:mod:`latenttune.model.views`); the run then works
   with the model seen through the view that fits best (densities stay in the laboratory frame;
   the view's index is stored in every record's ``state`` as ``"view"``, so a resumed run keeps it);
3. :meth:`~FrameTracker._predict` -- every encoder's prediction, the best-fitting one handed to the
   strategy (:func:`latenttune.model.encoders.choose_encoder`; two cost evaluations for a
   two-encoder model, part of the frame's record);
4. the strategy's :meth:`~latenttune.tracking.strategy.Strategy.run_frame`; the best latent
   evaluated is the frame's estimate, decoded once (the cost keeps the density it evaluated);
5. the strategy's :meth:`~latenttune.tracking.strategy.Strategy.refine` (the hybrid's physics stage,
   which also gets the encoders' predictions that did not guide the frame, to try when it stagnates);
6. the strategy's :meth:`~latenttune.tracking.strategy.Strategy.settle` (the hybrid reads its latent
   back from the physics stage's output): the frame's final latent, its measured cost evaluated once.

The latent never leaves the model's box ``[-1, 1]^k``. :func:`track` is a loop over frames; it
returns a :class:`TrackResult` (one vocabulary for every strategy) and calls ``callback(record)``
after each frame; a callback returning True stops the run (``status`` 1). Live callers (the
Bluesky plan :func:`latenttune.bluesky.track_sample`) drive a :class:`FrameTracker` one frame at a
time, so a stored live run replays to the same costs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from latenttune.frame_policy import Frame, checked_frame
from latenttune.model.encoders import choose_encoder
from latenttune.model.latent_cost import LatentCost
from latenttune.model.network import LatentAutoencoder
from latenttune.model.views import ViewedAutoencoder, check_views, choose_view, viewed
from latenttune.tracking.physics_stage import PhysicsOutcome
from latenttune.tracking.readback import ReadbackOutcome
from latenttune.tracking.strategy import Strategy, check_strategy
from latenttune.validation import check_int

log = logging.getLogger(__name__)

__all__ = ["FrameRecord", "TrackResult", "FrameTracker", "track"]


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
    density : ndarray, shape (n, n, n), complex64, or None
        ``decode(latent)`` (None in the records a streaming :func:`track` keeps).
    seconds : float
        Wall time spent on the frame (encode, evaluations, decode, second stage).
    status : str
        ``"ok"`` or ``"skipped: <reason>"``.
    state : dict
        The strategy's serialisable state after the frame (for exact resume), with the tracker's
        ``"view"`` (index in :data:`latenttune.model.symmetry.VIEWS` of the model's view; 0 = identity).
    physics : PhysicsOutcome or None
        The physics stage's outcome on this frame (hybrid tracking; None otherwise and on a
        skipped frame).
    output : ndarray or None
        The frame's reconstruction when it is not ``density`` (hybrid tracking: the physics
        stage's output, held over a skipped frame); see :attr:`output_density`.
    frame : Frame or None
        The checked measured frame (given to the callback; None in the records :func:`track` keeps).
    readback : ReadbackOutcome or None
        The latent read back from the frame's output (the hybrid tracker), or None.
    """

    index: int
    time: float
    latent: np.ndarray
    cost: float
    step_costs: np.ndarray
    encoded: np.ndarray
    density: np.ndarray | None
    seconds: float
    status: str
    state: dict[str, Any] = field(default_factory=dict)
    physics: PhysicsOutcome | None = None
    output: np.ndarray | None = None
    frame: Frame | None = None
    readback: ReadbackOutcome | None = None

    @property
    def output_density(self) -> np.ndarray | None:
        """The frame's reconstruction: the physics stage's output (hybrid tracking), else ``density``."""
        return self.output if self.output is not None else self.density

    @property
    def steps(self) -> int:
        """Cost evaluations spent on the frame."""
        return int(len(self.step_costs))

    def light(self, keep_densities: bool = True) -> FrameRecord:
        """This record without the measured frame (and without the densities unless ``keep_densities``)."""
        if keep_densities:
            return dataclasses.replace(self, frame=None)
        physics = None if self.physics is None else dataclasses.replace(self.physics, density=None, refined=None)
        readback = None if self.readback is None else dataclasses.replace(self.readback, density=None, fit=None)
        return dataclasses.replace(self, frame=None, density=None, output=None, physics=physics, readback=readback)


@dataclass
class TrackResult:
    """Outcome of :func:`track` (scipy-style vocabulary: ``x``, ``fun``, ``nit``, ``status``, ``message``).

    Attributes
    ----------
    records : list of FrameRecord
        One per processed frame (without the measured frames; without densities when streamed).
    x : ndarray, shape (k,)
        The final latent.
    fun : float
        The final frame's cost.
    nit : int
        Cost evaluations in all.
    status : int
        0 all frames processed; 1 stopped by the callback.
    message : str
    skipped : Counter
        Frames skipped, by reason (those before the first estimate, which get no record, included).
    """

    records: list[FrameRecord]
    x: np.ndarray
    fun: float
    nit: int
    status: int
    message: str
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def latent(self) -> np.ndarray:
        """Latent per frame, shape (T, k)."""
        return np.stack([r.latent for r in self.records])

    @property
    def cost(self) -> np.ndarray:
        """Final cost per frame, shape (T,)."""
        return np.array([r.cost for r in self.records])

    def _densities(self, what: str) -> np.ndarray:
        values = [getattr(r, what) for r in self.records]
        if any(v is None for v in values):
            raise ValueError("the densities were not kept (track(..., keep_densities=False) streams them to its "
                             "callback); read them from the results file")
        return np.stack(values)

    @property
    def density(self) -> np.ndarray:
        """Decoded density per frame, shape (T, n, n, n)."""
        return self._densities("density")

    @property
    def output_density(self) -> np.ndarray:
        """Reconstruction per frame (the physics stage's output in hybrid tracking), shape (T, n, n, n)."""
        return self._densities("output_density")

    @property
    def seconds(self) -> np.ndarray:
        """Wall time per frame, shape (T,)."""
        return np.array([r.seconds for r in self.records])


def _check_model(model: Any) -> LatentAutoencoder:
    if isinstance(model, ViewedAutoencoder):
        return model.base
    if not isinstance(model, LatentAutoencoder):
        raise TypeError(f"`model` must be a LatentAutoencoder (load_model(...).model), got {type(model).__name__}")
    return model


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
        A strategy of :mod:`latenttune.tracking.strategies`; its state evolves with every frame (a
        resumed run loads its state first, :meth:`Strategy.load_state_dict`).
    first : bool
        True for a fresh run: the first good frame (re)starts the strategy from the encoder.
        False for a resumed run.
    held_latent : ndarray, optional
        Estimate to hold over skipped frames before the first good one (resume).
    views : {1, 24, 48}
        Symmetric views of the first good frame to choose the model's view from
        (:func:`latenttune.model.views.choose_view`); 1 (the default everywhere) keeps the identity.
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
    evaluations : int
        Cost evaluations so far.
    skipped : Counter
        Frames skipped so far, by reason.
    model : LatentAutoencoder or ViewedAutoencoder
        The model seen through :attr:`view`.
    """

    def __init__(self, model: LatentAutoencoder, strategy: Strategy, *, first: bool = True,
                 held_latent: np.ndarray | None = None, views: int = 1, view: int = 0) -> None:
        self.views = check_views(views)
        self.base_model = _check_model(model)
        self.model = viewed(self.base_model, view)
        self.strategy = check_strategy(strategy, self.base_model.latent_dim)
        self.first = bool(first)
        if held_latent is not None:
            held_latent = np.asarray(held_latent, dtype=np.float64)
            if held_latent.shape != (self.base_model.latent_dim,):
                raise ValueError(f"`held_latent` must have shape ({self.base_model.latent_dim},), got "
                                 f"{held_latent.shape}")
        self.last_latent = held_latent
        self.last_density: np.ndarray | None = None
        self.evaluations = 0
        self.skipped: Counter[str] = Counter()
        self._device = next(self.base_model.parameters()).device

    def step(self, intensity: Any, mask: Any = None, index: int = 0, time_s: float = 0.0) -> FrameRecord | None:
        """Process one measured frame.

        Parameters
        ----------
        intensity : array_like, shape (N, N, N), or Frame
            Measured intensity (a :class:`~latenttune.frame_policy.Frame` is used as it is).
        mask : array_like of bool, shape (N, N, N), or None
            True = voxel not measured.
        index : int
            Frame index (stored in the record; a Frame's own index wins).
        time_s : float
            Frame time in seconds (stored in the record; a Frame's own time wins).

        Returns
        -------
        FrameRecord or None
            The frame's record; for a bad frame (not finite, or no counts) a ``"skipped: ..."``
            record that holds the last estimate, or None when there is no estimate to hold yet.
        """
        start = time.perf_counter()
        frame = checked_frame(intensity, mask, self.base_model.config.N, index=index, time=time_s)
        if frame.problem is not None:
            record = self._skip(frame, start)
        else:
            record = self._track(frame, start)
        if record is not None:
            self.last_density = record.density
            log.info("frame %d: cost %.5f after %d evaluations (%.3f s)", record.index, record.cost, record.steps,
                     record.seconds)
        return record

    def _skip(self, frame: Frame, start: float) -> FrameRecord | None:
        """Step 1: a frame that cannot be tracked holds the last estimate (None before any)."""
        self.skipped[frame.problem] += 1
        log.warning("frame %d skipped (%s); holding the last estimate", frame.index, frame.problem)
        if self.last_latent is None:
            log.warning("frame %d skipped before any estimate exists; nothing to hold", frame.index)
            return None
        held_density = self.last_density
        if held_density is None:
            with torch.inference_mode():
                held_density = self.model.decode(self.last_latent)[0].cpu().numpy()
        return FrameRecord(
            index=frame.index, time=frame.time, latent=self.last_latent, cost=math.nan, step_costs=np.empty(0),
            encoded=np.full_like(self.last_latent, np.nan), density=held_density,
            seconds=time.perf_counter() - start, status=f"skipped: {frame.problem}", state=self._state(),
            output=self.strategy.previous_output, frame=frame,
        )

    def _choose_view(self, frame: Frame) -> np.ndarray:
        """Step 2: adopt the symmetric view whose prediction fits the first good frame best; its latent."""
        choice = choose_view(self.base_model, frame.intensity, frame.mask, views=self.views)
        self.model = viewed(self.base_model, choice.index)
        log.info("frame %d: view %d of %d fits best (cost %.5f, identity %.5f)", frame.index, choice.index,
                 self.views, choice.costs[choice.index], choice.costs[0])
        return choice.latent

    def _predict(self, cost: LatentCost, encoded: np.ndarray | None, index: int
                 ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Step 3: the encoders' chosen prediction, the evaluations it took, and every prediction's density.

        The densities are those the cost evaluation decoded, the chosen prediction's first (empty for a
        single-encoder model, whose prediction is not evaluated here).
        """
        model = self.model
        k = model.latent_dim
        if not ((self.strategy.needs_encoder or self.first) and (encoded is None or model.encoder_count > 1)):
            return encoded, np.empty((0, k)), np.empty(0), []
        pick = choose_encoder(model, cost)
        if model.encoder_count > 1:
            log.info("frame %d: encoder %d fits best (costs %s)", index, pick.index,
                     " ".join(f"{c:.5f}" for c in pick.costs))
        return (pick.latent, pick.latents if len(pick.costs) else np.empty((0, k)), pick.costs,
                pick.densities_chosen_first())

    @staticmethod
    def _alternatives(cost: LatentCost, latent: np.ndarray, encoded: np.ndarray | None,
                      predictions: list[np.ndarray]) -> list[np.ndarray]:
        """The densities a stagnated frame may restart from: every encoder prediction that did not guide it.

        When the previous frame's latent guides the frame, the chosen prediction comes first: it is
        the one start that does not depend on what the tracker has followed so far, so a refinement
        stuck in a wrong basin (which the latent read back from it follows) can leave it.
        """
        if encoded is None or np.array_equal(latent, encoded):
            return predictions[1:]
        chosen = predictions[0] if predictions else cost.density_of(encoded)
        return [chosen] + predictions[1:]

    def _track(self, frame: Frame, start: float) -> FrameRecord:
        """Steps 2 to 5 on a good frame."""
        encoded = self._choose_view(frame) if self.first and self.views > 1 else None
        cost = LatentCost(self.model, frame.intensity, frame.mask)
        encoded, predicted, predicted_costs, predictions = self._predict(cost, encoded, frame.index)
        latents, costs = self.strategy.run_frame(cost, encoded, self.first)  # step 4
        # the encoders' predictions were evaluated too: they count, and may be the best
        latents, costs = np.concatenate([predicted, latents]), np.concatenate([predicted_costs, costs])
        best = int(np.argmin(costs))
        latent = latents[best]
        density = cost.density_of(latent)
        self.evaluations += len(costs)
        others = self._alternatives(cost, latent, encoded, predictions) if self.strategy.has_physics_stage else []
        outcome = self.strategy.refine(density, frame.intensity, frame.mask, frame.index, others,  # step 5
                                       device=self._device)
        frame_cost = float(costs[best])
        readback = self.strategy.settle(self.model, density if outcome is None else outcome.density, latent)  # 6
        if readback is not None:  # the frame's latent read back from the output: its measured cost too
            latent, density = readback.latent, readback.density
            measured = cost.density_costs(torch.as_tensor(density[None])).astype(np.float64)  # decoded already
            self.evaluations += 1
            costs, frame_cost = np.concatenate([costs, measured]), float(measured[0])
        record = FrameRecord(
            index=frame.index, time=frame.time, latent=latent, cost=frame_cost, step_costs=costs,
            encoded=encoded if encoded is not None else np.full(self.model.latent_dim, np.nan),
            density=density, seconds=time.perf_counter() - start, status="ok", state=self._state(),
            physics=outcome, output=None if outcome is None else outcome.density, frame=frame, readback=readback,
        )
        self.first = False
        self.last_latent = latent
        return record

    @property
    def view(self) -> int:
        """The model's view (index in :data:`latenttune.model.symmetry.VIEWS`; 0 = identity)."""
        return self.model.index if isinstance(self.model, ViewedAutoencoder) else 0

    def _state(self) -> dict[str, Any]:
        return {**self.strategy.state_dict(), "view": self.view}


def _frame_of(item: Any, position: int, start_index: int, N: int) -> Frame:
    """A frame of :func:`track`'s iterable: a Frame, an object with ``intensity``/``mask``, or a pair."""
    if isinstance(item, Frame):
        return item
    if hasattr(item, "intensity"):
        index = int(getattr(item, "index", start_index + position))
        return checked_frame(item.intensity, item.mask, N, index=index, time=float(getattr(item, "time", index)))
    intensity, mask = item  # an (intensity, mask) pair: a tuple's ``index`` is a method, not a frame index
    index = start_index + position
    return checked_frame(intensity, mask, N, index=index, time=float(index))


def track(
    frames: Iterable[Any],
    model: LatentAutoencoder,
    strategy: Strategy,
    *,
    callback: Callable[[FrameRecord], bool | None] | None = None,
    start_index: int = 0,
    held_latent: np.ndarray | None = None,
    views: int = 1,
    view: int = 0,
    keep_densities: bool = True,
) -> TrackResult:
    """Track a time series of measured frames.

    A loop of :meth:`FrameTracker.step` over ``frames``.

    Parameters
    ----------
    frames : iterable
        :class:`~latenttune.frame_policy.Frame` objects (what :class:`latenttune.io.Series`
        yields), objects with ``intensity`` (N, N, N), ``mask`` and optionally ``time`` and
        ``index``, or ``(intensity, mask)`` pairs.
    model : LatentAutoencoder
        The model (eval mode).
    strategy : Strategy
        From :func:`latenttune.tracking.make_strategy`.
    callback : callable, optional
        ``callback(record)`` after each frame (the record holds the measured frame as ``frame``);
        returning True stops the run.
    start_index : int
        Index of the first frame (for a resumed run: the strategy's state must already be loaded,
        and ``held_latent`` the last estimate).
    held_latent : ndarray, optional
        Estimate to hold over skipped frames before the first good one (resume).
    views : {1, 24, 48}
        Symmetric views of the first good frame to choose the model's view from (:class:`FrameTracker`).
    view : int
        Resume: the run's view (``record.state["view"]`` of its last record).
    keep_densities : bool
        Keep every frame's densities in the returned records (default). False streams them: the
        callback sees each record whole, the result keeps only its scalars and latents (for long
        runs whose densities go to a file).

    Returns
    -------
    TrackResult
    """
    base = _check_model(model)
    start_index = check_int("start_index", start_index, low=0)
    if not isinstance(frames, Iterable):
        raise TypeError(f"`frames` must be an iterable of frames (a Series, Frames or (intensity, mask) pairs), got "
                        f"{type(frames).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be callable or None, got {type(callback).__name__}")
    records: list[FrameRecord] = []
    tracker = FrameTracker(base if model is base else model, strategy, first=start_index == 0,
                           held_latent=held_latent, views=views, view=view)
    status, message = 0, "all frames processed"
    for position, item in enumerate(frames):
        frame = _frame_of(item, position, start_index, base.config.N)
        record = tracker.step(frame)
        if record is None:
            continue
        records.append(record.light(keep_densities))
        if callback is not None and callback(record):
            status, message = 1, f"stopped by the callback after frame {frame.index}"
            break
    x = records[-1].latent if records else np.full(base.latent_dim, np.nan)
    fun = records[-1].cost if records else math.nan
    return TrackResult(records=records, x=x, fun=fun, nit=tracker.evaluations, status=status, message=message,
                       skipped=tracker.skipped)
