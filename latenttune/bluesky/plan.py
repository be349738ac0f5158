"""The Bluesky plan that tracks a sample in situ: :func:`track_sample`.

Per frame (the closest bluesky precedent is ``tune_centroid``: trigger and read, compute, move,
repeat)::

    checkpoint
    trigger the detector and wait
    create "primary"; read the detector          # measured pattern and mask
    FrameTracker.step(pattern, mask)             # encoder + ES iterations + decode
    set the LatentTracker (bps.mv); read it      # latent, cost, ES steps, central slices
    save                                         # one event: measurement + controller output

The per-frame computation is :class:`latenttune.tracking.FrameTracker`, the same code that
:func:`latenttune.tracking.track` and ``latenttune replay`` run, and both sides check the frame
with :func:`latenttune.frame_policy.checked_frame`, so replaying a stored run with the same strategy
settings reproduces its costs exactly. The plan tracks with a fresh copy of the strategy it is given
(:meth:`latenttune.tracking.Strategy.clone`) and never changes the caller's object.

Interruptions: the plan is not rewindable (it wraps itself in
``bluesky.preprocessors.rewindable_wrapper(..., False)``, whatever ``RE.rewindable`` says).
Rewinding would replay cached messages: duplicate events and a stale controller. So a
pause/resume or a suspension continues where the plan was; the controller's state lives in the
plan and is never rolled back. A pause that interrupts a wait for the detector is detected and
the wait is repeated before the frame is read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import Msg, short_uid

from latenttune.bluesky.devices import LatentTracker
from latenttune.frame_policy import checked_frame
from latenttune.io.runs import MD_KEY, STREAM
from latenttune.model.checkpoint import LoadedModel
from latenttune.model.network import LatentAutoencoder
from latenttune.model.views import check_views
from latenttune.tracking.strategy import Strategy, check_strategy
from latenttune.tracking.tracker import FrameRecord, FrameTracker
from latenttune.validation import check_int
from latenttune.versions import versions

log = logging.getLogger(__name__)

__all__ = ["DataKeys", "track_sample", "STREAM", "MD_KEY"]

Plan = Generator[Msg, Any, Any]


@dataclass(frozen=True)
class DataKeys:
    """Data keys of one tracking run's events (stored in the start document under ``latenttune``).

    Attributes
    ----------
    pattern, mask : str or None
        The detector's measured intensity and mask (``mask`` None when the detector has none).
    frame_index, sample_time : str or None
        The detector's frame index and sample time, when it has them.
    latent, cost, es_steps, status : str
        The tracker's output.
    """

    pattern: str
    mask: str | None
    frame_index: str | None
    sample_time: str | None
    latent: str
    cost: str
    es_steps: str
    status: str

    def to_dict(self) -> dict[str, str | None]:
        """Plain dict (for metadata)."""
        return dict(self.__dict__)


# -- argument checks (run when the plan is built, not at its first message) --------------------


def _check_detector(detector: Any) -> None:
    for method in ("trigger", "read", "describe"):
        if not callable(getattr(detector, method, None)):
            raise TypeError(
                f"`detector` must have a callable {method}() (see CDIDetector), got {type(detector).__name__}")
    if not isinstance(getattr(getattr(detector, "pattern", None), "name", None), str):
        raise TypeError("`detector` must have a `pattern` signal with a `name` (see CDIDetector)")
    mask = getattr(detector, "mask", None)
    if mask is not None and not isinstance(getattr(mask, "name", None), str):
        raise TypeError("`detector.mask` must be None or a signal with a `name` (see CDIDetector)")


def _check_pattern_shape(detector: Any, N: int) -> None:
    described = detector.describe()
    if not isinstance(described, Mapping):  # an asynchronous device: checked at the first frame instead
        if hasattr(described, "close"):
            described.close()
        return
    key = detector.pattern.name
    if key not in described:
        raise ValueError(f"`detector.describe()` must describe the pattern key {key!r}")
    shape = [int(s) for s in described[key].get("shape", [])]
    if shape != [N, N, N]:
        raise ValueError(f"`detector` pattern must have shape [{N}, {N}, {N}] (N = 2n of the model), got {shape}")


def _optional_key(detector: Any, attr: str) -> str | None:
    name = getattr(getattr(detector, attr, None), "name", None)
    return name if isinstance(name, str) else None


# -- plan stubs ----------------------------------------------------------------------------------


def _trigger_and_wait(detector: Any) -> Plan:
    """Trigger and wait; repeat the wait if a pause cut it short (non-rewindable resume)."""
    group = short_uid("trigger")
    status = yield from bps.trigger(detector, group=group)
    yield from bps.wait(group=group)
    while status is not None and hasattr(status, "done") and not status.done:
        yield from bps.sleep(0.01)
    if status is not None and getattr(status, "done", False) and not getattr(status, "success", True):
        raise RuntimeError(f"`detector` {detector.name!r} failed to acquire: {status.exception()!r}")


def _value(reading: Mapping[str, Any] | None, key: str | None) -> Any:
    if key is None or reading is None or key not in reading:
        return None
    return reading[key]["value"]


def _frame(detector: Any, tracker: LatentTracker, frames: FrameTracker, keys: DataKeys, N: int,
           counter: dict[str, Any]) -> Plan:
    """One frame: checkpoint, trigger, read, track, publish, save. Returns the record (or None)."""
    yield from bps.checkpoint()
    yield from _trigger_and_wait(detector)
    yield from bps.create(STREAM)
    reading = yield from bps.read(detector)
    if reading is None:  # pragma: no cover - only when no RunEngine answers the message
        raise RuntimeError(f"reading `detector` {detector.name!r} returned nothing")
    position = counter["frames"]
    index = _value(reading, keys.frame_index)
    index = position if index is None else int(index)
    sample_time = _value(reading, keys.sample_time)
    if sample_time is None:
        stamp = float(reading[keys.pattern]["timestamp"])
        counter.setdefault("t0", stamp)
        sample_time = stamp - counter["t0"]
    frame = checked_frame(_value(reading, keys.pattern), _value(reading, keys.mask), N, index=index,
                          time=float(sample_time))
    record: FrameRecord | None = frames.step(frame)
    yield from bps.mv(tracker, record)
    yield from bps.read(tracker)
    yield from bps.save()
    counter["frames"] = position + 1
    return record


def _default_per_frame(detector: Any, tracker: LatentTracker, frame: Callable[[], Plan]) -> Plan:
    return (yield from frame())


def track_sample(
    detector: Any,
    tracker: LatentTracker,
    model: LoadedModel | LatentAutoencoder,
    strategy: Strategy,
    *,
    num: int | None = None,
    steps_per_frame: int | None = None,
    per_frame: Callable[[Any, LatentTracker, Callable[[], Plan]], Plan] | None = None,
    md: Mapping[str, Any] | None = None,
    views: int = 1,
) -> Plan:
    """Track a changing sample in situ: one event per measured frame.

    Arguments are checked here, when the plan is built, so a bad argument fails before the
    RunEngine opens a run.

    Parameters
    ----------
    detector : CDIDetector
        Triggerable, readable device with a ``pattern`` signal (``(N, N, N)`` intensity, ``N`` = 2n
        of the model) and a ``mask`` signal or ``mask = None`` (see
        :class:`latenttune.bluesky.devices.CDIDetector`).
    tracker : LatentTracker
        Soft device that publishes the controller's output; sized for the model.
    model : LoadedModel or LatentAutoencoder
        The autoencoder (:func:`latenttune.model.load_model`).
    strategy : Strategy
        A tracking strategy from :func:`latenttune.tracking.make_strategy` (``"hybrid"``, ``"es"``,
        ``"one-shot"`` or ``"gradient"``). The plan tracks with a fresh copy of it (its settings, no
        state), so the object given is never changed.
    num : int, optional
        Number of frames; None runs until the run is stopped (pause it, e.g. Ctrl-C, then ``RE.stop()``).
    steps_per_frame : int, optional
        Cost evaluations (ES iterations) per frame; replaces the strategy's own value in the plan's
        copy when given. Not accepted for the one-shot strategy.
    per_frame : callable, optional
        Hook like bluesky's ``per_step``: ``per_frame(detector, tracker, frame)`` is a plan for
        one frame, where ``frame()`` is the default one-frame plan (returns the
        :class:`~latenttune.tracking.FrameRecord`); e.g. move a heater, then
        ``return (yield from frame())``.
    md : mapping, optional
        Extra metadata for the start document.
    views : {1, 24, 48}
        Symmetric views of the first frame to choose the model's view from
        (:mod:`latenttune.model.views`; ``latenttune replay`` makes the same choice offline with the same
        ``--views``). 1 (the default) keeps the identity.

    Returns
    -------
    generator
        The plan. Run it with ``RE(track_sample(...))``; it returns the final latent vector
        (``None`` when no frame gave an estimate).

    Notes
    -----
    The start document holds ``plan_args`` (every argument; ``repr`` for objects) and, under
    ``latenttune``, the data keys, the model's path and checksum, the strategy's settings and
    initial state, and package versions: what :class:`~latenttune.io.runs.RunSeries`
    and ``latenttune replay`` need to replay the run.
    """
    _check_detector(detector)
    if not isinstance(tracker, LatentTracker):
        raise TypeError(f"`tracker` must be a LatentTracker, got {type(tracker).__name__}")
    if isinstance(model, LoadedModel):
        loaded: LoadedModel | None = model
        net = model.model
    elif isinstance(model, LatentAutoencoder):
        loaded, net = None, model
    else:
        raise TypeError(f"`model` must be a LoadedModel or LatentAutoencoder, got {type(model).__name__}")
    k, n = int(net.latent_dim), int(net.config.n)
    N = 2 * n
    if (tracker.k, tracker.n) != (k, n):
        raise ValueError(f"`tracker` is sized for k = {tracker.k}, n = {tracker.n} but the model has k = {k}, n = {n}")
    check_strategy(strategy, k)
    num = check_int("num", num, low=1, allow_none=True)
    steps_per_frame = check_int("steps_per_frame", steps_per_frame, low=1, allow_none=True)
    if steps_per_frame is not None and "steps_per_frame" not in strategy.options():
        raise ValueError(f"`steps_per_frame` does not apply to the {strategy.name!r} strategy")
    changes = {} if steps_per_frame is None else {"steps_per_frame": steps_per_frame}
    description = strategy.clone(**changes).describe()
    if per_frame is not None and not callable(per_frame):
        raise TypeError(f"`per_frame` must be None or callable, got {type(per_frame).__name__}")
    if md is not None and not isinstance(md, Mapping):
        raise TypeError(f"`md` must be None or a mapping, got {type(md).__name__}")
    views = check_views(views)
    _check_pattern_shape(detector, N)

    keys = DataKeys(
        pattern=detector.pattern.name, mask=_optional_key(detector, "mask"),
        frame_index=_optional_key(detector, "frame_index"), sample_time=_optional_key(detector, "sample_time"),
        latent=tracker.latent.name, cost=tracker.cost.name, es_steps=tracker.es_steps.name, status=tracker.status.name,
    )
    _md: dict[str, Any] = {
        "plan_name": "track_sample",
        "detectors": [detector.name],
        "plan_args": {
            "detector": repr(detector),
            "tracker": repr(tracker),
            "model": (f"LatentAutoencoder(n={n}, latent_dim={k})" if loaded is None
                      else f"LoadedModel(path={str(loaded.path)!r}, checksum={loaded.checksum!r})"),
            "strategy": description.line(),
            "num": num,
            "steps_per_frame": steps_per_frame,
            "per_frame": None if per_frame is None else repr(per_frame),
            "md": None if md is None else repr(dict(md)),
            "views": views,
        },
        MD_KEY: {
            "keys": keys.to_dict(),
            "stream": STREAM,
            "k": k,
            "n": n,
            "model_path": None if loaded is None else str(loaded.path),
            "model_checksum": None if loaded is None else loaded.checksum,
            "strategy": {**description.to_dict(), "state": strategy.clone(**changes).state_dict()},
            "views": views,
            "versions": versions("bluesky", "ophyd", "event-model"),
        },
        "hints": {"dimensions": [([keys.sample_time or "time"], STREAM)]},
    }
    if num is not None:
        _md["num_points"] = num
    _md.update(dict(md or {}))
    hook = per_frame or _default_per_frame
    log.info("track_sample: %s frames of %s with %s", "unlimited" if num is None else num, detector.name,
             description.name)

    def plan() -> Plan:
        frames = FrameTracker(net, strategy.clone(**changes), views=views)
        counter: dict[str, Any] = {"frames": 0}

        def frame() -> Plan:
            return (yield from _frame(detector, tracker, frames, keys, N, counter))

        @bpp.stage_decorator([detector, tracker])
        @bpp.run_decorator(md=_md)
        def inner() -> Plan:
            while num is None or counter["frames"] < num:
                before = counter["frames"]
                yield from hook(detector, tracker, frame)
                if counter["frames"] == before:
                    raise RuntimeError("`per_frame` must run the frame plan it is given (`frame()`) once per call")

        yield from bpp.rewindable_wrapper(inner(), False)
        return None if frames.last_latent is None else frames.last_latent.copy()

    return plan()
