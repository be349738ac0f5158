"""The simulator's ``latent-walk`` scenario with a model's decoder plugged in.

:class:`sim.scenarios.LatentWalkScenario` walks a smooth path inside a latent box and decodes it
with any callable; ``sim`` cannot import the model, so this module supplies the decoder and the
box. The box defaults to the spread of the encoder's latents over training-like samples (the
2nd to 98th percentile per component), not the whole tanh box: latents the encoder never produces
decode to densities the model was never trained to make, and a walk there would not be "inside the
model's latent space".
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from latenttune.model.checkpoint import LoadedModel
from latenttune.model.network import LatentAutoencoder
from latenttune.model.training_config import RunConfig
from sim.scenarios import LatentWalkScenario, make_scenario
from sim.training import TrainingPairGenerator

log = logging.getLogger(__name__)

__all__ = ["describe_latent_walk", "latent_spread", "latent_walk_scenario", "numpy_decoder"]

SPREAD_PERCENTILES = (2.0, 98.0)


def numpy_decoder(model: LatentAutoencoder):
    """``decode(z: ndarray (B, k)) -> ndarray (B, n, n, n) complex64`` without autograd."""

    def decode(z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.decode(np.asarray(z, dtype=np.float32)).cpu().numpy()

    return decode


def latent_spread(
    loaded: LoadedModel, samples: int = 64, seed: int = 7_777_777
) -> tuple[np.ndarray, np.ndarray]:
    """Per-component 2nd and 98th percentiles of the encoder's latents on training-like samples.

    Uses ``extra["latent_spread"]`` of the checkpoint when training stored it; otherwise encodes
    ``samples`` pairs drawn from the model's training recipe with ``seed``.
    """
    stored = loaded.extra.get("latent_spread")
    if stored is not None:
        return np.asarray(stored["low"], dtype=np.float64), np.asarray(stored["high"], dtype=np.float64)
    recipe = RunConfig.from_dict(loaded.recipe) if loaded.recipe else None
    generator = (
        TrainingPairGenerator(n=loaded.model.config.n, seed=seed)
        if recipe is None
        else TrainingPairGenerator(**{**recipe.data.__dict__, "seed": seed})
    )
    latents = []
    with torch.inference_mode():
        for i in range(samples):
            pair = generator.sample(i)
            latents.append(loaded.model.encode(pair.intensity, pair.mask)[0].cpu().numpy())
    z = np.stack(latents)
    low, high = np.percentile(z, SPREAD_PERCENTILES, axis=0)
    return low, high


def describe_latent_walk(loaded: LoadedModel, bounds: tuple[Any, Any] | None = None, shown: int = 8) -> str:
    """What the ``latent-walk`` scenario does with ``loaded``, in one line (before and after its box is known).

    Parameters
    ----------
    loaded : LoadedModel
        The model whose decoder makes the densities.
    bounds : (lower, upper), optional
        The walk's latent box (:func:`latent_spread`); without it, the line says where the box will
        come from.
    shown : int
        Most latent components whose ranges are listed.
    """
    k = loaded.model.latent_dim
    if bounds is None:
        where = ("stored in the checkpoint" if "latent_spread" in loaded.extra
                 else "found by encoding 64 training-like samples")
        return (f"latent-walk: the truth is decoded by model {loaded.path} (checksum {loaded.checksum}, k = {k}) "
                f"along a smooth path (a few slow sinusoids per latent component) inside the box the encoder uses "
                f"({SPREAD_PERCENTILES[0]:g}th-{SPREAD_PERCENTILES[1]:g}th percentile of its latents, {where}): a "
                "sample the model can represent exactly, to test tracking inside its latent space")
    low, high = (np.asarray(b, dtype=float) for b in bounds)
    ranges = ", ".join(f"z{i} [{lo:.2f}, {hi:.2f}]" for i, (lo, hi) in enumerate(zip(low[:shown], high[:shown])))
    more = f", ... ({k - shown} more; mean width {np.mean(high - low):.2f})" if k > shown else ""
    return f"latent box: {ranges}{more}"


def latent_walk_scenario(
    loaded: LoadedModel,
    rng: np.random.Generator,
    *,
    num_frames: int = 50,
    bounds: tuple[Any, Any] | None = None,
    **options: Any,
) -> LatentWalkScenario:
    """A ``latent-walk`` scenario decoded by ``loaded``'s decoder.

    Parameters
    ----------
    loaded : LoadedModel
        The model whose latent space the truth lives in.
    rng : numpy.random.Generator
        Draws the path.
    num_frames : int
        Frames in the series.
    bounds : (lower, upper), optional
        Latent box of the walk; default :func:`latent_spread`.
    **options
        ``num_modes``, ``max_frequency``, ``margin`` of :class:`sim.scenarios.LatentWalkScenario`.
    """
    low, high = latent_spread(loaded) if bounds is None else (np.asarray(bounds[0]), np.asarray(bounds[1]))
    return make_scenario(
        "latent-walk",
        rng,
        n=loaded.model.config.n,
        num_frames=num_frames,
        decode=numpy_decoder(loaded.model),
        latent_bounds=(low, high),
        **options,
    )
