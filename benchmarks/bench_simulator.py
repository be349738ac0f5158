"""Simulator throughput: training pairs per second and scenario frames per second.

Run: ``python benchmarks/bench_simulator.py [--n 32] [--samples 40]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from sim import TrainingPairGenerator, forward, make_scenario
from sim.training import TRAINING_FAMILIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="object grid size")
    parser.add_argument("--samples", type=int, default=40, help="training pairs to time")
    parser.add_argument("--frames", type=int, default=20, help="frames per scenario to time")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; n = {args.n}")

    generator = TrainingPairGenerator(n=args.n, seed=0)
    generator.sample(0)
    t0 = time.perf_counter()
    families: dict[str, int] = {}
    for i in range(1, args.samples + 1):
        pair = generator.sample(i)
        families[pair.family] = families.get(pair.family, 0) + 1
    rate = args.samples / (time.perf_counter() - t0)
    print(f"training pairs (intensity {2 * args.n}^3 + density {args.n}^3): {rate:.1f} samples/s "
          f"over {args.samples} samples, mix {families} of {TRAINING_FAMILIES}")

    for name in ("growth", "rotation", "strain", "dislocation", "jump"):
        scenario = make_scenario(name, np.random.default_rng(0), n=args.n, num_frames=args.frames)
        t0 = time.perf_counter()
        for density in scenario:
            pass
        density_ms = (time.perf_counter() - t0) / args.frames * 1e3
        t0 = time.perf_counter()
        for t in range(args.frames):
            forward(scenario.density(t))
        total_ms = (time.perf_counter() - t0) / args.frames * 1e3
        print(f"scenario {name:12s}: {density_ms:6.2f} ms/frame density, {total_ms:6.2f} ms/frame with forward model")


if __name__ == "__main__":
    main()
