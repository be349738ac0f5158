"""Latent-space traversal movies: what the decoder draws along a path through the latent box.

Each frame shows the decoded density (phase-coloured isosurface and central slices,
:class:`latenttune.movies.render.DensityView`) beside a bar chart of the latent vector ``z``, with
the traversal box shaded behind the bars. The latents come from :mod:`latenttune.movies.paths`;
:func:`encode_patterns` gives the latents of measured patterns (e.g. two series frames) for a line
between them.

Frames are produced lazily (:func:`traverse_frames`): latents are decoded a few at a time and each
picture goes to the movie writer before the next is drawn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latenttune.model.network import LatentAutoencoder
from latenttune.movies.paths import check_box
from latenttune.movies.render import (
    DensityView,
    RenderSettings,
    check_dpi,
    check_size,
    figure_rgb,
    font_size,
    new_figure,
    view_extent,
)
from latenttune.movies.writer import MovieWriter, check_output
from latenttune.validation import check_int

log = logging.getLogger(__name__)

__all__ = ["encode_patterns", "decode_latents", "TraverseView", "traverse_frames", "write_traverse_movie"]

_SCALE_SAMPLES = 8  # latents decoded up front to fix the movie's amplitude scale


def _check_model(model: Any) -> LatentAutoencoder:
    if not isinstance(model, LatentAutoencoder):
        raise TypeError(f"`model` must be a LatentAutoencoder (LoadedModel.model), got {type(model).__name__}")
    return model


def _check_latents(latents: Any, k: int) -> np.ndarray:
    z = np.asarray(latents)
    if z.dtype.kind not in "iuf":
        raise TypeError(f"`latents` must be real, got dtype {z.dtype}")
    if z.ndim != 2 or z.shape[1] != k or z.shape[0] < 1:
        raise ValueError(f"`latents` must have shape (frames, {k}) with frames >= 1, got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("`latents` must be finite (found NaN or inf)")
    return z.astype(np.float32)


def encode_patterns(model: LatentAutoencoder, patterns: Sequence[tuple[Any, Any]]) -> np.ndarray:
    """Latents of measured patterns.

    Parameters
    ----------
    model : LatentAutoencoder
        The model.
    patterns : sequence of (intensity, mask)
        Each intensity ``(N, N, N)`` with its mask (True = not measured; None for none), e.g.
        ``(frame.intensity, frame.mask)`` of :class:`latenttune.io.Frame`.

    Returns
    -------
    ndarray, shape (len(patterns), k), float64
    """
    model = _check_model(model)
    out = []
    with torch.inference_mode():
        for intensity, mask in patterns:
            out.append(model.encode(intensity, mask)[0].cpu().numpy().astype(np.float64))
    if not out:
        raise ValueError("`patterns` must hold at least one (intensity, mask) pair")
    return np.stack(out)


def decode_latents(model: LatentAutoencoder, latents: Any, batch: int = 8) -> Iterator[np.ndarray]:
    """Decoded densities ``(n, n, n)`` complex64 of ``latents`` ``(T, k)``, ``batch`` at a time."""
    model = _check_model(model)
    z = _check_latents(latents, model.latent_dim)
    check_int("batch", batch, low=1)
    for start in range(0, z.shape[0], batch):
        with torch.inference_mode():
            chunk = model.decode(z[start : start + batch]).cpu().numpy()
        yield from chunk


class TraverseView:
    """A traversal frame: decoded density on the left, latent bar chart on the right.

    Parameters
    ----------
    shape : (int, int, int)
        Object grid shape.
    k : int
        Latent dimension.
    amplitude_max : float
        Fixed amplitude scale of the movie.
    size : (int, int)
        Frame (width, height) in pixels.
    dpi : float
        Dots per inch.
    settings : RenderSettings
        Camera and colours.
    box : (lower, upper), optional
        The traversal box, shaded behind the bars.
    limits : (float, float)
        Value axis of the bar chart (the model's latent box).
    title : str
        Shown above the density.
    extent : float, optional
        Half-width of the cube the 3-D view shows (:func:`latenttune.movies.render.view_extent`).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        k: int,
        amplitude_max: float,
        *,
        size: tuple[int, int],
        dpi: float,
        settings: RenderSettings,
        box: tuple[np.ndarray, np.ndarray] | None = None,
        limits: tuple[float, float] = (-1.0, 1.0),
        title: str = "",
        extent: float | None = None,
    ) -> None:
        self.size = check_size(size)
        fs = font_size(self.size, check_dpi(dpi))
        self.fig = fig = new_figure(self.size, dpi)
        fig.subplots_adjust(left=0.01, right=0.97, bottom=0.1, top=0.9)
        grid = fig.add_gridspec(1, 2, width_ratios=[3.2, 1.0], wspace=0.18)
        self.density = DensityView(fig, grid[0, 0], shape, amplitude_max, settings, fontsize=fs, title=title,
                                   extent=extent)
        ax = self.bars_ax = fig.add_subplot(grid[0, 1])
        rows = np.arange(k)
        if box is not None:
            lo, hi = box
            ax.barh(rows, hi - lo, left=lo, height=0.8, color="0.88", zorder=0)
        self.bars = ax.barh(rows, np.zeros(k), height=0.6, color="C0", zorder=2)
        ax.axvline(0.0, color="0.4", lw=0.6, zorder=1)
        ax.set_xlim(*limits)
        ax.set_ylim(k - 0.5, -0.5)
        ax.set_yticks(rows if k <= 16 else rows[:: int(np.ceil(k / 16))])
        ax.tick_params(labelsize=fs * 0.9, length=2, pad=1)
        ax.set_title("latent z", fontsize=fs, pad=2)
        ax.set_xlabel("value", fontsize=fs, labelpad=1)
        ax.set_ylabel("component", fontsize=fs, labelpad=1)
        self.counter = fig.text(0.01, 0.02, "", fontsize=fs, color="0.3")

    def update(self, density: np.ndarray, z: np.ndarray, label: str = "") -> np.ndarray:
        """Draw the frame of ``density`` at latent ``z``; returns its RGB pixels."""
        self.density.update(density)
        for bar, value in zip(self.bars, z):
            bar.set_width(float(value))
        self.counter.set_text(label)
        return figure_rgb(self.fig, self.size)


def _movie_scale(
    model: LatentAutoencoder, z: np.ndarray, settings: RenderSettings, amplitude_max: float | None
) -> tuple[float, float | None]:
    """Amplitude scale and 3-D view extent of the movie, from a few latents spread along the path."""
    rows = np.unique(np.linspace(0, len(z) - 1, min(_SCALE_SAMPLES, len(z))).round().astype(int))
    samples = list(decode_latents(model, z[rows]))
    scale = max(float(np.abs(d).max()) for d in samples) if amplitude_max is None else float(amplitude_max)
    if not np.isfinite(scale) or not scale > 0:
        raise ValueError("the decoded densities along the path are zero everywhere: nothing to draw")
    extent = view_extent(samples, settings.iso_fraction * scale) if settings.fit_view else None
    return scale, extent


def traverse_frames(
    model: LatentAutoencoder,
    latents: Any,
    *,
    size: tuple[int, int] = (960, 540),
    dpi: float = 100.0,
    settings: RenderSettings | None = None,
    box: tuple[Any, Any] | None = None,
    amplitude_max: float | None = None,
    title: str = "",
) -> Iterator[np.ndarray]:
    """RGB frames ``(height, width, 3)`` uint8 of the traversal along ``latents``, one at a time.

    Parameters
    ----------
    model : LatentAutoencoder
        The decoder to traverse.
    latents : array_like, shape (T, k)
        The path (:mod:`latenttune.movies.paths`).
    size : (int, int)
        Frame (width, height) in pixels.
    dpi : float
        Dots per inch (text size relative to the frame).
    settings : RenderSettings, optional
        Camera and colours.
    box : (lower, upper), optional
        Traversal box drawn behind the bars.
    amplitude_max : float, optional
        Fixed amplitude scale; default the largest ``|d|`` among a few latents spread along the path
        (the same few set the 3-D view's extent when ``settings.fit_view``).
    title : str
        Shown above the density.
    """
    model = _check_model(model)
    z = _check_latents(latents, model.latent_dim)
    size = check_size(size)
    settings = settings or RenderSettings()
    if box is not None:
        box = check_box(*box)
        if box[0].size != model.latent_dim:
            raise ValueError(f"`box` must have {model.latent_dim} components per corner, got {box[0].size}")
    scale, extent = _movie_scale(model, z, settings, amplitude_max)
    n = model.config.n
    lower, upper = model.latent_bounds
    view = TraverseView((n, n, n), model.latent_dim, scale, size=size, dpi=dpi, settings=settings, box=box,
                        limits=(float(lower.min()), float(upper.max())), title=title, extent=extent)
    T = len(z)
    for t, density in enumerate(decode_latents(model, z)):
        yield view.update(density, z[t], f"frame {t + 1}/{T}")


def write_traverse_movie(
    model: LatentAutoencoder,
    latents: Any,
    out: str | os.PathLike[str],
    *,
    fps: float = 12.0,
    size: tuple[int, int] = (960, 540),
    dpi: float = 100.0,
    settings: RenderSettings | None = None,
    box: tuple[Any, Any] | None = None,
    amplitude_max: float | None = None,
    title: str = "",
    overwrite: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> Path:
    """Render the traversal along ``latents`` into ``out`` (``.mp4`` or ``.gif``).

    Parameters are those of :func:`traverse_frames`, plus ``out``, ``fps``, ``overwrite`` (see
    :class:`latenttune.movies.writer.MovieWriter`) and ``callback(done, total)`` called after each
    frame is written.

    Returns
    -------
    Path
        The movie file.
    """
    check_output(out, size, fps)
    z = _check_latents(latents, _check_model(model).latent_dim)
    frames = traverse_frames(model, z, size=size, dpi=dpi, settings=settings, box=box,
                             amplitude_max=amplitude_max, title=title)
    with MovieWriter(out, check_size(size), fps, overwrite=overwrite) as movie:
        for frame in frames:
            movie.append(frame)
            if callback is not None:
                callback(movie.frames_written, len(z))
    return movie.path
