"""End-to-end checks of the shipped default model (``latenttune/data/default_model.pt``).

Marked ``slow``: they load the real model (n = 32, N = 64) and run it on the CPU, a few seconds
each. Deselect them with ``-m "not slow"``.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from latenttune.cli import main
from latenttune.model.evaluation import evaluate_model
from latenttune.io import read_results
from latenttune.model import DEFAULT_MODEL_PATH, load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model():
    if not DEFAULT_MODEL_PATH.exists():  # pragma: no cover - the package ships it
        pytest.fail(f"the default model is missing from the package: {DEFAULT_MODEL_PATH}")
    return load_model("default")


def test_default_model_is_small_and_carries_its_recipe(default_model):
    assert DEFAULT_MODEL_PATH.stat().st_size < 20 * 2**20
    config = default_model.model.config
    assert (config.n, config.N) == (32, 64)
    assert 8 <= config.latent_dim <= 16  # the learned latent
    # ES tunes the explicit physical parameters (if any) and the learned latent together
    assert default_model.model.latent_dim == config.physical_dim + config.latent_dim
    assert default_model.recipe  # the training recipe travels with the weights
    assert len(default_model.checksum) == 16 and int(default_model.checksum, 16) >= 0  # hex digest of the weights


def test_default_model_beats_the_trivial_predictor(default_model):
    """One-shot E_r on held-out samples is well below that of the mean training density."""
    report = evaluate_model(default_model, samples=6, seed=2024, views=1)
    assert np.all(np.isfinite(report.E_r)) and np.all(report.E_r <= 2.0)
    assert np.median(report.E_r) < 0.8 * np.median(report.E_r_trivial)
    np.testing.assert_array_equal(report.E_r_views, report.E_r)  # one view: the identity's figures
    assert "best of" not in report.table()


def test_evaluate_reports_the_best_of_48_views_next_to_the_identity(default_model):
    """The view chosen by the measured misfit; on these held-out samples it fits and draws better."""
    report = evaluate_model(default_model, samples=4, seed=2025, views=48)
    assert report.views == 48 and report.view_index.shape == (4,)
    assert np.all((report.view_index >= 0) & (report.view_index < 48))
    assert "| encoder one-shot, best of 48 views by measured misfit |" in report.table()
    assert np.median(report.E_q_views) < np.median(report.E_q)
    assert np.median(report.E_r_views) < np.median(report.E_r)


def test_default_model_has_a_cycle_encoder_and_pins_the_walk_box(default_model):
    """The second encoder came from `train-cycle-encoder` on this very decoder and encoder; the box it
    trained in (and the `latent-walk` scenario walks in) is stored, and equals what the encoder gives."""
    from latenttune.model.latent_walk import latent_spread

    model = default_model.model
    assert model.encoder_count == 2 and model.config.cycle_encoder
    info = default_model.extra["cycle_encoder"]
    assert info["step"] == info["config"]["steps"]
    stored = default_model.extra["latent_spread"]
    without = dataclasses.replace(default_model, extra={k: v for k, v in default_model.extra.items() if k != "latent_spread"})
    low, high = latent_spread(without)  # recomputed with the model's own encoder
    # to float32 rounding: the encoder's sums differ in the last bits with the thread count
    np.testing.assert_allclose(low, stored["low"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(high, stored["high"], rtol=0, atol=1e-6)


def test_evaluate_reports_the_choice_between_the_two_encoders(default_model):
    report = evaluate_model(default_model, samples=3, seed=2026, views=1)
    assert report.encoder_index.shape == (3,) and set(report.encoder_index) <= {0, 1}
    assert "better of the two encoders by measured misfit" in report.table()
    for i in range(3):  # the chosen prediction is the identity's where the model's encoder was chosen
        if report.encoder_index[i] == 0:
            assert report.E_r_encoders[i] == report.E_r[i]


def test_track_demo_runs_with_the_default_model(tmp_path, capsys):
    out = tmp_path / "result.h5"
    code = main(["track", "--scenario", "growth", "--frames", "3", "--steps-per-frame", "10",
                 "--seed", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "E_r" in printed
    results = read_results(out)
    assert results.latent.shape == (3, load_model("default").model.latent_dim)
    assert np.all(np.abs(results.latent) <= 1.0)
    assert np.all(np.isfinite(results.E_r))
    assert out.with_suffix(".png").stat().st_size > 10_000

    # replaying the recorded series reproduces the live costs (same code path, same seeds)
    replayed = tmp_path / "replayed.h5"
    series = out.with_suffix(".series.cxi")  # track saves the simulated series next to its results
    assert main(["replay", str(series), "--steps-per-frame", "10", "--out", str(replayed), "--no-figure"]) == 0
    np.testing.assert_array_equal(read_results(replayed).cost, results.cost)
    with h5py.File(replayed, "r") as f:
        assert f.attrs["complete"]
