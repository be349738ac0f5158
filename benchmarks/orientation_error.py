"""How well does a physics-structured model's encoder predict the crystal orientation?

Run (from the repository root)::

    python benchmarks/orientation_error.py --model default --pairs 40

Draws held-out pairs from the model's own training-data recipe (seed ``--seed``, never used in
training), keeps those whose shape is a faceted crystal, encodes each measured pattern and compares
the predicted orientation (the first three physical parameters) with the truth, with the 24
rotations of the cubic group removed (:func:`latenttune.model.crystal.misorientation_degrees`). Prints
the median and 90th percentile, next to what random orientations give.

It also says how much of the one-shot error the shape accounts for: on the same pairs (those with
at most one dislocation, which the decoder can draw), the median E_r of the one-shot prediction
and of that prediction with its orientation and 26 facet distances replaced by the truth (the
phase, dislocation and learned parts left as the encoder put them). Asserts nothing.
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

    from latenttune.model.crystal import misorientation_degrees, orientation_matrix, parameters_from_descriptor
    from latenttune.model.evaluation import held_out_generator
    from latenttune.model.losses import centre_shifts
    from latenttune.metrics import real_space_error
    from latenttune.model import load_model
    from sim.shapes import FacetedCrystal

    torch.set_num_threads(args.torch_threads)
    loaded = load_model(args.model)
    if not loaded.model.config.physical:
        parser.error(f"{args.model!r} has no physical parameters (a learned-only model): nothing to compare")
    generator = held_out_generator(loaded, args.seed)
    angles: list[float] = []
    errors: list[tuple[float, float]] = []  # (one-shot, with the true shape)
    layout = loaded.model.physical_layout
    shape_part = slice(0, layout.slice("facets").stop)  # orientation and facets come first
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
        if len(pair.descriptor.dislocations) > 1:
            continue
        shift = centre_shifts(torch.from_numpy(pair.density[None].astype(np.complex64)))[0]
        true_shape = z.copy()
        true_shape[shape_part] = parameters_from_descriptor(pair.descriptor, layout, shift)[shape_part]
        with torch.inference_mode():
            decoded = np.asarray(loaded.model.decode(np.stack([z, true_shape])))
        errors.append(tuple(real_space_error(pair.density, d).error for d in decoded))
    random = [misorientation_degrees(np.eye(3), R) for R in Rotation.random(2000, random_state=1).as_matrix()]
    a = np.asarray(angles)
    print(f"model {loaded.path.name} (weights checksum {loaded.checksum[:12]}), {a.size} faceted held-out pairs "
          f"(seed {args.seed}): misorientation median {np.median(a):.1f} deg, p90 {np.percentile(a, 90):.1f} deg; "
          f"random orientations: median {np.median(random):.1f} deg, p90 {np.percentile(random, 90):.1f} deg")
    e = np.asarray(errors)
    print(f"one-shot median E_r on the {len(e)} of them with at most one dislocation: {np.median(e[:, 0]):.3f}; "
          f"with the true orientation and facet distances: {np.median(e[:, 1]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
