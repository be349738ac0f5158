"""Every frame's latent read out as named physical quantities: :func:`read_out` and :class:`PhysicalReadout`.

A physics-structured model (``ModelConfig(physical=True)``, the default model) starts its latent with
48 explicit crystal parameters in box units (:mod:`latenttune.model.crystal`) and ends it with a few
learned numbers that drive a learned residual of the decoder. :func:`read_out` turns one latent into
what a user asks about a crystal: its orientation (rotation matrix and rotation vector, degrees),
its facet distances (voxels) and which facets bound it, its size (voxels), the smooth phase's
coefficients (radians), the dislocation line (present or not, winding, position in voxels and
direction), and how much of the decoded density the learned residual draws.

Cost: one :func:`~latenttune.model.crystal.render_physical` call on the CPU (no network decode) and
one pass of the 26 planes over the voxels inside the crystal; ``benchmarks/bench_readout.py`` reports the
time per frame (about 2 ms at n = 32 on one CPU thread).

Frames: the readout is in the laboratory frame, the frame of the decoded densities. A tracker that
adopted a symmetric view (:mod:`latenttune.model.views`; pass the model seen through it, a
:class:`~latenttune.model.views.ViewedAutoencoder`) decodes ``g^-1(D(z))``: the readout then maps
the parameters through the view (a signed permutation of the grid axes about the grid centre).

Where it is written: :func:`readout_rows` gives the per-frame values under the names of
:data:`READOUT_FIELDS`, the results file's ``readout`` fields (:mod:`latenttune.io.rows`, written by
:func:`latenttune.tracking.replay.frame_row`, read back as :class:`latenttune.io.Results` attributes),
and the :class:`~latenttune.bluesky.devices.LatentTracker` publishes them as signals of the same names.

Ambiguities the intensity cannot resolve stay in the readout: a translation (the model draws the
crystal centred as it was trained: amplitude-weighted centroid at index ``n // 2``), the 24
cubic-equivalent descriptions of one orientation (each relabels the facets), and the twin
``conj(d(-r))``, which keeps the orientation, sends the distance of each plane to the opposite
plane's, negates the quadratic phase coefficients and negates the dislocation point and winding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from latenttune.io.rows import PHASE_TERMS, READOUT_SHAPES
from latenttune.model.crystal import (
    _GROUP,
    _GROUP_PERM,
    _TWIN_PERM,
    NORMALS,
    PhysicalLayout,
    _rotation_vector,
    describe_parameters,
    orientation_matrix,
    render_physical,
)
from latenttune.model.symmetry import GridView
from sim.geometry import centred_coords

__all__ = ["PHASE_TERMS", "READOUT_FIELDS", "PhysicalReadout", "facet_activity", "read_out", "readout_rows",
           "twin_readout"]

READOUT_FIELDS: tuple[str, ...] = tuple(READOUT_SHAPES)
"""Names of the per-frame readout fields (results-file datasets, :class:`latenttune.io.Results`
attributes and :class:`~latenttune.bluesky.devices.LatentTracker` signals), in order; units and meaning
in :data:`latenttune.io.rows.FIELDS` (group ``readout``). Stable: a test pins them."""

_PRESENT_WINDING = 0.5  # |winding| from which the latent draws a dislocation
_TIE = 1e-6  # voxels: a plane must beat every other by this much to be the nearest one at a voxel


@dataclass(frozen=True, eq=False)
class PhysicalReadout:
    """One latent read out as named physical quantities (laboratory frame, centred voxel coordinates).

    Attributes
    ----------
    orientation_matrix : ndarray, shape (3, 3)
        Rotation of the crystal's cubic axes (body to grid coordinates, :mod:`sim.geometry`). Any of
        the 24 cubic-equivalent rotations ``R g`` describes the same crystal, with the facets relabelled.
    orientation_deg : ndarray, shape (3,)
        Its rotation vector, degrees (axis times angle).
    facet_distances : ndarray, shape (26,)
        Distances (voxels) from the grid centre of the {100} (6), {110} (12) and {111} (8) planes, in
        the order of :data:`latenttune.model.crystal.NORMALS` in the crystal frame of ``orientation_matrix``
        (plane ``j`` has the grid normal ``orientation_matrix @ NORMALS[j]``).
    active_facets : ndarray of bool, shape (26,)
        The planes that bound the rendered crystal: plane ``j`` is the nearest plane (by the signed
        distance the renderer uses) at one or more voxels inside the crystal (occupancy >= 0.5). A plane
        beyond the crystal, or touching it only at an edge or a corner, is inactive; so is a face too
        small to hold a voxel of its own.
    size_voxels : float
        Equivalent-sphere radius ``(3 V / 4 pi)^(1/3)`` (voxels) of the rendered crystal's occupancy
        ``V`` (voxels^3).
    phase_coefficients : ndarray, shape (9,)
        Coefficients (radians) of the smooth phase in ``x, y, z, x^2, y^2, z^2, xy, xz, yz`` with ``x
        = r / (n/4)`` (:data:`PHASE_TERMS`).
    dislocation_present : bool
        Whether the latent draws a dislocation line (``|winding| >= 0.5``).
    dislocation_winding : int
        The winding ``G . b`` rounded to -1, 0 or +1: the phase turns by ``2 pi`` times it
        counter-clockwise about ``dislocation_direction``. ``(direction, winding)`` and
        ``(-direction, -winding)`` are the same line.
    dislocation_point : ndarray, shape (3,)
        The point of the line closest to the grid centre (voxels; meaningful when present).
    dislocation_direction : ndarray, shape (3,)
        Unit direction of the line.
    learned_norm : float
        Euclidean norm of the learned part of the latent (box units).
    learned_fraction : float
        ``||decoded - explicit|| / ||decoded||``: the share of the decoded density that the learned
        residual draws, ``explicit`` being the rendered crystal ``amplitude * exp(i phase)``; NaN when
        the decoded density was not given.
    """

    orientation_matrix: np.ndarray
    orientation_deg: np.ndarray
    facet_distances: np.ndarray
    active_facets: np.ndarray
    size_voxels: float
    phase_coefficients: np.ndarray
    dislocation_present: bool
    dislocation_winding: int
    dislocation_point: np.ndarray
    dislocation_direction: np.ndarray
    learned_norm: float
    learned_fraction: float


def readout_rows(readout: PhysicalReadout) -> dict[str, np.ndarray]:
    """The readout's per-frame values under the names of :data:`READOUT_FIELDS` (numpy arrays)."""
    return {
        "readout_orientation_deg": np.asarray(readout.orientation_deg, dtype=np.float64),
        "readout_facet_distances": np.asarray(readout.facet_distances, dtype=np.float64),
        "readout_active_facets": np.asarray(readout.active_facets, dtype=bool),
        "readout_size": np.asarray(readout.size_voxels, dtype=np.float64),
        "readout_phase_coefficients": np.asarray(readout.phase_coefficients, dtype=np.float64),
        "readout_dislocation_present": np.asarray(readout.dislocation_present, dtype=bool),
        "readout_dislocation_winding": np.asarray(readout.dislocation_winding, dtype=np.int8),
        "readout_dislocation_point": np.asarray(readout.dislocation_point, dtype=np.float64),
        "readout_dislocation_direction": np.asarray(readout.dislocation_direction, dtype=np.float64),
        "readout_learned_norm": np.asarray(readout.learned_norm, dtype=np.float64),
        "readout_learned_fraction": np.asarray(readout.learned_fraction, dtype=np.float64),
    }


def facet_activity(rotation: Any, distances: Any, n: int, inside: Any = None) -> np.ndarray:
    """Which of the 26 planes bound a crystal rendered on an ``n^3`` grid (see :attr:`PhysicalReadout.active_facets`).

    Parameters
    ----------
    rotation : (3, 3) array
        Rotation of the cubic axes (plane ``j`` has the grid normal ``rotation @ NORMALS[j]``).
    distances : (26,) array
        Plane distances from the grid centre (voxels).
    n : int
        Grid size.
    inside : bool array, shape (n, n, n), optional
        The voxels inside the crystal (occupancy >= 0.5), when already known (e.g. from the rendered
        amplitude); default: from the planes.

    Returns
    -------
    ndarray of bool, shape (26,)
    """
    R = np.asarray(rotation, dtype=np.float64)
    d = np.asarray(distances, dtype=np.float64)
    if R.shape != (3, 3) or d.shape != (26,):
        raise ValueError(f"`rotation` must be (3, 3) and `distances` (26,), got {R.shape} and {d.shape}")
    coords = centred_coords(n).reshape(3, -1)
    normals = NORMALS @ R.T  # (26, 3): the planes' grid normals
    if inside is not None:
        inside = np.asarray(inside, dtype=bool)
        if inside.shape != (n, n, n):
            raise ValueError(f"`inside` must have shape {(n, n, n)}, got {inside.shape}")
        coords = coords[:, inside.reshape(-1)]
    # (26, voxels): signed distances to the planes, elementwise (3 terms; no BLAS call)
    signed = sum(normals[:, axis, None] * coords[axis] for axis in range(3)) - d[:, None]
    if inside is None:
        signed = signed[:, signed.max(axis=0) <= 0.0]
    active = np.zeros(26, dtype=bool)
    if signed.shape[1]:
        nearest = np.argmax(signed, axis=0)
        columns = np.arange(signed.shape[1])
        best = signed[nearest, columns]
        signed[nearest, columns] = -np.inf
        active[np.unique(nearest[best - signed.max(axis=0) > _TIE])] = True
    return active


def _model_and_view(model: Any) -> tuple[Any, GridView | None]:
    """The base autoencoder and the view it is seen through (None: the identity)."""
    net = getattr(model, "model", model)  # a LoadedModel
    base = getattr(net, "base", None)  # a ViewedAutoencoder
    if base is not None:
        return base, net.view
    if not hasattr(net, "physical_layout"):
        raise TypeError(f"`model` must be a LatentAutoencoder, ViewedAutoencoder or LoadedModel, got {type(model).__name__}")
    return net, None


@lru_cache(maxsize=64)
def _view_matrix(view: GridView) -> np.ndarray:
    """``A`` with ``view.undo(a)(r) = a(A r)`` in centred coordinates (a signed permutation)."""
    n = 4
    moved = view.undo(np.ascontiguousarray(centred_coords(n)))
    A = np.empty((3, 3))
    for j in range(3):
        index = [n // 2] * 3
        index[j] += 1
        A[:, j] = moved[(slice(None), *index)]
    return A


def _quadratic(c: np.ndarray) -> np.ndarray:
    """Symmetric matrix ``M`` with ``x^T M x`` the quadratic part of phase coefficients ``c`` (9,)."""
    xx, yy, zz, xy, xz, yz = c[3:]
    return np.array([[xx, xy / 2, xz / 2], [xy / 2, yy, yz / 2], [xz / 2, yz / 2, zz]])


def _coefficients(linear: np.ndarray, M: np.ndarray) -> np.ndarray:
    return np.array([*linear, M[0, 0], M[1, 1], M[2, 2], 2 * M[0, 1], 2 * M[0, 2], 2 * M[1, 2]])


def _canonical(R: np.ndarray, distances: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, ...]:
    """The cubic-equivalent ``R g`` with the smallest rotation vector component, facets relabelled."""
    candidates = [_rotation_vector(R @ g) for g in _GROUP]
    best = int(np.argmin([np.abs(c).max() for c in candidates]))
    perm = _GROUP_PERM[best]
    return R @ _GROUP[best], np.degrees(candidates[best]), distances[perm], active[perm]


def read_out(latent: Any, model: Any, density: Any = None) -> PhysicalReadout | None:
    """Read a latent out as named physical quantities (:class:`PhysicalReadout`).

    Parameters
    ----------
    latent : array_like, shape (k,)
        The latent vector (box units), e.g. a tracker record's ``latent``.
    model : LatentAutoencoder, ViewedAutoencoder or LoadedModel
        The model the latent belongs to; seen through a view (the tracker's record says which:
        ``record.state["view"]``, :func:`latenttune.model.views.viewed`), the readout is mapped to the
        laboratory frame.
    density : array_like, shape (n, n, n), optional
        The decoded density of ``latent`` (in the laboratory frame, as a record holds it), for
        ``learned_fraction`` (NaN without it).

    Returns
    -------
    PhysicalReadout or None
        None for a model without explicit crystal parameters.

    Raises
    ------
    ValueError
        A latent of the wrong length or with a non-finite value; a density of the wrong shape.
    """
    net, view = _model_and_view(model)
    layout: PhysicalLayout | None = net.physical_layout
    if layout is None:
        return None
    z = np.asarray(latent, dtype=np.float64).reshape(-1)
    if z.shape != (net.latent_dim,) or not np.isfinite(z).all():
        raise ValueError(f"`latent` must hold {net.latent_dim} finite numbers for this model, got shape "
                         f"{np.shape(latent)}" + ("" if np.isfinite(z).all() else " with NaN or inf"))
    p, n = layout.size, layout.n
    u = z[:p]
    with torch.inference_mode():
        amplitude, phase = (a[0].numpy() for a in render_physical(torch.as_tensor(u[None], dtype=torch.float32),
                                                                  layout))
    described = describe_parameters(u, layout)
    R = orientation_matrix(u)
    distances = np.asarray(described["facet_distances"], dtype=np.float64)
    active = facet_activity(R, distances, n, inside=amplitude >= 0.5)
    coefficients = np.asarray(described["phase_coefficients"], dtype=np.float64)
    line = described["dislocation"]
    winding = int(np.sign(line["winding"])) if abs(line["winding"]) >= _PRESENT_WINDING else 0
    direction = np.asarray(line["direction"], dtype=np.float64)
    point = np.asarray(line["point"], dtype=np.float64)
    rotation_deg = np.asarray(described["rotation_vector_deg"], dtype=np.float64)
    fraction = math.nan
    if density is not None:
        decoded = np.asarray(density)
        if decoded.shape != (n, n, n):
            raise ValueError(f"`density` must have shape {(n, n, n)}, got {decoded.shape}")
        if view is not None:  # compare in the model's frame: the view only moves voxels
            decoded = view.apply(decoded)
        # elementwise sums, not BLAS: on a busy machine BLAS threads waking up cost milliseconds
        real, imag = np.real(decoded).astype(np.float64), np.imag(decoded).astype(np.float64)
        norm = math.sqrt(float(np.square(real).sum() + np.square(imag).sum()))
        real -= amplitude * np.cos(phase)
        imag -= amplitude * np.sin(phase)
        fraction = math.sqrt(float(np.square(real).sum() + np.square(imag).sum())) / norm if norm > 0 else math.nan
    if view is not None:  # to the laboratory frame: d_lab(r) = d_model(A r)
        A = _view_matrix(view)
        proper = np.linalg.det(A) > 0
        R = A.T @ R if proper else -(A.T @ R)
        if not proper:  # the inversion sends each plane to the opposite one
            distances, active = distances[_TWIN_PERM], active[_TWIN_PERM]
        R, rotation_deg, distances, active = _canonical(R, distances, active)
        coefficients = _coefficients(A.T @ coefficients[:3], A.T @ _quadratic(coefficients) @ A)
        point, direction = A.T @ point, A.T @ direction
        winding = winding if proper else -winding
    point = point - np.dot(point, direction) * direction  # the line's point closest to the grid centre
    volume = float(amplitude.sum(dtype=np.float64))
    return PhysicalReadout(
        orientation_matrix=R, orientation_deg=rotation_deg, facet_distances=distances, active_facets=active,
        size_voxels=(3 * volume / (4 * math.pi)) ** (1 / 3), phase_coefficients=coefficients,
        dislocation_present=winding != 0, dislocation_winding=winding, dislocation_point=point,
        dislocation_direction=direction, learned_norm=float(np.linalg.norm(z[p:])), learned_fraction=fraction,
    )


def twin_readout(readout: PhysicalReadout) -> PhysicalReadout:
    """The readout of the twin ``conj(d(-r))`` of the same density (what the intensity cannot tell apart).

    The orientation is kept (the facet set is centrosymmetric), each plane takes the distance of the
    opposite plane, the quadratic phase coefficients change sign (the linear ones do not), and the
    dislocation point and winding change sign.
    """
    coefficients = np.asarray(readout.phase_coefficients, dtype=np.float64).copy()
    coefficients[3:] *= -1
    return PhysicalReadout(
        orientation_matrix=readout.orientation_matrix, orientation_deg=readout.orientation_deg,
        facet_distances=np.asarray(readout.facet_distances)[_TWIN_PERM],
        active_facets=np.asarray(readout.active_facets)[_TWIN_PERM], size_voxels=readout.size_voxels,
        phase_coefficients=coefficients, dislocation_present=readout.dislocation_present,
        dislocation_winding=-readout.dislocation_winding, dislocation_point=-np.asarray(readout.dislocation_point),
        dislocation_direction=readout.dislocation_direction, learned_norm=readout.learned_norm,
        learned_fraction=readout.learned_fraction,
    )
