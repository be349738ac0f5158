"""The tracking loop: :func:`latenttune.tracking.track` and its strategies (ES, one-shot, gradient).

Tiny models (n = 8, k = 4) from ``conftest.py``; frames are made from the model's own decoder,
``I = forward(decode(z)) * 1e6`` (optionally Poisson), so the truth lies inside the latent space.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from controllers import ExtremumSeeking
from controllers.extremum_seeking import from_unit_box
from latenttune.model.latent_cost import LatentCost
from latenttune.model.latent_walk import latent_walk_scenario
from latenttune.metrics import real_space_error
from latenttune.model import LoadedModel
from latenttune.physics import forward
from latenttune.tracking import (
    ESStrategy,
    FrameRecord,
    GradientStrategy,
    OneShotStrategy,
    TrackResult,
    make_strategy,
    track,
)

K = 4  # latent dimension of the tiny models
N = 16  # diffraction grid of the tiny models
PHOTONS = 1e6


def _decode(model, z) -> np.ndarray:
    with torch.inference_mode():
        return model.decode(np.asarray(z, dtype=np.float32))[0].cpu().numpy()


def _pattern(model, z, rng: np.random.Generator | None = None) -> np.ndarray:
    """``forward(decode(z)) * 1e6`` (Poisson counts when ``rng`` is given), float32 (N, N, N)."""
    intensity = np.asarray(forward(_decode(model, z)), dtype=np.float64) * PHOTONS
    if rng is not None:
        intensity = rng.poisson(intensity)
    return intensity.astype(np.float32)


@pytest.fixture
def frames(lively_model):
    """Four (intensity, mask) pairs of a slowly moving latent, with a small beamstop mask."""
    mask = np.zeros((N, N, N), dtype=bool)
    mask[N // 2, N // 2, N // 2] = True
    z0 = np.array([0.3, -0.2, 0.1, 0.4])
    return [(_pattern(lively_model, z0 + 0.02 * t), mask) for t in range(4)]


# -- the result vocabulary -------------------------------------------------------------------


def test_result_vocabulary(lively_model, frames):
    steps = 7
    result = track(frames, lively_model, ESStrategy(K, steps_per_frame=steps, reseed=False))
    T = len(frames)
    assert isinstance(result, TrackResult)
    assert len(result.records) == T and all(isinstance(r, FrameRecord) for r in result.records)
    assert [r.index for r in result.records] == list(range(T))
    assert [r.time for r in result.records] == [float(t) for t in range(T)]
    assert result.latent.shape == (T, K)
    assert result.cost.shape == (T,)
    assert result.density.shape == (T, 8, 8, 8) and result.density.dtype == np.complex64
    assert result.seconds.shape == (T,) and np.all(result.seconds > 0)
    assert result.status == 0 and result.message == "all frames processed"
    assert result.nit == T * steps == sum(r.steps for r in result.records)
    np.testing.assert_array_equal(result.x, result.records[-1].latent)
    assert result.fun == result.records[-1].cost
    for r in result.records:
        assert r.status == "ok" and r.steps == steps and r.step_costs.shape == (steps,)
        # the reported latent is the best one evaluated on the frame, and its density is decode(latent)
        assert r.cost == float(r.step_costs.min())
        np.testing.assert_allclose(r.density, _decode(lively_model, r.latent), atol=1e-6)
        assert r.state["controller"]["state"]["n"] == steps * (r.index + 1)


def test_frame_objects_with_index_and_time_are_used(lively_model, frames):
    """Frames that carry ``index``/``time`` (like :class:`latenttune.io.Frame`) keep them."""
    from latenttune.io import Frame

    objs = [Frame(intensity=i, mask=m, time=0.5 * t, index=10 + t) for t, (i, m) in enumerate(frames[:2])]
    result = track(objs, lively_model, OneShotStrategy(lively_model.latent_dim))
    assert [r.index for r in result.records] == [10, 11]
    assert [r.time for r in result.records] == [0.0, 0.5]


def test_callback_returning_true_stops_after_that_frame(lively_model, frames):
    seen = []

    def callback(record):
        seen.append(record.index)
        return record.index == 1

    result = track(frames, lively_model, ESStrategy(K, steps_per_frame=3), callback=callback)
    assert seen == [0, 1]
    assert len(result.records) == 2
    assert result.status == 1 and "stopped" in result.message
    assert result.nit == 6


def test_bad_frames_are_skipped_and_the_estimate_held(lively_model, frames, caplog):
    nan_frame = frames[1][0].copy()
    nan_frame[3, 4, 5] = np.nan
    zero_frame = np.zeros_like(frames[0][0])
    mask = frames[0][1]
    only_masked = np.zeros_like(frames[0][0])
    only_masked[mask] = 1e3  # counts only where nothing was measured
    series = [frames[0], (nan_frame, mask), (zero_frame, None), (only_masked, mask), frames[1]]
    with caplog.at_level(logging.WARNING, logger="latenttune.tracking"):
        result = track(series, lively_model, ESStrategy(K, steps_per_frame=4, reseed=False))
    assert len(result.records) == 5
    first, *skipped, last = result.records
    assert first.status == "ok" and last.status == "ok"
    assert [r.status for r in skipped] == [
        "skipped: non-finite intensity",
        "skipped: no counts on the measured voxels",
        "skipped: no counts on the measured voxels",
    ]
    for r in skipped:
        np.testing.assert_array_equal(r.latent, first.latent)
        np.testing.assert_array_equal(r.density, first.density)
        assert np.isnan(r.cost) and r.steps == 0 and np.isnan(r.encoded).all()
    assert result.nit == 8  # no evaluation on a skipped frame
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    for index in (1, 2, 3):
        assert any(f"frame {index} skipped" in w for w in warned), warned
    # ES carried on from where it was after frame 0: no evaluation happened in between
    assert last.state["controller"]["state"]["n"] == 8


def test_a_leading_bad_frame_has_nothing_to_hold(lively_model, frames, caplog):
    zero = np.zeros_like(frames[0][0])
    with caplog.at_level(logging.WARNING, logger="latenttune.tracking"):
        result = track([(zero, None), frames[0]], lively_model, ESStrategy(K, steps_per_frame=3))
    assert [r.index for r in result.records] == [1]
    assert any("nothing to hold" in rec.getMessage() for rec in caplog.records)
    # the first good frame still starts from the encoder's prediction
    assert np.isfinite(result.records[0].encoded).all()


def test_resumed_run_holds_the_given_latent_over_a_bad_first_frame(tiny_model, frames):
    """``held_latent`` (resume) is decoded for a skipped first frame, also for a model with gradients on."""
    held = np.array([0.1, -0.5, 0.2, 0.0])
    zero = np.zeros_like(frames[0][0])
    strategy = ESStrategy(K, steps_per_frame=3)
    result = track([(zero, None)], tiny_model, strategy, start_index=5, held_latent=held)
    (record,) = result.records
    assert record.index == 5 and record.status.startswith("skipped")
    np.testing.assert_array_equal(record.latent, held)
    np.testing.assert_allclose(record.density, _decode(tiny_model, held), atol=1e-6)


def test_non_finite_values_in_masked_voxels_do_not_matter(lively_model, frames):
    intensity, mask = frames[0]
    dirty = intensity.copy()
    dirty[mask] = np.nan
    clean = track([(intensity, mask)], lively_model, ESStrategy(K, steps_per_frame=5))
    result = track([(dirty, mask)], lively_model, ESStrategy(K, steps_per_frame=5))
    assert result.records[0].status == "ok"
    np.testing.assert_array_equal(result.records[0].step_costs, clean.records[0].step_costs)


# -- the box --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["absolute", "residual"])
def test_latent_never_leaves_the_box_even_with_a_huge_gain(lively_model, frames, mode):
    intensity, mask = frames[0]
    cost = LatentCost(lively_model, intensity, mask)
    strategy = ESStrategy(K, steps_per_frame=60, mode=mode, gain=1e6, dither=1.0, residual_width=2.0)
    encoded = np.array([0.97, -0.99, 0.9, -0.95])  # near the corners: residual offsets push outside
    evaluated = []
    for t in range(3):
        latents, costs = strategy.run_frame(cost, encoded, first=t == 0)
        evaluated.append(latents)
        assert costs.shape == (60,) and np.isfinite(costs).all()
    evaluated = np.concatenate(evaluated)
    assert np.abs(evaluated).max() <= 1.0
    assert np.isclose(np.abs(evaluated).max(), 1.0)  # it did reach the walls (the clip is active)
    result = track(frames, lively_model, ESStrategy(K, steps_per_frame=20, mode=mode, gain=1e6, dither=1.0))
    assert np.abs(result.latent).max() <= 1.0


# -- modes ----------------------------------------------------------------------------------


def _count_encodes(model, monkeypatch) -> list:
    calls = []
    original = model.encode_tensor  # the path every encoding takes (encode, choose_encoder)

    def counting(intensity, mask=None, encoder=0):
        calls.append(encoder)
        return original(intensity, mask, encoder)

    monkeypatch.setattr(model, "encode_tensor", counting)
    return calls


def test_absolute_mode_starts_from_the_encoder_then_continues(lively_model, frames, monkeypatch):
    steps = 6
    calls = _count_encodes(lively_model, monkeypatch)
    with torch.inference_mode():
        encoded0 = lively_model.encode(*frames[0])[0].cpu().numpy().astype(np.float64)
    calls.clear()
    evaluated: list[np.ndarray] = []
    original_call = LatentCost.__call__

    def recording(self, z):
        evaluated.append(np.array(z, dtype=np.float64, copy=True))
        return original_call(self, z)

    monkeypatch.setattr(LatentCost, "__call__", recording)
    strategy = ESStrategy(K, steps_per_frame=steps, mode="absolute", reseed=False)
    assert not strategy.needs_encoder
    result = track(frames, lively_model, strategy, views=1)  # the identity view: what this test checks
    assert len(calls) == 1  # only the first frame is encoded
    np.testing.assert_array_equal(result.records[0].encoded, encoded0)
    assert all(np.isnan(r.encoded).all() for r in result.records[1:])
    # ES's first evaluated latent is the encoder's prediction (clipped to the box)
    np.testing.assert_allclose(evaluated[0].ravel(), np.clip(encoded0, -1, 1), rtol=0, atol=1e-12)
    # each later frame's first evaluation continues the controller where the last frame left it
    for t in range(1, len(frames)):
        state = result.records[t - 1].state["controller"]
        controller = ExtremumSeeking.from_dict(state)
        np.testing.assert_array_equal(evaluated[t * steps].ravel(), controller.suggest())
        np.testing.assert_array_equal(
            evaluated[t * steps].ravel(), from_unit_box(controller.params, state["state"]["z"])
        )
    assert len(evaluated) == steps * len(frames)


def _recording_cost(monkeypatch) -> list[np.ndarray]:
    evaluated: list[np.ndarray] = []
    original_call = LatentCost.__call__

    def recording(self, z):
        evaluated.append(np.atleast_2d(np.array(z, dtype=np.float64, copy=True)))
        return original_call(self, z)

    monkeypatch.setattr(LatentCost, "__call__", recording)
    return evaluated


def test_reseeding_compares_the_current_latent_with_the_encoding_first(lively_model, frames, monkeypatch):
    """Each later frame starts with one batch of two: the controller's position and the encoding."""
    steps = 6
    evaluated = _recording_cost(monkeypatch)
    strategy = ESStrategy(K, steps_per_frame=steps)  # reseed is the default
    assert strategy.reseed and strategy.needs_encoder
    result = track(frames, lively_model, strategy, views=1)  # the identity view: what this test checks
    assert all(r.steps == steps and r.step_costs.shape == (steps,) for r in result.records)
    calls_per_later_frame = 1 + (steps - 2)  # the pair, then single ES evaluations
    assert len(evaluated) == steps + calls_per_later_frame * (len(frames) - 1)
    for t in range(1, len(frames)):
        pair = evaluated[steps + (t - 1) * calls_per_later_frame]
        previous = ExtremumSeeking.from_dict(result.records[t - 1].state["controller"])
        np.testing.assert_array_equal(pair[0], previous.suggest())
        np.testing.assert_array_equal(pair[1], np.clip(result.records[t].encoded, -1, 1))
        # the reported latent is the best evaluated, so never worse than the encoder's prediction
        assert result.records[t].cost <= float(result.records[t].step_costs[1])


def test_reseeding_restarts_at_the_encoding_after_a_jump(lively_model, monkeypatch):
    """After a sudden change a good encoding beats the stale latent and ES restarts there.

    The tiny model's encoder is untrained, so a perfect encoder (it returns the frame's true
    latent) stands in for a trained one.
    """
    mask = np.zeros((N, N, N), dtype=bool)
    before, after = np.array([0.5, -0.4, 0.3, 0.5]), np.array([-0.5, 0.4, -0.3, -0.5])
    jump = [(_pattern(lively_model, before), mask)] * 2 + [(_pattern(lively_model, after), mask)]
    truths = iter([before, before, after])
    monkeypatch.setattr(lively_model, "encode_tensor", lambda intensity, mask=None, encoder=0: torch.tensor(next(truths))[None])
    reseeded = track(jump, lively_model, ESStrategy(K, steps_per_frame=8), views=1)  # the patched encoder
    costs = reseeded.records[2].step_costs
    assert costs[1] < costs[0]  # the encoding fits the new frame better than the held latent
    assert reseeded.records[2].state["controller"]["state"]["n"] == 8 - 2  # restarted at the encoding
    np.testing.assert_allclose(reseeded.records[2].latent, after, atol=0.05)  # locked on at once


def test_residual_mode_adds_a_correction_to_every_frames_encoding(lively_model, frames, monkeypatch):
    steps = 5
    calls = _count_encodes(lively_model, monkeypatch)
    strategy = ESStrategy(K, steps_per_frame=steps, mode="residual", residual_width=0.3)
    assert strategy.needs_encoder and strategy.name == "es-residual"
    result = track(frames, lively_model, strategy, views=1)  # the identity view: what this test checks
    assert len(calls) == len(frames)
    assert all(np.isfinite(r.encoded).all() for r in result.records)
    # the best latent is within residual_width of the frame's encoding (the correction's box)
    for r in result.records:
        assert np.abs(r.latent - r.encoded).max() <= 0.3 + 1e-6
        assert np.abs(r.latent).max() <= 1.0
    # the controller state persists across frames (n counts every evaluation)
    assert result.records[-1].state["controller"]["state"]["n"] == steps * len(frames)


def test_modes_give_different_trajectories(lively_model, frames):
    absolute = track(frames, lively_model, ESStrategy(K, steps_per_frame=5, mode="absolute"))
    residual = track(frames, lively_model, ESStrategy(K, steps_per_frame=5, mode="residual"))
    assert absolute.status == residual.status == 0
    assert not np.array_equal(absolute.latent[1:], residual.latent[1:])


def test_es_is_deterministic(lively_model, frames):
    a = track(frames, lively_model, ESStrategy(K, steps_per_frame=5))
    b = track(frames, lively_model, ESStrategy(K, steps_per_frame=5))
    np.testing.assert_array_equal(a.latent, b.latent)
    np.testing.assert_array_equal(a.cost, b.cost)


def test_strategy_state_round_trip_continues_exactly(lively_model, frames):
    whole = track(frames, lively_model, ESStrategy(K, steps_per_frame=5))
    head = track(frames[:2], lively_model, ESStrategy(K, steps_per_frame=5))
    resumed = ESStrategy(K, steps_per_frame=5)
    resumed.load_state_dict(head.records[-1].state)
    tail = track(frames[2:], lively_model, resumed, start_index=2, held_latent=head.x)
    assert [r.index for r in tail.records] == [2, 3]
    np.testing.assert_array_equal(np.concatenate([head.cost, tail.cost]), whole.cost)
    np.testing.assert_array_equal(np.concatenate([head.latent, tail.latent]), whole.latent)


# -- one-shot and gradient comparators -------------------------------------------------------


def test_one_shot_is_the_encoder_per_frame(lively_model, frames):
    result = track(frames, lively_model, make_strategy("one-shot", K), views=1)  # the identity view: what this test checks
    assert result.nit == len(frames)
    for record, (intensity, mask) in zip(result.records, frames):
        with torch.inference_mode():
            expected = lively_model.encode(intensity, mask)[0].cpu().numpy()
        np.testing.assert_array_equal(record.latent, expected.astype(np.float64))
        np.testing.assert_array_equal(record.encoded, record.latent)
        assert record.steps == 1
        assert record.cost == pytest.approx(float(LatentCost(lively_model, intensity, mask)(expected)[0]), rel=1e-6)


def test_gradient_strategy_reduces_the_cost_on_a_static_frame(lively_model):
    intensity = _pattern(lively_model, [0.3, -0.2, 0.1, 0.4])
    strategy = make_strategy("gradient", K, steps_per_frame=25)
    assert isinstance(strategy, GradientStrategy)
    result = track([(intensity, None)], lively_model, strategy)
    costs = result.records[0].step_costs
    assert costs.shape == (25,) and result.nit == 25
    assert costs[-1] < 0.25 * costs[0]
    assert np.mean(np.diff(costs) < 0) > 0.8  # nearly monotone descent
    assert result.records[0].cost == costs.min()
    assert np.abs(result.latent).max() <= 1.0


def test_only_the_gradient_comparator_uses_the_network_gradient():
    assert GradientStrategy.uses_network_gradient is True
    assert make_strategy("gradient", K, steps_per_frame=2).uses_network_gradient is True
    assert ESStrategy.uses_network_gradient is False
    assert make_strategy("es", K, steps_per_frame=2).uses_network_gradient is False
    assert make_strategy("one-shot", K).uses_network_gradient is False


def test_es_never_asks_for_the_network_gradient(lively_model, frames):
    """ES runs entirely without autograd: costs are evaluated under inference mode."""
    grads = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: grads.append(torch.is_grad_enabled() and not torch.is_inference_mode_enabled())
    )
    try:
        track(frames[:2], lively_model, ESStrategy(K, steps_per_frame=3))
    finally:
        handle.remove()
    assert grads and not any(grads)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_strategy("newton", K), "`strategy` must be one of"),
        (lambda: make_strategy("one-shot", K, gain=2.0), "one-shot strategy takes no options"),
        (lambda: make_strategy("es", K, steps_per_frame=0), "`steps_per_frame` must be a positive integer"),
        (lambda: make_strategy("es", K, mode="relative"), "`mode` must be one of"),
        (lambda: ESStrategy(K, mode="residual", residual_width=3.0), "`residual_width` must be in"),
        (lambda: GradientStrategy(K, lr=0.0), "`lr` must be a positive"),
    ],
)
def test_bad_strategy_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reseed_must_be_a_bool():
    with pytest.raises(TypeError, match="`reseed` must be a bool"):
        ESStrategy(K, reseed="yes")


# -- ES locks on to a latent walk inside the model's latent space ------------------------------


def test_es_tracks_a_latent_walk_inside_the_latent_space(lively_model):
    """Default ES settings, a slow seeded walk with Poisson noise: small cost and E_r after lock-in.

    Measured (10 walk seeds, 16 frames, 150 steps per frame, frames 3..15): E_r at most
    0.06 to 0.14 (median 0.04 to 0.10) against a truth that drifts by E_r 0.5 to 0.9 over the
    walk; cost at most 0.002 to 0.009, from 0.07 to 0.4 at the encoder's start. The floor is set by
    the persistent dither (0.1 of the box): the noise-only cost is about 1e-5.
    """
    loaded = LoadedModel(model=lively_model, path=Path("lively.pt"), checksum="lively")
    T, steps, lock_in = 16, 150, 3
    scenario = latent_walk_scenario(
        loaded, np.random.default_rng(3), num_frames=T, bounds=(-0.5 * np.ones(K), 0.5 * np.ones(K)),
        max_frequency=0.25, num_modes=1,
    )
    truth = list(scenario)
    rng = np.random.default_rng(3)
    frames = [(rng.poisson(np.asarray(forward(d), dtype=np.float64) * PHOTONS).astype(np.float32), None)
              for d in truth]
    result = track(frames, lively_model, ESStrategy(K, steps_per_frame=steps))
    e_r = np.array([real_space_error(truth[t], r.density).error for t, r in enumerate(result.records)])
    drift = np.array([real_space_error(truth[t], truth[0]).error for t in range(T)])
    start_cost = result.records[0].step_costs[0]
    assert start_cost > 0.1  # the (random) encoder starts far away
    assert np.all(result.cost[lock_in:] < 0.01), result.cost
    assert np.all(e_r[lock_in:] < 0.12), e_r
    assert np.median(e_r[lock_in:]) < 0.06, e_r
    # tracking, not standing still: holding the first truth would be far worse by the end
    assert drift[-1] > 0.4 and e_r[-1] < drift[-1] / 4
    # the estimate follows the latent path itself
    path = np.stack([scenario.latent(t) for t in range(T)])
    assert np.abs(result.latent[lock_in:] - path[lock_in:]).max() < 0.2


def test_each_strategy_has_its_own_default_steps_per_frame():
    from latenttune.tracking import ES_STEPS_PER_FRAME, HYBRID_STEPS_PER_FRAME, make_strategy

    assert make_strategy("hybrid", 4).steps_per_frame == HYBRID_STEPS_PER_FRAME == 24
    assert make_strategy("es", 4).steps_per_frame == ES_STEPS_PER_FRAME == 100
    assert make_strategy("gradient", 4).steps_per_frame == ES_STEPS_PER_FRAME
    assert make_strategy("hybrid", 4, steps_per_frame=7).steps_per_frame == 7
    assert make_strategy("hybrid", 4, steps_per_frame=0).steps_per_frame == 0  # the read-back's ES off
    with pytest.raises(ValueError, match="`steps_per_frame`"):
        make_strategy("hybrid", 4, steps_per_frame=-1)
    with pytest.raises(ValueError, match="`steps_per_frame`"):
        make_strategy("es", 4, steps_per_frame=0)
