"""The one CDI forward model, shared by the simulator and ``latenttune``.

Conventions (docs/conventions.md section 2):

* The object grid is ``n^3`` and holds the complex density ``d = rho * exp(i*phi)``.
* The diffraction grid is ``N^3`` with ``N = 2 * n`` (oversampling 2 per axis).
* :func:`pad` places the object at the centre of the ``N^3`` box: object index
  ``n // 2`` lands on box index ``N // 2`` on every axis.
* :func:`forward` computes
  ``I = |fftshift(fftn(ifftshift(pad(d)), norm="ortho"))|^2``, so ``q = 0`` sits
  at index ``N // 2`` ("peak at the centre"), the layout of measured data.

Every function works on the last three axes and broadcasts over any leading
(batch) axes. It accepts numpy arrays and torch tensors alike and returns the
same kind it was given, so the numbers agree between the two to float32
precision; the torch path is differentiable. This module never imports torch:
it recognises a tensor by its type and borrows ``torch`` from ``sys.modules``
(a tensor cannot exist unless torch was imported), keeping ``sim`` free of a
torch dependency (docs/conventions.md section 1).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import scipy.fft as sfft

__all__ = [
    "is_torch",
    "diffraction_size",
    "object_size",
    "pad",
    "crop",
    "fft_centred",
    "ifft_centred",
    "forward",
]

_AXES = (-3, -2, -1)


def is_torch(x: Any) -> bool:
    """Return True when ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "dim")


def _torch():
    return sys.modules["torch"]


def _check_grid(x: Any, name: str) -> tuple[int, int, int]:
    shape = tuple(x.shape)
    if len(shape) < 3:
        raise ValueError(
            f"`{name}` must have at least 3 dimensions (..., n, n, n), got shape {shape}"
        )
    cube = shape[-3:]
    if not (cube[0] == cube[1] == cube[2]):
        raise ValueError(f"`{name}` must end in a cubic grid (..., n, n, n), got shape {shape}")
    return cube


def diffraction_size(n: int) -> int:
    """Diffraction grid size ``N = 2 n`` for an object grid of size ``n``."""
    if int(n) != n or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}")
    return 2 * int(n)


def object_size(N: int) -> int:
    """Object grid size ``n = N / 2`` for a diffraction grid of size ``N`` (N even)."""
    if int(N) != N or N < 4 or N % 2:
        raise ValueError(f"`N` must be an even integer >= 4, got {N!r}")
    return int(N) // 2


def _centre_slices(n: int, N: int) -> tuple[slice, slice, slice]:
    start = N // 2 - n // 2
    s = slice(start, start + n)
    return (s, s, s)


def pad(d: Any, N: int | None = None) -> Any:
    """Zero-pad an object ``(..., n, n, n)`` to the centre of ``(..., N, N, N)``.

    Parameters
    ----------
    d : ndarray or Tensor
        Object, complex or real, shape ``(..., n, n, n)``.
    N : int, optional
        Box size, default ``2 n``. Must be at least ``n``.

    Returns
    -------
    ndarray or Tensor
        Same kind and dtype as ``d``, shape ``(..., N, N, N)``.
    """
    n = _check_grid(d, "d")[0]
    N = diffraction_size(n) if N is None else int(N)
    if N < n:
        raise ValueError(f"`N` must be >= the object size {n}, got {N}")
    shape = tuple(d.shape[:-3]) + (N, N, N)
    if is_torch(d):
        out = _torch().zeros(shape, dtype=d.dtype, device=d.device)
    else:
        out = np.zeros(shape, dtype=np.asarray(d).dtype)
    out[(...,) + _centre_slices(n, N)] = d
    return out


def crop(x: Any, n: int | None = None) -> Any:
    """Inverse of :func:`pad`: take the central ``(..., n, n, n)`` of ``(..., N, N, N)``.

    Parameters
    ----------
    x : ndarray or Tensor
        Array of shape ``(..., N, N, N)``.
    n : int, optional
        Object size, default ``N // 2``.
    """
    N = _check_grid(x, "x")[0]
    n = object_size(N) if n is None else int(n)
    if not 1 <= n <= N:
        raise ValueError(f"`n` must be between 1 and the box size {N}, got {n}")
    return x[(...,) + _centre_slices(n, N)]


def fft_centred(x: Any) -> Any:
    """Centred unitary 3D FFT over the last three axes: ``fftshift(fftn(ifftshift(x)))``."""
    _check_grid(x, "x")
    if is_torch(x):
        fft = _torch().fft
        return fft.fftshift(fft.fftn(fft.ifftshift(x, dim=_AXES), dim=_AXES, norm="ortho"), dim=_AXES)
    x = np.asarray(x)
    out = sfft.fftshift(
        sfft.fftn(sfft.ifftshift(x, axes=_AXES), axes=_AXES, norm="ortho", workers=-1), axes=_AXES
    )
    return out.astype(np.result_type(x.dtype, np.complex64), copy=False)


def ifft_centred(x: Any) -> Any:
    """Inverse of :func:`fft_centred` (unitary)."""
    _check_grid(x, "x")
    if is_torch(x):
        fft = _torch().fft
        return fft.fftshift(fft.ifftn(fft.ifftshift(x, dim=_AXES), dim=_AXES, norm="ortho"), dim=_AXES)
    x = np.asarray(x)
    out = sfft.fftshift(
        sfft.ifftn(sfft.ifftshift(x, axes=_AXES), axes=_AXES, norm="ortho", workers=-1), axes=_AXES
    )
    return out.astype(np.result_type(x.dtype, np.complex64), copy=False)


def forward(d: Any, N: int | None = None) -> Any:
    """Diffracted intensity ``|F pad(d)|^2`` on the ``N^3`` grid, peak at the centre.

    Parameters
    ----------
    d : ndarray or Tensor
        Complex density, shape ``(..., n, n, n)``.
    N : int, optional
        Diffraction grid size, default ``2 n``.

    Returns
    -------
    ndarray or Tensor
        Real intensity, shape ``(..., N, N, N)``; float32 for complex64 input.
        By Parseval, ``I.sum() == (abs(d)**2).sum()`` (unitary FFT).
    """
    F = fft_centred(pad(d, N))
    if is_torch(F):
        return F.real.square() + F.imag.square()
    return (F.real * F.real + F.imag * F.imag).astype(F.real.dtype, copy=False)
