"""Training losses of the autoencoder (torch, batched, differentiable).

The intensity cannot see a global phase, a translation or the twin ``conj(d(-r))``
(docs/conventions.md section 2), so a real-space loss must not punish them:

* translation: targets are centred (amplitude-weighted centroid rolled to index ``n // 2``)
  before training (:func:`centre_density`), so the network learns one placement;
* twin: the loss takes the better of the target and its twin (:func:`twin`), reflected about
  the centre index so a centred target stays centred;
* global phase: the phase term uses the best global phase in closed form.

Terms (each a tensor of shape ``(B,)``):

* :func:`amplitude_loss` ``sum((|P| - |T|)^2) / sum(|T|^2)``;
* :func:`phase_loss` ``1 - |sum w exp(i(phi_T - phi_P))| / sum w`` with ``w = |T|``: the
  amplitude-weighted phase misfit after removing the best global phase (0 when the phases agree
  up to a constant, at most 1);
* :func:`reciprocal_loss` the amplitude misfit of ``|F pad(P)|^2`` against the measured pattern
  (:func:`latenttune.physics.amplitude_misfit`): the physics-aware consistency term;
* :func:`smoothness_loss` ``||D(z + s e) - D(z)||^2 / (||D(z)||^2 s^2 k)`` for a random unit-variance
  ``e``: a finite-difference Lipschitz penalty that keeps nearby latents decoding to nearby
  densities, because the controller dithers ``z``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from latenttune.physics import amplitude_misfit, forward
from latenttune.validation import check_number

__all__ = [
    "LossWeights",
    "centre_shifts",
    "centre_density",
    "twin_aware_loss",
    "twin",
    "amplitude_loss",
    "phase_loss",
    "real_space_loss",
    "reciprocal_loss",
    "smoothness_loss",
]

_DIMS = (-3, -2, -1)
_EPS = 1e-12


@dataclass(frozen=True)
class LossWeights:
    """Weights of the training loss terms.

    Attributes
    ----------
    amplitude, phase : float
        Real-space amplitude and amplitude-weighted phase terms.
    reciprocal : float
        Physics-aware reciprocal-space consistency (amplitude misfit with the measured pattern).
    smoothness : float
        Decoder smoothness in ``z``.
    smoothness_step : float
        Latent step ``s`` (box units) of the finite-difference smoothness term; about the
        controller's dither amplitude.
    physical : float
        Supervised term of a physics-structured model's explicit parameters against the
        simulator's ground truth (:func:`latenttune.model.crystal.parameter_loss`); unused otherwise.
    """

    amplitude: float = 1.0
    phase: float = 1.0
    reciprocal: float = 0.5
    smoothness: float = 0.01
    smoothness_step: float = 0.05
    physical: float = 0.0

    def __post_init__(self) -> None:
        for name in ("amplitude", "phase", "reciprocal", "smoothness", "physical"):
            check_number(name, getattr(self, name), low=0)
        check_number("smoothness_step", self.smoothness_step, low=0, open_low=True)


def centre_shifts(density: torch.Tensor) -> list[tuple[int, int, int]]:
    """Integer roll per density that brings its amplitude-weighted centroid to index ``n // 2``.

    Parameters
    ----------
    density : Tensor, shape (B, n, n, n)
    """
    n = density.shape[-1]
    weight = density.abs()
    total = weight.sum(dim=_DIMS).clamp_min(_EPS)
    coords = torch.arange(n, dtype=weight.dtype, device=weight.device)
    out = []
    for b in range(density.shape[0]):
        shifts = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            profile = weight[b].sum(dim=other)
            centroid = float((profile * coords).sum() / total[b])
            shifts.append(int(round(n // 2 - centroid)))
        out.append((shifts[0], shifts[1], shifts[2]))
    return out


def centre_density(density: torch.Tensor, shifts: list[tuple[int, int, int]] | None = None) -> torch.Tensor:
    """Roll each density so its amplitude-weighted centroid sits at index ``n // 2`` (integer shift).

    Parameters
    ----------
    density : Tensor, shape (B, n, n, n)
    shifts : list of (3,) ints, optional
        The rolls, if already computed by :func:`centre_shifts`.
    """
    shifts = centre_shifts(density) if shifts is None else shifts
    out = torch.empty_like(density)
    for b, shift in enumerate(shifts):
        out[b] = torch.roll(density[b], shifts=tuple(shift), dims=(0, 1, 2))
    return out


def twin(density: torch.Tensor) -> torch.Tensor:
    """The twin ``conj(d(-r))``, reflected about index ``n // 2`` on every axis."""
    return torch.roll(torch.flip(density, dims=_DIMS), shifts=(1, 1, 1), dims=_DIMS).conj()


def amplitude_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum((|P| - |T|)^2) / sum(|T|^2)`` per sample."""
    diff = pred.abs() - target.abs()
    return diff.square().sum(dim=_DIMS) / target.abs().square().sum(dim=_DIMS).clamp_min(_EPS)


def phase_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Amplitude-weighted phase misfit after the best global phase, in ``[0, 1]``."""
    weight = target.abs()
    # w exp(i(phi_T - phi_P)) = |T| * (T / |T|) * conj(P / |P|) = T conj(P) / |P|
    phasor = target * pred.conj() / (pred.abs() + 1e-6)
    return 1.0 - phasor.sum(dim=_DIMS).abs() / weight.sum(dim=_DIMS).clamp_min(_EPS)


def twin_aware_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: LossWeights = LossWeights(), extra: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Weighted amplitude + phase (+ ``extra``) loss against the better of the target and its twin.

    Parameters
    ----------
    pred, target : Tensor, shape (B, n, n, n)
    weights : LossWeights
    extra : Tensor, shape (B, 2), optional
        A further term for the target (column 0) and for its twin (column 1), already weighted,
        e.g. the supervised physical parameters; the twin is chosen on the sum, so every term
        agrees on it.

    Returns
    -------
    dict of Tensor, shape (B,)
        ``loss`` (the chosen, smaller total), ``amplitude``, ``phase`` and ``extra`` (0 if none).
    """
    candidates = []
    for column, t in enumerate((target, twin(target))):
        a, p = amplitude_loss(pred, t), phase_loss(pred, t)
        e = extra[:, column] if extra is not None else torch.zeros_like(a)
        candidates.append((weights.amplitude * a + weights.phase * p + e, a, p, e))
    use_twin = candidates[1][0] < candidates[0][0]
    chosen = [torch.where(use_twin, c1, c0) for c0, c1 in zip(candidates[0], candidates[1])]
    return dict(zip(("loss", "amplitude", "phase", "extra"), chosen))


def real_space_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: LossWeights = LossWeights()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted amplitude + phase loss against the better of the target and its twin.

    Returns
    -------
    loss, amplitude, phase : Tensor, shape (B,)
        The chosen (smaller) combined loss and its two terms.
    """
    terms = twin_aware_loss(pred, target, weights)
    return terms["loss"], terms["amplitude"], terms["phase"]


def reciprocal_loss(pred: torch.Tensor, intensity: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Amplitude misfit of the predicted density's diffraction against the measured pattern."""
    return amplitude_misfit(forward(pred), intensity, mask)


def smoothness_loss(
    decode: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    step: float,
    density: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Finite-difference Lipschitz penalty of the decoder around ``z``.

    Parameters
    ----------
    decode : callable
        ``(B, k) -> (B, n, n, n)`` complex.
    z : Tensor, shape (B, k)
    step : float
        Standard deviation of the latent perturbation (box units).
    density : Tensor, optional
        ``decode(z)`` if already computed.
    generator : torch.Generator, optional
        Source of the random perturbation (for reproducible training).
    """
    if density is None:
        density = decode(z)
    k = z.shape[1]
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device) * step
    moved = decode((z + noise).clamp(-1.0, 1.0))
    change = (moved - density).abs().square().sum(dim=_DIMS)
    scale = density.abs().square().sum(dim=_DIMS).clamp_min(_EPS) * step**2 * k
    return change / scale
