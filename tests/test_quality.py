"""The stagnation verdict read back from results files (:mod:`latenttune.quality`)."""

from __future__ import annotations

import numpy as np
import pytest

from latenttune.quality import stagnated_frames, stagnation_summary, stagnation_threshold
from latenttune.tracking.physics_stage import PhysicsSettings


def _results(llk, threshold=None, index=None):
    llk = np.asarray(llk, dtype=float)
    attrs = {} if threshold is None else {"settings": {"physics": {"restart_llk": threshold}}}
    out = {"llk": llk, "attrs": attrs, "cost": np.ones(len(llk))}
    if index is not None:
        out["index"] = np.asarray(index)
    return out


def test_the_threshold_is_the_one_the_run_was_tracked_with():
    assert stagnation_threshold(_results([1.0], threshold=2.5)) == 2.5
    # files without recorded physics settings (or with a broken value) read with the default
    assert stagnation_threshold(_results([1.0])) == PhysicsSettings().restart_llk
    assert stagnation_threshold(_results([1.0], threshold="n/a")) == PhysicsSettings().restart_llk
    assert stagnation_threshold({"attrs": {"settings": {"physics": None}}}) == PhysicsSettings().restart_llk
    with pytest.raises(TypeError, match="`results` must be a mapping"):
        stagnation_threshold([1.0, 2.0])


def test_frames_above_the_threshold_are_flagged_and_held_frames_are_not():
    flags = stagnated_frames(_results([1.1, 1.6, np.nan, 4.0, 1.5]))
    np.testing.assert_array_equal(flags, [False, True, False, True, False])  # 1.5 itself is not above
    np.testing.assert_array_equal(stagnated_frames(_results([1.1, 1.6], threshold=1.05)), [True, True])
    assert stagnated_frames({"cost": np.ones(3)}) is None  # not tracked with the hybrid: no LLK, no verdict


def test_the_summary_names_the_series_frames():
    assert stagnation_summary({"cost": np.ones(2)}) == ""
    assert stagnation_summary(_results([1.1, 1.2])) == "no frame stagnated (every LLK <= 1.5)"
    text = stagnation_summary(_results([1.1, 3.0, 1.2, 2.0], index=[10, 11, 12, 13]))
    assert text.startswith("2 of 4 frames stagnated (LLK > 1.5") and text.endswith("frames 11, 13")
    assert stagnation_summary(_results([1.1, 3.0])).endswith("densities): frame 1")
    many = stagnation_summary(_results(np.full(12, 3.0)))
    assert many.startswith("12 of 12") and many.endswith("frames 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...")
