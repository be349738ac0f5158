"""The cohere-core comparator (:mod:`latenttune.peers.cohere`) on a tiny 16^3 object (N = 32).

Thresholds come from measurements on this frame (growth scenario, frame 0, seed 0, 1e8 photons,
beamstop radius 1 voxel): a cold 220-iteration ER/HIO reconstruction gave E_r 0.09 to 0.23 over
eight random starts (E_q 2e-4 to 9e-4), against 0.88 for a centred uniform sphere and 0.99 for a
uniform box; a warm start from the truth kept E_r at 0.002 after 50 ER iterations and 0.04 after
220 ER/HIO iterations; the wrong convention (the result's plain conjugate) is at 0.64.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("cohere_core")

import sim  # noqa: E402
from latenttune.metrics import amplitude_error, real_space_error  # noqa: E402
from latenttune.peers.cohere import (  # noqa: E402
    CohereRecipe,
    count_iterations,
    from_object_grid,
    reconstruct,
    to_object_grid,
)

N_OBJ = 16
SHORT = CohereRecipe.standard(200)  # 1*(20*ER+180*HIO)+20*ER: 220 iterations


@pytest.fixture(scope="module")
def frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth density, measured counts, mask) of a tiny simulated frame."""
    rng = np.random.default_rng(0)
    density = sim.make_scenario("growth", rng, n=N_OBJ, num_frames=2).density(0)
    measured = sim.Detector(photons=1e8, beamstop_radius=1.0).measure(sim.forward(density), rng)
    return density, measured.counts, measured.mask


@pytest.fixture(scope="module")
def cold(frame) -> np.ndarray:
    """A cold-start reconstruction of the frame (random start from seed 0)."""
    _, counts, mask = frame
    return reconstruct(counts, mask, SHORT, rng=0)


def _sphere(n: int) -> np.ndarray:
    g = np.indices((n, n, n)) - n // 2
    return (np.sum(g**2, axis=0) < (n / 4) ** 2).astype(np.complex64)


def test_cold_start_reconstructs(frame, cold):
    truth, counts, mask = frame
    assert cold.shape == (N_OBJ,) * 3 and cold.dtype == np.complex64
    error = real_space_error(truth, cold).error
    trivial = min(real_space_error(truth, _sphere(N_OBJ)).error, real_space_error(truth, np.ones_like(cold)).error)
    assert trivial > 0.8
    assert error < 0.35
    assert amplitude_error(sim.forward(cold), counts, mask) < 0.01


def test_cold_start_is_reproducible_and_leaves_global_rng(frame, cold):
    _, counts, mask = frame
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    again = reconstruct(counts, mask, SHORT, rng=np.random.default_rng(0))
    assert np.random.random() == expected  # cohere reseeds numpy's global RNG; we restore it
    np.testing.assert_array_equal(again, cold)


def test_warm_start_from_truth_is_in_our_convention(frame):
    truth, counts, mask = frame
    result = reconstruct(counts, mask, CohereRecipe(algorithm_sequence="50*ER"), initial=truth, rng=0)
    aligned = real_space_error(truth, result)
    assert not aligned.twin
    assert real_space_error(truth, result, twin=False).error < 0.01
    # cohere's own image is the conjugate: left unconverted it would be a different object
    assert real_space_error(truth, np.conj(result)).error > 0.2


def test_warm_start_from_the_truth_stays_there_under_er(frame):
    """ER from the truth is (nearly) a fixed point: the warm start is handed over in cohere's convention."""
    truth, counts, mask = frame
    result = reconstruct(counts, mask, CohereRecipe(algorithm_sequence="20*ER"), initial=truth, rng=0)
    assert real_space_error(truth, result).error < 0.01  # measured 0.0016


def test_warm_start_with_hio_stays_a_good_reconstruction(frame):
    """HIO is not a fixed point on noisy, masked data: from the truth it drifts (measured E_r 0.148 after
    220 iterations, 0.153 after 1,020; a cold start reached 0.108), but stays a reconstruction."""
    truth, counts, mask = frame
    result = reconstruct(counts, mask, SHORT, initial=truth, rng=0)
    assert real_space_error(truth, result).error < 0.35  # the cold-start bound above


def test_free_mask_beats_zero_filled_mask(frame, cold):
    truth, counts, mask = frame
    zero = reconstruct(counts, mask, CohereRecipe.standard(200, mask_mode="zero"), rng=0)
    assert real_space_error(truth, cold).error < real_space_error(truth, zero).error


def test_object_grid_round_trip(frame):
    truth = frame[0]
    image = from_object_grid(truth, 2 * N_OBJ)
    assert image.shape == (2 * N_OBJ,) * 3
    back = to_object_grid(image, N_OBJ)
    assert real_space_error(truth, back, twin=False).error < 1e-5


def test_recipe_iterations():
    assert CohereRecipe().iterations == 1020
    assert CohereRecipe.standard(1000).iterations == 1020
    assert SHORT.iterations == 220
    assert count_iterations("2*(10*ER+5*HIO)+3*RAAR") == 33
    params = CohereRecipe().cohere_params(warm=True)
    assert "twin_trigger" not in params and params["shrink_wrap_gauss_sigma"] == 1.0
    assert CohereRecipe().cohere_params(warm=False)["twin_trigger"] == [2]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"algorithm_sequence": "20*XYZ"}, "algorithm_sequence"),
        ({"algorithm_sequence": "5*(20*ER+180*HIO"}, "algorithm_sequence"),
        ({"algorithm_sequence": "20*ER+"}, "algorithm_sequence"),
        ({"hio_beta": 0.0}, "hio_beta"),
        ({"shrink_wrap_trigger": (10, 0)}, "shrink_wrap_trigger"),
        ({"shrink_wrap_threshold": 1.5}, "shrink_wrap_threshold"),
        ({"shrink_wrap_sigma": -1.0}, "shrink_wrap_sigma"),
        ({"twin_trigger": 5000}, "twin_trigger"),
        ({"initial_support_area": 0.0}, "initial_support_area"),
        ({"mask_mode": "fill"}, "mask_mode"),
        ({"precision": "half"}, "precision"),
        ({"fft_workers": 0}, "fft_workers"),
    ],
)
def test_bad_recipe_raises(fields, name):
    with pytest.raises(ValueError, match=name):
        CohereRecipe(**fields)


def test_bad_arguments_raise(frame):
    truth, counts, mask = frame
    with pytest.raises(ValueError, match="`intensity`"):
        reconstruct(counts[0], None)
    with pytest.raises(ValueError, match="`intensity`"):
        reconstruct(counts[:-1, :-1, :-1], None)
    with pytest.raises(TypeError, match="`intensity`"):
        reconstruct(counts.astype(np.complex64), None)
    with pytest.raises(ValueError, match="`intensity`"):
        reconstruct(-counts - 1, mask)
    with pytest.raises(ValueError, match="`mask`"):
        reconstruct(counts, mask[:-1])
    with pytest.raises(TypeError, match="`mask`"):
        reconstruct(counts, mask.astype(float))
    with pytest.raises(ValueError, match="`mask`"):
        reconstruct(counts, np.ones_like(mask))
    with pytest.raises(ValueError, match="`initial`"):
        reconstruct(counts, mask, initial=truth[:-1])
    with pytest.raises(ValueError, match="`initial`"):
        reconstruct(counts, mask, initial=np.zeros_like(truth))
    with pytest.raises(TypeError, match="`recipe`"):
        reconstruct(counts, mask, {"algorithm_sequence": "20*ER"})
    with pytest.raises(TypeError, match="`rng`"):
        reconstruct(counts, mask, SHORT, rng="seed")
    with pytest.raises(ValueError, match="`iterations`"):
        CohereRecipe.standard(0)


def test_missing_cohere_names_the_extra(frame, monkeypatch):
    _, counts, mask = frame
    monkeypatch.setitem(sys.modules, "cohere_core.controller.phasing", None)
    with pytest.raises(ModuleNotFoundError, match=r"latenttune\[bench\]"):
        reconstruct(counts, mask, SHORT, rng=0)
