"""Tracking movies: a results file played back frame by frame.

Each frame shows

* the measured central diffraction slice through q = 0 and the predicted one (``|F d|^2`` of the
  reconstruction, scaled by the least-squares flux factor over the measured voxels), both on one
  log colour scale fixed for the movie; unmeasured voxels are grey;
* the ground truth (when the series has it) and the reconstruction side by side as phase-coloured
  isosurfaces; the reconstruction is aligned to the truth first (twin, shift and global phase
  removed to the nearest voxel, :func:`latenttune.metrics.real_space_error`; its amplitude is left
  as decoded), so the two compare directly;
* the cost trace and the real-space error ``E_r`` trace (without truth: the Poisson LLK of the shown
  density, never a second copy of the cost) with a cursor at the current frame, against the frame
  number; the caption gives the frame's time only when the series records real times.

The reconstruction is the one the results report (:meth:`latenttune.io.Results.reconstruction`): the
hybrid tracker's refined density when the file has it, else the decoded density; the caption
says which each frame shows ("refined", "decoded", or "decoded (refinement not kept)"), and marks a
frame whose output stagnated (:mod:`latenttune.quality`) as less certain.

The measured patterns and the truth come from the series the run was made on: the results file
records its path (root attribute ``series``, see :mod:`latenttune.tracking.replay`); pass ``series`` when the
file has moved.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.io import Results, Series, open_series, read_results
from latenttune.metrics import real_space_error
from latenttune.movies.render import (
    IsoPanel,
    RenderSettings,
    check_dpi,
    check_size,
    figure_rgb,
    font_size,
    new_figure,
    phase_colorbar,
    view_extent,
)
from latenttune.movies.writer import MovieWriter, check_output
from latenttune.outputs import check_outputs
from latenttune.physics import flux_scale, forward

log = logging.getLogger(__name__)

__all__ = ["resolve_series", "TrackingView", "frame_captions", "tracking_frames", "write_tracking_movie"]

_SCALE_SAMPLES = 8  # truth frames read up front to fix the amplitude scale
_DECADES_MAX = 9.0  # lowest colour of the log intensity scale: at most 1e-9 of the peak


def resolve_series(results: Results, series: str | os.PathLike[str] | None = None) -> Path:
    """The series a results file was made on: ``series`` if given, else the recorded path.

    A recorded relative path is read from the results file's folder (where ``replay`` and ``track``
    record it from), then, for files written before that, from the working directory; last, the
    absolute path of the results' ``series_identity``.

    Raises
    ------
    FileNotFoundError
        The given or recorded series does not exist.
    ValueError
        No ``series`` was given and the results file records none.
    """
    if series is not None:
        path = Path(series)
        if not path.exists():
            raise FileNotFoundError(f"`series` does not exist: {path}")
        return path
    recorded = results.attrs.get("series")
    if not recorded:
        raise ValueError("the results file records no series; pass `series` (--series) with the measured patterns")
    path = Path(str(recorded))
    candidates = [path] if path.is_absolute() else [Path(results.path).parent / path, path]
    identity = results.attrs.get("series_identity")
    if isinstance(identity, dict) and identity.get("path") and "://" not in str(identity["path"]):
        candidates.append(Path(str(identity["path"])))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"the results file records the series {str(recorded)!r}, which does not exist here; "
        "pass `series` (--series) with its current path"
    )


def _check_results(results: Any) -> Results:
    if not isinstance(results, Results):
        raise TypeError(f"`results` must be a Results (latenttune.io.read_results), got {type(results).__name__}")
    if results.num_frames == 0:
        raise ValueError("`results` holds no frames")
    return results


def _series_indices(results: Results, series: Series) -> np.ndarray:
    index = results.index
    n = results.density_at(0, output=False).shape[-1]
    if series.N != 2 * n:
        raise ValueError(f"`series` has diffraction grid N = {series.N}, but the results' densities need N = {2 * n}")
    if index.max() >= len(series) or index.min() < 0:
        raise ValueError(
            f"`series` has {len(series)} frames, but the results refer to frame {int(index.max())}: wrong series?"
        )
    return index


def _central(a: np.ndarray, axis: int) -> np.ndarray:
    return np.take(a, a.shape[axis] // 2, axis=axis)


def _predicted(density: np.ndarray, measured: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``s^2 |F d|^2`` with the amplitude flux scale ``s`` over the measured voxels."""
    predicted = np.asarray(forward(density), dtype=np.float64)
    w = ~mask
    s = float(flux_scale(np.sqrt(predicted) * w, np.sqrt(np.clip(measured, 0, None)) * w))
    return s * s * predicted


class TrackingView:
    """The figure of a tracking movie; :meth:`update` draws one results row.

    Parameters
    ----------
    shape : (int, int, int)
        Object grid shape.
    cost, error : ndarray, shape (T,)
        Traces drawn under the images; ``error`` may be all NaN (then it is left out).
    error_label : str
        Name of ``error`` (``"E_r"`` or ``"E_q"``).
    amplitude_max : float
        Fixed amplitude scale (isosurface level ``iso_fraction * amplitude_max``).
    log_limits : (float, float)
        ``log10`` colour limits of the diffraction slices.
    has_truth : bool
        Whether a truth panel is drawn.
    size, dpi, settings
        Frame size in pixels, dots per inch, camera and colours.
    extent : float, optional
        Half-width of the cube the 3-D views show (:func:`latenttune.movies.render.view_extent`).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        cost: np.ndarray,
        error: np.ndarray,
        error_label: str,
        amplitude_max: float,
        log_limits: tuple[float, float],
        *,
        has_truth: bool,
        size: tuple[int, int],
        dpi: float,
        settings: RenderSettings,
        extent: float | None = None,
    ) -> None:
        from matplotlib import colormaps

        self.size = check_size(size)
        self.settings = settings
        fs = font_size(self.size, check_dpi(dpi))
        self.fig = fig = new_figure(self.size, dpi)
        fig.subplots_adjust(left=0.09, right=0.95, bottom=0.1, top=0.88)
        outer = fig.add_gridspec(2, 1, height_ratios=[1.6, 1.0], hspace=0.38)
        top = outer[0].subgridspec(1, 6, width_ratios=[1.0, 1.0, 0.05, 1.25, 1.25, 0.05], wspace=0.3)
        plane = tuple(2 * s for i, s in enumerate(shape) if i != settings.slice_axis)
        cmap = colormaps[settings.intensity_cmap].with_extremes(bad="0.6")
        self.images = []
        names = [c for i, c in enumerate(("qx", "qy", "qz")) if i != settings.slice_axis]
        for column, title in ((0, "measured"), (1, "predicted")):
            ax = fig.add_subplot(top[0, column])
            image = ax.imshow(np.zeros(plane), cmap=cmap, vmin=log_limits[0], vmax=log_limits[1], origin="lower",
                              interpolation="nearest")
            ax.set_title(title, fontsize=fs, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(names[1], fontsize=fs, labelpad=1)
            if column == 0:
                ax.set_ylabel(names[0], fontsize=fs, labelpad=1)
            self.images.append(image)
        bar = fig.colorbar(self.images[0], cax=fig.add_subplot(top[0, 2]))
        bar.ax.tick_params(labelsize=fs * 0.9, length=2, pad=1)
        bar.ax.set_title("log₁₀ I", fontsize=fs, pad=3)
        level = settings.iso_fraction * amplitude_max
        self.truth = None
        if has_truth:
            self.truth = IsoPanel(fig.add_subplot(top[0, 3], projection="3d"), shape, level, settings, title="truth",
                                  fontsize=fs, zoom=1.2, extent=extent)
        else:
            ax = fig.add_subplot(top[0, 3])
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no ground truth\nin the series", ha="center", va="center", fontsize=fs, color="0.4")
        self.recon = IsoPanel(fig.add_subplot(top[0, 4], projection="3d"), shape, level, settings,
                              title="reconstruction" + (" (aligned)" if has_truth else ""), fontsize=fs,
                              zoom=1.2, extent=extent)
        phase_colorbar(fig, fig.add_subplot(top[0, 5]), settings, fs)

        bottom = outer[1].subgridspec(1, 2, wspace=0.3)
        T = len(cost)
        frames = np.arange(T)
        self.cursors = []
        self.markers = []
        traces = [(cost, "cost", "C0", True)]
        if np.isfinite(error).any():
            traces.append((error, error_label, "C1", False))
        for column, (values, label, color, logy) in enumerate(traces):
            ax = fig.add_subplot(bottom[0, column])
            ax.plot(frames, values, "-", color=color, lw=1.0)
            finite = values[np.isfinite(values)]
            if logy and finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
                ax.set_yscale("log")  # only when the trace spans more than a decade
            (marker,) = ax.plot([0], [values[0]], "o", color=color, ms=3)
            self.cursors.append(ax.axvline(0, color="0.3", lw=0.8))
            self.markers.append((marker, values))
            ax.set_xlim(-0.5, max(T - 0.5, 0.5))
            ax.set_ylabel(label, fontsize=fs, labelpad=1)
            ax.set_xlabel("frame", fontsize=fs, labelpad=1)
            ax.tick_params(labelsize=fs * 0.9, length=2, pad=1)
            ax.grid(alpha=0.3)
        self.caption = fig.text(0.5, 0.965, "", ha="center", va="center", fontsize=fs)

    def update(
        self,
        row: int,
        measured: np.ndarray,
        mask: np.ndarray,
        density: np.ndarray,
        truth: np.ndarray | None,
        caption: str = "",
    ) -> np.ndarray:
        """Draw results row ``row``; returns the RGB pixels."""
        axis = self.settings.slice_axis
        predicted = _predicted(density, measured, mask)
        shown_measured = np.where(mask, np.nan, measured)
        for image, intensity in zip(self.images, (shown_measured, predicted)):
            plane = _central(intensity, axis)
            with np.errstate(divide="ignore", invalid="ignore"):
                image.set_data(np.log10(np.maximum(plane, 10.0 ** image.get_clim()[0])))
        if self.truth is not None and truth is not None:
            self.truth.update(truth)
            # whole-voxel alignment is enough for a picture (the subpixel refinement would slow every frame);
            # keep the shift, twin and global phase of the alignment, not its least-squares amplitude
            # factor: the reconstruction is drawn at its own amplitude, on the truth's isosurface level
            alignment = real_space_error(truth, density, subpixel=False)
            gain = abs(alignment.gamma)
            self.recon.update(alignment.aligned / gain if gain > 0 else alignment.aligned)
        else:
            self.recon.update(density)
        for cursor in self.cursors:
            cursor.set_xdata([row, row])
        for marker, values in self.markers:
            marker.set_data([row], [values[row]])
        self.caption.set_text(caption)
        return figure_rgb(self.fig, self.size)


def _log_limits(series: Series, indices: np.ndarray) -> tuple[float, float]:
    peak, floor = 0.0, np.inf
    for i in np.unique(indices):
        frame = series[int(i)]
        measured = frame.intensity[~frame.mask]
        positive = measured[measured > 0]
        if positive.size:
            peak = max(peak, float(positive.max()))
            floor = min(floor, float(positive.min()))
    if not peak > 0:
        raise ValueError("the series' measured patterns are zero everywhere: nothing to draw")
    high = np.log10(peak)
    low = max(np.log10(floor), high - _DECADES_MAX)
    return (low, high) if high > low else (high - 1.0, high)


def tracking_frames(
    results: dict[str, Any],
    series: Series,
    *,
    size: tuple[int, int] = (960, 540),
    dpi: float = 100.0,
    settings: RenderSettings | None = None,
) -> Iterator[np.ndarray]:
    """RGB frames ``(height, width, 3)`` uint8 of a tracking run, one per results row.

    Parameters
    ----------
    results : Results
        From :func:`latenttune.io.read_results`.
    series : Series
        The series the run was made on (:func:`resolve_series`, :func:`latenttune.io.open_series`).
    size, dpi, settings
        Frame size in pixels, dots per inch, camera and colours.
    """
    results = _check_results(results)
    settings = settings or RenderSettings()
    size = check_size(size)
    indices = _series_indices(results, series)
    shown = results.reconstruction()
    density = shown.density
    cost = np.asarray(results.cost, dtype=float)
    T = len(cost)
    has_truth = bool(series.has_truth)
    error, error_label = _error_trace(results)
    rows = np.unique(np.linspace(0, T - 1, min(_SCALE_SAMPLES, T)).round().astype(int))
    samples = [series.truth(int(indices[r])) for r in rows] if has_truth else []
    scale = max(float(np.abs(d).max()) for d in samples) if has_truth else float(np.abs(density).max())
    if not scale > 0:
        raise ValueError("the densities to draw are zero everywhere: nothing to draw")
    extent = view_extent([*samples, *density], settings.iso_fraction * scale) if settings.fit_view else None
    view = TrackingView(density.shape[1:], cost, error, error_label, scale, _log_limits(series, indices),
                        has_truth=has_truth, size=size, dpi=dpi, settings=settings, extent=extent)
    for row, caption in enumerate(frame_captions(results, indices, error, error_label)):
        i = int(indices[row])
        frame = series[i]
        truth = series.truth(i) if has_truth else None
        yield view.update(row, frame.intensity, frame.mask, density[row], truth, caption)


def _error_trace(results: Results) -> tuple[np.ndarray, str]:
    """The second trace under the images: E_r of the shown density with truth; without truth its Poisson LLK
    (a hybrid run), else nothing (all NaN). Never E_q: a run without truth stores the cost as its E_q, and
    the cost is drawn already."""
    shown = results.reconstruction()
    if np.isfinite(shown.E_r).any():
        return shown.E_r, "E_r"
    if np.isfinite(results.llk).any():
        return np.asarray(results.llk, dtype=float), "LLK"
    return np.full(results.num_frames, np.nan), "E_r"


def has_real_times(times: np.ndarray, indices: np.ndarray) -> bool:
    """Whether a series' frame times are real times, not its frame numbers (what a series without a
    ``time`` dataset, or a simulated one, stores)."""
    times = np.asarray(times, dtype=float)
    return bool(times.shape == np.shape(indices) and np.isfinite(times).all()
                and not np.array_equal(times, np.asarray(indices, dtype=float)))


def frame_captions(results: Results, indices: np.ndarray, error: np.ndarray, error_label: str) -> list[str]:
    """The caption of each movie frame: series frame, time (only when the series has real times: else the
    frame number is the time axis), cost, error, which density it shows, its strain (mean +- std along G,
    when the run was post-processed), and stagnation.

    A frame whose output stagnated (:mod:`latenttune.quality`) ends in ``STAGNATED (LLK x.xx: less
    certain)``, so a movie of measured data says which frames to read with care.
    """
    shown = results.reconstruction()
    cost = np.asarray(results.cost, dtype=float)
    times = np.asarray(results.time, dtype=float)
    stagnated = results.stagnated
    llk = results.llk
    real_times = has_real_times(times, indices)
    captions = []
    for row in range(len(cost)):
        caption = f"frame {int(indices[row])}" + (f"   t = {times[row]:.3g} s" if real_times else "")
        caption += f"   cost {cost[row]:.4g}"
        if np.isfinite(error[row]):
            caption += f"   {error_label} {error[row]:.3f}" if error_label == "E_r" else f"   {error_label} {error[row]:.2f}"
        caption += f"   showing: {shown.row_label(row)}"
        if results.has_strain and np.isfinite(results.strain_mean[row]):  # in physical units (a geometry was given)
            caption += f"   strain {results.strain_mean[row]:+.1e} +- {results.strain_std[row]:.1e}"
        if stagnated is not None and stagnated[row]:
            caption += f"   STAGNATED (LLK {llk[row]:.2f}: less certain)"
        captions.append(caption)
    return captions


def write_tracking_movie(
    results: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    series: str | os.PathLike[str] | None = None,
    fps: float = 12.0,
    size: tuple[int, int] = (960, 540),
    dpi: float = 100.0,
    settings: RenderSettings | None = None,
    overwrite: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> Path:
    """Render the results file ``results`` into the movie ``out`` (``.mp4`` or ``.gif``).

    Parameters
    ----------
    results : path
        A results file (:func:`latenttune.io.read_results`; a ``.partial`` file works too).
    out : path
        Movie file; the suffix picks the format.
    series : path, optional
        The series the run was made on; default the path recorded in the results file.
    fps, size, dpi, settings, overwrite
        See :class:`latenttune.movies.writer.MovieWriter` and :func:`tracking_frames`.
    callback : callable, optional
        ``callback(done, total)`` after each frame is written.

    Returns
    -------
    Path
        The movie file.
    """
    check_output(out, size, fps)
    check_outputs({"`out`": out}, {"`results`": results, "`series`": series}, overwrite=True,
                  kinds={"`out`": "movie"})  # a FIFO is refused before it is read, an input never overwritten
    data = _check_results(read_results(results))
    total = data.num_frames
    series_path = resolve_series(data, series)
    check_outputs({"`out`": out}, {"the series the results file records": series_path}, overwrite=True)
    with open_series(series_path) as opened:
        frames = tracking_frames(data, opened, size=size, dpi=dpi, settings=settings)
        with MovieWriter(out, check_size(size), fps, overwrite=overwrite) as movie:
            for frame in frames:
                movie.append(frame)
                if callback is not None:
                    callback(movie.frames_written, total)
    return movie.path
