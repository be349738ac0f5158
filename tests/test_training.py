"""Training: configuration files, a short run, exact resume, DistributedDataParallel, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, tiny_tables

from latenttune.cli import build_parser, main
from latenttune.model.evaluation import held_out_generator
from latenttune.model import ModelConfig, load_checkpoint, load_model
from latenttune.model.training import RunConfig, TrainConfig, last_path, load_run_config, train, training_seeds

REPO = Path(__file__).resolve().parents[1]


def _run_config(**train_overrides) -> RunConfig:
    return RunConfig.from_dict(tiny_tables(**train_overrides))


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- configuration files ----------------------------------------------------------------------


def test_load_run_config(tiny_toml):
    config = load_run_config(tiny_toml)
    assert config.model == ModelConfig.from_dict(TINY_MODEL)
    assert config.data.n == 8  # taken from [model] when [data] does not say
    assert config.train.steps == 4 and config.train.batch_size == 2 and config.train.eval_every == 2
    assert RunConfig.from_dict(config.to_dict()) == config  # the recipe stored in checkpoints rebuilds it


@pytest.mark.parametrize(
    "table, key",
    [("model", "depth"), ("train", "epochs"), ("train.loss", "perceptual"), ("data", "colour"), ("data.detector", "pixel")],
)
def test_unknown_key_is_named(write_tiny_toml, table, key):
    tables = tiny_tables()
    tables.setdefault(table, {})[key] = 1
    with pytest.raises(ValueError, match=key):
        load_run_config(write_tiny_toml(tables=tables))


def test_unknown_table_and_bad_values(write_tiny_toml, tmp_path):
    tables = tiny_tables()
    tables["optimiser"] = {"name": "sgd"}
    with pytest.raises(ValueError, match="optimiser"):
        load_run_config(write_tiny_toml(tables=tables))
    with pytest.raises(ValueError, match="data.n"):
        load_run_config(write_tiny_toml(tables={**tiny_tables(), "data": {"n": 16}}))
    with pytest.raises(ValueError, match="train.steps"):
        load_run_config(write_tiny_toml(steps=0))
    with pytest.raises(ValueError, match="`smoothness_step`"):
        load_run_config(write_tiny_toml(tables={**tiny_tables(), "train.loss": {"smoothness_step": -1.0}}))
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nn = 8\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_run_config(broken)
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_run_config(tmp_path / "missing.toml")


def test_learning_rate_schedule():
    tc = TrainConfig(steps=100, lr=1e-2, warmup=10, min_lr_ratio=0.1)
    assert tc.learning_rate(0) == pytest.approx(1e-3)
    assert tc.learning_rate(9) == pytest.approx(1e-2)
    assert tc.learning_rate(10) == pytest.approx(1e-2)
    assert tc.learning_rate(100) == pytest.approx(1e-3)
    rates = [tc.learning_rate(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


# ---- a short run ------------------------------------------------------------------------------


def test_short_run_reduces_validation_loss_and_writes_checkpoints(tmp_path):
    config = _run_config(steps=15, eval_every=1, val_samples=4, lr=1e-2, warmup=0)
    out = tmp_path / "model.pt"
    seen = []
    result = train(config, out, callback=lambda p: seen.append(p.step))
    assert result.status == 0 and result.nit == 15 and seen == list(range(1, 16))
    assert out.is_file() and last_path(out).is_file() and last_path(out).name == "model.last.pt"

    last = load_checkpoint(last_path(out))
    history = last["extra"]["history"]
    losses = [h["validation"]["loss"] for h in history]
    assert [h["step"] for h in history] == list(range(1, 16))
    # the same fixed validation set after step 1 and after step 15 (seeded: no flakiness)
    assert losses[-1] < 0.97 * losses[0], losses
    assert max(losses[-3:]) < losses[0]
    assert last["extra"]["step"] == 15 and "optimiser" in last["extra_state"]
    assert last["recipe"] == config.to_dict()

    best = load_checkpoint(out)
    assert best["extra"]["best_val_loss"] == pytest.approx(min(losses))
    assert best["extra_state"] == {}  # the best checkpoint carries no optimiser state
    assert result.validation["loss"] == pytest.approx(losses[-1])
    loaded = load_model(out)
    assert loaded.recipe == config.to_dict() and loaded.model.config == config.model


@pytest.mark.parametrize("stop_after", [2, 3], ids=["at-validation", "between-validations"])
def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(tmp_path, stop_after):
    config = _run_config(steps=6, eval_every=2, lr=1e-2, warmup=2)
    full = train(config, tmp_path / "full.pt")

    out = tmp_path / "part.pt"
    stopped = train(config, out, callback=lambda p: p.step >= stop_after)
    assert stopped.status == 1 and stopped.nit == stop_after and "callback" in stopped.message
    assert load_checkpoint(last_path(out))["extra"]["step"] == stop_after  # written before stopping

    steps_seen = []
    resumed = train(config, out, resume=True, callback=lambda p: steps_seen.append(p.step))
    assert steps_seen == list(range(stop_after + 1, 7))
    assert resumed.status == 0 and resumed.nit == 6
    assert resumed.fun == full.fun

    a, b = load_checkpoint(last_path(tmp_path / "full.pt")), load_checkpoint(last_path(out))
    assert a["checksum"] == b["checksum"]
    assert _same_tensors(a["state_dict"], b["state_dict"])
    assert torch.equal(a["extra_state"]["noise"], b["extra_state"]["noise"])
    for sa, sb in zip(a["extra_state"]["optimiser"]["state"].values(), b["extra_state"]["optimiser"]["state"].values()):
        assert _same_tensors(sa, sb)
    assert [h["validation"] for h in a["extra"]["history"]] == [h["validation"] for h in b["extra"]["history"]]
    assert load_checkpoint(tmp_path / "full.pt")["checksum"] == load_checkpoint(out)["checksum"]


def test_resume_refuses_a_different_config_or_a_missing_state(tmp_path):
    out = tmp_path / "m.pt"
    train(_run_config(steps=2), out)
    with pytest.raises(ValueError, match="different config"):
        train(_run_config(steps=2, lr=5e-3), out, resume=True)
    with pytest.raises(FileNotFoundError, match="without --resume"):
        train(_run_config(steps=2), tmp_path / "other.pt", resume=True)
    with pytest.raises(ValueError, match="`device`"):
        train(_run_config(steps=2), out, device="tpu")


def test_resume_may_change_the_number_of_steps(tmp_path):
    out = tmp_path / "m.pt"
    train(_run_config(steps=4, eval_every=2), out, callback=lambda p: p.step >= 2)
    steps_seen = []
    result = train(_run_config(steps=3, eval_every=2), out, resume=True, callback=lambda p: steps_seen.append(p.step))
    assert steps_seen == [3] and result.nit == 3
    assert load_checkpoint(last_path(out))["recipe"]["train"]["steps"] == 3  # the schedule it really followed
    with pytest.raises(ValueError, match="`steps` must exceed the 3 steps"):
        train(_run_config(steps=2, eval_every=2), out, resume=True)


def test_cli_steps_overrides_the_config(tiny_toml, tmp_path):
    out = tmp_path / "cli.pt"
    assert main(["train", "--config", str(tiny_toml), "--out", str(out), "--steps", "2"]) == 0
    assert load_checkpoint(last_path(out))["extra"]["step"] == 2
    assert main(["train", "--config", str(tiny_toml), "--out", str(out), "--steps", "3", "--resume"]) == 0
    assert load_checkpoint(last_path(out))["extra"]["step"] == 3


# ---- the command line ---------------------------------------------------------------------------


def test_train_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--config", "--out", "--resume", "--device"):
        assert option in text


def test_cli_train_writes_a_loadable_model(tiny_toml, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert main(["train", "--config", str(tiny_toml), "--out", str(out)]) == 0
    assert "completed all steps" in capsys.readouterr().out
    assert load_model(out).model.config.n == 8 and last_path(out).is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(tmp_path / "nope.toml"), "--out", str(out)])
    assert exit_info.value.code == 2


def test_cli_evaluate_prints_the_identity_and_the_best_of_the_views(tiny_toml, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert main(["train", "--config", str(tiny_toml), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--samples", "2", "--seed", "77", "--views", "24"]) == 0
    printed = capsys.readouterr().out
    assert "| encoder one-shot |" in printed and "| encoder one-shot, best of 24 views by measured misfit |" in printed
    assert "time to choose among 24 views" in printed
    assert main(["evaluate", "--model", str(out), "--samples", "2", "--seed", "77", "--views", "1"]) == 0
    assert "best of" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(out), "--views", "2"])
    assert exit_info.value.code == 2
    assert "--views: invalid choice: 2" in capsys.readouterr().err


# ---- DistributedDataParallel (CPU, gloo, two ranks) ------------------------------------------------


def test_torchrun_two_ranks_agree(tiny_toml, tmp_path):
    out = tmp_path / "ddp.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        "-m", "latenttune.cli", "train", "--config", str(tiny_toml), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("completed all steps") == 1  # only rank 0 prints

    last = load_checkpoint(last_path(out))
    assert last["extra"]["step"] == 4
    checksums = last["extra"]["rank_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1] == last["checksum"]
    noise = last["extra_state"]["noise_by_rank"]
    assert len(noise) == 2 and not torch.equal(noise[0], noise[1])  # each rank its own perturbations
    best = load_checkpoint(out)
    assert best["extra"]["rank_checksums"][0] == best["extra"]["rank_checksums"][1] == best["checksum"]

    # world size 2 trains on other pairs than one process: a different, valid model
    single = train(load_run_config(tiny_toml), tmp_path / "single.pt")
    assert single.status == 0
    assert load_checkpoint(last_path(tmp_path / "single.pt"))["checksum"] != last["checksum"]
    with torch.no_grad():
        density = load_model(out).model.decode(torch.zeros(2, 4))
    assert torch.isfinite(torch.view_as_real(density)).all()


def test_physical_model_trains_with_the_supervised_term(tmp_path):
    """A physics-structured model trains end to end; the supervised parameter term is reported and falls."""
    tables = tiny_tables(steps=6, eval_every=3, val_samples=4, lr=3e-3, warmup=1)
    tables["model"] = {"n": 8, "latent_dim": 2, "encoder_channels": [4, 8], "decoder_channels": [8, 4], "hidden": 32,
                       "physical": True, "encoder_stem": "two-scale"}
    tables["data"] = {"mix": {"dislocated": 1.0}, "max_dislocations": 1, "radius": [0.25, 0.3]}
    tables["train"]["loss"] = {"physical": 1.0}
    config = RunConfig.from_dict(tables)
    history = []
    result = train(config, tmp_path / "m.pt", callback=lambda p: history.append(p.validation) and None)
    validations = [v for v in history if v is not None]
    assert result.status == 0 and len(validations) == 2
    assert all("physical" in v and v["physical"] > 0 for v in validations)
    assert validations[-1]["loss"] < validations[0]["loss"] * 1.5  # finite and not diverging
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.model.latent_dim == 48 + 2 and loaded.model.physical_layout is not None


# ---- fine-tuning from a trained model ---------------------------------------------------------


def test_encoder_fine_tune_keeps_the_decoder_bit_for_bit_and_lowers_the_loss(tmp_path):
    base_out = tmp_path / "base.pt"
    train(_run_config(steps=3, eval_every=3, lr=1e-2, warmup=0), base_out)
    base = load_checkpoint(base_out)
    tables = tiny_tables(steps=12, eval_every=1, val_samples=4, lr=1e-2, warmup=0)
    tables["data"] = {"seed": 5}
    tables["train"].update(init_from=str(base_out), init_checksum=base["checksum"], trainable="encoder")
    config = RunConfig.from_dict(tables)
    out = tmp_path / "tuned.pt"
    train(config, out)
    tuned = load_checkpoint(last_path(out))
    decoder = [k for k in base["state_dict"] if k.startswith("decoder.")]
    encoder = [k for k in base["state_dict"] if k.startswith("encoder.") and base["state_dict"][k].is_floating_point()]
    assert decoder and encoder
    assert all(torch.equal(base["state_dict"][k], tuned["state_dict"][k]) for k in decoder)
    assert any(not torch.equal(base["state_dict"][k], tuned["state_dict"][k]) for k in encoder)
    losses = [h["validation"]["loss"] for h in tuned["extra"]["history"]]
    assert min(losses[-3:]) < losses[0]
    # where it started, and every seed its weights saw, travel with it
    origin = tuned["extra"]["init"]
    assert origin["checksum"] == base["checksum"] and origin["path"] == str(base_out)
    base_seed = RunConfig.from_dict(base["recipe"]).data.seed
    assert base_seed != 5 and origin["seeds"] == sorted({base_seed, config.train.val_seed})
    assert training_seeds(tuned["recipe"], tuned["extra"]) == {base_seed, 5, config.train.val_seed}
    with pytest.raises(ValueError, match="was used in training"):
        held_out_generator(load_model(out), base_seed)  # the starting model's data


def test_fine_tune_resumes_bit_for_bit(tmp_path):
    base_out = tmp_path / "base.pt"
    train(_run_config(steps=2, eval_every=2), base_out)
    tables = tiny_tables(steps=4, eval_every=2, lr=1e-2, warmup=0)
    tables["train"].update(init_from=str(base_out), trainable="encoder")
    config = RunConfig.from_dict(tables)
    full = train(config, tmp_path / "full.pt")
    part = tmp_path / "part.pt"
    train(config, part, callback=lambda p: p.step >= 2)
    resumed = train(config, part, resume=True)
    assert resumed.fun == full.fun
    a, b = load_checkpoint(last_path(tmp_path / "full.pt")), load_checkpoint(last_path(part))
    assert a["checksum"] == b["checksum"] and a["extra"]["init"] == b["extra"]["init"]


def test_fine_tune_refuses_a_wrong_start(tmp_path):
    base_out = tmp_path / "base.pt"
    train(_run_config(steps=1, eval_every=1), base_out)
    with pytest.raises(ValueError, match="needs `train.init_from`"):
        _run_config(trainable="encoder")
    with pytest.raises(ValueError, match="`train.trainable` must be one of"):
        _run_config(init_from=str(base_out), trainable="decoder")
    with pytest.raises(ValueError, match="`train.init_checksum` is set"):
        _run_config(init_checksum="abc")
    with pytest.raises(TypeError, match="`train.init_from` must be a string"):
        _run_config(init_from=3)
    with pytest.raises(ValueError, match="requires 'not-this-one'"):
        train(_run_config(steps=1, init_from=str(base_out), init_checksum="not-this-one"), tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(_run_config(steps=1, init_from=str(tmp_path / "missing.pt")), tmp_path / "x.pt")
    tables = tiny_tables(steps=1)
    tables["model"] = {**tables["model"], "hidden": tables["model"]["hidden"] * 2}
    tables["train"]["init_from"] = str(base_out)
    with pytest.raises(ValueError, match="differs from \\[model\\]"):
        train(RunConfig.from_dict(tables), tmp_path / "x.pt")


def test_the_shipped_fine_tune_recipe_is_valid():
    config = load_run_config(REPO / "configs" / "encoder_finetune.toml")
    reference = load_run_config(REPO / "configs" / "default_model.toml")
    assert config.model == reference.model and config.train.trainable == "encoder"
    assert config.data.seed != reference.data.seed  # new pairs
