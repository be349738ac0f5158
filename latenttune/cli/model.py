"""The ``latenttune train``, ``train-cycle-encoder`` and ``evaluate`` commands: making and judging models.

:func:`add_parsers` registers them on the main parser (:func:`latenttune.cli.build_parser`); torch and
the model code are imported inside the command functions, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse

from latenttune.cli.argtypes import add_threads_option, add_views_option, command, frame_count, positive_int, seed


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``train-cycle-encoder`` and ``evaluate`` on ``sub`` (in that order)."""
    _add_train(sub)
    _add_train_cycle(sub)
    _add_evaluate(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "train", "train an autoencoder on simulated pairs (physics-aware loss)", """
        Train the 3D autoencoder on pairs drawn on the fly from the simulator. The TOML config has [model],
        [data] and [train] tables (see configs/default_model.toml). Writes the best checkpoint (by
        validation loss) to --out and a resumable one next to it (OUT.last.pt). For several GPUs or nodes,
        launch with torchrun: torchrun --nproc_per_node G -m latenttune.cli train ...
    """)
    p.add_argument("--config", required=True, help="training config (TOML)")
    p.add_argument("--out", required=True, help="best checkpoint path (.pt)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="total optimisation steps, replacing the config's [train] steps (with --resume: "
                        "lengthen or shorten the schedule of an interrupted run)")
    _add_training_run_options(p, "the same config")
    p.set_defaults(func=_cmd_train)


def _add_training_run_options(p: argparse.ArgumentParser, same: str) -> None:
    """--resume, --overwrite, --device and --threads of a training command."""
    p.add_argument("--resume", action="store_true", help=f"continue from OUT.last.pt with {same}")
    p.add_argument("--overwrite", action="store_true", help="replace OUT and OUT.last.pt if they exist")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train")
    add_threads_option(p)


def _step_bar_update(bar, progress) -> None:
    """Advance a training progress bar to ``progress.step`` (a resumed run jumps ahead) and show loss and lr."""
    bar.update(progress.step - bar.n)
    bar.set_postfix(loss=f"{progress.loss:.4f}", lr=f"{progress.lr:.2e}")


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from latenttune.cli.progress import progress_bar, say

    from latenttune.model.paths import model_path
    from latenttune.model.training import last_path, load_run_config, train
    from latenttune.outputs import check_outputs

    config = load_run_config(args.config)
    init = model_path(config.train.init_from) if config.train.init_from else None
    check_outputs({"--out": args.out, "the resumable checkpoint (OUT.last.pt)": last_path(args.out)},
                  {"the training config": args.config, "the starting model (`train.init_from`)": init},
                  overwrite=args.overwrite or args.resume)
    if args.steps is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=args.steps))
    rank = int(os.environ.get("RANK", 0))
    with progress_bar(config.train.steps, "step", "train", disable=rank != 0) as bar:

        def on_step(progress) -> None:
            _step_bar_update(bar, progress)
            if progress.validation is not None and rank == 0:
                v = progress.validation
                physical = f"  physical {v['physical']:.4f}" if "physical" in v else ""
                say(
                    f"step {progress.step:6d}  validation loss {v['loss']:.4f}  amplitude {v['amplitude']:.4f}  "
                    f"phase {v['phase']:.4f}  reciprocal {v['reciprocal']:.4f}{physical}  ({progress.elapsed_s / 60:.1f} min)"
                )

        result = train(config, args.out, resume=args.resume, device=args.device, callback=on_step)
    if rank == 0:
        print(f"{result.message}: {result.nit} steps in {result.elapsed_s / 60:.1f} min; best checkpoint {result.out}")
    return 0 if result.status in (0, 1) else 1


def _add_train_cycle(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "train-cycle-encoder",
        "give a model a second encoder that inverts its decoder (better starts on samples it draws well)", """
        Copy the model's encoder and train the copy on the decoder's own output: latents drawn in the box
        the encoder uses, decoded, measured with Poisson noise and a beamstop. The decoder and the model's
        encoder do not change; the trackers then ask both encoders and keep the prediction that fits each
        frame better. Writes the two-encoder model to --out and a resumable checkpoint next to it
        (OUT.last.pt). The defaults are the shipped model's settings (7000 steps, about 40 min on one CPU
        core).
    """)
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path (one encoder)")
    p.add_argument("--out", required=True, help="checkpoint of the two-encoder model (.pt)")
    p.add_argument("--steps", type=positive_int, default=7000, help="optimisation steps")
    p.add_argument("--seed", type=seed, default=1000, help="seed of the latents and the noise")
    _add_training_run_options(p, "the same settings")
    p.set_defaults(func=_cmd_train_cycle)


def _cmd_train_cycle(args: argparse.Namespace) -> int:
    from latenttune.cli.progress import progress_bar

    from latenttune.model.cycle_training import CycleConfig, train_cycle_encoder
    from latenttune.model.checkpoint import load_model
    from latenttune.model.paths import model_path
    from latenttune.outputs import check_outputs
    from latenttune.model.training import last_path

    check_outputs({"--out": args.out, "the resumable checkpoint (OUT.last.pt)": last_path(args.out)},
                  {"--model": model_path(args.model)}, overwrite=args.overwrite or args.resume)
    config = CycleConfig(steps=args.steps, seed=args.seed)
    loaded = load_model(args.model, device=args.device)
    if loaded.model.encoder_count > 1:
        raise ValueError(f"--model {args.model!r} already has a cycle encoder")
    with progress_bar(config.steps, "step", "cycle encoder") as bar:
        result = train_cycle_encoder(loaded, args.out, config, resume=args.resume,
                                     callback=lambda progress: _step_bar_update(bar, progress))
    print(f"{result.message}: {result.nit} steps in {result.elapsed_s / 60:.1f} min, latent error "
          f"{result.fun:.4f} (mean square, box widths); model {result.out}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "evaluate", "one-shot accuracy of a model on held-out simulated samples", """
        Draw held-out pairs from the model's own training-data recipe with a seed training never used,
        predict each density in one shot (encode, decode), and print the median and 90th percentile of the
        real-space error E_r and the amplitude error E_q, next to a trivial predictor (the mean training
        density), and the time per prediction. With --views 24 or 48 (default) also the one-shot asked in
        that many rotated/inverted views of the pattern, the view chosen by the measured misfit alone (what
        the trackers start from with --views 48).
    """)
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    p.add_argument("--samples", type=frame_count, default=64, help="number of held-out samples")
    p.add_argument("--seed", type=seed, default=12345, help="seed of the held-out samples")
    add_views_option(p, 48, "symmetric views of each pattern to choose the one-shot from (1 = identity only)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    add_threads_option(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    from latenttune.cli.progress import progress_bar

    from latenttune.model.evaluation import evaluate_model
    from latenttune.model.checkpoint import load_model

    loaded = load_model(args.model, device=args.device)
    with progress_bar(args.samples, "sample", "evaluate") as bar:

        def on_sample(index: int, e_r: float, e_q: float) -> None:
            bar.update(1)
            bar.set_postfix(E_r=f"{e_r:.3f}", E_q=f"{e_q:.3f}")

        report = evaluate_model(loaded, samples=args.samples, seed=args.seed, views=args.views, callback=on_sample)
    s = report.summary()
    print(f"model {loaded.path} (checksum {loaded.checksum}), {args.samples} held-out samples, seed {args.seed}")
    print(report.table())
    families = sorted(set(report.families))
    for family in families:
        pick = np.array([f == family for f in report.families])
        views = (f"  best of {args.views} views: median E_r {np.median(report.E_r_views[pick]):.3f}"
                 if args.views > 1 else "")
        print(f"  {family:20s} n={pick.sum():3d}  median E_r {np.median(report.E_r[pick]):.3f}  "
              f"median E_q {np.median(report.E_q[pick]):.3f}{views}")
    print(f"time per prediction (encode + decode, batch 1, {args.device}): {s['ms_per_prediction_median']:.1f} ms median")
    if args.views > 1:
        print(f"time to choose among {args.views} views: {s['ms_per_view_choice_median']:.0f} ms median; identity "
              f"view kept on {100 * s['identity_view_fraction']:.0f}% of the samples")
    return 0
