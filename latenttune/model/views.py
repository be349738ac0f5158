"""Symmetric views: ask the encoder the same question in 48 orientations and keep the best answer.

A signed permutation ``g`` of the grid axes (a rotation by multiples of 90 degrees, alone or times
the inversion ``r -> -r``; 48 in all, the cubic group ``O_h``) maps a density to another density and
its diffraction pattern to the pattern of that density: with the centring of docs/conventions.md section 2 (``q = 0`` at
``N // 2``, the object centred in the padded box) the axis reflection ``i -> -i (mod N)`` about the
centre commutes with the centred Fourier transform up to a phase, which the intensity does not see.
So ``|F g(d)|^2 = g(|F d|^2)`` exactly for a density that vanishes on the first plane (index 0) of
each object axis, as every centred crystal does (that plane's mirror lies outside the object box, so
the wrapped reflection keeps it in place; the candidates below are scored as they are, so a decoder
that leaves something there is judged on its real pattern).

The encoder is not equivariant: its error depends on how the crystal sits in the box (its
misorientation is tens of degrees on faceted crystals, ``benchmarks/orientation_error.py``). Each
view ``g`` gives a candidate density ``g^-1(D(E(g(I))))`` for the same measured pattern ``I``; the
candidates are scored with the tracker's own cost (the amplitude misfit against the measured
counts, masked voxels excluded) and the lowest wins. The choice uses only the measurement, never
the truth. On the default model's held-out pairs the best of 48 lowers the median ``E_r`` of the
identity view and comes close to the oracle choice (the candidate nearest the truth): figures in
``docs/model_card.md`` ("Validation figures", ``latenttune evaluate``) and ``docs/results.md``.

A tracker that adopts view ``g`` works with :class:`ViewedAutoencoder`, whose ``encode`` sees
``g(I)`` and whose ``decode`` returns ``g^-1(D(z))``: every density, cost and output stays in the
laboratory frame, and only the meaning of the latent depends on the view (the record stores it).
"""

from __future__ import annotations

import math
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from latenttune.model.latent_cost import LatentCost
from latenttune.model.network import LatentAutoencoder
from latenttune.model.symmetry import VIEW_COUNTS, VIEWS, GridView, check_view_index, check_views
from latenttune.validation import check_int

log = logging.getLogger(__name__)

__all__ = ["GridView", "VIEWS", "VIEW_COUNTS", "ViewChoice", "ViewedAutoencoder", "check_view_index", "check_views",
           "choose_view", "viewed"]


class ViewedAutoencoder(nn.Module):
    """A model seen through a fixed view: ``encode(I) = E(g(I))``, ``decode(z) = g^-1(D(z))``.

    Stands in for :class:`latenttune.model.LatentAutoencoder` wherever the tracker uses one
    (:class:`latenttune.model.latent_cost.LatentCost`, :class:`latenttune.tracking.FrameTracker`); it shares
    the model's weights, so nothing is copied.

    Parameters
    ----------
    model : LatentAutoencoder
        The model.
    view : GridView
        The view (not the identity: use the model itself for that).
    index : int
        The view's index in :data:`VIEWS` (stored with tracking records).
    """

    def __init__(self, model: LatentAutoencoder, view: GridView, index: int) -> None:
        super().__init__()
        self.base = model
        self.view = view
        self.index = int(index)
        self.config = model.config

    @property
    def latent_dim(self) -> int:
        """Length of the latent vector (the model's)."""
        return self.base.latent_dim

    @property
    def latent_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The model's latent box."""
        return self.base.latent_bounds

    @property
    def learned_start(self) -> np.ndarray | None:
        """The model's neutral learned code (:attr:`latenttune.model.LatentAutoencoder.learned_start`)."""
        return self.base.learned_start

    def to_view(self, density: np.ndarray) -> np.ndarray:
        """A laboratory-frame density seen in this view (what the base model's latent describes)."""
        return np.ascontiguousarray(self.view.apply(density))

    def check_intensity(self, intensity: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.base.check_intensity(intensity, mask)

    @property
    def encoder_count(self) -> int:
        """The model's number of encoders."""
        return self.base.encoder_count

    def check_encoder(self, encoder: Any) -> int:
        """:meth:`LatentAutoencoder.check_encoder`."""
        return self.base.check_encoder(encoder)

    def encode(self, intensity: Any, mask: Any = None, encoder: int = 0) -> torch.Tensor:
        """:meth:`LatentAutoencoder.encode` of the viewed pattern."""
        encoder = self.base.check_encoder(encoder)
        x, m = self.base.check_intensity(intensity, mask)
        return self.encode_tensor(x, m, encoder)

    def decode(self, z: Any) -> torch.Tensor:
        """:meth:`LatentAutoencoder.decode`, brought back to the laboratory frame."""
        return self.view.undo(self.base.decode(z)).contiguous()

    def encode_tensor(self, intensity: torch.Tensor, mask: torch.Tensor | None = None, encoder: int = 0) -> torch.Tensor:
        """Unchecked :meth:`encode`."""
        return self.base.encode_tensor(self.view.apply(intensity).contiguous(),
                                       None if mask is None else self.view.apply(mask).contiguous(), encoder)

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """Unchecked :meth:`decode`."""
        return self.view.undo(self.base.decode_tensor(z)).contiguous()


def viewed(model: LatentAutoencoder, index: int) -> LatentAutoencoder | ViewedAutoencoder:
    """The model seen through ``VIEWS[index]`` (the model itself for the identity).

    Raises
    ------
    ValueError
        ``index`` is not an index of :data:`VIEWS`.
    """
    index = check_view_index(index)
    base = model.base if isinstance(model, ViewedAutoencoder) else model
    return base if int(index) == 0 else ViewedAutoencoder(base, VIEWS[int(index)], int(index))


@dataclass(frozen=True)
class ViewChoice:
    """The outcome of :func:`choose_view`.

    Attributes
    ----------
    index : int
        Index in :data:`VIEWS` of the view with the lowest cost.
    latent : ndarray, shape (k,)
        The encoder's prediction in that view (the latent of :func:`viewed` ``(model, index)``).
    density : ndarray, shape (n, n, n), complex64
        Its density, in the laboratory frame.
    costs : ndarray, shape (views,)
        The cost of every view's candidate (index ``i`` for ``VIEWS[i]``).
    """

    index: int
    latent: np.ndarray
    density: np.ndarray
    costs: np.ndarray


def choose_view(model: LatentAutoencoder, intensity: Any, mask: Any = None, *, views: int = 48,
                batch: int = 8) -> ViewChoice:
    """Encode the measured pattern in ``views`` views and keep the one whose prediction fits best.

    Parameters
    ----------
    model : LatentAutoencoder
        The model (eval mode).
    intensity : array_like, shape (N, N, N)
        Measured counts.
    mask : array_like of bool, optional
        True where a voxel was NOT measured.
    views : {1, 24, 48}
        The identity alone, the 24 rotations, or all 48 views.
    batch : int
        Views encoded and decoded together (bounds the memory).

    Returns
    -------
    ViewChoice
    """
    views = check_views(views)
    check_int("batch", batch, low=1)
    cost = LatentCost(model, intensity, mask)  # checks the pattern; scores candidates in the lab frame
    x = cost.intensity
    m = cost.mask
    costs: list[np.ndarray] = []
    best, best_cost, latent, density = -1, math.inf, None, None  # only the best candidate so far is kept
    with torch.inference_mode():
        for start in range(0, views, int(batch)):
            chunk = VIEWS[start:min(start + int(batch), views)]
            xs = torch.stack([v.apply(x) for v in chunk]).contiguous()
            ms = None if m is None else torch.stack([v.apply(m) for v in chunk]).contiguous()
            z = model.encode_tensor(xs, ms)
            decoded = model.decode_tensor(z)
            candidates = torch.stack([v.undo(decoded[i]) for i, v in enumerate(chunk)]).contiguous()
            chunk_costs = cost.density_costs(candidates).astype(np.float64)
            costs.append(chunk_costs)
            i = int(np.argmin(chunk_costs))
            if best < 0 or chunk_costs[i] < best_cost:  # as np.argmin over all views
                best, best_cost = start + i, float(chunk_costs[i])
                latent, density = z[i].cpu().numpy(), candidates[i].cpu().numpy()
    all_costs = np.concatenate(costs)
    log.debug("view %d of %d chosen: cost %.5f (identity %.5f)", best, views, all_costs[best], all_costs[0])
    return ViewChoice(index=best, latent=np.asarray(latent, dtype=np.float64), density=density, costs=all_costs)
