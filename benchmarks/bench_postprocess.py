"""Cost of the post-processing (displacement, strain, statistics) per frame against the tracker's frame.

    python benchmarks/bench_postprocess.py

Prints the post-processing's time for a 32^3 reconstruction (the default model's object grid) of a
strained crystal with a dislocation, and its share of a hybrid frame's time (pass the tracker's
time per frame with --frame-ms, from a replay's summary line).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from latenttune.geometry import BraggGeometry, frame_transform
from latenttune.geometry.synthetic import strained_crystal
from latenttune.postprocess import postprocess_density


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--frame-ms", type=float, default=1000.0, help="the tracker's time per frame, ms")
    args = parser.parse_args()
    geometry = BraggGeometry(9, 1.0, 55, 0.01, "111", 0.4078)
    transform = frame_transform(geometry, 64)
    density = strained_crystal(transform, geometry, 32)
    postprocess_density(density, transform, geometry)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        postprocess_density(density, transform, geometry)
        times.append(time.perf_counter() - start)
    ms = 1e3 * np.array(times)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"post-processing of a 32^3 frame: median {np.median(ms):.1f} ms, min {ms.min():.1f}, max {ms.max():.1f} "
          f"({args.repeats} runs)")
    print(f"share of a {args.frame_ms:.0f} ms tracker frame: {np.median(ms) / args.frame_ms:.1%}")


if __name__ == "__main__":
    main()
