"""The ``latenttune movie traverse|track`` and ``latenttune export`` commands.

:func:`add_movie_parser` and :func:`add_export_parser` register the sub-commands on the main parser
(:func:`latenttune.cli.build_parser`). Heavy imports (torch, matplotlib) happen inside the command
functions, so building the parser stays cheap. As in the rest of the CLI, bad arguments raise
ValueError / TypeError / FileNotFoundError / FileExistsError, which ``latenttune.cli.main`` turns
into exit status 2 with the message; a progress bar goes to stderr on a terminal only
(:mod:`latenttune.cli.progress`), results to stdout.
"""

from __future__ import annotations

import argparse
from typing import Any

from latenttune.cli.argtypes import (
    add_threads_option,
    command,
    fraction,
    frame_count,
    positive_float,
    positive_int,
    seed,
)

__all__ = ["add_movie_parser", "add_export_parser", "parse_size", "parse_endpoint"]

_DEFAULT_SIZE = "960x540"
#: Largest movie frame side in pixels (a frame is drawn whole in memory: 16384^2 RGB is 768 MiB).
_MAX_SIDE = 16384


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(W, H)`` in pixels (each from 16 to 16384)."""
    parts = text.lower().split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT in pixels, e.g. 960x540, got {text!r}") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"must be at least 16x16 pixels, got {text!r}")
    if width > _MAX_SIDE or height > _MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_SIDE}x{_MAX_SIDE} pixels, got {text!r}")
    return width, height


def _add_output_options(p: argparse.ArgumentParser, fps: float) -> None:
    p.add_argument("--out", required=True, help="movie file: .mp4 (H.264 via imageio-ffmpeg) or .gif (Pillow)")
    p.add_argument("--fps", type=positive_float, default=fps, help="frames per second")
    p.add_argument("--size", type=parse_size, default=parse_size(_DEFAULT_SIZE), metavar="WxH",
                   help=f"frame size in pixels (default {_DEFAULT_SIZE}; even numbers for MP4)")
    p.add_argument("--dpi", type=positive_float, default=100.0, help="dots per inch: larger draws smaller text")
    p.add_argument("--iso", type=fraction, default=0.5,
                   help="isosurface level as a fraction of the movie's largest amplitude")
    p.add_argument("--cmap", default="twilight_shifted", help="cyclic colour map of the phase (e.g. twilight, hsv)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def add_movie_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``latenttune movie traverse`` and ``latenttune movie track`` on ``sub``."""
    from latenttune.movies.paths import PATHS

    movie = sub.add_parser(
        "movie",
        help="render movies: latent-space traversals and tracking runs (MP4 or GIF)",
        description="Render a movie of what a model has learned (traverse) or of a tracking run (track).",
    )
    kinds = movie.add_subparsers(dest="movie_command", metavar="KIND", required=True, help="what to render")

    p = command(kinds, "traverse", "decode a path through the latent space: density beside the latent vector", """
        Decode latents along a path and draw each density (isosurface of the amplitude coloured by the
        phase, central slices) beside a bar chart of the latent vector. Paths: 'line' from --start to --end;
        'axes' sweeps each latent axis in turn through the box; 'lissajous' is a smooth closed walk through
        the box (the movie loops without a jump). The box is the part of the latent space the encoder uses
        (--box spread) or the whole tanh box (--box full).
    """)
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    p.add_argument("--path", choices=PATHS, default="lissajous", help="the latent path")
    p.add_argument("--frames", type=frame_count, default=120, help="number of movie frames")
    p.add_argument("--start", metavar="SPEC",
                   help="line start: k comma-separated latent values, or a pattern: a series file "
                        "(anything `replay` reads) with an optional @FRAME (default frame 0), e.g. run.cxi@3")
    p.add_argument("--end", metavar="SPEC", help="line end, as --start")
    p.add_argument("--box", choices=["spread", "full"], default="spread",
                   help="spread: 2nd-98th percentile of the encoder's latents; full: [-1, 1]^k")
    p.add_argument("--seed", type=seed, default=0, help="lissajous: seed of the random phases")
    p.add_argument("--cycles", type=positive_int, default=2,
                   help="lissajous: most cycles of one latent component over the movie")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    add_threads_option(p)
    _add_output_options(p, fps=12.0)
    p.set_defaults(func=_cmd_traverse)

    p = command(
        kinds, "track",
        "play back a tracking results file: diffraction, truth and reconstruction, traces", """
        Draw every frame of a results file (from `latenttune track` or `replay`): the measured and predicted
        central diffraction slices (log scale), the ground truth (when the series has it) and the aligned
        reconstruction as phase-coloured isosurfaces, and the cost and E_r traces with a cursor. The
        measured patterns come from the series the results file records; pass --series if it has moved.
    """)
    p.add_argument("results", help="results file (.h5) of a tracking or replay run")
    p.add_argument("--series", help="the series the run tracked (default: the path recorded in the results file)")
    _add_output_options(p, fps=8.0)
    p.set_defaults(func=_cmd_track_movie)


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``latenttune export`` on ``sub``."""
    p = command(sub, "export", "export a reconstructed frame for ParaView (VTK image data, .vti)", """
        Write the reconstruction of one frame of a results file as VTK XML image data (.vti) with point data
        'amplitude' and 'phase' (radians); array axes 0, 1, 2 are x, y, z and the object's centre voxel sits
        at the origin. Open it in ParaView (Contour on amplitude, colour by phase).
    """)
    p.add_argument("results", help="results file (.h5) of a tracking or replay run")
    p.add_argument("--frame", type=int, default=-1,
                   help="series frame number (as tracking prints it); negative counts from the last frame")
    p.add_argument("--out", required=True, help="output file (.vti)")
    p.add_argument("--spacing", type=positive_float, default=1.0, help="voxel size (e.g. in nm)")
    p.add_argument("--density", choices=["auto", "hybrid", "decoded"], default="auto",
                   help="which reconstruction: auto = the hybrid tracker's refined density when the file has it, "
                        "else the decoded density of the tracked latent")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=_cmd_export)


# ---- commands ------------------------------------------------------------------------------


def parse_endpoint(spec: str, model: Any, name: str) -> Any:
    """Latent of a ``--start``/``--end`` SPEC: ``k`` comma-separated numbers, or ``PATH[@FRAME]``.

    A path is opened with :func:`latenttune.io.open_series` and the frame is encoded by ``model``.
    """
    import numpy as np

    from latenttune.io import open_series
    from latenttune.movies.traverse import encode_patterns

    k = model.latent_dim
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        values = None
    if values is not None:
        if len(values) != k:
            raise ValueError(f"`{name}` must hold k = {k} comma-separated latent values, got {len(values)}: {spec!r}")
        if not np.isfinite(values).all():
            raise ValueError(f"`{name}` latent values must be finite, got {spec!r}")
        return np.asarray(values, dtype=np.float64)
    path, frame = spec, 0
    head, sep, tail = spec.rpartition("@")
    if sep and tail.lstrip("-").isdigit():
        path, frame = head, int(tail)
    with open_series(path) as series:
        try:
            pattern = series[frame]
        except IndexError as exc:
            raise ValueError(f"`{name}`: {exc}") from None
        if series.N != model.config.N:
            raise ValueError(f"`{name}`: the series has N = {series.N} but the model needs N = {model.config.N}")
        return encode_patterns(model, [(pattern.intensity, pattern.mask)])[0]


def _endpoint_file(spec: str | None) -> str | None:
    """The series file a ``--start``/``--end`` SPEC reads (None for latent values or no SPEC)."""
    if spec is None:
        return None
    try:
        [float(v) for v in spec.split(",")]
        return None
    except ValueError:
        head, sep, tail = spec.rpartition("@")
        return head if sep and tail.lstrip("-").isdigit() else spec


def _settings(args: argparse.Namespace) -> Any:
    from latenttune.movies.render import RenderSettings

    return RenderSettings(iso_fraction=args.iso, phase_cmap=args.cmap)


def _progress(total: int | None, desc: str) -> Any:
    from latenttune.cli.progress import progress_bar

    return progress_bar(total, "frame", desc)


def _cmd_traverse(args: argparse.Namespace) -> int:
    import numpy as np

    from latenttune.model.latent_walk import latent_spread
    from latenttune.model.checkpoint import load_model
    from latenttune.movies.paths import axes_path, line_path, lissajous_path
    from latenttune.movies.traverse import write_traverse_movie
    from latenttune.movies.writer import check_output
    from latenttune.model.paths import model_path
    from latenttune.outputs import check_outputs

    check_output(args.out, args.size, args.fps)
    check_outputs({"--out": args.out}, {"the model checkpoint": model_path(args.model),
                                        "the --start series": _endpoint_file(args.start),
                                        "the --end series": _endpoint_file(args.end)},
                  overwrite=args.overwrite, kinds={"--out": "movie"})
    settings = _settings(args)
    if args.path != "line" and (args.start or args.end):
        raise ValueError(f"`--start`/`--end` belong to `--path line`, not `--path {args.path}`")
    if args.path == "line" and not (args.start and args.end):
        raise ValueError("`--path line` needs both `--start` and `--end` (latent values or PATH[@FRAME])")
    loaded = load_model(args.model, device=args.device)
    model = loaded.model
    if args.box == "full":
        box = model.latent_bounds
    else:
        box = latent_spread(loaded)
    if args.path == "line":
        start = parse_endpoint(args.start, model, "--start")
        end = parse_endpoint(args.end, model, "--end")
        if args.frames < 2:
            raise ValueError(f"`--frames` must be at least 2 for a line, got {args.frames}")
        latents = line_path(start, end, args.frames)
        box = (np.minimum(box[0], np.minimum(start, end)), np.maximum(box[1], np.maximum(start, end)))
    elif args.path == "axes":
        if args.frames < 2 * model.latent_dim:
            raise ValueError(
                f"`--frames` must be at least 2k = {2 * model.latent_dim} for `--path axes`, got {args.frames}"
            )
        latents = axes_path(*box, args.frames)
    else:
        if args.frames < 2:
            raise ValueError(f"`--frames` must be at least 2, got {args.frames}")
        latents = lissajous_path(*box, args.frames, np.random.default_rng(args.seed), max_cycles=args.cycles)
    with _progress(len(latents), f"movie traverse ({args.path})") as bar:
        path = write_traverse_movie(
            model, latents, args.out, fps=args.fps, size=args.size, dpi=args.dpi, settings=settings, box=box,
            overwrite=args.overwrite, callback=lambda done, total: bar.update(1),
        )
    print(f"wrote {len(latents)} frames ({args.size[0]}x{args.size[1]}, {args.fps:g} fps) to {path}")
    return 0


def _cmd_track_movie(args: argparse.Namespace) -> int:
    from latenttune.movies.tracking_movie import write_tracking_movie
    from latenttune.movies.writer import check_output
    from latenttune.outputs import check_outputs

    check_output(args.out, args.size, args.fps)
    check_outputs({"--out": args.out}, {"the results file": args.results, "the series (--series)": args.series},
                  overwrite=args.overwrite, kinds={"--out": "movie"})
    written = []  # frames written (a bar that is not drawn, off a terminal, counts nothing)
    with _progress(None, "movie track") as bar:

        def on_frame(done: int, total: int) -> None:
            bar.total = total
            bar.update(1)
            written.append(done)

        path = write_tracking_movie(
            args.results, args.out, series=args.series, fps=args.fps, size=args.size, dpi=args.dpi,
            settings=_settings(args), overwrite=args.overwrite, callback=on_frame,
        )
    print(f"wrote {len(written)} frames ({args.size[0]}x{args.size[1]}, {args.fps:g} fps) to {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from latenttune.io import read_results
    from latenttune.movies.vtk_export import export_result_frame, result_row
    from latenttune.outputs import check_outputs

    check_outputs({"--out": args.out}, {"the results file": args.results}, overwrite=args.overwrite,
                  kinds={"--out": "export"})
    results = read_results(args.results)
    which = "the last frame" if args.frame == -1 else f"frame {args.frame}"
    if results.has_strain and args.density != "decoded":  # in nm: displacement and strain, crystal frame
        from latenttune.movies.strain_vti import export_strain_vti

        path = export_strain_vti(results, args.frame, args.out, overwrite=args.overwrite)
        print(f"wrote {which} of {args.results} to {path} (point data: amplitude, phase, displacement in nm, strain, "
              "support; on a cubic grid in the crystal frame, spacing in nm; field data: G, q_peak)")
        return 0
    path, shown = export_result_frame(results, args.frame, args.out, spacing=args.spacing,
                                      overwrite=args.overwrite, which=args.density)
    print(f"wrote {which} of {args.results} ({shown} density) to {path} (point data: amplitude, phase)")
    if not results.has_strain:
        from latenttune.geometry.record import MISSING_GEOMETRY

        print(f"note: {MISSING_GEOMETRY}")
    if shown != "decoded":  # the hybrid's output: say when it stagnated (its LLK is that density's)
        row = result_row(results, args.frame)
        flags = results.stagnated
        if flags is not None and flags[row]:
            print(f"note: this frame stagnated (LLK {results.llk[row]:.2f} > {results.stagnation_threshold:g} "
                  "after the restarts): a less certain density")
    return 0
