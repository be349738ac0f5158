"""The tracking wing: keep a latent vector, and the reconstruction it guides, locked on a changing sample.

* :mod:`~latenttune.tracking.tracker`: :class:`FrameTracker` (one frame) and :func:`track` (a series);
* :mod:`~latenttune.tracking.physics_stage`: the hybrid tracker's phase retrieval on the voxels;
* :mod:`~latenttune.tracking.replay`: a stored series tracked into a results file.
"""

from __future__ import annotations

from latenttune.tracking.tracker import (
    ES_STEPS_PER_FRAME,
    HYBRID_STEPS_PER_FRAME,
    MODES,
    STRATEGIES,
    ESStrategy,
    FrameRecord,
    FrameTracker,
    GradientStrategy,
    HybridStrategy,
    OneShotStrategy,
    Strategy,
    TrackResult,
    make_strategy,
    track,
)

__all__ = [
    "ES_STEPS_PER_FRAME",
    "HYBRID_STEPS_PER_FRAME",
    "MODES",
    "STRATEGIES",
    "ESStrategy",
    "FrameRecord",
    "FrameTracker",
    "GradientStrategy",
    "HybridStrategy",
    "OneShotStrategy",
    "Strategy",
    "TrackResult",
    "make_strategy",
    "track",
]
