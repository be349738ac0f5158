"""The strain figure of a post-processed run: :func:`strain_figure`.

Displacement (nm) and heterogeneous strain of one frame in the three central planes of the
crystal frame (``z`` along ``G``), through the support's centre of mass, resampled onto a cubic grid
in nm (:func:`latenttune.postprocess.orthogonal.orthogonalise`); outside the support is blank. Each
panel names its plane, its colour bar says its units, and a scale bar gives the length in nm; a
last panel plots the run's mean strain per frame with its spread. Drawn with matplotlib's
object API (no pyplot state), saved atomically.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from latenttune.geometry import FrameTransform
from latenttune.io import Results, read_results
from latenttune.io.partial import replace_when_done
from latenttune.postprocess.orthogonal import orthogonalise

log = logging.getLogger(__name__)

__all__ = ["strain_figure"]

#: (plane name, the two crystal axes shown (horizontal, vertical), the axis cut at the centre).
PLANES = (("x-y plane (normal to G)", (0, 1), 2), ("x-z plane (contains G)", (0, 2), 1),
          ("y-z plane (contains G)", (1, 2), 0))


def _scale_bar_nm(width_nm: float) -> float:
    """A round length about a quarter of ``width_nm``."""
    target = width_nm / 4
    base = 10 ** np.floor(np.log10(target))
    return float(max(m * base for m in (1, 2, 5) if m * base <= target))


def strain_figure(results: str | os.PathLike[str] | Results, out: str | os.PathLike[str], *, frame: int = -1,
                  title: str | None = None) -> Path:
    """Draw the strain figure of row ``frame`` (negative: from the end) of a post-processed results file.

    Raises
    ------
    ValueError
        The results have no displacement or strain (no measurement geometry), or the row has no support.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    data = results if isinstance(results, Results) else read_results(results)
    if not data.has_strain:
        raise ValueError(f"{data.path} has no displacement or strain: its series had no measurement geometry")
    row = frame if frame >= 0 else data.num_frames + frame
    if not 0 <= row < data.num_frames:
        raise ValueError(f"`frame` must be a row of the results (0 to {data.num_frames - 1} or negative), got {frame}")
    support = data.field_at("support", row).astype(bool)
    if not support.any():
        raise ValueError(f"row {row} has no support (a skipped or blank frame)")
    transform = FrameTransform.from_dict(data.attrs["frame_transform"])
    volumes = {"displacement": data.field_at("displacement", row), "strain": data.field_at("strain", row)}
    grid, h, origin = orthogonalise(volumes, support, transform, data.support_com[row])
    inside = grid["support"] > 0.5
    centre = [int(round(-o / h)) for o in origin]  # the grid index of the crystal-frame origin
    fig = Figure(figsize=(13, 8.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 3, height_ratios=[1, 1, 0.7])
    for r, (name, label, cmap, scale) in enumerate((("displacement", "displacement along G (nm)", "RdBu_r", 1.0),
                                                    ("strain", "strain along G (x 1e-4)", "coolwarm", 1e4))):
        values = np.where(inside, grid[name] * scale, np.nan)
        limit = float(np.nanpercentile(np.abs(values), 99)) or 1.0
        for c, (plane, (a, b), cut) in enumerate(PLANES):
            index = [slice(None)] * 3
            index[cut] = int(np.clip(centre[cut], 0, values.shape[cut] - 1))
            section = values[tuple(index)]
            section = section if a < b else section.T
            ax = axes[r, c]
            extent = (origin[a], origin[a] + h * (values.shape[a] - 1), origin[b], origin[b] + h * (values.shape[b] - 1))
            image = ax.imshow(section.T, origin="lower", extent=extent, cmap=cmap, vmin=-limit, vmax=limit)
            ax.set_facecolor("0.85")
            ax.set_title(f"{name}: {plane}", fontsize=9)
            ax.set_xlabel(f"crystal {'xyz'[a]} (nm)", fontsize=8)
            ax.set_ylabel(f"crystal {'xyz'[b]} (nm)", fontsize=8)
            length = _scale_bar_nm(extent[1] - extent[0])
            ax.add_artist(AnchoredSizeBar(ax.transData, length, f"{length:g} nm", "lower right", frameon=False,
                                          size_vertical=h / 3, color="black"))
            fig.colorbar(image, ax=ax, shrink=0.85).set_label(label, fontsize=8)
    index = data.index
    mean, std = data.strain_mean * 1e4, data.strain_std * 1e4
    ax = axes[2, 0]
    ax.plot(index, mean, "o-", color="C0", label="mean")
    ax.fill_between(index, mean - std, mean + std, color="C0", alpha=0.25, label="+- std")
    ax.set_xlabel("frame")
    ax.set_ylabel("strain (x 1e-4)")
    ax.set_title("heterogeneous strain inside the support, per frame", fontsize=9)
    ax.legend(fontsize=8)
    hist_ax = axes[2, 1]
    low, high = (data.attrs.get("postprocess_settings") or {}).get("histogram_range", (-2e-3, 2e-3))
    edges = np.linspace(low, high, data.strain_histogram.shape[1] + 1) * 1e4
    hist_ax.stairs(data.strain_histogram[row], edges, fill=True, color="C1")
    hist_ax.set_xlabel("strain (x 1e-4)")
    hist_ax.set_ylabel("voxels")
    hist_ax.set_title(f"histogram of the strain, row {row}", fontsize=9)
    axes[2, 2].axis("off")
    sizes = " x ".join(f"{v:.1f}" for v in transform.voxel_size_nm)
    lattice = data.lattice_strain[row]
    axes[2, 2].text(0, 0.9, "\n".join([
        f"frame {int(index[row])}: strain {data.strain_mean[row]:+.2e} +- {data.strain_std[row]:.2e}",
        f"lattice strain {lattice:+.2e}" if np.isfinite(lattice) else "lattice strain: needs the full geometry",
        f"|G| = {np.linalg.norm(transform.G):.3f} 1/nm; voxel {sizes} nm", f"shown on a {h:.1f} nm cubic grid",
        "displacement 0 at the support's centre of mass", f"free LLK {data.llk_free[row]:.2f}"]),
        va="top", fontsize=9, transform=axes[2, 2].transAxes)
    fig.suptitle(title or f"{Path(str(data.path)).name}: displacement and strain", fontsize=11)
    out = Path(out)
    with replace_when_done(out, suffix=out.suffix or ".png") as tmp:
        fig.savefig(tmp.partial_path, dpi=90)
    log.info("wrote %s", out)
    return out
