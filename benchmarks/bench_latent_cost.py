"""Throughput of the controller's hot path, ``cost(z)``, against the time of one FFT.

Run: ``python benchmarks/bench_latent_cost.py [--model default] [--device cpu|cuda]``.

Prints, for batches of B latents: cost evaluations per second (decode, pad, forward model, cost,
no autograd), and the ratio of the time of one evaluation to the time of one N^3 complex64 FFT
of the same grid (the floor: the forward model needs at least one). Asserts nothing: speed targets
live here, not in the tests (the issue's target is >= 100 evaluations/s on the project's 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from latenttune.latent_cost import LatentCost
from latenttune.model import load_model
from sim import Detector, forward, make_scenario


def _timeit(fn, repeat: int, sync) -> float:
    fn()
    sync()
    best = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        sync()
        best.append((time.perf_counter() - start) / repeat)
    return min(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batches", default="1,2,4,8,16", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=10, help="evaluations per timing")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    loaded = load_model(args.model, device=device)
    model = loaded.model
    n, N, k = model.config.n, model.config.N, model.latent_dim
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    print(f"device: {name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: {loaded.path.name} (checksum {loaded.checksum}), n = {n}, N = {N}, k = {k}")

    rng = np.random.default_rng(0)
    density = make_scenario("growth", rng, n=n, num_frames=2).density(0)
    measured = Detector(photons=1e8, beamstop_radius=1.5).measure(forward(density), rng)
    cost = LatentCost(model, measured.counts, measured.mask)

    box = torch.zeros((1, N, N, N), dtype=torch.complex64, device=device)
    fft_s = _timeit(lambda: torch.fft.fftn(box, dim=(-3, -2, -1)), 50, sync)
    print(f"one {N}^3 complex64 torch FFT: {fft_s * 1e3:.3f} ms  (the floor)")

    print(f"{'B':>4} {'ms/batch':>10} {'evals/s':>10} {'ms/eval':>9} {'eval/FFT':>9}")
    for B in (int(b) for b in args.batches.split(",")):
        z = rng.uniform(-0.5, 0.5, size=(B, k)).astype(np.float32)
        batch_s = _timeit(lambda: cost(z), max(1, args.repeat // B), sync)
        per_eval = batch_s / B
        print(f"{B:4d} {batch_s * 1e3:10.2f} {1 / per_eval:10.1f} {per_eval * 1e3:9.2f} {per_eval / fft_s:9.1f}")


if __name__ == "__main__":
    main()
