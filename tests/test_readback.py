"""The default tracker's read-back: the latent put next to the physics stage's output, without the network gradient."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sim
from latenttune.model import LatentAutoencoder, ModelConfig
from latenttune.model.crystal import PhysicalLayout
from latenttune.tracking import make_strategy, track
from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.tracking.readback import LatentReadback, ReadbackSettings, real_space_misfit

n = 16


@pytest.fixture(scope="module")
def physical_model() -> LatentAutoencoder:
    """A tiny physics-structured model (explicit crystal parameters plus a 2-number learned part)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = LatentAutoencoder(ModelConfig(n=n, latent_dim=2, encoder_channels=(4, 8), decoder_channels=(8, 4),
                                              hidden=16, physical=True))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(4)
    scenario = sim.make_scenario("growth", rng, n=n, num_frames=3)
    detector = sim.Detector(photons=1e8, beamstop_radius=1.0)
    measured = [detector.measure(sim.forward(scenario.density(t)), rng) for t in range(3)]
    return [(m.counts, m.mask) for m in measured], [scenario.density(t) for t in range(3)]


def _hybrid(model, steps=4):
    return make_strategy("hybrid", model.latent_dim, steps_per_frame=steps,
                         physics=PhysicsSettings(iterations=10, cold_iterations=20, er_iterations=3))


def test_the_default_path_builds_no_autograd_graph_through_the_network(physical_model, frames, monkeypatch):
    """Every pass through the network during default tracking runs with gradients off; nothing calls backward."""
    calls = {"decoder": 0, "encoder": 0}
    # the decoder's convolutions (its forward, and the read-back's learned-part-only decodes) and the encoder
    for part, module in (("decoder", physical_model.decoder.features), ("encoder", physical_model.encoder)):
        original = module.forward

        def guarded(*args, _original=original, _part=part, **kwargs):
            assert not torch.is_grad_enabled(), f"the {_part} ran with autograd on"
            calls[_part] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "forward", guarded)

    def no_backward(*args, **kwargs):
        raise AssertionError("the default tracker called backward()")

    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    monkeypatch.setattr(torch.autograd, "grad", no_backward)
    strategy = _hybrid(physical_model)
    assert strategy.uses_network_gradient is False
    result = track(frames[0], physical_model, strategy)
    assert len(result.records) == 3 and calls["decoder"] > 10 and calls["encoder"] >= 3
    assert all(record.readback is not None for record in result.records)


def test_the_readback_lowers_the_real_space_misfit_and_its_controller_carries_on(physical_model, frames):
    result = track(frames[0], physical_model, _hybrid(physical_model, steps=6))
    for index, record in enumerate(result.records):
        costs = record.readback.costs
        # the start, then 6 evaluations (4 x 6 on the run's first frame, where the learned part starts far)
        assert costs.shape == ((25,) if index == 0 else (7,)) and record.readback.misfit <= costs[0]
        np.testing.assert_array_equal(record.latent[: PhysicalLayout.size], record.readback.start[: PhysicalLayout.size])
    states = [json.dumps(r.state["readback"]["controller"]["state"]) for r in result.records]
    assert len(set(states)) == 3  # the learned part's controller keeps tuning from frame to frame
    # the reported cost is the read-back latent's, on the measured pattern
    assert all(r.cost == pytest.approx(r.step_costs[-1]) for r in result.records)


def test_without_readback_the_latent_is_the_guides(physical_model, frames):
    result = track(frames[0], physical_model, make_strategy("hybrid", physical_model.latent_dim, readback=False,
                                                            physics=PhysicsSettings(iterations=10, er_iterations=3)))
    assert all(r.readback is None for r in result.records)
    assert all(r.cost == pytest.approx(float(np.min(r.step_costs))) for r in result.records)


def test_a_resumed_readback_continues_exactly(physical_model, frames):
    whole = track(frames[0], physical_model, _hybrid(physical_model))
    first = track(frames[0][:2], physical_model, _hybrid(physical_model))
    again = _hybrid(physical_model)
    again.load_state_dict(first.records[-1].state, previous_output=first.records[-1].output)
    rest = track(frames[0][2:], physical_model, again, start_index=2, held_latent=first.records[-1].latent)
    np.testing.assert_array_equal(rest.records[0].latent, whole.records[2].latent)
    assert rest.records[0].cost == whole.records[2].cost


def test_readback_settings_are_checked():
    with pytest.raises(ValueError, match="`steps`"):
        ReadbackSettings(steps=-1)
    with pytest.raises(ValueError, match="`dither`"):
        ReadbackSettings(dither=2.0)
    with pytest.raises(ValueError, match="`first_steps`"):
        ReadbackSettings(steps=10, first_steps=5)
    assert ReadbackSettings(steps=6).first_steps == 24 and ReadbackSettings(steps=6, first_steps=6).first_steps == 6


def test_the_real_space_misfit_ignores_the_global_phase_and_scale():
    rng = np.random.default_rng(0)
    d = torch.as_tensor(rng.standard_normal((n, n, n)) + 1j * rng.standard_normal((n, n, n)), dtype=torch.complex64)
    values = real_space_misfit(d, torch.stack([d, 3 * np.exp(0.7j) * d, torch.roll(d, 3, 0)]))
    assert float(values[0]) < 1e-6 and float(values[1]) < 1e-6 and float(values[2]) > 0.5


def test_a_model_without_explicit_parameters_tunes_its_whole_latent(lively_model, tiny_patterns):
    readback = LatentReadback(lively_model, ReadbackSettings(steps=5))
    with torch.no_grad():
        output = lively_model.decode(np.full(lively_model.latent_dim, 0.3))[0].numpy()
    outcome = readback.run(lively_model, output, np.zeros(lively_model.latent_dim))
    # the run's first frame: the start, then first_steps = 4 x 5 evaluations
    assert outcome.fit is None and outcome.costs.shape == (21,) and outcome.latent.shape == (lively_model.latent_dim,)


def test_a_replay_records_how_closely_the_latent_follows_the_output(physical_model, tmp_path):
    from pathlib import Path

    from latenttune.io import read_results
    from latenttune.model.checkpoint import LoadedModel
    from latenttune.tracking.replay import replay_series
    from latenttune.simulate import simulate_series

    series = simulate_series("growth", tmp_path / "s.cxi", num_frames=2, n=n, photons=1e8, seed=3)
    loaded = LoadedModel(model=physical_model, path=Path("physical.pt"), checksum="physical")
    path, _ = replay_series(series, loaded, _hybrid(physical_model), tmp_path / "r.h5")
    results = read_results(path)
    assert results.latent_misfit.shape == (2,) and np.all((results.latent_misfit >= 0) & (results.latent_misfit <= 1))
    assert np.all(results.readback_seconds > 0)
    # the first frame searched the whole orientation box (one reading or more), the second followed it
    assert results.orientation_ties.dtype.kind == "i" and results.orientation_ties[0] >= 1
    assert results.orientation_ties[1] == 1
    path, _ = replay_series(series, loaded, make_strategy("es", physical_model.latent_dim, steps_per_frame=2),
                            tmp_path / "es.h5")
    assert np.isnan(read_results(path).latent_misfit).all()
    assert (read_results(path).orientation_ties == 0).all()


def test_the_frame_line_says_when_the_orientation_was_decided_by_the_surface_energy_prior():
    import dataclasses

    from latenttune.io.rows import TruthMetrics
    from latenttune.model.explicit_fit import ExplicitFit
    from latenttune.tracking.readback import ReadbackOutcome
    from latenttune.tracking.replay import FrameReport
    from latenttune.tracking.tracker import FrameRecord

    fit = ExplicitFit(parameters=np.zeros(48), rotation=np.eye(3), facet_distances=np.zeros(26),
                      phase_coefficients=np.zeros(9), dislocation=None, support=np.zeros((1, 1, 1), bool))
    readback = ReadbackOutcome(latent=np.zeros(56), density=np.zeros((2, 2, 2), np.complex64), start=np.zeros(56),
                               costs=np.array([0.01]), fit=fit)
    record = FrameRecord(index=0, time=0.0, latent=np.zeros(56), cost=0.01, step_costs=np.zeros(1),
                         encoded=np.zeros(56), density=None, seconds=0.1, status="ok", state={}, readback=readback)
    plain = FrameReport(record, TruthMetrics(), TruthMetrics()).line()
    tied = dataclasses.replace(record, readback=dataclasses.replace(readback, fit=dataclasses.replace(
        fit, orientation_ties=3)))
    line = FrameReport(tied, TruthMetrics(), TruthMetrics()).line()
    assert "tied" not in plain and "orientation: 3 readings tied, lowest surface energy kept" in line


def test_an_output_off_the_grid_centre_reads_back_the_latent_of_the_centred_one(physical_model, frames):
    """Phase retrieval leaves a crystal's position free; facet distances are read from the grid centre, so
    the read-back centres the output first (an off-centre one read as it is gave lopsided facets)."""
    truth = frames[1][0]
    centre = np.roll(truth, [n // 2 - int(round(c)) for c in np.array(np.nonzero(np.abs(truth) > 0.5)).mean(axis=1)],
                     axis=(0, 1, 2))
    reads = []
    for shift in [(0, 0, 0), (2, -1, 1)]:
        readback = LatentReadback(physical_model, ReadbackSettings(steps=0))
        reads.append(readback.run(physical_model, np.roll(centre, shift, axis=(0, 1, 2)),
                                  np.zeros(physical_model.latent_dim)).latent)
    np.testing.assert_allclose(reads[1], reads[0], atol=1e-6)


def test_decoding_a_rendered_crystal_with_learned_codes_equals_the_decoder(physical_model):
    """The read-back renders the explicit part once and decodes only the learned part: the same densities."""
    import copy

    from latenttune.model.crystal import render_physical

    model = copy.deepcopy(physical_model)
    with torch.no_grad():  # non-zero residual heads, so that the learned part draws something
        for head in (model.decoder.amplitude, model.decoder.phasor):
            head.weight.normal_(0.0, 0.2)
            head.bias.normal_(0.0, 0.2)
    rng = np.random.default_rng(3)
    explicit = torch.as_tensor(rng.uniform(-0.5, 0.5, (1, PhysicalLayout.size)), dtype=torch.float32)
    learned = torch.as_tensor(rng.uniform(-1, 1, (4, 2)), dtype=torch.float32)
    with torch.inference_mode():
        shared = model.decoder.with_learned(render_physical(explicit, model.decoder.layout), learned)
        whole = model.decode_tensor(torch.cat([explicit.expand(4, -1), learned], dim=1))
    assert float((whole - model.decode_tensor(torch.cat([explicit, learned[:1]], dim=1))[0]).abs().max()) > 1e-3
    np.testing.assert_allclose(shared.numpy(), whole.numpy(), atol=1e-5)


def test_a_viewed_models_readback_scores_and_returns_laboratory_frame_densities(physical_model, frames):
    """The misfit is taken in the latent's own frame; it and the returned density are those of the lab frame."""
    from latenttune.model.views import viewed
    from latenttune.tracking.physics_stage import centred

    model = viewed(physical_model, 7)
    truth = frames[1][1]
    output = truth.astype(np.complex64)
    outcome = LatentReadback(model, ReadbackSettings(steps=3)).run(model, output, np.zeros(model.latent_dim))
    decoded = model.decode(torch.as_tensor(outcome.latent, dtype=torch.float32))
    np.testing.assert_allclose(outcome.density, decoded[0].numpy(), atol=1e-5)
    reference = torch.as_tensor(centred(output))
    assert abs(float(real_space_misfit(reference, decoded)[0]) - outcome.misfit) < 1e-5


def test_a_line_read_near_the_surface_stays_only_when_it_draws_the_output_better(physical_model, monkeypatch):
    """The read-back compares the crystal with and without such a line on its own misfit."""
    import dataclasses

    from latenttune.model import explicit_fit
    from latenttune.model.crystal import render_physical
    from latenttune.tracking import readback as module

    layout = PhysicalLayout(n)
    rng = np.random.default_rng(5)
    plain = np.zeros(layout.size)
    plain[layout.slice("facets")] = layout.distance_units(np.full(26, 5.0))
    plain[layout.slice("phase")] = rng.uniform(-0.1, 0.1, 9)
    lined = plain.copy()
    direction = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    lined[layout.slice("dislocation")] = np.r_[direction, layout.line_point_units(np.array([0.0, 0.0, 5.2])),
                                               0.5, 0.0, 0.0, 0.0]

    def drawn(parameters):
        with torch.no_grad():
            amplitude, phase = render_physical(torch.as_tensor(parameters[None], dtype=torch.float32), layout)
        return (amplitude * torch.exp(1j * phase))[0].numpy().astype(np.complex64)

    real = explicit_fit.fit_explicit(drawn(plain), layout)
    offered = dataclasses.replace(real, parameters=lined, without_line=dataclasses.replace(real, parameters=plain),
                                  dislocation=explicit_fit.DislocationFit(np.zeros(3), direction, 1, np.zeros(3), 0))
    monkeypatch.setattr(module, "fit_explicit", lambda *a, **k: offered)
    for output, keeps_line in ((drawn(plain), False), (drawn(lined), True)):
        readback = LatentReadback(physical_model, ReadbackSettings(steps=2))
        outcome = readback.run(physical_model, output, np.zeros(physical_model.latent_dim))
        assert (outcome.fit.dislocation is not None) == keeps_line
        expected = lined if keeps_line else plain
        np.testing.assert_array_equal(outcome.latent[: layout.size], expected)

