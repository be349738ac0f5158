"""Pictures of a complex density ``d = rho exp(i phi)`` for movies (matplotlib, Agg, headless).

A density is drawn as

* an **isosurface** of the amplitude ``|d|`` (marching cubes, :func:`skimage.measure.marching_cubes`)
  at ``iso_fraction * amplitude_max``, each triangle coloured by the phase on the surface (the
  complex density interpolated trilinearly at the vertices, so the phase never jumps across the
  wrap) with a cyclic colour map and a colour bar in radians, lit from a fixed direction;
* the **central slices** of amplitude and phase normal to one axis (phase shown only where the
  amplitude exceeds 10 % of ``amplitude_max``).

Movies compare frames, so every view fixes its camera (elevation, azimuth, axis limits) and its
colour limits (amplitude ``[0, amplitude_max]``, phase ``[-pi, pi]``) when it is built; each
:meth:`update` only swaps the data. Build a view once per movie, then ``update`` + :func:`figure_rgb`
per frame.

Coordinates are the project's centred voxel coordinates: ``x = i - n//2`` for array index ``i`` on
axis 0 (x), 1 (y) and 2 (z).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec

from latenttune.plots import central_slices
from latenttune.validation import check_choice, check_number

log = logging.getLogger(__name__)

__all__ = [
    "RenderSettings",
    "Surface",
    "isosurface",
    "new_figure",
    "figure_rgb",
    "font_size",
    "phase_colorbar",
    "IsoPanel",
    "SlicePanels",
    "DensityView",
    "render_density",
    "view_extent",
    "check_size",
    "check_dpi",
]

_SUPPORT_FRACTION = 0.1  # phase slices show only |d| > 10 % of amplitude_max


@dataclass(frozen=True)
class RenderSettings:
    """How densities are drawn; one instance per movie so frames compare.

    Attributes
    ----------
    iso_fraction : float
        Isosurface level as a fraction of the movie's ``amplitude_max``, in (0, 1).
    elev, azim : float
        Camera elevation and azimuth in degrees (matplotlib's ``view_init``).
    phase_cmap : str
        Cyclic colour map for the phase: ``"twilight_shifted"`` (perceptually uniform, light at
        phase 0), ``"twilight"``, ``"hsv"``, ...
    amplitude_cmap : str
        Colour map of the amplitude slice.
    intensity_cmap : str
        Colour map of diffraction slices (log scale).
    slice_axis : int
        Axis (0, 1, 2) the central slices are normal to.
    light : (float, float, float)
        Direction the light comes from (need not be normalised).
    ambient : float
        Share of the face colour kept on faces turned away from the light, in [0, 1].
    fit_view : bool
        Zoom the 3-D view onto the cube that holds the movie's objects (found from a few frames
        sampled up front, plus a margin); False shows the whole object box.
    """

    iso_fraction: float = 0.5
    elev: float = 22.0
    azim: float = -58.0
    phase_cmap: str = "twilight_shifted"
    amplitude_cmap: str = "gray"
    intensity_cmap: str = "magma"
    slice_axis: int = 0
    light: tuple[float, float, float] = (-0.5, -1.0, 1.2)
    ambient: float = 0.35
    fit_view: bool = True

    def __post_init__(self) -> None:
        check_number("iso_fraction", self.iso_fraction, low=0, high=1, open_low=True, open_high=True)
        for name in ("phase_cmap", "amplitude_cmap", "intensity_cmap"):
            if getattr(self, name) not in colormaps:
                raise ValueError(f"`{name}` must be a matplotlib colour map name, got {getattr(self, name)!r}")
        check_choice("slice_axis", self.slice_axis, (0, 1, 2))
        light = np.asarray(self.light, dtype=float)
        if light.shape != (3,) or not np.isfinite(light).all() or not np.linalg.norm(light) > 0:
            raise ValueError(f"`light` must be a non-zero 3-vector, got {self.light!r}")
        check_number("ambient", self.ambient, low=0, high=1)


def check_size(size: Any) -> tuple[int, int]:
    """``(width, height)`` in pixels, each at least 16, else ValueError."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"`size` must be a pair (width, height) of positive integers, got {size!r}") from None
    if width < 16 or height < 16:
        raise ValueError(f"`size` must be at least 16x16 pixels, got {width}x{height}")
    return width, height


def check_dpi(dpi: Any) -> float:
    """Positive finite dots per inch, else ValueError."""
    return check_number("dpi", float(dpi), low=0, open_low=True)  # float() first: "300" is accepted


def _check_density(density: Any, name: str = "density") -> np.ndarray:
    d = np.asarray(density)
    if d.ndim != 3 or min(d.shape) < 2:
        raise ValueError(f"`{name}` must be a 3-D array (n, n, n), got shape {d.shape}")
    if d.dtype.kind not in "iufc":
        raise TypeError(f"`{name}` must be numeric (complex density), got dtype {d.dtype}")
    if not np.isfinite(d).all():
        raise ValueError(f"`{name}` must be finite everywhere (found NaN or inf)")
    return d


@dataclass(frozen=True, eq=False)
class Surface:
    """A triangulated isosurface.

    Attributes
    ----------
    vertices : ndarray, shape (V, 3)
        Vertex positions in centred voxel coordinates (x, y, z = array axes 0, 1, 2).
    faces : ndarray, shape (F, 3)
        Vertex indices of each triangle.
    phase : ndarray, shape (F,)
        Phase of the density on each triangle, radians in (-pi, pi].
    """

    vertices: np.ndarray
    faces: np.ndarray
    phase: np.ndarray

    @property
    def empty(self) -> bool:
        """True when the level is not crossed anywhere."""
        return self.faces.shape[0] == 0


def isosurface(density: Any, level: float) -> Surface:
    """Isosurface of ``|density|`` at ``level``, with the phase of ``density`` on each triangle.

    The amplitude is zero-padded by one voxel so surfaces touching the box edge close. The phase of
    a triangle is the angle of the mean of the complex density interpolated (trilinearly) at its
    three vertices.

    Parameters
    ----------
    density : array_like, shape (n0, n1, n2)
        Complex (or real) density.
    level : float
        Positive amplitude level.

    Returns
    -------
    Surface
        Empty (no faces) when no voxel reaches ``level``.
    """
    from scipy.ndimage import map_coordinates
    from skimage.measure import marching_cubes

    d = _check_density(density)
    check_number("level", level, low=0, open_low=True)
    amplitude = np.pad(np.abs(d).astype(np.float32), 1)
    if amplitude.max() <= level:
        return Surface(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros(0))
    vertices, faces, _, _ = marching_cubes(amplitude, level=level, allow_degenerate=False)
    vertices = vertices.astype(np.float64) - 1.0  # undo the padding: array index coordinates
    coords = vertices.T
    values = map_coordinates(d.real.astype(np.float64), coords, order=1, mode="nearest")
    if np.iscomplexobj(d):
        values = values + 1j * map_coordinates(d.imag.astype(np.float64), coords, order=1, mode="nearest")
    phase = np.angle(values[faces].sum(axis=1))
    centre = np.array([s // 2 for s in d.shape], dtype=np.float64)
    return Surface(vertices - centre, faces.astype(np.int64), phase)


def view_extent(densities: Iterable[Any], level: float, margin: float = 3.0) -> float | None:
    """Half-width in voxels of the centred cube holding every voxel with ``|d| >= level``, plus ``margin``.

    Parameters
    ----------
    densities : iterable of array_like, each (n0, n1, n2)
        The densities the view must hold (e.g. a few frames of a movie).
    level : float
        The isosurface level.
    margin : float
        Voxels added around the objects.

    Returns
    -------
    float or None
        None when no voxel reaches ``level``.
    """
    extent = None
    for density in densities:
        d = _check_density(density)
        inside = np.argwhere(np.abs(d) >= level)
        if inside.size:
            reach = float(np.abs(inside - np.array([s // 2 for s in d.shape])).max())
            extent = reach if extent is None else max(extent, reach)
    return None if extent is None else extent + float(margin)


def font_size(size: tuple[int, int], dpi: float) -> float:
    """Font size in points that reads well at a figure of ``size`` pixels (scales with the height)."""
    height_in = size[1] / dpi
    return float(np.clip(3.0 + 1.6 * height_in, 5.0, 14.0))


def new_figure(size: tuple[int, int], dpi: float) -> Figure:
    """A figure of exactly ``size`` = (width, height) pixels at ``dpi`` with an Agg canvas."""
    width, height = check_size(size)
    dpi = check_dpi(dpi)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def figure_rgb(fig: Figure, size: tuple[int, int] | None = None) -> np.ndarray:
    """Draw ``fig`` and return its pixels, ``(height, width, 3)`` uint8 RGB.

    With ``size`` the image is cropped or padded (white) to exactly ``size`` = (width, height), which
    guards against a one-pixel rounding of ``figsize * dpi``.
    """
    canvas = fig.canvas
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    if size is None:
        return rgb.copy()
    width, height = size
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    h, w = min(height, rgb.shape[0]), min(width, rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def phase_colorbar(fig: Figure, cax: Any, settings: RenderSettings, fontsize: float) -> Any:
    """A phase colour bar in ``cax`` with ticks at -pi, 0, pi (radians)."""
    mappable = ScalarMappable(norm=Normalize(-np.pi, np.pi), cmap=colormaps[settings.phase_cmap])
    bar = fig.colorbar(mappable, cax=cax, ticks=[-np.pi, 0.0, np.pi])
    bar.ax.set_yticklabels(["-π", "0", "π"])
    bar.ax.tick_params(labelsize=fontsize, length=2, pad=1)
    bar.set_label("rad", fontsize=fontsize, labelpad=0)
    return bar


class IsoPanel:
    """A 3-D axes showing the phase-coloured amplitude isosurface, with a fixed camera.

    Parameters
    ----------
    ax : mpl_toolkits.mplot3d.Axes3D
        The axes (``projection="3d"``).
    shape : (int, int, int)
        Object grid shape; the axis limits are the whole centred box.
    level : float
        Amplitude of the isosurface, fixed for the movie.
    settings : RenderSettings
        Camera, colour map, light.
    title : str
        Axes title.
    fontsize : float
        Size of the axis labels and title.
    zoom : float
        Magnification of the box inside the axes (matplotlib's ``set_box_aspect`` zoom).
    extent : float, optional
        Show the centred cube ``[-extent, extent]^3`` (voxels) instead of the whole box
        (:func:`view_extent`); never more than the box.
    """

    def __init__(
        self, ax: Any, shape: tuple[int, int, int], level: float, settings: RenderSettings, *, title: str = "",
        fontsize: float = 7.0, zoom: float = 1.0, extent: float | None = None,
    ) -> None:
        check_number("level", level, low=0, open_low=True)
        self.ax = ax
        self.level = float(level)
        self.settings = settings
        self._cmap = colormaps[settings.phase_cmap]
        self._norm = Normalize(-np.pi, np.pi)
        light = np.asarray(settings.light, dtype=float)
        self._light = light / np.linalg.norm(light)
        self._fontsize = fontsize
        self._collection: Any = None
        self._note: Any = None
        ax.view_init(elev=settings.elev, azim=settings.azim)
        self._limits = [(-(s // 2), s - s // 2 - 1) for s in shape]
        if extent is not None:
            check_number("extent", extent, low=0, open_low=True)
            self._limits = [(max(lo, -extent), min(hi, extent)) for lo, hi in self._limits]
        self._fix_limits()
        ax.set_box_aspect((1, 1, 1), zoom=zoom)
        ax.set_autoscale_on(False)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        for label, setter in zip("xyz", (ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
            setter(label, fontsize=fontsize, labelpad=-12)
        for pane in (ax.xaxis.pane, ax.yaxis.pane, ax.zaxis.pane):
            pane.set_facecolor((0.96, 0.96, 0.96, 1.0))
            pane.set_edgecolor((0.8, 0.8, 0.8, 1.0))
        if title:
            ax.set_title(title, fontsize=fontsize, pad=0)

    def _fix_limits(self) -> None:
        for set_lim, limits in zip((self.ax.set_xlim, self.ax.set_ylim, self.ax.set_zlim), self._limits):
            set_lim(*limits)

    def face_colors(self, surface: Surface) -> np.ndarray:
        """RGBA per triangle: the phase colour, dimmed by Lambert shading (two-sided)."""
        rgba = self._cmap(self._norm(surface.phase))
        tri = surface.vertices[surface.faces]  # (F, 3 vertices, 3 coords)
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        normals = normals / np.where(length > 0, length, 1.0)
        ambient = self.settings.ambient
        shade = ambient + (1 - ambient) * np.abs(normals @ self._light)
        rgba[:, :3] *= shade[:, None]
        return rgba

    def update(self, density: Any) -> Surface:
        """Replace the surface with the one of ``density``; returns it."""
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        surface = isosurface(density, self.level)
        if self._collection is not None:
            self._collection.remove()
            self._collection = None
        if self._note is not None:
            self._note.set_visible(surface.empty)
        if surface.empty:
            if self._note is None:
                self._note = self.ax.text2D(0.5, 0.5, "nothing above the\nisosurface level", ha="center",
                                            va="center", transform=self.ax.transAxes, fontsize=0.8 * self._fontsize,
                                            color="0.4")
            return surface
        polygons = surface.vertices[surface.faces]
        colors = self.face_colors(surface)
        # edges in the face colour hide the hairline seams antialiasing leaves between triangles
        collection = Poly3DCollection(polygons, facecolors=colors, edgecolors=colors, linewidths=0.25)
        self.ax.add_collection3d(collection)
        self._collection = collection
        self._fix_limits()  # adding a collection must never move the camera
        return surface


class SlicePanels:
    """Central slices of amplitude and phase with fixed colour limits.

    Parameters
    ----------
    ax_amplitude, ax_phase : matplotlib Axes
        Where the two slices go.
    shape : (int, int, int)
        Object grid shape.
    amplitude_max : float
        Upper colour limit of the amplitude (and the reference of the phase support).
    settings : RenderSettings
        Colour maps and slice axis.
    fontsize : float
        Title size.
    """

    def __init__(
        self, ax_amplitude: Any, ax_phase: Any, shape: tuple[int, int, int], amplitude_max: float,
        settings: RenderSettings, *, fontsize: float = 7.0,
    ) -> None:
        check_number("amplitude_max", amplitude_max, low=0, open_low=True)
        self.settings = settings
        self.amplitude_max = float(amplitude_max)
        axis = settings.slice_axis
        plane = tuple(s for i, s in enumerate(shape) if i != axis)
        blank = np.zeros(plane)
        names = [c for i, c in enumerate("xyz") if i != axis]
        phase_cmap = colormaps[settings.phase_cmap].with_extremes(bad="white")
        self.amplitude_image = ax_amplitude.imshow(blank, cmap=settings.amplitude_cmap, vmin=0, vmax=amplitude_max,
                                                   origin="lower", interpolation="nearest")
        self.phase_image = ax_phase.imshow(blank, cmap=phase_cmap, vmin=-np.pi, vmax=np.pi, origin="lower",
                                           interpolation="nearest")
        where = f"{'xyz'[axis]} = 0"
        ax_amplitude.set_title(f"amplitude, {where}", fontsize=fontsize, pad=2)
        ax_phase.set_title(f"phase, {where}", fontsize=fontsize, pad=2)
        for ax in (ax_amplitude, ax_phase):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(names[1], fontsize=fontsize, labelpad=1)
            ax.set_ylabel(names[0], fontsize=fontsize, labelpad=1)

    def update(self, density: Any) -> None:
        """Show the central slices of ``density``."""
        d = _check_density(density)
        amplitude, phase = central_slices(d, axis=self.settings.slice_axis)
        support = amplitude > _SUPPORT_FRACTION * self.amplitude_max
        self.amplitude_image.set_data(amplitude)
        self.phase_image.set_data(np.where(support, phase, np.nan))


class DensityView:
    """Isosurface, phase colour bar and central slices of one density, laid out in ``spec``.

    Parameters
    ----------
    fig : Figure
        The figure.
    spec : SubplotSpec
        The region of ``fig`` to fill (e.g. ``fig.add_gridspec(1, 2)[0, 0]``).
    shape : (int, int, int)
        Object grid shape.
    amplitude_max : float
        Fixed amplitude scale of the movie; the isosurface is at ``settings.iso_fraction`` of it.
    settings : RenderSettings
        Camera and colours.
    fontsize : float
        Text size.
    title : str
        Title above the isosurface.
    extent : float, optional
        Half-width of the cube the 3-D view shows (see :class:`IsoPanel`).
    """

    def __init__(
        self, fig: Figure, spec: SubplotSpec, shape: tuple[int, int, int], amplitude_max: float,
        settings: RenderSettings, *, fontsize: float = 7.0, title: str = "", extent: float | None = None,
    ) -> None:
        check_number("amplitude_max", amplitude_max, low=0, open_low=True)
        # isosurface | slices (amplitude over phase) | phase colour bar beside the phase slice
        grid = spec.subgridspec(2, 3, width_ratios=[2.4, 1.0, 0.06], wspace=0.12, hspace=0.35)
        level = settings.iso_fraction * amplitude_max
        self.iso = IsoPanel(fig.add_subplot(grid[:, 0], projection="3d"), shape, level, settings, title=title,
                            fontsize=fontsize, extent=extent)
        self.slices = SlicePanels(fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1]), shape, amplitude_max,
                                  settings, fontsize=fontsize)
        self.colorbar = phase_colorbar(fig, fig.add_subplot(grid[1, 2]), settings, fontsize)

    def update(self, density: Any) -> Surface:
        """Show ``density``; returns its isosurface."""
        self.slices.update(density)
        return self.iso.update(density)


def render_density(
    density: Any,
    *,
    size: tuple[int, int] = (640, 360),
    dpi: float = 100.0,
    amplitude_max: float | None = None,
    settings: RenderSettings | None = None,
    title: str = "",
) -> np.ndarray:
    """One picture of ``density``: isosurface with phase colour bar and central slices.

    Parameters
    ----------
    density : array_like, shape (n, n, n)
        Complex density.
    size : (int, int)
        Picture (width, height) in pixels.
    dpi : float
        Dots per inch (sets text size relative to the picture).
    amplitude_max : float, optional
        Amplitude scale; default ``max |density|``.
    settings : RenderSettings, optional
        Camera and colours.
    title : str
        Title above the isosurface.

    Returns
    -------
    ndarray, shape (height, width, 3), uint8
    """
    d = _check_density(density)
    settings = settings or RenderSettings()
    size = check_size(size)
    scale = float(np.abs(d).max()) if amplitude_max is None else float(amplitude_max)
    if not scale > 0:
        raise ValueError("`density` is zero everywhere: pass `amplitude_max` to draw it")
    fig = new_figure(size, dpi)
    fig.subplots_adjust(left=0.02, right=0.97, bottom=0.08, top=0.9)
    extent = view_extent([d], settings.iso_fraction * scale) if settings.fit_view else None
    view = DensityView(fig, fig.add_gridspec(1, 1)[0, 0], d.shape, scale, settings,
                       fontsize=font_size(size, check_dpi(dpi)), title=title, extent=extent)
    view.update(d)
    return figure_rgb(fig, size)
