"""Reading the latent back from the physics stage's output: the loop from the voxels to the latent.

Extremum seeking on the measured pattern alone moves a 56-number latent far too slowly to follow a
crystal (its cost landscape is flat in most directions, and the encoder's start is far). The physics
stage's output, though, is close to the sample. :class:`LatentReadback` puts the latent next to it
every frame, with cost values only:

1. **explicit part, read off the output** (:func:`latenttune.model.explicit_fit.fit_explicit`):
   orientation, facet distances, phase coefficients and dislocation line by geometry and linear least
   squares, no network;
2. **learned part, tuned by extremum seeking**: the learned residual of the decoder changes slowly
   along a series, so one :class:`controllers.ExtremumSeeking` controller keeps tuning it from frame
   to frame, on the real-space misfit between the decoded latent and the physics stage's output,
   ``C_r(z) = 1 - |<o, D(z)>|^2 / (|o|^2 |D(z)|^2)`` (global phase removed; ``C_r`` is about
   ``E_r(o, D(z))^2``). The controller sees cost values only; the network is evaluated forward, never
   differentiated.

A model without explicit parameters has nothing to read off; its whole latent is then tuned on
``C_r`` by the same controller (from the latent the frame started with).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from controllers import Controller, ESParams, ExtremumSeeking
from latenttune.model.crystal import PhysicalLayout, render_physical
from latenttune.model.explicit_fit import ExplicitFit, fit_explicit
from latenttune.model.network import LatentAutoencoder
from latenttune.model.views import ViewedAutoencoder
from latenttune.tracking.physics_stage import centred
from latenttune.validation import check_int, check_number

log = logging.getLogger(__name__)

__all__ = ["ReadbackSettings", "ReadbackOutcome", "LatentReadback", "real_space_misfit"]


@dataclass(frozen=True)
class ReadbackSettings:
    """How the latent is read back from the physics stage's output.

    Attributes
    ----------
    steps : int
        Evaluations of the real-space misfit per frame by the learned part's extremum seeking (0: the
        explicit part is read off and the learned part stays where it is).
    first_steps : int or None
        Evaluations on the run's first frame (>= ``steps``), where the learned part starts from the
        model's neutral code, far from the sample's. Default None: ``4 * steps``.
    gain, dither : float
        The controller's gain and dither amplitude (box units) on the learned part.
    """

    steps: int = 24
    first_steps: int | None = None
    gain: float = 2.0
    dither: float = 0.1

    def __post_init__(self) -> None:
        check_int("steps", self.steps, low=0)
        if self.first_steps is None:
            object.__setattr__(self, "first_steps", 4 * self.steps)
        check_int("first_steps", self.first_steps, low=self.steps)
        check_number("gain", self.gain, low=0, open_low=True)
        check_number("dither", self.dither, low=0, high=1, open_low=True)


@dataclass(frozen=True)
class ReadbackOutcome:
    """What the read-back did on one frame.

    Attributes
    ----------
    latent : ndarray, shape (k,)
        The frame's latent: explicit part read off the output, learned part the best the controller
        evaluated.
    density : ndarray, shape (n, n, n), complex64
        Its decoded density.
    start : ndarray, shape (k,)
        The latent extremum seeking started the frame from (read-off explicit part, the controller's
        learned part before the frame).
    costs : ndarray, shape (S,)
        Real-space misfit of the start and of every evaluation, in order.
    fit : ExplicitFit or None
        The explicit parameters read off the output (None for a model without them).
    seconds : float
    """

    latent: np.ndarray
    density: np.ndarray
    start: np.ndarray
    costs: np.ndarray
    fit: ExplicitFit | None
    seconds: float = 0.0

    @property
    def misfit(self) -> float:
        """The real-space misfit of :attr:`latent` (the lowest of :attr:`costs`)."""
        return float(self.costs.min())

    @property
    def orientation_ties(self) -> int:
        """:attr:`ExplicitFit.orientation_ties` of the frame's fit; 0 when nothing was read off."""
        return 0 if self.fit is None else int(self.fit.orientation_ties)


def real_space_misfit(reference: torch.Tensor, densities: torch.Tensor) -> torch.Tensor:
    """``1 - |<o, d>|^2 / (|o|^2 |d|^2)`` of densities ``(B, n, n, n)`` against ``reference`` ``(n, n, n)``."""
    dims = (-3, -2, -1)
    overlap = (reference.conj() * densities).sum(dim=dims).abs().square()
    norms = reference.abs().square().sum() * densities.abs().square().sum(dim=dims)
    return 1.0 - overlap / norms.clamp_min(1e-30)


class _RenderedMisfit:
    """``real_space_misfit`` of learned codes drawn on one rendered crystal, in real arithmetic.

    With the density ``A exp(i phase) (c + i s)`` (:meth:`latenttune.model.network._Decoder.learned_parts`)
    the overlap with the reference ``o`` is ``sum A (q (c + i s))`` for ``q = conj(o) exp(i phase)``,
    computed once per frame; no complex density is formed per evaluation (the density of the best
    code is formed at the end, by :meth:`density`).
    """

    def __init__(self, reference: torch.Tensor, rendered: tuple[torch.Tensor, torch.Tensor], decoder: Any) -> None:
        self.decoder, self.rendered = decoder, rendered
        q = reference.conj() * torch.polar(torch.ones_like(rendered[1][0]), rendered[1][0])
        self.q_real, self.q_imag = q.real.contiguous(), q.imag.contiguous()
        self.reference_power = reference.abs().square().sum()

    def __call__(self, learned: torch.Tensor) -> tuple[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        amplitude, cos, sin = self.decoder.learned_parts(self.rendered[0], learned)
        a = amplitude[0]
        real = (a * (self.q_real * cos[0] - self.q_imag * sin[0])).sum()
        imag = (a * (self.q_real * sin[0] + self.q_imag * cos[0])).sum()
        power = (a.square() * (cos[0].square() + sin[0].square())).sum()
        value = 1.0 - (real.square() + imag.square()) / (self.reference_power * power).clamp_min(1e-30)
        return float(value), (amplitude, cos, sin)

    def density(self, parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The ``(n, n, n)`` density of a scored code (as :meth:`~latenttune.model.network._Decoder.with_learned`)."""
        amplitude, cos, sin = parts
        return (torch.polar(amplitude, self.rendered[1]) * torch.complex(cos, sin))[0]


class _DecodedMisfit:
    """``real_space_misfit`` of whole latents (a model without explicit parameters)."""

    def __init__(self, reference: torch.Tensor, model: Any) -> None:
        self.reference, self.model = reference, model

    def __call__(self, z: torch.Tensor) -> tuple[float, torch.Tensor]:
        density = self.model.decode_tensor(z)
        return float(real_space_misfit(self.reference, density)[0]), density[0]

    def density(self, density: torch.Tensor) -> torch.Tensor:
        return density


class LatentReadback:
    """The per-run state of the read-back: the learned part's controller and the previous frame's fit.

    Parameters
    ----------
    model : LatentAutoencoder
        The model (a physics-structured one has explicit parameters to read off).
    settings : ReadbackSettings, optional
    learned_start : ndarray, optional
        Where the learned part starts (default: the model's neutral code when its checkpoint
        carries one, else the centre of the box).
    """

    def __init__(self, model: LatentAutoencoder, settings: ReadbackSettings | None = None,
                 learned_start: np.ndarray | None = None) -> None:
        self.settings = ReadbackSettings() if settings is None else settings
        config = model.config
        self.layout = PhysicalLayout(config.n) if config.physical else None
        self.explicit = config.physical_dim
        tuned = model.latent_dim - self.explicit
        start = np.zeros(tuned) if learned_start is None else np.asarray(learned_start, dtype=np.float64)
        if start.shape != (tuned,):
            raise ValueError(f"`learned_start` must have shape ({tuned},), got {start.shape}")
        params = ESParams(lower=-np.ones(tuned), upper=np.ones(tuned), gain=self.settings.gain,
                          dither=self.settings.dither)
        self.controller: Controller = ExtremumSeeking(params, z0=np.clip(start, -1, 1))
        self.previous_fit: ExplicitFit | None = None
        self._started = False

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (the controller; the previous fit is re-read from the stored output)."""
        fit = self.previous_fit
        return {"controller": self.controller.to_dict(),
                "orientation": None if fit is None else fit.parameters[:3].tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.controller = ExtremumSeeking.from_dict(state["controller"])
        self._resume_orientation = state.get("orientation")
        self._started = True

    def run(self, model: LatentAutoencoder, output: np.ndarray, base: np.ndarray) -> ReadbackOutcome:
        """Read the latent back from one frame's output.

        Parameters
        ----------
        model : LatentAutoencoder
            The model the tracker works with (in its view).
        output : ndarray, shape (n, n, n), complex
            The physics stage's output for the frame.
        base : ndarray, shape (k,)
            The frame's latent so far (its explicit part is used when nothing can be read off, and
            the whole of it for a model without explicit parameters).
        """
        started = time.perf_counter()
        device = next(model.parameters()).device
        output = centred(np.asarray(output, dtype=np.complex64))  # the decoder draws its crystals centred
        fit = None
        explicit = np.asarray(base[: self.explicit], dtype=np.float64)
        # the misfit is taken in the latent's own frame (a view permutes voxels: it changes no misfit),
        # where the explicit part is rendered once and only the learned part is decoded per evaluation
        viewed = isinstance(model, ViewedAutoencoder)
        seen = model.to_view(output) if viewed and self.layout is not None else output
        if self.layout is not None:
            try:
                fit = fit_explicit(seen, self.layout, previous=self._previous())
                explicit = fit.parameters
                self.previous_fit = fit
            except ValueError as exc:  # nothing bright enough to read: keep the frame's own explicit part
                log.warning("read-back: the explicit parameters could not be read off the output (%s)", exc)
        reference = torch.as_tensor(seen, device=device)
        latents, costs, kept = [], [], []
        if self.layout is not None:
            decoder = (model.base if viewed else model).decoder
            score = self._scorer(reference, explicit, decoder, device)
            if fit is not None and fit.without_line is not None:
                # a line read near the surface stays only when it draws the output better
                plain = self._scorer(reference, fit.without_line.parameters, decoder, device)
                learned = torch.as_tensor(np.clip(self.controller.position(), -1, 1)[None], dtype=torch.float32,
                                          device=device)
                with torch.inference_mode():
                    if plain(learned)[0] < score(learned)[0]:
                        explicit, score, fit = fit.without_line.parameters, plain, fit.without_line
                        self.previous_fit = fit
        else:
            score = _DecodedMisfit(reference, model)

        def evaluate(tuned: np.ndarray) -> float:
            z = np.concatenate([explicit, np.clip(tuned, -1.0, 1.0)]) if self.explicit else np.clip(tuned, -1, 1)
            with torch.inference_mode():
                value, parts = score(torch.as_tensor(z[None, self.explicit:], dtype=torch.float32, device=device))
            latents.append(z)
            costs.append(value)
            kept.append(parts)
            return value

        if not self.explicit and not self._started:  # the whole latent is tuned: start from the frame's
            self.controller.reset(np.clip(np.asarray(base, dtype=np.float64), -1.0, 1.0))
        steps = self.settings.steps if self._started else self.settings.first_steps
        self._started = True
        evaluate(self.controller.position())
        for _ in range(steps):
            value = evaluate(self.controller.suggest())
            self.controller.ingest(value)
        best = int(np.argmin(costs))
        with torch.inference_mode():
            density = score.density(kept[best])
        if viewed and self.layout is not None:  # back to the laboratory frame
            density = model.view.undo(density[None])[0].contiguous()
        return ReadbackOutcome(latent=latents[best], density=density.cpu().numpy(), start=latents[0],
                               costs=np.asarray(costs), fit=fit, seconds=time.perf_counter() - started)

    def _scorer(self, reference: torch.Tensor, explicit: np.ndarray, decoder: Any,
                device: torch.device) -> _RenderedMisfit:
        with torch.inference_mode():
            rendered = render_physical(torch.as_tensor(explicit[None], dtype=torch.float32, device=device), self.layout)
        return _RenderedMisfit(reference, rendered, decoder)

    def _previous(self) -> ExplicitFit | None:
        if self.previous_fit is not None:
            return self.previous_fit
        orientation = getattr(self, "_resume_orientation", None)
        if orientation is None or self.layout is None:
            return None
        parameters = np.zeros(self.layout.size)
        parameters[:3] = orientation
        return ExplicitFit(parameters=parameters, rotation=np.eye(3), facet_distances=np.zeros(26),
                           phase_coefficients=np.zeros(9), dislocation=None, support=np.zeros((1, 1, 1), bool))


def calibrate_learned_start(model: LatentAutoencoder, densities: np.ndarray, *, evaluations: int = 600) -> np.ndarray:
    """The model's neutral learned code: the learned part that draws typical crystals best on average.

    The explicit part is read off each density (:func:`latenttune.model.explicit_fit.fit_explicit`),
    and the learned part minimising the mean real-space misfit over all of them is found by the
    bounded Powell method (cost values only, like the tracker; the network is evaluated forward,
    never differentiated). Run once per model and stored with its checkpoint
    (``extra["learned_start"]``, read into :attr:`LatentAutoencoder.learned_start`); the tracker's
    extremum seeking starts there and tunes it to each sample.

    Parameters
    ----------
    model : LatentAutoencoder
        A physics-structured model.
    densities : ndarray, shape (S, n, n, n), complex
        Typical crystals (e.g. samples of the model's own training recipe with an unused seed).
    evaluations : int
        Evaluations of the mean misfit (each decodes all S densities' latents).

    Returns
    -------
    ndarray, shape (latent_dim - physical_dim,)
    """
    from scipy.optimize import minimize

    if not model.config.physical:
        raise ValueError("`model` has no explicit parameters: there is no learned residual to calibrate")
    check_int("evaluations", evaluations, low=1)
    densities = np.asarray(densities)
    layout = PhysicalLayout(model.config.n)
    device = next(model.parameters()).device
    explicit = torch.as_tensor(np.stack([fit_explicit(d, layout).parameters for d in densities]), dtype=torch.float32,
                               device=device)
    references = torch.as_tensor(densities.astype(np.complex64), device=device)
    tuned = model.latent_dim - model.config.physical_dim

    def mean_misfit(learned: np.ndarray) -> float:
        code = torch.as_tensor(np.clip(learned, -1.0, 1.0), dtype=torch.float32, device=device)
        z = torch.cat([explicit, code.expand(len(explicit), tuned)], dim=1)
        with torch.inference_mode():
            decoded = model.decode_tensor(z)
            return float(torch.stack([real_space_misfit(r, d[None])[0] for r, d in zip(references, decoded)]).mean())

    result = minimize(mean_misfit, np.zeros(tuned), method="Powell", bounds=[(-1.0, 1.0)] * tuned,
                      options={"maxfev": evaluations, "xtol": 1e-3, "ftol": 1e-6})
    return np.clip(result.x, -1.0, 1.0)
