"""Tracking quality and speed: extremum seeking against the encoder one-shot and gradient tracking.

Run (from the repository root)::

    python benchmarks/bench_tracking.py --frames 20 --out benchmarks/results/tracking

For each scenario (default: ``latent-walk``, ``growth``, ``strain``, ``dislocation``) one series is
simulated with the project's own ``simulate_series`` (Poisson noise at ``--photons``, a beamstop of
``--beamstop`` voxels) and every method tracks *the same frames* through ``replay_series``, the code
path of ``latenttune replay``. Per frame it records the real-space error E_r against the simulator's
truth (global phase, translation and twin removed; docs/conventions.md, section 3), the amplitude error E_q and
the wall time of the tracking work. Writes ``OUT.md`` (a markdown table of mean/max E_r, E_q and
ms/frame), ``OUT.json`` (all per-frame figures) and ``OUT.png`` (E_r against frame). Asserts
nothing: it reports.

Methods:

* ``hybrid`` (the default tracker): ES as below, then the physics stage on the voxels
  (:mod:`latenttune.tracking.physics_stage`: RAAR/ER with shrink-wrap, warm-started from the previous frame's
  output, kept only when it fits held-out voxels better); E_r/E_q of the frame's output, time of both;
* ``es``: extremum seeking on the latent, default controller settings (cost values only);
* ``one-shot``: the encoder alone on each frame;
* ``gradient``: Adam on z through the network gradient (a comparator; uses the gradient).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.cli.argtypes import add_views_option

DEFAULT_SCENARIOS = ("latent-walk", "growth", "strain", "dislocation", "fcc-glide")
METHODS = ("hybrid", "es", "one-shot", "gradient")


def simulate(scenario: str, directory: Path, loaded: Any, frames: int, photons: float, beamstop: float,
             seed: int) -> Path:
    """Simulate one scenario's series into ``directory`` and return its path."""
    from latenttune.simulate import simulate_series

    options: dict[str, Any] = {}
    if scenario == "latent-walk":
        from latenttune.model.latent_walk import latent_spread, numpy_decoder

        options = {"decode": numpy_decoder(loaded.model), "latent_bounds": latent_spread(loaded)}
    path = directory / f"{scenario}.cxi"
    simulate_series(scenario, path, num_frames=frames, n=loaded.model.config.n, photons=photons,
                    beamstop_radius=beamstop, seed=seed, overwrite=True, scenario_options=options)
    return path


def steps_text(steps: int | None) -> str:
    """How many cost evaluations per frame the latent methods spent, for report headers."""
    from latenttune.tracking import ES_STEPS_PER_FRAME, HYBRID_STEPS_PER_FRAME

    if steps is None:
        return (f"{HYBRID_STEPS_PER_FRAME} ES cost evaluations per frame (hybrid), {ES_STEPS_PER_FRAME} (es, "
                "gradient)")
    return f"{steps} cost evaluations per frame (hybrid, es, gradient)"


def parse_physics(text: str) -> dict[str, Any]:
    """``"beta=0.95,cold_iterations=240"`` as :class:`latenttune.tracking.physics_settings.PhysicsSettings` fields (typed like the defaults)."""
    import dataclasses

    from latenttune.tracking.physics_settings import PhysicsSettings

    defaults = {f.name: f.default for f in dataclasses.fields(PhysicsSettings)}
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in defaults:
            raise ValueError(f"--physics: {item!r} is not NAME=VALUE with NAME one of {', '.join(defaults)}")
        kind = type(defaults[name])
        booleans = {"1": True, "true": True, "0": False, "false": False}
        try:
            out[name] = booleans[value.lower()] if kind is bool else kind(value)
        except (KeyError, ValueError):
            raise ValueError(f"--physics: {name} must be a {kind.__name__}, got {value!r}") from None
    PhysicsSettings(**out)  # the settings' own checks, before any simulation
    return out


def run_method(method: str, series_path: Path, loaded: Any, out: Path, steps: int | None,
               es_options: dict[str, Any], views: int = 1, physics: dict[str, Any] | None = None,
               readback: bool = True) -> dict[str, np.ndarray]:
    """Track ``series_path`` with one method (the model's view chosen among ``views``); return its per-frame figures.

    ``physics`` overrides :class:`latenttune.tracking.physics_settings.PhysicsSettings` fields of the ``hybrid``
    method, ``readback=False`` turns its read-back off. For the hybrid, ``E_r`` is its output's and
    ``E_r_decoded`` its decoded latent's.
    """
    from latenttune.io import open_series, read_results
    from latenttune.tracking.physics_settings import PhysicsSettings
    from latenttune.tracking.replay import replay_series
    from latenttune.tracking import make_strategy

    k = loaded.model.latent_dim
    if method == "one-shot":
        strategy = make_strategy("one-shot", k)
    elif method in ("es", "hybrid"):
        options = {**es_options, **({"physics": PhysicsSettings(**physics)} if method == "hybrid" and physics else {})}
        if method == "hybrid" and not readback:
            options["readback"] = False
        strategy = make_strategy(method, k, steps_per_frame=steps, **options)
    else:
        strategy = make_strategy("gradient", k, steps_per_frame=steps)
    with open_series(series_path) as series:
        path, _ = replay_series(series, loaded, strategy, out, overwrite=True, views=views)
    results = read_results(path)
    # `seconds` is the whole frame's tracking work (for hybrid: ES and the physics stage)
    figures = {key: np.asarray(getattr(results, key), dtype=float) for key in ("E_r", "E_q", "cost", "seconds")}
    if method == "hybrid":
        figures["E_r_decoded"] = figures["E_r"]
        figures["E_r"] = np.asarray(results.E_r_output, dtype=float)
        figures["E_q"] = np.asarray(results.E_q_output, dtype=float)
        figures["accepted"] = np.asarray(results.physics_accepted, dtype=float)
        figures["llk"] = np.asarray(results.llk, dtype=float)
    return figures


def summarise(figures: dict[str, dict[str, dict[str, np.ndarray]]], skip: int) -> list[dict[str, Any]]:
    """One row per (scenario, method): mean/max E_r and E_q over frames ``skip:``, ms per frame."""
    rows = []
    for scenario, per_method in figures.items():
        for method, f in per_method.items():
            e_r, e_q = f["E_r"][skip:], f["E_q"][skip:]
            rows.append({
                "scenario": scenario, "method": method,
                "E_r_mean": float(np.nanmean(e_r)), "E_r_max": float(np.nanmax(e_r)),
                "E_q_mean": float(np.nanmean(e_q)), "E_q_max": float(np.nanmax(e_q)),
                "ms_per_frame": float(np.mean(f["seconds"]) * 1e3),
            })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = ["| scenario | method | mean E_r | max E_r | mean E_q | max E_q | ms / frame |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['method']} | {r['E_r_mean']:.3f} | {r['E_r_max']:.3f} | "
                     f"{r['E_q_mean']:.3f} | {r['E_q_max']:.3f} | {r['ms_per_frame']:.0f} |")
    return "\n".join(lines)


def plot(figures: dict[str, dict[str, dict[str, np.ndarray]]], path: Path) -> None:
    """E_r against frame, one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(figures), figsize=(4 * len(figures), 3.2), squeeze=False)
    for ax, (scenario, per_method) in zip(axes[0], figures.items()):
        for method, f in per_method.items():
            ax.plot(f["E_r"], marker=".", label=method)
        ax.set_title(scenario)
        ax.set_xlabel("frame")
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("E_r")
    axes[0][-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> str:
    """A one-line description of the machine."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"


def add_series_options(
    parser: argparse.ArgumentParser, *, methods: tuple[str, str], frames: tuple[int, str], seed_help: str
) -> None:
    """Options shared with ``bench_vs_cohere.py``: model, scenarios, methods, frames, ES steps, measurement, seed.

    ``methods`` and ``frames`` are ``(default, help)`` pairs; the two benchmarks differ there.
    """
    from latenttune.tracking import ES_STEPS_PER_FRAME, HYBRID_STEPS_PER_FRAME

    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--methods", default=methods[0], help=methods[1])
    parser.add_argument("--frames", type=int, default=frames[0], help=frames[1])
    parser.add_argument("--steps", type=int, default=None,
                        help="cost evaluations per frame (hybrid, es, gradient; default: each strategy's own, "
                             f"{HYBRID_STEPS_PER_FRAME} for hybrid and {ES_STEPS_PER_FRAME} for es and gradient)")
    parser.add_argument("--skip", type=int, default=0, help="frames left out of the statistics (lock-in)")
    parser.add_argument("--photons", type=float, default=1e8, help="expected total photons per frame")
    parser.add_argument("--beamstop", type=float, default=1.5, help="beamstop radius in voxels")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    add_views_option(parser, 1, "symmetric views of the first frame the latent methods choose the model's view "
                                "from (1 = the identity, the trackers' default)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_series_options(
        parser,
        methods=("hybrid,es,one-shot", f"comma-separated, from {', '.join(METHODS)}"),
        frames=(20, "frames per scenario"),
        seed_help="simulation seed",
    )
    parser.add_argument("--gain", type=float, default=None, help="ES gain (default: the controller's)")
    parser.add_argument("--dither", type=float, default=None, help="ES dither amplitude (default: the controller's)")
    parser.add_argument("--adapt", action="store_true", help="ES adaptive dither amplitude")
    parser.add_argument("--no-reseed", action="store_true", help="ES never restarts from the encoder's prediction")
    parser.add_argument("--physics", default="", help="hybrid's physics-stage settings, e.g. 'beta=0.95,restarts=0' "
                                                      "(PhysicsSettings fields; default: its defaults)")
    parser.add_argument("--torch-threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch intra-op threads (1 is faster while another job loads the CPU)")
    parser.add_argument("--out", default="benchmarks/results/tracking", help="output stem (.md/.json/.png)")
    args = parser.parse_args(argv)

    import torch

    from latenttune.model import load_model

    if args.torch_threads < 1:
        parser.error("--torch-threads must be >= 1")
    torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model)
    es_options: dict[str, Any] = {}
    if args.gain is not None:
        es_options["gain"] = args.gain
    if args.dither is not None:
        es_options["dither"] = args.dither
    if args.adapt:
        es_options["adapt"] = True
    if args.no_reseed:
        es_options["reseed"] = False
    try:
        physics = parse_physics(args.physics)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    scenarios = [s for s in args.scenarios.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    figures: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for scenario in scenarios:
            series = simulate(scenario, tmpdir, loaded, args.frames, args.photons, args.beamstop, args.seed)
            figures[scenario] = {}
            for method in methods:
                f = run_method(method, series, loaded, tmpdir / f"{scenario}-{method}.h5", args.steps, es_options,
                               args.views, physics)
                figures[scenario][method] = f
                print(f"{scenario:12s} {method:9s} mean E_r {np.nanmean(f['E_r']):.3f}  max E_r "
                      f"{np.nanmax(f['E_r']):.3f}  mean E_q {np.nanmean(f['E_q']):.3f}  "
                      f"{np.mean(f['seconds']) * 1e3:.0f} ms/frame", flush=True)
    rows = summarise(figures, args.skip)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"Model {loaded.path.name} (weights checksum {loaded.checksum[:12]}), {args.frames} frames per scenario, "
              f"{steps_text(args.steps)}, first-frame view chosen among {args.views}, {args.photons:g} photons, beamstop "
              f"{args.beamstop} voxels, seed {args.seed}, ES options {es_options or 'default'}, physics stage "
              f"{physics or 'default'}, statistics over "
              f"frames {args.skip}..{args.frames - 1}. Machine: {machine()}, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads. Total {time.perf_counter() - started:.0f} s.\n"
              f"Command: python {' '.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}\n")
    serialisable = {s: {m: {k: v.tolist() for k, v in f.items()} for m, f in pm.items()} for s, pm in figures.items()}
    plot(figures, out.with_suffix(".png"))
    write_report(out, header, markdown_table(rows), {"rows": rows, "per_frame": serialisable})
    return 0


def write_report(out: Path, header: str, table: str, payload: dict[str, Any]) -> None:
    """Write ``OUT.md`` (header and table) and ``OUT.json`` (``payload`` plus the header), and print both."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(header + "\n" + table + "\n")
    out.with_suffix(".json").write_text(json.dumps({**payload, "header": header}, indent=1, default=float))
    print()
    print(header)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
