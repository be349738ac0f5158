"""How the physics stage iterates on each frame: :class:`PhysicsSettings`.

The defaults were chosen on the tracking and cohere benchmarks (``benchmarks/bench_tracking.py``,
``benchmarks/bench_vs_cohere.py``); the figures behind each choice are in ``benchmarks/results/``
and ``docs/model_card.md``, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from latenttune.quality import DEFAULT_RESTART_LLK
from latenttune.validation import check_bool, check_int, check_number

__all__ = ["PhysicsSettings"]


@dataclass(frozen=True)
class PhysicsSettings:
    """How the physics stage iterates on each frame.

    Attributes
    ----------
    iterations : int
        Iterations per warm-started frame (>= 1), the last ``er_iterations`` of them ER, the rest
        RAAR. Default 60.
    cold_iterations : int
        Iterations of a frame that starts from the decoded density (the first frame, and whenever
        the decoded density fits the new pattern better than the previous output: a jump, a fast
        change, a rejected refinement), ``>= iterations``: a cold start has further to go. Default
        120, the point where more iterations stopped paying for their time on the ``fcc-glide``
        series, whose crystal tilts so that most frames start cold.
    er_iterations : int
        Final ER iterations, ``0 <= er_iterations <= iterations``. Default 10.
    beta : float
        RAAR relaxation, in (0, 1]. Default 0.9.
    support_threshold : float
        Support = (blurred) amplitude above this fraction of its maximum, in (0, 1). Default 0.15.
    shrinkwrap_every : int
        Shrink-wrap period in iterations (0: keep the frame's first support). Default 10.
    shrinkwrap_sigma : float
        Gaussian blur (voxels, > 0) before thresholding in shrink-wrap. Default 1.0.
    guide_dilation : int
        Voxels by which the decoded density's support is dilated into the frame's first support
        (>= 0). Default 1.
    guide_weight : float or None
        Pull of the iterate towards the guide (the decoded latent) per iteration, in [0, 1) (0: none).
        Default None: derived from the counts by the physics stage, stronger the less the data
        constrain the frame (:func:`latenttune.tracking.physics_stage.guide_weight`).
    fill_unmeasured : bool
        Give the voxels the detector did not measure (beamstop, gaps) the guide's amplitudes,
        scaled to the data, instead of leaving them free. Default False: on the tuning series
        forcing a decoded guide's low-q amplitudes cost accuracy, most behind a 3-voxel beamstop
        (the ablation benchmark reports it).
    free_fraction : float
        Fraction of the measured voxels held out to judge the result, in (0, 0.5). Default 0.05.
    seed : int
        Seed of the held-out voxels (>= 0). Default 0.
    warm_start : bool
        Start each frame from the previous frame's output (True) or from the decoded density.
    restarts : int
        Further starts (>= 0) tried on a frame whose refinement stagnated (see ``restart_llk``), each
        ``cold_iterations`` long, from the decoded density changed where phase retrieval gets stuck:
        its phase negated, its phase flattened, or a random phase (cycled with the frame index, so
        consecutive stagnated frames try different ones). The best fit of all the frame's starts
        goes on to the acceptance test. Default 1. Two kinds of restart come first: when the frame
        did not start warm because the decoded density fitted it better than the previous output,
        a warm run from the previous output (a changing sample is often still in the previous
        frame's basin); then the frame's other candidate densities (the tracker passes the encoders'
        predictions that did not guide the frame). A frame that went back to the previous output
        this way skips the usual restarts: on the benchmark series they only ever won on frames
        with no previous output. ``restarts=0`` turns every kind off. The order is
        :func:`latenttune.tracking.physics_stage.restart_plan`.
    restart_llk : float
        Poisson log-likelihood (PyNX's form: about 1 when a density explains the counts to the
        Poisson noise) above which a refinement counts as stagnated, > 1. Default
        :data:`latenttune.quality.DEFAULT_RESTART_LLK` (1.5; its calibration is described in
        :mod:`latenttune.quality`). A frame whose output stays above it after the restarts is
        reported as stagnated. Data whose noise is not Poisson (background, detector effects) sit
        higher: raise it (or set ``restarts=0`` to keep the time, and read the flags with that in mind).
    """

    iterations: int = 60
    cold_iterations: int = 120
    er_iterations: int = 10
    beta: float = 0.9
    support_threshold: float = 0.15
    shrinkwrap_every: int = 10
    shrinkwrap_sigma: float = 1.0
    guide_dilation: int = 1
    guide_weight: float | None = None
    fill_unmeasured: bool = False
    free_fraction: float = 0.05
    seed: int = 0
    warm_start: bool = True
    restarts: int = 1
    restart_llk: float = DEFAULT_RESTART_LLK

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, low=1)
        check_int("er_iterations", self.er_iterations, low=0)
        if self.er_iterations > self.iterations:
            raise ValueError(f"`er_iterations` must be <= `iterations` ({self.iterations}), got {self.er_iterations}")
        check_int("cold_iterations", self.cold_iterations, low=1)
        if self.cold_iterations < self.iterations:
            raise ValueError(f"`cold_iterations` must be >= `iterations` ({self.iterations}), got {self.cold_iterations}")
        check_number("beta", self.beta, low=0.0, high=1.0, open_low=True)
        check_number("support_threshold", self.support_threshold, low=0.0, high=1.0, open_low=True, open_high=True)
        check_int("shrinkwrap_every", self.shrinkwrap_every, low=0)
        check_number("shrinkwrap_sigma", self.shrinkwrap_sigma, low=0.0, open_low=True)
        check_int("guide_dilation", self.guide_dilation, low=0)
        check_number("guide_weight", self.guide_weight, low=0.0, high=1.0, open_high=True, allow_none=True)
        check_bool("fill_unmeasured", self.fill_unmeasured)
        check_number("free_fraction", self.free_fraction, low=0.0, high=0.5, open_low=True, open_high=True)
        check_int("seed", self.seed, low=0)
        check_bool("warm_start", self.warm_start)
        check_int("restarts", self.restarts, low=0)
        check_number("restart_llk", self.restart_llk, low=1.0, high=math.inf, open_low=True)
