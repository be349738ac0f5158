"""How well does a physics-structured model's encoder predict the crystal orientation?

Run (from the repository root)::

    python benchmarks/orientation_error.py --model default --pairs 40

Draws held-out pairs from the model's own training-data recipe (seed ``--seed``, never used in
training), keeps those whose shape is a faceted crystal, encodes each measured pattern and compares
the predicted orientation (the first three physical parameters) with the truth, with the 24
rotations of the cubic group removed (:func:`latenttune.crystal.misorientation_degrees`). Prints
the median and 90th percentile, next to what random orientations give. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--pairs", type=int, default=40, help="faceted held-out pairs to score")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the held-out pairs")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.torch_threads < 1:
        parser.error("--pairs and --torch-threads must be >= 1")

    import torch
    from scipy.spatial.transform import Rotation

    from latenttune.crystal import misorientation_degrees, orientation_matrix
    from latenttune.evaluation import held_out_generator
    from latenttune.model import load_model
    from sim.shapes import FacetedCrystal

    torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model)
    if not loaded.model.config.physical:
        parser.error(f"{args.model!r} has no physical parameters (a learned-only model): nothing to compare")
    generator = held_out_generator(loaded, args.seed)
    angles: list[float] = []
    index = 0
    while len(angles) < args.pairs and index < 20 * args.pairs:
        pair = generator.sample(index)
        index += 1
        shape = getattr(pair.descriptor, "shape", None)
        if not isinstance(shape, FacetedCrystal):
            continue
        with torch.inference_mode():
            z = np.asarray(loaded.model.encode(pair.intensity, pair.mask)).reshape(-1)
        angles.append(misorientation_degrees(orientation_matrix(z), shape.rotation_matrix))
    random = [misorientation_degrees(np.eye(3), R) for R in Rotation.random(2000, random_state=1).as_matrix()]
    a = np.asarray(angles)
    print(f"model {loaded.path.name} (weights checksum {loaded.checksum[:12]}), {a.size} faceted held-out pairs "
          f"(seed {args.seed}): misorientation median {np.median(a):.1f} deg, p90 {np.percentile(a, 90):.1f} deg; "
          f"random orientations: median {np.median(random):.1f} deg, p90 {np.percentile(random, 90):.1f} deg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
