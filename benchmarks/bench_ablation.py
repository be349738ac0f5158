"""Ablation: what the network and the controller each add, beside the baseline that needs no network.

Run (from the repository root)::

    python benchmarks/bench_ablation.py --out benchmarks/results/ablation

Methods, all on the same frames of each series:

* ``physics-only``: the hybrid's physics stage with exactly the hybrid's settings (iterations,
  restarts, acceptance, the counts-derived pull towards its guide) and no network at all: the first
  frame starts from a uniform sphere whose radius comes from the pattern's autocorrelation, every
  later frame from the previous output, which is also its guide;
* ``one-shot+physics``: the hybrid with its read-back off (the latent is the guide's: the encoders'
  prediction or the previous frame's latent, whichever fits the frame better);
* ``hybrid``: the default tracker (the latent read back from the physics stage's output, its learned
  part tuned by extremum seeking);
* ``hybrid-noprior``: the hybrid without the latent's prior in the physics stage (no pull towards
  the decoded guide); the support still comes from the guide;
* ``es``: extremum seeking on the measured pattern alone;
* ``one-shot``: the encoders alone.

Regimes (each a list of series): ``1e8``, ``1e7``, ``1e6`` photons per frame (beamstop 1.5 voxels),
``jump`` (the ``jump`` scenario: an abrupt change), ``beamstop3`` (a 3-voxel beamstop at 1e8) and
``oof`` (out-of-family crystals, :mod:`benchmarks.out_of_family`, 1e8). For each method and regime it
reports the mean E_r of what the method shows (the output for the methods with a physics stage, the
decoded latent otherwise), the hybrids' decoded latent, and ms per frame; writes OUT.md, OUT.json and
OUT.png (bars per regime). The series' seeds default to ones the methods were not tuned on.
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

METHODS = ("physics-only", "one-shot+physics", "hybrid", "hybrid-noprior", "es", "one-shot")
REGIMES = {
    "1e8": {"photons": 1e8, "beamstop": 1.5, "scenarios": ("growth", "strain", "dislocation")},
    "1e7": {"photons": 1e7, "beamstop": 1.5, "scenarios": ("growth", "strain", "dislocation")},
    "1e6": {"photons": 1e6, "beamstop": 1.5, "scenarios": ("growth", "strain", "dislocation")},
    "jump": {"photons": 1e8, "beamstop": 1.5, "scenarios": ("jump",)},
    "beamstop3": {"photons": 1e8, "beamstop": 3.0, "scenarios": ("growth", "dislocation")},
    "oof": {"photons": 1e8, "beamstop": 1.5, "scenarios": ("oof-mixed",)},
}


def sphere_guide(intensity: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """A uniform sphere, centred, whose radius is half the extent of the pattern's autocorrelation."""
    from latenttune.physics import ifft_centred

    measured = np.where(mask, 0.0, np.clip(intensity, 0, None))
    autocorrelation = np.abs(ifft_centred(measured.astype(np.complex64)))
    volume = float((autocorrelation > 0.02 * autocorrelation.max()).sum())
    radius = 0.5 * (3 * volume / (4 * np.pi)) ** (1 / 3)
    r = np.sqrt(sum((np.indices((n, n, n))[a] - n // 2) ** 2 for a in range(3)))
    return (r <= min(radius, 0.45 * n)).astype(np.complex64)


def physics_only(series_path: Path, settings: Any) -> dict[str, np.ndarray]:
    """The physics stage alone over a series (no network); per-frame E_r, E_q and seconds."""
    from latenttune.io import open_series
    from latenttune.metrics import amplitude_error, real_space_error
    from latenttune.physics import forward
    from latenttune.tracking.physics_stage import PhysicsStage

    stage = PhysicsStage(settings)
    e_r, e_q, seconds = [], [], []
    with open_series(series_path) as series:
        for frame in series:
            started = time.perf_counter()
            guide = sphere_guide(frame.intensity, frame.mask, series.n) if stage.previous is None else stage.previous
            outcome = stage.run(guide, frame.intensity, frame.mask, frame.index)
            seconds.append(time.perf_counter() - started)
            e_q.append(float(amplitude_error(forward(outcome.density), frame.intensity, frame.mask)))
            e_r.append(real_space_error(series.truth(frame.index), outcome.density).error if series.has_truth
                       else np.nan)
    return {"E_r": np.array(e_r), "E_q": np.array(e_q), "seconds": np.array(seconds)}


def simulate(scenario: str, directory: Path, loaded: Any, frames: int, photons: float, beamstop: float,
             seed: int) -> Path:
    """One series: a project scenario (``bench_tracking.simulate``) or an out-of-family one (``oof-KIND``)."""
    if not scenario.startswith("oof-"):
        return bt.simulate(scenario, directory, loaded, frames, photons, beamstop, seed)
    import out_of_family as oof

    settings = oof.OutOfFamilySettings(n=loaded.model.config.n, frames=frames, kind=scenario[4:], photons=photons,
                                       beamstop=beamstop)
    return oof.write(oof.generate(settings, seed), directory / f"{scenario}.cxi", overwrite=True)


def run(method: str, series: Path, loaded: Any, out: Path, physics: Any) -> dict[str, np.ndarray]:
    """One method on one series: per-frame figures (E_r of what it shows, and of the decoded latent)."""
    import dataclasses

    if method == "physics-only":
        return physics_only(series, physics)
    options = {"physics": dataclasses.asdict(physics)}
    if method in ("hybrid", "one-shot+physics", "hybrid-noprior"):
        if method == "hybrid-noprior":
            options["physics"] = {**options["physics"], "guide_weight": 0.0}
        figures = bt.run_method("hybrid", series, loaded, out, None, {}, physics=options["physics"],
                                readback=method != "one-shot+physics")
        return figures
    return bt.run_method(method, series, loaded, out, None, {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated regimes")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--frames", type=int, default=8, help="frames per series")
    parser.add_argument("--seeds", default="41,53", help="comma-separated series seeds (not tuned on)")
    parser.add_argument("--scenarios", default=None, help="replace every regime's scenarios (e.g. 'growth')")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="benchmarks/results/ablation", help="output stem (.md/.json/.png)")
    args = parser.parse_args(argv)
    regimes = [r for r in args.regimes.split(",") if r]
    methods = [m for m in args.methods.split(",") if m]
    for r in regimes:
        if r not in REGIMES:
            parser.error(f"--regimes: unknown regime {r!r}; choose from {', '.join(REGIMES)}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.frames < 1 or not seeds:
        parser.error("--frames must be >= 1 and --seeds must name at least one seed")

    import torch

    from latenttune.model import load_model
    from latenttune.tracking.physics_settings import PhysicsSettings

    torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model)
    physics = PhysicsSettings()
    started = time.perf_counter()
    per_series: dict[str, dict[str, dict[str, list[float]]]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for regime in regimes:
            spec = REGIMES[regime]
            scenarios = args.scenarios.split(",") if args.scenarios and regime != "oof" else spec["scenarios"]
            collected: dict[str, dict[str, list[float]]] = {m: {"E_r": [], "E_r_decoded": [], "seconds": []}
                                                            for m in methods}
            for scenario in scenarios:
                for seed in seeds:
                    series = simulate(scenario, tmpdir, loaded, args.frames, spec["photons"], spec["beamstop"], seed)
                    key = f"{regime}/{scenario}/{seed}"
                    per_series[key] = {}
                    for method in methods:
                        f = run(method, series, loaded, tmpdir / f"{regime}-{scenario}-{seed}-{method}.h5", physics)
                        decoded = f.get("E_r_decoded", f["E_r"] if method in ("es", "one-shot") else np.full(len(f["E_r"]), np.nan))
                        collected[method]["E_r"] += f["E_r"].tolist()
                        collected[method]["E_r_decoded"] += np.asarray(decoded, dtype=float).tolist()
                        collected[method]["seconds"] += f["seconds"].tolist()
                        per_series[key][method] = {"E_r": f["E_r"].tolist(), "E_r_decoded": list(map(float, decoded)),
                                                   "seconds": f["seconds"].tolist()}
                        print(f"{key:28s} {method:17s} mean E_r {np.nanmean(f['E_r']):.3f}  "
                              f"{1e3 * np.mean(f['seconds']):.0f} ms/frame", flush=True)
            baseline = np.nanmean(collected["physics-only"]["E_r"]) if "physics-only" in collected else np.nan
            for method in methods:
                c = collected[method]
                mean = float(np.nanmean(c["E_r"]))
                rows.append({"regime": regime, "method": method, "E_r_mean": mean,
                             "E_r_decoded_mean": float(np.nanmean(c["E_r_decoded"])) if np.isfinite(c["E_r_decoded"]).any() else float("nan"),
                             "ratio_to_physics_only": mean / baseline if np.isfinite(baseline) else float("nan"),
                             "ms_per_frame": float(1e3 * np.mean(c["seconds"])), "frames": len(c["E_r"])})
    lines = ["| regime | method | mean E_r (shown) | / physics-only | mean E_r (decoded latent) | ms / frame |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        decoded = "" if not np.isfinite(r["E_r_decoded_mean"]) else f"{r['E_r_decoded_mean']:.3f}"
        lines.append(f"| {r['regime']} | {r['method']} | {r['E_r_mean']:.3f} | {r['ratio_to_physics_only']:.2f} | "
                     f"{decoded} | {r['ms_per_frame']:.0f} |")
    header = (f"Ablation, model {loaded.path.name} (weights checksum {loaded.checksum[:12]}), {args.frames} frames per "
              f"series, seeds {seeds}, machine: {bt.machine()}, torch {torch.__version__} ({torch.get_num_threads()} "
              f"threads). Shown: the output of the methods with a physics stage, the decoded latent otherwise. Total "
              f"{time.perf_counter() - started:.0f} s.\nCommand: python "
              f"{' '.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}\n")
    out = Path(args.out)
    bt.write_report(out, header, "\n".join(lines), {"rows": rows, "per_series": per_series})
    _plot(rows, regimes, methods, out.with_suffix(".png"))
    return 0


def _plot(rows: list[dict[str, Any]], regimes: list[str], methods: list[str], path: Path) -> None:
    """Mean E_r per regime, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(regimes) + 3, 3.6))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [next(r["E_r_mean"] for r in rows if r["regime"] == g and r["method"] == method) for g in regimes]
        ax.bar(np.arange(len(regimes)) + (i - (len(methods) - 1) / 2) * width, values, width, label=method)
    ax.set_xticks(range(len(regimes)), regimes)
    ax.set_ylabel("mean E_r (what the method shows)")
    ax.set_title("ablation: what each part adds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
