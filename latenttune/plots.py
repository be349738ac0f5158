"""Figures people look at instead of arrays (matplotlib, headless-safe).

:func:`tracking_summary` draws a tracking run: cost and real-space error against frame, and the
central slices (amplitude and phase, labelled rows, colour bars) of truth and reconstruction,
registered to the truth, at a few frames. The
reconstruction is the one the results report (:meth:`latenttune.io.Results.reconstruction`): the hybrid
tracker's refined density when the file has it, else the decoded one; every panel says which.
:func:`readout_figure` draws the tracked latents read out as physical quantities (a model with explicit
crystal parameters: :mod:`latenttune.model.readout`) against frame. Both use the object-oriented
matplotlib API with the Agg canvas, so they work without a display and never touch pyplot's global
state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from latenttune.io.results import Results
from latenttune.io.rows import PHASE_TERMS
from latenttune.metrics import real_space_error

log = logging.getLogger(__name__)

__all__ = ["tracking_summary", "summary_figure", "central_slices", "readout_figure", "READOUT_PANELS"]


def central_slices(density: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude and phase of the central slice of ``density`` (n, n, n) normal to ``axis``."""
    n = density.shape[axis]
    plane = np.take(density, n // 2, axis=axis)
    return np.abs(plane), np.angle(plane)


def _show_slice(ax: Any, image: np.ndarray, label: str | None, **style: Any) -> Any:
    shown = ax.imshow(image, origin="lower", **style)
    ax.set_xticks([])
    ax.set_yticks([])
    if label:
        ax.set_ylabel(label, fontsize=8)
    return shown


def _show_density(ax_amp: Any, ax_phase: Any, density: np.ndarray, amp_max: float, title: str,
                  row_label: str | None) -> tuple[Any, Any]:
    """Central amplitude and phase slices (phase where the amplitude exceeds 10 % of ``amp_max``)."""
    amp, phase = central_slices(density)
    support = amp > 0.1 * max(amp_max, 1e-12)
    amp_image = _show_slice(ax_amp, amp, row_label and f"{row_label}\namplitude", cmap="gray", vmin=0,
                            vmax=max(amp_max, 1e-12))
    phase_image = _show_slice(ax_phase, np.where(support, phase, np.nan), row_label and f"{row_label}\nphase",
                              cmap="twilight", vmin=-np.pi, vmax=np.pi)
    ax_amp.set_title(title, fontsize=8)
    return amp_image, phase_image


#: Ground truth for a figure: per series frame, a sequence indexed by frame or a function of the frame.
Truth = Sequence[np.ndarray] | Callable[[int], np.ndarray]


def _truth_of(truth: Truth, frame: int) -> np.ndarray:
    return np.asarray(truth(frame) if callable(truth) else truth[frame])


def summary_figure(
    results: Results,
    *,
    truth: Truth | None = None,
    frames: Sequence[int] | None = None,
    title: str = "",
) -> Figure:
    """The figure :func:`tracking_summary` saves (headless Agg canvas); see there for the parameters.

    Layout: cost and E_r against the frame number (integer ticks) on the left; per shown frame a
    column of central slices, rows labelled ``truth amplitude``, ``truth phase``, then the shown
    reconstruction's amplitude and phase (registered to the truth: twin, shift and global phase
    removed); one amplitude and one phase colour bar in their own column, so every image column has
    the same width. Without truth, the reconstruction rows only, and the left panel shows the Poisson
    LLK with the noise level and the stagnation threshold instead of E_r. Frames whose output
    stagnated (:mod:`latenttune.quality`) are ringed in red on the curves and say so in their titles.
    """
    if not isinstance(results, Results):
        raise TypeError(f"`results` must be a Results (latenttune.io.read_results), got {type(results).__name__}")
    cost = np.asarray(results.cost, dtype=float)
    T = len(cost)
    if T == 0:
        raise ValueError("`results` holds no frames")
    # series frame of each row: a frame skipped before the first estimate has no row, so rows and
    # frames differ by an offset; the axes, titles and truth follow the series frame
    index = results.index
    frames = list(frames) if frames is not None else sorted(set(np.linspace(0, T - 1, min(4, T)).round().astype(int)))
    shown = results.reconstruction()
    what = "hybrid" if shown.label == "hybrid" else "decoded"
    stagnated = results.stagnated
    stagnated = np.zeros(T, dtype=bool) if stagnated is None else stagnated
    stagnated_label = f"stagnated (LLK > {results.stagnation_threshold:g}: less certain)"
    panels = []  # (truth or None, reconstruction registered to it)
    for t in frames:
        recon = shown.density[t]
        reference = None if truth is None else _truth_of(truth, int(index[t]))
        panels.append((reference, recon if reference is None else real_space_error(reference, recon).aligned))
    amp_max = max(float(np.abs(d).max()) for pair in panels for d in pair if d is not None)
    rows = 2 if truth is None else 4
    fig = Figure(figsize=(2.1 * len(frames) + 5.2, 1.8 * rows + 0.7), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, len(frames) + 3, width_ratios=[1.2, 1.2] + [1] * len(frames) + [0.08])
    ax_cost = fig.add_subplot(grid[: rows // 2, :2])
    ax_cost.semilogy(index, cost, "o-", ms=3, label="cost (amplitude misfit)")
    ax_cost.set_ylabel("cost")
    axes = [ax_cost]
    decoded_error = results.E_r
    if np.isfinite(decoded_error).any() or np.isfinite(shown.E_r).any():
        ax_err = fig.add_subplot(grid[rows // 2:, :2])
        ax_err.plot(index, decoded_error, "o-", ms=3, color="C1", label="decoded latent (ES)")
        if shown.label == "hybrid":
            ax_err.plot(index, shown.E_r, "s-", ms=3, color="C2", label="hybrid (shown)")
            if stagnated.any():
                ax_err.plot(index[stagnated], shown.E_r[stagnated], "o", ms=8, mfc="none", color="C3",
                            label=stagnated_label)
            ax_err.legend(fontsize=7)
        ax_err.set_ylabel("real-space error E_r")
        ax_err.set_ylim(bottom=0)
        axes.append(ax_err)
    elif np.isfinite(results.llk).any():
        # no truth (real data): the Poisson LLK says whether each frame explains the counts to the noise
        ax_llk = fig.add_subplot(grid[rows // 2:, :2])
        llk = results.llk
        ax_llk.plot(index, llk, "s-", ms=3, color="C2", label="shown density")
        ax_llk.axhline(1.0, color="0.5", lw=0.8, ls="--", label="Poisson noise level")
        ax_llk.axhline(results.stagnation_threshold, color="C3", lw=0.8, ls=":", label="stagnation threshold")
        if stagnated.any():
            ax_llk.plot(index[stagnated], llk[stagnated], "o", ms=8, mfc="none", color="C3", label=stagnated_label)
        ax_llk.set_ylabel("Poisson LLK")
        ax_llk.legend(fontsize=7)
        axes.append(ax_llk)
    for ax in axes:
        ax.set_xlabel("frame")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    images: tuple[Any, Any] | None = None
    for column, (t, (reference, recon)) in enumerate(zip(frames, panels), start=2):
        first = column == 2
        row = 0
        if reference is not None:
            _show_density(fig.add_subplot(grid[0, column]), fig.add_subplot(grid[1, column]), reference, amp_max,
                          f"frame {index[t]}", "truth" if first else None)
            row = 2
        label = f"{what}, aligned to truth" if reference is not None else what
        images = _show_density(fig.add_subplot(grid[row, column]), fig.add_subplot(grid[row + 1, column]), recon,
                               amp_max, f"frame {index[t]}: {shown.row_label(t)}" + ("\n(stagnated)" if stagnated[t] else ""),
                               label if first else None)
    for row in range(0, rows, 2):
        fig.colorbar(images[0], cax=fig.add_subplot(grid[row, -1]), label="amplitude")
        fig.colorbar(images[1], cax=fig.add_subplot(grid[row + 1, -1]), label="phase (rad)")
    shows = ("hybrid reconstruction (refined where the physics stage was kept)" if shown.label == "hybrid"
             else "decoded densities of the tracked latents")
    fig.suptitle(title or f"tracking summary: {shows} (central slices)", fontsize=10)
    return fig


def tracking_summary(
    results: Results,
    out: str | Path,
    *,
    truth: Truth | None = None,
    frames: Sequence[int] | None = None,
    title: str = "",
    dpi: int = 100,
) -> Path:
    """Save a PNG summary of a tracking run (:func:`summary_figure`).

    Parameters
    ----------
    results : Results
        From :func:`latenttune.io.read_results`.
    out : str or Path
        PNG path.
    truth : sequence of ndarray or callable, optional
        Ground-truth densities per series frame (indexed by the results' ``index``, the series frame
        of each row), or a function of the series frame (e.g. ``series.truth``: only the frames
        shown are read). Shown next to the reconstruction, which is registered to it (twin, shift
        and global phase removed).
    frames : sequence of int, optional
        Rows to show (default four spread over the run).
    title : str
        Figure title.
    dpi : int
        Resolution.
    """
    fig = summary_figure(results, truth=truth, frames=frames, title=title)
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    log.info("wrote %s", out)
    return out


#: The titles of :func:`readout_figure`'s panels, in order (row by row).
READOUT_PANELS = (
    "orientation (rotation vector, deg)",
    "size (equivalent-sphere radius, voxels)",
    "smooth phase coefficients (rad)",
    "dislocation winding (G.b)",
    "dislocation line position (voxels)",
    "learned residual (fraction of the density)",
)


def readout_figure(results: Results, out: str | Path | None = None, *, title: str = "", dpi: int = 100) -> Figure:
    """The tracked latents read out as physical quantities, against frame (headless Agg canvas).

    Panels (titles :data:`READOUT_PANELS`): the orientation's rotation vector (x, y, z, degrees); the
    crystal's size (equivalent-sphere radius, voxels); the nine smooth-phase coefficients (radians,
    terms ``x, y, z, x^2, ...`` with ``x = r / (n/4)``); the dislocation's winding (-1, 0, +1); the
    coordinates of the line's point closest to the grid centre (voxels, on frames where a dislocation
    is drawn); the share of the decoded density the learned residual draws. Frames are the series
    frames (the results' ``index``).

    Parameters
    ----------
    results : Results
        From :func:`latenttune.io.read_results`, of a run whose model has explicit crystal parameters
        (``results.has_readout``).
    out : str or Path, optional
        Also save the figure there (PNG).
    title : str
        Figure title (default: says what it shows).
    dpi : int
        Resolution of the saved PNG.

    Raises
    ------
    ValueError
        The results hold no readout (a model without explicit crystal parameters) or no frame.
    """
    if not isinstance(results, Results):
        raise TypeError(f"`results` must be a Results (latenttune.io.read_results), got {type(results).__name__}")
    if not results.has_readout:
        raise ValueError("`results` hold no physical readout (the model has no explicit crystal parameters)")
    if results.num_frames == 0:
        raise ValueError("`results` holds no frames")
    frame = results.index
    fig = Figure(figsize=(13.5, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    for ax, panel in zip(axes, READOUT_PANELS):
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("frame")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    orientation, size, phase, winding, point, learned = axes
    for c, axis in enumerate("xyz"):
        orientation.plot(frame, results.readout_orientation_deg[:, c], "o-", ms=3, label=axis)
    orientation.set_ylabel("rotation vector component (deg)")
    orientation.legend(fontsize=7)
    size.plot(frame, results.readout_size, "o-", ms=3, color="C3")
    size.set_ylabel("radius (voxels)")
    for c, term in enumerate(PHASE_TERMS):
        phase.plot(frame, results.readout_phase_coefficients[:, c], marker=".", ms=3, label=term,
                   ls="-" if c < 3 else ("--" if c < 6 else ":"))
    phase.set_ylabel("coefficient (rad)")
    phase.legend(fontsize=6, ncol=3)
    winding.step(frame, results.readout_dislocation_winding, where="mid", color="C4")
    winding.plot(frame, results.readout_dislocation_winding, "o", ms=3, color="C4")
    winding.set_ylabel("winding (G.b)")
    winding.set_yticks([-1, 0, 1])
    winding.set_ylim(-1.3, 1.3)
    present = results.readout_dislocation_present == 1
    for c, axis in enumerate("xyz"):
        point.plot(frame, np.where(present, results.readout_dislocation_point[:, c], np.nan), "o-", ms=3, label=axis)
    point.set_ylabel("point closest to the centre (voxels)")
    point.legend(fontsize=7)
    if not present.any():
        point.text(0.5, 0.5, "no dislocation drawn", transform=point.transAxes, ha="center", va="center",
                   fontsize=8, color="0.4")
    learned.plot(frame, results.readout_learned_fraction, "o-", ms=3, color="C5")
    learned.set_ylabel("||decoded - explicit|| / ||decoded||")
    learned.set_ylim(bottom=0)
    for ax in axes:  # the same frames on every panel (the line's panel has gaps where none is drawn)
        ax.set_xlim(frame.min() - 0.5, frame.max() + 0.5)
    fig.suptitle(title or "tracked latents read out as physical quantities (laboratory frame, centred voxels)",
                 fontsize=10)
    if out is not None:
        fig.savefig(Path(out), dpi=dpi)
        log.info("wrote %s", out)
    return fig
