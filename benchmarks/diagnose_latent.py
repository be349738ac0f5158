"""Diagnosis: which part limits a reconstruction, the decoder, the encoder or the controller?

Run (from the repository root)::

    python benchmarks/diagnose_latent.py --out benchmarks/results/diagnosis

For each scenario one series is simulated as in ``bench_tracking.py`` (Poisson noise at
``--photons``, a beamstop of ``--beamstop`` voxels), and on the same frames it measures the mean
real-space error E_r of

* ``floor``: the representation floor, the best latent found by fitting the decoder to the TRUE
  density in real space (:func:`latenttune.model.diagnosis.representation_floor`; uses the network
  gradient and the truth: a diagnosis, not a tracker), from ``--floor-starts`` starts: the encoder's
  prediction, the default tracker's latent of the frame, and random latents; the lowest wins, so
  the floor is never above what the tracker found;
* ``one-shot``: the encoder alone;
* ``es``: extremum seeking on the measured pattern alone (cost values only);
* ``decoded``: the decoded latent of the default tracker (hybrid): its latent read back from the
  physics stage's output, the learned part tuned by extremum seeking;
* ``hybrid``: the default tracker's output (the physics stage on the voxels).

It also reports the read-back's extremum seeking's own contribution: per frame, ``(E_r(start) -
E_r(after ES)) / (E_r(start) - floor)``, where the start is the latent ES begins the frame from
(explicit part read off the output, learned part where ES left it), averaged over the frames whose
start is more than 0.05 above the floor.

Reading: a high floor means the decoder cannot draw the sample (a richer latent space is the
fix); one-shot far above the floor means the encoder misses; decoded far above the floor means the
tracker's latent does not reach what the decoder could draw; hybrid below the floor is the part of
the sample only the measured pattern holds. Writes ``OUT.md`` and ``OUT.json``; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_tracking as bt  # noqa: E402  (the benchmarks folder is not a package)

COLUMNS = ("floor", "one-shot", "es", "decoded", "hybrid")


def tracked(series_path: Path, loaded: Any) -> dict[str, np.ndarray]:
    """The default tracker on the series, through :func:`latenttune.tracking.track`: per-frame latents and errors.

    Returns ``latent`` (T, k), ``decoded`` and ``hybrid`` E_r, and ``start`` / ``after`` E_r of the
    read-back's extremum seeking (its start latent's, and the frame's final latent's).
    """
    import torch

    from latenttune.io import open_series
    from latenttune.metrics import real_space_error
    from latenttune.tracking import make_strategy, track

    model = loaded.model
    with open_series(series_path) as series:
        truths = [series.truth(t) for t in range(len(series))]
        result = track(series, model, make_strategy("hybrid", model.latent_dim))
    out: dict[str, list[float]] = {"decoded": [], "hybrid": [], "start": [], "after": []}
    for record, truth in zip(result.records, truths):
        out["decoded"].append(real_space_error(truth, record.density).error)
        out["hybrid"].append(real_space_error(truth, record.output_density).error)
        with torch.inference_mode():
            start = model.decode(record.readback.start)[0].cpu().numpy()
        out["start"].append(real_space_error(truth, start).error)
        out["after"].append(out["decoded"][-1])
    figures = {key: np.asarray(value) for key, value in out.items()}
    figures["latent"] = result.latent
    return figures


def floors(series_path: Path, loaded: Any, every: int, starts: int, steps: int, seed: int,
           tracker_latents: np.ndarray | None = None) -> np.ndarray:
    """Representation floor per frame (NaN for frames not fitted), the tracker's latent among the starts."""
    import torch

    from latenttune.model.diagnosis import representation_floor
    from latenttune.io import open_series

    model = loaded.model
    with open_series(series_path) as series:
        out = np.full(len(series), np.nan)
        for t in range(0, len(series), every):
            frame = series[t]
            with torch.inference_mode():
                z0 = model.encode(frame.intensity, frame.mask)[0].cpu().numpy()
            extra = [] if tracker_latents is None else [tracker_latents[t]]
            result = representation_floor(model, series.truth(t), z0=z0, starts=starts, steps=steps,
                                          rng=np.random.default_rng([seed, t]), extra_starts=extra)
            out[t] = result.error
            print(f"  floor frame {t:3d}  E_r {result.error:.3f}  (starts {np.round(result.start_errors, 3).tolist()})",
                  flush=True)
    return out


def es_contribution(start: np.ndarray, after: np.ndarray, floor: np.ndarray, margin: float = 0.05) -> tuple[float, int]:
    """Mean of ``(start - after) / (start - floor)`` over frames whose start is more than ``margin`` above the floor."""
    keep = np.isfinite(floor) & (start - floor > margin)
    if not keep.any():
        return float("nan"), 0
    return float(np.mean((start[keep] - after[keep]) / (start[keep] - floor[keep]))), int(keep.sum())


def reading(row: dict[str, float], scenario: str = "") -> str:
    """One line on what limits the scenario.

    ``latent-walk``'s truth is drawn by the decoder itself, so a high floor there is the fit's
    local minimum, not something the decoder cannot draw.
    """
    floor, one, es, decoded, hybrid = (row[c] for c in COLUMNS)
    parts = []
    if scenario == "latent-walk":
        parts.append("drawn by the decoder itself" + (" (the floor fit stopped in a local minimum)" if floor > 0.2 else ""))
    else:
        parts.append("decoder cannot draw it" if floor > 0.2 else "decoder can draw it")
    if one - floor > 0.1:
        parts.append("encoder misses by %.2f" % (one - floor))
    if es - floor > 0.1:
        parts.append("ES alone stays %.2f above the floor" % (es - floor))
    if np.isfinite(decoded):
        parts.append("the tracker's decoded latent is %.2fx the floor" % (decoded / floor))
    if hybrid < min(floor, es) - 0.02:
        parts.append("the physics stage recovers what the latent cannot hold")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bt.add_series_options(parser, methods=("one-shot,es", "latent methods to run (besides the floor and the hybrid)"),
                          frames=(8, "frames per scenario"), seed_help="simulation seed")
    parser.add_argument("--floor-every", type=int, default=2, help="fit the floor on every k-th frame")
    parser.add_argument("--floor-starts", type=int, default=10,
                        help="random and encoder starts of the floor fit (the tracker's latent is one more)")
    parser.add_argument("--floor-steps", type=int, default=400, help="Adam steps of the floor fit")
    parser.add_argument("--torch-threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads")
    parser.add_argument("--out", default="benchmarks/results/diagnosis", help="output stem (.md/.json)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.floor_every < 1 or args.floor_starts < 1 or args.floor_steps < 1:
        parser.error("--frames, --floor-every, --floor-starts and --floor-steps must be >= 1")

    import torch

    from latenttune.model import load_model

    torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in bt.METHODS:
            parser.error(f"--methods: unknown method {m!r}; choose from {', '.join(bt.METHODS)}")
    started = time.perf_counter()
    per_frame: dict[str, dict[str, list[float]]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for scenario in [s for s in args.scenarios.split(",") if s]:
            print(f"{scenario}:", flush=True)
            series = bt.simulate(scenario, tmpdir, loaded, args.frames, args.photons, args.beamstop, args.seed)
            default = tracked(series, loaded)
            figures = {"floor": floors(series, loaded, args.floor_every, args.floor_starts, args.floor_steps, args.seed,
                                       default["latent"]),
                       "decoded": default["decoded"], "hybrid": default["hybrid"]}
            print(f"  decoded   mean E_r {np.mean(default['decoded']):.3f}\n  hybrid    mean E_r "
                  f"{np.mean(default['hybrid']):.3f}", flush=True)
            for method in methods:
                f = bt.run_method(method, series, loaded, tmpdir / f"{scenario}-{method}.h5", args.steps, {},
                                  args.views)
                figures[method] = f["E_r"]
                print(f"  {method:9s} mean E_r {np.nanmean(f['E_r']):.3f}", flush=True)
            fitted = np.isfinite(figures["floor"])
            # every column over the frames the floor was fitted on, so the columns compare like with like
            row = {"scenario": scenario, "frames": int(fitted.sum())}
            for column in COLUMNS:
                row[column] = float(np.mean(figures[column][fitted])) if column in figures else float("nan")
            row["decoded_over_floor"] = row["decoded"] / row["floor"]
            row["es_contribution"], row["es_frames"] = es_contribution(default["start"], default["after"],
                                                                       figures["floor"])
            row["reading"] = reading(row, scenario) if all(c in figures for c in COLUMNS) else ""
            rows.append(row)
            per_frame[scenario] = {k: [float(x) for x in v] for k, v in figures.items()}
            per_frame[scenario]["es_start"] = default["start"].tolist()
    lines = ["| scenario | frames | floor | one-shot | ES alone | decoded (tracker) | decoded / floor | hybrid output | "
             "ES contribution (frames) | reading |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['frames']} | {r['floor']:.3f} | {r['one-shot']:.3f} | {r['es']:.3f} | "
                     f"{r['decoded']:.3f} | {r['decoded_over_floor']:.2f} | {r['hybrid']:.3f} | "
                     f"{r['es_contribution']:.2f} ({r['es_frames']}) | {r['reading']} |")
    header = (f"Mean E_r per scenario. Model {loaded.path.name} (weights checksum {loaded.checksum[:12]}, latent "
              f"dimension {loaded.model.latent_dim}), {args.frames} frames per scenario, {args.photons:g} photons, "
              f"beamstop {args.beamstop} voxels, seed {args.seed}, {bt.steps_text(args.steps)}, best of {args.views} views; "
              f"floor fitted on every {args.floor_every}. frame ({args.floor_starts} starts + the tracker's latent x "
              f"{args.floor_steps} Adam steps; the other columns are averaged over the same frames). Machine: {bt.machine()}, torch "
              f"{torch.__version__} ({torch.get_num_threads()} threads). Total {time.perf_counter() - started:.0f} s.\n"
              f"Command: python {' '.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}\n")
    bt.write_report(Path(args.out), header, "\n".join(lines), {"rows": rows, "per_frame": per_frame})
    return 0


if __name__ == "__main__":
    sys.exit(main())
