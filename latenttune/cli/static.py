"""The ``latenttune static`` and ``latenttune strain`` commands.

``static``: one measured volume reconstructed from several starts, the best by free LLK
(:mod:`latenttune.tracking.static`), written as a one-row results file. ``strain``: the
post-processing (:mod:`latenttune.postprocess`) added to a stored results file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latenttune.cli.argtypes import command, non_negative_int, positive_int


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``static`` and ``strain`` on ``sub``."""
    p = command(sub, "static", "reconstruct one measured volume from several starts, keep the best by free LLK", """
        Static-scan mode for a single prepared volume: starts from the model's encoders, from the pattern
        encoded in other symmetric views, and from random latents, each refined by phase retrieval on the
        voxels; ranked by the free log-likelihood (Poisson LLK on held-out voxels, as PyNX users rank runs),
        the best kept (and, with --average K, the aligned average of the best K). Writes a one-row results
        file that export, movie and Python read like a replay's; with a geometry in the series, its
        displacement and strain too.
    """)
    p.add_argument("series", help="a prepared series (latenttune prepare); one frame is used")
    p.add_argument("--frame", type=non_negative_int, default=0, help="the series frame to reconstruct")
    p.add_argument("--out", required=True, help="results file (.h5)")
    p.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    p.add_argument("--views", type=positive_int, default=4, help="symmetric views to encode the pattern in (1-48)")
    p.add_argument("--random", type=non_negative_int, default=2, help="random latents to start from")
    p.add_argument("--iterations", type=positive_int, default=200, help="phase-retrieval iterations per start")
    p.add_argument("--average", type=non_negative_int, default=0,
                   help="also store the aligned average of the best K runs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    p.add_argument("--amplitude", action="store_true", help="a folder/.npy input holds amplitudes")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=_cmd_static)

    q = command(sub, "strain", "add displacement and strain to a stored results file (written as a new file)", """
        Post-process every frame of a results file written without displacement and strain (an older run, or
        a series prepared without a geometry): the geometry comes from the results file, its series, or a
        geometry file (--geometry, with the prepared grid's transform from the series).
    """)
    q.add_argument("results", help="a complete results file")
    q.add_argument("--out", required=True, help="the new results file (.h5)")
    q.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    q.set_defaults(func=_cmd_strain)


def _cmd_static(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from latenttune.cli.geometry_options import note_geometry, open_prepared, warn_quantity
    from latenttune.io import ResultWriter
    from latenttune.model.checkpoint import load_model
    from latenttune.outputs import check_outputs
    from latenttune.physics import amplitude_misfit, forward
    from latenttune.tracking.physics_settings import PhysicsSettings
    from latenttune.tracking.replay import run_postprocessor
    from latenttune.tracking.static import static_scan, static_starts
    from latenttune.versions import versions

    from latenttune.model.paths import model_path

    check_outputs({"--out": args.out, _PARTIAL: f"{args.out}.partial"},
                  {"the input series": args.series, "the model checkpoint": model_path(args.model)},
                  overwrite=args.overwrite, may_exist={_PARTIAL}, kinds={"--out": "results"})
    loaded = load_model(args.model)
    with open_prepared(args.series, loaded.model.config.N, amplitude=args.amplitude) as series:
        warn_quantity(series, args.amplitude)
        note_geometry(series)
        frame = series[args.frame]
        starts = static_starts(loaded.model, frame.intensity, frame.mask, np.random.default_rng(args.seed),
                               views=args.views, random=args.random)
        print(f"{len(starts)} starts: {', '.join(s.name for s in starts)}")
        settings = PhysicsSettings(iterations=args.iterations, cold_iterations=args.iterations, restarts=0)
        scan = static_scan(frame.intensity, frame.mask, starts, settings=settings, average=args.average)
        print(scan.table())
        best = scan.best
        print(f"kept {best.start.name!r} (lowest free LLK {best.llk_free:.3f})")
        post, context = run_postprocessor(series, True)
        n = loaded.model.config.n
        table = json.dumps([{"start": r.start.name, "llk": r.llk, "llk_free": r.llk_free} for r in scan.runs])
        attrs = {**context.get("attrs", {}), "model_checksum": loaded.checksum, "strategy": "static",
                 "series": str(args.series), "static_frame": args.frame, "static_starts": table,
                 "static_settings": {"views": args.views, "random": args.random, "iterations": args.iterations,
                                     "average": args.average, "seed": args.seed},
                 "versions": json.dumps(versions())}
        latent = np.nan_to_num(np.asarray(best.start.latent, dtype=np.float32), nan=0.0)
        cost = float(amplitude_misfit(forward(best.density), frame.intensity, frame.mask))
        extra = {"index": args.frame, "output_density": best.density, "llk": best.llk, "llk_free": best.llk_free,
                 "physics_start": best.start.name, "status": "ok"}
        if scan.average is not None:
            extra["average_density"] = scan.average
        if post is not None:
            extra.update(post.row(best.density, n))
        with ResultWriter(args.out, n=n, k=loaded.model.latent_dim, attrs=attrs, overwrite=args.overwrite) as writer:
            if context:
                writer.write_groups(context["groups"])
            writer.append(latent, cost, best.start.density, float(frame.time), len(starts), **extra)
    print(f"wrote {args.out}")
    if post is not None:
        print(f"strain inside the support: {extra['strain_mean']:+.2e} +- {extra['strain_std']:.2e}")
    return 0


#: How the output guard names a results file's partial file (written first, renamed onto ``--out`` at the end).
_PARTIAL = "its partial file (OUT.partial)"


def _cmd_strain(args: argparse.Namespace) -> int:
    from latenttune.io import read_results
    from latenttune.outputs import check_outputs
    from latenttune.postprocess.frames import postprocess_results

    check_outputs({"--out": args.out, _PARTIAL: f"{args.out}.partial"}, {"the results file": args.results},
                  overwrite=args.overwrite, may_exist={_PARTIAL}, kinds={"--out": "results"})
    path = postprocess_results(args.results, args.out, overwrite=args.overwrite)
    results = read_results(path)
    print(f"wrote {results.num_frames} post-processed frame(s) to {Path(path)}: strain std per frame "
          f"{', '.join(f'{v:.2e}' for v in results.strain_std[:10])}{' ...' if results.num_frames > 10 else ''}")
    return 0
