"""Reading a physics-structured model's explicit crystal parameters off a density (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latenttune.model.crystal import (
    _EDGE_MAX,
    _WINDING_GAIN,
    PhysicalLayout,
    misorientation_degrees,
    orientation_matrix,
    render_physical,
)
from latenttune.model.explicit_fit import FitSettings, explicit_latent, fit_explicit

n = 32
LAYOUT = PhysicalLayout(n)


def _parameters(orientation=(0.3, -0.5, 0.2), phase=None, dislocation=None) -> np.ndarray:
    """Box-unit parameters of a truncated octahedron with a smooth phase and, optionally, a dislocation."""
    p = np.zeros(LAYOUT.size)
    p[LAYOUT.slice("orientation")] = orientation
    distances = np.r_[np.full(6, 8.0), np.full(12, 12.0), np.full(8, 7.0)]  # {100} cut, {110} idle, {111} cut
    distances[[0, 3]] += [0.6, -0.4]
    p[LAYOUT.slice("facets")] = LAYOUT.distance_units(distances)
    p[LAYOUT.slice("phase")] = np.zeros(9) if phase is None else np.asarray(phase) / 4.0
    if dislocation is not None:
        p[LAYOUT.slice("dislocation")] = dislocation
    return np.clip(p, -1, 1)


def _render(p: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        amplitude, phase = render_physical(torch.as_tensor(p[None]), LAYOUT)
    return (amplitude * torch.exp(1j * phase))[0].numpy().astype(np.complex64)


def test_a_rendered_crystal_is_read_back_to_its_parameters():
    phase = np.array([0.4, -0.3, 0.2, 0.3, -0.2, 0.1, 0.25, -0.15, 0.05])
    p = _parameters(phase=phase)
    fit = fit_explicit(_render(p), LAYOUT)
    assert misorientation_degrees(orientation_matrix(p), fit.rotation) < 1.5
    true_distances = LAYOUT.distances(p[LAYOUT.slice("facets")])
    cut = np.r_[np.ones(6, bool), np.zeros(12, bool), np.ones(8, bool)]
    np.testing.assert_allclose(fit.facet_distances[cut], true_distances[cut], atol=0.35)
    np.testing.assert_allclose(fit.phase_coefficients, phase, atol=0.05)
    assert fit.dislocation is None
    rendered = _render(fit.parameters)
    overlap = abs(np.vdot(rendered, _render(p))) / (np.linalg.norm(rendered) * np.linalg.norm(_render(p)))
    assert overlap > 0.99


def _box(orientation) -> np.ndarray:
    """A box: its six {100} faces at three different distances, the {110} and {111} planes idle."""
    p = np.zeros(LAYOUT.size)
    p[LAYOUT.slice("orientation")] = orientation
    sides = [6.0, 6.6, 7.2]
    p[LAYOUT.slice("facets")] = LAYOUT.distance_units(np.r_[sides, sides, np.full(20, 14.0)])
    return np.clip(p, -1, 1)


@pytest.mark.parametrize("orientation", [(0.3, -0.5, 0.2), (0.1, 0.2, -0.4), (-0.6, 0.1, 0.3)])
def test_a_box_is_read_with_its_faces_on_100_planes_not_45_degrees_off(orientation):
    # a box reads as well 45 degrees off about any of its axes, its four side faces then on {110}
    # planes: the shape cannot decide; the reading of lowest surface energy (all faces {100}) must
    p = _box(orientation)
    fit = fit_explicit(_render(p), LAYOUT)
    assert fit.orientation_ties > 1
    assert misorientation_degrees(orientation_matrix(p), fit.rotation) < 1.5
    true_distances = LAYOUT.distances(p[LAYOUT.slice("facets")])
    np.testing.assert_allclose(fit.facet_distances[:6], true_distances[:6], atol=0.35)


def test_the_reading_without_a_surface_line_keeps_the_orientation_tie():
    # the read-back may keep the reading without a line found at the surface: it has the same
    # orientation, so it must report the same tie
    p, _, _ = _line_just_outside(0.8, _box((0.3, -0.5, 0.2)))
    fit = fit_explicit(_render(p), LAYOUT, settings=FitSettings(surface_line_trigger=3e-4))
    assert fit.orientation_ties > 1 and fit.without_line is not None
    assert fit.without_line.orientation_ties == fit.orientation_ties


def test_a_crystal_with_one_reading_reports_no_orientation_tie():
    fit = fit_explicit(_render(_parameters()), LAYOUT)
    assert fit.orientation_ties == 1


def test_a_dislocation_line_and_its_winding_are_read_off_the_phase():
    direction = np.array([0.8, 0.5, -0.3]) / np.linalg.norm([0.8, 0.5, -0.3])
    point = np.array([1.0, -1.5, 0.5])
    point = point - (point @ direction) * direction
    block = np.r_[direction, LAYOUT.line_point_units(point), 1.0 / _WINDING_GAIN, np.array([0.2, -0.1, 0.1]) / _EDGE_MAX]
    p = _parameters(dislocation=block)
    fit = fit_explicit(_render(p), LAYOUT)
    d = fit.dislocation
    assert d is not None and d.winding == 1 and d.vortices >= 4
    assert abs(d.direction @ direction) > np.cos(np.radians(8))
    offset = d.point - point
    assert np.linalg.norm(offset - (offset @ direction) * direction) < 0.8
    # (t, w) and (-t, -w) are the same dislocation: the read-off tangent winds the phase by +2 pi
    assert d.direction @ direction > 0
    np.testing.assert_allclose(d.edge, [0.2, -0.1, 0.1], atol=0.1)


def test_the_previous_fit_makes_the_orientation_search_local_and_gives_the_same_answer():
    density = _render(_parameters(orientation=(-0.4, 0.1, 0.6)))
    first = fit_explicit(density, LAYOUT)
    again = fit_explicit(density, LAYOUT, previous=first)
    assert misorientation_degrees(first.rotation, again.rotation) < 0.5
    latent = explicit_latent(again, np.zeros(8))
    assert latent.shape == (56,) and np.all(np.abs(latent) <= 1)


def test_bad_densities_are_refused_in_one_line():
    with pytest.raises(ValueError, match="`density` must have shape"):
        fit_explicit(np.zeros((8, 8, 8), np.complex64), LAYOUT)
    with pytest.raises(ValueError, match="finite and not all zero"):
        fit_explicit(np.zeros((n, n, n), np.complex64), LAYOUT)


def test_a_crystal_turning_across_the_edge_of_the_orientation_box_is_followed_frame_to_frame():
    """A local search cannot cross the rotation-vector box's edge; it also starts from the cubic-equivalent
    description deepest inside the box, so a turning crystal near the edge is not left behind."""
    from scipy.spatial.transform import Rotation

    from latenttune.model.crystal import _GROUP

    near_edge = (0.2, -0.96, 0.3)  # -43.2 degrees about y: 1.8 degrees from the edge
    first = fit_explicit(_render(_parameters(orientation=near_edge)), LAYOUT)
    turned = Rotation.from_rotvec([0.0, -np.radians(4.0), 0.0]).as_matrix() @ orientation_matrix(near_edge)
    equivalents = Rotation.from_matrix(np.stack([turned @ h for h in _GROUP])).as_rotvec()
    inside = equivalents[int(np.argmin(np.abs(equivalents).max(axis=1)))] / (np.pi / 4)  # drawable in the box
    second = fit_explicit(_render(_parameters(orientation=tuple(inside))), LAYOUT, previous=first)
    assert misorientation_degrees(second.rotation, turned) < 1.0


def _line_just_outside(depth: float, p0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parameters of a crystal (default: the test crystal) with a <110> line ``depth`` voxels outside its
    (001) face, and the line."""
    p0 = _parameters() if p0 is None else p0
    rotation = orientation_matrix(p0)
    direction = rotation @ (np.array([1.0, 1.0, 0.0]) / np.sqrt(2))
    from latenttune.model.crystal import NORMALS

    top = int(np.flatnonzero((NORMALS == [0.0, 0.0, 1.0]).all(axis=1))[0])
    face = LAYOUT.distances(p0[LAYOUT.slice("facets")])[top]  # the (001) plane's distance
    point = rotation @ np.array([0.0, 0.0, face + depth])
    block = np.r_[direction, LAYOUT.line_point_units(point), 1.0 / _WINDING_GAIN, np.zeros(3)]
    p = p0.copy()
    p[LAYOUT.slice("dislocation")] = block
    return np.clip(p, -1, 1), point - (point @ direction) * direction, direction


def test_a_dislocation_line_just_outside_the_surface_is_found_by_the_phase_misfit_it_leaves():
    """No phase vortex lies inside the crystal, but the phase next to the line is bent.

    The rendered crystal's phase is cleaner than a reconstruction's, so the search is triggered at a
    lower misfit here than the default (set on reconstructions); the test is of what the search finds.
    """
    searching = FitSettings(surface_line_trigger=3e-4)
    p, point, direction = _line_just_outside(depth=0.8)
    fit = fit_explicit(_render(p), LAYOUT, settings=searching)
    d = fit.dislocation
    assert d is not None and d.vortices == 0
    assert d.direction @ direction > np.cos(np.radians(8))  # the right line, winding the right way
    offset = d.point - point
    assert np.linalg.norm(offset - (offset @ direction) * direction) < 1.0
    off = fit_explicit(_render(p), LAYOUT, settings=FitSettings(surface_line_trigger=np.inf))
    assert off.dislocation is None  # the search is what found it
    far, _, _ = _line_just_outside(depth=3.0)  # a line well outside leaves too little to find
    assert fit_explicit(_render(far), LAYOUT, settings=searching).dislocation is None


def test_a_strained_crystal_without_a_line_gets_none_from_the_surface_search():
    phase = np.array([0.8, -0.6, 0.4, 0.6, -0.4, 0.2, 0.5, -0.3, 0.1])
    fit = fit_explicit(_render(_parameters(phase=phase)), LAYOUT, settings=FitSettings(surface_line_trigger=0.0))
    assert fit.dislocation is None


def test_the_surface_line_settings_are_checked():
    with pytest.raises(ValueError, match="surface_line_ratio"):
        FitSettings(surface_line_ratio=1.5)
    with pytest.raises(ValueError, match="surface_line_trigger"):
        FitSettings(surface_line_trigger=-1.0)
    with pytest.raises(ValueError, match="surface_line_radius"):
        FitSettings(surface_line_radius=0.0)
