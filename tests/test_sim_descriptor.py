"""Ground-truth descriptors of simulated samples and the atomistic fcc-glide scenario."""

from __future__ import annotations

import numpy as np
import pytest

from sim.atomistic import bin_atoms, bulk_atoms_per_voxel, fcc_sites
from sim.descriptor import DislocationLine, SampleDescriptor
from sim.scenarios import make_scenario
from sim.shapes import FacetedCrystal
from sim.training import TrainingPairGenerator

n = 16


@pytest.mark.parametrize("name", ["growth", "rotation", "strain", "dislocation", "jump"])
def test_descriptor_shape_renders_the_frame_amplitude(name):
    sc = make_scenario(name, np.random.default_rng(4), n=n, num_frames=6)
    for t in (0, 3, 5):
        d = sc.descriptor(t)
        np.testing.assert_allclose(d.shape.render(n), np.abs(sc.density(t)), atol=1e-5)


def test_dislocation_descriptor_follows_the_gliding_line():
    sc = make_scenario("dislocation", np.random.default_rng(2), n=n, num_frames=5)
    lines = [sc.descriptor(t).dislocations[0] for t in range(5)]
    assert all(abs(abs(line.winding) - 1.0) < 1e-9 for line in lines)
    np.testing.assert_allclose(lines[-1].point, sc.end_point)
    assert np.linalg.norm(np.subtract(lines[0].point, lines[-1].point)) > 1.0


def test_training_pairs_carry_descriptors_and_stay_reproducible():
    g = TrainingPairGenerator(n=n, seed=3, mix={"dislocated": 1.0}, photons_range=None)
    a, b = g.sample(7), g.sample(7)
    np.testing.assert_array_equal(a.density, b.density)
    assert isinstance(a.descriptor.shape, FacetedCrystal) and len(a.descriptor.dislocations) >= 1
    np.testing.assert_allclose(a.descriptor.shape.render(n), np.abs(a.density), atol=1e-5)
    batch = g.batch([1, 2])
    assert len(batch.descriptor) == 2 and all(isinstance(d, SampleDescriptor) for d in batch.descriptor)


def test_descriptor_validation():
    with pytest.raises(TypeError, match="shape"):
        SampleDescriptor(shape="cube")
    with pytest.raises(ValueError, match="direction"):
        DislocationLine(point=(0, 0, 0), direction=(0, 0, 0), burgers=(1, 0, 0), G=(1, 0, 0))
    with pytest.raises(ValueError, match="point"):
        DislocationLine(point=(0, np.nan, 0), direction=(0, 0, 1), burgers=(1, 0, 0), G=(1, 0, 0))


def test_fcc_sites_and_binning_conserve_atoms():
    sites = fcc_sites(3.0, 0.5)
    assert np.all(np.linalg.norm(sites, axis=1) <= 3.0 + 1e-12)
    # density of sites deep inside matches 4 / a^3
    inner = np.sum(np.linalg.norm(sites, axis=1) <= 2.0)
    assert inner == pytest.approx(bulk_atoms_per_voxel(0.5) * 4 / 3 * np.pi * 8, rel=0.1)
    grid = bin_atoms(sites, np.ones(len(sites)), n, bulk_atoms_per_voxel(0.5))
    assert grid.sum().real * bulk_atoms_per_voxel(0.5) == pytest.approx(len(sites))
    with pytest.raises(ValueError, match="outside"):
        bin_atoms(np.array([[n, 0, 0]]), np.ones(1), n, 1.0)


def test_fcc_glide_is_an_atomistic_faceted_crystal_with_a_gliding_edge_dislocation():
    sc = make_scenario("fcc-glide", np.random.default_rng(0), n=n, num_frames=5)
    d0, d4 = sc.density(0), sc.density(4)
    np.testing.assert_array_equal(d0, sc.density(0))  # deterministic
    inside = sc.descriptor(0).shape.render(n) > 0.99
    # about one bulk voxel of atoms per voxel inside, with an atomistic texture
    assert 0.8 < np.abs(d0[inside]).mean() < 1.1
    assert np.abs(d0[inside]).std() > 0.02
    # it grows and the descriptor's facets draw its support
    assert np.abs(d4).sum() > 1.1 * np.abs(d0).sum()
    for t in (0, 4):
        occ = sc.descriptor(t).shape.render(n)
        amp = np.abs(sc.density(t))
        assert np.corrcoef(occ.ravel(), amp.ravel())[0, 1] > 0.9
    line = sc.descriptor(2).dislocations[0]
    assert abs(line.winding) == pytest.approx(1.0)
    assert abs(np.dot(line.burgers, line.direction)) < 1e-9  # edge
    # the lattice tilts: the descriptor's orientation changes by the drawn total angle
    R0, R4 = sc.descriptor(0).shape.rotation_matrix, sc.descriptor(4).shape.rotation_matrix
    angle = np.arccos(np.clip((np.trace(R0.T @ R4) - 1) / 2, -1, 1))
    assert angle == pytest.approx(sc.total_angle, abs=1e-6)


def test_fcc_glide_rejects_bad_parameters():
    sc = make_scenario("fcc-glide", np.random.default_rng(0), n=n, num_frames=3)
    with pytest.raises(ValueError, match="lattice_constant"):
        make_scenario("fcc-glide", np.random.default_rng(0), n=n, num_frames=3, lattice_constant=2.0)
    with pytest.raises(ValueError, match="growth"):
        type(sc)(n=n, num_frames=3, crystal=sc.crystal, growth=(1.0,), burgers=sc.burgers)
