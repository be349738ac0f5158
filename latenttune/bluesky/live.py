"""Live feedback during a tracking run: cost, latent components and central slices.

* The cost against frame is bluesky's :class:`~bluesky.callbacks.mpl_plotting.LivePlot`;
  :class:`LatentComponentPlot` is a ``LivePlot`` of one component of the latent vector.
* :class:`SliceView` is a callback that shows the central slices (amplitude and phase) of the
  current reconstruction, published by the :class:`~latenttune.bluesky.devices.LatentTracker`.
* :class:`LiveFeedback` puts them together in one figure and saves it as a PNG at the end of
  each run (and, optionally, every few frames).

By default the figures are drawn on matplotlib's Agg canvas (no display, no pyplot state), so
they work headless; pass a pyplot figure to see them in an interactive session (with a Qt
backend call ``bluesky.callbacks.mpl_plotting.initialize_qt_teleporter()`` first, from the
main thread).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase
from bluesky.callbacks.mpl_plotting import LivePlot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from latenttune.bluesky.devices import LatentTracker

log = logging.getLogger(__name__)

__all__ = ["LatentComponentPlot", "LiveFeedback", "SliceView"]


def _agg_figure(figsize: tuple[float, float]) -> Figure:
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


class LatentComponentPlot(LivePlot):
    """A :class:`~bluesky.callbacks.mpl_plotting.LivePlot` of one component of an array field.

    Parameters
    ----------
    y : str
        Data key of the latent vector (e.g. ``tracker.latent.name``).
    component : int
        Which component to plot.
    x : str, optional
        Data key for the abscissa (default: the event's ``seq_num``).
    **kwargs
        Passed to ``LivePlot`` (``ax``, ``label``, line style, ...).
    """

    def __init__(self, y: str, component: int, x: str | None = None, **kwargs: Any) -> None:
        if isinstance(component, bool) or not isinstance(component, (int, np.integer)) or component < 0:
            raise ValueError(f"`component` must be an integer >= 0, got {component!r}")
        kwargs.setdefault("label", f"z{component}")
        super().__init__(y, x, **kwargs)
        self.component = int(component)

    def update_caches(self, x: Any, y: Any) -> None:
        values = np.asarray(y).ravel()
        super().update_caches(x, float(values[self.component]) if self.component < values.size else np.nan)


class SliceView(CallbackBase):
    """Show the central slices (amplitude, phase) of the current reconstruction, frame by frame.

    Parameters
    ----------
    amplitude_key, phase_key : str
        Data keys of the slices (``tracker.amplitude_slice.name``, ``tracker.phase_slice.name``).
    ax_amplitude, ax_phase : matplotlib Axes, optional
        Where to draw; by default a new Agg figure of two panels (:attr:`figure`).
    cost_key : str, optional
        Data key of the cost, shown in the title.
    shows_key : str, optional
        Data key saying which density the slices show (``tracker.shows.name``: refined or decoded),
        shown in the title.
    save_dir : str or Path, optional
        Save the figure as ``slices_<seq_num>.png`` here every ``every`` frames.
    every : int
        Save period in frames (with ``save_dir``); 0 saves only at the end of the run
        (``slices_final.png``).
    """

    def __init__(self, amplitude_key: str, phase_key: str, *, ax_amplitude: Any = None, ax_phase: Any = None,
                 cost_key: str | None = None, shows_key: str | None = None,
                 save_dir: str | os.PathLike[str] | None = None, every: int = 0) -> None:
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"`every` must be an integer >= 0, got {every!r}")
        if (ax_amplitude is None) != (ax_phase is None):
            raise ValueError("`ax_amplitude` and `ax_phase` must be given together")
        if ax_amplitude is None:
            self.figure = _agg_figure((6.0, 3.0))
            ax_amplitude, ax_phase = self.figure.subplots(1, 2)
        else:
            self.figure = ax_amplitude.figure
        self.ax_amplitude, self.ax_phase = ax_amplitude, ax_phase
        self.amplitude_key, self.phase_key, self.cost_key = amplitude_key, phase_key, cost_key
        self.shows_key = shows_key
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.every = every
        self.frames = 0
        self.saved: list[Path] = []
        self._images: tuple[Any, Any] | None = None

    def start(self, doc: dict[str, Any]) -> None:
        self.frames = 0
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)

    def event(self, doc: dict[str, Any]) -> None:
        data = doc["data"]
        if self.amplitude_key not in data or self.phase_key not in data:
            return
        amplitude = np.asarray(data[self.amplitude_key], dtype=np.float32)
        phase = np.asarray(data[self.phase_key], dtype=np.float32)
        top = float(np.nanmax(amplitude)) if np.isfinite(amplitude).any() else 1.0
        support = amplitude > 0.1 * max(top, 1e-12)
        shown_phase = np.where(support, phase, np.nan)
        if self._images is None:
            amp_image = self.ax_amplitude.imshow(amplitude, cmap="gray", vmin=0, vmax=max(top, 1e-12), origin="lower")
            phase_image = self.ax_phase.imshow(shown_phase, cmap="twilight", vmin=-np.pi, vmax=np.pi, origin="lower")
            self.ax_phase.set_title("phase (central slice)", fontsize=8)
            for ax in (self.ax_amplitude, self.ax_phase):
                ax.set_xticks([])
                ax.set_yticks([])
            self._images = (amp_image, phase_image)
        else:
            self._images[0].set_data(amplitude)
            self._images[0].set_clim(0, max(top, 1e-12))
            self._images[1].set_data(shown_phase)
        cost = data.get(self.cost_key) if self.cost_key else None
        shows = data.get(self.shows_key) if self.shows_key else None
        title = f"amplitude, frame {doc['seq_num']}" + ("" if cost is None else f", cost {float(cost):.4g}")
        if shows:
            title = f"{shows}: {title}"
        self.ax_amplitude.set_title(title, fontsize=8)
        self.figure.canvas.draw_idle()
        self.frames += 1
        if self.save_dir is not None and self.every and self.frames % self.every == 0:
            self._save(self.save_dir / f"slices_{int(doc['seq_num']):05d}.png")

    def stop(self, doc: dict[str, Any]) -> None:
        if self.save_dir is not None and self.frames:
            self._save(self.save_dir / "slices_final.png")

    def _save(self, path: Path) -> None:
        self.figure.savefig(path, dpi=80)
        self.saved.append(path)
        log.debug("saved %s", path)


class LiveFeedback:
    """One figure with the cost, the latent components and the central slices, updated live.

    Subscribe it to a RunEngine (``RE.subscribe(feedback)``); it forwards every document to its
    callbacks and, at the end of each run, saves the figure as ``<out_dir>/live_<uid8>.png``.

    Parameters
    ----------
    tracker : LatentTracker
        The tracker whose output is shown.
    x : str, optional
        Data key of the abscissa (e.g. the detector's ``sample_time``); default the frame number.
    out_dir : str or Path, optional
        Folder for the PNGs (the run figure, plus slices every ``every`` frames).
    every : int
        Also save the slice panel every ``every`` frames (0: not).
    figure : matplotlib Figure, optional
        Draw here (e.g. a pyplot figure for an interactive session); default a headless Agg figure.

    Attributes
    ----------
    figure : matplotlib Figure
    callbacks : list
        The ``LivePlot`` of the cost, one :class:`LatentComponentPlot` per component, the
        :class:`SliceView`.
    saved : list of Path
        PNGs written so far.
    """

    def __init__(self, tracker: LatentTracker, *, x: str | None = None, out_dir: str | os.PathLike[str] | None = None,
                 every: int = 0, figure: Any = None) -> None:
        if not isinstance(tracker, LatentTracker):
            raise TypeError(f"`tracker` must be a LatentTracker, got {type(tracker).__name__}")
        self.figure = _agg_figure((10.0, 6.0)) if figure is None else figure
        grid = self.figure.add_gridspec(2, 2)
        ax_cost = self.figure.add_subplot(grid[0, 0])
        ax_latent = self.figure.add_subplot(grid[0, 1])
        ax_amplitude = self.figure.add_subplot(grid[1, 0])
        ax_phase = self.figure.add_subplot(grid[1, 1])
        ax_latent.set_title("latent components", fontsize=9)
        ax_cost.set_title("cost", fontsize=9)
        self.out_dir = None if out_dir is None else Path(out_dir)
        latent_key = tracker.latent.name
        self.callbacks: list[Any] = [LivePlot(tracker.cost.name, x, ax=ax_cost, marker=".")]
        self.callbacks += [LatentComponentPlot(latent_key, i, x, ax=ax_latent) for i in range(tracker.k)]
        self.slices = SliceView(tracker.amplitude_slice.name, tracker.phase_slice.name, ax_amplitude=ax_amplitude,
                                ax_phase=ax_phase, cost_key=tracker.cost.name, shows_key=tracker.shows.name,
                                save_dir=None if self.out_dir is None or not every else self.out_dir / "slices",
                                every=every)
        self.callbacks.append(self.slices)
        self.saved: list[Path] = []
        self._uid = ""

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._uid = str(doc.get("uid", ""))
        for callback in self.callbacks:
            callback(name, doc)
        if name == "stop" and self.out_dir is not None:
            self.save(self.out_dir / f"live_{self._uid[:8] or 'run'}.png")

    def save(self, path: str | os.PathLike[str], dpi: int = 90) -> Path:
        """Save the figure as a PNG and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(path, dpi=dpi)
        self.saved.append(path)
        log.info("saved live figure %s", path)
        return path
