"""How far to trust a frame without truth: the hybrid tracker's Poisson LLK against its real-space error.

Run (from the repository root)::

    python benchmarks/bench_llk_calibration.py --seeds 41,53 --out benchmarks/results/llk_calibration

On measured data there is no truth, and :mod:`latenttune.quality` flags a frame as *stagnated* when
the Poisson log-likelihood (LLK) of its output stays above the physics stage's ``restart_llk`` after
the restarts. This benchmark measures what that flag says. For every seed and scenario it simulates
a series with :func:`bench_tracking.simulate` (Poisson noise at ``--photons``, a beamstop of
``--beamstop`` voxels), tracks it with the default (hybrid) tracker through
:func:`bench_tracking.run_method` (``latenttune replay``'s code path), and pairs each frame's LLK
with its real-space error E_r against the truth (global phase, translation and twin removed).

Writes ``OUT.md`` (E_r per LLK bin, and for the flagged and the unflagged frames), ``OUT.json`` (every
frame) and ``OUT.png`` (E_r against LLK, one colour per scenario, the threshold drawn). Use seeds the
tracker's settings were not tuned on (the default 41 and 53 were never used while building it).
Asserts nothing: it reports.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_tracking as bt  # noqa: E402  (the benchmarks folder is not a package)

#: Upper edges of the LLK bins of the report (the last bin is open).
LLK_BINS = (1.2, 1.5, 2.0, 4.0)


def _stats(errors: np.ndarray) -> dict[str, Any]:
    if errors.size == 0:
        return {"frames": 0, "median": None, "p90": None, "max": None, "below_0.1": None}
    return {"frames": int(errors.size), "median": float(np.median(errors)), "p90": float(np.percentile(errors, 90)),
            "max": float(errors.max()), "below_0.1": float(np.mean(errors < 0.1))}


def calibration_rows(llk: np.ndarray, errors: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """E_r statistics per LLK bin, then for the unflagged (``<= threshold``) and flagged frames."""
    llk, errors = np.asarray(llk, dtype=float), np.asarray(errors, dtype=float)
    keep = np.isfinite(llk) & np.isfinite(errors)
    llk, errors = llk[keep], errors[keep]
    rows = []
    low = -np.inf
    for high in (*LLK_BINS, np.inf):
        label = f"LLK <= {high:g}" if low == -np.inf else (f"{low:g} < LLK <= {high:g}" if np.isfinite(high)
                                                           else f"LLK > {low:g}")
        rows.append({"frames_in": label, **_stats(errors[(llk > low) & (llk <= high)])})
        low = high
    rows.append({"frames_in": f"not stagnated (LLK <= {threshold:g})", **_stats(errors[llk <= threshold])})
    rows.append({"frames_in": f"stagnated (LLK > {threshold:g})", **_stats(errors[llk > threshold])})
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`calibration_rows` as a markdown table."""
    def cell(value: Any, digits: str = ".3f") -> str:
        return "-" if value is None else format(value, digits)

    lines = ["| frames | count | median E_r | 90th pct E_r | max E_r | share with E_r < 0.1 |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['frames_in']} | {r['frames']} | {cell(r['median'])} | {cell(r['p90'])} | "
                     f"{cell(r['max'])} | {cell(r['below_0.1'], '.0%')} |")
    return "\n".join(lines)


def plot(per_frame: dict[str, dict[str, list[float]]], threshold: float, path: Path) -> None:
    """E_r against LLK (log axis), one colour per scenario, the stagnation threshold dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for scenario, f in per_frame.items():
        ax.plot(f["llk"], f["E_r"], "o", ms=4, alpha=0.8, label=scenario)
    ax.axvline(threshold, color="C3", ls="--", lw=1, label=f"stagnation threshold {threshold:g}")
    ax.axvline(1.0, color="0.5", ls=":", lw=1, label="Poisson noise level")
    ax.set_xscale("log")
    ticks = [t for t in (1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0) if t <= max(max(f["llk"], default=1) for f in per_frame.values())
             or t <= 2.0]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("Poisson LLK of the frame's output (no truth needed)")
    ax.set_ylabel("real-space error E_r (against the truth)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("hybrid tracker: what the LLK says about E_r", fontsize=10)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--scenarios", default=",".join(bt.DEFAULT_SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--seeds", default="41,53", help="comma-separated simulation seeds")
    parser.add_argument("--frames", type=int, default=8, help="frames per series")
    parser.add_argument("--photons", type=float, default=1e8, help="expected total photons per frame")
    parser.add_argument("--beamstop", type=float, default=1.5, help="beamstop radius in voxels")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default="benchmarks/results/llk_calibration", help="output stem (.md/.json/.png)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    if not seeds or not scenarios:
        parser.error("--seeds and --scenarios must each name at least one")
    if args.frames < 1 or args.torch_threads < 1:
        parser.error("--frames and --torch-threads must be >= 1")

    import torch

    from latenttune.model import load_model
    from latenttune.tracking.physics_settings import PhysicsSettings

    torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model)
    threshold = PhysicsSettings().restart_llk
    per_frame: dict[str, dict[str, list[float]]] = {s: {"llk": [], "E_r": [], "seed": []} for s in scenarios}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for scenario in scenarios:
                folder = Path(tmp) / f"{scenario}-{seed}"
                folder.mkdir()
                series = bt.simulate(scenario, folder, loaded, args.frames, args.photons, args.beamstop, seed)
                f = bt.run_method("hybrid", series, loaded, folder / "hybrid.h5", None, {})
                per_frame[scenario]["llk"] += f["llk"].tolist()
                per_frame[scenario]["E_r"] += f["E_r"].tolist()
                per_frame[scenario]["seed"] += [seed] * len(f["llk"])
                flagged = f["llk"] > threshold
                print(f"seed {seed:3d} {scenario:12s} mean E_r {np.nanmean(f['E_r']):.3f}  stagnated {int(flagged.sum())}"
                      f" of {len(flagged)} frames  ms/frame {np.mean(f['seconds']) * 1e3:.0f}", flush=True)
    llk = np.concatenate([np.asarray(f["llk"]) for f in per_frame.values()])
    errors = np.concatenate([np.asarray(f["E_r"]) for f in per_frame.values()])
    rows = calibration_rows(llk, errors, threshold)
    per_scenario = ["| scenario | frames | stagnated | median E_r (not stagnated) | median E_r (stagnated) |",
                    "|---|---:|---:|---:|---:|"]
    for scenario, f in per_frame.items():
        s_llk, s_err = np.asarray(f["llk"]), np.asarray(f["E_r"])
        flag = s_llk > threshold
        median = (lambda e: "-" if e.size == 0 else f"{np.median(e):.3f}")
        per_scenario.append(f"| {scenario} | {len(flag)} | {int(flag.sum())} | {median(s_err[~flag])} | "
                            f"{median(s_err[flag])} |")
    out = Path(args.out)
    header = (f"Model {loaded.path.name} (weights checksum {loaded.checksum[:12]}), default hybrid tracker, "
              f"stagnation threshold restart_llk = {threshold:g}, {args.frames} frames per series, seeds "
              f"{', '.join(map(str, seeds))}, {args.photons:g} photons, beamstop {args.beamstop} voxels. Machine: "
              f"{bt.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s). Total "
              f"{time.perf_counter() - started:.0f} s.\n"
              f"Command: python {' '.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}\n")
    table = markdown_table(rows) + "\n\n" + "\n".join(per_scenario)
    plot(per_frame, threshold, out.with_suffix(".png"))
    bt.write_report(out, header, table, {"rows": rows, "per_frame": per_frame, "threshold": threshold})
    return 0


if __name__ == "__main__":
    sys.exit(main())
