"""Tests of sim.geometry and sim.shapes."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from sim.geometry import (
    as_rotation_matrix,
    centred_coords,
    random_rotation,
    rotate_coords,
    rotation_about_axis,
    to_body,
)
from sim.shapes import (
    FacetedCrystal,
    Superellipsoid,
    family_normals,
    partial_volume,
    random_faceted_crystal,
    random_shape,
    random_superellipsoid,
)

# --------------------------------------------------------------------------- geometry


def test_centred_coords_convention():
    c = centred_coords(8)
    assert c.shape == (3, 8, 8, 8)
    assert c[0, 4, 0, 0] == 0 and c[1, 0, 4, 0] == 0 and c[2, 0, 0, 4] == 0
    assert c[0, 0, 3, 5] == -4 and c[2, 1, 1, 7] == 3
    assert not c.flags.writeable


def test_centred_coords_rejects_bad_n():
    with pytest.raises(ValueError, match="`n`"):
        centred_coords(1)


def test_random_rotation_is_proper_and_reproducible():
    for seed in range(5):
        R = random_rotation(np.random.default_rng(seed))
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_array_equal(random_rotation(np.random.default_rng(3)), random_rotation(np.random.default_rng(3)))


def test_random_rotations_are_isotropic():
    rng = np.random.default_rng(0)
    z = np.array([random_rotation(rng)[:, 2] for _ in range(2000)])
    # A uniform rotation sends a fixed axis to a uniform direction: mean ~ 0, E[v v^T] = I/3.
    assert np.abs(z.mean(axis=0)).max() < 0.06
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(3) / 3, atol=0.04)


def test_rotation_about_axis_and_inverse_transforms():
    R = rotation_about_axis([0, 0, 1], np.pi / 2)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    coords = centred_coords(6)
    c = (0.5, -1.0, 2.0)
    R = random_rotation(np.random.default_rng(1))
    back = rotate_coords(to_body(coords, R, c), R) + np.reshape(c, (3, 1, 1, 1))
    np.testing.assert_allclose(back, coords, atol=1e-12)
    with pytest.raises(ValueError, match="`axis`"):
        rotation_about_axis([0, 0, 0], 1.0)


def test_as_rotation_matrix_rejects_reflection():
    with pytest.raises(ValueError, match="`rotation`"):
        as_rotation_matrix(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="`rotation`"):
        as_rotation_matrix(np.ones((3, 3)))


# --------------------------------------------------------------------------- shapes


def test_family_normals_counts():
    for fam, count in (("100", 6), ("110", 12), ("111", 8)):
        N = family_normals(fam)
        assert N.shape == (count, 3)
        np.testing.assert_allclose(np.linalg.norm(N, axis=1), 1.0)
    with pytest.raises(ValueError, match="`family`"):
        family_normals("211")


def test_partial_volume_rule():
    np.testing.assert_allclose(partial_volume(np.array([-2.0, -0.5, 0.0, 0.25, 0.5, 3.0])), [1, 1, 0.5, 0.25, 0, 0])


def test_sphere_values_partial_edges_and_volume():
    r = 5.0
    occ = Superellipsoid.sphere(r).render(16)
    assert occ.dtype == np.float32 and occ.shape == (16, 16, 16)
    assert occ.min() >= 0.0 and occ.max() <= 1.0
    edge = (occ > 0) & (occ < 1)
    assert edge.sum() > 50  # anti-aliased boundary layer
    assert occ.sum() == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)
    assert occ[8, 8, 8] == 1.0 and occ[0, 0, 0] == 0.0


def test_axis_aligned_slab_partial_volume_is_exact():
    # A big box cut at half-integer distances: every facet voxel layer is half full.
    cube = FacetedCrystal(normals=family_normals("100"), distances=[3.0] * 6)
    occ = cube.render(16)
    assert occ[8 + 3, 8, 8] == 0.5 and occ[8 + 2, 8, 8] == 1.0 and occ[8 + 4, 8, 8] == 0.0


def test_volume_is_rotation_invariant():
    base = Superellipsoid(semi_axes=(5.0, 3.5, 2.5), exponent=0.6)
    v0 = base.render(16).sum()
    rng = np.random.default_rng(2)
    for _ in range(4):
        rotated = Superellipsoid(semi_axes=base.semi_axes, exponent=0.6, rotation=random_rotation(rng))
        assert rotated.render(16).sum() == pytest.approx(v0, rel=0.03)
    crystal = random_faceted_crystal(np.random.default_rng(5), 16)
    v1 = crystal.render(16).sum()
    for _ in range(3):
        turned = FacetedCrystal(
            normals=crystal.normals, distances=crystal.distances, rotation=random_rotation(rng)
        )
        assert turned.render(16).sum() == pytest.approx(v1, rel=0.04)


def test_superellipsoid_exponent_controls_boxiness():
    box = Superellipsoid(semi_axes=(4.0, 4.0, 4.0), exponent=0.2).render(16).sum()
    ell = Superellipsoid(semi_axes=(4.0, 4.0, 4.0), exponent=1.0).render(16).sum()
    octa = Superellipsoid(semi_axes=(4.0, 4.0, 4.0), exponent=2.0).render(16).sum()
    assert box > ell > octa
    assert box == pytest.approx(8.0**3, rel=0.08)
    assert ell == pytest.approx(4 / 3 * np.pi * 4.0**3, rel=0.05)
    big_octa = Superellipsoid(semi_axes=(6.0, 6.0, 6.0), exponent=2.0).render(16).sum()
    assert big_octa == pytest.approx(4 / 3 * 6.0**3, rel=0.06)


@pytest.mark.parametrize("seed", range(4))
def test_faceted_crystal_is_convex_and_contains_centre(seed):
    rng = np.random.default_rng(seed)
    crystal = random_faceted_crystal(rng, 16, max_offset=0.8)
    occ = crystal.render(16)
    centre_index = tuple(int(round(c)) + 8 for c in crystal.centre)
    assert occ[centre_index] == 1.0
    assert 4 <= len(crystal.normals) <= 20
    # Convexity: the midpoint of two full voxels (same parity, so the midpoint is
    # a voxel) is full, because the facet signed distance is a convex function.
    full = np.argwhere(occ == 1.0)
    pick = rng.integers(len(full), size=(3000, 2))
    a, b = full[pick[:, 0]], full[pick[:, 1]]
    same = np.all((a - b) % 2 == 0, axis=1)
    mid = (a[same] + b[same]) // 2
    assert same.sum() > 100
    assert np.all(occ[mid[:, 0], mid[:, 1], mid[:, 2]] == 1.0)


def test_faceted_vertices_and_bounding_radius():
    crystal = random_faceted_crystal(np.random.default_rng(7), 16)
    V = crystal.vertices()
    N, d = crystal.normal_array, crystal.distance_array
    assert np.all(V @ N.T <= d + 1e-6)
    assert crystal.bounding_radius() == pytest.approx(np.linalg.norm(V, axis=1).max())
    # Nothing is rendered beyond the circumradius (plus the half-voxel edge).
    occ = crystal.render(16)
    r = np.linalg.norm(centred_coords(16) - np.reshape(crystal.centre, (3, 1, 1, 1)), axis=0)
    assert occ[r > crystal.bounding_radius() + 1.0].max() == 0.0


def test_octahedron_vertices():
    octa = FacetedCrystal(normals=family_normals("111"), distances=[2.0] * 8)
    assert octa.bounding_radius() == pytest.approx(2.0 * np.sqrt(3))
    assert len(octa.vertices()) == 6


def test_scale_and_offset():
    s = Superellipsoid.sphere(3.0, centre=(1.0, -2.0, 0.0))
    occ = s.render(16)
    com = np.tensordot(centred_coords(16), occ, axes=3) / occ.sum()
    np.testing.assert_allclose(com, [1.0, -2.0, 0.0], atol=1e-3)
    assert s.render(16, scale=1.5).sum() == pytest.approx(1.5**3 * occ.sum(), rel=0.05)
    with pytest.raises(ValueError, match="does not fit"):
        s.render(16, scale=2.5)
    with pytest.raises(ValueError, match="`scale`"):
        s.render(16, scale=-1.0)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(semi_axes=(1.0, -2.0, 1.0)), "semi_axes"),
        (dict(semi_axes=(1.0, 2.0, 1.0), exponent=3.0), "exponent"),
        (dict(semi_axes=(1.0, 2.0, 1.0), centre=(0.0, 1.0)), "centre"),
        (dict(semi_axes=(1.0, 2.0, 1.0), rotation=np.eye(2)), "rotation"),
    ],
)
def test_superellipsoid_validation(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        Superellipsoid(**kwargs)


def test_faceted_validation():
    half = family_normals("100")[[0, 2, 4]].tolist() + [[0.1, 0.1, 1.0]]
    with pytest.raises(ValueError, match="`normals`"):
        # Four normals with no negative component bound nothing on one side.
        FacetedCrystal(normals=np.abs(half), distances=[1.0] * 4)
    with pytest.raises(ValueError, match="`distances`"):
        FacetedCrystal(normals=family_normals("100"), distances=[1.0] * 5)
    with pytest.raises(ValueError, match="`distances`"):
        FacetedCrystal(normals=family_normals("100"), distances=[1.0] * 5 + [-1.0])


def test_random_shape_reproducible_and_serialisable():
    a = random_shape(np.random.default_rng(11), 16)
    b = random_shape(np.random.default_rng(11), 16)
    c = random_shape(np.random.default_rng(12), 16)
    assert a == b and a != c
    np.testing.assert_array_equal(a.render(16), b.render(16))
    for fam in ("faceted", "superellipsoid"):
        s = random_shape(np.random.default_rng(0), 16, family=fam)
        json.dumps(asdict(s))
        assert s.extent() <= 16 * 0.33 + 1e-6
        assert s.bounding_radius() >= 16 * 0.22 - 1e-6
    with pytest.raises(ValueError, match="`family`"):
        random_shape(np.random.default_rng(0), 16, family="blob")
    with pytest.raises(ValueError, match="`radius`"):
        random_superellipsoid(np.random.default_rng(0), 16, radius=(0.3, 0.6))
    with pytest.raises(TypeError, match="`rng`"):
        random_shape(0, 16)
