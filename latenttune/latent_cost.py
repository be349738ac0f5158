"""The controller's hot path: ``cost(z)`` for a batch of latents against one measured pattern.

``cost(z) = C(|F pad(decode(z))|^2, I_meas, mask)`` with the cost ``C`` of
:mod:`latenttune.physics` (amplitude misfit by default), evaluated without autograd
(``torch.inference_mode``) and on whatever device the model lives on. The measured pattern is
converted, checked and moved to the device once, when the cost is built, not per evaluation.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from latenttune.model import LatentAutoencoder
from latenttune.physics import COSTS, forward

log = logging.getLogger(__name__)

__all__ = ["LatentCost"]


class LatentCost:
    """``cost(z)`` of latents ``(B, k) -> (B,)`` against one measured pattern.

    Parameters
    ----------
    model : LatentAutoencoder
        The decoder to evaluate (in eval mode).
    intensity : array or Tensor, shape (N, N, N)
        Measured counts, peak at the centre.
    mask : bool array or Tensor, optional
        True where a voxel was NOT measured.
    cost : {"amplitude", "poisson"}
        Which cost of :mod:`latenttune.physics`.

    Examples
    --------
    >>> cost = LatentCost(model, frame.intensity, frame.mask)   # doctest: +SKIP
    >>> cost(np.zeros((4, model.latent_dim)))                   # doctest: +SKIP
    array([0.41, 0.41, 0.41, 0.41], dtype=float32)
    """

    def __init__(self, model: LatentAutoencoder, intensity: Any, mask: Any = None, cost: str = "amplitude") -> None:
        if cost not in COSTS:
            raise ValueError(f"`cost` must be one of {sorted(COSTS)}, got {cost!r}")
        self.model = model
        self.cost_name = cost
        self._cost = COSTS[cost]
        x, m = model._as_intensity_batch(intensity, mask)
        if x.shape[0] != 1:
            raise ValueError(f"`intensity` must be one pattern (N, N, N), got a batch of {x.shape[0]}")
        self.intensity = x[0]
        self.mask = None if m is None else m.reshape(x.shape[1:])
        if float(self.intensity.sum()) <= 0:
            raise ValueError("`intensity` has no counts on the measured voxels")
        self.device = self.intensity.device
        self.k = model.latent_dim
        self.evaluations = 0

    def _as_latents(self, z: Any) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor) else z)
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != self.k:
            raise ValueError(f"`z` must have shape ({self.k},) or (B, {self.k}), got {tuple(t.shape)}")
        return t.to(device=self.device, dtype=torch.float32)

    def evaluate(self, z: Any) -> tuple[np.ndarray, torch.Tensor]:
        """Costs and decoded densities of a batch of latents.

        Returns
        -------
        cost : ndarray, shape (B,), float32
        density : Tensor, shape (B, n, n, n), complex64 (on the model's device)
        """
        z = self._as_latents(z)
        with torch.inference_mode():
            density = self.model.decode_tensor(z)
            values = self._cost(forward(density), self.intensity, self.mask)
        self.evaluations += z.shape[0]
        return values.float().cpu().numpy(), density

    def __call__(self, z: Any) -> np.ndarray:
        """Costs of a batch of latents ``(B, k)`` (or one ``(k,)``), shape ``(B,)``, float32."""
        return self.evaluate(z)[0]
