"""Tests of sim.phase: random fields, strain and dislocation phases."""

from __future__ import annotations

import numpy as np
import pytest

from sim.geometry import centred_coords
from sim.phase import (
    AU111_D_SPACING,
    AU_BURGERS_LENGTH,
    DEFAULT_G,
    complex_density,
    dislocation_displacement,
    dislocation_phase,
    edge_dislocation_displacement,
    fix_global_phase,
    gaussian_random_field,
    random_displacement,
    random_phase,
    scale_to_range,
    screw_dislocation_displacement,
    seeded_gaussian_random_field,
    strain_phase,
    visible_burgers_vector,
)
from sim.shapes import Superellipsoid


def _neighbour_corr(f: np.ndarray, axis: int) -> float:
    return float(np.mean(f * np.roll(f, 1, axis=axis)) / np.mean(f * f))


def test_gaussian_random_field_moments_and_reproducibility():
    f = gaussian_random_field(np.random.default_rng(0), 16, 2.0)
    assert f.dtype == np.float32 and f.shape == (16, 16, 16)
    assert abs(f.mean()) < 1e-5 and np.sqrt(np.mean(f**2)) == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(f, gaussian_random_field(np.random.default_rng(0), 16, 2.0))
    assert not np.array_equal(f, gaussian_random_field(np.random.default_rng(1), 16, 2.0))


def test_gaussian_random_field_is_anisotropic_as_asked():
    f = gaussian_random_field(np.random.default_rng(3), 16, (4.0, 1.0, 0.4))
    c0, c1, c2 = (_neighbour_corr(f, a) for a in range(3))
    assert c0 > c1 > c2
    # Gaussian kernel of std l: neighbour correlation exp(-1 / (4 l^2)) for a smooth field.
    assert c1 == pytest.approx(np.exp(-1 / 4), abs=0.1)


def test_seeded_field_matches_and_is_read_only():
    a = seeded_gaussian_random_field(5, 8, 1.5, components=2)
    assert a.shape == (2, 8, 8, 8) and not a.flags.writeable
    np.testing.assert_array_equal(a, seeded_gaussian_random_field(5, 8, 1.5, components=2))
    with pytest.raises(ValueError, match="`seed`"):
        seeded_gaussian_random_field(-1, 8, 1.0)


def test_random_phase_zero_outside_and_within_range():
    occ = Superellipsoid.sphere(5.0).render(16)
    phi = random_phase(np.random.default_rng(2), occ, (3.0, 2.0, 4.0), peak_to_peak=2.0)
    assert phi.dtype == np.float32
    assert np.all(phi[occ == 0] == 0)
    inside = phi[occ > 0]
    assert inside.max() == pytest.approx(1.0, abs=1e-5) and inside.min() == pytest.approx(-1.0, abs=1e-5)
    phi = random_phase(np.random.default_rng(2), occ, 3.0, rms=0.3)
    assert np.sqrt(np.mean(phi[occ > 0] ** 2)) == pytest.approx(0.3, rel=1e-4)


def test_scale_to_range_validation():
    occ = np.ones((4, 4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        scale_to_range(np.zeros((4, 4, 4)), occ)
    with pytest.raises(ValueError, match="`peak_to_peak`"):
        scale_to_range(np.zeros((4, 4, 4)), occ, peak_to_peak=-1.0)
    with pytest.raises(ValueError, match="`field`"):
        scale_to_range(np.zeros((4, 4, 3)), occ, rms=1.0)
    with pytest.raises(ValueError, match="`corr_length`"):
        gaussian_random_field(np.random.default_rng(0), 8, (1.0, 0.0, 1.0))


def test_strain_phase_is_2pi_G_dot_u_inside_support():
    occ = Superellipsoid.sphere(4.0).render(12)
    u = random_displacement(np.random.default_rng(0), 12, 2.0, amplitude=0.5)
    assert u.shape == (3, 12, 12, 12)
    assert np.sqrt(np.mean(u**2)) == pytest.approx(0.5, rel=1e-3)
    G = (0.1, -0.2, 0.3)
    phi = strain_phase(u, G, occ)
    expected = 2 * np.pi * (0.1 * u[0] - 0.2 * u[1] + 0.3 * u[2])
    np.testing.assert_allclose(phi[occ > 0], expected[occ > 0], rtol=1e-5, atol=1e-6)
    assert np.all(phi[occ == 0] == 0)
    with pytest.raises(ValueError, match="`displacement`"):
        strain_phase(u[:2], G)


def _loop(point, direction, radius, m=720):
    t = np.asarray(direction, float) / np.linalg.norm(direction)
    a = np.cross(t, [1.0, 0.0, 0.0] if abs(t[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(t, a)
    ang = np.linspace(0, 2 * np.pi, m + 1)
    return np.asarray(point, float)[:, None] + radius * (np.cos(ang) * a[:, None] + np.sin(ang) * b[:, None])


def _circulation(phase_along_loop: np.ndarray) -> float:
    steps = np.angle(np.exp(1j * np.diff(phase_along_loop)))
    return float(steps.sum())


@pytest.mark.parametrize("kind", ["screw", "edge", "mixed"])
def test_dislocation_phase_winds_by_2pi_G_dot_b(kind):
    rng = np.random.default_rng({"screw": 0, "edge": 1, "mixed": 2}[kind])
    G = np.asarray(DEFAULT_G)
    b = visible_burgers_vector(rng, G)
    assert G @ b == pytest.approx(np.sign(G @ b)) and abs(G @ b) == pytest.approx(1.0)
    if kind == "screw":
        t = b
    elif kind == "edge":
        t = np.cross(b, rng.standard_normal(3))
    else:
        t = b + 2.0 * np.cross(b, rng.standard_normal(3)) / np.linalg.norm(b)
    p = rng.uniform(-2, 2, 3)
    for radius in (0.7, 3.0):
        pts = _loop(p, t, radius)
        phi = 2 * np.pi * G @ dislocation_displacement(pts, p, t, b, poisson_ratio=0.35)
        assert _circulation(phi) == pytest.approx(2 * np.pi * (G @ b), abs=1e-6)
    # A loop that does not enclose the line has no winding.
    far = p + 6.0 * np.cross(t, [0.3, 0.5, 0.7]) / np.linalg.norm(np.cross(t, [0.3, 0.5, 0.7]))
    phi = 2 * np.pi * G @ dislocation_displacement(_loop(far, t, 1.5), p, t, b)
    assert _circulation(phi) == pytest.approx(0.0, abs=1e-6)


def test_invisible_dislocation_has_no_winding():
    G = np.asarray(DEFAULT_G)
    b = np.array([0.0, 2.0, 1.0])  # G . b = 0
    t = np.array([0.2, 0.4, 1.0])
    phi = 2 * np.pi * G @ dislocation_displacement(_loop(np.zeros(3), t, 2.0), np.zeros(3), t, b)
    assert _circulation(phi) == pytest.approx(0.0, abs=1e-6)


def test_edge_dislocation_matches_elastic_strains():
    # Line along axis 2, b along axis 0: Hirth & Lothe dilatation and shear strain.
    nu, b, h = 0.3, 2.0, 1e-4
    pts = np.array([[3.0, 2.0, 0.5], [-2.5, 1.5, 1.0], [1.0, -4.0, 0.0]]).T

    def u(q):
        return edge_dislocation_displacement(q, (0, 0, 0), (0, 0, 1), (b, 0, 0), nu, core_radius=1e-7)

    e = np.eye(3)[:, :, None] * h
    grad = np.array([[(u(pts + e[j])[i] - u(pts - e[j])[i]) / (2 * h) for j in range(3)] for i in range(3)])
    x, y = pts[0], pts[1]
    r2 = x * x + y * y
    np.testing.assert_allclose(np.trace(grad), -b / (2 * np.pi) * (1 - 2 * nu) / (1 - nu) * y / r2, rtol=1e-5)
    exy = 0.5 * (grad[0, 1] + grad[1, 0])
    np.testing.assert_allclose(exy, b / (4 * np.pi * (1 - nu)) * x * (x * x - y * y) / r2**2, rtol=1e-5)


def test_screw_dislocation_is_pure_shear_along_line():
    pts = _loop((0, 0, 0), (0, 0, 1), 2.0, m=8)
    u = screw_dislocation_displacement(pts, (0, 0, 0), (0, 0, 1), 3.0)
    np.testing.assert_allclose(u[:2], 0.0, atol=1e-12)
    np.testing.assert_allclose(u[2], 3.0 / (2 * np.pi) * np.arctan2(pts[1], pts[0]), atol=1e-12)


def test_dislocation_phase_zero_outside_support():
    occ = Superellipsoid.sphere(4.0).render(12)
    phi = dislocation_phase(occ, (0.5, 0.3, 0.0), (0, 0, 1), (AU111_D_SPACING, 0, 0))
    assert phi.dtype == np.float32
    assert np.all(phi[occ == 0] == 0) and np.any(phi[occ > 0] != 0)


def test_dislocation_validation():
    c = centred_coords(4)
    with pytest.raises(ValueError, match="perpendicular"):
        edge_dislocation_displacement(c, (0, 0, 0), (0, 0, 1), (1.0, 0, 1.0))
    with pytest.raises(ValueError, match="`poisson_ratio`"):
        dislocation_displacement(c, (0, 0, 0), (0, 0, 1), (1.0, 0, 0), poisson_ratio=0.5)
    with pytest.raises(ValueError, match="`line_direction`"):
        dislocation_displacement(c, (0, 0, 0), (0, 0, 0), (1.0, 0, 0))
    with pytest.raises(ValueError, match="`length`"):
        visible_burgers_vector(np.random.default_rng(0), length=1.0)


def test_visible_burgers_vector_is_au_like():
    b = visible_burgers_vector(np.random.default_rng(4))
    assert np.linalg.norm(b) == pytest.approx(AU_BURGERS_LENGTH)
    assert AU_BURGERS_LENGTH == pytest.approx(2.878, abs=1e-3)


def test_complex_density_and_global_phase():
    occ = Superellipsoid.sphere(3.0).render(8)
    phi = random_phase(np.random.default_rng(0), occ, 2.0, rms=0.5)
    d = complex_density(occ, phi + 1.3)
    assert d.dtype == np.complex64
    np.testing.assert_allclose(np.abs(d), occ, rtol=1e-6)
    f = fix_global_phase(d)
    s = f.sum(dtype=np.complex128)
    assert abs(s.imag) < 1e-3 * abs(s) and s.real > 0
    np.testing.assert_allclose(np.abs(f), np.abs(d), rtol=1e-6)
