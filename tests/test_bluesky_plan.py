"""The plan :func:`latenttune.bluesky.track_sample` under a real RunEngine.

Documents of a run, argument checks at build time, pause/resume (not rewindable), abort, stop, a
beam-loss suspender, a hook per frame, and a detector that only follows the protocol. Tiny
model (n = 8, k = 4) from ``conftest.py``; simulated growth scenario on the 16^3 grid.
"""

from __future__ import annotations

import json
import math
import threading

import bluesky.plan_stubs as bps
import event_model
import numpy as np
import pytest
import torch
from bluesky import RunEngine
from bluesky.suspenders import SuspendFloor
from bluesky.utils import RunEngineInterrupted
from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import DeviceStatus

from latenttune.bluesky import (
    ArraySignal,
    LatentTracker,
    SimulatedCDIDetector,
    SimulationOptions,
    track_sample,
)
from latenttune.frame_policy import checked_frame
from latenttune.tracking import make_strategy, track
from sim import Detector, make_scenario

K, N, STEPS = 4, 16, 5


def _detector(frames: int = 12, n: int = 8, **options) -> SimulatedCDIDetector:
    scenario = make_scenario("growth", np.random.default_rng(0), n=n, num_frames=frames)
    return SimulatedCDIDetector(scenario, Detector(photons=1e6, beamstop_radius=1.5), np.random.default_rng(1),
                                options=SimulationOptions(**options))


def _engine(rewindable: bool = False) -> tuple[RunEngine, list[tuple[str, dict]]]:
    RE = RunEngine({}, call_returns_result=True)
    RE.rewindable = rewindable
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return RE, docs


def _events(docs, stream: str = "primary") -> list[dict]:
    uids = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    return [d for n, d in docs if n == "event" and d["descriptor"] in uids]


def _costs(docs) -> np.ndarray:
    return np.array([e["data"]["tracker_cost"] for e in _events(docs)])


@pytest.fixture
def reference(lively_model):
    """Documents of an uninterrupted 10-frame run."""
    RE, docs = _engine()
    result = RE(track_sample(_detector(), LatentTracker(K, 8), lively_model, make_strategy("es", K, steps_per_frame=STEPS),
                             num=10))
    return result, docs


def _pause_after(frame_index: int):
    def per_frame(detector, tracker, frame):
        record = yield from frame()
        if record.index == frame_index:
            yield from bps.pause()
        return record

    return per_frame


# -- one run's documents --------------------------------------------------------------------------


def test_documents_of_a_ten_frame_run(reference):
    result, docs = reference
    names = [n for n, _ in docs]
    assert names == ["start", "descriptor"] + ["event"] * 10 + ["stop"]
    start, descriptor, stop = docs[0][1], docs[1][1], docs[-1][1]
    assert start["plan_name"] == "track_sample" and start["num_points"] == 10
    assert set(start["plan_args"]) == {"detector", "tracker", "model", "strategy", "num", "steps_per_frame",
                                       "per_frame", "md", "views"}
    assert start["plan_args"]["views"] == 1 and start["latenttune"]["views"] == 1  # the default
    assert start["plan_args"]["num"] == 10 and start["plan_args"]["strategy"].startswith("es-absolute(")
    assert start["latenttune"]["strategy"]["settings"]["steps_per_frame"] == STEPS
    assert start["latenttune"]["keys"]["pattern"] == "cdi_pattern" and start["latenttune"]["k"] == K
    event_model.schema_validators[event_model.DocumentNames.descriptor].validate(descriptor)
    keys = descriptor["data_keys"]
    pattern_key = keys["cdi_pattern"]
    assert (pattern_key["dtype"], pattern_key["shape"], pattern_key["dtype_numpy"]) == ("array", [N, N, N], "<f4")
    assert keys["cdi_mask"]["dtype_numpy"] == "|b1" and keys["tracker_latent"]["shape"] == [K]
    events = _events(docs)
    assert [e["seq_num"] for e in events] == list(range(1, 11))
    for event in events:
        data = event["data"]
        assert data["cdi_pattern"].dtype == np.float32 and data["cdi_pattern"].shape == (N, N, N)
        assert data["cdi_mask"].dtype == bool
        assert data["tracker_latent"].shape == (K,) and np.all(np.abs(data["tracker_latent"]) <= 1)
        assert math.isfinite(data["tracker_cost"]) and data["tracker_es_steps"] == STEPS
        assert data["tracker_status"] == "ok" and data["tracker_amplitude_slice"].shape == (8, 8)
    assert stop["exit_status"] == "success" and stop["num_events"] == {"primary": 10}
    assert result.exit_status == "success"
    np.testing.assert_array_equal(result.plan_result, events[-1]["data"]["tracker_latent"])


def test_live_costs_match_the_offline_loop_on_the_same_frames(reference, lively_model):
    _, docs = reference
    frames = [checked_frame(e["data"]["cdi_pattern"], e["data"]["cdi_mask"], N) for e in _events(docs)]
    offline = track(frames, lively_model, make_strategy("es", K, steps_per_frame=STEPS))
    np.testing.assert_array_equal(offline.cost, _costs(docs))
    np.testing.assert_array_equal(offline.latent, np.stack([e["data"]["tracker_latent"] for e in _events(docs)]))


def test_steps_per_frame_overrides_the_strategy_and_the_plan_changes_nothing_it_is_given(lively_model):
    RE, docs = _engine()
    strategy = make_strategy("es", K, steps_per_frame=50)
    before = (strategy.describe(), json.dumps(strategy.state_dict()))
    RE(track_sample(_detector(), LatentTracker(K, 8), lively_model, strategy, num=2, steps_per_frame=3))
    assert [e["data"]["tracker_es_steps"] for e in _events(docs)] == [3, 3]
    assert docs[0][1]["plan_args"]["steps_per_frame"] == 3
    assert docs[0][1]["latenttune"]["strategy"]["steps_per_frame"] == 3
    # the caller's strategy: same settings, same (fresh) state after the run
    assert (strategy.describe(), json.dumps(strategy.state_dict())) == before
    RE(track_sample(_detector(), LatentTracker(K, 8), lively_model, strategy, num=2))
    assert [e["data"]["tracker_es_steps"] for e in _events(docs)][-2:] == [50, 50]


# -- arguments are checked when the plan is built ------------------------------------------------------


def test_bad_arguments_fail_when_the_plan_is_built(lively_model):
    det, tracker = _detector(), LatentTracker(K, 8)
    es = make_strategy("es", K, steps_per_frame=STEPS)
    cases = [
        (dict(num=0), ValueError, "`num` must be None or a positive integer"),
        (dict(steps_per_frame=-1), ValueError, "`steps_per_frame`"),
        (dict(md=[("a", 1)]), TypeError, "`md` must be None or a mapping"),
        (dict(per_frame=3), TypeError, "`per_frame`"),
        (dict(views=2), ValueError, r"`views` must be one of \(1, 24, 48\)"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            track_sample(det, tracker, lively_model, es, **kwargs)
    with pytest.raises(TypeError, match="`detector` must have a callable trigger"):
        track_sample(object(), tracker, lively_model, es)
    with pytest.raises(TypeError, match="`tracker` must be a LatentTracker"):
        track_sample(det, "tracker", lively_model, es)
    with pytest.raises(ValueError, match="`tracker` is sized for k = 3"):
        track_sample(det, LatentTracker(3, 8), lively_model, es)
    with pytest.raises(TypeError, match="`model` must be a LoadedModel or LatentAutoencoder"):
        track_sample(det, tracker, "default", es)
    with pytest.raises(TypeError, match="`strategy` must be a tracking strategy"):
        track_sample(det, tracker, lively_model, object())
    with pytest.raises(ValueError, match="`strategy` works on k = 5"):
        track_sample(det, tracker, lively_model, make_strategy("es", 5))
    with pytest.raises(ValueError, match="does not apply to the 'one-shot' strategy"):
        track_sample(det, tracker, lively_model, make_strategy("one-shot", K), steps_per_frame=3)
    with pytest.raises(ValueError, match=r"pattern must have shape \[16, 16, 16\]"):
        track_sample(_detector(n=10), tracker, lively_model, es)
    # building a good plan runs nothing
    plan = track_sample(det, tracker, lively_model, es, num=3)
    assert det.frame_index.get() == 0 and det.total_counts.get() == 0.0
    plan.close()


# -- interruptions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewindable", [False, True], ids=["RE-not-rewindable", "RE-rewindable"])
def test_pause_resume_gives_ten_events_and_the_same_latents(reference, lively_model, rewindable):
    """With ``RE.rewindable = False`` as documented; and the plan stays non-rewindable even when the RE is not told."""
    _, expected = reference
    RE, docs = _engine(rewindable=rewindable)
    plan = track_sample(_detector(), LatentTracker(K, 8), lively_model, make_strategy("es", K, steps_per_frame=STEPS),
                        num=10, per_frame=_pause_after(3))
    with pytest.raises(RunEngineInterrupted):
        RE(plan)
    assert RE.state == "paused" and len(_events(docs)) == 4
    result = RE.resume()
    events = _events(docs)
    assert result.exit_status == "success" and len(events) == 10
    assert [e["seq_num"] for e in events] == list(range(1, 11))
    assert [e["data"]["cdi_frame_index"] for e in events] == list(range(10))
    assert RE.rewindable == rewindable  # restored after the run
    np.testing.assert_array_equal(_costs(docs), _costs(expected))  # no stale controller state
    np.testing.assert_array_equal(result.plan_result, _events(expected)[-1]["data"]["tracker_latent"])


def test_pause_requested_from_another_thread_mid_run(reference, lively_model):
    _, expected = reference
    RE, docs = _engine(rewindable=False)
    third = threading.Event()
    RE.subscribe(lambda name, doc: third.set() if name == "event" and doc["seq_num"] == 3 else None)
    pauser = threading.Thread(target=lambda: (third.wait(10), RE.request_pause()), daemon=True)
    pauser.start()
    # a slow exposure keeps the run going while the pause request travels
    plan = track_sample(_detector(exposure=0.05), LatentTracker(K, 8), lively_model,
                        make_strategy("es", K, steps_per_frame=STEPS), num=10)
    with pytest.raises(RunEngineInterrupted):
        RE(plan)
    pauser.join(5)
    paused_at = len(_events(docs))
    assert 3 <= paused_at < 10
    result = RE.resume()
    assert result.exit_status == "success"
    assert [e["seq_num"] for e in _events(docs)] == list(range(1, 11))
    np.testing.assert_array_equal(_costs(docs), _costs(expected))


def test_abort_closes_the_run_with_exit_status_abort(lively_model):
    RE, docs = _engine()
    plan = track_sample(_detector(), LatentTracker(K, 8), lively_model, make_strategy("es", K, steps_per_frame=STEPS),
                        num=10, per_frame=_pause_after(1))
    with pytest.raises(RunEngineInterrupted):
        RE(plan)
    result = RE.abort(reason="sample lost")
    assert result.exit_status == "abort"
    assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "abort"
    assert len(_events(docs)) == 2


def test_unlimited_run_stops_with_exit_status_success(lively_model):
    RE, docs = _engine()
    plan = track_sample(_detector(), LatentTracker(K, 8), lively_model, make_strategy("es", K, steps_per_frame=STEPS),
                        num=None, per_frame=_pause_after(4))
    with pytest.raises(RunEngineInterrupted):
        RE(plan)
    result = RE.stop()
    assert result.exit_status == "success" and docs[-1][1]["exit_status"] == "success"
    assert len(_events(docs)) == 5 and "num_points" not in docs[0][1]


def test_beam_loss_suspends_holds_the_latent_and_resumes(lively_model):
    RE, docs = _engine()
    RE.record_interruptions = True
    det = _detector(beam_loss=((4, 0.3),))
    RE.install_suspender(SuspendFloor(det.beam_current, 0.5, resume_thresh=0.9))
    result = RE(track_sample(det, LatentTracker(K, 8), lively_model, make_strategy("es", K, steps_per_frame=STEPS),
                             num=8))
    assert result.exit_status == "success"
    interruptions = _events(docs, "interruptions")
    assert interruptions and "fell below 0.5" in interruptions[0]["data"]["interruption"]
    events = _events(docs)
    assert len(events) == 8
    lost = events[4]["data"]
    assert lost["cdi_exposure_current"] == 0.0 and lost["tracker_status"].startswith("skipped")
    assert math.isnan(lost["tracker_cost"]) and lost["tracker_es_steps"] == 0
    np.testing.assert_array_equal(lost["tracker_latent"], events[3]["data"]["tracker_latent"])  # held
    assert events[4]["time"] - events[3]["time"] >= 0.25  # the run waited for the beam
    after = events[5]["data"]
    assert after["tracker_status"] == "ok" and math.isfinite(after["tracker_cost"])
    assert after["cdi_beam_current"] == 1.0


# -- hooks and other detectors -------------------------------------------------------------------------


def test_per_frame_hook_runs_around_each_frame(lively_model):
    RE, docs = _engine()
    calls = []

    def per_frame(detector, tracker, frame):
        calls.append(detector.name)
        yield from bps.null()
        return (yield from frame())

    RE(track_sample(_detector(), LatentTracker(K, 8), lively_model, make_strategy("one-shot", K), num=3,
                    per_frame=per_frame))
    assert calls == ["cdi"] * 3 and len(_events(docs)) == 3
    assert [e["data"]["tracker_es_steps"] for e in _events(docs)] == [1, 1, 1]


def test_a_hook_that_skips_the_frame_fails_the_run(lively_model):
    RE, docs = _engine()

    def per_frame(detector, tracker, frame):
        yield from bps.null()

    with pytest.raises(RuntimeError, match="`per_frame` must run the frame plan"):
        RE(track_sample(_detector(), LatentTracker(K, 8), lively_model, make_strategy("one-shot", K), num=3,
                        per_frame=per_frame))
    assert docs[-1][1]["exit_status"] == "fail"


class StackDetector(Device):
    """A detector that only follows the protocol: 3-D patterns assembled elsewhere, no mask signal."""

    pattern = Cpt(ArraySignal, value=None)

    def __init__(self, patterns, **kwargs):
        super().__init__(**kwargs)
        self.patterns = patterns
        self.count = 0
        self.pattern.put(np.zeros_like(patterns[0]))

    mask = None

    def trigger(self):
        self.pattern.put(self.patterns[self.count % len(self.patterns)])
        self.count += 1
        status = DeviceStatus(self)
        status.set_finished()
        return status


def test_any_detector_that_follows_the_protocol_works(lively_model):
    measured = _detector()
    patterns = []
    for _ in range(3):
        measured.trigger()
        patterns.append(measured.pattern.get().astype(np.uint32))  # integer counts, as detectors give
    RE, docs = _engine()
    det = StackDetector(patterns, name="stack")
    RE(track_sample(det, LatentTracker(K, 8), lively_model, make_strategy("es", K, steps_per_frame=STEPS), num=3))
    events = _events(docs)
    assert len(events) == 3 and docs[0][1]["latenttune"]["keys"]["mask"] is None
    assert events[0]["data"]["stack_pattern"].dtype == np.uint32
    offline = track([(p.astype(np.float32), None) for p in patterns], lively_model,
                    make_strategy("es", K, steps_per_frame=STEPS))
    np.testing.assert_array_equal(offline.cost, _costs(docs))


def test_hybrid_run_stores_the_refined_slices_and_says_which(lively_model):
    """A live run with the default (hybrid) tracker: its events carry the refined slices and what they show."""
    from latenttune.tracking.physics_settings import PhysicsSettings
    from latenttune.tracking import FrameTracker

    RE, docs = _engine()
    hybrid = make_strategy("hybrid", K, steps_per_frame=STEPS, physics=PhysicsSettings(iterations=8, er_iterations=2))
    RE(track_sample(_detector(), LatentTracker(K, 8), lively_model, hybrid, num=4))
    events = _events(docs)
    shows = [e["data"]["tracker_shows"] for e in events]
    assert len(shows) == 4 and set(shows) <= {"refined", "decoded (refinement not kept)"}
    assert "refined" in shows
    llk = np.array([e["data"]["tracker_llk"] for e in events])
    assert np.all(np.isfinite(llk) & (llk > 0))  # the Poisson LLK of each shown density
    stagnated = np.array([e["data"]["tracker_stagnated"] for e in events])
    np.testing.assert_array_equal(stagnated, (llk > PhysicsSettings().restart_llk).astype(int))
    start = docs[0][1]
    assert start["latenttune"]["strategy"]["settings"]["physics"]["iterations"] == 8
    # the same frames through a fresh tracker give the same refined slices (what the stored run replays to)
    frames = FrameTracker(lively_model, make_strategy("hybrid", K, steps_per_frame=STEPS,
                                                      physics=PhysicsSettings(iterations=8, er_iterations=2)))
    for t, event in enumerate(events):
        record = frames.step(np.asarray(event["data"]["cdi_pattern"]), np.asarray(event["data"]["cdi_mask"]), t, 0.0)
        np.testing.assert_allclose(event["data"]["tracker_amplitude_slice"], np.abs(record.output_density[4]), atol=1e-6)


def test_a_live_run_with_views_tracks_through_the_view_the_first_frame_chose(lively_model):
    from latenttune.model.views import choose_view, viewed

    RE, docs = _engine()
    detector = _detector()
    RE(track_sample(detector, LatentTracker(K, 8), lively_model, make_strategy("one-shot", K), num=2, views=48))
    start = docs[0][1]
    assert start["plan_args"]["views"] == 48 and start["latenttune"]["views"] == 48
    first = _events(docs)[0]["data"]
    choice = choose_view(lively_model, first["cdi_pattern"], first.get("cdi_mask"), views=48)
    assert abs(_costs(docs)[0] - choice.costs[choice.index]) <= 1e-4 * choice.costs[choice.index]
    with torch.inference_mode():
        z = viewed(lively_model, choice.index).encode(first["cdi_pattern"], first.get("cdi_mask"))[0].numpy()
    np.testing.assert_allclose(_events(docs)[0]["data"]["tracker_latent"], z, atol=1e-5)
