"""Track a simulated sample in situ with Bluesky, store the run, replay it, save the live figures.

Run::

    python examples/bluesky_tracking.py --frames 20 --out bluesky_demo
    python examples/bluesky_tracking.py --model my_model.pt --tiled --beam-loss 5
    python examples/bluesky_tracking.py --device cuda          # the model on a GPU (checked first)

What it does, on simulated hardware (everything a beamline would use, with the simulator behind
the detector):

1. builds a :class:`~latenttune.bluesky.SimulatedCDIDetector` measuring a growing crystal, and a
   :class:`~latenttune.bluesky.LatentTracker` sized for the model;
2. runs :func:`~latenttune.bluesky.track_sample` in a RunEngine with extremum seeking, a
   beam-current suspender (``--beam-loss F`` drops the beam for a second at frame F), a line per
   frame, live figures (``OUT/figures``) and the run stored as msgpack (``OUT/runs``; with
   ``--tiled`` also in an embedded tiled catalog, ``OUT/catalog``);
3. replays the stored run offline with the same strategy settings and checks that the costs are
   the ones recorded live; the equivalent command line is printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from bluesky import RunEngine
from bluesky.suspenders import SuspendFloor

from latenttune.bluesky import (
    LatentTracker,
    MsgpackStorage,
    SimulatedCDIDetector,
    SimulationOptions,
    open_run,
    track_sample,
)
from latenttune.bluesky.live import FrameLines, LiveFeedback
from latenttune.device import check_device, set_threads
from latenttune.model import load_model
from latenttune.tracking.replay import replay_series
from latenttune.tracking import make_strategy
from sim import Detector, make_scenario

SCENARIOS = ("growth", "rotation", "strain", "dislocation", "jump")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--frames", type=int, default=20, help="frames to measure and track")
    parser.add_argument("--out", default="bluesky_demo", help="output folder")
    parser.add_argument("--model", default="default", help="'default' (shipped) or a checkpoint path")
    parser.add_argument("--scenario", choices=SCENARIOS, default="growth", help="simulated sample")
    parser.add_argument("--steps-per-frame", type=int, default=100, help="ES iterations per frame")
    parser.add_argument("--photons", type=float, default=1e8, help="photons per frame at nominal beam current")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and the photon noise")
    parser.add_argument("--beam-loss", type=int, default=None, metavar="F",
                        help="lose the beam for 1 s at frame F (the suspender holds the run)")
    parser.add_argument("--tiled", action="store_true", help="also store the run in an embedded tiled catalog")
    parser.add_argument("--every", type=int, default=5, help="save the slice panel every N frames (0: only at the end)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); on a busy machine 1 is steadier than 2")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.frames < 1 or args.steps_per_frame < 1:
        raise SystemExit("--frames and --steps-per-frame must be positive")
    try:  # before anything is made or loaded: one line, exit status 2, like the latenttune command
        check_device(args.device)
        set_threads(args.threads)
    except ValueError as exc:
        print(f"bluesky_tracking.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(args.model, device=args.device)
    model = loaded.model
    n, k = model.config.n, model.latent_dim
    print(f"model {loaded.path} (checksum {loaded.checksum}): n = {n}, k = {k}")

    # simulated hardware
    scenario_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(2))
    scenario = make_scenario(args.scenario, scenario_rng, n=n, num_frames=args.frames)
    beam_loss = () if args.beam_loss is None else ((args.beam_loss, 1.0),)
    detector = SimulatedCDIDetector(scenario, Detector(photons=args.photons, beamstop_radius=1.5), noise_rng,
                                    options=SimulationOptions(beam_loss=beam_loss), name="cdi")
    tracker = LatentTracker.for_model(loaded, name="tracker")

    # the RunEngine: storage, live figures, beam-loss suspender
    RE = RunEngine({}, call_returns_result=True)
    RE.record_interruptions = True
    storage = MsgpackStorage(out / "runs")
    RE.subscribe(storage)
    tiled = None
    if args.tiled:
        from latenttune.bluesky import TiledStorage

        tiled = TiledStorage.embedded(out / "catalog")
        RE.subscribe(tiled)
    live = LiveFeedback(tracker, out_dir=out / "figures", every=args.every)
    RE.subscribe(live)
    RE.subscribe(FrameLines(tracker, print))  # one line per frame, numbered from 0 as `latenttune replay` prints
    RE.install_suspender(SuspendFloor(detector.beam_current, 0.5 * detector.options.nominal_current))

    strategy = make_strategy("hybrid", k, steps_per_frame=args.steps_per_frame)
    plan = track_sample(detector, tracker, loaded, strategy, num=args.frames, md={"sample": f"simulated {args.scenario}"})
    start = time.perf_counter()
    result = RE(plan)
    seconds = time.perf_counter() - start
    uid = result.run_start_uids[0]
    print(f"run {uid}: {result.exit_status}, {args.frames} frames in {seconds:.1f} s "
          f"({args.frames / seconds:.2f} events/s, {args.frames * args.steps_per_frame / seconds:.0f} ES iterations/s)")
    print(f"stored: {storage.paths[-1]}")
    if tiled is not None:
        tiled.close()
        print(f"stored in the tiled catalog {out / 'catalog'}; serve it with:\n"
              f"  tiled serve catalog {out / 'catalog' / 'catalog.db'} -r {out / 'catalog' / 'data'} "
              f"-w {out / 'catalog' / 'writable'} -w sqlite:///{(out / 'catalog' / 'tables.db').absolute()}")
    print(f"live figures: {', '.join(str(p) for p in live.saved)} (+ {len(live.slices.saved)} slice panels)")

    # replay the stored run offline with the same strategy settings
    with open_run(storage.paths[-1]) as series:
        live_costs = np.asarray(series.recorded["cost"], dtype=np.float32)
        replayed, _ = replay_series(series, loaded, make_strategy("hybrid", k, steps_per_frame=args.steps_per_frame),
                                    out / "replay.h5", overwrite=True)
    from latenttune.io import read_results

    results = read_results(replayed)
    costs = np.asarray(results.cost)
    # a frame skipped before any estimate existed has no row: compare by frame index
    same = np.array_equal(costs, live_costs[np.asarray(results.index)], equal_nan=True)
    print(f"replay: {replayed}; costs {'identical to' if same else 'DIFFERENT from'} the live run "
          f"(final cost {costs[-1]:.5f})")
    print(results.stagnation_summary())  # frames whose LLK stayed above the threshold after their restarts
    print(f"same from the command line:\n  latenttune replay {storage.paths[-1]} --model {args.model} "
          f"--steps-per-frame {args.steps_per_frame} --out {out / 'replay_cli.h5'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
