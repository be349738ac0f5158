"""Tests of controllers: bounded extremum seeking (pure step and suggest/ingest object)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from controllers import (
    Controller,
    ESParams,
    ESState,
    ExtremumSeeking,
    default_frequencies,
    es_step,
    from_unit_box,
    initial_state,
    to_unit_box,
)

# Non-trivial bounds (asymmetric, different widths) for the golden tests.
LOWER = np.array([-3.0, 0.5, -10.0, 2.0, -0.25])
UPPER = np.array([1.0, 4.5, 30.0, 2.5, 0.75])


def _golden_cost(z: np.ndarray) -> float:
    """A smooth, non-quadratic test cost in caller units."""
    target = np.array([-2.0, 4.0, 25.0, 2.1, 0.0])
    w = UPPER - LOWER
    return float(np.sum(((z - target) / w) ** 2) + 0.3 * np.sin(z[0]) * np.cos(z[2] / 7.0))


def _reference_loop(z0, lower, upper, gain, dither, steps, pairs=False):
    """Plain loop of the ES equations in normalised units, written from docs/conventions.md section 4.

    Returns the normalised positions z(0..steps) and the caller-unit points the cost was taken at.
    """
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    k = lower.size
    if pairs:
        m = math.ceil(k / 2)
        base = np.linspace(1.0, 1.75, m)
        omega = np.concatenate([base, base[: k - m]])
        use_sin = np.array([False] * m + [True] * (k - m))
    else:
        omega = np.linspace(1.0, 1.75, k)
        use_sin = np.zeros(k, dtype=bool)
    dt = 2 * np.pi / (10 * np.max(omega))
    alpha = omega * dither**2
    z = 2.0 * (np.asarray(z0, dtype=float) - lower) / (upper - lower) - 1.0
    path = [z.copy()]
    points = []
    for n in range(steps):
        x = lower + (z + 1.0) * (upper - lower) / 2.0  # caller units
        points.append(x)
        c = _golden_cost(x)
        arg = omega * n * dt + gain * c
        trig = np.where(use_sin, np.sin(arg), np.cos(arg))
        z = np.clip(z + dt * np.sqrt(alpha * omega) * trig, -1.0, 1.0)
        path.append(z.copy())
    return np.array(path), np.array(points)


# ---------------------------------------------------------------------------
# Golden tests against the plain reference loop
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pairs", [False, True])
def test_golden_pure_step_and_object_match_reference_loop(pairs):
    z0 = np.array([0.9, 1.0, 0.0, 2.45, 0.7])
    gain, dither, steps = 1.7, 0.3, 100
    ref_path, ref_points = _reference_loop(z0, LOWER, UPPER, gain, dither, steps, pairs=pairs)
    # The run must exercise the clip (some coordinate pinned at the box edge).
    assert np.any(np.abs(ref_path) == 1.0)

    params = ESParams(
        lower=LOWER, upper=UPPER, gain=gain, dither=dither, pairs=pairs, cost_normalisation="none"
    )
    # Pure core.
    state = initial_state(params, z0)
    path = [np.array(state.z)]
    for _ in range(steps):
        state = es_step(params, state, _golden_cost(from_unit_box(params, state.z)))
        path.append(np.array(state.z))
    np.testing.assert_array_equal(np.array(path), ref_path)  # bit-identical
    assert state.n == steps

    # suggest/ingest object: same numbers, and suggested points in caller units.
    es = ExtremumSeeking(params, z0=z0)
    points = []
    for _ in range(steps):
        z = es.suggest()
        points.append(z)
        es.ingest(_golden_cost(z))
    np.testing.assert_array_equal(np.array(points), ref_points)
    np.testing.assert_array_equal(np.array(es.state.z), ref_path[-1])
    points = np.array(points)
    assert np.all(points >= LOWER) and np.all(points <= UPPER)


def test_defaults_follow_the_design():
    p = ESParams(lower=[0.0] * 6, upper=[1.0] * 6)
    np.testing.assert_array_equal(p.omega, np.linspace(1.0, 1.75, 6))
    assert p.sine == (False,) * 6
    assert p.dt == pytest.approx(2 * np.pi / (10 * 1.75), rel=1e-15)
    assert (p.gain, p.dither, p.decay_rate, p.adapt, p.cost_normalisation) == (1.0, 0.1, 1.0, False, "ema")
    assert p.dither_min == pytest.approx(0.01)
    np.testing.assert_allclose(p.alpha(), np.asarray(p.omega) * 0.01)
    np.testing.assert_allclose(p.max_step(), p.dt * np.asarray(p.omega) * 0.1)
    omega, sine = default_frequencies(5, pairs=True)
    assert omega == (1.0, 1.375, 1.75, 1.0, 1.375) and sine == (False, False, False, True, True)


def test_box_mapping_round_trip_and_edges():
    p = ESParams(lower=LOWER, upper=UPPER)
    np.testing.assert_array_equal(to_unit_box(p, LOWER), -np.ones(5))
    np.testing.assert_array_equal(to_unit_box(p, UPPER), np.ones(5))
    np.testing.assert_allclose(to_unit_box(p, (LOWER + UPPER) / 2), np.zeros(5), atol=1e-15)
    z = LOWER + np.array([0.1, 0.3, 0.5, 0.7, 0.9]) * (UPPER - LOWER)
    np.testing.assert_allclose(from_unit_box(p, to_unit_box(p, z)), z, rtol=1e-14)
    assert np.all(from_unit_box(p, np.ones(5)) <= UPPER)
    with pytest.raises(ValueError, match="`z`"):
        to_unit_box(p, UPPER + 1.0)


# ---------------------------------------------------------------------------
# Behaviour: convergence, tracking, clipping
# ---------------------------------------------------------------------------


def _quadratic_problem(seed: int, k: int = 8):
    rng = np.random.default_rng(seed)
    lo = -rng.uniform(1, 5, k)
    hi = rng.uniform(1, 5, k)
    u_start = rng.uniform(0.5, 0.9, k) * rng.choice([-1.0, 1.0], k)
    u_opt = -np.sign(u_start) * rng.uniform(0.3, 0.6, k)  # opposite side of the box
    to_caller = lambda u: lo + (u + 1.0) * (hi - lo) / 2.0  # noqa: E731
    return lo, hi, to_caller(u_start), to_caller(u_opt)


def _run(es: ExtremumSeeking, cost, steps: int) -> np.ndarray:
    out = np.empty((steps, es.params.k))
    for i in range(steps):
        z = es.suggest()
        out[i] = z
        es.ingest(cost(z, i))
    return out


def test_converges_on_8d_quadratic_from_far_start_with_defaults():
    lo, hi, z_start, z_opt = _quadratic_problem(3)
    w = hi - lo
    es = ExtremumSeeking(lower=lo, upper=hi, z0=z_start)  # defaults
    path = _run(es, lambda z, i: float(np.sum(((z - z_opt) / w) ** 2)), 3000)
    dist = np.linalg.norm(2 * (path - z_opt) / w, axis=1)  # normalised units
    assert dist[0] > 3.0
    # Instantaneous distance is limited by the persistent dither (amplitude 0.1 per coordinate,
    # about 0.1 * sqrt(8 / 2) = 0.2 in 8-D); its centre sits on the optimum.
    assert dist[-500:].max() < 0.35
    centre = np.mean(2 * (path[-350:] - z_opt) / w, axis=0)
    assert np.linalg.norm(centre) < 0.03
    best_z, best_cost = es.best
    assert best_cost < 0.02 and best_z.shape == (8,)


def test_adaptive_dither_converges_closer_than_fixed_dither():
    lo, hi, z_start, z_opt = _quadratic_problem(4)
    w = hi - lo
    es = ExtremumSeeking(lower=lo, upper=hi, z0=z_start, gain=2.0, adapt=True)
    path = _run(es, lambda z, i: float(np.sum(((z - z_opt) / w) ** 2)), 3000)
    dist = np.linalg.norm(2 * (path - z_opt) / w, axis=1)
    assert dist[0] > 3.0 and dist[-300:].max() < 0.05
    assert es.dither == pytest.approx(es.params.dither_min)


def test_tracks_optimum_moving_on_a_circle():
    k = 8
    rng = np.random.default_rng(7)
    lo, hi = -rng.uniform(1, 5, k), rng.uniform(1, 5, k)
    w = hi - lo

    def u_opt(i):  # circle of radius 0.5 in dims 0, 1; 0.001 box units per step
        u = np.full(k, 0.2)
        u[0], u[1] = 0.5 * np.cos(0.002 * i), 0.5 * np.sin(0.002 * i)
        return u

    def cost(z, i):
        return float(np.sum((2 * (z - lo) / w - 1 - u_opt(i)) ** 2))

    es = ExtremumSeeking(lower=lo, upper=hi, z0=lo + 0.3 * w)
    path = _run(es, cost, 3000)
    dist = np.array([np.linalg.norm(2 * (z - lo) / w - 1 - u_opt(i)) for i, z in enumerate(path)])
    assert dist[0] > 1.0
    # After lock-in the error stays bounded by the dither radius plus a small lag ...
    assert dist[800:].max() < 0.4
    # ... while the optimum itself travelled far: over half the circle (2.2 box units of arc).
    assert max(np.linalg.norm(u_opt(i) - u_opt(800)) for i in range(800, 3000)) > 0.95


def test_z_never_leaves_bounds_even_with_huge_gain_and_cost():
    rng = np.random.default_rng(0)
    lo, hi = np.array([-1e-3, 5.0, -7.0]), np.array([1e-3, 5.5, 100.0])
    es = ExtremumSeeking(lower=lo, upper=hi, z0=hi, gain=1e6, dither=1.0, cost_normalisation="none")
    path = _run(es, lambda z, i: float(rng.uniform(-1e12, 1e12)), 400)
    assert np.all(path >= lo) and np.all(path <= hi)
    assert np.all(np.abs(np.array(es.state.z)) <= 1.0)
    assert np.any(path == hi) and np.any(path == lo)  # it does hit the edges


# ---------------------------------------------------------------------------
# Validation and errors
# ---------------------------------------------------------------------------

_OK = dict(lower=[0.0, -1.0], upper=[1.0, 1.0])


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        (dict(gain=0.0), "gain"),
        (dict(gain=-1.0), "gain"),
        (dict(gain=float("nan")), "gain"),
        (dict(dither=0.0), "dither"),
        (dict(dither=1.5), "dither"),
        (dict(dither_min=0.5), "dither_min"),
        (dict(adapt=True, dither_min=0.0), "dither_min"),
        (dict(omega=[1.0, 1.0]), "omega"),
        (dict(omega=[1.0, -2.0]), "omega"),
        (dict(omega=[1.0, 2.0, 3.0]), "omega"),
        (dict(omega=[1.0, 1.0], sine=[False, True, True]), "sine"),
        (dict(dt=0.0), "dt"),
        (dict(dt=float("inf")), "dt"),
        (dict(decay_rate=0.0), "decay_rate"),
        (dict(decay_rate=1.01), "decay_rate"),
        (dict(adapt_exponent=0.0), "adapt_exponent"),
        (dict(adapt_memory=0.5), "adapt_memory"),
        (dict(cost_normalisation="median"), "cost_normalisation"),
        (dict(cost_memory=0.0), "cost_memory"),
        (dict(lower=[0.0, 1.0]), "lower"),
        (dict(lower=[0.0, -np.inf]), "lower"),
        (dict(upper=[1.0, 1.0, 1.0]), "lower"),
    ],
)
def test_bad_parameters_rejected_naming_the_parameter(changes, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        ESParams(**{**_OK, **changes})


def test_cosine_sine_pair_at_one_frequency_is_allowed():
    p = ESParams(**_OK, omega=[1.0, 1.0], sine=[False, True])
    assert p.omega == (1.0, 1.0) and p.sine == (False, True)


def test_call_order_and_cost_errors():
    es = ExtremumSeeking(**_OK)
    with pytest.raises(RuntimeError, match="suggest"):
        es.ingest(1.0)
    es.suggest()
    for bad in (float("nan"), float("inf"), -np.inf):
        with pytest.raises(ValueError, match="`cost`"):
            es.ingest(bad)
    with pytest.raises(TypeError, match="`cost`"):
        es.ingest("1.0")
    assert es.n == 0  # failed ingests did not advance
    es.ingest(np.float32(0.5))
    assert es.n == 1
    with pytest.raises(RuntimeError, match="suggest"):
        es.ingest(0.5)  # one ingest per suggest
    with pytest.raises(ValueError, match="`z0`"):
        ExtremumSeeking(**_OK, z0=[2.0, 0.0])
    with pytest.raises(TypeError, match="not both"):
        ExtremumSeeking(ESParams(**_OK), gain=2.0)
    with pytest.raises(ValueError, match="`cost`"):
        es_step(es.params, es.state, float("nan"))


# ---------------------------------------------------------------------------
# Purity, serialisation, reset, protocol
# ---------------------------------------------------------------------------


def test_es_step_is_pure_and_deterministic():
    p = ESParams(lower=LOWER, upper=UPPER, adapt=True, decay_rate=0.99)
    s0 = initial_state(p, (LOWER + UPPER) / 2)
    snapshot = s0.to_dict()
    a = es_step(p, s0, 0.7)
    b = es_step(p, s0, 0.7)
    assert a == b and a is not b
    assert s0.to_dict() == snapshot and s0.n == 0
    assert es_step(p, s0, 0.8) != a


def _features_params() -> ESParams:
    return ESParams(lower=LOWER, upper=UPPER, gain=1.3, adapt=True, decay_rate=0.999, pairs=True)


@pytest.mark.parametrize("pending", [False, True])
def test_json_round_trip_continues_bit_identically(pending):
    cost = lambda z, i: _golden_cost(z) + 0.05 * np.sin(0.01 * i)  # noqa: E731
    full = ExtremumSeeking(_features_params(), z0=LOWER + 0.2 * (UPPER - LOWER))
    ref = _run(full, cost, 160)

    es = ExtremumSeeking(_features_params(), z0=LOWER + 0.2 * (UPPER - LOWER))
    first = _run(es, cost, 70)
    if pending:
        z_pending = es.suggest()
    text = json.dumps(es.to_dict())
    resumed = ExtremumSeeking.from_dict(json.loads(text))
    assert resumed.state == es.state and resumed.params == es.params
    if pending:
        resumed.ingest(cost(z_pending, 70))  # the measurement taken before the interruption
        rest = _run(resumed, lambda z, i: cost(z, i + 71), 89)
        out = np.concatenate([first, z_pending[None], rest])
    else:
        out = np.concatenate([first, _run(resumed, lambda z, i: cost(z, i + 70), 90)])
    np.testing.assert_array_equal(out, ref)
    assert resumed.state == full.state
    with pytest.raises(ValueError, match="`d`"):
        ExtremumSeeking.from_dict({**es.to_dict(), "version": 99})


def test_params_and_state_dicts_round_trip():
    p = _features_params()
    assert ESParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    s = es_step(p, initial_state(p), 0.25)
    assert ESState.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_reset_and_best():
    es = ExtremumSeeking(**_OK, z0=[0.25, 0.5])
    assert es.best is None
    costs = [3.0, 1.0, 2.0]
    points = []
    for c in costs:
        points.append(es.suggest())
        es.ingest(c)
    best_z, best_cost = es.best
    assert best_cost == 1.0
    np.testing.assert_allclose(best_z, points[1], rtol=0, atol=1e-15)
    es.reset()
    assert es.n == 0 and es.best is None and es.dither == es.params.dither
    np.testing.assert_allclose(es.suggest(), [0.25, 0.5], atol=1e-15)
    es.reset(z0=[1.0, -1.0])
    np.testing.assert_array_equal(es.suggest(), [1.0, -1.0])


def test_package_imports_neither_torch_nor_latenttune():
    code = "import sys, controllers; print(sorted(m for m in ('torch', 'latenttune', 'scipy') if m in sys.modules))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_controller_protocol():
    assert isinstance(ExtremumSeeking(**_OK), Controller)

    class NoIngest:
        def suggest(self):
            return np.zeros(2)

        def reset(self, z0=None):
            pass

        def to_dict(self):
            return {}

    assert not isinstance(NoIngest(), Controller)


# ---------------------------------------------------------------------------
# Decay, adaptive dither, cost normalisation
# ---------------------------------------------------------------------------


def test_decay_shrinks_dither_geometrically_to_its_floor():
    es = ExtremumSeeking(**_OK, decay_rate=0.98, dither=0.1, dither_min=0.02)
    d = []
    for _ in range(120):
        es.ingest(0.0 * es.suggest()[0] + 1.0)
        d.append(es.dither)
    d = np.array(d)
    n = np.arange(1, 121)
    np.testing.assert_allclose(d, np.maximum(0.1 * 0.98**n, 0.02), rtol=1e-12)
    assert np.all(np.diff(d) <= 0) and d[-1] == 0.02


def test_adaptive_dither_shrinks_when_converged_and_grows_when_optimum_jumps():
    k = 4
    lo, hi = -np.ones(k), np.ones(k)
    target = {"z": np.full(k, 0.3)}
    es = ExtremumSeeking(lower=lo, upper=hi, z0=np.full(k, -0.6), gain=2.0, adapt=True, dither_min=0.005)
    d = []

    def cost(z, i):
        d.append(es.dither)
        return float(np.sum((z - target["z"]) ** 2))

    _run(es, cost, 1500)
    settled = es.dither
    assert settled < 0.2 * es.params.dither
    target["z"] = np.full(k, -0.5)  # the optimum jumps: cost rises
    _run(es, cost, 150)
    assert max(d[1500:]) > 4 * settled
    d = np.array(d)
    assert np.all(d >= es.params.dither_min) and np.all(d <= es.params.dither)


def test_adaptive_dither_follows_documented_formula():
    p = ESParams(**_OK, adapt=True, adapt_memory=2.0, adapt_exponent=0.5, decay_rate=0.9, dither_min=0.001)
    s = initial_state(p)
    fast = peak = None
    for n, c in enumerate([4.0, -1.0, 0.25, 9.0, 0.0], start=1):
        s = es_step(p, s, c)
        fast = abs(c) if fast is None else 0.5 * fast + 0.5 * abs(c)
        peak = fast if peak is None else max(peak, fast)
        expected = min(max(0.1 * 0.9**n * math.sqrt(fast / peak), 0.001), 0.1)
        assert s.dither == pytest.approx(expected, rel=1e-12)
        assert (s.cost_fast, s.cost_peak) == pytest.approx((fast, peak), rel=1e-12)


@pytest.mark.parametrize("mode", ["first", "ema"])
@pytest.mark.parametrize("adapt", [False, True])
def test_cost_normalisation_makes_path_invariant_to_cost_scale(mode, adapt):
    lo, hi, z_start, z_opt = _quadratic_problem(5, k=3)
    w = hi - lo

    def path(factor, normalisation):
        es = ExtremumSeeking(lower=lo, upper=hi, z0=z_start, adapt=adapt, cost_normalisation=normalisation)
        return _run(es, lambda z, i: factor * float(np.sum(((z - z_opt) / w) ** 2)), 300)

    base = path(1.0, mode)
    np.testing.assert_allclose(path(1e6, mode), base, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(path(2.0**20, mode), base)  # a power of two scales exactly
    # Without normalisation the scale matters (so the check above can fail).
    assert np.max(np.abs(path(1e6, "none") - path(1.0, "none"))) > 1e-2
