"""Displacement and strain of one reconstruction: :func:`postprocess_density`.

The reconstruction ``d = rho exp(i phi)`` of a Bragg peak carries, in its phase, the projection of
the lattice displacement on the reflection's ``G``: ``phi = G . u`` (the sign convention of the
simulator, :func:`sim.phase.strain_phase`; the twin ``conj(d(-r))``, which the intensity cannot tell
apart, flips the displacement's sign and mirrors the map, and leaves the strain's sign as it is).
For each frame, in order:

1. **support**: voxels whose amplitude exceeds ``support_threshold`` of the maximum, the largest
   connected part, holes filled;
2. **phase gradient** per object voxel along each array axis, from the *wrapped* phase: the
   central difference ``angle(d[j+1] conj(d[j-1])) / 2`` (one-sided at the support's edge). It
   never unwraps, so next to a dislocation, where the phase winds by ``2 pi`` around the line and
   no unwrapping is consistent, the gradient stays right on every voxel but the line's own;
3. **phase ramp and offset**: the ramp is the median of that gradient inside the support (a linear
   phase is a shift of the Bragg peak, i.e. the mean lattice spacing and rotation, not a
   heterogeneous strain); it is removed about the support's centre of mass, and the phase offset
   is set so that the phase is 0 at the centre of mass: the displacement is referenced to the
   support's centre of mass;
4. **displacement** ``u = phi / |G|`` in nm, ``phi`` unwrapped inside the support
   (:func:`skimage.restoration.unwrap_phase`; across a dislocation's cut it jumps by ``d``, as the
   lattice displacement does);
5. **heterogeneous strain** along ``G``: ``e = (G_hat . grad_r phi) / |G|``, with ``grad_r`` the
   laboratory-frame gradient of the ramp-free phase (:meth:`FrameTransform.lab_gradient`);
6. **lattice strain** (full geometry only): the mean strain ``|G_ref| / |q_peak| - 1`` from where the
   frame's Bragg peak sits in q (the window centre moved by the ramp), against the reference
   lattice constant; the absolute strain is the heterogeneous strain plus it;
7. **statistics** inside the support: mean, standard deviation and histogram of the strain.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from latenttune.geometry import BraggGeometry, FrameTransform
from latenttune.validation import check_int, check_number

log = logging.getLogger(__name__)

__all__ = ["StrainFrame", "StrainSettings", "phase_gradient", "postprocess_density", "support_of"]


@dataclass(frozen=True)
class StrainSettings:
    """How a reconstruction is post-processed.

    Attributes
    ----------
    support_threshold : float
        Support: amplitude above this fraction of the maximum.
    histogram_range : (float, float)
        Strain range of the per-frame histogram (values beyond fall into the end bins).
    histogram_bins : int
        Bins of the histogram.
    """

    support_threshold: float = 0.3
    histogram_range: tuple[float, float] = (-2e-3, 2e-3)
    histogram_bins: int = 40

    def __post_init__(self) -> None:
        check_number("support_threshold", self.support_threshold, low=0, high=1, open_low=True, open_high=True)
        low, high = (check_number("histogram_range", v) for v in self.histogram_range)
        if not low < high:
            raise ValueError(f"`histogram_range` must be (low, high) with low < high, got {self.histogram_range!r}")
        object.__setattr__(self, "histogram_range", (float(low), float(high)))
        check_int("histogram_bins", self.histogram_bins, low=1)

    @property
    def edges(self) -> np.ndarray:
        """Edges of the histogram's bins."""
        return np.linspace(*self.histogram_range, self.histogram_bins + 1)


@dataclass(frozen=True, eq=False)
class StrainFrame:
    """One reconstruction in physical units (see the module docstring).

    Attributes
    ----------
    support : ndarray of bool, (n, n, n)
    phase : ndarray float32, (n, n, n)
        Phase with the ramp and offset removed (wrapped to (-pi, pi]), rad; 0 outside the support.
    displacement : ndarray float32, (n, n, n)
        ``u`` along ``G``, nm, 0 at the support's centre of mass; 0 outside the support.
    strain : ndarray float32, (n, n, n)
        Heterogeneous strain along ``G``; 0 outside the support.
    ramp : ndarray (3,)
        Removed phase ramp, rad per object voxel along each array axis.
    centre_of_mass : ndarray (3,)
        The support's centre of mass, object voxels.
    lattice_strain : float
        Mean lattice strain against the reference lattice (NaN without the full geometry).
    mean, std : float
        Of the heterogeneous strain inside the support.
    histogram : ndarray int32, (bins,)
        Voxels of the support per strain bin (:attr:`StrainSettings.edges`).
    seconds : float
        Wall time of the post-processing.
    """

    support: np.ndarray
    phase: np.ndarray
    displacement: np.ndarray
    strain: np.ndarray
    ramp: np.ndarray
    centre_of_mass: np.ndarray
    lattice_strain: float
    mean: float
    std: float
    histogram: np.ndarray
    seconds: float

    def line(self) -> str:
        """The frame's strain in a few words."""
        text = f"strain {self.mean:+.2e} +- {self.std:.2e}"
        if math.isfinite(self.lattice_strain):
            text += f", lattice strain {self.lattice_strain:+.2e}"
        return text


def support_of(density: np.ndarray, threshold: float) -> np.ndarray:
    """Amplitude above ``threshold`` of its maximum: the largest connected part, holes filled."""
    amplitude = np.abs(np.asarray(density))
    top = float(amplitude.max())
    if not top > 0:
        return np.zeros(amplitude.shape, dtype=bool)
    inside = amplitude > threshold * top
    labels, count = ndimage.label(inside)
    if count > 1:
        sizes = ndimage.sum_labels(inside, labels, index=np.arange(1, count + 1))
        inside = labels == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(inside)


def phase_gradient(density: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Gradient of the wrapped phase per voxel along each axis, (3, n, n, n); NaN where undefined.

    Central differences of the wrapped phase, ``angle(d[j+1] conj(d[j-1])) / 2``, where both
    neighbours are in the support; one-sided ``angle(d[j+1] conj(d[j]))`` where only one is.
    """
    d = np.asarray(density, dtype=np.complex128)
    unit = np.where(support, d / np.maximum(np.abs(d), 1e-30), 0)
    out = np.full((3,) + d.shape, np.nan)
    for axis in range(3):
        fwd = np.roll(unit, -1, axis=axis)
        back = np.roll(unit, 1, axis=axis)
        has_f = np.roll(support, -1, axis=axis)
        has_b = np.roll(support, 1, axis=axis)
        edge = [slice(None)] * 3
        edge[axis] = -1
        has_f[tuple(edge)] = False  # no wrap-around at the box's edge
        edge[axis] = 0
        has_b[tuple(edge)] = False
        central = np.angle(fwd * np.conj(back)) / 2
        forward = np.angle(fwd * np.conj(unit))
        backward = np.angle(unit * np.conj(back))
        g = np.where(has_f & has_b, central, np.where(has_f, forward, np.where(has_b, backward, np.nan)))
        out[axis] = np.where(support, g, np.nan)
    return out


def _unwrap(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    from skimage.restoration import unwrap_phase

    return np.asarray(unwrap_phase(np.ma.array(phase, mask=~support)).filled(0.0))


def postprocess_density(density: np.ndarray, transform: FrameTransform, geometry: BraggGeometry,
                        settings: StrainSettings | None = None) -> StrainFrame:
    """Displacement, strain and their statistics of one reconstruction (see the module docstring).

    Parameters
    ----------
    density : ndarray, complex, (n, n, n)
        The reconstruction on the object grid.
    transform : FrameTransform
        Where its voxels sit (:func:`latenttune.geometry.frame_transform`).
    geometry : BraggGeometry
        The measurement's geometry (``|G|``, and whether it is full).
    settings : StrainSettings, optional
    """
    start = time.perf_counter()
    settings = StrainSettings() if settings is None else settings
    d = np.asarray(density)
    if d.ndim != 3 or d.dtype.kind != "c":
        raise ValueError(f"`density` must be a complex 3-D array (n, n, n), got {d.dtype} {d.shape}")
    if not isinstance(transform, FrameTransform):
        raise TypeError(f"`transform` must be a FrameTransform, got {type(transform).__name__}")
    support = support_of(d, settings.support_threshold)
    n = d.shape
    if support.sum() < 8:
        raise ValueError(f"`density` has a support of {int(support.sum())} voxel(s) above "
                         f"{settings.support_threshold} of its maximum amplitude: nothing to post-process")
    grad = phase_gradient(d, support)
    ramp = np.array([np.nanmedian(g[support]) for g in grad])
    coords = np.indices(n, dtype=float)
    com = np.array([c[support].mean() for c in coords])
    rel = coords - com[:, None, None, None]
    flat = d * np.exp(-1j * np.tensordot(ramp, rel, axes=1))
    # the offset: the phase at the centre of mass (amplitude-weighted over its 3^3 neighbourhood)
    near = support & (np.abs(rel) <= 1.5).all(axis=0)
    offset = float(np.angle(np.sum(flat[near] if near.any() else flat[support])))
    flat = flat * np.exp(-1j * offset)
    phase = np.where(support, np.angle(flat), 0.0)
    unwrapped = _unwrap(phase, support)
    centre = tuple(int(round(c)) for c in com)
    if support[centre]:
        unwrapped = unwrapped - 2 * np.pi * np.round(unwrapped[centre] / (2 * np.pi))
    g_norm = float(np.linalg.norm(transform.G))
    displacement = np.where(support, unwrapped / g_norm, 0.0)
    het = grad - ramp[:, None, None, None]
    lab = transform.lab_gradient(np.nan_to_num(het))
    g_hat = transform.G / g_norm
    strain = np.where(support, np.tensordot(g_hat, lab, axes=1) / g_norm, 0.0)
    values = strain[support]
    lattice = math.nan
    if geometry.full:  # the peak moved by the ramp: ramp * N / (2 pi) prepared voxels from the window centre
        q_peak = transform.q_centre + transform.q_step @ (ramp * transform.N / (2 * np.pi))
        lattice = float(geometry.G_norm / np.linalg.norm(q_peak) - 1)
    edges = settings.edges
    histogram = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0].astype(np.int32)
    return StrainFrame(
        support=support, phase=phase.astype(np.float32), displacement=displacement.astype(np.float32),
        strain=strain.astype(np.float32), ramp=ramp, centre_of_mass=com, lattice_strain=lattice,
        mean=float(values.mean()), std=float(values.std()), histogram=histogram,
        seconds=time.perf_counter() - start,
    )
