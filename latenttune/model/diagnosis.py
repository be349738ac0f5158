"""Where a reconstruction error comes from: the model's representation floor.

Tracking can only find what the decoder can draw. The *representation floor* of a true density
``d0`` is the real-space error of the best latent there is, found by fitting the decoder to ``d0``
itself (in real space, with the network's gradient: a diagnosis, never a tracker):

    floor(d0) = min_z E_r(d0, decode(z))

Comparing it with the encoder's error (one-shot) and the tracker's error (ES, hybrid) on the same
frames says which part limits a result: the decoder (floor high), the encoder (one-shot far above
the floor) or the controller (ES far above the floor). ``benchmarks/diagnose_latent.py`` runs this
per scenario and writes its table to ``benchmarks/results/diagnosis.md``.

The fit minimises the invariant form of E_r (docs/conventions.md section 3) over whole-voxel shifts and the
twin, ``1 - max_t |CC(t)|^2 / (|d0|^2 |d|^2)``, with Adam on ``atanh(z)`` (so ``z`` stays in the
box) from several starts; the reported floor is the subpixel :func:`latenttune.metrics.
real_space_error` of the best start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from latenttune.metrics import real_space_error
from latenttune.model.network import LatentAutoencoder
from latenttune.validation import check_int, check_number

__all__ = ["FloorResult", "invariant_error_squared", "representation_floor"]

_DIMS = (-3, -2, -1)


def invariant_error_squared(density: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``E_r^2`` of each density against ``truth`` over whole-voxel shifts and the twin (differentiable).

    Parameters
    ----------
    density : Tensor, shape (B, n, n, n), complex
    truth : Tensor, shape (n, n, n), complex

    Returns
    -------
    Tensor, shape (B,)
    """
    n = truth.shape[-1]
    size = (2 * n,) * 3
    T = torch.fft.fftn(truth, s=size)
    best = None
    for candidate in (density, torch.flip(density, dims=_DIMS).conj()):
        D = torch.fft.fftn(candidate, s=size, dim=_DIMS)
        cc = torch.fft.ifftn(T.conj() * D, dim=_DIMS).abs().square().flatten(1).amax(dim=1)
        best = cc if best is None else torch.maximum(best, cc)
    norms = density.abs().square().sum(dim=_DIMS) * truth.abs().square().sum()
    return 1.0 - best / norms.clamp_min(1e-30)


@dataclass(frozen=True)
class FloorResult:
    """Outcome of :func:`representation_floor`.

    Attributes
    ----------
    error : float
        The floor: subpixel E_r of the best latent found.
    latent : ndarray, shape (k,)
        That latent.
    start_errors : ndarray, shape (S,)
        E_r reached from each start (the first start is ``z0`` when given).
    """

    error: float
    latent: np.ndarray
    start_errors: np.ndarray


def representation_floor(
    model: LatentAutoencoder,
    truth: Any,
    *,
    z0: Any = None,
    starts: int = 4,
    steps: int = 150,
    lr: float = 0.05,
    rng: np.random.Generator | None = None,
    extra_starts: Any = (),
) -> FloorResult:
    """Fit the decoder to a true density: the best E_r any latent reaches.

    Parameters
    ----------
    model : LatentAutoencoder
    truth : array_like, shape (n, n, n), complex
        The true density.
    z0 : array_like, shape (k,), optional
        A start (e.g. the encoder's prediction); the other starts are uniform in ``[-0.8, 0.8]^k``.
    starts : int
        Number of starts in all (>= 1).
    steps : int
        Adam steps (>= 1).
    lr : float
        Adam learning rate on ``atanh(z)``.
    rng : numpy.random.Generator, optional
        Source of the random starts (default ``default_rng(0)``).
    extra_starts : sequence of array_like, shape (k,)
        More starts besides ``starts`` (e.g. a tracker's latent, so that the floor is never above
        what that tracker found).

    Returns
    -------
    FloorResult
    """
    starts = check_int("starts", starts, low=1)
    steps = check_int("steps", steps, low=1)
    check_number("lr", lr, low=0, open_low=True)
    rng = np.random.default_rng(0) if rng is None else rng
    n, k = model.config.n, model.latent_dim
    d0 = np.asarray(truth)
    if d0.shape != (n, n, n):
        raise ValueError(f"`truth` must have shape {(n, n, n)} for this model, got {d0.shape}")
    if not np.isfinite(d0).all() or not np.abs(d0).any():
        raise ValueError("`truth` must be finite and not all zero")
    initial = rng.uniform(-0.8, 0.8, (starts, k))
    if z0 is not None:
        z0 = np.asarray(z0, dtype=np.float64).ravel()
        if z0.shape != (k,):
            raise ValueError(f"`z0` must have shape ({k},), got {z0.shape}")
        initial[0] = z0
    extra = [np.asarray(e, dtype=np.float64).ravel() for e in extra_starts]
    if any(e.shape != (k,) for e in extra):
        raise ValueError(f"every one of `extra_starts` must have shape ({k},)")
    if extra:
        initial = np.concatenate([initial, np.stack(extra)])
    device = next(model.parameters()).device
    target = torch.as_tensor(d0.astype(np.complex64), device=device)
    u = torch.atanh(torch.as_tensor(np.clip(initial, -0.995, 0.995), dtype=torch.float32, device=device))
    u.requires_grad_(True)
    optimiser = torch.optim.Adam([u], lr=lr)
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        for _ in range(steps):
            loss = invariant_error_squared(model.decode_tensor(torch.tanh(u)), target)
            optimiser.zero_grad()
            loss.sum().backward()
            optimiser.step()
    model.train(was_training)
    with torch.no_grad():
        z = torch.tanh(u)
        decoded = model.decode_tensor(z).cpu().numpy()
    errors = np.array([real_space_error(d0, d).error for d in decoded])
    best = int(np.argmin(errors))
    return FloorResult(error=float(errors[best]), latent=z[best].cpu().numpy().astype(np.float64), start_errors=errors)
