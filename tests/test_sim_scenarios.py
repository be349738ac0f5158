"""Tests of sim.scenarios: reproducibility, laziness, smoothness, registry."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from sim.forward import forward
from sim.scenarios import (
    SCENARIOS,
    DislocationScenario,
    GrowthScenario,
    JumpScenario,
    LatentWalkScenario,
    RotationScenario,
    make_scenario,
)

N_SMALL = 16
PHYSICAL = ["growth", "rotation", "strain", "dislocation", "jump"]


def toy_decode(z: np.ndarray) -> np.ndarray:
    """A smooth toy 'decoder': a ball whose radius and phase ramp follow z."""
    z = np.asarray(z, dtype=np.float64)
    x = np.arange(N_SMALL) - N_SMALL // 2
    r = np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2)
    out = []
    for zi in z:
        radius = 4.0 + zi[0]
        amp = np.clip(radius + 0.5 - r, 0.0, 1.0)
        out.append(amp * np.exp(1j * zi[1] * x[:, None, None] / 4.0))
    return np.asarray(out, dtype=np.complex64)


def build(name: str, seed: int, num_frames: int = 12, **kw):
    if name == "latent-walk":
        kw.setdefault("decode", toy_decode)
        kw.setdefault("latent_bounds", ([-1.0, -2.0], [1.0, 2.0]))
    return make_scenario(name, np.random.default_rng(seed), n=N_SMALL, num_frames=num_frames, **kw)


def rel_changes(frames):
    return np.array(
        [np.linalg.norm(frames[i + 1] - frames[i]) / np.linalg.norm(frames[i]) for i in range(len(frames) - 1)]
    )


def test_registry_names():
    assert set(SCENARIOS) == {"growth", "rotation", "strain", "dislocation", "jump", "fcc-glide", "latent-walk"}
    for name, cls in SCENARIOS.items():
        assert cls.name == name


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_reproducible_from_seed(name):
    a, b, c = build(name, 1), build(name, 1), build(name, 2)
    assert a.params() == b.params()
    assert a.params() != c.params()
    for t in (0, 7):
        fa, fb = a.density(t), b.density(t)
        assert fa.dtype == np.complex64 and fa.shape == (N_SMALL,) * 3
        np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(a.density(7), c.density(7))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lazy_iteration_and_params(name):
    sc = build(name, 3, num_frames=5)
    assert len(sc) == 5 and sc.n == N_SMALL and sc.num_frames == 5
    it = iter(sc)
    assert isinstance(it, types.GeneratorType)
    frames = list(it)
    assert len(frames) == 5
    np.testing.assert_array_equal(frames[3], sc.density(3))
    p = sc.params()
    assert p["name"] == name and p["n"] == N_SMALL and p["num_frames"] == 5
    json.loads(json.dumps(p))
    assert "decode" not in p
    # occupancies are in [0, 1]; binned atoms fluctuate about 1 (a voxel may hold more than the bulk mean)
    ceiling = {"latent-walk": np.inf, "fcc-glide": 1.5}.get(name, 1.0 + 1e-6)
    assert np.abs(frames[0]).max() <= ceiling


@pytest.mark.parametrize("name", PHYSICAL)
def test_phase_zero_outside_support_and_intensity(name):
    sc = build(name, 4, num_frames=4)
    d = sc.density(2)
    outside = np.abs(d) == 0
    assert outside.any() and np.all(d[outside] == 0)
    I = sc.intensity(2)
    assert I.shape == (2 * N_SMALL,) * 3
    np.testing.assert_allclose(I, forward(d))


@pytest.mark.parametrize(
    "name, bound",
    [("growth", 0.15), ("rotation", 0.1), ("strain", 0.1), ("dislocation", 0.5), ("latent-walk", 0.25)],
)
def test_consecutive_frames_change_smoothly(name, bound):
    for seed in range(3):
        sc = build(name, seed, num_frames=30)
        ch = rel_changes(list(sc))
        assert ch.max() < bound, (seed, ch.max())
        assert ch.max() > 0  # something does change


def test_jump_has_one_large_change_at_jump_at():
    for seed in range(3):
        sc = build("jump", seed, num_frames=10, jump_at=6)
        ch = rel_changes(list(sc))
        assert int(np.argmax(ch)) == 5  # between frames 5 and 6
        assert ch[5] > 0.5
        assert np.delete(ch, 5).max() < 1e-6


def test_growth_increases_volume_and_moves_facets_at_different_rates():
    sc = build("growth", 5, num_frames=8)
    assert isinstance(sc, GrowthScenario)
    vols = [np.abs(sc.density(t)).sum() for t in range(8)]
    assert np.all(np.diff(vols) > 0)
    rates = np.asarray(sc.growth)
    assert np.all(rates >= 1.2) and np.ptp(rates) > 0.05
    assert sc.final_crystal().extent() <= 0.33 * N_SMALL + 1e-6


def test_rotation_overrides_and_angle():
    sc = build("rotation", 6, num_frames=6, total_angle=0.0)
    assert isinstance(sc, RotationScenario)
    np.testing.assert_array_equal(sc.density(0), sc.density(5))
    sc = build("rotation", 6, num_frames=6, total_angle=0.3, axis=(0.0, 0.0, 2.0))
    assert sc.axis == (0.0, 0.0, 1.0)
    R = sc.rotation_at(5)
    assert np.arccos((np.trace(R) - 1) / 2) == pytest.approx(0.3)


@pytest.mark.parametrize("kind", ["edge", "screw", "mixed"])
def test_dislocation_kinds_and_glide(kind):
    sc = build("dislocation", 7, num_frames=5, kind=kind)
    assert isinstance(sc, DislocationScenario)
    assert sc.kind == kind and sc.params()["kind"] == kind
    G, b = np.asarray(sc.G), np.asarray(sc.burgers)
    assert abs(G @ b) == pytest.approx(1.0)
    # The line starts and ends outside the crystal and crosses its centre region.
    R = sc.crystal.bounding_radius()
    for t in (0, 4):
        assert np.linalg.norm(sc.line_point(t) - np.asarray(sc.crystal.centre)) > R
    with pytest.raises(ValueError, match="`kind`"):
        build("dislocation", 7, kind="partial")


def test_latent_walk_hook():
    sc = build("latent-walk", 8, num_frames=20)
    assert isinstance(sc, LatentWalkScenario)
    Z = sc.latents()
    assert Z.shape == (20, 2) and Z.dtype == np.float32
    lo, hi = np.asarray(sc.lower), np.asarray(sc.upper)
    assert np.all(Z >= lo) and np.all(Z <= hi)
    assert np.all(np.abs(np.diff(Z, axis=0)) < 0.5 * (hi - lo))
    np.testing.assert_allclose(sc.density(11), toy_decode(sc.latent(11)[None])[0])
    calls = []

    def spy(z):
        calls.append(z.shape)
        return toy_decode(z)

    build("latent-walk", 8, num_frames=3, decode=spy).density(1)
    assert calls == [(1, 2)]


def test_latent_walk_errors():
    with pytest.raises(ValueError, match="`decode`"):
        make_scenario("latent-walk", np.random.default_rng(0), n=N_SMALL, latent_bounds=([0.0], [1.0]))
    with pytest.raises(ValueError, match="`latent_bounds`"):
        make_scenario("latent-walk", np.random.default_rng(0), n=N_SMALL, decode=toy_decode)
    with pytest.raises(ValueError, match="`lower`"):
        build("latent-walk", 0, latent_bounds=([1.0, 0.0], [0.0, 1.0]))
    bad = build("latent-walk", 0, decode=lambda z: np.zeros((1, 4, 4, 4), np.complex64))
    with pytest.raises(ValueError, match="`decode`"):
        bad.density(0)


def test_registry_and_parameter_errors():
    with pytest.raises(ValueError, match="growth") as err:
        make_scenario("melting", np.random.default_rng(0))
    assert "latent-walk" in str(err.value)
    with pytest.raises(ValueError, match="unknown parameter"):
        build("growth", 0, speed=2.0)
    with pytest.raises(ValueError, match="`num_frames`"):
        build("strain", 0, num_frames=0)
    with pytest.raises(ValueError, match="`n`"):
        make_scenario("strain", np.random.default_rng(0), n=2)
    with pytest.raises(ValueError, match="`jump_at`"):
        build("jump", 0, num_frames=5, jump_at=5)
    with pytest.raises(ValueError, match="`growth`"):
        build("growth", 0, growth=(1.5,))
    with pytest.raises(ValueError, match="`poisson_ratio`"):
        build("dislocation", 0, poisson_ratio=0.7)
    sc = build("strain", 0, num_frames=4)
    with pytest.raises(ValueError, match="`t`"):
        sc.density(4)
    with pytest.raises(TypeError, match="`t`"):
        sc.density(1.5)


def test_jump_scenario_default_jump_at():
    sc = build("jump", 9, num_frames=11)
    assert isinstance(sc, JumpScenario) and sc.jump_at == 5
