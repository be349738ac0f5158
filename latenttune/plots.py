"""Figures people look at instead of arrays (matplotlib, headless-safe).

:func:`tracking_summary` draws a tracking run: cost and real-space error against frame, and the
central slices (amplitude and phase) of truth and reconstruction at a few frames. The
reconstruction is the one the results report (:func:`latenttune.io.reconstruction`): the hybrid
tracker's refined density when the file has it, else the decoded one; every panel says which. It uses the
object-oriented matplotlib API with the Agg canvas, so it works without a display and never
touches pyplot's global state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from latenttune.io.results import reconstruction
from latenttune.metrics import real_space_error

log = logging.getLogger(__name__)

__all__ = ["tracking_summary", "central_slices"]


def central_slices(density: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude and phase of the central slice of ``density`` (n, n, n) normal to ``axis``."""
    n = density.shape[axis]
    plane = np.take(density, n // 2, axis=axis)
    return np.abs(plane), np.angle(plane)


def _show_density(ax_amp: Any, ax_phase: Any, density: np.ndarray, amp_max: float, title: str) -> Any:
    amp, phase = central_slices(density)
    ax_amp.imshow(amp, cmap="gray", vmin=0, vmax=amp_max, origin="lower")
    support = amp > 0.1 * max(amp_max, 1e-12)
    image = ax_phase.imshow(np.where(support, phase, np.nan), cmap="twilight", vmin=-np.pi, vmax=np.pi, origin="lower")
    ax_amp.set_title(title, fontsize=8)
    for ax in (ax_amp, ax_phase):
        ax.set_xticks([])
        ax.set_yticks([])
    return image


def tracking_summary(
    results: dict[str, Any],
    out: str | Path,
    *,
    truth: Sequence[np.ndarray] | None = None,
    frames: Sequence[int] | None = None,
    title: str = "",
    dpi: int = 100,
) -> Path:
    """Save a PNG summary of a tracking run.

    Parameters
    ----------
    results : dict
        From :func:`latenttune.io.read_results` (``cost``, ``density``, optional ``E_r``).
    out : str or Path
        PNG path.
    truth : sequence of ndarray, optional
        Ground-truth densities per series frame (indexed by the results' ``index``, the series frame
        of each row). Shown aligned (twin, shift and global phase removed) next to the
        reconstruction.
    frames : sequence of int, optional
        Rows to show (default four spread over the run).
    title : str
        Figure title.
    dpi : int
        Resolution.
    """
    cost = np.asarray(results["cost"], dtype=float)
    T = len(cost)
    if T == 0:
        raise ValueError("`results` holds no frames")
    # series frame of each row: a frame skipped before the first estimate has no row, so rows and
    # frames differ by an offset; the axes, titles and truth follow the series frame
    index = np.asarray(results.get("index", np.arange(T)), dtype=int)
    frames = list(frames) if frames is not None else sorted(set(np.linspace(0, T - 1, min(4, T)).round().astype(int)))
    rows = 2 if truth is None else 4
    fig = Figure(figsize=(2.2 * len(frames) + 4.5, 1.9 * rows + 0.6))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, len(frames) + 2, width_ratios=[1.2, 1.2] + [1] * len(frames))
    ax_cost = fig.add_subplot(grid[: rows // 2, :2])
    ax_cost.semilogy(index, cost, "o-", ms=3, label="cost (amplitude misfit)")
    ax_cost.set_xlabel("frame")
    ax_cost.set_ylabel("cost")
    ax_cost.grid(alpha=0.3)
    shown = reconstruction(results)
    decoded_error = np.asarray(results.get("E_r", np.full(T, np.nan)), dtype=float)
    if np.isfinite(decoded_error).any() or np.isfinite(shown.E_r).any():
        ax_err = fig.add_subplot(grid[rows // 2 :, :2])
        ax_err.plot(index, decoded_error, "o-", ms=3, color="C1", label="decoded latent (ES)")
        if shown.label == "hybrid":
            ax_err.plot(index, shown.E_r, "s-", ms=3, color="C2", label="hybrid (shown)")
            ax_err.legend(fontsize=7)
        ax_err.set_xlabel("frame")
        ax_err.set_ylabel("real-space error E_r")
        ax_err.set_ylim(bottom=0)
        ax_err.grid(alpha=0.3)
    density = shown.density
    image = None
    for column, t in enumerate(frames, start=2):
        recon = density[t]
        what = "refined" if shown.refined[t] else "decoded"
        amp_max = float(np.abs(recon).max())
        if truth is not None:
            reference = np.asarray(truth[index[t]])
            aligned = real_space_error(reference, recon).aligned
            amp_max = float(np.abs(reference).max())
            _show_density(fig.add_subplot(grid[0, column]), fig.add_subplot(grid[1, column]), reference, amp_max,
                          f"truth t={index[t]}")
            image = _show_density(fig.add_subplot(grid[2, column]), fig.add_subplot(grid[3, column]), aligned,
                                  amp_max, f"{what} t={index[t]}")
        else:
            image = _show_density(fig.add_subplot(grid[0, column]), fig.add_subplot(grid[1, column]), recon, amp_max,
                                  f"{what} t={index[t]}")
    if image is not None:
        fig.colorbar(image, ax=fig.axes[-1], fraction=0.046, pad=0.04, label="phase (rad)")
    shows = ("hybrid reconstruction (refined where the physics stage was kept)" if shown.label == "hybrid"
             else "decoded densities of the tracked latents")
    fig.suptitle(title or f"tracking summary: {shows} (rows: amplitude, phase of the central slice)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    log.info("wrote %s", out)
    return out
