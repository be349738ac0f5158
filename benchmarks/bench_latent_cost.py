"""Throughput of the controller's hot path, ``cost(z)``, against the time of one FFT.

Run: ``python benchmarks/bench_latent_cost.py [--model default] [--device cpu|cuda] [--es-steps 100]``.

Prints, for batches of B latents: cost evaluations per second (decode, pad, forward model, cost,
no autograd), and the ratio of the time of one evaluation to the time of one N^3 complex64 FFT
of the same grid (the floor: the forward model needs at least one). Then the extremum-seeking
loop itself: ``--es-steps`` ES iterations on one frame (:class:`latenttune.tracking.ESStrategy`,
default controller settings: suggest, one cost evaluation, ingest), as ES iterations per second
and the ratio of one ES iteration to one torch FFT, with a numpy (``numpy.fft``, one thread) FFT of
the same grid for reference. Asserts nothing: speed targets live here, not in the tests (the
issue's target is >= 100 evaluations/s on the project's 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from latenttune.model.latent_cost import LatentCost
from latenttune.model import load_model
from latenttune.tracking import ESStrategy
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


def _time_es(cost: LatentCost, model: Any, measured: Any, steps: int, sync: Callable[[], None]) -> float:
    """Seconds per ES iteration: ``steps`` iterations of a fresh ES strategy on one frame (best of 3)."""
    with torch.inference_mode():
        encoded = model.encode(measured.counts, measured.mask)[0].cpu().numpy().astype(np.float64)
    best = []
    for _ in range(3):
        strategy = ESStrategy(model.latent_dim, steps_per_frame=steps)
        sync()
        start = time.perf_counter()
        strategy.run_frame(cost, encoded, True)
        sync()
        best.append((time.perf_counter() - start) / steps)
    return min(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batches", default="1,2,4,8,16", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=10, help="evaluations per timing")
    parser.add_argument("--es-steps", type=int, default=100, help="ES iterations on one frame (0 = skip)")
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
    box_np = np.zeros((N, N, N), dtype=np.complex64)
    fft_s = _timeit(lambda: torch.fft.fftn(box, dim=(-3, -2, -1)), 50, sync)
    print(f"one {N}^3 complex64 torch FFT: {fft_s * 1e3:.3f} ms  (the floor)")

    print(f"{'B':>4} {'ms/batch':>10} {'evals/s':>10} {'ms/eval':>9} {'eval/FFT':>9}")
    for B in (int(b) for b in args.batches.split(",")):
        z = rng.uniform(-0.5, 0.5, size=(B, k)).astype(np.float32)
        batch_s = _timeit(lambda: cost(z), max(1, args.repeat // B), sync)
        per_eval = batch_s / B
        print(f"{B:4d} {batch_s * 1e3:10.2f} {1 / per_eval:10.1f} {per_eval * 1e3:9.2f} {per_eval / fft_s:9.1f}")

    if args.es_steps > 0:
        es_s = _time_es(cost, model, measured, args.es_steps, sync)
        np_fft_s = _timeit(lambda: np.fft.fftn(box_np), 10, lambda: None)
        print(f"one {N}^3 complex64 numpy FFT: {np_fft_s * 1e3:.3f} ms  (reference)")
        print(f"ES: {args.es_steps} iterations in {es_s * args.es_steps:.3f} s, {1 / es_s:.1f} ES it/s, "
              f"{es_s * 1e3:.2f} ms/it, ES it / torch FFT {es_s / fft_s:.1f}, ES it / numpy FFT {es_s / np_fft_s:.2f}")


if __name__ == "__main__":
    main()
