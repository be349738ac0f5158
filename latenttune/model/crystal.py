"""Physics-structured part of the decoder: a faceted crystal, a smooth strain phase and a dislocation.

A learned decoder with a low-dimensional latent draws rounded blobs: a gold-like nanocrystal has
tens of independent facets under an arbitrary orientation, more than a few latent numbers can
hold (``benchmarks/diagnose_latent.py`` found the old default model's representation floor on the
faceted scenarios close to its one-shot error: the decoder could not draw them;
``benchmarks/results/diagnosis_before.md``).
This module renders a density from a few explicit, physically meaningful parameters instead, with
no weights: the model's encoder predicts them and extremum seeking tunes them, from cost values
alone, like the learned part of the latent.

Parameters (all in the box ``[-1, 1]``, mapped affinely unless said; ``n`` the object grid):

``orientation`` (3)
    Rotation vector ``omega = u * pi/4`` (radians) of the crystal's cubic axes; ``[-pi/4, pi/4]^3``
    covers the fundamental zone of the cubic point group.
``facets`` (26)
    Distances of the {100} (6), {110} (12) and {111} (8) planes from the grid centre, ``d =
    d_min + (u + 1)/2 (d_max - d_min)`` with ``d_min = 0.05 n`` and ``d_max = 0.4 n`` voxels. A plane
    at or beyond the crystal's support value in its direction cuts nothing, so any convex crystal of
    these families (octahedra, cubes, cuboctahedra, truncated and jittered habits) is drawn exactly.
``phase`` (9)
    Coefficients (radians, ``u * 4``) of ``x, y, z, x^2, y^2, z^2, xy, xz, yz`` with ``x = r / (n/4)``:
    a smooth Bragg phase ``2 pi G . u(r)`` of a slowly varying displacement field.
``dislocation`` (10)
    Unnormalised line direction ``v`` (3, box units), a point on the line (3, ``0.4 n tan(1.3 u)``
    voxels: fine near the centre, far outside the crystal at the box edge), the winding ``w`` (1,
    ``G . b``: +1 or -1 for a visible dislocation, 0 for none) and three edge-field coefficients
    (radians, ``u * 0.6``). The phase is the isotropic Volterra field of a straight line::

        w * (theta + a * 2xy/r2 + b * (x^2 - y^2)/r2 + c * ln r2),   r2 = x^2 + y^2 + 0.5^2

    in coordinates ``(x, y)`` across the line, exactly the form :func:`sim.phase.
    dislocation_displacement` gives ``2 pi G . u`` for any mixed dislocation.

Amplitude: the partial-volume occupancy ``clip(0.5 - sdf, 0, 1)`` of the polytope (``sdf = max_j
(n_j . R^T r - d_j)``), the same rule the simulator renders with. Everything is differentiable
(torch) for training and for the representation-floor diagnosis; tracking uses cost values only.

The intensity cannot see a translation, the global phase or the twin ``conj(d(-r))``;
:func:`physical_targets` and :func:`parameter_loss` handle the twin and the 24 rotations of the
cubic group, which map the 26 planes onto themselves.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from sim.descriptor import SampleDescriptor
from sim.geometry import centred_coords
from sim.shapes import FACET_FAMILIES, FacetedCrystal, family_normals

from latenttune.validation import check_int

__all__ = [
    "NORMALS",
    "PARAMETER_GROUPS",
    "PhysicalLayout",
    "rotation_matrices",
    "render_physical",
    "physical_targets",
    "parameters_from_descriptor",
    "parameter_loss",
    "describe_parameters",
    "orientation_matrix",
    "misorientation_degrees",
]

#: The 26 plane normals, {100} then {110} then {111} (float64, unit).
NORMALS: np.ndarray = np.concatenate([family_normals(f) for f in FACET_FAMILIES])
#: Parameter groups in latent order, with their sizes.
PARAMETER_GROUPS: tuple[tuple[str, int], ...] = (("orientation", 3), ("facets", 26), ("phase", 9), ("dislocation", 10))

_ORIENTATION_MAX = math.pi / 4
_PHASE_MAX = 4.0
_EDGE_MAX = 0.6
_POINT_TAN = 1.3
_WINDING_GAIN = 1.25
_CORE_RADIUS = 0.5
# Fixed reference direction for the angle around the dislocation line (generic: no symmetry axis).
_REFERENCE = np.array([0.267, 0.535, 0.802]) / np.linalg.norm([0.267, 0.535, 0.802])


def _index_of(vectors: np.ndarray) -> np.ndarray:
    """Index in :data:`NORMALS` of each row of ``vectors`` (which must all be normals)."""
    match = np.abs(vectors @ NORMALS.T - 1.0) < 1e-6
    if not np.all(match.sum(axis=1) == 1):  # pragma: no cover - a programming error
        raise RuntimeError("vectors are not a permutation of the 26 plane normals")
    return match.argmax(axis=1)


def _cubic_group() -> np.ndarray:
    """The 24 proper rotations mapping the cube onto itself, ``(24, 3, 3)``."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            g = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(perm, signs)):
                g[row, col] = s
            if np.linalg.det(g) > 0:
                out.append(g)
    return np.array(out)


_GROUP = _cubic_group()
# For rotation g of the body frame (R' = R g) the distances become h[_GROUP_PERM[g]].
_GROUP_PERM = np.stack([_index_of(NORMALS @ g.T) for g in _GROUP])
# The twin reflects the crystal through the origin: the distance of plane j becomes that of -n_j.
_TWIN_PERM = _index_of(-NORMALS)


@dataclass(frozen=True)
class PhysicalLayout:
    """Where each physical parameter sits in the latent and how box units map to physical ones.

    Parameters
    ----------
    n : int
        Object grid size (voxels per axis).
    """

    n: int

    def __post_init__(self) -> None:
        check_int("n", self.n, low=8)

    size: ClassVar[int] = sum(s for _, s in PARAMETER_GROUPS)

    def slice(self, group: str) -> slice:
        """Slice of ``group`` ("orientation", "facets", "phase", "dislocation") in the parameters."""
        start = 0
        for name, size in PARAMETER_GROUPS:
            if name == group:
                return slice(start, start + size)
            start += size
        raise ValueError(f"`group` must be one of {[g for g, _ in PARAMETER_GROUPS]}, got {group!r}")

    @property
    def distance_range(self) -> tuple[float, float]:
        """Facet distances (voxels) at box values -1 and +1."""
        return 0.05 * self.n, 0.4 * self.n

    @property
    def phase_length(self) -> float:
        """Length (voxels) that normalises the polynomial phase coordinates."""
        return self.n / 4.0

    def distances(self, u: Any) -> Any:
        """Box values -> facet distances (voxels); numpy or torch."""
        lo, hi = self.distance_range
        return lo + (u + 1.0) * (0.5 * (hi - lo))

    def distance_units(self, d: Any) -> Any:
        """Facet distances (voxels) -> box values (inverse of :meth:`distances`, not clipped)."""
        lo, hi = self.distance_range
        return (d - lo) / (0.5 * (hi - lo)) - 1.0

    def line_point(self, u: Any) -> Any:
        """Box values -> dislocation line point (voxels)."""
        scale = 0.4 * self.n
        return scale * (torch.tan(_POINT_TAN * u) if isinstance(u, torch.Tensor) else np.tan(_POINT_TAN * np.asarray(u)))

    def line_point_units(self, p: Any) -> np.ndarray:
        """Dislocation line point (voxels) -> box values (inverse of :meth:`line_point`)."""
        return np.arctan(np.asarray(p, dtype=np.float64) / (0.4 * self.n)) / _POINT_TAN


def rotation_matrices(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(B, 3, 3)`` of rotation vectors ``(B, 3)`` (Rodrigues; smooth at 0)."""
    theta = omega.norm(dim=-1, keepdim=True).unsqueeze(-1)  # (B, 1, 1)
    zero = torch.zeros_like(omega[:, 0])
    wx, wy, wz = omega.unbind(-1)
    K = torch.stack([zero, -wz, wy, wz, zero, -wx, -wy, wx, zero], dim=-1).view(-1, 3, 3)
    a = torch.sinc(theta / math.pi)  # sin(t)/t
    b = 0.5 * torch.sinc(theta / (2 * math.pi)).square()  # (1 - cos t)/t^2
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a * K + b * (K @ K)


class _Grid:
    """Cached coordinate tensors of an ``n^3`` grid (per device and dtype)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._cache: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._cache:
            # normal tensors even when first asked for under torch.inference_mode(): the cache also
            # serves autograd (training, the representation-floor fit), which refuses inference tensors
            with torch.inference_mode(False):
                self._cache[key] = self._build(device, dtype)
        return self._cache[key]

    def _build(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        coords = torch.tensor(centred_coords(self.n).reshape(3, -1), dtype=dtype, device=device)
        x = coords / (self.n / 4.0)
        basis = torch.stack([x[0], x[1], x[2], x[0] ** 2, x[1] ** 2, x[2] ** 2, x[0] * x[1], x[0] * x[2], x[1] * x[2]])
        return coords, basis


_GRIDS: dict[int, _Grid] = {}


def _grid(n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if n not in _GRIDS:
        _GRIDS[n] = _Grid(n)
    return _GRIDS[n].get(device, dtype)


def _dislocation_phase(u: torch.Tensor, layout: PhysicalLayout, coords: torch.Tensor) -> torch.Tensor:
    """Volterra phase ``(B, n^3)`` of the dislocation parameters ``u`` ``(B, 10)``."""
    v, point, edge = u[:, 0:3], layout.line_point(u[:, 3:6]), u[:, 7:10] * _EDGE_MAX
    w = (u[:, 6:7] * _WINDING_GAIN).clamp(-1.0, 1.0)
    t = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ref = torch.as_tensor(_REFERENCE, dtype=u.dtype, device=u.device).expand_as(t)
    e1 = ref - (ref * t).sum(-1, keepdim=True) * t
    e1 = e1 / e1.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    e2 = torch.cross(t, e1, dim=-1)
    rel = coords.unsqueeze(0) - point.unsqueeze(-1)  # (B, 3, M)
    x = (e1.unsqueeze(-1) * rel).sum(1)
    y = (e2.unsqueeze(-1) * rel).sum(1)
    on_line = x.square() + y.square() < 1e-12  # atan2's gradient is undefined there
    theta = torch.atan2(torch.where(on_line, torch.zeros_like(y), y), torch.where(on_line, torch.ones_like(x), x))
    r2 = x.square() + y.square() + _CORE_RADIUS**2
    field = theta + edge[:, 0:1] * (2 * x * y / r2) + edge[:, 1:2] * ((x.square() - y.square()) / r2) + edge[:, 2:3] * torch.log(r2)
    return w * field


def render_physical(u: torch.Tensor, layout: PhysicalLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude and phase of physical parameters.

    Parameters
    ----------
    u : Tensor, shape (B, layout.size)
        Parameters in box units (see the module docstring).
    layout : PhysicalLayout

    Returns
    -------
    amplitude, phase : Tensor, shape (B, n, n, n)
        Occupancy in ``[0, 1]`` and phase (radians).
    """
    n = layout.n
    coords, basis = _grid(n, u.device, u.dtype)
    R = rotation_matrices(u[:, layout.slice("orientation")] * _ORIENTATION_MAX)  # (B, 3, 3)
    normals = torch.as_tensor(NORMALS, dtype=u.dtype, device=u.device)
    world_normals = torch.einsum("bik,jk->bji", R, normals)  # (B, 26, 3): R n_j
    d = layout.distances(u[:, layout.slice("facets")])  # (B, 26)
    sdf = (world_normals @ coords - d.unsqueeze(-1)).amax(dim=1)  # (B, M)
    amplitude = (0.5 - sdf).clamp(0.0, 1.0)
    phase = (u[:, layout.slice("phase")] * _PHASE_MAX) @ basis
    phase = phase + _dislocation_phase(u[:, layout.slice("dislocation")], layout, coords)
    shape = (-1, n, n, n)
    return amplitude.view(shape), phase.view(shape)


# ---- supervision ---------------------------------------------------------------------------


def physical_targets(descriptor: SampleDescriptor | None, shift: Any, layout: PhysicalLayout) -> dict[str, np.ndarray]:
    """Training targets of one sample whose density was rolled by ``shift`` voxels.

    Parameters
    ----------
    descriptor : SampleDescriptor or None
        The sample's ground truth (from :mod:`sim.training`).
    shift : (3,) ints
        The integer roll applied to the density (its centring), voxels per axis.
    layout : PhysicalLayout

    Returns
    -------
    dict of ndarray (float32)
        ``rotation`` (3, 3), ``facets`` (26,) box units, ``shape_valid`` (), ``direction`` (3,),
        ``point`` (3,) voxels, ``winding`` () box units, ``line_valid`` (), ``winding_valid`` ().
        Shapes other than faceted crystals have ``shape_valid = 0``; a sample with one dislocation
        line has ``line_valid = 1``; one with none has ``winding = 0`` (no line to place); two or
        more lines are not supervised.
    """
    shift = np.asarray(shift, dtype=np.float64)
    out = {
        "rotation": np.eye(3), "facets": np.zeros(26), "shape_valid": np.zeros(()),
        "direction": np.array([0.0, 0.0, 1.0]), "point": np.zeros(3), "winding": np.zeros(()),
        "line_valid": np.zeros(()), "winding_valid": np.zeros(()),
    }
    shape = None if descriptor is None else descriptor.shape
    if isinstance(shape, FacetedCrystal):
        R = shape.rotation_matrix
        support = (NORMALS @ shape.vertices().T).max(axis=1)  # body frame, about the body origin
        origin = np.asarray(shape.centre) + shift  # body origin in centred grid coordinates
        out["rotation"] = R
        out["facets"] = layout.distance_units(support + (NORMALS @ R.T) @ origin)
        out["shape_valid"] = np.ones(())
    if descriptor is not None:
        lines = descriptor.dislocations
        if len(lines) == 0:
            out["winding_valid"] = np.ones(())
        elif len(lines) == 1:
            line = lines[0]
            out.update(direction=np.asarray(line.direction), point=np.asarray(line.point) + shift,
                       winding=np.asarray(np.clip(line.winding, -1, 1) / _WINDING_GAIN), line_valid=np.ones(()),
                       winding_valid=np.ones(()))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _rotation_vector(R: np.ndarray) -> np.ndarray:
    """Rotation vector (radians) of a rotation matrix (numpy)."""
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    angle = math.acos(cos)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle < 1e-9:
        return np.zeros(3)
    if np.linalg.norm(axis) < 1e-9:  # angle = pi: axis from the symmetric part
        w, vecs = np.linalg.eigh((R + np.eye(3)) / 2)
        return vecs[:, -1] * angle
    return axis / np.linalg.norm(axis) * angle


def parameters_from_descriptor(
    descriptor: SampleDescriptor, layout: PhysicalLayout, shift: Any = (0, 0, 0), phase_coefficients: Any = None
) -> np.ndarray:
    """The parameter vector (box units, ``(layout.size,)``) that draws a simulated sample's shape and line.

    The crystal's orientation is taken as the cubic-group equivalent with the smallest rotation
    (inside the box when the orientation lies in the fundamental zone), facet distances are the
    crystal's support values, and the dislocation (at most one) gets its exact Volterra edge
    coefficients. ``phase_coefficients`` (9, radians) sets the smooth phase (default zero).
    Values outside the box are clipped.

    Raises
    ------
    ValueError
        If the shape is not a faceted crystal or there is more than one dislocation line.
    """
    if not isinstance(descriptor.shape, FacetedCrystal):
        raise ValueError(f"`descriptor.shape` must be a FacetedCrystal, got {type(descriptor.shape).__name__}")
    if len(descriptor.dislocations) > 1:
        raise ValueError(f"at most one dislocation line can be drawn, got {len(descriptor.dislocations)}")
    targets = physical_targets(descriptor, shift, layout)
    R = targets["rotation"].astype(np.float64)
    candidates = [_rotation_vector(R @ g) for g in _GROUP]
    best = int(np.argmin([np.abs(c).max() for c in candidates]))
    u = np.zeros(layout.size)
    u[layout.slice("orientation")] = candidates[best] / _ORIENTATION_MAX
    u[layout.slice("facets")] = targets["facets"].astype(np.float64)[_GROUP_PERM[best]]
    if phase_coefficients is not None:
        u[layout.slice("phase")] = np.asarray(phase_coefficients, dtype=np.float64) / _PHASE_MAX
    dis = np.zeros(10)
    if descriptor.dislocations:
        line = descriptor.dislocations[0]
        t = np.asarray(line.direction)
        w = line.winding
        b = np.asarray(line.burgers)
        G = np.asarray(line.G)
        nu = line.poisson_ratio
        b_edge = b - np.dot(b, t) * t
        edge = np.zeros(3)
        if np.linalg.norm(b_edge) > 1e-12:
            be = float(np.linalg.norm(b_edge))
            e1b = b_edge / be
            e2b = np.cross(t, e1b)
            a_b = be * np.dot(G, e1b) / (4 * (1 - nu))
            b_b = -be * np.dot(G, e2b) / (4 * (1 - nu))
            c = -be * np.dot(G, e2b) * (1 - 2 * nu) / (4 * (1 - nu))
            e1 = _REFERENCE - np.dot(_REFERENCE, t) * t
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(t, e1)
            psi = math.atan2(np.dot(e1b, e2), np.dot(e1b, e1))
            rotated = (b_b - 1j * a_b) * np.exp(-2j * psi)
            edge = np.array([-rotated.imag, rotated.real, c]) * (w if w != 0 else 1.0)
        dis[0:3] = t
        dis[3:6] = layout.line_point_units(np.asarray(line.point) + np.asarray(shift, dtype=np.float64))
        dis[6] = np.clip(w, -1, 1) / _WINDING_GAIN
        dis[7:10] = edge / _EDGE_MAX
    u[layout.slice("dislocation")] = dis
    return np.clip(u, -1.0, 1.0)


def parameter_loss(u: torch.Tensor, targets: dict[str, torch.Tensor], layout: PhysicalLayout) -> torch.Tensor:
    """Supervised loss of predicted parameters, for the target and its twin: ``(B, 2)``.

    For each twin choice the shape term is minimised over the 24 rotations of the cubic group
    (which relabel the planes): ``|R_pred - R g|_F^2 / 8 + mean((u_facets - h[g])^2)``. The dislocation
    term is ``(w_pred s - w)^2 + (1 - (t_pred . t)^2) + |p_perp|^2 / (0.2 n)^2`` with ``s = sign(t_pred . t)``
    (the pair ``(t, w)`` equals ``(-t, -w)``) and ``p_perp`` the offset of the predicted point from the
    true line; the twin maps the point to ``-p`` and the winding to ``-w``.
    """
    B = u.shape[0]
    group = torch.as_tensor(_GROUP, dtype=u.dtype, device=u.device)  # (24, 3, 3)
    perm = torch.as_tensor(_GROUP_PERM, device=u.device)  # (24, 26)
    R_pred = rotation_matrices(u[:, layout.slice("orientation")] * _ORIENTATION_MAX)
    R_true = targets["rotation"]  # (B, 3, 3)
    rot = (R_pred.unsqueeze(1) - R_true.unsqueeze(1) @ group.unsqueeze(0)).square().sum((-2, -1)) / 8  # (B, 24)
    facets = u[:, layout.slice("facets")]
    losses = []
    for twin in (False, True):
        h = targets["facets"][:, torch.as_tensor(_TWIN_PERM, device=u.device)] if twin else targets["facets"]
        dist = (facets.unsqueeze(1) - h[:, perm]).square().mean(-1)  # (B, 24)
        shape_term = (rot + dist).amin(dim=1) * targets["shape_valid"]
        dis = u[:, layout.slice("dislocation")]
        v = dis[:, 0:3]
        t_pred = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        t_true = targets["direction"]
        cos = (t_pred * t_true).sum(-1)
        sign = torch.where(cos < 0, -torch.ones_like(cos), torch.ones_like(cos))
        point_true = -targets["point"] if twin else targets["point"]
        winding_true = -targets["winding"] if twin else targets["winding"]
        offset = layout.line_point(dis[:, 3:6]) - point_true
        perp = offset - (offset * t_true).sum(-1, keepdim=True) * t_true
        winding_term = (dis[:, 6] * torch.where(targets["line_valid"] > 0, sign, torch.ones_like(sign)) - winding_true).square()
        line_term = (1 - cos.square()) + perp.square().sum(-1) / (0.2 * layout.n) ** 2
        losses.append(shape_term + winding_term * targets["winding_valid"] + line_term * targets["line_valid"])
    return torch.stack(losses, dim=1).view(B, 2)


def describe_parameters(u: Any, layout: PhysicalLayout) -> dict[str, Any]:
    """Physical reading of one parameter vector (box units) for reports.

    Returns
    -------
    dict
        ``rotation_vector_deg`` (3,), ``facet_distances`` (26,) voxels, ``phase_coefficients`` (9,)
        radians, ``dislocation`` (``winding``, ``direction`` (3,), ``point`` (3,) voxels).
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    if u.shape != (layout.size,):
        raise ValueError(f"`u` must have {layout.size} physical parameters, got {u.shape}")
    dis = u[layout.slice("dislocation")]
    v = dis[0:3]
    return {
        "rotation_vector_deg": np.degrees(u[layout.slice("orientation")] * _ORIENTATION_MAX),
        "facet_distances": layout.distances(u[layout.slice("facets")]),
        "phase_coefficients": u[layout.slice("phase")] * _PHASE_MAX,
        "dislocation": {
            "winding": float(np.clip(dis[6] * _WINDING_GAIN, -1, 1)),
            "direction": v / max(np.linalg.norm(v), 1e-6),
            "point": layout.line_point(dis[3:6]),
        },
    }


def orientation_matrix(u: Any) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` of the crystal's cubic axes encoded in parameters ``u`` (box units)."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.size < 3 or not np.isfinite(u[:3]).all():
        raise ValueError(f"`u` must hold at least 3 finite numbers (the orientation first), got {u.size}")
    return rotation_matrices(torch.as_tensor(u[None, :3] * _ORIENTATION_MAX))[0].numpy()


def misorientation_degrees(R_a: Any, R_b: Any) -> float:
    """Smallest rotation angle (degrees) between two cubic crystal orientations.

    The cubic point group's 24 rotations map a crystal onto itself, so the angle is the minimum over
    them of the angle of ``R_a^T R_b g``; it lies in [0, 62.8] degrees.
    """
    R_a, R_b = np.asarray(R_a, dtype=np.float64), np.asarray(R_b, dtype=np.float64)
    if R_a.shape != (3, 3) or R_b.shape != (3, 3):
        raise ValueError(f"`R_a` and `R_b` must be 3x3 rotation matrices, got {R_a.shape} and {R_b.shape}")
    cosines = (np.einsum("ij,gjk->gik", R_a.T @ R_b, _GROUP).trace(axis1=1, axis2=2) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cosines.max(), -1.0, 1.0))))
