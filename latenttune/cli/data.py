"""The ``latenttune simulate`` and ``latenttune prepare`` commands: making the series the others read.

:func:`add_parsers` registers them on the main parser (:func:`latenttune.cli.build_parser`); heavy
imports happen inside the command functions, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latenttune.cli.geometry_options import add_geometry_options
from latenttune.cli.argtypes import (
    command,
    add_threads_option,
    binning,
    frame_count,
    grid_size,
    non_negative_float,
    object_grid,
    photons,
    positive_float,
    seed,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``simulate`` and ``prepare`` on ``sub`` (in that order)."""
    _add_simulate(sub)
    _add_prepare(sub)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from sim.scenarios import SCENARIOS

    names = sorted(SCENARIOS)
    p = command(
        sub, "simulate",
        "simulate a time-varying sample and write its measured series (CXI) with the truth", """
        Simulate a time-varying 3D crystal d(r, t), its diffraction |F d|^2 on the (2n)^3 grid, and a
        detector (Poisson counting, background, beamstop, gaps, saturation). Writes a CXI-style HDF5 series
        whose `entry_1/truth` group holds the ground-truth densities.
    """)
    p.add_argument("scenario", choices=names, help="time-varying scenario to simulate")
    p.add_argument("--frames", type=frame_count, default=20, help="number of frames T")
    p.add_argument("--n", type=object_grid, default=32, help="object grid size n (diffraction grid is 2n)")
    p.add_argument("--photons", type=photons, default=1e8, help="expected total photons per frame")
    p.add_argument("--background", type=non_negative_float, default=0.0, help="mean background counts per voxel")
    p.add_argument("--beamstop", type=non_negative_float, default=0.0, help="beamstop radius in voxels (0: none)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (the whole series follows from it)")
    p.add_argument("--layout", choices=["stacked", "entries"], default="stacked",
                   help="CXI layout: one 4-D dataset, or one entry per frame")
    p.add_argument("--model", default="default",
                   help="latent-walk only: the model whose decoder makes the densities ('default' or a path)")
    p.add_argument("--out", required=True, help="output file (.cxi or .h5)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    add_threads_option(p)
    p.set_defaults(func=_cmd_simulate)


#: How the output guard names a series' partial file (written first, renamed onto ``--out`` at the end).
_PARTIAL = "its partial file (OUT.partial)"


def _check_series_outputs(args: argparse.Namespace, inputs: dict) -> None:
    """The output guard of a command that writes a series (``--out``, written as ``OUT.partial`` first)."""
    from latenttune.outputs import check_outputs

    check_outputs({"--out": args.out, _PARTIAL: f"{args.out}.partial"}, inputs, overwrite=args.overwrite,
                  may_exist={_PARTIAL}, kinds={"--out": "series"})


def _cmd_simulate(args: argparse.Namespace) -> int:
    from latenttune.simulate import simulate_series

    from latenttune.cli.progress import progress_bar, say

    model = None
    if args.scenario == "latent-walk":
        from latenttune.model.paths import model_path

        model = model_path(args.model)
    _check_series_outputs(args, {"the model checkpoint (--model)": model})

    with progress_bar(args.frames, "frame", f"simulate {args.scenario}") as bar:

        def on_frame(summary) -> None:
            bar.update(1)
            say(summary.line())

        scenario_options = {}
        if args.scenario == "latent-walk":
            from latenttune.model.checkpoint import load_model

            loaded = load_model(args.model)
            if loaded.model.config.n != args.n:
                raise ValueError(f"`--n` must equal the model's object grid n = {loaded.model.config.n} for latent-walk")
            scenario_options = _latent_walk_options(loaded, say)
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


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    from latenttune.prepare import DEFAULT_OVERSAMPLING, PrepareSettings

    defaults = PrepareSettings()
    p = command(
        sub, "prepare",
        "put your own measured 3D intensities on the model's grid: a series the other commands read", """
        Read measured 3D intensities of any shape and axis order (.npy or .tif stacks, .npz from bcdi or
        cdiutils, CXI files, an HDF5 dataset as FILE:/path/to/dataset, a cohere experiment folder, or a
        folder of time steps, which becomes one series), mask detector gaps, hot pixels, NaN or negative
        voxels and the user's mask, find the Bragg peak (centre of mass), bin (counts summed) and/or crop to
        the model's N^3 grid with the peak at N/2, and write a CXI series for replay, movie and export.
        Prints what was done to each frame. Refuses a peak too close to an edge and an oversampling too low
        for the model. Guide: docs/own_data.md.
    """)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="measured volume(s) or folder(s); several are time steps in the order given")
    p.add_argument("--out", required=True, help="the series to write (.cxi)")
    p.add_argument("--model", default="default", help="the model whose grid N to prepare for ('default' or a path)")
    p.add_argument("--grid", type=grid_size, default=None, help="grid N instead of the model's (even)")
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
    add_geometry_options(p)
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    import numpy as np

    from latenttune.cli.geometry_options import geometry_from_args, resolution_line, warn_quantity
    from latenttune.geometry.record import MISSING_GEOMETRY
    from latenttune.io.measured import open_measured
    from latenttune.prepare import PrepareSettings, prepare_series
    from latenttune.prepare.pipeline import check_measured_size

    inputs = {f"input {spec!r}": spec for spec in args.inputs}
    inputs["the mask (--mask)"] = args.mask
    if args.grid is None:
        from latenttune.model.paths import model_path

        inputs["the model checkpoint (--model)"] = model_path(args.model)
    _check_series_outputs(args, inputs)
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
    geometry = geometry_from_args(args, args.inputs)
    series = open_measured(args.inputs, mask=args.mask, amplitude=args.amplitude)
    print(f"preparing {len(series)} frame(s) of shape {'x'.join(map(str, series.shape))} for {what}")
    check_measured_size(series)  # before the first volume is read (the quantity warning reads it)
    warn_quantity(series, args.amplitude)
    print(f"geometry: {geometry.line()}" if geometry is not None else f"note: {MISSING_GEOMETRY}")
    path, reports = prepare_series(series, args.out, N, settings, overwrite=args.overwrite,
                                   callback=lambda report: print(report.line()), geometry=geometry)
    if geometry is not None:
        print(resolution_line(path))
    kept = 100 * np.array([r.counts_kept / r.counts for r in reports])
    share = f"{kept[0]:.1f}%" if len(kept) == 1 else f"{kept.min():.1f}% to {kept.max():.1f}% per frame"
    print(f"wrote {len(reports)} frame(s) to {path}: {reports[0].action}; counts kept {share}")
    print(f"track it with: latenttune replay {path} --out {Path(path).with_suffix('')}.results.h5")
    return 0
