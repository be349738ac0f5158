"""Paths through the latent space for traversal movies (numpy only).

Every function returns an array ``(frames, k)`` of latent vectors, one per movie frame:

* :func:`line_path`: the straight line from one latent to another (both ends included);
* :func:`axes_path`: one latent axis after the other swept through the box, ``centre -> upper ->
  centre -> lower -> centre`` (one sine period), the others held at the centre;
* :func:`lissajous_path`: a smooth closed walk, each component a sine of a small whole number of
  cycles per movie with a random phase, so the last frame leads back into the first (GIFs loop
  without a jump).

A box is a pair ``(lower, upper)`` of ``(k,)`` arrays; :func:`latenttune.model.latent_walk.latent_spread`
gives the part of the box the encoder actually uses, which is where the decoder was trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latenttune.validation import check_int, check_number

__all__ = ["PATHS", "check_box", "check_latent", "line_path", "axes_path", "lissajous_path"]

#: Names of the traversal paths (``--path`` of ``latenttune movie traverse``).
PATHS = ("line", "axes", "lissajous")


def check_latent(z: Any, k: int | None = None, name: str = "z") -> np.ndarray:
    """A finite real ``(k,)`` float64 vector, else ValueError naming ``name``."""
    a = np.asarray(z)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"`{name}` must be a real vector, got dtype {a.dtype}")
    if a.ndim != 1 or a.size == 0 or (k is not None and a.shape != (k,)):
        want = f"({k},)" if k is not None else "(k,) with k >= 1"
        raise ValueError(f"`{name}` must have shape {want}, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` must be finite (found NaN or inf)")
    return a.astype(np.float64)


def check_box(lower: Any, upper: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` as float64 ``(k,)`` arrays with ``lower < upper``, else ValueError."""
    lo = check_latent(lower, name="lower")
    hi = check_latent(upper, k=lo.size, name="upper")
    if not (lo < hi).all():
        bad = int(np.flatnonzero(lo >= hi)[0])
        raise ValueError(f"the latent box needs `lower` < `upper` on every axis; axis {bad}: {lo[bad]} >= {hi[bad]}")
    return lo, hi


def line_path(start: Any, end: Any, frames: int) -> np.ndarray:
    """``frames`` latents evenly spaced on the segment from ``start`` to ``end`` (both included).

    Parameters
    ----------
    start, end : array_like, shape (k,)
        End points.
    frames : int
        Number of latents, >= 2.

    Returns
    -------
    ndarray, shape (frames, k)
    """
    z0 = check_latent(start, name="start")
    z1 = check_latent(end, k=z0.size, name="end")
    frames = check_int("frames", frames, low=2)
    s = np.linspace(0.0, 1.0, frames)[:, None]
    return (1 - s) * z0 + s * z1


def axes_path(lower: Any, upper: Any, frames: int, *, centre: Any = None, margin: float = 0.0) -> np.ndarray:
    """Sweep each latent axis in turn through the box while the others stay at ``centre``.

    Axis ``i`` follows ``centre_i + h_i sin(2 pi s)`` at the mid-points ``s = (j + 1/2) / m`` of its
    share of ``m`` frames (``frames // k``, the first ``frames % k`` axes one frame more), with
    ``h_i`` the largest half-range that stays inside ``[lower, upper]`` shrunk by ``margin``. Every
    sweep starts and ends next to the centre, so the path is nearly continuous from axis to axis.

    Parameters
    ----------
    lower, upper : array_like, shape (k,)
        The box.
    frames : int
        Number of latents; at least ``2 k`` (two frames per axis).
    centre : array_like, shape (k,), optional
        Where the other axes are held; default the middle of the box. Must lie inside the box.
    margin : float
        Fraction of each half-range left out at the ends, in [0, 1).

    Returns
    -------
    ndarray, shape (frames, k)
    """
    lo, hi = check_box(lower, upper)
    k = lo.size
    frames = check_int("frames", frames, low=2 * k)
    check_number("margin", margin, low=0, high=1, open_high=True)
    c = (lo + hi) / 2 if centre is None else check_latent(centre, k=k, name="centre")
    if ((c < lo) | (c > hi)).any():
        raise ValueError("`centre` must lie inside the box [lower, upper]")
    half = np.minimum(hi - c, c - lo) * (1 - margin)
    if centre is not None and not (half > 0).all():
        raise ValueError("`centre` must lie strictly inside the box (not on a face)")
    counts = np.full(k, frames // k)
    counts[: frames % k] += 1
    path = np.tile(c, (frames, 1))
    row = 0
    for axis, count in enumerate(counts):
        s = (np.arange(count) + 0.5) / count  # mid-points: even two frames reach +h and -h
        path[row : row + count, axis] = c[axis] + half[axis] * np.sin(2 * np.pi * s)
        row += count
    return path


def lissajous_path(
    lower: Any,
    upper: Any,
    frames: int,
    rng: np.random.Generator,
    *,
    max_cycles: int = 3,
    margin: float = 0.05,
) -> np.ndarray:
    """A smooth closed walk through the box: ``z_i = c_i + h_i sin(2 pi f_i s + phi_i)``.

    ``s = t / frames`` for frame ``t``, so frame ``frames`` would equal frame 0 and a looping movie
    has no jump. The whole numbers of cycles ``f_i`` cycle through ``1 .. max_cycles`` in a random
    order, the phases ``phi_i`` are uniform; ``c`` is the middle of the box and ``h`` its half-width
    shrunk by ``margin``.

    Parameters
    ----------
    lower, upper : array_like, shape (k,)
        The box.
    frames : int
        Number of latents, >= 2.
    rng : numpy.random.Generator
        Draws the cycles' order and the phases.
    max_cycles : int
        Largest number of cycles of one component over the movie (>= 1); keep
        ``frames / max_cycles`` at 20 or more for a smooth movie.
    margin : float
        Fraction of each half-width left out, in [0, 1).

    Returns
    -------
    ndarray, shape (frames, k)
    """
    lo, hi = check_box(lower, upper)
    frames = check_int("frames", frames, low=2)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    check_int("max_cycles", max_cycles, low=1)
    check_number("margin", margin, low=0, high=1, open_high=True)
    k = lo.size
    cycles = rng.permutation(1 + np.arange(k) % max_cycles)
    phases = rng.uniform(0, 2 * np.pi, size=k)
    s = np.arange(frames)[:, None] / frames
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * (1 - margin)
    return centre + half * np.sin(2 * np.pi * cycles * s + phases)
