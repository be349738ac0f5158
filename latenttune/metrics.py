"""Figures of merit for CDI reconstructions (docs/conventions.md sections 2 and 3).

Reciprocal space (compare a predicted with a measured intensity):

* :func:`amplitude_error` -- ``E_q = sum((s|F| - A)^2) / sum(A^2)``, with
  ``|F| = sqrt(I_pred)``, ``A = sqrt(I_meas)`` and the optimal flux scale ``s``.
  With ``scale=True`` this *is* the project's default cost of docs/conventions.md section 2
  (``sum(A^2) == sum(I_meas)``); with ``scale=False`` it is the error that cohere
  reports. :func:`chi` is its square root.
* :func:`r_factor` -- ``R = sum(|s|F| - A|) / sum(A)``.
* :func:`poisson_llk` -- Poisson log-likelihood in the PyNX form, about 1 at the
  Poisson noise level.

Real space (compare a reconstruction with a reference density):

* :func:`real_space_error` -- the headline accuracy figure ``E_r``, minimised over
  the ambiguities the intensity cannot see (global phase and scale, translation,
  twin); returns the alignment too (:class:`AlignmentResult`).
* :func:`phase_rms` -- RMS phase error inside the reference support after
  alignment.
* :func:`real_space_errors` -- :func:`real_space_error` over a leading axis.

Everything works in numpy with float64/complex128 accumulation. Torch tensors are
accepted and converted (``np.asarray(x.detach().cpu())``). The reciprocal-space
formulas are those of :mod:`latenttune.physics` (written once there); this module
validates and coerces the inputs to float64 and reports. A ``mask`` is boolean (or integer, nonzero = True) with
**True = voxel not measured**, excluded from every sum.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft

from latenttune.physics import amplitude_misfit, flux_scale
from latenttune.physics import poisson_llk as _poisson_llk
from latenttune.validation import check_int, check_number
from sim.forward import is_torch

__all__ = [
    "AlignmentResult",
    "amplitude_error",
    "chi",
    "r_factor",
    "poisson_llk",
    "real_space_error",
    "real_space_errors",
    "phase_rms",
]

logger = logging.getLogger(__name__)

_AXES = (-3, -2, -1)


# --------------------------------------------------------------------------- helpers


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array (torch tensors are detached and moved to CPU)."""
    if is_torch(x):
        x = x.detach().cpu()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"`{name}` must be array-like, got {type(x).__name__}") from exc


def _scalar_or_array(values: np.ndarray) -> float | np.ndarray:
    """A Python float for a single pattern (0-d), else the float64 array."""
    if values.ndim == 0:
        return float(values)
    return values


def _prepare_intensities(
    predicted_intensity: Any, measured_intensity: Any, mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and coerce a (predicted, measured, mask) triple.

    Returns float64 ``Ip``, ``Im`` of shape ``(..., a, b, c)`` with masked voxels set
    to 0 (so garbage there never propagates) and the boolean ``keep`` array of the
    same shape (True = voxel enters the sums).
    """
    Ip = _to_numpy(predicted_intensity, "predicted_intensity")
    Im = _to_numpy(measured_intensity, "measured_intensity")
    for name, a in (("predicted_intensity", Ip), ("measured_intensity", Im)):
        if a.ndim < 3:
            raise ValueError(
                f"`{name}` must have at least 3 dimensions (..., N, N, N), got shape {a.shape}"
            )
        if a.dtype.kind not in "biuf":
            raise TypeError(f"`{name}` must be a real array, got dtype {a.dtype}")
    if Ip.shape != Im.shape:
        raise ValueError(
            "`predicted_intensity` and `measured_intensity` must have the same shape, "
            f"got {Ip.shape} and {Im.shape}"
        )
    if mask is None:
        keep = np.ones(Im.shape, dtype=bool)
    else:
        m = _to_numpy(mask, "mask")
        if m.dtype.kind not in "biu":
            raise TypeError(
                "`mask` must be a boolean (or integer, nonzero = excluded) array, "
                f"got dtype {m.dtype}"
            )
        if m.shape != Im.shape and m.shape != Im.shape[-3:]:
            raise ValueError(
                f"`mask` must have shape {Im.shape[-3:]} or {Im.shape}, got {m.shape}"
            )
        keep = np.broadcast_to(m == 0, Im.shape)
    Ip = np.where(keep, Ip.astype(np.float64, copy=False), 0.0)
    Im = np.where(keep, Im.astype(np.float64, copy=False), 0.0)
    for name, a in (("predicted_intensity", Ip), ("measured_intensity", Im)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite in unmasked voxels")
        if np.any(a < 0):
            raise ValueError(f"`{name}` must be >= 0 in unmasked voxels")
    if np.any(keep.sum(axis=_AXES) == 0):
        raise ValueError("`mask` must leave at least one voxel unmasked in every pattern")
    return Ip, Im, keep


def _amplitude_scale(F: np.ndarray, A: np.ndarray, scale: bool) -> np.ndarray:
    """Least-squares flux scale per pattern (:func:`latenttune.physics.flux_scale`; 0 if no prediction)."""
    return np.asarray(flux_scale(F, A)) if scale else np.ones(F.shape[:-3])


# ---------------------------------------------------------------- reciprocal space


def amplitude_error(
    predicted_intensity: Any,
    measured_intensity: Any,
    mask: Any = None,
    *,
    scale: bool = True,
) -> float | np.ndarray:
    """Amplitude error ``E_q = sum((s|F| - A)^2) / sum(A^2)`` over unmasked voxels.

    ``|F| = sqrt(predicted_intensity)``, ``A = sqrt(measured_intensity)``. With
    ``scale=True`` the flux scale is the least-squares optimum
    ``s = sum(sqrt(I_pred I_meas)) / sum(I_pred)``, and since ``sum(A^2) =
    sum(I_meas)`` the value equals the default cost ``C`` of docs/conventions.md section 2.
    With ``scale=False``, ``s = 1`` (the error cohere reports).

    Parameters
    ----------
    predicted_intensity, measured_intensity : array_like
        Non-negative intensities of the same shape ``(..., N, N, N)``; leading axes
        are a batch. Values in masked voxels are ignored (may be anything).
    mask : array_like of bool, optional
        True = voxel not measured (excluded). Shape ``(N, N, N)`` (shared by the
        batch) or the full shape.
    scale : bool, default True
        Fit the unknown flux scale ``s``.

    Returns
    -------
    float or ndarray
        ``E_q`` in ``[0, inf)`` (at most 1 with ``scale=True``); a float for a single
        pattern, an array over the leading axes for a batch.

    Raises
    ------
    ValueError
        Shape mismatch, negative or non-finite unmasked values, everything masked,
        or no measured signal in the unmasked voxels.
    """
    Ip, Im, keep = _prepare_intensities(predicted_intensity, measured_intensity, mask)
    norm = np.sum(Im, axis=_AXES)
    if np.any(norm <= 0):
        raise ValueError("`measured_intensity` must have some signal (sum > 0) in unmasked voxels")
    return _scalar_or_array(np.asarray(amplitude_misfit(Ip, Im, ~keep, scale=scale)))


def chi(
    predicted_intensity: Any,
    measured_intensity: Any,
    mask: Any = None,
    *,
    scale: bool = True,
) -> float | np.ndarray:
    """``chi = sqrt(E_q)``, the square root of :func:`amplitude_error` (same arguments)."""
    E = amplitude_error(predicted_intensity, measured_intensity, mask, scale=scale)
    return math.sqrt(E) if isinstance(E, float) else np.sqrt(E)


def r_factor(
    predicted_intensity: Any,
    measured_intensity: Any,
    mask: Any = None,
    *,
    scale: bool = True,
) -> float | np.ndarray:
    """Crystallographic R-factor ``R = sum(|s|F| - A|) / sum(A)`` over unmasked voxels.

    The scale ``s`` is the same least-squares amplitude scale as in
    :func:`amplitude_error` (not the L1 optimum); ``s = 1`` when ``scale=False``.
    Arguments, return value and errors as for :func:`amplitude_error`.
    """
    Ip, Im, _ = _prepare_intensities(predicted_intensity, measured_intensity, mask)
    F, A = np.sqrt(Ip), np.sqrt(Im)
    norm = np.sum(A, axis=_AXES)
    if np.any(norm <= 0):
        raise ValueError("`measured_intensity` must have some signal (sum > 0) in unmasked voxels")
    s = _amplitude_scale(F, A, scale)[..., None, None, None]
    R = np.sum(np.abs(s * F - A), axis=_AXES) / norm
    return _scalar_or_array(R)


def poisson_llk(
    predicted_intensity: Any,
    measured_intensity: Any,
    mask: Any = None,
    *,
    scale: bool = True,
) -> float | np.ndarray:
    """Poisson log-likelihood (PyNX form), about 1 at the Poisson noise level.

    ``LLK = (2/M) [sum_{I>0} (I ln(I/Ic) + Ic - I) + sum_{I=0} Ic]``, i.e. the
    Poisson deviance per voxel, where ``I`` are the measured counts, ``M`` the
    number of unmasked voxels and ``Ic = s_p I_pred`` the scaled prediction with
    the Poisson maximum-likelihood flux scale ``s_p = sum(I) / sum(I_pred)``
    (``s_p = 1`` when ``scale=False``). For counts drawn from ``Ic`` the expected
    value is ``1 + O(1/Ic)`` per voxel (about 1.02 at 10 counts); very low counts
    (<~ 1 per voxel) give a smaller expectation.

    Parameters
    ----------
    predicted_intensity, measured_intensity : array_like
        As in :func:`amplitude_error`; ``measured_intensity`` holds photon counts.
    mask : array_like of bool, optional
        True = voxel not measured (excluded).
    scale : bool, default True
        Fit the unknown flux scale.

    Returns
    -------
    float or ndarray
        ``LLK >= 0``; ``inf`` if the prediction is 0 where counts were measured.

    Raises
    ------
    ValueError
        As for :func:`amplitude_error`, and when ``scale=True`` but the prediction is
        zero over the unmasked voxels.
    """
    Ip, Im, keep = _prepare_intensities(predicted_intensity, measured_intensity, mask)
    if scale and np.any(np.sum(Ip, axis=_AXES) <= 0):
        raise ValueError(
            "`predicted_intensity` must have some signal (sum > 0) in unmasked voxels "
            "to fit the flux scale"
        )
    llk = np.asarray(_poisson_llk(Ip, Im, ~keep, scale=scale))
    return _scalar_or_array(np.maximum(llk, 0.0))


# ----------------------------------------------------------------------- real space


@dataclass(frozen=True, eq=False)
class AlignmentResult:
    """Outcome of :func:`real_space_error`.

    Attributes
    ----------
    error : float
        ``E_r = ||d0 - gamma S_t c|| / ||d0||`` in ``[0, 1]``, with ``c`` the estimate
        or its twin.
    shift : tuple of float
        ``t`` in voxels along the three axes: the estimate (or its twin) was moved by
        ``+t``, ``(S_t c)(r) = c(r - t)``.
    gamma : complex
        Least-squares complex factor (global phase and scale).
    twin : bool
        Whether the twin ``conj(flip(estimate))`` matched better and was used.
    aligned : ndarray
        ``gamma S_t c`` on the reference grid, complex64, read-only. Content moved
        outside the grid by the shift is dropped (it still counts in ``error``).
    """

    error: float
    shift: tuple[float, float, float]
    gamma: complex
    twin: bool
    aligned: np.ndarray


def _prepare_object(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 3:
        raise ValueError(f"`{name}` must be a 3-D array (n, n, n), got shape {a.shape}")
    if a.dtype.kind not in "biufc":
        raise TypeError(f"`{name}` must be a numeric array, got dtype {a.dtype}")
    a = a.astype(np.complex128, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite")
    if not np.any(a):
        raise ValueError(f"`{name}` must not be zero everywhere (its norm is 0)")
    return a


def _freqs(M: tuple[int, ...]) -> list[np.ndarray]:
    """Signed frequencies (cycles per voxel) of an ``M`` grid, one vector per axis."""
    return [sfft.fftfreq(m) for m in M]


def _phase_ramp(freqs: list[np.ndarray], t: np.ndarray) -> np.ndarray:
    """Separable ``exp(-2 pi i f.t)`` on the full grid (Fourier shift by ``+t``)."""
    e = [np.exp(-2j * np.pi * f * ti) for f, ti in zip(freqs, t)]
    return e[0][:, None, None] * e[1][None, :, None] * e[2][None, None, :]


def _upsampled_peak(
    X: np.ndarray, freqs: list[np.ndarray], t0: np.ndarray, upsample_factor: int
) -> tuple[np.ndarray, float]:
    """Refine a cross-correlation peak by a matrix-multiply DFT (Guizar-Sicairos 2008).

    ``X`` is the cross-power spectrum ``F0 conj(Fc)``; the correlation
    ``CC(t) = sum_k X(k) exp(2 pi i k.t)`` is evaluated on a grid of step
    ``1/upsample_factor`` spanning 1.5 voxels around the integer peak ``t0``
    (the integer peak itself is one of the points).
    """
    R = int(math.ceil(1.5 * upsample_factor))
    offsets = (np.arange(R) - R // 2) / upsample_factor
    K = [np.exp(2j * np.pi * np.outer(t0[a] + offsets, freqs[a])) for a in range(3)]
    M0, M1, M2 = X.shape
    Y = (K[0] @ X.reshape(M0, M1 * M2)).reshape(R, M1, M2)  # (R, M1, M2)
    Y = K[1] @ Y  # (R, R, M2)
    Y = Y @ K[2].T  # (R, R, R)
    mag = np.abs(Y)
    j = np.unravel_index(int(np.argmax(mag)), mag.shape)
    t = t0 + offsets[list(j)]
    return t, float(mag[j])


def real_space_error(
    reference: Any,
    estimate: Any,
    *,
    twin: bool = True,
    subpixel: bool = True,
    upsample_factor: int = 20,
) -> AlignmentResult:
    """Real-space error ``E_r`` with the ambiguities of the intensity removed.

    ``E_r = min over c in {d, twin(d)}, shifts t, complex gamma of
    ||d0 - gamma S_t c|| / ||d0||`` with ``twin(d) = conj(d(-r))`` (on the grid
    ``conj(flip(d))``; the translation search absorbs the one-voxel offset).
    For each ``c`` the best ``gamma`` is least squares, which leaves the invariant
    form (Fienup 1997) ``E_r^2 = 1 - max_t |CC(t)|^2 / (||d0||^2 ||c||^2)``.

    Algorithm: both arrays are zero-padded to ``2n`` per axis (so the FFT
    cross-correlation ``CC(t) = sum_r d0(r) conj(c(r - t))`` has no wrap-around),
    the integer peak picks the candidate and shift; the shift is refined to
    ``1/upsample_factor`` voxel by an upsampled DFT around the peak
    (Guizar-Sicairos et al. 2008); ``c`` is moved by a Fourier shift on the padded
    grid, ``gamma = <S c, d0> / ||S c||^2``, and ``E_r`` is computed directly as
    ``||d0 - gamma S c|| / ||d0||`` (clipped to ``[0, 1]``), in complex128.

    Parameters
    ----------
    reference : array_like
        Reference (true) density ``d0``, complex or real, shape ``(n, n, n)``
        (any 3-D shape works).
    estimate : array_like
        Estimate ``d`` of the same shape.
    twin : bool, default True
        Also try the twin of the estimate and keep the better.
    subpixel : bool, default True
        Refine the shift below one voxel.
    upsample_factor : int, default 20
        Subpixel precision ``1/upsample_factor`` voxel (1 = integer shifts).

    Returns
    -------
    AlignmentResult
        ``error``, ``shift``, ``gamma``, ``twin`` and the ``aligned`` estimate.

    Raises
    ------
    ValueError
        Not 3-D, shape mismatch, non-finite values, a zero reference or estimate,
        or ``upsample_factor < 1``.
    """
    d0 = _prepare_object(reference, "reference")
    d = _prepare_object(estimate, "estimate")
    if d.shape != d0.shape:
        raise ValueError(
            f"`estimate` must have the shape of `reference` {d0.shape}, got {d.shape}"
        )
    upsample_factor = check_int("upsample_factor", upsample_factor, low=1)

    n = d0.shape
    M = tuple(2 * m for m in n)
    freqs = _freqs(M)
    F0 = sfft.fftn(d0, s=M, workers=-1)
    Fd = sfft.fftn(d, s=M, workers=-1)
    candidates = [(False, Fd)]
    if twin:
        # FT of conj(flip(d)) padded the same way: exp(-2 pi i f (n-1)) conj(D(f)).
        Ft = _phase_ramp(freqs, np.array([m - 1 for m in n], dtype=float)) * np.conj(Fd)
        candidates.append((True, Ft))

    best = None
    for is_twin, Fc in candidates:
        X = F0 * np.conj(Fc)
        cc = np.abs(sfft.ifftn(X, workers=-1))
        p = np.unravel_index(int(np.argmax(cc)), cc.shape)
        t0 = np.array([pi if pi < m // 2 else pi - m for pi, m in zip(p, M)], dtype=float)
        peak = float(cc[p]) * float(np.prod(M))  # unnormalised, comparable to the upsampled DFT
        t = t0
        if subpixel and upsample_factor > 1:
            t, peak = _upsampled_peak(X, freqs, t0, upsample_factor)
        if best is None or peak > best[0]:
            best = (peak, is_twin, Fc, t)
    _, is_twin, Fc, t = best

    Sc = sfft.ifftn(Fc * _phase_ramp(freqs, t), workers=-1)
    d0p = np.zeros(M, dtype=np.complex128)
    d0p[: n[0], : n[1], : n[2]] = d0
    norm_sc = float(np.vdot(Sc, Sc).real)
    gamma = complex(np.vdot(Sc, d0p) / norm_sc)
    resid = d0p - gamma * Sc
    error = math.sqrt(float(np.vdot(resid, resid).real) / float(np.vdot(d0, d0).real))
    error = min(max(error, 0.0), 1.0)
    aligned = (gamma * Sc[: n[0], : n[1], : n[2]]).astype(np.complex64)
    aligned.setflags(write=False)
    shift = (float(t[0]), float(t[1]), float(t[2]))
    logger.debug("real_space_error: E_r=%.4g shift=%s twin=%s", error, shift, is_twin)
    return AlignmentResult(error=error, shift=shift, gamma=gamma, twin=is_twin, aligned=aligned)


def real_space_errors(
    references: Any,
    estimates: Any,
    *,
    twin: bool = True,
    subpixel: bool = True,
    upsample_factor: int = 20,
) -> np.ndarray:
    """:func:`real_space_error` over a leading axis; returns the errors ``(T,)`` float64.

    Parameters
    ----------
    references : array_like
        ``(T, n, n, n)``, or one ``(n, n, n)`` reference shared by all estimates.
    estimates : array_like
        ``(T, n, n, n)``.
    twin, subpixel, upsample_factor
        As for :func:`real_space_error`.
    """
    est = _to_numpy(estimates, "estimates")
    ref = _to_numpy(references, "references")
    if est.ndim != 4:
        raise ValueError(f"`estimates` must be a 4-D array (T, n, n, n), got shape {est.shape}")
    if ref.shape == est.shape[1:]:
        ref = np.broadcast_to(ref, est.shape)
    if ref.shape != est.shape:
        raise ValueError(
            f"`references` must have shape {est.shape} or {est.shape[1:]}, got {ref.shape}"
        )
    kwargs = {"twin": twin, "subpixel": subpixel, "upsample_factor": upsample_factor}
    return np.array(
        [real_space_error(r, e, **kwargs).error for r, e in zip(ref, est)], dtype=np.float64
    )


def phase_rms(
    reference: Any,
    estimate: Any,
    *,
    support_threshold: float = 0.1,
    align: bool = True,
) -> float:
    """RMS phase error (radians) inside the reference support, after alignment.

    The support is ``|d0| > support_threshold * max|d0|``; the error is the RMS of
    the wrapped difference ``angle(d0 * conj(aligned))`` there, where ``aligned``
    comes from :func:`real_space_error` (global phase, translation and twin
    removed) or is the estimate itself when ``align=False``.

    Parameters
    ----------
    reference, estimate : array_like
        Complex densities of the same 3-D shape.
    support_threshold : float, default 0.1
        Fraction of the reference's maximum amplitude, in ``[0, 1)``.
    align : bool, default True
        Align the estimate to the reference first.

    Returns
    -------
    float
        RMS phase error in ``[0, pi]``.
    """
    check_number("support_threshold", float(support_threshold), low=0.0, high=1.0, open_high=True)
    d0 = _prepare_object(reference, "reference")
    if align:
        est = np.asarray(real_space_error(d0, estimate).aligned, dtype=np.complex128)
    else:
        est = _prepare_object(estimate, "estimate")
        if est.shape != d0.shape:
            raise ValueError(
                f"`estimate` must have the shape of `reference` {d0.shape}, got {est.shape}"
            )
    amp = np.abs(d0)
    support = amp > support_threshold * amp.max()
    dphi = np.angle(d0[support] * np.conj(est[support]))
    return float(np.sqrt(np.mean(dphi**2)))
