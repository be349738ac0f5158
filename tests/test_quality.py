"""The stagnation rule (:mod:`latenttune.quality`) and the verdict read back from results files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latenttune.io.results import Results
from latenttune.quality import DEFAULT_RESTART_LLK, is_stagnated, stagnation_sentence
from latenttune.tracking.physics_settings import PhysicsSettings


def _results(llk, threshold=None, index=None, physics=True) -> Results:
    """A results object as read from a file with these LLKs (and, optionally, the threshold it recorded)."""
    llk = np.asarray(llk, dtype=float)
    T = len(llk)
    attrs = {} if threshold is None else {"settings": {"physics": {"restart_llk": threshold}}}
    fields = {"latent": np.zeros((T, 2), np.float32), "cost": np.ones(T, np.float32), "time": np.arange(T, dtype=float),
              "steps": np.ones(T, np.int32), "llk": llk}
    if index is not None:
        fields["index"] = np.asarray(index)
    stored = {name: name for name in [*fields, "density"] + (["output_density"] if physics else [])}
    return Results(Path("r.h5"), attrs, fields, stored)


def test_the_rule_flags_a_finite_llk_above_the_threshold_only():
    assert is_stagnated(1.6, 1.5) is True and is_stagnated(1.5, 1.5) is False
    assert is_stagnated(float("nan"), 1.5) is False and is_stagnated(float("inf"), 1.5) is False
    np.testing.assert_array_equal(is_stagnated(np.array([1.1, 1.6, np.nan]), 1.5), [False, True, False])
    assert PhysicsSettings().restart_llk == DEFAULT_RESTART_LLK


def test_the_threshold_is_the_one_the_run_was_tracked_with():
    assert _results([1.0], threshold=2.5).stagnation_threshold == 2.5
    # files without recorded physics settings (or with a broken value) read with the default
    assert _results([1.0]).stagnation_threshold == DEFAULT_RESTART_LLK
    assert _results([1.0], threshold="n/a").stagnation_threshold == DEFAULT_RESTART_LLK


def test_frames_above_the_threshold_are_flagged_and_held_frames_are_not():
    flags = _results([1.1, 1.6, np.nan, 4.0, 1.5]).stagnated
    np.testing.assert_array_equal(flags, [False, True, False, True, False])  # 1.5 itself is not above
    np.testing.assert_array_equal(_results([1.1, 1.6], threshold=1.05).stagnated, [True, True])
    assert _results([1.0, 1.0, 1.0], physics=False).stagnated is None  # not tracked with the hybrid: no verdict


def test_the_summary_names_the_series_frames():
    assert _results([1.0, 1.0], physics=False).stagnation_summary() == ""
    assert _results([1.1, 1.2]).stagnation_summary() == "no frame stagnated (every LLK <= 1.5)"
    text = _results([1.1, 3.0, 1.2, 2.0], index=[10, 11, 12, 13]).stagnation_summary()
    assert text.startswith("2 of 4 frames stagnated (LLK > 1.5") and text.endswith("frames 11, 13")
    assert _results([1.1, 3.0]).stagnation_summary().endswith("densities): frame 1")
    many = stagnation_sentence(np.ones(12, dtype=bool), np.arange(12), 1.5)
    assert many.startswith("12 of 12") and many.endswith("frames 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...")
