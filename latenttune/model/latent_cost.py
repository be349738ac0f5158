"""The controller's hot path: ``cost(z)`` for a batch of latents against one measured pattern.

``cost(z) = C(|F pad(decode(z))|^2, I_meas, mask)`` with the cost ``C`` of
:mod:`latenttune.physics` (amplitude misfit by default), evaluated without autograd
(``torch.inference_mode``) and on whatever device the model lives on. The measured pattern is
converted, checked and moved to the device once, when the cost is built, not per evaluation.

Speed: the forward model is evaluated as ``|fftn(d * c, s=(N, N, N), norm="ortho")|^2`` with the
checkerboard ``c = (-1)^(i + j + k)`` on the object grid. This equals
:func:`latenttune.physics.forward` (``|fftshift(fftn(ifftshift(pad(d))))|^2``, the convention of
docs/conventions.md section 2) for even ``N``: the modulation by ``c`` moves ``q = 0`` to index ``N // 2`` (the
``fftshift``), and the input-side ``ifftshift`` and the placement of ``d`` inside the padded box
only multiply the transform by a phase, which the intensity does not see. It needs no padding
copy and no shifts, so it is faster per pattern (timed by ``benchmarks/bench_latent_cost.py``); the
tests check it against :func:`~latenttune.physics.forward`. For the amplitude cost the measured
amplitudes and their mask are prepared once.

The cost remembers the lowest-cost latent it evaluated one at a time and that latent's decoded
density (:meth:`LatentCost.density_of`), so the tracker does not decode a latent the controller
already evaluated. Only single evaluations are remembered: a batched decode can differ from a
decode of one in the last bits, and the reported density should not depend on how candidates were
batched (the physics stage that starts from it would amplify the difference).
:meth:`LatentCost.with_gradient` is the one path that builds an autograd graph through the network:
only the gradient comparator (:class:`latenttune.tracking.strategies.GradientStrategy`) calls it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from latenttune.model.network import LatentAutoencoder
from latenttune.physics import _TINY, COSTS, flux_scale, forward
from latenttune.validation import check_choice

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
        check_choice("cost", cost, sorted(COSTS))
        self.model = model
        self.cost_name = cost
        self._cost = COSTS[cost]
        x, m = model.check_intensity(intensity, mask)
        if x.shape[0] != 1:
            raise ValueError(f"`intensity` must be one pattern (N, N, N), got a batch of {x.shape[0]}")
        self.intensity = x[0]
        self.mask = None if m is None else m.reshape(x.shape[1:])
        if float(self.intensity.sum()) <= 0:
            raise ValueError("`intensity` has no counts on the measured voxels")
        self.device = self.intensity.device
        self.k = model.latent_dim
        self.evaluations = 0
        self._best: tuple[float, np.ndarray, torch.Tensor] | None = None  # (cost, latent float32, density)
        n, N = model.config.n, model.config.N
        index = torch.arange(n, device=self.device)
        parity = index[:, None, None] + index[None, :, None] + index[None, None, :]
        self._checker = (1 - 2 * (parity % 2)).to(torch.float32)  # (-1)^(i+j+k), (n, n, n)
        self._grid = (N, N, N)
        if cost == "amplitude":
            weight = None if self.mask is None else (~self.mask).to(torch.float32)
            amplitude = self.intensity.clamp_min(0).sqrt()
            self._measured_amplitude = amplitude if weight is None else amplitude * weight
            self._weight = weight
            self._measured_power = float(self._measured_amplitude.square().sum())

    def _intensity(self, density: torch.Tensor) -> torch.Tensor:
        """``physics.forward(density)`` for a batch ``(B, n, n, n)``, without padding or shifts."""
        F = torch.fft.fftn(density * self._checker, s=self._grid, dim=(-3, -2, -1), norm="ortho")
        return F.real.square() + F.imag.square()

    def _amplitude_misfit(self, intensity: torch.Tensor) -> torch.Tensor:
        """``physics.amplitude_misfit(intensity, measured, mask)`` with the measured side prepared."""
        predicted = intensity.sqrt()
        if self._weight is not None:
            predicted = predicted * self._weight
        dims = (-3, -2, -1)
        scale = flux_scale(predicted, self._measured_amplitude)
        residual = scale[:, None, None, None] * predicted - self._measured_amplitude
        return residual.square().sum(dim=dims) / (self._measured_power + _TINY)

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
            values = self._density_costs(density)
        self.evaluations += z.shape[0]
        costs = values.float().cpu().numpy()
        if z.shape[0] == 1 and (self._best is None or costs[0] < self._best[0]):
            self._best = (float(costs[0]), z[0].cpu().numpy(), density[0])
        return costs, density

    def density_of(self, latent: Any) -> np.ndarray:
        """``decode(latent)`` (a decode of one) as a numpy array, not decoded again when it is the best single evaluation.

        Parameters
        ----------
        latent : array_like, shape (k,)
        """
        z = np.asarray(latent, dtype=np.float32)
        if self._best is not None and np.array_equal(self._best[1], z):
            return self._best[2].cpu().numpy()
        with torch.inference_mode():
            return self.model.decode_tensor(self._as_latents(z))[0].cpu().numpy()

    def with_gradient(self, z: torch.Tensor) -> torch.Tensor:
        """The cost of latents ``(B, k)`` as a differentiable tensor: **builds the network's autograd graph**.

        For the gradient comparator only; the project's own strategies use :meth:`__call__` (no
        graph). It evaluates the same cost through :func:`latenttune.physics.forward` (with padding
        and shifts) so that the comparator's numbers do not depend on this class's fast path.
        Counts ``B`` evaluations.
        """
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.k:
            raise ValueError(f"`z` must be a tensor of shape (B, {self.k})")
        self.evaluations += z.shape[0]
        return self._cost(forward(self.model.decode_tensor(z)), self.intensity, self.mask)

    def _density_costs(self, density: torch.Tensor) -> torch.Tensor:
        intensity = self._intensity(density)
        if self.cost_name == "amplitude":
            return self._amplitude_misfit(intensity)
        return self._cost(intensity, self.intensity, self.mask)

    def density_costs(self, density: torch.Tensor) -> np.ndarray:
        """Costs of densities ``(B, n, n, n)`` (complex, on the cost's device) that need no decoder.

        Used to score candidates that are not ``decode(z)`` of this model, e.g. a view's prediction
        brought back to the laboratory frame (:func:`latenttune.model.views.choose_view`).
        """
        n = self.model.config.n
        if not isinstance(density, torch.Tensor) or density.ndim != 4 or tuple(density.shape[1:]) != (n, n, n):
            raise ValueError(f"`density` must be a tensor of shape (B, {n}, {n}, {n})")
        with torch.inference_mode():
            return self._density_costs(density.to(self.device)).float().cpu().numpy()

    def __call__(self, z: Any) -> np.ndarray:
        """Costs of a batch of latents ``(B, k)`` (or one ``(k,)``), shape ``(B,)``, float32."""
        return self.evaluate(z)[0]
