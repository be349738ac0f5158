"""Figures people look at instead of arrays (matplotlib, headless-safe).

:func:`tracking_summary` draws a tracking run: the fit to the counts (LLK, free LLK) and the real-space
error against frame, and the central slices (amplitude and phase, labelled rows, colour bars, the slice
plane and a scale named) of truth and reconstruction, registered to the truth, at a few frames. The
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
from matplotlib.patches import Rectangle
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


def _phase_offset_removed(density: np.ndarray, support_fraction: float = 0.1) -> np.ndarray:
    """``density`` times ``exp(-i offset)``, ``offset`` its amplitude-weighted mean phase over the support
    (amplitude above ``support_fraction`` of the maximum): the phase then sits about 0, and a strain field
    of a fraction of a radian shows on a range that fits it (the global phase is arbitrary anyway)."""
    amp = np.abs(density)
    support = amp > support_fraction * max(float(amp.max()), 1e-12)
    total = np.sum(density[support]) if support.any() else np.sum(density)
    return density * np.exp(-1j * np.angle(total)) if abs(total) > 0 else density


def _phase_limit(densities: Sequence[np.ndarray], amp_max: float) -> float:
    """One phase colour limit (rad) for every panel: the 99th percentile of ``|phase|`` in the central slices'
    supports, rounded up to 0.1 rad (at least 0.1); ``pi`` when the phase wraps anyway."""
    values = []
    for density in densities:
        amp, phase = central_slices(density)
        values.append(np.abs(phase[amp > 0.1 * max(amp_max, 1e-12)]))
    spread = np.concatenate(values) if values else np.zeros(0)
    limit = float(np.percentile(spread, 99)) if spread.size else np.pi
    limit = max(np.ceil(limit * 10) / 10, 0.1)
    return float(np.pi) if limit >= 0.9 * np.pi else limit


def _nice_length(target: float) -> float:
    """The largest of 1, 2 or 5 times a power of ten not above ``target`` (> 0)."""
    power = 10.0 ** np.floor(np.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def _scale_bar(ax: Any, n: int, voxel_nm: float | None) -> None:
    """A white bar of about a quarter of the slice's width, labelled in nm when the voxel size is known,
    else in voxels."""
    if voxel_nm is not None and voxel_nm > 0:
        nm = _nice_length(n / 4 * voxel_nm)
        length, label = nm / voxel_nm, f"{nm:g} nm"
    else:
        length = _nice_length(n / 4)
        label = f"{length:g} voxels"
    x0, y0 = 0.06 * n, 0.07 * n
    ax.add_patch(Rectangle((x0, y0 - 0.2), length, 0.4, color="white", lw=0))
    ax.text(x0 + length / 2, y0 + 0.03 * n, label, color="white", ha="center", va="bottom", fontsize=6)


def _show_density(ax_amp: Any, ax_phase: Any, density: np.ndarray, amp_max: float, title: str,
                  row_label: str | None, phase_limit: float = np.pi) -> tuple[Any, Any]:
    """Central amplitude and phase slices (phase, its mean over the support removed, where the amplitude
    exceeds 10 % of ``amp_max``, on +-``phase_limit``: a diverging map, or a cyclic one at ``pi``)."""
    amp, phase = central_slices(_phase_offset_removed(density))
    support = amp > 0.1 * max(amp_max, 1e-12)
    amp_image = _show_slice(ax_amp, amp, row_label and f"{row_label}\namplitude", cmap="gray", vmin=0,
                            vmax=max(amp_max, 1e-12))
    cmap = "twilight" if phase_limit >= np.pi else "RdBu_r"
    phase_image = _show_slice(ax_phase, np.where(support, phase, np.nan), row_label and f"{row_label}\nphase",
                              cmap=cmap, vmin=-phase_limit, vmax=phase_limit)
    ax_amp.set_title(title, fontsize=8)
    return amp_image, phase_image


def _voxel_size_nm(results: Results, axis: int) -> float | None:
    """The object voxel's edge along array ``axis`` in nm, when the results carry a measurement geometry."""
    transform = results.attrs.get("frame_transform")
    if not transform:
        return None
    try:
        from latenttune.geometry import FrameTransform

        return float(FrameTransform.from_dict(transform).voxel_size_nm[axis])
    except (KeyError, TypeError, ValueError, IndexError):
        log.warning("the results' frame_transform gives no voxel size: the scale bar is in voxels")
        return None


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

    Layout, on the left against the frame number (integer ticks): how well each frame explains the
    counts (the shown density's Poisson LLK and free LLK, with the noise level and the stagnation
    threshold; a run without a physics stage has no LLK and shows its cost, explained) and, with
    truth, E_r of the decoded latent and of the shown density; without truth the fit panel alone, no
    duplicate. Per shown frame a column of central slices (the plane normal to array axis 0 through
    the grid's centre, named in the title, with a scale bar in nm when the results carry a voxel
    size, else in voxels), rows labelled ``truth amplitude``, ``truth phase``, then the shown
    reconstruction's amplitude and phase (registered to the truth: twin, shift and global phase
    removed). The phase is drawn with its mean over the support removed, on one range for every
    panel that fits the phase shown (a diverging map; a cyclic one on +-pi when it wraps), so a
    strain field of a fraction of a radian is visible. One amplitude and one phase colour bar in their
    own column, so every image column has the same width. Frames whose output stagnated
    (:mod:`latenttune.quality`) are ringed in red on the curves and say so in their titles.
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
    has_error = bool(np.isfinite(results.E_r).any() or np.isfinite(shown.E_r).any())
    fit_rows = slice(0, rows // 2) if has_error else slice(0, rows)
    axes = [_fit_panel(fig.add_subplot(grid[fit_rows, :2]), results, stagnated, stagnated_label)]
    if has_error:
        ax_err = fig.add_subplot(grid[rows // 2:, :2])
        ax_err.plot(index, results.E_r, "o-", ms=3, color="C1", label="decoded latent")
        if shown.label == "hybrid":
            ax_err.plot(index, shown.E_r, "s-", ms=3, color="C2", label="hybrid (shown)")
            if stagnated.any():
                ax_err.plot(index[stagnated], shown.E_r[stagnated], "o", ms=8, mfc="none", color="C3",
                            label=stagnated_label)
            ax_err.legend(fontsize=7)
        ax_err.set_ylabel("real-space error E_r against the truth")
        ax_err.set_ylim(bottom=0)
        axes.append(ax_err)
    for ax in axes:
        ax.set_xlabel("frame")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    shown_densities = [d for pair in panels for d in pair if d is not None]
    phase_limit = _phase_limit([_phase_offset_removed(d) for d in shown_densities], amp_max)
    n = int(shown.density.shape[1])
    voxel_nm = _voxel_size_nm(results, 2)
    images: tuple[Any, Any] | None = None
    for column, (t, (reference, recon)) in enumerate(zip(frames, panels), start=2):
        first = column == 2
        row = 0
        if reference is not None:
            ax_amp = fig.add_subplot(grid[0, column])
            _show_density(ax_amp, fig.add_subplot(grid[1, column]), reference, amp_max,
                          f"frame {index[t]}", "truth" if first else None, phase_limit)
            if first:
                _scale_bar(ax_amp, n, voxel_nm)
            row = 2
        label = f"{what}, aligned to truth" if reference is not None else what
        ax_amp = fig.add_subplot(grid[row, column])
        images = _show_density(ax_amp, fig.add_subplot(grid[row + 1, column]), recon,
                               amp_max, f"frame {index[t]}: {shown.row_label(t)}" + ("\n(stagnated)" if stagnated[t] else ""),
                               label if first else None, phase_limit)
        if first and reference is None:
            _scale_bar(ax_amp, n, voxel_nm)
    for row in range(0, rows, 2):
        fig.colorbar(images[0], cax=fig.add_subplot(grid[row, -1]), label="amplitude")
        fig.colorbar(images[1], cax=fig.add_subplot(grid[row + 1, -1]), label="phase - its mean (rad)")
    shows = ("hybrid reconstruction (refined where the physics stage was kept)" if shown.label == "hybrid"
             else "decoded densities of the tracked latents")
    plane = (f"central slices: the plane normal to array axis 0 at index {n // 2} of {n} "
             f"(horizontal: axis 2, vertical: axis 1)")
    fig.suptitle(f"{title or f'tracking summary: {shows}'}\n{plane}", fontsize=10)
    return fig


def _fit_panel(ax: Any, results: Results, stagnated: np.ndarray, stagnated_label: str) -> Any:
    """How well each frame explains the counts: the shown density's Poisson LLK and free LLK (held-out
    voxels) against the noise level and the stagnation threshold; the cost (what extremum seeking
    minimises) only for a run without an LLK (no physics stage)."""
    index = results.index
    llk = np.asarray(results.llk, dtype=float)
    if not np.isfinite(llk).any():
        ax.semilogy(index, results.cost, "o-", ms=3, color="C0")
        ax.set_ylabel("cost: amplitude misfit of the\ndecoded latent (0 = perfect)")
        return ax
    ax.plot(index, llk, "s-", ms=3, color="C2", label="Poisson LLK of the shown density")
    free = np.asarray(results.llk_free, dtype=float)
    if np.isfinite(free).any():
        ax.plot(index, free, "^--", ms=3, color="C4", label="free LLK (held-out voxels)")
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--", label="Poisson noise level")
    ax.axhline(results.stagnation_threshold, color="C3", lw=0.8, ls=":", label="stagnation threshold")
    if stagnated.any():
        ax.plot(index[stagnated], llk[stagnated], "o", ms=8, mfc="none", color="C3", label=stagnated_label)
    ax.set_ylabel("fit to the counts: Poisson LLK\n(about 1 = to the noise)")
    ax.legend(fontsize=7)
    return ax


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
