"""ophyd devices for in-situ tracking: a simulated CDI detector and the tracker's soft device.

What the plan needs from a detector is :class:`CDIDetector`, a structural protocol: any
triggerable, readable object with a ``pattern`` signal holding the measured 3-D intensity
(``(N, N, N)``, q = 0 at index ``N // 2``) and a ``mask`` signal (bool, True = voxel not
measured; or ``mask = None``). A real area detector whose frames form a rocking curve fits by
assembling the stack of 2-D frames into the 3-D ``pattern`` in its ``trigger()`` (ophyd v1) or
its ``trigger``/``read`` coroutines (ophyd-async): the plan only ever reads the two signals.

:class:`SimulatedCDIDetector` is such a detector on top of :mod:`sim`: every trigger measures the
next frame of a time-varying scenario with a :class:`sim.Detector` (Poisson counts, beamstop,
gaps, saturation) at the current beam current. :class:`LatentTracker` is a soft device that
publishes the controller's output (latent vector, cost, ES iterations, central slices of the
reconstruction) and, given the model, the latent read out as named physical quantities
(``readout_size``, ``readout_orientation_deg``, ...: :mod:`latenttune.model.readout`);
``bps.mv(tracker, record)`` sets it from a :class:`latenttune.tracking.FrameRecord`.

Array signals describe themselves as event-model 1.24 wants (docs/conventions.md section 7):
``dtype="array"``, ``shape=[...]`` and ``dtype_numpy`` the numpy type string (``"<f4"``,
``"|b1"``), taken from the current value.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import DeviceStatus, Status

from latenttune.io.rows import READOUT_SHAPES
from latenttune.model.readout import read_out, readout_rows
from latenttune.model.views import viewed
from latenttune.tracking.tracker import FrameRecord
from latenttune.validation import check_choice, is_integer
from sim.detector import Detector
from sim.forward import forward

log = logging.getLogger(__name__)

__all__ = [
    "ArraySignal",
    "CDIDetector",
    "CLOCKS",
    "LatentTracker",
    "SimulatedCDIDetector",
    "SimulationOptions",
]

#: How :class:`SimulatedCDIDetector` advances the sample's time.
CLOCKS = ("trigger", "wall")


@runtime_checkable
class CDIDetector(Protocol):
    """What :func:`latenttune.bluesky.track_sample` needs from a detector.

    Attributes
    ----------
    name : str
        Device name.
    pattern : signal
        Readable signal (has ``name``) whose reading is the measured intensity, a real array of
        shape ``(N, N, N)`` with ``N = 2n`` of the model and q = 0 at index ``N // 2``.
    mask : signal or None
        Readable signal whose reading is a boolean ``(N, N, N)`` array, True = voxel not measured
        (beamstop, gaps, saturated, hot); None when every voxel is measured.

    Notes
    -----
    Optional signals the plan uses when present: ``frame_index`` (int) and ``sample_time``
    (seconds) give each frame's index and time (otherwise the event count and the reading's
    time stamp are used); ``beam_current`` is what a beam-loss suspender watches. ``describe()``
    must report ``dtype="array"``, the shape and ``dtype_numpy`` for the array readings.
    """

    name: str
    pattern: Any
    mask: Any

    def trigger(self) -> Any:
        """Start an acquisition; return a status object that finishes when it is done."""
        ...

    def read(self) -> dict[str, dict[str, Any]]:
        """Readings ``{data key: {"value": ..., "timestamp": ...}}``."""
        ...

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data-key descriptions matching :meth:`read`."""
        ...


class ArraySignal(Signal):
    """A soft signal holding a numpy array, described with ``dtype_numpy`` (``"<f4"``, ``"|b1"``).

    The shape and dtype in :meth:`describe` come from the current value, so set a value of the
    right shape and dtype before the first read (the devices here do so in ``__init__``).
    """

    def describe(self) -> dict[str, dict[str, Any]]:
        value = np.asarray(self.get())
        return {
            self.name: {
                "source": self.source_name,
                "dtype": "array",
                "shape": [int(s) for s in value.shape],
                "dtype_numpy": value.dtype.str,
            }
        }


def _finished_status(obj: Any) -> Status:
    status = DeviceStatus(obj)
    status.set_finished()
    return status


@dataclass(frozen=True)
class SimulationOptions:
    """How :class:`SimulatedCDIDetector` runs.

    Parameters
    ----------
    clock : {"trigger", "wall"}
        ``"trigger"``: every trigger measures the next frame. ``"wall"``: the sample evolves with
        the wall clock, frame ``floor(elapsed / frame_interval)`` since the first trigger.
    frame_interval : float
        Sample time between frames, seconds (> 0).
    exposure : float
        Seconds a trigger takes to finish (>= 0; 0 finishes at once).
    nominal_current : float
        Beam current when the beam is up (> 0, any unit); counts scale with current / nominal.
    beam_loss : tuple of (int, float)
        ``(trigger number, seconds)`` pairs: at that trigger (0-based) the beam is lost for that
        many wall-clock seconds, then restored (models a beam dump and refill).
    """

    clock: str = "trigger"
    frame_interval: float = 1.0
    exposure: float = 0.0
    nominal_current: float = 1.0
    beam_loss: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        check_choice("clock", self.clock, CLOCKS)
        for name in ("frame_interval", "nominal_current"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
        if not (isinstance(self.exposure, (int, float)) and math.isfinite(self.exposure) and self.exposure >= 0):
            raise ValueError(f"`exposure` must be a finite number >= 0 seconds, got {self.exposure!r}")
        losses = []
        for item in self.beam_loss:
            try:
                trigger_number, seconds = item
            except (TypeError, ValueError):
                raise ValueError(f"`beam_loss` entries must be (trigger number, seconds) pairs, got {item!r}") from None
            if not is_integer(trigger_number) or trigger_number < 0:
                raise ValueError(f"`beam_loss` trigger numbers must be integers >= 0, got {trigger_number!r}")
            if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"`beam_loss` durations must be finite numbers > 0 seconds, got {seconds!r}")
            losses.append((int(trigger_number), float(seconds)))
        object.__setattr__(self, "beam_loss", tuple(losses))


class SimulatedCDIDetector(Device):
    """A CDI detector that measures a simulated, time-varying sample (ophyd v1 device).

    Each :meth:`trigger` takes the sample's current frame ``d(r, t)`` from ``scenario``, forms
    ``|F d|^2`` (:func:`sim.forward.forward`) and measures it with ``detector`` at the current beam
    current: the expected counts scale with ``beam_current / nominal_current``. With no beam
    (current <= 0) the frame has no counts at all (a beam-loss suspender on ``beam_current``
    should hold the run; the tracker skips such a frame and holds its estimate). Past the
    scenario's last frame the sample stays in its final state (logged once).

    Parameters
    ----------
    scenario : sim.Scenario
        The time-varying sample (:func:`sim.make_scenario`); object grid ``n``, so ``N = 2n``.
    detector : sim.Detector
        Counting model (photons per frame at nominal current, background, beamstop, gaps, ...).
    rng : numpy.random.Generator
        Source of the photon noise.
    options : SimulationOptions, optional
        Clock, frame interval, exposure time, nominal current and scheduled beam losses.
    name : str
        Device name (prefix of the data keys, e.g. ``cdi_pattern``).
    **kwargs
        Passed to :class:`ophyd.Device`.

    Attributes
    ----------
    pattern : ArraySignal
        Measured counts, float32 ``(N, N, N)``.
    mask : ArraySignal
        bool ``(N, N, N)``, True = not measured.
    frame_index : Signal
        Scenario frame of the last trigger.
    sample_time : Signal
        Sample time of the last trigger, seconds.
    beam_current : Signal
        The live beam current (watch it with :class:`bluesky.suspenders.SuspendFloor`).
    exposure_current : Signal
        The beam current during the last frame's exposure (0 for a frame taken without beam).
    total_counts : Signal
        Counts on the measured voxels of the last frame.
    """

    pattern = Cpt(ArraySignal, value=None, kind=Kind.normal)
    mask = Cpt(ArraySignal, value=None, kind=Kind.normal)
    frame_index = Cpt(Signal, value=0, kind=Kind.normal)
    sample_time = Cpt(Signal, value=0.0, kind=Kind.normal)
    beam_current = Cpt(Signal, value=1.0, kind=Kind.normal)
    exposure_current = Cpt(Signal, value=0.0, kind=Kind.normal)
    total_counts = Cpt(Signal, value=0.0, kind=Kind.hinted)

    def __init__(self, scenario: Any, detector: Detector, rng: np.random.Generator, *,
                 options: SimulationOptions | None = None, name: str = "cdi", **kwargs: Any) -> None:
        if not (hasattr(scenario, "density") and hasattr(scenario, "num_frames") and hasattr(scenario, "n")):
            raise TypeError(f"`scenario` must be a sim scenario (sim.make_scenario), got {type(scenario).__name__}")
        if not isinstance(detector, Detector):
            raise TypeError(f"`detector` must be a sim.Detector, got {type(detector).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
        options = SimulationOptions() if options is None else options
        if not isinstance(options, SimulationOptions):
            raise TypeError(f"`options` must be a SimulationOptions, got {type(options).__name__}")
        super().__init__(name=name, **kwargs)
        self.scenario = scenario
        self.detector = detector
        self.rng = rng
        self.options = options
        self.N = 2 * int(scenario.n)
        self._beam_loss = dict(options.beam_loss)
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._triggers = 0
        self._t0: float | None = None
        self._warned_end = False
        N = self.N
        self.pattern.put(np.zeros((N, N, N), dtype=np.float32))
        self.mask.put(detector.sensor_mask(N).astype(bool))
        self.beam_current.put(float(options.nominal_current))

    # -- the simulated beam ------------------------------------------------------------------

    def lose_beam(self, seconds: float) -> None:
        """Drop the beam current to 0 now and restore the nominal current after ``seconds``."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"`seconds` must be a finite number > 0, got {seconds!r}")
        log.info("%s: beam lost for %.3g s", self.name, seconds)
        self.beam_current.put(0.0)
        timer = threading.Timer(float(seconds), self.restore_beam)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def restore_beam(self) -> None:
        """Put the beam current back to its nominal value."""
        log.info("%s: beam restored", self.name)
        self.beam_current.put(float(self.options.nominal_current))

    def reset(self) -> None:
        """Restart the sample at frame 0 and the clock; cancel pending beam restorations."""
        with self._lock:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        self._triggers = 0
        self._t0 = None
        self._warned_end = False
        self.beam_current.put(float(self.options.nominal_current))

    # -- acquisition -------------------------------------------------------------------------

    def _frame_now(self, trigger_number: int) -> tuple[int, float]:
        """(scenario frame, sample time) for this trigger."""
        interval = self.options.frame_interval
        if self.options.clock == "wall":
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            sample_time = now - self._t0
            frame = int(sample_time // interval)
        else:
            frame = trigger_number
            sample_time = trigger_number * interval
        last = self.scenario.num_frames - 1
        if frame > last:
            if not self._warned_end:
                log.warning("%s: past the scenario's last frame %d; the sample stays in its final state",
                            self.name, last)
                self._warned_end = True
            frame = last
        return frame, float(sample_time)

    def measure(self, frame: int, current: float) -> tuple[np.ndarray, np.ndarray]:
        """Measure scenario ``frame`` at beam ``current``: ``(counts float32, mask bool)``."""
        N = self.N
        if not current > 0:
            return np.zeros((N, N, N), dtype=np.float32), self.detector.sensor_mask(N).astype(bool)
        nominal = self.options.nominal_current
        detector = self.detector
        if current != nominal:
            detector = dataclasses.replace(detector, photons=detector.photons * current / nominal)
        measurement = detector.measure(forward(self.scenario.density(frame)), self.rng)
        return measurement.counts.astype(np.float32, copy=False), measurement.mask.astype(bool, copy=False)

    def trigger(self) -> DeviceStatus:
        """Measure the sample's current frame; the status finishes after ``options.exposure`` s."""
        trigger_number = self._triggers
        self._triggers += 1
        if trigger_number in self._beam_loss:
            self.lose_beam(self._beam_loss[trigger_number])
        frame, sample_time = self._frame_now(trigger_number)
        current = float(self.beam_current.get())
        counts, mask = self.measure(frame, current)
        stamp = time.time()
        self.pattern.put(counts, timestamp=stamp)
        self.mask.put(mask, timestamp=stamp)
        self.frame_index.put(int(frame), timestamp=stamp)
        self.sample_time.put(sample_time, timestamp=stamp)
        self.exposure_current.put(current, timestamp=stamp)
        self.total_counts.put(float(counts[~mask].sum()), timestamp=stamp)
        log.debug("%s: trigger %d measured frame %d (t = %.3g s, current %.3g)", self.name, trigger_number, frame,
                  sample_time, current)
        if self.options.exposure <= 0:
            return _finished_status(self)
        status = DeviceStatus(self)
        timer = threading.Timer(self.options.exposure, status.set_finished)
        timer.daemon = True
        timer.start()
        return status

    def __repr__(self) -> str:
        scenario = getattr(self.scenario, "name", type(self.scenario).__name__)
        return (f"SimulatedCDIDetector(name={self.name!r}, scenario={scenario!r}, n={self.scenario.n}, "
                f"frames={self.scenario.num_frames}, photons={self.detector.photons:g}, clock={self.options.clock!r})")


def _shows(record: FrameRecord) -> str:
    """Which density a record's slices show (see :attr:`LatentTracker.shows`)."""
    if record.physics is not None:
        return "refined" if record.physics.accepted else "decoded (refinement not kept)"
    if record.output is not None:
        return "held"
    return "decoded"


class LatentTracker(Device):
    """Soft device that publishes the controller's output for each frame.

    Set it with ``bps.mv(tracker, record)`` from a :class:`latenttune.tracking.FrameRecord` (or
    ``None`` for a frame with no estimate yet); every component is also an ordinary soft signal.

    Parameters
    ----------
    k : int
        Latent dimension.
    n : int
        Object grid size (the slices are ``(n, n)``).
    name : str
        Device name (prefix of the data keys, e.g. ``tracker_cost``).
    model : LatentAutoencoder or LoadedModel, optional
        The run's model, for the readout signals (a model with explicit crystal parameters, e.g. the
        default model). Without it, or for a model without explicit parameters, they stay NaN.
    postprocess : FramePostprocessor, optional
        The measurement's post-processing (:class:`latenttune.postprocess.frames.FramePostprocessor`
        of its geometry): each frame's strain statistics are then published; without it they stay NaN.
    **kwargs
        Passed to :class:`ophyd.Device`.

    Attributes
    ----------
    latent : ArraySignal
        The frame's estimate, float64 ``(k,)``.
    cost : Signal
        Cost at ``latent`` (NaN for a skipped frame).
    es_steps : Signal
        Cost evaluations (ES iterations) spent on the frame.
    status : Signal
        ``"ok"`` or ``"skipped: <reason>"``.
    seconds : Signal
        Wall time of the frame's computation.
    amplitude_slice, phase_slice : ArraySignal
        Central slice (normal to axis 0) of the reconstruction's amplitude and phase, float32 (n, n):
        the hybrid tracker's output when the strategy has a physics stage
        (:attr:`latenttune.tracking.FrameRecord.output_density`), else the decoded density.
    shows : Signal
        Which density the slices show: ``"refined"``, ``"decoded"`` or ``"decoded (refinement not
        kept)"`` (``"held"`` over a skipped frame).
    llk : Signal
        Poisson log-likelihood of the shown density against the frame (PyNX form: about 1 when it
        explains the counts to the noise, far above when phase retrieval stagnated); NaN without a
        physics stage or over a skipped frame.
    stagnated : Signal
        1 when the shown density's LLK stayed above the physics stage's ``restart_llk`` after its
        restarts (a less certain frame: :mod:`latenttune.quality`), else 0 (also without a physics
        stage and over a skipped frame).
    llk_free : Signal
        Free log-likelihood of the shown density (Poisson LLK on the physics stage's held-out voxels);
        NaN without a physics stage or over a skipped frame.
    orientation_ties : Signal
        Distinct orientations whose crystal fitted the output's shape as well as the one read, where
        the read-back searched the whole orientation box (the run's first frame): above 1, the
        orientation was decided by the surface-energy prior (results field ``orientation_ties``);
        1 on frames that followed the previous orientation; 0 without a read-back and over a skipped frame.
    strain_mean, strain_std : Signal
        Mean and standard deviation of the shown density's heterogeneous strain along ``G`` inside its
        support (a hinted signal a live plot can follow); NaN without ``postprocess``.
    readout_* : Signal or ArraySignal
        The frame's latent read out as named physical quantities, one signal per name of
        :data:`latenttune.model.readout.READOUT_FIELDS` (units and meaning in
        :data:`latenttune.io.rows.FIELDS`: the fields a results file holds), all float64. Numbers:
        ``readout_size`` (voxels), ``readout_dislocation_present`` (0/1), ``readout_dislocation_winding``
        (-1/0/+1), ``readout_learned_norm``, ``readout_learned_fraction``. Arrays:
        ``readout_orientation_deg`` (3,) degrees, ``readout_facet_distances`` (26,) voxels,
        ``readout_active_facets`` (26,) 0/1, ``readout_phase_coefficients`` (9,) radians,
        ``readout_dislocation_point`` (3,) voxels, ``readout_dislocation_direction`` (3,). A skipped frame publishes the readout of the latent
        it holds; NaN without a model with explicit parameters or without an estimate.
    """

    latent = Cpt(ArraySignal, value=None, kind=Kind.normal)
    cost = Cpt(Signal, value=math.nan, kind=Kind.hinted)
    es_steps = Cpt(Signal, value=0, kind=Kind.normal)
    status = Cpt(Signal, value="", kind=Kind.normal)
    seconds = Cpt(Signal, value=0.0, kind=Kind.normal)
    amplitude_slice = Cpt(ArraySignal, value=None, kind=Kind.normal)
    phase_slice = Cpt(ArraySignal, value=None, kind=Kind.normal)
    shows = Cpt(Signal, value="", kind=Kind.normal)
    llk = Cpt(Signal, value=math.nan, kind=Kind.hinted)
    stagnated = Cpt(Signal, value=0, kind=Kind.normal)
    llk_free = Cpt(Signal, value=math.nan, kind=Kind.normal)
    orientation_ties = Cpt(Signal, value=0, kind=Kind.normal)
    strain_mean = Cpt(Signal, value=math.nan, kind=Kind.hinted)
    strain_std = Cpt(Signal, value=math.nan, kind=Kind.normal)
    readout_orientation_deg = Cpt(ArraySignal, value=None, kind=Kind.normal)
    readout_facet_distances = Cpt(ArraySignal, value=None, kind=Kind.normal)
    readout_active_facets = Cpt(ArraySignal, value=None, kind=Kind.normal)
    readout_size = Cpt(Signal, value=math.nan, kind=Kind.normal)
    readout_phase_coefficients = Cpt(ArraySignal, value=None, kind=Kind.normal)
    readout_dislocation_present = Cpt(Signal, value=math.nan, kind=Kind.normal)
    readout_dislocation_winding = Cpt(Signal, value=math.nan, kind=Kind.normal)
    readout_dislocation_point = Cpt(ArraySignal, value=None, kind=Kind.normal)
    readout_dislocation_direction = Cpt(ArraySignal, value=None, kind=Kind.normal)
    readout_learned_norm = Cpt(Signal, value=math.nan, kind=Kind.normal)
    readout_learned_fraction = Cpt(Signal, value=math.nan, kind=Kind.normal)

    def __init__(self, k: int, n: int, *, name: str = "tracker", model: Any = None, postprocess: Any = None,
                 **kwargs: Any) -> None:
        for arg, value, low in (("k", k, 1), ("n", n, 4)):
            if not is_integer(value) or value < low:
                raise ValueError(f"`{arg}` must be an integer >= {low}, got {value!r}")
        net = getattr(model, "model", model)  # a LoadedModel's network
        net = getattr(net, "base", net)  # a model seen through a view: the record says which view
        if net is not None:
            if not hasattr(net, "physical_layout"):
                raise TypeError(f"`model` must be a LatentAutoencoder or LoadedModel, got {type(model).__name__}")
            if (int(net.latent_dim), int(net.config.n)) != (int(k), int(n)):
                raise ValueError(f"`model` has k = {net.latent_dim}, n = {net.config.n} but the tracker is sized for "
                                 f"k = {k}, n = {n}")
        if postprocess is not None and not callable(getattr(postprocess, "row", None)):
            raise TypeError(f"`postprocess` must be a FramePostprocessor or None, got {type(postprocess).__name__}")
        super().__init__(name=name, **kwargs)
        self.k, self.n = int(k), int(n)
        self.postprocess = postprocess
        self.model = net if net is not None and net.physical_layout is not None else None
        self.latent.put(np.full(self.k, np.nan))
        self.amplitude_slice.put(np.zeros((self.n, self.n), dtype=np.float32))
        self.phase_slice.put(np.zeros((self.n, self.n), dtype=np.float32))
        self._put_readout(None, None)

    @classmethod
    def for_model(cls, model: Any, *, name: str = "tracker", **kwargs: Any) -> LatentTracker:  # postprocess= too
        """A tracker sized for ``model`` (a ``LatentAutoencoder`` or ``LoadedModel``), publishing its readout."""
        net = getattr(model, "model", model)
        return cls(int(net.latent_dim), int(net.config.n), name=name, model=net, **kwargs)

    def _put_readout(self, record: FrameRecord | None, stamp: float | None) -> None:
        """Publish the readout of ``record``'s latent (NaN without a record or a model with explicit parameters)."""
        values = None
        if record is not None and self.model is not None:
            physical = read_out(record.latent, viewed(self.model, record.state.get("view", 0)), record.density)
            values = None if physical is None else readout_rows(physical)
        for field, shape in READOUT_SHAPES.items():
            value = np.full(shape, np.nan) if values is None else np.asarray(values[field], dtype=np.float64)
            getattr(self, field).put(float(value) if shape == () else value, timestamp=stamp)

    def set(self, value: Any) -> DeviceStatus:
        """Publish a frame's record; returns a finished status.

        Parameters
        ----------
        value : FrameRecord or None
            The tracker's record of the frame, or None when a frame was skipped before any
            estimate existed (latent and cost NaN).
        """
        stamp = time.time()
        if value is None:
            latent = np.full(self.k, np.nan)
            amplitude = np.full((self.n, self.n), np.nan, dtype=np.float32)
            phase = amplitude.copy()
            cost, steps, status, seconds = math.nan, 0, "skipped: no estimate to hold", 0.0
            shows, llk, stagnated, ties = "", math.nan, 0, 0
            llk_free, strain_mean, strain_std = math.nan, math.nan, math.nan
        else:
            if not isinstance(value, FrameRecord):
                raise TypeError(f"`value` must be a FrameRecord or None, got {type(value).__name__}")
            latent = np.asarray(value.latent, dtype=np.float64)
            if latent.shape != (self.k,):
                raise ValueError(f"`value.latent` must have shape ({self.k},), got {latent.shape}")
            density = np.asarray(value.output_density)
            if density.shape != (self.n,) * 3:
                raise ValueError(f"`value.density` must have shape {(self.n,) * 3}, got {density.shape}")
            shows = _shows(value)
            physics = value.physics
            tracked = physics is not None and str(value.status) == "ok"
            llk = float(physics.llk) if tracked else math.nan
            stagnated = int(physics.stagnated) if tracked else 0
            llk_free = float(physics.llk_free) if tracked else math.nan
            ties = value.readback.orientation_ties if value.readback is not None and str(value.status) == "ok" else 0
            strain_mean = strain_std = math.nan
            if self.postprocess is not None and str(value.status) == "ok":
                row = self.postprocess.row(density, self.n)
                strain_mean, strain_std = float(row["strain_mean"]), float(row["strain_std"])
            plane = density[self.n // 2]
            amplitude = np.abs(plane).astype(np.float32)
            phase = np.angle(plane).astype(np.float32)
            cost, steps = float(value.cost), int(len(value.step_costs))
            status, seconds = str(value.status), float(value.seconds)
        self.latent.put(latent, timestamp=stamp)
        self.cost.put(cost, timestamp=stamp)
        self.es_steps.put(steps, timestamp=stamp)
        self.status.put(status, timestamp=stamp)
        self.seconds.put(seconds, timestamp=stamp)
        self.amplitude_slice.put(amplitude, timestamp=stamp)
        self.phase_slice.put(phase, timestamp=stamp)
        self.shows.put(shows, timestamp=stamp)
        self.llk.put(llk, timestamp=stamp)
        self.stagnated.put(stagnated, timestamp=stamp)
        self.llk_free.put(llk_free, timestamp=stamp)
        self.orientation_ties.put(ties, timestamp=stamp)
        self.strain_mean.put(strain_mean, timestamp=stamp)
        self.strain_std.put(strain_std, timestamp=stamp)
        self._put_readout(value, stamp)
        return _finished_status(self)

    def __repr__(self) -> str:
        return f"LatentTracker(k={self.k}, n={self.n}, name={self.name!r})"

