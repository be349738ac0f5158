"""Choose the latent dimension ``k`` by validation: short trainings at several ``k``, same recipe.

Run: ``python benchmarks/sweep_latent_dim.py [--dims 8,12,16] [--seeds 0,1] [--steps 800]``.

Each run takes the committed recipe (``configs/default_model.toml``) and changes only
``model.latent_dim``, the weight seed ``train.seed`` (initialisation and the smoothness term's
perturbations) and the number of steps (``train.steps``; ``train.eval_every`` and
``train.warmup`` scale with it), so the data stream, the validation set and every loss weight are
the same for every run. After training, the best checkpoint of each run is scored by

* its validation loss (the training objective on the fixed validation set, the smoothness term
  normalised per latent dimension, so comparable across ``k``), and
* ``latenttune evaluate``'s held-out figures (``--samples`` pairs, ``--seed``): median and 90th
  percentile of the one-shot E_r and the median E_q.

The choice rule, printed at the end: the smallest ``k`` whose validation loss, averaged over the
seeds, is within ``--tolerance`` (relative) of the best ``k``'s: the controller tunes ``k`` numbers by dithering, and
its convergence time grows with ``k``, so extra dimensions must earn their keep.

Runs are kept under ``--out``: a rerun skips every finished run and resumes an interrupted one
from its last checkpoint. Results: ``benchmarks/results/latent_dim.{md,json,png}``.
Short runs rank the dimensions; they do not reach the quality of the full training (see
``docs/model_card.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latenttune.model.evaluation import evaluate_model
from latenttune.model import load_checkpoint, load_model
from latenttune.model.training import TrainProgress, last_path, load_run_config, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _progress(k: int, seed: int) -> Any:
    """Training callback: one line per validation (the runs take minutes each)."""

    def report(progress: TrainProgress) -> None:
        if progress.validation is not None:
            print(
                f"k = {k}, seed {seed}: step {progress.step}/{progress.steps}, validation loss {progress.validation['loss']:.4f} "
                f"({progress.elapsed_s / 60:.1f} min)",
                flush=True,
            )

    return report


def _run_one(k: int, seed: int, steps: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train at latent dimension ``k`` with weight seed ``seed`` (unless done) and score the best checkpoint."""
    recipe = load_run_config(args.config)
    config = dataclasses.replace(
        recipe,
        model=dataclasses.replace(recipe.model, latent_dim=k),
        train=dataclasses.replace(
            recipe.train,
            steps=steps,
            seed=seed,
            eval_every=max(1, steps // args.validations),
            warmup=min(recipe.train.warmup, steps // 10),
        ),
    )
    checkpoint = Path(args.out) / f"k{k}_s{seed}.pt"
    last = last_path(checkpoint)
    if last.is_file() and load_checkpoint(last)["extra"]["step"] >= steps:
        print(f"k = {k}, seed {seed}: trained before, {checkpoint}")
    else:
        train(config, checkpoint, resume=last.is_file(), callback=_progress(k, seed))
    history = load_checkpoint(last)["extra"]
    best = load_checkpoint(checkpoint)["extra"]
    report = evaluate_model(load_model(checkpoint), samples=args.samples, seed=args.seed).summary()
    row = {
        "k": k,
        "seed": seed,
        "steps": steps,
        "train_minutes": history["elapsed_s"] / 60,
        "best_step": best["step"],
        "validation_loss": best["best_val_loss"],
        "last_validation_loss": history["history"][-1]["validation"]["loss"],
        "validation_history": [(h["step"], h["validation"]["loss"]) for h in history["history"]],
        "E_r_median": report["E_r_median"],
        "E_r_p90": report["E_r_p90"],
        "E_q_median": report["E_q_median"],
        "E_r_trivial_median": report["E_r_trivial_median"],
    }
    print(
        f"k = {k}, seed {seed}: best validation loss {row['validation_loss']:.4f} (step {row['best_step']}), "
        f"median E_r {row['E_r_median']:.3f} (p90 {row['E_r_p90']:.3f}), median E_q {row['E_q_median']:.3f}, "
        f"{row['train_minutes']:.1f} min",
        flush=True,
    )
    return row


def _by_dimension(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over the seeds of each ``k`` (and the spread of the validation loss)."""
    out = []
    for k in sorted({row["k"] for row in rows}):
        mine = [row for row in rows if row["k"] == k]
        losses = np.array([row["validation_loss"] for row in mine])
        out.append(
            {
                "k": k,
                "seeds": len(mine),
                "validation_loss": float(losses.mean()),
                "validation_loss_spread": float(losses.max() - losses.min()),
                **{key: float(np.mean([row[key] for row in mine])) for key in ("E_r_median", "E_r_p90", "E_q_median")},
            }
        )
    return out


def choose(rows: list[dict[str, Any]], tolerance: float) -> int:
    """Smallest ``k`` whose (seed-mean) validation loss is within ``tolerance`` (relative) of the best."""
    best = min(row["validation_loss"] for row in rows)
    return min(row["k"] for row in rows if row["validation_loss"] <= best * (1 + tolerance))


def _write_results(rows: list[dict[str, Any]], summary: list[dict[str, Any]], chosen: int, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"
    options = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items() if name not in ("out", "config"))
    meta = {
        "command": f"python benchmarks/sweep_latent_dim.py {options}",
        "machine": machine,
        "rule": f"smallest k whose seed-mean best validation loss is within {args.tolerance:.0%} of the best k's",
        "chosen_k": chosen,
        "by_dimension": summary,
        "runs": rows,
    }
    (RESULTS / "latent_dim.json").write_text(json.dumps(meta, indent=2))
    lines = [
        f"# Latent dimension sweep ({rows[0]['steps']} steps per run, {machine})",
        "",
        f"Command: `{meta['command']}` (recipe configs/default_model.toml, only `latent_dim`, the steps and the weight seed changed).",
        "",
        "Per run (validation loss: the best checkpoint's, the one evaluated; last: at the end of the run):",
        "",
        "| k | seed | validation loss (best step) | last validation loss | median E_r | p90 E_r | median E_q | training (min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['k']} | {row['seed']} | {row['validation_loss']:.4f} ({row['best_step']}) | {row['last_validation_loss']:.4f} | "
            f"{row['E_r_median']:.3f} | {row['E_r_p90']:.3f} | {row['E_q_median']:.3f} | {row['train_minutes']:.1f} |"
        )
    lines += [
        "",
        "Mean over seeds:",
        "",
        "| k | seeds | validation loss (spread) | median E_r | p90 E_r | median E_q |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary:
        lines.append(
            f"| {row['k']} | {row['seeds']} | {row['validation_loss']:.4f} ({row['validation_loss_spread']:.4f}) | "
            f"{row['E_r_median']:.3f} | {row['E_r_p90']:.3f} | {row['E_q_median']:.3f} |"
        )
    lines += ["", f"Rule: {meta['rule']}. Chosen: k = {chosen}.", ""]
    (RESULTS / "latent_dim.md").write_text("\n".join(lines))
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    ks = [row["k"] for row in summary]
    ax_loss.plot([row["k"] for row in rows], [row["validation_loss"] for row in rows], "o", color="0.6", label="one run")
    ax_loss.plot(ks, [row["validation_loss"] for row in summary], "o-", label="mean over seeds")
    ax_loss.set(xlabel="latent dimension k", ylabel="best validation loss", xticks=ks)
    ax_loss.legend(loc="upper left")
    ax_err.plot(ks, [row["E_r_median"] for row in summary], "o-", label="median")
    ax_err.plot(ks, [row["E_r_p90"] for row in summary], "s--", label="90th percentile")
    ax_err.set(xlabel="latent dimension k", ylabel="one-shot E_r (held out)", xticks=ks)
    ax_err.legend()
    for ax in (ax_loss, ax_err):
        ax.axvline(chosen, color="0.7", lw=1)
    fig.savefig(RESULTS / "latent_dim.png", dpi=120)
    plt.close(fig)


def _integers(text: str, name: str, parser: argparse.ArgumentParser, minimum: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        parser.error(f"{name} must be comma-separated integers, got {text!r}")
    if not values or min(values) < minimum:
        parser.error(f"{name} must be integers >= {minimum}, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default_model.toml"), help="base recipe (TOML)")
    parser.add_argument("--dims", default="8,12,16", help="comma-separated latent dimensions")
    parser.add_argument("--seeds", default="0,1", help="comma-separated weight seeds (train.seed) per dimension")
    parser.add_argument("--steps", type=int, default=800, help="training steps per run")
    parser.add_argument("--validations", type=int, default=4, help="validations per run")
    parser.add_argument("--samples", type=int, default=64, help="held-out pairs for the E_r figures")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the held-out pairs")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative validation-loss tolerance of the rule")
    parser.add_argument("--out", default="runs/latent_dim", help="folder for the runs' checkpoints")
    args = parser.parse_args()
    dims = _integers(args.dims, "--dims", parser, 1)
    seeds = _integers(args.seeds, "--seeds", parser, 0)
    if args.steps < 10:
        parser.error("--steps must be at least 10")
    logging.basicConfig(level=logging.WARNING)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = [_run_one(k, seed, args.steps, args) for seed in seeds for k in dims]
    summary = _by_dimension(rows)
    chosen = choose(summary, args.tolerance)
    _write_results(rows, summary, chosen, args)
    print((RESULTS / "latent_dim.md").read_text())


if __name__ == "__main__":
    main()
