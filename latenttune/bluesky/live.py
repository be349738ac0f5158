"""Live feedback during a tracking run: the fit to the counts, the cost, named quantities, central slices.

* The frame's Poisson LLK, free LLK and cost against frame are :class:`FramePlot` (bluesky's
  :class:`~bluesky.callbacks.mpl_plotting.LivePlot` against the frame number, its axis labelled with
  the quantity's name, not the data key); :class:`LatentComponentPlot` is one of one component of an
  array field (the latent vector, or the readout's orientation).
* :class:`SliceView` is a callback that shows the central slices (amplitude and phase, with
  colour bars) of the current reconstruction, published by the
  :class:`~latenttune.bluesky.devices.LatentTracker`.
* :class:`LiveFeedback` puts them together in one figure and saves it as a PNG at the end of
  each run (and, optionally, every few frames); a model with explicit crystal parameters shows the
  crystal's size and orientation read out of the latent, another the first few latent components
  (:data:`MAX_COMPONENTS`) and says so.
* :class:`FrameLines` writes one line per frame (``FrameLines(tracker, print)`` in a script), the
  line ``latenttune replay`` prints.

Frames are numbered from 0, as everywhere else in the project: frame ``t`` is the run's
``t + 1``-th event (bluesky's ``seq_num`` counts from 1) and frame ``t`` of the stored run when it
is replayed.

By default the figures are drawn on matplotlib's Agg canvas (no display, no pyplot state), so
they work headless; pass a pyplot figure to see them in an interactive session (with a Qt
backend call ``bluesky.callbacks.mpl_plotting.initialize_qt_teleporter()`` first, from the
main thread).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase
from bluesky.callbacks.mpl_plotting import LivePlot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from latenttune.bluesky.devices import LatentTracker
from latenttune.tracking.replay import frame_line
from latenttune.validation import check_int, is_integer

log = logging.getLogger(__name__)

__all__ = ["FrameLines", "FramePlot", "LatentComponentPlot", "LiveFeedback", "SliceView", "MAX_COMPONENTS",
           "frame_number"]

#: Most latent components :class:`LiveFeedback` plots by default (a physics-structured model has dozens).
MAX_COMPONENTS = 8


def frame_number(doc: dict[str, Any]) -> int:
    """The frame an event belongs to, counted from 0 (bluesky's ``seq_num`` counts from 1)."""
    return int(doc["seq_num"]) - 1


def _agg_figure(figsize: tuple[float, float]) -> Figure:
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


class FramePlot(LivePlot):
    """A :class:`~bluesky.callbacks.mpl_plotting.LivePlot` against the frame number from 0 (integer ticks).

    Parameters
    ----------
    y : str
        Data key to plot.
    x : str, optional
        Data key for the abscissa (e.g. the detector's sample time); default the frame number.
    ylabel : str, optional
        The quantity's name on the y axis (default: the data key, an ophyd name such as ``tracker_llk``).
    **kwargs
        Passed to ``LivePlot`` (``label`` names the line in the legend instead of the run's scan id).
    """

    def __init__(self, y: str, x: str | None = None, *, ylabel: str | None = None, **kwargs: Any) -> None:
        super().__init__(y, x, **kwargs)
        self.by_frame = x is None
        self.ylabel = ylabel

    def start(self, doc: dict[str, Any]) -> None:
        super().start(doc)
        if self.by_frame:
            self.ax.set_xlabel("frame")
            self.ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if self.ylabel:
            self.ax.set_ylabel(self.ylabel, fontsize=8)
        if "label" in self.kwargs:  # named lines: a plain legend, not bluesky's "scan_id" one
            self.ax.legend(fontsize=7, loc="best")

    def update_caches(self, x: Any, y: Any) -> None:
        super().update_caches(x - 1 if self.by_frame else x, y)  # seq_num 1 is frame 0


class LatentComponentPlot(FramePlot):
    """A :class:`FramePlot` of one component of an array field.

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
        check_int("component", component, low=0)
        kwargs.setdefault("label", f"latent {component}")
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
        Save the figure as ``slices_<frame>.png`` here every ``every`` frames.
    every : int
        Save period in frames (with ``save_dir``); 0 saves only at the end of the run
        (``slices_final.png``).
    """

    def __init__(self, amplitude_key: str, phase_key: str, *, ax_amplitude: Any = None, ax_phase: Any = None,
                 cost_key: str | None = None, shows_key: str | None = None,
                 save_dir: str | os.PathLike[str] | None = None, every: int = 0) -> None:
        super().__init__()
        every = check_int("every", every, low=0)
        if (ax_amplitude is None) != (ax_phase is None):
            raise ValueError("`ax_amplitude` and `ax_phase` must be given together")
        if ax_amplitude is None:
            self.figure = _agg_figure((6.0, 3.0))
            ax_amplitude, ax_phase = self.figure.subplots(1, 2)
        else:
            self.figure = ax_amplitude.figure
        self.ax_amplitude, self.ax_phase = ax_amplitude, ax_phase
        self.amplitude_key, self.phase_key, self.cost_key = amplitude_key, phase_key, cost_key
        self.colorbars: tuple[Any, Any] | None = None
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
            self.colorbars = (self.figure.colorbar(amp_image, ax=self.ax_amplitude, label="amplitude"),
                              self.figure.colorbar(phase_image, ax=self.ax_phase, label="phase (rad)"))
            self._images = (amp_image, phase_image)
        else:
            self._images[0].set_data(amplitude)
            self._images[0].set_clim(0, max(top, 1e-12))
            self._images[1].set_data(shown_phase)
        cost = data.get(self.cost_key) if self.cost_key else None
        shows = data.get(self.shows_key) if self.shows_key else None
        title = f"amplitude, frame {frame_number(doc)}" + ("" if cost is None else f", cost {float(cost):.4g}")
        if shows:
            title = f"{shows}: {title}"
        self.ax_amplitude.set_title(title, fontsize=8)
        self.figure.canvas.draw_idle()
        self.frames += 1
        if self.save_dir is not None and self.every and self.frames % self.every == 0:
            self._save(self.save_dir / f"slices_{frame_number(doc):05d}.png")

    def stop(self, doc: dict[str, Any]) -> None:
        if self.save_dir is not None and self.frames:
            self._save(self.save_dir / "slices_final.png")

    def _save(self, path: Path) -> None:
        self.figure.savefig(path, dpi=80)
        self.saved.append(path)
        log.debug("saved %s", path)


#: The named quantities :class:`LiveFeedback` plots when the tracker publishes a physical readout.
READOUT_PLOTS = (("readout_size", None, "size", "crystal size: equivalent radius (voxels)"),
                 ("readout_orientation_deg", 0, "x", "orientation: rotation vector (deg)"),
                 ("readout_orientation_deg", 1, "y", "orientation: rotation vector (deg)"),
                 ("readout_orientation_deg", 2, "z", "orientation: rotation vector (deg)"))


class LiveFeedback:
    """One figure with the fit to the counts (LLK), the cost, named quantities and the central slices, live.

    Panels: the frame's Poisson LLK and free LLK (about 1 = explains the counts to their noise; the
    figure to watch on measured data), the cost (the decoded latent's amplitude misfit), and, for a
    model with explicit crystal parameters, the crystal's size and orientation read out of the
    tracked latent (:mod:`latenttune.model.readout`); for other models the latent components. Axes
    carry the quantities' names, not the data keys.

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
    components : sequence of int, optional
        Latent components to plot instead of the named quantities; by default a tracker that publishes
        a readout (a model with explicit crystal parameters) shows the crystal's size and orientation,
        any other the first :data:`MAX_COMPONENTS` components (all when there are fewer). For a
        physics-structured model, ``range(model.config.physical_dim, model.latent_dim)`` shows its
        learned part.

    Attributes
    ----------
    figure : matplotlib Figure
    components : tuple of int
        The latent components plotted.
    named : bool
        Whether the readout's named quantities are plotted (else latent components).
    callbacks : list
        The :class:`FramePlot` of the LLK, the free LLK and the cost, then one plot per named quantity
        or latent component, then the :class:`SliceView`.
    saved : list of Path
        PNGs written so far.
    """

    def __init__(self, tracker: LatentTracker, *, x: str | None = None, out_dir: str | os.PathLike[str] | None = None,
                 every: int = 0, figure: Any = None, components: Sequence[int] | None = None) -> None:
        if not isinstance(tracker, LatentTracker):
            raise TypeError(f"`tracker` must be a LatentTracker, got {type(tracker).__name__}")
        self.components = _components(components, tracker.k)
        self.figure = _agg_figure((13.0, 6.5)) if figure is None else figure
        grid = self.figure.add_gridspec(2, 3)
        ax_llk = self.figure.add_subplot(grid[0, 0])
        ax_cost = self.figure.add_subplot(grid[0, 1])
        ax_named = self.figure.add_subplot(grid[0, 2])
        ax_amplitude = self.figure.add_subplot(grid[1, 0])
        ax_phase = self.figure.add_subplot(grid[1, 1])
        ax_orientation = self.figure.add_subplot(grid[1, 2])
        ax_llk.set_title("fit to the counts (Poisson LLK; about 1 = to the noise)", fontsize=9)
        ax_cost.set_title("tracking cost (amplitude misfit of the decoded latent)", fontsize=9)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.callbacks: list[Any] = [
            FramePlot(tracker.llk.name, x, ax=ax_llk, marker=".", label="LLK of the shown density",
                      ylabel="Poisson LLK"),
            FramePlot(tracker.llk_free.name, x, ax=ax_llk, marker="^", ls="--", label="free LLK (held-out voxels)",
                      ylabel="Poisson LLK"),
            FramePlot(tracker.cost.name, x, ax=ax_cost, marker=".", label="cost", ylabel="cost (0 = perfect fit)"),
        ]
        self.named = tracker.model is not None and components is None
        if self.named:  # a model with explicit crystal parameters: its readout, by name
            ax_named.set_title("crystal size read out of the latent", fontsize=9)
            ax_orientation.set_title("crystal orientation read out of the latent", fontsize=9)
            for field, component, label, ylabel in READOUT_PLOTS:
                key = getattr(tracker, field).name
                ax = ax_named if component is None else ax_orientation
                self.callbacks.append(FramePlot(key, x, ax=ax, marker=".", label=label, ylabel=ylabel)
                                      if component is None else
                                      LatentComponentPlot(key, component, x, ax=ax, label=label, ylabel=ylabel))
        else:
            ax_named.set_title(_components_title(self.components, tracker.k), fontsize=9)
            ax_orientation.set_axis_off()
            self.callbacks += [LatentComponentPlot(tracker.latent.name, i, x, ax=ax_named, ylabel="latent value")
                               for i in self.components]
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


def _components(components: Sequence[int] | None, k: int) -> tuple[int, ...]:
    if components is None:
        return tuple(range(min(k, MAX_COMPONENTS)))
    try:
        chosen = tuple(components)
    except TypeError:
        raise TypeError(f"`components` must be a sequence of integers, got {type(components).__name__}") from None
    if not chosen or any(not is_integer(i) or not 0 <= i < k for i in chosen):
        raise ValueError(f"`components` must be latent components in 0..{k - 1} (at least one), got {components!r}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"`components` must not repeat a component, got {components!r}")
    return tuple(int(i) for i in chosen)


def _components_title(components: tuple[int, ...], k: int) -> str:
    if len(components) == k:
        return "latent components"
    contiguous = components == tuple(range(components[0], components[0] + len(components)))
    which = f"{components[0]}-{components[-1]}" if contiguous else ", ".join(str(i) for i in components)
    return f"latent components {which} ({len(components)} of {k} shown)"


class FrameLines(CallbackBase):
    """Write one line per tracked frame: frame number (from 0), cost, ES steps, time, what is shown, status.

    The line is the one ``latenttune replay`` prints (:func:`latenttune.tracking.replay.frame_line`), so a
    live run and its replay read alike. Library code never prints: pass ``print`` (a script), a
    logger's method, or a list's ``append``.

    Parameters
    ----------
    tracker : LatentTracker
        The tracker whose output is reported.
    write : callable
        ``write(line)`` for every frame.
    """

    def __init__(self, tracker: LatentTracker, write: Callable[[str], object]) -> None:
        super().__init__()
        if not isinstance(tracker, LatentTracker):
            raise TypeError(f"`tracker` must be a LatentTracker, got {type(tracker).__name__}")
        if not callable(write):
            raise TypeError(f"`write` must be callable (e.g. print), got {type(write).__name__}")
        self.tracker, self.write = tracker, write

    def event(self, doc: dict[str, Any]) -> None:
        data, t = doc["data"], self.tracker
        if t.cost.name not in data:
            return
        shows = str(data.get(t.shows.name) or "")
        llk = float(data.get(t.llk.name, float("nan")))
        stagnated = " (stagnated: less certain)" if int(data.get(t.stagnated.name, 0) or 0) else ""
        extra = (f"  shows {shows}" if shows else "") + ("" if math.isnan(llk) else f"  LLK {llk:.2f}{stagnated}")
        self.write(frame_line(frame_number(doc), float(data[t.cost.name]), int(data.get(t.es_steps.name, 0)),
                              float(data.get(t.seconds.name, float("nan"))), str(data.get(t.status.name, "")), extra))
