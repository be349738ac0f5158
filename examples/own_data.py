"""Track your own measured data from Python: prepare it, track it, read the results, plot them.

Run from the repository root (it makes its own "measurement", so it runs anywhere)::

    python examples/own_data.py                        # 46 s on the 2-core CPU while another job ran
    python examples/own_data.py --out my_demo --steps 40 --physics 40 --device cuda

What it does:

1. writes a folder of measured-looking 3D intensities, one ``.npy`` per time step, as a
   diffractometer would record a growing crystal: 140 x 150 x 130 voxels in the detector's own axes,
   the Bragg peak off-centre, Poisson counts, a detector gap, a hot pixel and a dead corner (NaN),
   and a user mask next to them;
2. puts them on the model's grid with :func:`latenttune.prepare.prepare_series` (what
   ``latenttune prepare measured/ --out prepared.cxi`` does) and prints what was done to each frame;
3. tracks the frames with :func:`latenttune.tracking.track` from plain ``(intensity, mask)`` pairs,
   the way to track arrays you already hold in memory, and reads the result (``TrackResult``);
4. writes the same run as a results file with :func:`latenttune.tracking.replay.replay_series` (what
   ``latenttune replay`` writes), reads it back, and saves two figures: its own plot of the cost and
   the reconstructions, and the project's summary figure.

Keep ``--steps`` and ``--physics`` small to try it; the command line's defaults are 100 and 60.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from latenttune.device import check_device, set_threads
from latenttune.io import open_series, read_results
from latenttune.model import load_model
from latenttune.plots import central_slices, tracking_summary
from latenttune.prepare import prepare_series
from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.tracking.replay import replay_series
from latenttune.tracking import make_strategy, track
from sim import make_scenario

SHAPE = (140, 150, 130)  # the "detector frame": any shape and axis order works
PEAK = (62, 84, 70)  # where the Bragg peak lands: off-centre


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="own_data_demo", help="output folder")
    parser.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    parser.add_argument("--frames", type=int, default=3, help="time steps to make and track")
    parser.add_argument("--steps", type=int, default=10, help="ES iterations (cost evaluations) per frame")
    parser.add_argument("--physics", type=int, default=10, help="iterations of the physics stage per frame")
    parser.add_argument("--seed", type=int, default=0, help="seed of the made-up measurement")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args()


def make_measurement(folder: Path, frames: int, n: int, seed: int) -> None:
    """A growing crystal measured ``frames`` times: one .npy per time step, plus ``mask.npy``."""
    rng = np.random.default_rng(seed)
    scenario = make_scenario("growth", rng, n=n, num_frames=frames)
    folder.mkdir(parents=True, exist_ok=True)
    for t, density in enumerate(scenario):
        box = np.zeros(SHAPE, np.complex64)  # a large real-space box: finely sampled diffraction
        box[tuple(slice(s // 2 - n // 2, s // 2 + n // 2) for s in SHAPE)] = density
        intensity = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(box)))) ** 2
        intensity = np.roll(intensity, [p - s // 2 for p, s in zip(PEAK, SHAPE)], axis=(0, 1, 2))
        counts = rng.poisson(intensity * 2e8 / intensity.sum()).astype(np.float32)
        counts[:, :, 75:78] = 0  # a detector gap: no pixels there, in every detector frame
        counts[:, 90, 40] += 5e4  # a hot pixel
        counts[:6, :6, :6] = np.nan  # a corner the detector did not record
        np.save(folder / f"step_{t:03d}.npy", counts)
    user_mask = np.zeros(SHAPE, np.uint8)
    user_mask[:, 140:, :] = 1  # say, a region shadowed by the sample environment
    np.save(folder / "mask.npy", user_mask)


def main() -> None:
    args = parse_args()
    try:  # fail before any work, in one line
        check_device(args.device)
        set_threads(args.threads)
    except ValueError as exc:
        print(f"own_data.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    out = Path(args.out)
    loaded = load_model(args.model, device=args.device)
    model = loaded.model
    print(f"model {loaded.path}: grid N = {model.config.N}, latent dimension k = {model.latent_dim}")

    # 1. a measurement of our own
    measured = out / "measured"
    make_measurement(measured, args.frames, model.config.n, args.seed)
    print(f"made {args.frames} time steps of shape {SHAPE} in {measured}")

    # 2. onto the model's grid (latenttune prepare)
    prepared, reports = prepare_series(measured, out / "prepared.cxi", model.config.N, overwrite=True)
    for report in reports:
        print(report.line())

    # 3. track arrays held in memory: any (intensity, mask) pairs on the model's grid
    with open_series(prepared) as series:
        pairs = [(frame.intensity, frame.mask) for frame in series]
    physics = PhysicsSettings(iterations=args.physics, er_iterations=min(10, args.physics))
    strategy = make_strategy("hybrid", model.latent_dim, steps_per_frame=args.steps, physics=physics)
    result = track(pairs, model, strategy,
                   callback=lambda r: print(f"frame {r.index}: cost {r.cost:.4f} after {r.steps} evaluations, "
                                            f"refined density kept: {r.physics.accepted}, LLK {r.physics.llk:.2f}"
                                            + (" (stagnated: less certain)" if r.physics.stagnated else "")))
    print(f"{result.message}: latents {result.latent.shape}, costs {np.round(result.cost, 4).tolist()}, "
          f"reconstructions {result.output_density.shape}")

    # 4. the same run as a results file, read back and plotted
    strategy = make_strategy("hybrid", model.latent_dim, steps_per_frame=args.steps, physics=physics)
    results_path, _ = replay_series(prepared, loaded, strategy, out / "results.h5", overwrite=True)
    results = read_results(results_path)
    shown = results.reconstruction()  # the refined densities when the hybrid tracker kept them
    assert np.array_equal(results.cost, result.cost.astype(np.float32))  # same frames, same settings, same run
    print(results.stagnation_summary())  # which frames stayed above the LLK threshold after their restarts

    figure = Figure(figsize=(3 + 2.2 * len(shown.density), 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 1 + len(shown.density), width_ratios=[1.6] + [1] * len(shown.density))
    axes[0].plot(results.index, results.cost, "o-")
    axes[0].set(xlabel="frame", ylabel="cost", title="cost per frame")
    axes[0].set_xticks(results.index)
    for ax, t, density in zip(axes[1:], results.index, shown.density):
        amplitude, _ = central_slices(density)
        ax.imshow(amplitude, cmap="gray", origin="lower")
        ax.set(title=f"frame {t}: {shown.row_label(int(t))}", xticks=[], yticks=[])
    figure.savefig(out / "own_plot.png", dpi=90)
    tracking_summary(results, out / "summary.png", title="own data: hybrid tracking")
    print(f"results: {results_path}; figures: {out / 'own_plot.png'}, {out / 'summary.png'}")


if __name__ == "__main__":
    main()
