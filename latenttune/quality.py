"""Is a frame's reconstruction trustworthy? The physics stage's stagnation verdict, read back from results.

On measured data there is no truth to compute a real-space error against. What the hybrid tracker
does know is how well each frame's output explains the counts: its Poisson log-likelihood (LLK,
PyNX's form, about 1 at the noise level; :func:`latenttune.physics.poisson_llk`). A frame whose
output stays above the physics stage's ``restart_llk`` (default 1.5) after its restarts has
*stagnated*: phase retrieval did not reach the noise level, and its density is less certain than
the others'. The flag costs nothing (the LLK is computed anyway) and uses no truth.

How much it says was measured on simulated series the settings were not tuned on
(``python benchmarks/bench_llk_calibration.py``; the table is in
``benchmarks/results/llk_calibration.md`` and the README): stagnated frames had a real-space error
several times that of the others. The flag is a warning, not a guarantee: a frame can fit the
counts and still be wrong where the data say nothing (behind the beamstop); with few counts the
noise hides the misfit, so at 1e7 or 1e6 photons per frame no frame was flagged although the
reconstructions were worse (median E_r 0.15 and 0.25; ``llk_calibration_1e7.md``,
``llk_calibration_1e6.md``); and on data whose noise is not Poisson every frame sits higher (raise
``restart_llk``).

Where it shows: :attr:`latenttune.tracking.physics_stage.PhysicsOutcome.stagnated` per frame;
``latenttune replay``/``track`` print how many frames stagnated; the summary figure marks them; the
tracking movie's caption and ``latenttune export`` name them; the Bluesky tracker device publishes
``stagnated`` and the live view says so. Results files need no new
field: :func:`stagnated_frames` derives the flags from their ``llk`` and the ``restart_llk`` they
were tracked with, so files written before the flag existed read the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from latenttune.io.identity import SETTINGS_ATTR
from latenttune.tracking.physics_stage import PhysicsSettings

__all__ = ["stagnation_threshold", "stagnated_frames", "stagnation_summary"]


def stagnation_threshold(results: Mapping[str, Any]) -> float:
    """The ``restart_llk`` the results were tracked with (:class:`PhysicsSettings`' default when not recorded).

    Parameters
    ----------
    results : mapping
        What :func:`latenttune.io.read_results` returns.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"`results` must be a mapping from read_results, got {type(results).__name__}")
    settings = (results.get("attrs") or {}).get(SETTINGS_ATTR) or {}
    physics = settings.get("physics") if isinstance(settings, Mapping) else None
    value = physics.get("restart_llk") if isinstance(physics, Mapping) else None
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        return PhysicsSettings().restart_llk
    return threshold if math.isfinite(threshold) else PhysicsSettings().restart_llk


def stagnated_frames(results: Mapping[str, Any]) -> np.ndarray | None:
    """Per row: True where the shown density's LLK is above the threshold the run was tracked with.

    Parameters
    ----------
    results : mapping
        What :func:`latenttune.io.read_results` returns.

    Returns
    -------
    ndarray of bool, shape (T,), or None
        None when the results hold no LLK (not tracked with the hybrid strategy). Rows without an
        LLK of their own (skipped frames, which hold the last estimate) are False.
    """
    if "llk" not in results:
        return None
    llk = np.asarray(results["llk"], dtype=float)
    return np.isfinite(llk) & (llk > stagnation_threshold(results))


def stagnation_summary(results: Mapping[str, Any]) -> str:
    """One sentence for a command's summary: how many frames stagnated and which ("" without an LLK)."""
    flags = stagnated_frames(results)
    if flags is None:
        return ""
    threshold = stagnation_threshold(results)
    count = int(flags.sum())
    if count == 0:
        return f"no frame stagnated (every LLK <= {threshold:g})"
    index = np.asarray(results.get("index", np.arange(len(flags))))[flags]
    shown = ", ".join(str(int(i)) for i in index[:10]) + (", ..." if count > 10 else "")
    return (f"{count} of {len(flags)} frames stagnated (LLK > {threshold:g} after the restarts: less certain "
            f"densities): frame{'' if count == 1 else 's'} {shown}")
