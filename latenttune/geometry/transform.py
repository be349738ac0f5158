"""From the detector frame to the laboratory and crystal frames: :func:`frame_transform`.

A prepared frame is an ``N^3`` window of the scan (axes: rocking angle, detector row, detector
column), ``b_k`` input voxels summed per voxel along axis ``k``, its centre at input voxel ``c``.
xrayutilities (:meth:`xrayutilities.experiment.QConversion.area`) gives the scattering vector ``q``
(laboratory frame) of the voxels around the centre; over the window, ``q`` is linear in the voxel
index to within a few parts in ``10^3`` of its range (the Ewald sphere's curvature across the
detector: 2.8e-3 for a 128-pixel window at 0.8 m, measured against xrayutilities' q of the
window's corners in ``tests/test_strain.py``), so::

    q(i) = q0 + B (i - N/2)        B = [dq/di_0, dq/di_1, dq/di_2], in 1/nm per voxel

The columns of ``B`` are not orthogonal: the rocking direction is tilted against the detector
plane (by ``theta`` in the simple case). The reconstruction is the inverse discrete Fourier
transform of the window, so its voxel ``j`` sits at ``r(j) = T (j - n/2)`` with::

    T = (2 pi / N) (B^-1)^T        (columns: nm per object voxel along each array axis)

since then ``q.r = q0.r + 2 pi (i - N/2).(j - n/2) / N``, the discrete Fourier kernel. The voxel
sizes are the lengths of ``T``'s columns; the phase gradient in the laboratory frame is
``grad_r phi = B (grad_j phi) N / (2 pi)`` (that is ``(T^-1)^T grad_j phi``).

The crystal frame used here has ``z`` along the measured reflection's ``G`` (the window centre's
``q``), ``x`` along the part of the incident beam perpendicular to ``G``, ``y = z x x``: one
reflection fixes the crystal only up to a rotation about ``G``, so this is the frame the strain
``e_zz`` is stated in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from latenttune.geometry.setup import BraggGeometry
from latenttune.validation import check_int

log = logging.getLogger(__name__)

__all__ = ["FrameTransform", "frame_transform", "q_at"]


@dataclass(frozen=True, eq=False)
class FrameTransform:
    """Where the voxels of a prepared frame and of its reconstruction sit.

    Attributes
    ----------
    N : int
        Diffraction grid.
    q_centre : ndarray (3,)
        ``q`` of the window's centre voxel ``N/2``, laboratory frame, 1/nm.
    q_step : ndarray (3, 3)
        ``B``: column ``k`` is ``q``'s change per prepared voxel along axis ``k``, 1/nm.
    real_basis : ndarray (3, 3)
        ``T``: column ``k`` is the laboratory displacement per object voxel along axis ``k``, nm.
    G : ndarray (3,)
        ``G`` of the reference lattice, laboratory frame, 1/nm, along ``q_peak``.
    q_peak : ndarray (3,)
        ``q`` of the Bragg peak's centre of mass (the window centre in the simple approximation).
    lab_to_crystal : ndarray (3, 3)
        Rows: the crystal frame's x, y, z axes in the laboratory frame (``z`` along ``G``).
    """

    N: int
    q_centre: np.ndarray
    q_step: np.ndarray
    real_basis: np.ndarray
    G: np.ndarray
    q_peak: np.ndarray
    lab_to_crystal: np.ndarray

    @property
    def voxel_size_nm(self) -> np.ndarray:
        """Length of each object voxel's edge along the three array axes, nm."""
        return np.linalg.norm(self.real_basis, axis=0)

    @property
    def voxel_volume_nm3(self) -> float:
        """Volume of one object voxel, nm^3."""
        return float(abs(np.linalg.det(self.real_basis)))

    @property
    def axis_angles_deg(self) -> np.ndarray:
        """Angles between the real-space voxel axes (01, 02, 12), degrees: 90 for an orthogonal grid."""
        T = self.real_basis / self.voxel_size_nm
        pairs = ((0, 1), (0, 2), (1, 2))
        return np.degrees(np.arccos(np.clip([T[:, a] @ T[:, b] for a, b in pairs], -1, 1)))

    def lab_gradient(self, index_gradient: np.ndarray) -> np.ndarray:
        """The laboratory-frame gradient (1/nm) of a field whose gradient per object voxel is ``index_gradient`` (3, ...)."""
        inv_t = np.linalg.inv(self.real_basis).T
        return np.tensordot(inv_t, np.asarray(index_gradient), axes=1)

    def to_dict(self) -> dict[str, list]:
        """Plain values (attributes, JSON)."""
        return {"N": int(self.N), "q_centre": self.q_centre.tolist(), "q_step": self.q_step.tolist(),
                "real_basis": self.real_basis.tolist(), "G": self.G.tolist(), "q_peak": self.q_peak.tolist(),
                "lab_to_crystal": self.lab_to_crystal.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> FrameTransform:
        """Read :meth:`to_dict`'s values back."""
        arr = {k: np.asarray(values[k], dtype=float) for k in ("q_centre", "q_step", "real_basis", "G", "q_peak",
                                                                "lab_to_crystal")}
        return cls(N=int(values["N"]), **arr)


def _qconversion(geometry: BraggGeometry, centre: Sequence[float], binning: Sequence[int], points: int):
    """xrayutilities' q of a ``points^3`` block of (binned) voxels centred on input voxel ``centre``."""
    import xrayutilities as xu

    setup = geometry.setup(detector_centre=(float(centre[1]), float(centre[2])))
    qconv = xu.experiment.QConversion(list(setup.sample_circles), list(setup.detector_circles),
                                      list(setup.beam_direction))
    half = (points - 1) / 2
    # a virtual detector of points x points binned pixels around the centre pixel
    cch = [(setup.direct_beam[a] - centre[1 + a]) / binning[1 + a] + half for a in (0, 1)]
    pixel_m = [geometry.pixel_size_um[a] * 1e-6 * binning[1 + a] for a in (0, 1)]
    qconv.init_area(setup.detector_row_direction, setup.detector_column_direction, cch1=cch[0], cch2=cch[1],
                    Nch1=points, Nch2=points, distance=geometry.detector_distance_m, pwidth1=pixel_m[0],
                    pwidth2=pixel_m[1])
    offsets = (np.arange(points) - half) * binning[0]
    if geometry.full:  # the rocking circle stood at its listed angle at the scan's first frame (index 0)
        rocking = setup.sample_angles_deg[setup.rocking_circle] + (centre[0] + offsets) * geometry.rocking_step_deg
    else:  # the simple approximation: the window centre is at the Bragg angle
        rocking = setup.sample_angles_deg[setup.rocking_circle] + offsets * geometry.rocking_step_deg
    angles = [np.full(points, a) for a in setup.sample_angles_deg]
    angles[setup.rocking_circle] = rocking
    angles += [np.full(points, a) for a in setup.detector_angles_deg]
    qx, qy, qz = qconv.area(*angles, en=geometry.energy_kev * 1e3)
    q = np.stack([np.reshape(qx, (points,) * 3), np.reshape(qy, (points,) * 3), np.reshape(qz, (points,) * 3)])
    return q * 10.0  # 1/Angstrom -> 1/nm; shape (3, points, points, points)


def q_step_of(q: np.ndarray) -> np.ndarray:
    """Central differences of a ``(3, 3, 3, 3)`` block of q about its centre: column ``k`` per voxel along axis ``k``."""
    return np.stack([(q[:, 2, 1, 1] - q[:, 0, 1, 1]) / 2, (q[:, 1, 2, 1] - q[:, 1, 0, 1]) / 2,
                     (q[:, 1, 1, 2] - q[:, 1, 1, 0]) / 2], axis=1)


def q_at(geometry: BraggGeometry, coords: Sequence[float]) -> np.ndarray:
    """``q`` (laboratory frame, 1/nm) of input voxel ``coords`` = (rocking index, row, column), by xrayutilities."""
    return _qconversion(geometry, [float(c) for c in coords], (1, 1, 1), 1)[:, 0, 0, 0]


def frame_transform(geometry: BraggGeometry, N: int, binning: Sequence[int] = (1, 1, 1),
                    centre: Sequence[float] = (0.0, 0.0, 0.0), peak: Sequence[float] | None = None) -> FrameTransform:
    """The transform of a prepared window (see the module docstring).

    Parameters
    ----------
    geometry : BraggGeometry
    N : int
        The prepared grid.
    binning : three ints
        Input voxels summed per prepared voxel along each axis.
    centre : three floats
        Input voxel (rocking index, row, column) at the centre of prepared voxel ``N // 2``.
    peak : three floats, optional
        Input voxel of the Bragg peak's centre of mass (default: ``centre``); with the full geometry
        its ``q`` gives the mean lattice strain.
    """
    if not isinstance(geometry, BraggGeometry):
        raise TypeError(f"`geometry` must be a BraggGeometry, got {type(geometry).__name__}")
    N = check_int("N", N, low=2)
    b = tuple(check_int("binning", v, low=1) for v in binning)
    if len(b) != 3 or len(centre) != 3:
        raise ValueError(f"`binning` and `centre` must have three entries, got {binning!r}, {centre!r}")
    q = _qconversion(geometry, centre, b, 3)
    q0 = q[:, 1, 1, 1]
    B = q_step_of(q)
    if abs(np.linalg.det(B)) < 1e-12 * np.linalg.norm(B) ** 3:
        raise ValueError("the geometry gives a degenerate q grid (the rocking direction lies in the detector "
                         "plane): check the rocking circle and the detector directions")
    T = (2 * np.pi / N) * np.linalg.inv(B).T
    q_peak = q0 if peak is None or not geometry.full else q_at(geometry, peak)
    g_hat = q_peak / np.linalg.norm(q_peak)
    beam = np.asarray(geometry.setup().beam_direction, dtype=float)
    x = beam - (beam @ g_hat) * g_hat
    x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-9 else np.cross(g_hat, [1.0, 0.0, 0.0])
    y = np.cross(g_hat, x)
    transform = FrameTransform(N=N, q_centre=q0, q_step=B, real_basis=T, G=geometry.G_norm * g_hat,
                               q_peak=q_peak, lab_to_crystal=np.stack([x, y, g_hat]))
    log.info("voxel size %s nm, axis angles %s deg", np.round(transform.voxel_size_nm, 2),
             np.round(transform.axis_angles_deg, 1))
    return transform
