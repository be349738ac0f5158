"""The tracking wing: keep a latent vector, and the reconstruction it guides, locked on a changing sample.

* :mod:`~latenttune.tracking.strategy`: the :class:`Strategy` seam between the tracker and a method;
* :mod:`~latenttune.tracking.strategies`: the methods (hybrid, ES, one-shot, the gradient comparator)
  and :func:`make_strategy`;
* :mod:`~latenttune.tracking.tracker`: :class:`FrameTracker` (one frame) and :func:`track` (a series);
* :mod:`~latenttune.tracking.physics_stage`: the hybrid's per-run phase retrieval on the voxels
  (settings in :mod:`~latenttune.tracking.physics_settings`, kernels in
  :mod:`~latenttune.tracking.phase_retrieval`);
* :mod:`~latenttune.tracking.replay`: a stored series tracked into a results file.
"""

from __future__ import annotations

from latenttune.tracking.physics_settings import PhysicsSettings
from latenttune.tracking.strategies import (
    ES_STEPS_PER_FRAME,
    HYBRID_STEPS_PER_FRAME,
    MODES,
    STRATEGIES,
    ESStrategy,
    GradientStrategy,
    HybridStrategy,
    OneShotStrategy,
    make_strategy,
)
from latenttune.tracking.strategy import Strategy, StrategyDescription
from latenttune.tracking.tracker import FrameRecord, FrameTracker, TrackResult, track

__all__ = ["ES_STEPS_PER_FRAME", "HYBRID_STEPS_PER_FRAME", "MODES", "STRATEGIES", "ESStrategy", "GradientStrategy",
           "HybridStrategy", "OneShotStrategy", "make_strategy", "PhysicsSettings", "Strategy", "StrategyDescription",
           "FrameRecord", "FrameTracker", "TrackResult", "track"]
