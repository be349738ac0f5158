"""ophyd devices of :mod:`latenttune.bluesky.devices`: the simulated CDI detector and the tracker.

Small scenarios (n = 8, so N = 16) and the tiny models of ``conftest.py``.
"""

from __future__ import annotations

import logging
import math
import time
import types

import event_model
import numpy as np
import pytest

from latenttune.bluesky import devices
from latenttune.bluesky.devices import (
    ArraySignal,
    CDIDetector,
    LatentTracker,
    SimulatedCDIDetector,
    SimulationOptions,
)
from latenttune.tracking import FrameRecord
from sim import Detector, make_scenario

N = 16


def _detector(frames: int = 4, seed: int = 1, **options) -> SimulatedCDIDetector:
    scenario = make_scenario("growth", np.random.default_rng(0), n=8, num_frames=frames)
    return SimulatedCDIDetector(scenario, Detector(photons=1e6, beamstop_radius=1.5), np.random.default_rng(seed),
                                options=SimulationOptions(**options))


def _record(k: int = 4, n: int = 8) -> FrameRecord:
    rng = np.random.default_rng(3)
    density = (rng.random((n, n, n)) * np.exp(1j * rng.random((n, n, n)))).astype(np.complex64)
    return FrameRecord(index=2, time=2.0, latent=np.linspace(-0.5, 0.5, k), cost=0.25, step_costs=np.ones(7),
                       encoded=np.zeros(k), density=density, seconds=0.01, status="ok")


# -- the detector ------------------------------------------------------------------------------


def test_describe_gives_valid_array_data_keys():
    det = _detector()
    described = det.describe()
    assert described["cdi_pattern"]["dtype"] == "array"
    assert described["cdi_pattern"]["shape"] == [N, N, N]
    assert described["cdi_pattern"]["dtype_numpy"] == "<f4"
    assert described["cdi_mask"]["shape"] == [N, N, N] and described["cdi_mask"]["dtype_numpy"] == "|b1"
    assert set(described) == set(det.read())
    # event-model 1.24 accepts the descriptor (it rejects dtype_numpy "float32")
    bundle = event_model.compose_run()
    bundle.compose_descriptor(name="primary", data_keys=dict(described), object_keys={"cdi": list(described)})


def test_simulated_detector_follows_the_protocol_and_advances_per_trigger():
    det = _detector(frame_interval=0.5)
    assert isinstance(det, CDIDetector)
    frames = []
    for expected in range(3):
        status = det.trigger()
        assert status.done and status.success
        reading = det.read()
        assert reading["cdi_frame_index"]["value"] == expected
        assert reading["cdi_sample_time"]["value"] == pytest.approx(0.5 * expected)
        pattern, mask = reading["cdi_pattern"]["value"], reading["cdi_mask"]["value"]
        assert pattern.dtype == np.float32 and pattern.shape == (N, N, N) and mask.dtype == bool
        assert np.all(pattern >= 0) and np.all(pattern[mask] == 0) and mask[N // 2, N // 2, N // 2]
        assert reading["cdi_total_counts"]["value"] == pytest.approx(float(pattern[~mask].sum()))
        assert reading["cdi_exposure_current"]["value"] == 1.0
        frames.append(pattern)
    assert not np.array_equal(frames[0], frames[2])  # the sample evolves


def test_same_seeds_give_the_same_frames_and_reset_restarts():
    a, b = _detector(seed=7), _detector(seed=7)
    for _ in range(2):
        a.trigger(), b.trigger()
        np.testing.assert_array_equal(a.pattern.get(), b.pattern.get())
    a.reset()
    a.trigger()
    assert a.frame_index.get() == 0


def test_counts_scale_with_the_beam_current():
    det = _detector()
    full, mask = det.measure(1, 1.0)
    half, _ = det.measure(1, 0.5)
    assert half[~mask].sum() / full[~mask].sum() == pytest.approx(0.5, rel=0.01)


def test_no_beam_gives_an_empty_frame_not_an_error():
    det = _detector()
    det.beam_current.put(0.0)
    det.trigger()
    assert float(det.pattern.get().sum()) == 0.0
    assert det.exposure_current.get() == 0.0 and det.total_counts.get() == 0.0
    np.testing.assert_array_equal(det.mask.get(), det.detector.sensor_mask(N))


def test_scheduled_beam_loss_drops_and_restores_the_current():
    det = _detector(beam_loss=((1, 0.05),))
    det.trigger()
    assert det.beam_current.get() == 1.0
    det.trigger()  # trigger 1: the beam is lost before the exposure
    assert det.beam_current.get() == 0.0 and float(det.pattern.get().sum()) == 0.0
    deadline = time.monotonic() + 5.0
    while det.beam_current.get() != 1.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert det.beam_current.get() == 1.0


def test_past_the_last_frame_the_sample_stays_in_its_final_state(caplog):
    det = _detector(frames=2)
    with caplog.at_level(logging.WARNING, logger="latenttune.bluesky.devices"):
        for _ in range(4):
            det.trigger()
    assert det.frame_index.get() == 1 and det.sample_time.get() == 3.0
    assert sum("final state" in r.getMessage() for r in caplog.records) == 1


def test_wall_clock_mode_follows_elapsed_time(monkeypatch):
    now = {"t": 100.0}
    monkeypatch.setattr(devices, "time", types.SimpleNamespace(monotonic=lambda: now["t"], time=time.time))
    det = _detector(frames=10, clock="wall", frame_interval=2.0)
    det.trigger()
    assert det.frame_index.get() == 0
    now["t"] += 5.0
    det.trigger()
    assert det.frame_index.get() == 2 and det.sample_time.get() == pytest.approx(5.0)


def test_exposure_time_delays_the_status():
    det = _detector(exposure=0.05)
    status = det.trigger()
    assert not status.done
    status.wait(timeout=5)
    assert status.success


@pytest.mark.parametrize(
    "options, match",
    [
        ({"clock": "tick"}, "`clock` must be one of"),
        ({"frame_interval": 0}, "`frame_interval` must be"),
        ({"exposure": -1}, "`exposure` must be"),
        ({"nominal_current": math.nan}, "`nominal_current` must be"),
        ({"beam_loss": ((1,),)}, "`beam_loss` entries must be"),
        ({"beam_loss": ((-1, 1.0),)}, "trigger numbers must be"),
        ({"beam_loss": ((1, 0.0),)}, "durations must be"),
    ],
)
def test_simulation_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        SimulationOptions(**options)


def test_detector_arguments_are_validated():
    scenario = make_scenario("growth", np.random.default_rng(0), n=8, num_frames=2)
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="`scenario`"):
        SimulatedCDIDetector(object(), Detector(), rng)
    with pytest.raises(TypeError, match="`detector`"):
        SimulatedCDIDetector(scenario, "pilatus", rng)
    with pytest.raises(TypeError, match="`rng`"):
        SimulatedCDIDetector(scenario, Detector(), 0)
    with pytest.raises(TypeError, match="`options`"):
        SimulatedCDIDetector(scenario, Detector(), rng, options={"clock": "wall"})
    with pytest.raises(ValueError, match="`seconds`"):
        _detector().lose_beam(0)


# -- the tracker ------------------------------------------------------------------------------------


def test_tracker_publishes_a_record():
    tracker = LatentTracker(4, 8)
    record = _record()
    status = tracker.set(record)
    assert status.done and status.success
    reading = tracker.read()
    np.testing.assert_array_equal(reading["tracker_latent"]["value"], record.latent)
    assert reading["tracker_cost"]["value"] == 0.25 and reading["tracker_es_steps"]["value"] == 7
    assert reading["tracker_status"]["value"] == "ok"
    plane = record.density[4]
    np.testing.assert_allclose(reading["tracker_amplitude_slice"]["value"], np.abs(plane), rtol=1e-6)
    np.testing.assert_allclose(reading["tracker_phase_slice"]["value"], np.angle(plane), rtol=1e-6)
    described = tracker.describe()
    assert described["tracker_latent"]["shape"] == [4] and described["tracker_latent"]["dtype_numpy"] == "<f8"
    assert described["tracker_amplitude_slice"]["shape"] == [8, 8]
    assert described["tracker_amplitude_slice"]["dtype_numpy"] == "<f4"


def test_tracker_publishes_the_physics_stage_verdict():
    import dataclasses

    from latenttune.tracking.physics_stage import PhysicsOutcome

    record = _record()
    outcome = PhysicsOutcome(density=record.density, refined=record.density, accepted=True, misfit_decoded=0.2,
                             misfit_refined=0.1, free_misfit_decoded=0.2, free_misfit_refined=0.1, warm=False,
                             seconds=0.1, llk=3.2, stagnated=True)
    tracker = LatentTracker(4, 8)
    tracker.set(dataclasses.replace(record, physics=outcome, output=record.density))
    reading = tracker.read()
    assert reading["tracker_llk"]["value"] == 3.2 and reading["tracker_stagnated"]["value"] == 1
    tracker.set(dataclasses.replace(record, physics=dataclasses.replace(outcome, llk=1.1, stagnated=False)))
    assert tracker.read()["tracker_stagnated"]["value"] == 0
    tracker.set(dataclasses.replace(record, physics=outcome, status="skipped: no counts"))
    assert tracker.read()["tracker_stagnated"]["value"] == 0  # a held frame has no verdict of its own


def test_tracker_publishes_when_the_orientation_was_decided_by_the_surface_energy_prior():
    import dataclasses

    from latenttune.model.explicit_fit import ExplicitFit
    from latenttune.tracking.readback import ReadbackOutcome

    record = _record()
    fit = ExplicitFit(parameters=np.zeros(48), rotation=np.eye(3), facet_distances=np.zeros(26),
                      phase_coefficients=np.zeros(9), dislocation=None, support=np.zeros((1, 1, 1), bool),
                      orientation_ties=3)
    readback = ReadbackOutcome(latent=record.latent, density=record.density, start=record.latent,
                               costs=np.array([0.01]), fit=fit)
    tracker = LatentTracker(4, 8)
    tracker.set(record)
    assert tracker.read()["tracker_orientation_ties"]["value"] == 0  # no read-back
    tracker.set(dataclasses.replace(record, readback=readback))
    assert tracker.read()["tracker_orientation_ties"]["value"] == 3
    tracker.set(dataclasses.replace(record, readback=readback, status="skipped: no counts"))
    assert tracker.read()["tracker_orientation_ties"]["value"] == 0  # a held frame read nothing


def test_tracker_without_an_estimate_publishes_nan():
    tracker = LatentTracker(3, 8)
    tracker.set(None)
    assert np.isnan(tracker.latent.get()).all() and math.isnan(tracker.cost.get())
    assert tracker.es_steps.get() == 0 and tracker.status.get().startswith("skipped")


def test_tracker_is_validated(tiny_model):
    tracker = LatentTracker.for_model(tiny_model)
    assert (tracker.k, tracker.n) == (4, 8)
    with pytest.raises(ValueError, match="`value.latent` must have shape"):
        tracker.set(_record(k=5))
    with pytest.raises(ValueError, match="`value.density` must have shape"):
        tracker.set(_record(n=6))
    with pytest.raises(TypeError, match="FrameRecord"):
        tracker.set({"latent": [0, 0, 0, 0]})
    with pytest.raises(ValueError, match="`k` must be an integer >= 1"):
        LatentTracker(0, 8)
    with pytest.raises(ValueError, match="`n` must be an integer >= 4"):
        LatentTracker(2, 2.5)


def test_tracker_moves_with_bps_mv_in_a_run_engine():
    import bluesky.plan_stubs as bps
    from bluesky import RunEngine

    tracker = LatentTracker(4, 8)
    record = _record()
    RE = RunEngine({})
    RE(bps.mv(tracker, record))
    np.testing.assert_array_equal(tracker.latent.get(), record.latent)


def test_array_signal_describes_its_current_value():
    signal = ArraySignal(name="frame", value=np.zeros((2, 3), dtype=np.uint16))
    assert signal.describe()["frame"] == {"source": "SIM:frame", "dtype": "array", "shape": [2, 3], "dtype_numpy": "<u2"}
