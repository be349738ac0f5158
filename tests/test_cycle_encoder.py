"""The cycle encoder: a second encoder trained to invert the decoder, and the tracker's choice between encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import run_cli
from latenttune.model.cycle_training import CycleConfig, train_cycle_encoder, with_cycle_encoder
from latenttune.model.encoders import choose_encoder
from latenttune.model.latent_cost import LatentCost
from latenttune.model import LoadedModel, load_checkpoint, load_model, save_checkpoint
from latenttune.physics import forward
from latenttune.tracking import ESStrategy, OneShotStrategy, track

K = 4  # the tiny model's latent dimension


def _loaded(model, tmp_path) -> LoadedModel:
    """``model`` as a loaded checkpoint whose latent box is stored (no encoding of training samples)."""
    box = {"low": [-0.5] * K, "high": [0.5] * K}
    path = tmp_path / "base.pt"
    save_checkpoint(path, model, extra={"latent_spread": box})
    return load_model(path)


def _frame(model, z, rng):
    with torch.inference_mode():
        density = model.decode(np.asarray(z, dtype=np.float32))[0].numpy()
    intensity = forward(density)
    return rng.poisson(intensity * 1e6 / intensity.sum()).astype(np.float32), None


def test_a_copied_encoder_predicts_what_the_encoder_does(lively_model, tiny_patterns):
    twin = with_cycle_encoder(lively_model)
    assert twin.encoder_count == 2 and lively_model.encoder_count == 1
    intensity, mask = tiny_patterns
    with torch.inference_mode():
        np.testing.assert_array_equal(twin.encode(intensity, mask, encoder=1), lively_model.encode(intensity, mask))
    with pytest.raises(ValueError, match="already has a cycle encoder"):
        with_cycle_encoder(twin)


def test_encoder_index_is_checked(lively_model, tiny_patterns):
    intensity, mask = tiny_patterns
    with pytest.raises(ValueError, match=r"`encoder` must be an integer from 0 to 0 .*got 1"):
        lively_model.encode(intensity, mask, encoder=1)
    with pytest.raises(ValueError, match="`encoder`"):
        with_cycle_encoder(lively_model).encode(intensity, mask, encoder=True)


def test_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="`steps`"):
        CycleConfig(steps=0)
    with pytest.raises(ValueError, match="`photons`"):
        CycleConfig(photons=(1e9, 1e7))
    with pytest.raises(ValueError, match="`margin`"):
        CycleConfig(margin=1.5)
    with pytest.raises(ValueError, match="`lr`"):
        CycleConfig(lr=1e-6, lr_min=1e-4)


def test_training_changes_only_the_cycle_encoder_and_stores_what_it_did(lively_model, tmp_path):
    loaded = _loaded(lively_model, tmp_path)
    out = tmp_path / "cycle.pt"
    result = train_cycle_encoder(loaded, out, CycleConfig(steps=3, batch_size=2, lr=1e-2, checkpoint_every=2))
    assert result.status == 0 and result.nit == 3 and np.isfinite(result.fun)
    trained = load_model(out)
    assert trained.model.encoder_count == 2 and trained.model.config.cycle_encoder
    before, after = lively_model.state_dict(), trained.model.state_dict()
    for name, value in before.items():  # decoder and model encoder untouched
        torch.testing.assert_close(after[name], value, rtol=0, atol=0)
    moved = [float((after["cycle_encoder." + n[len("encoder."):]] - v).abs().max()) for n, v in before.items()
             if n.startswith("encoder.") and v.is_floating_point()]
    assert max(moved) > 0
    info = trained.extra["cycle_encoder"]
    assert info["step"] == 3 and info["base_checksum"] == loaded.checksum and info["config"]["steps"] == 3
    assert trained.extra["latent_spread"] == {"low": [-0.5] * K, "high": [0.5] * K}


def test_a_resumed_run_gives_the_same_weights(lively_model, tmp_path):
    loaded = _loaded(lively_model, tmp_path)
    config = CycleConfig(steps=4, batch_size=2, lr=1e-2, checkpoint_every=2)
    straight = train_cycle_encoder(loaded, tmp_path / "straight.pt", config)
    stopped = train_cycle_encoder(loaded, tmp_path / "split.pt", config, callback=lambda p: p.step >= 2)
    assert stopped.status == 1 and stopped.nit == 2 and not (tmp_path / "split.pt").exists()
    resumed = train_cycle_encoder(loaded, tmp_path / "split.pt", config, resume=True)
    assert resumed.nit == 4 and resumed.fun == straight.fun
    a = load_checkpoint(tmp_path / "straight.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "split.pt")["state_dict"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="different settings"):
        train_cycle_encoder(loaded, tmp_path / "split.pt", CycleConfig(steps=6, batch_size=3), resume=True)


def test_choose_encoder_keeps_the_better_fitting_prediction(lively_model, monkeypatch):
    rng = np.random.default_rng(3)
    twin = with_cycle_encoder(lively_model)
    truth = np.array([0.4, -0.3, 0.2, -0.1])
    intensity, mask = _frame(twin, truth, rng)
    cost = LatentCost(twin, intensity, mask)
    original = twin.encode_tensor

    def cycle_knows(intensity, mask=None, encoder=0):  # the cycle encoder finds the truth
        return torch.tensor(truth, dtype=torch.float32)[None] if encoder == 1 else original(intensity, mask, 0)

    monkeypatch.setattr(twin, "encode_tensor", cycle_knows)
    choice = choose_encoder(twin, cost)
    assert choice.index == 1 and choice.costs.shape == (2,) and choice.costs[1] < choice.costs[0]
    np.testing.assert_allclose(choice.latent, truth, atol=1e-7)
    np.testing.assert_allclose(choice.costs, cost(choice.latents))
    single = choose_encoder(lively_model, LatentCost(lively_model, intensity, mask))
    assert single.index == 0 and single.costs.size == 0 and single.latents.shape == (1, K)


def test_the_tracker_starts_from_the_chosen_encoder_and_counts_its_evaluations(lively_model, monkeypatch):
    rng = np.random.default_rng(4)
    twin = with_cycle_encoder(lively_model)
    truth = np.array([-0.35, 0.25, 0.3, -0.2])
    frames = [_frame(twin, truth, rng) for _ in range(2)]
    original = twin.encode_tensor
    monkeypatch.setattr(twin, "encode_tensor", lambda intensity, mask=None, encoder=0: (
        torch.tensor(truth, dtype=torch.float32)[None] if encoder == 1 else original(intensity, mask, 0)))
    oneshot = track(frames, twin, OneShotStrategy(twin.latent_dim))
    for record in oneshot.records:
        assert record.steps == 3  # both encoders' predictions, then the one-shot's own evaluation
        np.testing.assert_allclose(record.encoded, truth, atol=1e-7)
        np.testing.assert_allclose(record.latent, truth, atol=1e-7)
    es = track(frames, twin, ESStrategy(K, steps_per_frame=6))
    assert [r.steps for r in es.records] == [8, 8]
    np.testing.assert_allclose(es.records[0].encoded, truth, atol=1e-7)
    assert es.records[0].cost <= es.records[0].step_costs[1] + 1e-12  # never worse than the best prediction


def test_cli_trains_a_cycle_encoder(capsys, tmp_path, lively_model):
    base = tmp_path / "base.pt"
    save_checkpoint(base, lively_model, extra={"latent_spread": {"low": [-0.5] * K, "high": [0.5] * K}})
    out = tmp_path / "two.pt"
    code, stdout, _ = run_cli(capsys, "train-cycle-encoder", "--model", base, "--out", out, "--steps", 2)
    assert code == 0 and "2 steps" in stdout and load_model(out).model.encoder_count == 2
    code, _, stderr = run_cli(capsys, "train-cycle-encoder", "--model", out, "--out", tmp_path / "x.pt", "--steps", 1)
    assert code != 0 and "already has a cycle encoder" in stderr
    code, _, stderr = run_cli(capsys, "train-cycle-encoder", "--model", base, "--out", out, "--steps", 2)
    assert code != 0 and "exists" in stderr


def test_the_hybrid_hands_the_predictions_that_did_not_guide_to_the_physics_stage(lively_model, monkeypatch):
    from latenttune.tracking.physics_stage import PhysicsStage
    from latenttune.tracking import make_strategy

    rng = np.random.default_rng(5)
    twin = with_cycle_encoder(lively_model)
    frames = [_frame(twin, np.array([0.3, -0.2, 0.1, 0.25]), rng) for _ in range(3)]
    seen = []
    original = PhysicsStage.run

    def recording(self, decoded, intensity, mask, index=0, alternatives=()):
        seen.append(list(alternatives))
        return original(self, decoded, intensity, mask, index, alternatives)

    monkeypatch.setattr(PhysicsStage, "run", recording)
    # encoders that predict the frame badly (sign flipped), so that the previous frame's latent (read
    # back from the physics stage's output) guides some frames
    encode_tensor = twin.encode_tensor
    monkeypatch.setattr(twin, "encode_tensor", lambda *args, **kwargs: -encode_tensor(*args, **kwargs))
    result = track(frames, twin, make_strategy("hybrid", K, steps_per_frame=6))
    guided_by_prior = []
    for record, alternatives in zip(result.records, seen):
        # the two encoders' predictions come first, then the prior (not on the first frame); the read-back's last
        guide = int(np.argmin(record.step_costs[:-1]))
        chosen, unchosen = np.argsort(record.step_costs[:2], kind="stable")
        expected = [unchosen] if guide < 2 else [chosen, unchosen]
        guided_by_prior.append(guide >= 2)
        with torch.inference_mode():
            both = torch.cat([twin.encode(*frames[record.index], encoder=e) for e in (0, 1)])
            densities = twin.decode(both[expected]).numpy()
        assert len(alternatives) == len(expected)
        # decoded in the batch of both predictions (the cost evaluation's decode): a decode of two to
        # float32 rounding (a wrong density would differ by tenths)
        np.testing.assert_allclose(np.stack(alternatives), densities, rtol=1e-5, atol=1e-5)
    assert not guided_by_prior[0] and any(guided_by_prior)  # both cases were seen
    single = []
    monkeypatch.setattr(PhysicsStage, "run", lambda self, d, i, m, index=0, alternatives=(): (
        single.append(list(alternatives)) or original(self, d, i, m, index, alternatives)))
    encode_single = lively_model.encode_tensor
    monkeypatch.setattr(lively_model, "encode_tensor", lambda *args, **kwargs: -encode_single(*args, **kwargs))
    result = track(frames, lively_model, make_strategy("hybrid", K, steps_per_frame=6))
    assert single[0] == []  # the first frame is guided by the prediction itself
    prior_guided_frames = 0
    for record, alternatives in zip(result.records[1:], single[1:]):
        with torch.inference_mode():
            prediction = lively_model.decode(lively_model.encode(*frames[record.index]))[0].numpy()
        guided_by_prior = record.step_costs[1] < record.step_costs[0]  # the prediction's cost, then the prior's
        assert len(alternatives) == int(guided_by_prior)
        if guided_by_prior:
            prior_guided_frames += 1
            np.testing.assert_allclose(alternatives[0], prediction, rtol=1e-5, atol=1e-5)
    assert prior_guided_frames > 0


def test_restart_alternatives_are_the_predictions_that_did_not_guide():
    from latenttune.tracking.tracker import FrameTracker

    class _Cost:
        def density_of(self, latent):
            return np.full((2, 2, 2), float(latent[0]), dtype=np.complex64)

    chosen, other = np.ones((2, 2, 2), np.complex64), np.zeros((2, 2, 2), np.complex64)
    encoded, prior = np.array([0.5, 0.1]), np.array([0.2, 0.3])
    alternatives = FrameTracker._alternatives
    assert alternatives(_Cost(), encoded, encoded, [chosen, other]) == [other]
    assert alternatives(_Cost(), prior, None, []) == []
    restarts = alternatives(_Cost(), prior, encoded, [chosen, other])  # the previous latent guided
    assert len(restarts) == 2 and restarts[0] is chosen and restarts[1] is other
    assert alternatives(_Cost(), encoded.copy(), encoded, []) == []
    (decoded,) = alternatives(_Cost(), prior, encoded, [])  # a single-encoder model: decoded here
    np.testing.assert_array_equal(decoded, np.full((2, 2, 2), 0.5))
