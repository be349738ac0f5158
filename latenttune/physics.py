"""Forward model and data-fidelity costs (docs/conventions.md section 2).

The forward model itself (:func:`pad`, :func:`crop`, :func:`forward`) is written once, in
:mod:`sim.forward`, because the simulator needs it too and ``sim`` may not import
``latenttune`` (docs/conventions.md section 1); it is re-exported here so that users find the whole
physics in one place.

The costs compare a predicted intensity ``Ipred`` with a measured one ``Imeas`` (photon counts,
unknown overall flux) over the measured voxels only (``mask`` True = NOT measured):

* :func:`amplitude_misfit` (the default cost)
  ``C = sum(w (s sqrt(Ipred) - sqrt(Imeas))^2) / sum(w Imeas)`` with the optimal flux scale
  ``s = sum(w sqrt(Ipred Imeas)) / sum(w Ipred)``, ``w = ~mask``.
* :func:`poisson_llk`, the PyNX-form Poisson log-likelihood
  ``LLK = (2/M) [sum_{I>0} (I ln(I/Ic) + Ic - I) + sum_{I=0} Ic]``, ``Ic = s_p Ipred``
  with the maximum-likelihood flux scale ``s_p = sum(w I) / sum(w Ipred)``; about 1 at the
  Poisson noise level.

Both work on numpy arrays and torch tensors (returning the same kind), reduce over the last
three axes and broadcast over leading (batch) axes, so ``Ipred`` of shape ``(B, N, N, N)``
against one measured pattern ``(N, N, N)`` gives ``B`` costs. The torch path is differentiable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import xlogy as _np_xlogy

from sim.forward import crop, diffraction_size, fft_centred, forward, ifft_centred, is_torch, object_size, pad

__all__ = [
    "circular_centre_shifts",
    "free_poisson_llk",
    "pad",
    "crop",
    "forward",
    "fft_centred",
    "ifft_centred",
    "diffraction_size",
    "object_size",
    "measured_weight",
    "amplitude_misfit",
    "flux_scale",
    "poisson_llk",
    "COSTS",
]

_AXES = (-3, -2, -1)
_TINY = 1e-30


def _check_pair(predicted: Any, measured: Any, mask: Any) -> None:
    if tuple(predicted.shape[-3:]) != tuple(measured.shape[-3:]) or len(measured.shape) < 3:
        raise ValueError(
            "`predicted_intensity` and `measured_intensity` must end in the same (N, N, N) grid, "
            f"got {tuple(predicted.shape)} and {tuple(measured.shape)}"
        )
    if mask is not None and tuple(mask.shape[-3:]) != tuple(measured.shape[-3:]):
        raise ValueError(
            f"`mask` must end in the measured grid {tuple(measured.shape[-3:])}, got {tuple(mask.shape)}"
        )


def measured_weight(mask: Any, like: Any) -> Any:
    """Weight ``w = ~mask`` (1 where measured, 0 where excluded) in the dtype of ``like``.

    Parameters
    ----------
    mask : bool array or Tensor or None
        True marks voxels that were NOT measured. None means every voxel was measured.
    like : ndarray or Tensor
        Array whose kind, real dtype and device the weight takes.
    """
    if mask is None:
        return None
    if is_torch(like):
        m = mask if is_torch(mask) else torch.as_tensor(np.asarray(mask, dtype=bool))
        real_dtype = like.real.dtype if like.is_complex() else like.dtype
        return (~m.to(device=like.device, dtype=torch.bool)).to(real_dtype)
    return (~np.asarray(mask, dtype=bool)).astype(np.asarray(like).real.dtype)


def _sum3(x: Any) -> Any:
    if is_torch(x):
        return x.sum(dim=_AXES)
    return x.sum(axis=_AXES)


def _sqrt(x: Any) -> Any:
    if is_torch(x):
        # clamp keeps the gradient finite where the predicted intensity is exactly zero
        return x.clamp_min(_TINY).sqrt()
    return np.sqrt(np.maximum(x, 0))


def flux_scale(predicted_amplitude: Any, measured_amplitude: Any, *, axes: tuple[int, ...] = _AXES,
               eps: float = _TINY) -> Any:
    """The least-squares flux scale ``s = sum(p m) / (sum(p^2) + eps)`` (the ``s`` of the amplitude cost).

    The one place this factor is written: the amplitude cost, the latent cost, the physics stage,
    the metrics and the movies call it.

    Parameters
    ----------
    predicted_amplitude, measured_amplitude : ndarray or Tensor, shape (..., N, N, N)
        ``p = w sqrt(I_pred)`` and ``m = w sqrt(I_meas)``, already zero where not measured (``w``),
        or the measured voxels alone (then sum over ``axes=(-1,)``).
    axes : tuple of int
        The axes summed over (default the grid's three).
    eps : float
        Added to the denominator (0 predicted gives 0).

    Returns
    -------
    ndarray or Tensor
        One factor per pattern (the leading axes).
    """
    def total(x: Any) -> Any:
        return x.sum(dim=axes) if is_torch(x) else x.sum(axis=axes)

    return total(predicted_amplitude * measured_amplitude) / (total(predicted_amplitude * predicted_amplitude) + eps)


def amplitude_misfit(predicted_intensity: Any, measured_intensity: Any, mask: Any = None, *, scale: bool = True) -> Any:
    """Amplitude misfit with the optimal flux scale over the measured voxels.

    ``C = sum(w (s sqrt(Ipred) - sqrt(Imeas))^2) / sum(w Imeas)`` with
    ``s = sum(w sqrt(Ipred Imeas)) / sum(w Ipred)`` and ``w = ~mask``.
    ``C`` lies in ``[0, 1]``: 0 for a perfect match up to flux, 1 for no overlap.

    Parameters
    ----------
    predicted_intensity : ndarray or Tensor, shape (..., N, N, N)
        Model intensity, e.g. :func:`forward` of a density.
    measured_intensity : ndarray or Tensor, shape (..., N, N, N)
        Measured counts (any overall flux). Broadcasts against the prediction.
    mask : bool array or Tensor, optional
        True where a voxel was NOT measured; those voxels never enter the cost.
    scale : bool
        Fit the flux scale ``s`` (default); ``scale=False`` uses ``s = 1``.

    Returns
    -------
    ndarray or Tensor
        The cost, shape of the broadcast leading axes (a 0-d value for single patterns).
    """
    _check_pair(predicted_intensity, measured_intensity, mask)
    w = measured_weight(mask, predicted_intensity)
    amp_pred = _sqrt(predicted_intensity)
    amp_meas = _sqrt(measured_intensity)
    if w is not None:
        amp_pred = amp_pred * w
        amp_meas = amp_meas * w
    meas_power = _sum3(amp_meas * amp_meas)
    if scale:
        s = flux_scale(amp_pred, amp_meas)
        s = s[..., None, None, None] if is_torch(amp_pred) else np.asarray(s)[..., None, None, None]
    else:
        s = 1.0
    residual = s * amp_pred - amp_meas
    return _sum3(residual * residual) / (meas_power + _TINY)


def poisson_llk(predicted_intensity: Any, measured_intensity: Any, mask: Any = None, *, scale: bool = True) -> Any:
    """Poisson log-likelihood in the PyNX form, about 1 at the noise level.

    ``LLK = (2/M) [sum_{I>0} (I ln(I/Ic) + Ic - I) + sum_{I=0} Ic]`` over the ``M`` measured
    voxels, with ``Ic = s_p Ipred`` and the maximum-likelihood flux scale
    ``s_p = sum(w I) / sum(w Ipred)``.

    Parameters
    ----------
    predicted_intensity, measured_intensity, mask
        As in :func:`amplitude_misfit`; ``measured_intensity`` should be photon counts.
    scale : bool
        Fit the flux scale ``s_p`` (default); ``scale=False`` uses ``s_p = 1``.

    Returns
    -------
    ndarray or Tensor
        The LLK per pattern.
    """
    _check_pair(predicted_intensity, measured_intensity, mask)
    torch_path = is_torch(predicted_intensity)
    w = measured_weight(mask, predicted_intensity)
    I_pred, I_meas = predicted_intensity, measured_intensity
    if w is not None:
        I_pred, I_meas = I_pred * w, I_meas * w
        count = _sum3(w)
    else:
        count = float(np.prod(tuple(predicted_intensity.shape[-3:])))
    if scale:
        flux = _sum3(I_meas) / (_sum3(I_pred) + _TINY)
        flux = flux[..., None, None, None] if torch_path else np.asarray(flux)[..., None, None, None]
    else:
        flux = 1.0
    if torch_path:
        I_calc = (flux * I_pred).clamp_min(_TINY)
        terms = torch.xlogy(I_meas, I_meas) - torch.xlogy(I_meas, I_calc) + I_calc - I_meas
    else:
        I_calc = flux * I_pred  # no clamp: a zero prediction under counts gives an honest inf
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = _np_xlogy(I_meas, I_meas) - _np_xlogy(I_meas, I_calc) + I_calc - I_meas
    if w is not None:
        terms = terms * w
    return 2.0 * _sum3(terms) / count


def free_poisson_llk(predicted_intensity: np.ndarray, measured_intensity: np.ndarray, unmeasured: np.ndarray,
                     held_out: np.ndarray) -> float:
    """Free log-likelihood: :func:`poisson_llk` on the held-out voxels, as PyNX computes its free LLK.

    The flux scale is fitted on the voxels that took part in the fit (measured, not held out) and
    applied unchanged to the held-out ones, whose Poisson LLK (about 1 at the noise level) is
    returned: a fit that explains its own voxels but not the held-out ones (over-fitting the
    noise, or a wrong start) scores worse here than on all voxels.

    Parameters
    ----------
    predicted_intensity, measured_intensity : ndarray, (N, N, N)
    unmeasured, held_out : bool ndarray, (N, N, N)
        True = not measured; True = held out of the fit.
    """
    predicted = np.asarray(predicted_intensity, dtype=np.float64)
    measured = np.asarray(measured_intensity, dtype=np.float64)
    fitted = ~np.asarray(unmeasured, dtype=bool) & ~np.asarray(held_out, dtype=bool)
    free = np.asarray(held_out, dtype=bool) & ~np.asarray(unmeasured, dtype=bool)
    if not free.any():
        return float("nan")
    flux = measured[fitted].sum() / max(predicted[fitted].sum(), _TINY)
    return float(poisson_llk((flux * predicted).astype(np.float32), measured.astype(np.float32), ~free, scale=False))


COSTS = {"amplitude": amplitude_misfit, "poisson": poisson_llk}
"""Cost functions by name, for configuration files and the CLI."""


def circular_centre_shifts(density: np.ndarray) -> list[int]:
    """Whole-voxel shifts (``np.roll``) that bring the circular centroid of ``|density|`` to index ``n // 2``.

    The centroid is taken on the ring of indices of each axis (the angle of ``sum w exp(2 pi i k / n)``),
    so an object that crosses the grid's edge is centred as well as one inside it.
    """
    weight = np.abs(np.asarray(density))
    shifts = []
    for axis in range(weight.ndim):
        size = weight.shape[axis]
        profile = weight.sum(axis=tuple(a for a in range(weight.ndim) if a != axis))
        phase = np.angle(np.sum(profile * np.exp(2j * np.pi * np.arange(size) / size)))
        shifts.append(int(round(size // 2 - (phase * size / (2 * np.pi)) % size)))
    return shifts
