"""Does the Bluesky plan keep up? The tracking loop inside a RunEngine against the same loop outside it.

Run: ``python benchmarks/bench_bluesky.py [--model default] [--frames 20] [--steps 10,100] [--storage none]``.

For each ES budget (iterations per frame) it times, on the same simulated frames with the same
seeds and a fresh ES strategy each time:

* outside: a plain loop of ``detector.trigger()``, read, ``checked_frame``, ``FrameTracker.step``
  and ``tracker.set``: the work of one frame with no RunEngine;
* inside: ``RE(track_sample(...))`` over the same frames (one event per frame), optionally with
  the run stored (``--storage msgpack`` or ``tiled``).

and prints events per second, ES iterations per second and the overhead ratio (inside / outside
wall time; 1.00 = no overhead). Asserts nothing; the costs of both loops are checked identical.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bluesky import RunEngine

from latenttune.bluesky import (
    LatentTracker,
    MsgpackStorage,
    SimulatedCDIDetector,
    track_sample,
)
from latenttune.frame_policy import checked_frame
from latenttune.model import load_model
from latenttune.tracking import FrameTracker, make_strategy
from sim import Detector, make_scenario


def _detector(n: int, frames: int, seed: int) -> SimulatedCDIDetector:
    scenario_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    scenario = make_scenario("growth", scenario_rng, n=n, num_frames=frames)
    return SimulatedCDIDetector(scenario, Detector(photons=1e8, beamstop_radius=1.5), noise_rng)


def outside(loaded, frames: int, steps: int, seed: int) -> tuple[float, np.ndarray]:
    """Wall time and costs of the plain loop."""
    model = loaded.model
    detector = _detector(model.config.n, frames, seed)
    tracker = LatentTracker.for_model(loaded)
    tracking = FrameTracker(model, make_strategy("es", model.latent_dim, steps_per_frame=steps))
    costs = []
    start = time.perf_counter()
    for _ in range(frames):
        detector.trigger()
        reading = detector.read()
        frame = checked_frame(reading["cdi_pattern"]["value"], reading["cdi_mask"]["value"], model.config.N,
                              index=reading["cdi_frame_index"]["value"], time=reading["cdi_sample_time"]["value"])
        record = tracking.step(frame)
        tracker.set(record)
        tracker.read()
        costs.append(record.cost)
    return time.perf_counter() - start, np.array(costs)


def inside(loaded, frames: int, steps: int, seed: int, storage: str, directory: Path) -> tuple[float, np.ndarray]:
    """Wall time and costs of the same frames through the plan in a RunEngine."""
    model = loaded.model
    detector = _detector(model.config.n, frames, seed)
    tracker = LatentTracker.for_model(loaded)
    RE = RunEngine({}, call_returns_result=True)
    costs = []
    RE.subscribe(lambda name, doc: costs.append(doc["data"]["tracker_cost"]) if name == "event" else None)
    closer = None
    if storage == "msgpack":
        RE.subscribe(MsgpackStorage(directory / f"runs_{steps}"))
    elif storage == "tiled":
        from latenttune.bluesky import TiledStorage

        tiled = TiledStorage.embedded(directory / f"catalog_{steps}")
        RE.subscribe(tiled)
        closer = tiled.close
    plan = track_sample(detector, tracker, loaded, make_strategy("es", model.latent_dim, steps_per_frame=steps),
                        num=frames)
    start = time.perf_counter()
    result = RE(plan)
    seconds = time.perf_counter() - start
    if closer is not None:
        closer()
    if result.exit_status != "success":
        raise RuntimeError(f"the run ended with exit status {result.exit_status!r}")
    return seconds, np.array(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--frames", type=int, default=20, help="frames per timing")
    parser.add_argument("--steps", default="10,100", help="comma-separated ES iterations per frame")
    parser.add_argument("--storage", choices=["none", "msgpack", "tiled"], default="none",
                        help="also store the run inside the RunEngine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model = loaded.model
    print(f"device: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"model: {loaded.path.name} (checksum {loaded.checksum}), n = {model.config.n}, N = {model.config.N}, "
          f"k = {model.latent_dim}; {args.frames} frames per timing; storage inside: {args.storage}")
    outside(loaded, 2, 2, args.seed)  # warm-up (first conv3d calls, imports)
    print(f"{'ES/frame':>8} | {'outside events/s':>16} {'ES it/s':>9} | {'inside events/s':>15} {'ES it/s':>9} | "
          f"{'overhead':>8} {'ms/event':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (int(s) for s in args.steps.split(",")):
            t_out, c_out = outside(loaded, args.frames, steps, args.seed)
            t_in, c_in = inside(loaded, args.frames, steps, args.seed, args.storage, Path(tmp))
            if not np.array_equal(c_out, c_in):
                raise RuntimeError("the costs inside and outside the RunEngine differ")
            F = args.frames
            print(f"{steps:8d} | {F / t_out:16.2f} {F * steps / t_out:9.0f} | {F / t_in:15.2f} {F * steps / t_in:9.0f} | "
                  f"{t_in / t_out:8.3f} {(t_in - t_out) / F * 1e3:8.1f}")


if __name__ == "__main__":
    main()
