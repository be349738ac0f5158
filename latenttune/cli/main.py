"""Command-line interface: ``latenttune <command> ...``.

Only this module prints and draws progress bars; the library logs and takes callbacks.
Each sub-command lives in a small ``_cmd_*`` function that parses nothing itself: the parser
is built in :func:`build_parser` so ``--help`` documents every option.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from latenttune import __version__
from latenttune.cli.argtypes import (
    add_threads_option,
    add_views_option,
    binning,
    frame_range,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

log = logging.getLogger(__name__)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from sim.scenarios import SCENARIOS

    names = sorted(SCENARIOS)
    p = sub.add_parser(
        "simulate",
        help="simulate a time-varying sample and write its measured series (CXI) with the truth",
        description=(
            "Simulate a time-varying 3D crystal d(r, t), its diffraction |F d|^2 on the (2n)^3 grid, "
            "and a detector (Poisson counting, background, beamstop, gaps, saturation). Writes a "
            "CXI-style HDF5 series whose `entry_1/truth` group holds the ground-truth densities."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("scenario", choices=names, help="time-varying scenario to simulate")
    p.add_argument("--frames", type=positive_int, default=20, help="number of frames T")
    p.add_argument("--n", type=positive_int, default=32, help="object grid size n (diffraction grid is 2n)")
    p.add_argument("--photons", type=positive_float, default=1e8, help="expected total photons per frame")
    p.add_argument("--background", type=non_negative_float, default=0.0, help="mean background counts per voxel")
    p.add_argument("--beamstop", type=non_negative_float, default=0.0, help="beamstop radius in voxels (0: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the whole series follows from it)")
    p.add_argument("--layout", choices=["stacked", "entries"], default="stacked",
                   help="CXI layout: one 4-D dataset, or one entry per frame")
    p.add_argument("--model", default="default",
                   help="latent-walk only: the model whose decoder makes the densities ('default' or a path)")
    p.add_argument("--out", required=True, help="output file (.cxi or .h5)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    add_threads_option(p)
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from latenttune.simulate import simulate_series

    from tqdm import tqdm

    with tqdm(total=args.frames, unit="frame", desc=f"simulate {args.scenario}", file=sys.stderr) as bar:

        def on_frame(summary) -> None:
            bar.update(1)
            tqdm.write(summary.line(), file=sys.stdout)

        scenario_options = {}
        if args.scenario == "latent-walk":
            from latenttune.model.checkpoint import load_model

            loaded = load_model(args.model)
            if loaded.model.config.n != args.n:
                raise ValueError(f"`--n` must equal the model's object grid n = {loaded.model.config.n} for latent-walk")
            scenario_options = _latent_walk_options(loaded, lambda line: tqdm.write(line, file=sys.stdout))
        path = simulate_series(
            args.scenario,
            args.out,
            num_frames=args.frames,
            n=args.n,
            photons=args.photons,
            background=args.background,
            beamstop_radius=args.beamstop,
            seed=args.seed,
            layout=args.layout,
            overwrite=args.overwrite,
            callback=on_frame,
            scenario_options=scenario_options,
        )
    print(f"wrote {args.frames} frames to {path}")
    return 0


def _latent_walk_options(loaded, say) -> dict:
    """The ``latent-walk`` scenario's decoder and box for a loaded model, saying what the scenario is and does."""
    from latenttune.model.latent_walk import describe_latent_walk, latent_spread, numpy_decoder

    stored = "latent_spread" in loaded.extra
    say(describe_latent_walk(loaded))
    if not stored:
        say("finding the latent box: encoding 64 training-like samples (the checkpoint does not store it) ...")
    bounds = latent_spread(loaded)
    say(describe_latent_walk(loaded, bounds))
    return {"decode": numpy_decoder(loaded.model), "latent_bounds": bounds}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an autoencoder on simulated pairs (physics-aware loss)",
        description=(
            "Train the 3D autoencoder on pairs drawn on the fly from the simulator. The TOML config has "
            "[model], [data] and [train] tables (see configs/default_model.toml). Writes the best "
            "checkpoint (by validation loss) to --out and a resumable one next to it (OUT.last.pt). "
            "For several GPUs or nodes, launch with torchrun: "
            "torchrun --nproc_per_node G -m latenttune.cli train ..."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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

    from tqdm import tqdm

    from latenttune.outputs import check_outputs
    from latenttune.model.training import last_path, load_run_config, train

    check_outputs({"--out": args.out, "the resumable checkpoint (OUT.last.pt)": last_path(args.out)},
                  {"the training config": args.config}, overwrite=args.overwrite or args.resume)
    config = load_run_config(args.config)
    if args.steps is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=args.steps))
    rank = int(os.environ.get("RANK", 0))
    with tqdm(total=config.train.steps, unit="step", desc="train", file=sys.stderr, disable=rank != 0) as bar:

        def on_step(progress) -> None:
            _step_bar_update(bar, progress)
            if progress.validation is not None and rank == 0:
                v = progress.validation
                physical = f"  physical {v['physical']:.4f}" if "physical" in v else ""
                tqdm.write(
                    f"step {progress.step:6d}  validation loss {v['loss']:.4f}  amplitude {v['amplitude']:.4f}  "
                    f"phase {v['phase']:.4f}  reciprocal {v['reciprocal']:.4f}{physical}  ({progress.elapsed_s / 60:.1f} min)"
                )

        result = train(config, args.out, resume=args.resume, device=args.device, callback=on_step)
    if rank == 0:
        print(f"{result.message}: {result.nit} steps in {result.elapsed_s / 60:.1f} min; best checkpoint {result.out}")
    return 0 if result.status in (0, 1) else 1


def _add_train_cycle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-cycle-encoder",
        help="give a model a second encoder that inverts its decoder (better starts on samples it draws well)",
        description=(
            "Copy the model's encoder and train the copy on the decoder's own output: latents drawn in the "
            "box the encoder uses, decoded, measured with Poisson noise and a beamstop. The decoder and the "
            "model's encoder do not change; the trackers then ask both encoders and keep the prediction that "
            "fits each frame better. Writes the two-encoder model to --out and a resumable checkpoint next "
            "to it (OUT.last.pt). The defaults are the shipped model's settings (7000 steps, about 40 min "
            "on one CPU core)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path (one encoder)")
    p.add_argument("--out", required=True, help="checkpoint of the two-encoder model (.pt)")
    p.add_argument("--steps", type=positive_int, default=7000, help="optimisation steps")
    p.add_argument("--seed", type=int, default=1000, help="seed of the latents and the noise")
    _add_training_run_options(p, "the same settings")
    p.set_defaults(func=_cmd_train_cycle)


def _cmd_train_cycle(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from latenttune.model.cycle_training import CycleConfig, train_cycle_encoder
    from latenttune.model.checkpoint import load_model, model_path
    from latenttune.outputs import check_outputs
    from latenttune.model.training import last_path

    check_outputs({"--out": args.out, "the resumable checkpoint (OUT.last.pt)": last_path(args.out)},
                  {"--model": model_path(args.model)}, overwrite=args.overwrite or args.resume)
    config = CycleConfig(steps=args.steps, seed=args.seed)
    loaded = load_model(args.model, device=args.device)
    if loaded.model.encoder_count > 1:
        raise ValueError(f"--model {args.model!r} already has a cycle encoder")
    with tqdm(total=config.steps, unit="step", desc="cycle encoder", file=sys.stderr) as bar:
        result = train_cycle_encoder(loaded, args.out, config, resume=args.resume,
                                     callback=lambda progress: _step_bar_update(bar, progress))
    print(f"{result.message}: {result.nit} steps in {result.elapsed_s / 60:.1f} min, latent error "
          f"{result.fun:.4f} (mean square, box widths); model {result.out}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="one-shot accuracy of a model on held-out simulated samples",
        description=(
            "Draw held-out pairs from the model's own training-data recipe with a seed training never "
            "used, predict each density in one shot (encode, decode), and print the median and 90th "
            "percentile of the real-space error E_r and the amplitude error E_q, next to a trivial "
            "predictor (the mean training density), and the time per prediction. With --views 24 or 48 "
            "(default) also the one-shot asked in that many rotated/inverted views of the pattern, the "
            "view chosen by the measured misfit alone (what the trackers start from with --views 48)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    p.add_argument("--samples", type=positive_int, default=64, help="number of held-out samples")
    p.add_argument("--seed", type=int, default=12345, help="seed of the held-out samples")
    add_views_option(p, 48, "symmetric views of each pattern to choose the one-shot from (1 = identity only)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    add_threads_option(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from latenttune.model.evaluation import evaluate_model
    from latenttune.model.checkpoint import load_model

    loaded = load_model(args.model, device=args.device)
    with tqdm(total=args.samples, unit="sample", desc="evaluate", file=sys.stderr) as bar:

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


def _add_tracking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    p.add_argument("--strategy", choices=["hybrid", "es", "one-shot", "gradient"], default="hybrid",
                   help="hybrid: extremum seeking on z, then phase retrieval on the voxels warm-started from the "
                        "previous frame and guided by the decoded density, kept only when it fits held-out voxels "
                        "better (neither uses the network gradient); es: extremum seeking alone; one-shot: encoder "
                        "alone; gradient: Adam on z through the network gradient (comparator)")
    p.add_argument("--mode", choices=["absolute", "residual"], default="absolute", action=_Given,
                   help="tune z itself, or a correction added to the encoder's prediction of each frame")
    p.add_argument("--steps-per-frame", type=positive_int, default=None, action=_Given,
                   help="cost evaluations per frame (default: 16 for hybrid, 100 for es and gradient)")
    p.add_argument("--gain", type=positive_float, default=None, action=_Given,
                   help="ES gain k (default: the controller's)")
    p.add_argument("--dither", type=positive_float, default=None, action=_Given,
                   help="ES dither amplitude in box units")
    p.add_argument("--no-reseed", action=_GivenTrue,
                   help="ES, absolute mode: never restart from the encoder's prediction of a new frame, even when "
                        "it fits better than the current latent")
    p.add_argument("--lr", type=positive_float, default=None, action=_Given,
                   help="gradient strategy: Adam learning rate")
    p.add_argument("--physics-iterations", type=positive_int, default=None, action=_Given,
                   help="hybrid: RAAR/ER iterations on the voxels per warm-started frame (default: PhysicsSettings' "
                        "60; a cold start, e.g. the first frame, runs at least 120)")
    p.add_argument("--guide-weight", type=non_negative_float, default=None, action=_Given,
                   help="hybrid: pull of the voxel iterate towards the decoded density per iteration, in [0, 1) "
                        "(default: PhysicsSettings' 0)")
    p.add_argument("--restarts", type=non_negative_int, default=None, action=_Given,
                   help="hybrid: further starts from the decoded density tried on a frame whose refinement stagnated "
                        "(Poisson LLK above --restart-llk), its phase negated, flattened or random, after the previous "
                        "output and the other encoder's prediction (default: PhysicsSettings' 1; 0: no restart of any kind)")
    p.add_argument("--restart-llk", type=positive_float, default=None, action=_Given,
                   help="hybrid: Poisson LLK (about 1 at the noise level) above which a refinement counts as "
                        "stagnated, > 1 (default: PhysicsSettings' 1.5; raise it for data with non-Poisson noise)")
    add_views_option(p, 1, "symmetric views of the first frame to choose the model's view from (1 = the "
                           "identity; 48 fits crystals better but costs the first frame about 1-2 s; README "
                           "'Symmetric views')")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    add_threads_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace the output files if they exist")
    p.add_argument("--no-figure", action="store_true", help="do not save the summary PNG next to --out")


class _Given(argparse._StoreAction):
    """Store an option's value and remember that it was given (not a default)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        super().__call__(parser, namespace, values, option_string)
        namespace.given = getattr(namespace, "given", frozenset()) | {option_string}


class _GivenTrue(argparse._StoreTrueAction):
    """``store_true`` that remembers that the flag was given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        super().__call__(parser, namespace, values, option_string)
        namespace.given = getattr(namespace, "given", frozenset()) | {option_string}


#: Tracking options and the strategies (and ES mode) they apply to; given elsewhere, they are an error.
_STRATEGY_OPTIONS = {
    "--mode": ("hybrid", "es", "gradient"),
    "--steps-per-frame": ("hybrid", "es", "gradient"),
    "--gain": ("hybrid", "es"),
    "--dither": ("hybrid", "es"),
    "--no-reseed": ("hybrid", "es"),
    "--lr": ("gradient",),
    "--physics-iterations": ("hybrid",),
    "--guide-weight": ("hybrid",),
    "--restarts": ("hybrid",),
    "--restart-llk": ("hybrid",),
}


def _check_strategy_options(args: argparse.Namespace) -> None:
    """Refuse an option the chosen strategy would ignore (it would be dropped silently otherwise)."""
    for option in sorted(getattr(args, "given", ())):
        strategies = _STRATEGY_OPTIONS.get(option)
        if strategies is not None and args.strategy not in strategies:
            raise ValueError(f"`{option}` does not apply to the {args.strategy!r} strategy "
                             f"(it applies to: {', '.join(strategies)})")
    if args.no_reseed and args.mode != "absolute":
        raise ValueError("`--no-reseed` applies to ES in absolute mode only (residual mode never reseeds)")


def _strategy_from_args(args: argparse.Namespace, k: int):
    from latenttune.tracking import make_strategy

    _check_strategy_options(args)
    options = {}
    if args.strategy in ("es", "hybrid"):
        options.update({key: value for key, value in (("gain", args.gain), ("dither", args.dither)) if value is not None})
        if args.no_reseed:
            options["reseed"] = False
    if args.strategy == "hybrid":
        from latenttune.tracking.physics_stage import PhysicsSettings

        physics = {key: value for key, value in (("iterations", args.physics_iterations),
                                                  ("guide_weight", args.guide_weight), ("restarts", args.restarts),
                                                  ("restart_llk", args.restart_llk)) if value is not None}
        if "iterations" in physics:
            physics["er_iterations"] = min(PhysicsSettings.er_iterations, physics["iterations"])
            physics["cold_iterations"] = max(PhysicsSettings.cold_iterations, physics["iterations"])
        options["physics"] = PhysicsSettings(**physics)
    if args.strategy == "gradient" and args.lr is not None:
        options["lr"] = args.lr
    if args.strategy == "one-shot":
        return make_strategy("one-shot", k)
    return make_strategy(args.strategy, k, steps_per_frame=args.steps_per_frame, mode=args.mode, **options)


def _run_replay(args: argparse.Namespace, series_path, loaded, *, resume: bool) -> int:
    import numpy as np
    from tqdm import tqdm

    from latenttune.io import open_series, read_results
    from latenttune.plots import tracking_summary
    from latenttune.quality import stagnation_summary
    from latenttune.tracking.replay import replay_series

    strategy = _strategy_from_args(args, loaded.model.latent_dim)
    uid = getattr(args, "uid", None)
    if uid is not None:  # a run in a tiled catalog (embedded catalog or server URL)
        from latenttune.io.runs import open_run

        opened = open_run(series_path, uid)
    else:
        opened = open_series(series_path)
    with opened as series:
        first, stop = getattr(args, "frame_range", None) or (0, None)
        stop = len(series) if stop is None else stop
        with tqdm(total=max(stop - first, 0), unit="frame", desc=f"track ({strategy.name})", file=sys.stderr) as bar:

            def on_frame(report) -> bool:
                if bar.n == 0 and report.record.index > first:
                    bar.update(report.record.index - first)
                bar.update(1)
                bar.set_postfix(cost=f"{report.record.cost:.4f}")
                tqdm.write(report.line(), file=sys.stdout)
                return _INTERRUPTS.requested  # Ctrl-C: stop after this frame, resumable

            with _INTERRUPTS.deferred():
                path, _ = replay_series(series, loaded, strategy, args.out, resume=resume, overwrite=args.overwrite,
                                        callback=on_frame, frames=getattr(args, "frame_range", None),
                                        views=args.views)
        results = read_results(path)
        if not results["complete"]:  # stopped by Ctrl-C after a frame
            print(f"stopped after series frame {int(results['index'][-1])}: {results['num_frames']} frames kept in "
                  f"{path}; continue with: {_resume_command()}", file=sys.stderr)
            return 130
        e_r = np.asarray(results["E_r"], dtype=float)
        seconds = np.asarray(results["seconds"], dtype=float)
        print(f"wrote {results['num_frames']} frames to {path}")
        line = f"cost: mean {np.nanmean(results['cost']):.5f}, final {results['cost'][-1]:.5f}; "
        if np.isfinite(e_r).any():
            what = "E_r of the decoded latent" if "refined_density" in results else "E_r"
            line += f"{what}: mean {np.nanmean(e_r):.4f}, max {np.nanmax(e_r):.4f}; "
        if "refined_accepted" in results:
            accepted = np.asarray(results["refined_accepted"], dtype=bool)
            line += f"refined density kept on {int(accepted.sum())} of {len(accepted)} frames; "
        if "E_r_refined" in results and np.isfinite(results["E_r_refined"]).any():
            refined = np.asarray(results["E_r_refined"], dtype=float)
            line += f"hybrid E_r: mean {np.nanmean(refined):.4f}, max {np.nanmax(refined):.4f}; "
        if "llk" in results and np.isfinite(results["llk"]).any():
            llk = np.asarray(results["llk"], dtype=float)
            line += (f"Poisson LLK (about 1 = fits the counts to the noise): median {np.nanmedian(llk):.2f}, "
                     f"max {np.nanmax(llk):.2f}; ")
        print(line + f"time per frame: mean {seconds.mean() * 1e3:.1f} ms")
        stagnation = stagnation_summary(results)
        if stagnation:
            print(stagnation)
        if not args.no_figure:
            figure = Path(args.out).with_suffix(".png")
            truth = [series.truth(t) for t in range(len(series))] if series.has_truth else None
            name = Path(str(series_path)).name if uid is None else f"run {uid[:8]}"
            shows = "hybrid reconstruction" if "refined_density" in results else "decoded latents"
            tracking_summary(results, figure, truth=truth, title=f"{name}: {strategy.name}, showing the {shows}")
            print(f"summary figure: {figure}")
    return 0


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="track a stored time series offline and write the results file",
        description=(
            "Track every frame of a stored series (CXI file in either layout, a directory of cohere-style "
            ".npy/.tif amplitude frames, a .npy stack, or a stored Bluesky tracking run: a .msgpack run file, "
            "or a tiled catalog with --uid) and write the results frame by frame (latent, "
            "cost, density, time, steps, timings, and E_r/E_q per frame when the series has ground truth). "
            "An interrupted replay continues with --resume; nothing is lost or duplicated. Replaying a "
            "Bluesky run with the live run's strategy settings reproduces the costs it recorded."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("series", help="the series to replay (with --uid: a tiled catalog directory/URI or server URL)")
    p.add_argument("--uid", default=None,
                   help="uid of a stored Bluesky run in the tiled catalog given as SERIES (needs the tiled extra)")
    p.add_argument("--out", required=True, help="results file (.h5)")
    p.add_argument("--resume", action="store_true", help="continue OUT.partial from its last complete frame")
    p.add_argument("--frames", type=frame_range, default=None, metavar="START:STOP", dest="frame_range",
                   help="track only series frames START to STOP-1 (as Python slices; either may be left out: "
                        "10: or :5); rows keep their series frame numbers")
    _add_tracking_options(p)
    p.set_defaults(func=_cmd_replay)


def _check_run_outputs(args: argparse.Namespace, inputs: dict, extra: dict | None = None, *,
                       resume: bool) -> None:
    """Refuse ``--out`` names that collide with each other or an input, or replace a file."""
    from latenttune.outputs import check_outputs

    out = Path(args.out)
    partial = "its partial file (OUT.partial)"
    outputs = {"--out": out, partial: Path(str(out) + ".partial"),
               "the summary figure (OUT.png)": None if args.no_figure else out.with_suffix(".png"), **(extra or {})}
    if args.model != "default":
        inputs = {**inputs, "the model checkpoint": args.model}
    check_outputs(outputs, inputs, overwrite=args.overwrite, may_exist={partial, "--out"} if resume else {partial})


def _cmd_replay(args: argparse.Namespace) -> int:
    from latenttune.model.checkpoint import load_model

    remote = "://" in str(args.series)
    _check_run_outputs(args, {"the input series": None if remote else args.series}, resume=args.resume)
    return _run_replay(args, args.series, load_model(args.model, device=args.device), resume=args.resume)


def _add_track(sub: argparse._SubParsersAction) -> None:
    from sim.scenarios import SCENARIOS

    p = sub.add_parser(
        "track",
        help="the main demo: simulate a changing sample and track it live with a model",
        description=(
            "Simulate a time-varying sample (its series is saved next to --out as OUT.series.cxi), track "
            "it frame by frame with the model and the controller, print the per-frame cost and the "
            "real-space error E_r against the simulator's truth, write the results file, and save a "
            "summary figure (OUT.png). Replaying OUT.series.cxi reproduces the same costs."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="growth", help="time-varying scenario")
    p.add_argument("--frames", type=positive_int, default=50, help="number of frames")
    p.add_argument("--photons", type=positive_float, default=1e8, help="expected total photons per frame")
    p.add_argument("--beamstop", type=non_negative_float, default=1.5, help="beamstop radius in voxels")
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulated series")
    p.add_argument("--out", required=True, help="results file (.h5)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: track the rest of OUT.series.cxi into OUT.partial (same "
                        "options required)")
    _add_tracking_options(p)
    p.set_defaults(func=_cmd_track)


def _cmd_track(args: argparse.Namespace) -> int:
    from latenttune.model.checkpoint import load_model
    from latenttune.simulate import check_simulated_series, simulate_series

    series_path = Path(args.out).with_suffix(".series.cxi")
    series_label = "the simulated series (OUT.series.cxi)"
    if args.resume:  # the series made before is an input now
        _check_run_outputs(args, {series_label: series_path}, resume=True)
    else:
        _check_run_outputs(args, {}, {series_label: series_path}, resume=False)
    loaded = load_model(args.model, device=args.device)
    if args.resume:
        check_simulated_series(series_path, scenario=args.scenario, num_frames=args.frames, n=loaded.model.config.n,
                               photons=args.photons, beamstop_radius=args.beamstop, seed=args.seed)
        print(f"resuming on the simulated series {series_path}")
        return _run_replay(args, series_path, loaded, resume=True)
    options = _latent_walk_options(loaded, print) if args.scenario == "latent-walk" else {}
    simulate_series(
        args.scenario, series_path, num_frames=args.frames, n=loaded.model.config.n, photons=args.photons,
        beamstop_radius=args.beamstop, seed=args.seed, overwrite=args.overwrite, scenario_options=options,
        callback=_INTERRUPTS.check,
    )
    print(f"simulated {args.frames} frames of {args.scenario!r} into {series_path}")
    return _run_replay(args, series_path, loaded, resume=False)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    from latenttune.prepare import DEFAULT_OVERSAMPLING, PrepareSettings

    defaults = PrepareSettings()
    p = sub.add_parser(
        "prepare",
        help="put your own measured 3D intensities on the model's grid: a series the other commands read",
        description=(
            "Read measured 3D intensities of any shape and axis order (.npy or .tif stacks, .npz from bcdi or "
            "cdiutils, CXI files, an HDF5 dataset as FILE:/path/to/dataset, a cohere experiment folder, or a "
            "folder of time steps, which becomes one series), mask detector gaps, hot pixels, NaN or negative "
            "voxels and the user's mask, find the Bragg peak (centre of mass), bin (counts summed) and/or crop "
            "to the model's N^3 grid with the peak at N/2, and write a CXI series for replay, movie and export. "
            "Prints what was done to each frame. Refuses a peak too close to an edge and an oversampling too "
            "low for the model. Guide: docs/own_data.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="measured volume(s) or folder(s); several are time steps in the order given")
    p.add_argument("--out", required=True, help="the series to write (.cxi)")
    p.add_argument("--model", default="default", help="the model whose grid N to prepare for ('default' or a path)")
    p.add_argument("--grid", type=positive_int, default=None, help="grid N instead of the model's (even)")
    p.add_argument("--mask", default=None, metavar="SPEC",
                   help="your mask for every frame, nonzero = not measured: .npy, .tif, .npz or FILE.h5:/dataset, "
                        "3-D like the data or 2-D like one detector frame")
    p.add_argument("--amplitude", action="store_true", help="the inputs hold amplitudes (sqrt of counts)")
    p.add_argument("--bin", type=binning, default=None, metavar="auto|B|B0,B1,B2",
                   help="voxels summed per grid voxel along each axis (default auto: brings the oversampling closest "
                        "to --oversampling)")
    p.add_argument("--oversampling", type=positive_float, default=DEFAULT_OVERSAMPLING,
                   help="oversampling automatic binning aims at (the model's training data)")
    p.add_argument("--min-oversampling", type=positive_float, default=defaults.min_oversampling,
                   help="refuse data sampled more coarsely (the object must fit the model's n^3 box, N = 2n)")
    p.add_argument("--edge-margin", type=non_negative_float, default=defaults.edge_margin,
                   help="measured voxels needed on each side of the peak, as a fraction of N")
    p.add_argument("--centre", choices=["series", "frame"], default=defaults.centre,
                   help="one window around the peak of the summed frames, or each frame on its own peak")
    p.add_argument("--hot-factor", type=positive_float, default=defaults.hot_factor,
                   help="a voxel brighter than this times (median of its 26 neighbours + 1) is a hot pixel")
    p.add_argument("--no-hot", action="store_true", help="do not look for hot pixels")
    p.add_argument("--gap-min-counts", type=positive_float, default=defaults.gap_min_counts,
                   help="an empty plane or line between planes or lines with at least this many counts is a gap")
    p.add_argument("--no-gaps", action="store_true", help="do not look for detector gaps")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    import numpy as np

    from latenttune.io.measured import open_measured
    from latenttune.outputs import check_outputs
    from latenttune.prepare import PrepareSettings, prepare_series

    check_outputs({"--out": args.out}, {f"input {spec!r}": spec for spec in args.inputs}, overwrite=args.overwrite)
    settings = PrepareSettings(
        binning=args.bin, oversampling=args.oversampling, min_oversampling=args.min_oversampling,
        edge_margin=args.edge_margin, centre=args.centre, hot_factor=None if args.no_hot else args.hot_factor,
        gap_min_counts=None if args.no_gaps else args.gap_min_counts,
    )
    if args.grid is not None:
        N, what = args.grid, f"grid {args.grid}^3"
    else:
        from latenttune.model.checkpoint import load_model

        config = load_model(args.model).model.config
        N, what = config.N, f"the grid of model {args.model!r} ({config.N}^3)"
    series = open_measured(args.inputs, mask=args.mask, amplitude=args.amplitude)
    print(f"preparing {len(series)} frame(s) of shape {'x'.join(map(str, series.shape))} for {what}")
    path, reports = prepare_series(series, args.out, N, settings, overwrite=args.overwrite,
                                   callback=lambda report: print(report.line()))
    kept = 100 * np.array([r.counts_kept / r.counts for r in reports])
    share = f"{kept[0]:.1f}%" if len(kept) == 1 else f"{kept.min():.1f}% to {kept.max():.1f}% per frame"
    print(f"wrote {len(reports)} frame(s) to {path}: {reports[0].action}; counts kept {share}")
    print(f"track it with: latenttune replay {path} --out {Path(path).with_suffix('')}.results.h5")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``latenttune`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="latenttune",
        description=(
            "Real-time 3D coherent diffraction imaging of samples that change while they are measured: "
            "an autoencoder latent space tuned by extremum seeking."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_simulate(sub)
    _add_prepare(sub)
    _add_train(sub)
    _add_train_cycle(sub)
    _add_evaluate(sub)
    _add_track(sub)
    _add_replay(sub)
    from latenttune.cli.movies import add_export_parser, add_movie_parser

    add_movie_parser(sub)
    add_export_parser(sub)
    return parser


class _Interrupts:
    """Ctrl-C handling of the CLI.

    While a run is tracking (:meth:`deferred`), the first Ctrl-C asks it to stop after the current
    frame: the partial results stay complete and resumable, and the command prints how to continue.
    A second Ctrl-C, or one at any other time, interrupts at once. The handler only sets a flag
    when it defers, so a press can never be lost inside library code; a press that was lost anyway
    (an exception swallowed in a finaliser) still stops the run at the next frame or phase.
    """

    def __init__(self) -> None:
        self.requested = False
        self.deferring = False

    def handler(self, signum: int, frame: object) -> None:
        first = not self.requested
        self.requested = True
        if self.deferring and first:
            sys.stderr.write("\nCtrl-C: stopping after this frame (press again to stop at once)\n")
            return
        raise KeyboardInterrupt

    def check(self, *_: object) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (a callback between steps)."""
        if self.requested:
            raise KeyboardInterrupt

    def deferred(self) -> _Deferred:
        """Context in which the first Ctrl-C only requests a stop."""
        return _Deferred(self)


class _Deferred:
    def __init__(self, interrupts: _Interrupts) -> None:
        self.interrupts = interrupts

    def __enter__(self) -> None:
        self.interrupts.check()  # a press before tracking started (and possibly swallowed) stops here
        self.interrupts.deferring = True

    def __exit__(self, *exc: object) -> None:
        self.interrupts.deferring = False


_INTERRUPTS = _Interrupts()
_ARGV: list[str] = []


def _resume_command() -> str:
    """The command line that continues the current run (``--resume`` added)."""
    argv = list(_ARGV)
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["latenttune", *argv])


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


#: Failures a user can cause (bad input, files, devices, servers): one line and exit status 2.
_EXPECTED = (ValueError, TypeError, OSError, ImportError)


def _set_up(args: argparse.Namespace) -> None:
    """Before a command does anything: check its ``--device`` and apply its ``--threads``."""
    if getattr(args, "device", None) is not None or getattr(args, "threads", None) is not None:
        from latenttune.device import check_device, set_threads

        if getattr(args, "device", None) is not None:
            check_device(args.device)
        if getattr(args, "threads", None) is not None:
            set_threads(args.threads)
            log.info("torch uses %d CPU thread(s)", args.threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``latenttune`` console script.

    Every expected failure (:data:`_EXPECTED`) ends with one line on stderr and exit status 2;
    Ctrl-C ends with exit status 130 (after the current frame while tracking).
    """
    global _INTERRUPTS, _ARGV
    parser = build_parser()
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_ARGV)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _INTERRUPTS = _Interrupts()
    import threading

    handle = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _INTERRUPTS.handler) if handle else None
    try:
        _set_up(args)
        return int(args.func(args) or 0)
    except _EXPECTED as exc:
        parser.exit(2, f"latenttune {args.command}: error: {_one_line(exc)}\n")
    except KeyboardInterrupt:
        hint = ""
        out = getattr(args, "out", None)
        if args.command in ("track", "replay") and out and Path(str(out) + ".partial").exists():
            hint = f"; partial results in {out}.partial, continue with: {_resume_command()}"
        parser.exit(130, f"latenttune {args.command}: interrupted{hint}\n")
    finally:
        if handle and previous is not None:
            signal.signal(signal.SIGINT, previous)


