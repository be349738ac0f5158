"""Choosing between a model's encoders by how well their predictions fit the frame.

A model trained with a cycle encoder (:attr:`latenttune.model.ModelConfig.cycle_encoder`) has two
encoders: the model's own, trained on simulated crystals, and one trained to invert the decoder on
patterns of decoded latents (:mod:`latenttune.model.cycle_training`). Each is better on its own kind of
sample, and neither can tell which kind a measured pattern is. :func:`choose_encoder` asks every
encoder, decodes every prediction and keeps the one whose predicted pattern fits the frame best:
two cost evaluations (cost values only, no network gradient), the same rule as
:func:`latenttune.model.views.choose_view`. A single-encoder model's choice is its encoder's prediction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from latenttune.model.latent_cost import LatentCost

log = logging.getLogger(__name__)

__all__ = ["EncoderChoice", "choose_encoder"]


@dataclass(frozen=True)
class EncoderChoice:
    """The outcome of :func:`choose_encoder`.

    Attributes
    ----------
    index : int
        The encoder whose prediction fits best (0 = the model's encoder, 1 = the cycle encoder).
    latent : ndarray, shape (k,)
        Its prediction.
    latents : ndarray, shape (encoders, k)
        Every encoder's prediction (row ``i`` for encoder ``i``).
    costs : ndarray, shape (encoders,)
        Their costs; empty for a single-encoder model, whose prediction is not evaluated here.
    densities : Tensor, shape (encoders, n, n, n), complex64, or None
        Their decoded densities, as the cost evaluation decoded them (None for a single-encoder model).
    """

    index: int
    latent: np.ndarray
    latents: np.ndarray
    costs: np.ndarray
    densities: torch.Tensor | None = field(default=None, repr=False)

    @property
    def others(self) -> np.ndarray:
        """The predictions of the encoders not chosen, shape (encoders - 1, k)."""
        return np.delete(self.latents, self.index, axis=0)

    def densities_chosen_first(self) -> list[np.ndarray]:
        """Every prediction's decoded density, the chosen one's first, then :attr:`others`' in order
        (empty for a single-encoder model, whose prediction is not decoded here)."""
        if self.densities is None:
            return []
        densities = list(self.densities.cpu().numpy())
        return [densities[self.index]] + [d for i, d in enumerate(densities) if i != self.index]


def choose_encoder(model: torch.nn.Module, cost: LatentCost) -> EncoderChoice:
    """Every encoder's prediction of the frame of ``cost``, and the one that fits it best.

    Parameters
    ----------
    model : LatentAutoencoder or ViewedAutoencoder
        The model, in the view the tracker works in.
    cost : LatentCost
        The frame's cost, built with ``model`` (it holds the checked pattern and mask).

    Returns
    -------
    EncoderChoice
        The lowest-cost prediction (the first on a tie). A single-encoder model costs no evaluation.
    """
    count = model.encoder_count
    with torch.inference_mode():
        latents = torch.cat([model.encode_tensor(cost.intensity[None], cost.mask, i) for i in range(count)])
    latents = latents.cpu().numpy().astype(np.float64)
    if count == 1:
        return EncoderChoice(index=0, latent=latents[0], latents=latents, costs=np.empty(0))
    costs, densities = cost.evaluate(latents)  # the densities come with the costs: no decode again
    costs = costs.astype(np.float64)
    index = int(np.argmin(costs))
    log.debug("encoder %d of %d fits best (costs %s)", index, count, np.array2string(costs, precision=5))
    return EncoderChoice(index=index, latent=latents[index], latents=latents, costs=costs, densities=densities)
