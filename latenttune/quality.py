"""Is a frame's reconstruction trustworthy? The stagnation rule, written once.

On measured data there is no truth to compute a real-space error against. What the hybrid tracker
does know is how well each frame's output explains the counts: its Poisson log-likelihood (LLK,
PyNX's form, about 1 at the noise level; :func:`latenttune.physics.poisson_llk`). A frame whose
output stays above the physics stage's ``restart_llk`` after its restarts has *stagnated*: phase
retrieval did not reach the noise level, and its density is less certain than the others'. The
flag costs nothing (the LLK is computed anyway) and uses no truth.

How much it says was measured on simulated series the settings were not tuned on
(``python benchmarks/bench_llk_calibration.py``; tables in ``benchmarks/results/llk_calibration.md``,
``llk_calibration_1e7.md`` and ``llk_calibration_1e6.md``): at 1e8 photons per frame stagnated frames
had a real-space error several times that of the others. The flag is a warning, not a guarantee: a
frame can fit the counts and still be wrong where the data say nothing (behind the beamstop); with
few counts the noise hides the misfit, so at 1e7 or 1e6 photons per frame no frame was flagged
although the reconstructions were worse; and on data whose noise is not Poisson every frame sits
higher (raise ``restart_llk``).

Where it shows: :attr:`latenttune.tracking.physics_stage.PhysicsOutcome.stagnated` per frame,
:attr:`latenttune.io.Results.stagnated` for a results file (derived from its ``llk`` and the
``restart_llk`` it was tracked with, so files written before the flag existed read the same way),
the commands' summaries, the summary figure, the tracking movie's caption, ``latenttune export`` and
the Bluesky tracker device.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_RESTART_LLK", "DISCRIMINATING_COUNTS", "is_stagnated", "low_counts_sentence",
           "stagnation_sentence"]

DEFAULT_RESTART_LLK = 1.5
"""LLK above which a refinement counts as stagnated, unless the run says otherwise: set above what the
true density and refinements that found the crystal score at 1e8 photons, so that only refinements
that did not reach the noise level exceed it (``benchmarks/results/llk_calibration.md``)."""


def is_stagnated(llk: float | np.ndarray, threshold: float) -> bool | np.ndarray:
    """The stagnation rule: a finite LLK above ``threshold`` (a non-finite LLK is not flagged).

    Parameters
    ----------
    llk : float or ndarray
        Poisson log-likelihood(s) of the frames' outputs (NaN for frames without one).
    threshold : float
        The ``restart_llk`` the frames were tracked with.
    """
    values = np.asarray(llk, dtype=float)
    flags = np.isfinite(values) & (values > threshold)
    return bool(flags) if flags.ndim == 0 else flags


def stagnation_sentence(flags: np.ndarray, index: np.ndarray, threshold: float) -> str:
    """One sentence for a command's summary: how many frames stagnated and which.

    Parameters
    ----------
    flags : ndarray of bool, shape (T,)
        Per row, whether the frame stagnated.
    index : ndarray of int, shape (T,)
        The rows' frame numbers.
    threshold : float
        The LLK threshold the run used.
    """
    count = int(np.sum(flags))
    if count == 0:
        return f"no frame stagnated (every LLK <= {threshold:g})"
    shown_index = np.asarray(index)[np.asarray(flags, dtype=bool)]
    shown = ", ".join(str(int(i)) for i in shown_index[:10]) + (", ..." if count > 10 else "")
    return (f"{count} of {len(flags)} frames stagnated (LLK > {threshold:g} after the restarts: less certain "
            f"densities): frame{'' if count == 1 else 's'} {shown}")


DISCRIMINATING_COUNTS = 9e7
"""Counts per frame from which the stagnation flag was seen to tell stagnated frames from good ones: in the
calibration (``benchmarks/results/llk_calibration*.md``) it did at 1e8 photons per frame (about 9.8e7 counts
measured outside the beamstop) and flagged no frame at 1e7 and 1e6, where the reconstructions were worse."""


def low_counts_sentence(counts_per_frame: float) -> str:
    """One sentence when a frame's counts are too few for the LLK flag to discriminate (else an empty string).

    Parameters
    ----------
    counts_per_frame : float
        Typical counts in a frame.
    """
    if not counts_per_frame < DISCRIMINATING_COUNTS:
        return ""
    return (f"{counts_per_frame:.2g} counts per frame is below {DISCRIMINATING_COUNTS:.0e}, about the fewest at which "
            f"the project's calibration saw the LLK tell a stagnated frame from a good one: here the noise hides the "
            f"misfit, so an LLK near 1 (and no 'stagnated' flag) does not mean an accurate reconstruction")
