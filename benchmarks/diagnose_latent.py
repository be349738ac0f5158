"""Diagnosis: which part limits a reconstruction, the decoder, the encoder or the controller?

Run (from the repository root)::

    python benchmarks/diagnose_latent.py --out benchmarks/results/diagnosis

For each scenario one series is simulated as in ``bench_tracking.py`` (Poisson noise at
``--photons``, a beamstop of ``--beamstop`` voxels), and on the same frames it measures the mean
real-space error E_r of

* ``floor``: the representation floor, the best latent found by fitting the decoder to the TRUE
  density in real space (:func:`latenttune.model.diagnosis.representation_floor`; uses the network
  gradient and the truth: a diagnosis, not a tracker), started from the encoder's prediction and
  ``--floor-starts - 1`` random latents;
* ``one-shot``: the encoder alone;
* ``es``: extremum seeking on the latent (cost values only);
* ``hybrid``: ES plus the physics stage on the voxels (the default tracker).

Reading: a high floor means the decoder cannot draw the sample (a richer latent space is the
fix); one-shot far above the floor means the encoder misses; ES far above the floor means the
controller does not reach what the decoder could draw; hybrid below the floor is the part of the
sample only the measured pattern holds. Writes ``OUT.md`` and ``OUT.json``; asserts nothing.
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

COLUMNS = ("floor", "one-shot", "es", "hybrid")


def floors(series_path: Path, loaded: Any, every: int, starts: int, steps: int, seed: int) -> np.ndarray:
    """Representation floor per frame (NaN for frames not fitted)."""
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
            result = representation_floor(model, series.truth(t), z0=z0, starts=starts, steps=steps,
                                          rng=np.random.default_rng([seed, t]))
            out[t] = result.error
            print(f"  floor frame {t:3d}  E_r {result.error:.3f}  (starts {np.round(result.start_errors, 3).tolist()})",
                  flush=True)
    return out


def reading(row: dict[str, float], scenario: str = "") -> str:
    """One line on what limits the scenario.

    ``latent-walk``'s truth is drawn by the decoder itself, so a high floor there is the fit's
    local minimum, not something the decoder cannot draw.
    """
    floor, one, es, hybrid = (row[c] for c in COLUMNS)
    parts = []
    if scenario == "latent-walk":
        parts.append("drawn by the decoder itself" + (" (the floor fit stopped in a local minimum)" if floor > 0.2 else ""))
    else:
        parts.append("decoder cannot draw it" if floor > 0.2 else "decoder can draw it")
    if one - floor > 0.1:
        parts.append("encoder misses by %.2f" % (one - floor))
    if es - floor > 0.1:
        parts.append("ES stays %.2f above the floor" % (es - floor))
    if hybrid < min(floor, es) - 0.02:
        parts.append("the physics stage recovers what the latent cannot hold")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bt.add_series_options(parser, methods=("one-shot,es,hybrid", "latent methods to run (besides the floor)"),
                          frames=(8, "frames per scenario"), seed_help="simulation seed")
    parser.add_argument("--floor-every", type=int, default=2, help="fit the floor on every k-th frame")
    parser.add_argument("--floor-starts", type=int, default=3, help="starts of the floor fit (the first: the encoder)")
    parser.add_argument("--floor-steps", type=int, default=150, help="Adam steps of the floor fit")
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
            figures = {"floor": floors(series, loaded, args.floor_every, args.floor_starts, args.floor_steps, args.seed)}
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
            row["reading"] = reading(row, scenario) if all(c in figures for c in COLUMNS) else ""
            rows.append(row)
            per_frame[scenario] = {k: [float(x) for x in v] for k, v in figures.items()}
    lines = ["| scenario | frames | floor | one-shot | ES | hybrid | reading |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['frames']} | {r['floor']:.3f} | {r['one-shot']:.3f} | {r['es']:.3f} | "
                     f"{r['hybrid']:.3f} | {r['reading']} |")
    header = (f"Mean E_r per scenario. Model {loaded.path.name} (weights checksum {loaded.checksum[:12]}, latent "
              f"dimension {loaded.model.latent_dim}), {args.frames} frames per scenario, {args.photons:g} photons, "
              f"beamstop {args.beamstop} voxels, seed {args.seed}, {bt.steps_text(args.steps)}, best of {args.views} views; "
              f"floor fitted on every {args.floor_every}. frame ({args.floor_starts} starts x {args.floor_steps} Adam "
              f"steps; the other columns are averaged over the same frames). Machine: {bt.machine()}, torch "
              f"{torch.__version__} ({torch.get_num_threads()} threads). Total {time.perf_counter() - started:.0f} s.\n"
              f"Command: python {' '.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}\n")
    bt.write_report(Path(args.out), header, "\n".join(lines), {"rows": rows, "per_frame": per_frame})
    return 0


if __name__ == "__main__":
    sys.exit(main())
