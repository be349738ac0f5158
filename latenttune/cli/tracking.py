"""The ``latenttune track`` and ``latenttune replay`` commands and their tracking options.

:func:`add_parsers` registers them on the main parser (:func:`latenttune.cli.build_parser`); torch and
:mod:`latenttune.tracking` are imported inside the command functions, so building the parser stays
cheap. Ctrl-C while tracking stops after the current frame (:mod:`latenttune.cli.interrupts`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from latenttune.cli.argtypes import (
    command,
    add_threads_option,
    add_views_option,
    frame_count,
    frame_range,
    non_negative_float,
    non_negative_int,
    photons,
    positive_float,
    positive_int,
    seed,
    steps_per_frame,
)
from latenttune.cli.data import _latent_walk_options
from latenttune.cli.interrupts import _INTERRUPTS, _resume_command


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``track`` and ``replay`` on ``sub`` (in that order)."""
    _add_track(sub)
    _add_replay(sub)


def _add_tracking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    p.add_argument("--strategy", choices=["hybrid", "es", "one-shot", "gradient"], default="hybrid",
                   help="hybrid: phase retrieval on the voxels, warm-started from the previous frame and guided by "
                        "the decoded latent, then the latent read back from its output (explicit crystal parameters "
                        "read off, the learned part tuned by extremum seeking; no network gradient); es: extremum "
                        "seeking on the measured pattern alone; one-shot: encoder alone; gradient: Adam on z "
                        "through the network gradient (comparator)")
    p.add_argument("--mode", choices=["absolute", "residual"], default="absolute", action=_Given,
                   help="es, gradient: tune z itself, or a correction added to the encoder's prediction of each frame")
    p.add_argument("--steps-per-frame", type=steps_per_frame, default=None, action=_Given,
                   help="extremum-seeking evaluations per frame (hybrid: in the read-back; es and gradient: cost "
                        "evaluations) (default: 24 for hybrid, 100 for es and gradient)")
    p.add_argument("--gain", type=positive_float, default=None, action=_Given,
                   help="ES gain k (default: the controller's)")
    p.add_argument("--dither", type=positive_float, default=None, action=_Given,
                   help="ES dither amplitude in box units")
    p.add_argument("--no-readback", action=_GivenTrue,
                   help="hybrid: keep the guide's latent instead of reading the latent back from the physics "
                        "stage's output (the one-shot + physics comparator)")
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
                        "(default: derived from the counts, stronger the fewer they are)")
    p.add_argument("--restarts", type=non_negative_int, default=None, action=_Given,
                   help="hybrid: further starts from the decoded density tried on a frame whose refinement stagnated "
                        "(Poisson LLK above --restart-llk), its phase negated, flattened or random, after the previous "
                        "output and the encoders' predictions that did not guide the frame "
                        "(default: PhysicsSettings' 1; 0: no restart of any kind)")
    p.add_argument("--restart-llk", type=positive_float, default=None, action=_Given,
                   help="hybrid: Poisson LLK (about 1 at the noise level) above which a refinement counts as "
                        "stagnated, > 1 (default: PhysicsSettings' 1.5; raise it for data with non-Poisson noise)")
    add_views_option(p, 1, "symmetric views of the first frame to choose the model's view from (1 = the "
                           "identity; 48 fits crystals better but costs the first frame about 1-2 s; "
                           "docs/tracking.md, 'Symmetric views')")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    add_threads_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace the output files if they exist")
    p.add_argument("--no-figure", action="store_true",
                   help="do not save the summary PNG (nor the readout PNG of a model with explicit crystal "
                        "parameters) next to --out")


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
    "--mode": ("es", "gradient"),
    "--steps-per-frame": ("hybrid", "es", "gradient"),
    "--gain": ("hybrid", "es"),
    "--dither": ("hybrid", "es"),
    "--no-reseed": ("es",),
    "--no-readback": ("hybrid",),
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
        if args.no_readback:
            options["readback"] = False
        from latenttune.tracking.physics_settings import PhysicsSettings

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
    if args.strategy == "hybrid":
        return make_strategy("hybrid", k, steps_per_frame=args.steps_per_frame, **options)
    if args.steps_per_frame == 0:
        raise ValueError(f"`--steps-per-frame` must be a positive integer for the {args.strategy!r} strategy, got 0")
    return make_strategy(args.strategy, k, steps_per_frame=args.steps_per_frame, mode=args.mode, **options)


def _summary_line(results, wall_seconds: float | None = None, frames: int | None = None) -> str:
    """The run in one line: cost, errors (with truth), refinements kept, LLK, time per frame.

    The time per frame is the tracker's (what each frame line shows); ``wall_seconds`` (the loop's wall
    time over ``frames`` frames tracked in this run) adds what the run took with everything around the
    tracker: reading, truth metrics, post-processing, writing.
    """
    import math

    s = results.summary()
    line = f"cost: mean {s.cost_mean:.5f}, final {s.cost_final:.5f}; "
    if math.isfinite(s.E_r_mean):
        what = "E_r of the decoded latent" if results.has_physics else "E_r"
        line += f"{what}: mean {s.E_r_mean:.4f}, max {s.E_r_max:.4f}; "
    if results.has_physics:
        line += f"refined density kept on {s.accepted} of {s.frames} frames; "
    if math.isfinite(s.output_E_r_mean):
        line += f"hybrid E_r: mean {s.output_E_r_mean:.4f}, max {s.output_E_r_max:.4f}; "
    if math.isfinite(s.llk_median):
        line += f"Poisson LLK (about 1 = fits the counts to the noise): median {s.llk_median:.2f}, max {s.llk_max:.2f}; "
    line += f"tracker time per frame: mean {s.seconds_mean * 1e3:.1f} ms"
    if wall_seconds is not None and frames:
        line += (f"; wall time {wall_seconds:.1f} s, {wall_seconds / frames * 1e3:.1f} ms per frame (with reading, "
                 f"{'truth metrics, ' if math.isfinite(s.E_r_mean) else ''}post-processing and writing)")
    return line


def _run_replay(args: argparse.Namespace, series_path, loaded, *, resume: bool) -> int:
    from latenttune.cli.progress import progress_bar, say
    from latenttune.cli.geometry_options import note_geometry, open_prepared, run_quality_lines, warn_quantity
    from latenttune.io import read_results
    from latenttune.plots import readout_figure, tracking_summary
    from latenttune.tracking.replay import replay_series

    strategy = _strategy_from_args(args, loaded.model.latent_dim)
    uid = getattr(args, "uid", None)
    if uid is not None:  # a run in a tiled catalog (embedded catalog or server URL)
        from latenttune.io.runs import open_run

        opened = open_run(series_path, uid)
    else:
        opened = open_prepared(series_path, loaded.model.config.N, amplitude=getattr(args, "amplitude", False))
    with opened as series:
        warn_quantity(series, getattr(args, "amplitude", False))
        note_geometry(series)
        first, stop = getattr(args, "frame_range", None) or (0, None)
        stop = len(series) if stop is None else stop
        with progress_bar(max(stop - first, 0), "frame", f"track ({strategy.name})") as bar:

            tracked = []  # the frames tracked in this run (a resumed run's earlier ones are not timed here)

            def on_frame(report) -> bool:
                tracked.append(report.record.index)
                if bar.n == 0 and report.record.index > first:
                    bar.update(report.record.index - first)
                bar.update(1)
                bar.set_postfix(cost=f"{report.record.cost:.4f}")
                say(report.line())
                return _INTERRUPTS.requested  # Ctrl-C: stop after this frame, resumable

            started = time.perf_counter()
            with _INTERRUPTS.deferred():
                path, _ = replay_series(series, loaded, strategy, args.out, resume=resume, overwrite=args.overwrite,
                                        callback=on_frame, frames=getattr(args, "frame_range", None),
                                        views=args.views)
            wall = time.perf_counter() - started
        results = read_results(path)
        if not results.complete:  # stopped by Ctrl-C after a frame
            print(f"stopped after series frame {int(results.index[-1])}: {results.num_frames} frames kept in "
                  f"{path}; continue with: {_resume_command()}", file=sys.stderr)
            return 130
        print(f"wrote {results.num_frames} frames to {path}")
        print(_summary_line(results, wall, len(tracked)))
        stagnation = results.stagnation_summary()
        if stagnation:
            print(stagnation)
        for line in run_quality_lines(results, series):
            print(line)
        if not args.no_figure:
            figure = Path(args.out).with_suffix(".png")
            name = Path(str(series_path)).name if uid is None else f"run {uid[:8]}"
            shows = "hybrid reconstruction" if results.has_physics else "decoded latents"
            tracking_summary(results, figure, truth=series.truth if series.has_truth else None,
                             title=f"{name}: {strategy.name}, showing the {shows}")
            print(f"summary figure: {figure}")
            if results.has_strain:
                from latenttune.postprocess.figure import strain_figure

                strain = strain_figure(results, Path(args.out).with_suffix(".strain.png"),
                                       title=f"{name}: displacement and strain of the last frame")
                print(f"strain figure: {strain}")
            if results.has_readout:
                readout = _readout_figure_path(args.out)
                readout_figure(results, readout, title=f"{name}: {strategy.name}, the tracked latents read out as "
                                                       "physical quantities")
                print(f"readout figure: {readout}")
    return 0


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "replay", "track a stored time series offline and write the results file", """
        Track every frame of a stored series (CXI file in either layout, a directory of .npy/.tif frames or a
        .npy stack of photon counts (--amplitude: of amplitudes, cohere's convention), or a stored Bluesky
        tracking run: a .msgpack run file, or
        a tiled catalog with --uid) and write the results frame by frame (latent, cost, density, time,
        steps, timings, and E_r/E_q per frame when the series has ground truth). An interrupted replay
        continues with --resume; nothing is lost or duplicated. Replaying a Bluesky run with the live run's
        strategy settings reproduces the costs it recorded.
    """)
    p.add_argument("series", help="the series to replay (with --uid: a tiled catalog directory/URI or server URL)")
    p.add_argument("--uid", default=None,
                   help="uid of a stored Bluesky run in the tiled catalog given as SERIES (needs the tiled extra)")
    p.add_argument("--out", required=True, help="results file (.h5)")
    p.add_argument("--resume", action="store_true", help="continue OUT.partial from its last complete frame")
    p.add_argument("--amplitude", action="store_true",
                   help="a folder of .npy/.tif frames or a .npy file holds amplitudes (sqrt of counts; cohere's "
                        "convention); by default they hold intensities (photon counts), as for `latenttune prepare`")
    p.add_argument("--frames", type=frame_range, default=None, metavar="START:STOP", dest="frame_range",
                   help="track only series frames START to STOP-1 (as Python slices; either may be left out: "
                        "10: or :5); rows keep their series frame numbers")
    _add_tracking_options(p)
    p.set_defaults(func=_cmd_replay)


def _readout_figure_path(out) -> Path:
    """Where the readout figure goes: ``OUT.readout.png`` (its suffix replaced, like the summary's ``OUT.png``)."""
    return Path(out).with_suffix(".readout.png")


def _check_run_outputs(args: argparse.Namespace, inputs: dict, extra: dict | None = None, *,
                       resume: bool) -> None:
    """The output guard: ``--out`` (a results file, ``.h5``) and the files next to it, against each other and
    the inputs."""
    from latenttune.model.paths import model_path
    from latenttune.outputs import check_outputs

    out = Path(args.out)
    partial = "its partial file (OUT.partial)"
    outputs = {"--out": out, partial: Path(str(out) + ".partial"),
               "the summary figure (OUT.png)": None if args.no_figure else out.with_suffix(".png"),
               "the readout figure (OUT.readout.png)": None if args.no_figure else _readout_figure_path(out),
               "the strain figure (OUT.strain.png)": None if args.no_figure else out.with_suffix(".strain.png"),
               **(extra or {})}
    inputs = {**inputs, "the model checkpoint": model_path(args.model)}
    kinds = {"--out": "results", "the simulated series (OUT.series.cxi)": "series"}
    check_outputs(outputs, inputs, overwrite=args.overwrite, may_exist={partial, "--out"} if resume else {partial},
                  kinds=kinds)


def _cmd_replay(args: argparse.Namespace) -> int:
    remote = "://" in str(args.series)
    _check_run_outputs(args, {"the input series": None if remote else args.series}, resume=args.resume)
    from latenttune.model.checkpoint import load_model  # torch: after the guard, which answers without it

    return _run_replay(args, args.series, load_model(args.model, device=args.device), resume=args.resume)


def _add_track(sub: argparse._SubParsersAction) -> None:
    from sim.scenarios import SCENARIOS

    p = command(sub, "track", "the main demo: simulate a changing sample and track it live with a model", """
        Simulate a time-varying sample (its series is saved next to --out as OUT.series.cxi), track it frame
        by frame with the model and the controller, print the per-frame cost and the real-space error E_r
        against the simulator's truth, write the results file, and save a summary figure (OUT.png).
        Replaying OUT.series.cxi reproduces the same costs.
    """)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="growth", help="time-varying scenario")
    p.add_argument("--frames", type=frame_count, default=50, help="number of frames")
    p.add_argument("--photons", type=photons, default=1e8, help="expected total photons per frame")
    p.add_argument("--beamstop", type=non_negative_float, default=1.5, help="beamstop radius in voxels")
    p.add_argument("--seed", type=seed, default=0, help="random seed of the simulated series")
    p.add_argument("--out", required=True, help="results file (.h5)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: track the rest of OUT.series.cxi into OUT.partial (same "
                        "options required)")
    _add_tracking_options(p)
    p.set_defaults(func=_cmd_track)


def _cmd_track(args: argparse.Namespace) -> int:
    series_path = Path(args.out).with_suffix(".series.cxi")
    series_label = "the simulated series (OUT.series.cxi)"
    if args.resume:  # the series made before is an input now
        _check_run_outputs(args, {series_label: series_path}, resume=True)
    else:
        _check_run_outputs(args, {}, {series_label: series_path}, resume=False)
    from latenttune.model.checkpoint import load_model  # torch: after the guard, which answers without it
    from latenttune.simulate import check_simulated_series, simulate_series

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
