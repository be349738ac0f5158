"""The 3D convolutional autoencoder: measured intensity -> latent ``z`` -> complex density.

Shapes below are for the default configuration (object grid ``n = 32``, diffraction grid
``N = 64``, latent dimension ``k``); ``B`` is the batch size.

Encoder (conv + pooling, as in the 3D CNN CDI literature)::

    intensity (B, N, N, N), mask (B, N, N, N)         photon counts, True = not measured
    -> normalise: a = sqrt(I) / rms(sqrt(I) over measured voxels), 0 where masked
       channels [log1p(a), measured]                  (B, 2, 64, 64, 64)
    -> 4 x [conv3x3 + GELU + maxpool2]                (B, 64, 4, 4, 4)
    -> flatten, linear, GELU, linear                  (B, k)
    -> batch norm (no affine), tanh                   z in the latent box (-1, 1)^k

The batch norm before the tanh keeps each latent component at unit scale over the training data,
so the latents spread over the box (about tanh of a unit normal) instead of collapsing onto one
saturated code: a first training run without it ended with every sample encoded to the same
corner of the box and a decoder that drew the mean density.

Decoder (upsampling + conv)::

    z (B, k) -> linear, GELU, linear                  (B, 64, 4, 4, 4)
    -> 3 x [conv3x3 + GELU + trilinear upsample x2]   (B, 16, 32, 32, 32)
    -> amplitude head: conv3x3, sigmoid               (B, 32, 32, 32) in [0, 1]
    -> phase head: conv3x3 to a 2-vector (cos, sin)   (B, 32, 32, 32) phase = atan2
    -> density = amplitude * exp(i phase)             (B, 32, 32, 32) complex64

The phase head predicts a unit phasor rather than an angle, so phase vortices (dislocations)
and wrapped strain phases need no discontinuity in the network's output.

The latent box is ``[-1, 1]^k`` (tanh bound): the extremum-seeking controller uses it directly
(:attr:`LatentAutoencoder.latent_bounds`).

Physics-structured variant (``ModelConfig(physical=True)``, the default model; ``docs/model_card.md``)::

    z = [p (48 physical parameters), z_learned (latent_dim)]       all in the box (-1, 1)
    p -> faceted crystal, smooth phase, dislocation line            latenttune.model.crystal (no weights)
    z_learned -> the decoder above, with zero-initialised heads     residual amplitude and phasor
    density = clip(A(p) + tanh(h_a), 0, 1) * exp(i phi(p)) * normalise(1 + h_c, h_s)

The encoder predicts both parts (the physical part without the batch norm, supervised by the
simulator's ground truth through :func:`latenttune.model.crystal.parameter_loss`); extremum seeking tunes
the whole vector from cost values alone. ``encoder_stem="two-scale"`` feeds the encoder the central
``N/2`` cube of the pattern at full resolution plus the whole pattern averaged 2x2x2 (4 channels on
an ``(N/2)^3`` grid): the same field of view for a quarter of the first layers' work.

Checkpoints live in :mod:`latenttune.model.checkpoint`; the CPU convolution path in
:mod:`latenttune.model.onednn`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from latenttune.limits import MAX_OBJECT_GRID
from latenttune.model.crystal import PhysicalLayout, render_physical
from latenttune.model.onednn import Conv3d, convolve, cpu_layout
from latenttune.validation import check_bool, check_choice, check_int, is_integer

log = logging.getLogger(__name__)

__all__ = ["ModelConfig", "LatentAutoencoder", "normalise_intensity"]

_EPS = 1e-8


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`LatentAutoencoder`.

    Attributes
    ----------
    n : int
        Object grid size; the diffraction grid is ``N = 2 n``. Must be divisible by
        ``2 ** len(decoder_channels)`` and ``N`` by ``2 ** len(encoder_channels)``.
    latent_dim : int
        Dimension ``k`` of the latent vector ``z``.
    encoder_channels : tuple of int
        Channels of the encoder's conv stages; each stage halves the grid.
    decoder_channels : tuple of int
        Channels of the decoder's conv stages, coarsest first; each stage doubles the grid.
    hidden : int
        Width of the fully connected layers around the latent vector.
    physical : bool
        Prepend the 48 explicit physical parameters of :mod:`latenttune.model.crystal` to the learned
        latent; the learned decoder then draws a residual on the rendered crystal.
    encoder_stem : {"full", "two-scale"}
        The encoder's input: the whole ``N^3`` pattern, or its central ``(N/2)^3`` cube plus the whole
        pattern averaged over 2x2x2 voxels.
    cycle_encoder : bool
        Carry a second encoder of the same architecture, trained to invert the decoder (on patterns
        of decoded latents: :mod:`latenttune.model.cycle_training`). The tracker asks both encoders and
        keeps the prediction that fits the frame better (:mod:`latenttune.model.encoders`).
    """

    n: int = 32
    latent_dim: int = 8
    encoder_channels: tuple[int, ...] = (8, 16, 32, 64)
    decoder_channels: tuple[int, ...] = (64, 32, 16)
    hidden: int = 256
    physical: bool = False
    encoder_stem: str = "full"
    cycle_encoder: bool = False

    def __post_init__(self) -> None:
        check_int("n", self.n, low=1, high=MAX_OBJECT_GRID)  # a sane bound: a 1024^3 pattern is 4 GiB
        for name in ("latent_dim", "hidden"):
            check_int(name, getattr(self, name), low=1)
        for name in ("encoder_channels", "decoder_channels"):
            value = tuple(getattr(self, name))
            if not value or any(not is_integer(c) or c < 1 for c in value):
                raise ValueError(f"`{name}` must be a non-empty sequence of positive integers, got {value!r}")
            object.__setattr__(self, name, tuple(int(c) for c in value))
        object.__setattr__(self, "physical", check_bool("physical", self.physical))
        object.__setattr__(self, "cycle_encoder", check_bool("cycle_encoder", self.cycle_encoder))
        check_choice("encoder_stem", self.encoder_stem, ("full", "two-scale"))
        if self.physical and self.n < 8:
            raise ValueError(f"`n` must be >= 8 for a physical decoder, got {self.n}")
        if self.encoder_grid % (2 ** len(self.encoder_channels)):
            raise ValueError(
                f"`n` = {self.n}: the encoder's input grid {self.encoder_grid} (N = {self.N}, stem "
                f"{self.encoder_stem!r}) must be divisible by 2**len(encoder_channels) = {2 ** len(self.encoder_channels)}"
            )
        if self.n % (2 ** len(self.decoder_channels)):
            raise ValueError(
                f"`n` = {self.n} must be divisible by 2**len(decoder_channels) = {2 ** len(self.decoder_channels)}"
            )

    @property
    def N(self) -> int:
        """Diffraction grid size ``2 n``."""
        return 2 * self.n

    @property
    def encoder_grid(self) -> int:
        """Grid size of the encoder's first convolution (``N``, or ``N/2`` for the two-scale stem)."""
        return self.N if self.encoder_stem == "full" else self.N // 2

    @property
    def physical_dim(self) -> int:
        """Number of explicit physical parameters at the start of the latent (0 unless ``physical``)."""
        return PhysicalLayout.size if self.physical else 0

    @property
    def total_latent_dim(self) -> int:
        """Length of the latent vector: physical parameters plus the learned latent."""
        return self.physical_dim + self.latent_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (lists for tuples), for checkpoints and TOML files."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def normalise_intensity(intensity: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Encoder input: flux-independent amplitude channels ``(B, 2, N, N, N)``.

    ``a = sqrt(I) / rms(sqrt(I))`` over the measured voxels (0 where masked), then channels
    ``[log1p(a), measured]``. Scaling ``I`` by any positive factor leaves the output unchanged.

    Parameters
    ----------
    intensity : Tensor, shape (B, N, N, N)
        Non-negative counts.
    mask : bool Tensor, shape (N, N, N) or (B, N, N, N), optional
        True where a voxel was NOT measured.
    """
    measured = torch.ones_like(intensity) if mask is None else (~mask.bool()).to(intensity.dtype).expand_as(intensity)
    amplitude = intensity.clamp_min(0).sqrt() * measured
    count = measured.sum(dim=(-3, -2, -1), keepdim=True).clamp_min(1)
    rms = (amplitude.square().sum(dim=(-3, -2, -1), keepdim=True) / count).sqrt()
    a = amplitude / (rms + _EPS)
    return torch.stack([torch.log1p(a), measured], dim=1)


def _two_scale(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, N, N, N)`` -> ``(B, 2C, N/2, N/2, N/2)``: the central cube and the 2x2x2 average."""
    N = x.shape[-1]
    lo, hi = N // 4, N // 4 + N // 2
    return torch.cat([x[..., lo:hi, lo:hi, lo:hi], F.avg_pool3d(x, 2)], dim=1)


class _Encoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.two_scale = config.encoder_stem == "two-scale"
        self.physical_dim = config.physical_dim
        stages: list[nn.Module] = []
        c_in = 4 if self.two_scale else 2
        for c in config.encoder_channels:
            stages += [Conv3d(c_in, c, 3, padding=1), nn.GELU(), nn.MaxPool3d(2)]
            c_in = c
        self.features = nn.Sequential(*stages)
        side = config.encoder_grid // 2 ** len(config.encoder_channels)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side**3, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.total_latent_dim),
        )
        # Keeps every learned latent component at unit scale across the data before the tanh bound,
        # so the encoder can neither collapse onto one code nor saturate the tanh (where its gradient
        # dies). The physical parameters are supervised directly and need no such help.
        self.norm = nn.BatchNorm1d(config.latent_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 2, N, N, N) [-> two-scale (B, 4, N/2, N/2, N/2)] -> features (B, C, side^3)
        # -> pre-activation (B, P + k): physical part as is, learned part at unit scale
        if self.two_scale:
            x = _two_scale(x)
        h = self.head(self.features(cpu_layout(x)))
        if not self.physical_dim:
            return self.norm(h)
        return torch.cat([h[:, : self.physical_dim], self.norm(h[:, self.physical_dim :])], dim=1)


class _Decoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels = config.decoder_channels
        self.side = config.n // 2 ** len(channels)
        self.c0 = channels[0]
        self.head = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, self.c0 * self.side**3),
            nn.GELU(),
        )
        stages: list[nn.Module] = []
        c_in = self.c0
        for c in channels:
            stages += [
                Conv3d(c_in, c, 3, padding=1),
                nn.GELU(),
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
            ]
            c_in = c
        self.features = nn.Sequential(*stages)
        self.amplitude = Conv3d(c_in, 1, 3, padding=1)
        self.phasor = Conv3d(c_in, 2, 3, padding=1)
        self.layout = PhysicalLayout(config.n) if config.physical else None
        if self.layout is None:
            # start near an empty box (sigmoid(-3) = 0.05): objects fill a small part of it
            nn.init.constant_(self.amplitude.bias, -3.0)
        else:
            # residual heads start at zero: the model starts as the rendered crystal alone
            for head in (self.amplitude, self.phasor):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.layout is not None:
            return self._physical_forward(z)
        return self._learned_forward(z)

    def _heads(self, z: torch.Tensor) -> torch.Tensor:
        """The learned path: ``z`` (B, k) -> head outputs (B, 3, n, n, n)."""
        h = self.head(z).view(-1, self.c0, self.side, self.side, self.side)  # (B, C0, n/8, n/8, n/8)
        h = self.features(cpu_layout(h))  # (B, C_last, n, n, n)
        # Both heads in one convolution (output channels [amplitude, cos, sin]): one pass over the
        # largest feature map instead of two, about half the time of the separate heads on the CPU
        # (docs/results.md, "Throughput of the controller's hot path"; benchmarks/bench_latent_cost.py).
        # The heads keep their own parameters.
        weight = torch.cat([self.amplitude.weight, self.phasor.weight])
        bias = torch.cat([self.amplitude.bias, self.phasor.bias])
        return convolve(h, self.amplitude, weight, bias)  # (B, 3, n, n, n)

    def _learned_forward(self, z: torch.Tensor) -> torch.Tensor:
        heads = self._heads(z)
        amplitude = torch.sigmoid(heads[:, 0])  # (B, n, n, n) in (0, 1)
        cos_sin = heads[:, 1:]  # (B, 2, n, n, n)
        norm = cos_sin.square().sum(dim=1).add(_EPS).sqrt()  # (B, n, n, n)
        phasor = torch.complex(cos_sin[:, 0] / norm, cos_sin[:, 1] / norm)
        return amplitude * phasor  # (B, n, n, n) complex64

    def _physical_forward(self, z: torch.Tensor) -> torch.Tensor:
        assert self.layout is not None
        p = self.layout.size
        return self.with_learned(render_physical(z[:, :p], self.layout), z[:, p:])

    def with_learned(self, rendered: tuple[torch.Tensor, torch.Tensor], learned: torch.Tensor) -> torch.Tensor:
        """The density of a rendered explicit crystal and learned codes (a physics-structured decoder).

        Parameters
        ----------
        rendered : (Tensor, Tensor)
            Amplitude and phase of the explicit part, ``(B, n, n, n)`` or ``(1, n, n, n)`` (then
            shared by every learned code): :func:`latenttune.model.crystal.render_physical`.
        learned : Tensor, shape (B, k - layout.size)

        Returns
        -------
        Tensor, shape (B, n, n, n), complex64
            Equal to the decoder of the concatenated latents; rendering the explicit part once
            saves about half of each evaluation when only the learned part changes.
        """
        amplitude, cos, sin = self.learned_parts(rendered[0], learned)
        return torch.polar(amplitude, rendered[1]) * torch.complex(cos, sin)  # (B, n, n, n) complex64

    def learned_parts(self, rendered_amplitude: torch.Tensor, learned: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the learned codes make of a rendered crystal: the amplitude and the unit residual phasor.

        The density is ``amplitude * exp(i phase) * (cos + i sin)`` with the rendered phase
        (:meth:`with_learned`); returned apart so that a caller can score many codes against one
        rendered crystal in real arithmetic.

        Returns
        -------
        amplitude, cos, sin : Tensor, shape (B, n, n, n)
        """
        heads = self._heads(learned).float()  # residuals, zero at initialisation
        amplitude = (rendered_amplitude + torch.tanh(heads[:, 0])).clamp(0.0, 1.0)
        cos, sin = 1.0 + heads[:, 1], heads[:, 2]
        norm = (cos.square() + sin.square()).add(_EPS).sqrt()
        return amplitude, cos / norm, sin / norm


class LatentAutoencoder(nn.Module):
    """Encoder ``intensity -> z`` and decoder ``z -> density`` sharing one bounded latent box.

    Parameters
    ----------
    config : ModelConfig
        The architecture.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.encoder = _Encoder(self.config)
        self.decoder = _Decoder(self.config)
        # registered only when present, so checkpoints of single-encoder models load unchanged
        self.cycle_encoder = _Encoder(self.config) if self.config.cycle_encoder else None
        #: Where the tracker's read-back starts the learned part of the latent (its "neutral" code,
        #: calibrated for the model from cost values and stored in the checkpoint's metadata); None:
        #: the centre of the box.
        self.learned_start: np.ndarray | None = None

    @property
    def encoder_count(self) -> int:
        """How many encoders the model has: 1, or 2 with a cycle encoder (index 1)."""
        return 2 if self.cycle_encoder is not None else 1

    @property
    def latent_dim(self) -> int:
        """Latent dimension ``k``: the whole vector the controller tunes (physical + learned)."""
        return self.config.total_latent_dim

    @property
    def physical_layout(self) -> PhysicalLayout | None:
        """Layout of the physical parameters at the start of ``z`` (None for a learned-only model)."""
        return self.decoder.layout

    @property
    def latent_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper corners of the latent box (``-1`` and ``+1``, from the tanh bound)."""
        k = self.latent_dim
        return -np.ones(k), np.ones(k)

    # ---- checked public entry points -------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def check_intensity(self, intensity: Any, mask: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Measured patterns checked and put on the model's device: the one check of the model's inputs.

        Parameters
        ----------
        intensity : array or Tensor, shape (N, N, N) or (B, N, N, N)
            Measured counts (real), finite, non-negative on the measured voxels.
        mask : bool array or Tensor, shape (N, N, N) or (B, N, N, N), optional
            True where a voxel was NOT measured.

        Returns
        -------
        (Tensor, Tensor or None)
            float32 intensities ``(B, N, N, N)`` and the bool mask, on the model's device.

        Raises
        ------
        TypeError, ValueError
            A complex or non-numeric pattern, a wrong shape, a non-finite value, a negative count.
        """
        N = self.config.N
        x = torch.as_tensor(np.asarray(intensity) if not isinstance(intensity, torch.Tensor) else intensity)
        if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32)):
            raise TypeError(f"`intensity` must be a real array, got dtype {x.dtype}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (N, N, N):
            raise ValueError(
                f"`intensity` must have shape ({N}, {N}, {N}) or (B, {N}, {N}, {N}) for this model, got {tuple(x.shape)}"
            )
        x = x.to(device=self._device(), dtype=torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError("`intensity` must be finite everywhere (found NaN or inf)")
        m = None
        if mask is not None:
            m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).to(self._device())
            if tuple(m.shape[-3:]) != (N, N, N) or m.ndim not in (3, 4):
                raise ValueError(f"`mask` must have shape ({N}, {N}, {N}) or (B, {N}, {N}, {N}), got {tuple(m.shape)}")
            m = m.bool()
            if m.ndim == 4 and m.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"`mask` holds {m.shape[0]} patterns but `intensity` holds {x.shape[0]}")
        negative = x < 0  # a mask, not a gather of the measured voxels (a copy of the pattern)
        if m is not None:
            negative &= ~m
        if negative.any():
            raise ValueError("`intensity` must be non-negative on the measured voxels")
        return x, m

    def encode(self, intensity: Any, mask: Any = None, encoder: int = 0) -> torch.Tensor:
        """Latent vector of measured patterns.

        Parameters
        ----------
        intensity : array or Tensor, shape (N, N, N) or (B, N, N, N)
            Measured counts, any overall flux, peak at the centre.
        mask : bool array or Tensor, optional
            True where a voxel was NOT measured.
        encoder : int
            Which encoder predicts: 0 (the model's encoder) or, for a model with a cycle encoder, 1.

        Returns
        -------
        Tensor, shape (B, k)
            ``z`` inside the open box ``(-1, 1)^k``.
        """
        encoder = self.check_encoder(encoder)
        x, m = self.check_intensity(intensity, mask)
        return self.encode_tensor(x, m, encoder)

    def check_encoder(self, encoder: Any) -> int:
        """Check an encoder index (0, or 1 for a model with a cycle encoder) and return it as an int."""
        if not is_integer(encoder) or not 0 <= int(encoder) < self.encoder_count:
            raise ValueError(
                f"`encoder` must be an integer from 0 to {self.encoder_count - 1} for this model "
                f"({self.encoder_count} encoder{'s' if self.encoder_count > 1 else ''}), got {encoder!r}"
            )
        return int(encoder)

    def decode(self, z: Any) -> torch.Tensor:
        """Complex density of latent vectors.

        Parameters
        ----------
        z : array or Tensor, shape (k,) or (B, k)
            Latent vectors inside ``[-1, 1]^k``.

        Returns
        -------
        Tensor, shape (B, n, n, n), complex64
        """
        k = self.latent_dim
        z = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z)
        if z.is_complex():
            raise TypeError(f"`z` must be real, got dtype {z.dtype}")
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != k:
            raise ValueError(f"`z` must have shape ({k},) or (B, {k}), got {tuple(z.shape)}")
        z = z.to(device=self._device(), dtype=torch.float32)
        if not torch.isfinite(z).all():
            raise ValueError("`z` must be finite (found NaN or inf)")
        return self.decode_tensor(z)

    # ---- unchecked fast paths (training and the controller's hot loop) ----------------
    def encode_tensor(self, intensity: torch.Tensor, mask: torch.Tensor | None = None, encoder: int = 0) -> torch.Tensor:
        """Unchecked :meth:`encode` on a float32 tensor ``(B, N, N, N)`` already on the model's device."""
        network = self.encoder if encoder == 0 else self.cycle_encoder
        return torch.tanh(network(normalise_intensity(intensity, mask)))

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """Unchecked :meth:`decode` on a float32 tensor ``(B, k)`` already on the model's device."""
        return self.decoder(z)

    def forward(self, intensity: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode then decode: returns ``(z, density)``."""
        z = self.encode_tensor(intensity, mask)
        return z, self.decode_tensor(z)


# ---- checkpoints ----------------------------------------------------------------------
