"""Calibrate a physics-structured model's neutral learned code and store it in its checkpoint.

Run (from the repository root)::

    python benchmarks/calibrate_learned_start.py --model default --out latenttune/data/default_model.pt

The tracker's read-back (:mod:`latenttune.tracking.readback`) reads a crystal's explicit parameters
off the physics stage's output and tunes the latent's learned part by extremum seeking; it starts
that part at the model's *neutral code*, the learned part that draws typical crystals best on
average (:func:`latenttune.tracking.readback.calibrate_learned_start`: cost values only, no network
gradient). This script draws ``--samples`` crystals from the model's own training recipe with a seed
training never used, calibrates the code, prints the mean real-space error of held-out crystals
drawn with the centre of the box, with the code, and writes the checkpoint with the code in its
metadata (``extra["learned_start"]``). The weights, and so the weights' checksum that results files
and resumes check, do not change.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--out", required=True, help="checkpoint to write (may be the model itself)")
    parser.add_argument("--samples", type=int, default=8, help="crystals to calibrate on")
    parser.add_argument("--held-out", type=int, default=12, help="crystals to report the effect on")
    parser.add_argument("--evaluations", type=int, default=800, help="evaluations of the mean misfit")
    parser.add_argument("--seed", type=int, default=777001, help="seed of the calibration crystals")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    from latenttune.metrics import real_space_error
    from latenttune.model import load_model, save_checkpoint
    from latenttune.model.crystal import PhysicalLayout
    from latenttune.model.explicit_fit import explicit_latent, fit_explicit
    from latenttune.model.training_config import RunConfig
    from latenttune.tracking.readback import calibrate_learned_start

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model = loaded.model
    generator = RunConfig.from_dict(loaded.recipe).data
    calibration = dataclasses.replace(generator, seed=args.seed).batch(range(args.samples)).density
    held_out = dataclasses.replace(generator, seed=args.seed + 1).batch(range(args.held_out)).density
    started = time.perf_counter()
    code = calibrate_learned_start(model, calibration, evaluations=args.evaluations)
    print(f"learned start {np.round(code, 4).tolist()} ({time.perf_counter() - started:.0f} s)")
    layout = PhysicalLayout(model.config.n)
    tuned = model.latent_dim - model.config.physical_dim
    for name, learned in (("centre of the box", np.zeros(tuned)), ("calibrated code", code)):
        errors = []
        for density in held_out:
            with torch.inference_mode():
                decoded = model.decode(explicit_latent(fit_explicit(density, layout), learned))[0].numpy()
            errors.append(real_space_error(density, decoded).error)
        print(f"held-out crystals, explicit part read off the truth, learned part at the {name}: mean E_r "
              f"{np.mean(errors):.3f}")
    save_checkpoint(args.out, model, recipe=loaded.recipe, extra={**loaded.extra, "learned_start": code.tolist()})
    print(f"wrote {args.out} (weights checksum {loaded.checksum}, unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
