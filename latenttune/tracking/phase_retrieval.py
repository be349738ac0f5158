"""Phase retrieval on the voxels: RAAR and ER with shrink-wrap, guided by a decoded density.

The kernels of the physics stage (:mod:`latenttune.tracking.physics_stage`), which decides what to
start from and whether to keep the result. Everything runs in torch on the model's device:

* **scheme**: RAAR (relaxed averaged alternating reflections, Luke 2005) with shrink-wrap, finished
  by a few error-reduction (ER) iterations: stable on noisy data, unlike long HIO runs, which drift
  away from the solution;
* **guide**: the decoded density gives the support at the start (``> support_threshold`` of its
  maximum, dilated by ``guide_dilation`` voxels, joined to the shrink-wrap support of a warm
  start) and, with weight ``guide_weight``, a pull of the iterate towards it inside the support;
* **conventions**: the iterate lives on the ``N^3`` diffraction grid, confined to the central
  ``n^3`` box (the object grid, oversampling 2); masked and held-out voxels are unconstrained;
  densities go in and come out on the guide's scale (the flux scale is fitted per call).

:class:`Measurement` holds a frame's amplitudes and constraint on the device, prepared once per
frame and shared by every start the physics stage tries; :func:`retrieve` trusts its inputs;
:func:`refine_density` is the checked public entry point for one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from latenttune.physics import crop, fft_centred, flux_scale, pad
from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.validation import check_int

__all__ = ["Measurement", "refine_density", "retrieve"]

_EPS = 1e-12


@dataclass(frozen=True, eq=False)
class Measurement:
    """A frame's measured amplitudes and constraint on the device, prepared once.

    Attributes
    ----------
    amplitude : Tensor, shape (N, N, N), float32
        ``sqrt(counts)`` on the constrained voxels, 0 elsewhere.
    constrained : Tensor of bool, shape (N, N, N)
        Voxels the modulus constraint applies to: measured and not held out.
    unmeasured : Tensor of bool or None
        Voxels the detector did not measure (the guide's amplitudes may stand in for them there).
    """

    amplitude: torch.Tensor
    constrained: torch.Tensor
    unmeasured: torch.Tensor | None = None
    """Voxels the detector did not measure (held-out ones excluded), or None when there are none."""

    @classmethod
    def prepare(cls, counts: np.ndarray, unmeasured: np.ndarray, held_out: np.ndarray | None,
                device: torch.device) -> Measurement:
        """From checked float32 counts and bool masks (``held_out`` is left out of the constraint too)."""
        free = unmeasured if held_out is None else unmeasured | held_out
        amplitude = np.sqrt(np.where(free, 0.0, counts.clip(min=0))).astype(np.float32)
        fillable = unmeasured if held_out is None else unmeasured & ~held_out
        return cls(torch.from_numpy(amplitude).to(device), torch.from_numpy(~free).to(device),
                   torch.from_numpy(fillable).to(device) if fillable.any() else None)

    @property
    def n(self) -> int:
        """Object grid size (half the diffraction grid)."""
        return self.amplitude.shape[-1] // 2


class _Blur:
    """Gaussian blur of ``N^3`` real arrays by FFT (periodic), cached per grid, sigma and device."""

    def __init__(self) -> None:
        self._kernels: dict[tuple[int, float, Any], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        N = x.shape[-1]
        key = (N, float(sigma), x.device)
        if key not in self._kernels:
            f = torch.fft.fftfreq(N, device=x.device, dtype=torch.float32)
            g = torch.exp(-2 * (math.pi * sigma * f) ** 2)
            self._kernels[key] = g[:, None, None] * g[None, :, None] * g[None, None, :]
        return torch.fft.ifftn(torch.fft.fftn(x) * self._kernels[key]).real


_blur = _Blur()


def _dilate(support: torch.Tensor, voxels: int) -> torch.Tensor:
    """``support`` grown by ``voxels`` along every axis (a cube of side ``2 voxels + 1``; nothing wraps).

    The cube is separable: shifted ORs along each axis in turn, in numpy on the CPU (a 3-D max pool of
    the same cube on a float copy, as on other devices, takes some 40 times as long there on 64^3).
    """
    if voxels <= 0:
        return support
    if support.device.type != "cpu":
        x = torch.nn.functional.max_pool3d(support.float()[None, None], 2 * voxels + 1, stride=1, padding=voxels)
        return x[0, 0] > 0.5
    grown = support.numpy()
    for axis in range(3):
        source, grown = grown, grown.copy()
        size = source.shape[axis]
        for shift in range(1, min(voxels, size - 1) + 1):
            later = (slice(None),) * axis + (slice(shift, None),)
            earlier = (slice(None),) * axis + (slice(None, size - shift),)
            grown[later] |= source[earlier]
            grown[earlier] |= source[later]
    return torch.from_numpy(grown)


def _threshold_support(amplitude: torch.Tensor, threshold: float) -> torch.Tensor:
    return amplitude > threshold * amplitude.max()


def retrieve(guide: np.ndarray, measurement: Measurement, settings: PhysicsSettings, *,
             start: np.ndarray | None = None, iterations: int | None = None, guide_weight: float = 0.0,
             fill: bool = False) -> np.ndarray:
    """Phase retrieval from checked inputs (see :func:`refine_density` for the arguments).

    ``guide_weight`` is the pull towards the guide per iteration (:func:`refine_density` takes it
    from the settings); ``fill`` gives the unmeasured voxels the guide's amplitudes (scaled to the
    data) instead of leaving them free.

    Returns
    -------
    ndarray, shape (n, n, n), complex64
        The refined density, on the guide's scale.
    """
    device, n = measurement.amplitude.device, measurement.n
    guide_t = torch.from_numpy(pad(guide.astype(np.complex64))).to(device)
    x = guide_t if start is None else torch.from_numpy(pad(start.astype(np.complex64))).to(device)
    scale = _flux_scale(x, measurement)
    x = x * scale
    # the guide on its own flux scale (what its amplitudes and a pull towards it must match)
    guide_t = guide_t * (scale if start is None or (guide_weight == 0 and not fill) else _flux_scale(guide_t, measurement))
    # the guide's global phase is invisible to the data: align it to the iterate before any pull
    overlap = (guide_t.conj() * x).sum()
    guide_t = guide_t * (overlap / (overlap.abs() + _EPS))
    box = torch.from_numpy(pad(np.ones((n, n, n), dtype=bool))).to(device)
    support = _dilate(_threshold_support(guide_t.abs(), settings.support_threshold), settings.guide_dilation)
    if start is not None:
        support |= _threshold_support(_blur(x.abs(), settings.shrinkwrap_sigma), settings.support_threshold)
    support &= box
    if iterations is None:
        iterations = settings.iterations if start is not None else settings.cold_iterations
    amplitude, constrained = measurement.amplitude, measurement.constrained
    if fill and measurement.unmeasured is not None:  # the prior's amplitudes where nothing was measured
        filled = fft_centred(guide_t).abs()
        amplitude = torch.where(measurement.unmeasured, filled, amplitude)
        constrained = constrained | measurement.unmeasured
    x = _iterate(x, guide_t, amplitude, constrained, support, box, settings, iterations, guide_weight)
    return (crop(x.cpu().numpy()) / scale).astype(np.complex64)


def refine_density(
    guide: Any,
    intensity: Any,
    mask: Any = None,
    settings: PhysicsSettings | None = None,
    *,
    start: Any = None,
    held_out: Any = None,
    iterations: int | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """RAAR + ER with shrink-wrap on one frame, guided by ``guide``, from ``start`` (default: the guide).

    Parameters
    ----------
    guide : array_like, shape (n, n, n), complex
        The decoded density: the first support and the pull target.
    intensity : array_like, shape (2n, 2n, 2n)
        Measured counts, ``q = 0`` at index ``N // 2``.
    mask : bool array_like, shape (2n, 2n, 2n), optional
        True where a voxel was NOT measured (left free).
    settings : PhysicsSettings, optional
    start : array_like, shape (n, n, n), complex, optional
        Warm start (e.g. the previous frame's output), on the guide's scale: ``settings.iterations``
        iterations; without it, ``settings.cold_iterations`` from the guide.
    held_out : bool array_like, shape (2n, 2n, 2n), optional
        Measured voxels to leave out of the modulus constraint (see :meth:`PhysicsStage.held_out`).
    iterations : int, optional
        Overrides the count the settings give (``iterations`` with a start, ``cold_iterations``
        without); the last ``settings.er_iterations`` are ER either way.
    device : str or torch.device
        Where to iterate.

    Returns
    -------
    ndarray, shape (n, n, n), complex64
        The refined density, on the guide's scale.
    """
    settings = PhysicsSettings() if settings is None else settings
    if not isinstance(settings, PhysicsSettings):
        raise TypeError(f"`settings` must be a PhysicsSettings, got {type(settings).__name__}")
    g = np.asarray(guide)
    if g.ndim != 3 or len(set(g.shape)) != 1 or not np.iscomplexobj(g) and not np.isrealobj(g):
        raise ValueError(f"`guide` must be a cubic 3-D array (n, n, n), got shape {g.shape}")
    n = g.shape[0]
    counts = np.asarray(intensity, dtype=np.float32)
    if counts.shape != (2 * n,) * 3:
        raise ValueError(f"`intensity` must have shape {(2 * n,) * 3} for a density of size {n}, got {counts.shape}")
    unmeasured = np.zeros(counts.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if unmeasured.shape != counts.shape:
        raise ValueError(f"`mask` must have shape {counts.shape}, got {unmeasured.shape}")
    if not np.all(np.isfinite(counts[~unmeasured])) or float(counts[~unmeasured].clip(min=0).sum()) <= 0:
        raise ValueError("`intensity` must be finite with counts on the measured voxels")
    if not np.isfinite(g).all() or float(np.abs(g).max()) <= 0:
        raise ValueError("`guide` must be finite and not all zero")
    if start is not None:
        start = np.asarray(start)
        if start.shape != g.shape or not np.isfinite(start).all() or float(np.abs(start).max()) <= 0:
            raise ValueError(f"`start` must be a finite, non-zero array of shape {g.shape}")
    held = None
    if held_out is not None:
        held = np.asarray(held_out, dtype=bool)
        if held.shape != counts.shape:
            raise ValueError(f"`held_out` must have shape {counts.shape}, got {held.shape}")
    if iterations is not None:
        iterations = check_int("iterations", iterations, low=max(1, settings.er_iterations))
    measurement = Measurement.prepare(counts, unmeasured, held, torch.device(device))
    weight = 0.0 if settings.guide_weight is None else settings.guide_weight
    return retrieve(g, measurement, settings, start=start, iterations=iterations, guide_weight=weight)


def _shift(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifftshift(x, dim=(-3, -2, -1))


def _unshift(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(x, dim=(-3, -2, -1))


def _iterate(x: torch.Tensor, guide: torch.Tensor, A: torch.Tensor, constrained: torch.Tensor, support: torch.Tensor,
             box: torch.Tensor, settings: PhysicsSettings, iterations: int, guide_weight: float = 0.0) -> torch.Tensor:
    """``iterations`` of RAAR then ER with shrink-wrap; returns the iterate on the support (centred grid).

    Everything lives in the FFT's own (uncentred) layout during the loop: the data, the masks and the
    iterate are shifted once before and once after, not twice per FFT as :func:`fft_centred` does
    (its shifts cost more than the FFTs on 64^3). The Gaussian blur of shrink-wrap is periodic and
    the threshold is relative to the maximum, so both commute with the shift. The modulus step
    multiplies by a real ratio instead of a complex ``where``, and every update works in place on
    buffers allocated once (fresh 2-4 MB tensors cost page faults on every operation; torch's complex
    ``abs`` is replaced by numpy's on the CPU). Together they more than halve the time of the plain
    centred loop on the CPU, with the same iterates to float rounding (tests/test_physics_stage.py compares
    the two); the hybrid tracker's time per frame, mostly this loop, is in
    ``benchmarks/results/tracking_seed7.md`` (``benchmarks/bench_tracking.py``).
    """
    # _shift returns new tensors, so x can be updated in place below without touching the caller's
    x, guide, A, constrained, support, box = (_shift(t) for t in (x, guide, A, constrained, support, box))
    beta, w = settings.beta, guide_weight
    raar = iterations - settings.er_iterations
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    # modulus step as ratio = A_c / (|F| + eps) + free: A / (|F| + eps) where constrained, 1 where free
    A_constrained = torch.where(constrained, A, torch.zeros((), dtype=A.dtype, device=A.device))
    free = (~constrained).to(A.dtype)
    F, projected, magnitude = torch.empty_like(x), torch.empty_like(x), torch.empty_like(A)
    a, b, pull = _update_maps(support, guide, beta, w, er=raar <= 0)
    for i in range(iterations):
        if i == raar and i > 0:  # RAAR -> ER
            a, b, pull = _update_maps(support, guide, beta, w, er=True)
        torch.fft.fftn(x, norm="ortho", out=F)
        _abs_into(F, magnitude)
        magnitude.add_(_EPS)
        torch.div(A_constrained, magnitude, out=magnitude).add_(free)
        F.mul_(magnitude)
        torch.fft.ifftn(F, norm="ortho", out=projected)
        x.mul_(b).add_(projected.mul_(a))  # x <- a P + b x (+ pull): see _update_maps
        if pull is not None:
            x.add_(pull)
        if settings.shrinkwrap_every and (i + 1) % settings.shrinkwrap_every == 0 and i + 1 < iterations:
            support = _threshold_support(_blur(x.abs(), settings.shrinkwrap_sigma), settings.support_threshold) & box
            a, b, pull = _update_maps(support, guide, beta, w, er=i + 1 >= raar)
    return _unshift(torch.where(support, x, zero))


def _update_maps(support: torch.Tensor, guide: torch.Tensor, beta: float, guide_weight: float,
                 er: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One RAAR or ER update with the guide pull, as ``x <- a P + b x + pull`` (``P``: modulus projection).

    RAAR keeps ``P`` on the support and takes ``beta x + (1 - 2 beta) P`` outside; ER keeps ``P`` on
    the support and 0 outside; the pull then mixes ``(1 - w) y + w g`` on the support. Written as
    real maps ``a`` and ``b`` so that each iteration is a few in-place operations.
    """
    real = torch.float64 if guide.dtype == torch.complex128 else torch.float32
    inside = support.to(real)
    outside_a = 0.0 if er else 1 - 2 * beta
    a = inside * ((1 - guide_weight) - outside_a) + outside_a
    b = (1 - inside) * (0.0 if er else beta)
    pull = guide * (guide_weight * inside) if guide_weight > 0 else None
    return a, b, pull


def _abs_into(z: torch.Tensor, out: torch.Tensor) -> None:
    """``out[...] = |z|``; numpy's complex abs on the CPU (much faster than torch's there)."""
    if z.device.type == "cpu":
        np.abs(z.numpy(), out=out.numpy())
    else:
        torch.abs(z, out=out)


def _flux_scale(x: torch.Tensor, measurement: Measurement) -> float:
    """Factor that brings ``|F x|`` to the measured amplitudes on the constrained voxels (least squares)."""
    F, constrained = fft_centred(x).abs(), measurement.constrained
    measured = _masked(measurement.amplitude, constrained)
    return float(flux_scale(_masked(F, constrained), measured, axes=(-1,), eps=_EPS))


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x[mask]``; by numpy on the CPU (the same values in the same order, many times faster than torch's
    boolean indexing there)."""
    if x.device.type == "cpu":
        return torch.from_numpy(x.numpy()[mask.numpy()])
    return x[mask]
