"""In-situ tracking with Bluesky: the plan, ophyd devices, run storage and live plots.

* :func:`track_sample` (:mod:`~latenttune.bluesky.plan`): the plan; one event per frame with the
  measured pattern and mask and the controller's output.
* :class:`SimulatedCDIDetector`, :class:`LatentTracker`, :class:`CDIDetector` (the detector
  protocol) in :mod:`~latenttune.bluesky.devices`.
* :class:`MsgpackStorage` (default, embedded) and :class:`TiledStorage` (``tiled`` extra) in
  :mod:`~latenttune.bluesky.storage`.
* :func:`open_run` / :class:`RunSeries` (:mod:`latenttune.io.runs`, re-exported here): a stored
  run as a series, for ``latenttune replay``; reading runs needs no Bluesky package.
* :class:`LiveFeedback`, :class:`SliceView`, :class:`LatentComponentPlot` in
  :mod:`~latenttune.bluesky.live`.

See ``docs/bluesky.md``.
"""

from __future__ import annotations

from latenttune.bluesky.devices import (
    ArraySignal,
    CDIDetector,
    LatentTracker,
    SimulatedCDIDetector,
    SimulationOptions,
)
from latenttune.bluesky.plan import DataKeys, track_sample
from latenttune.frame_policy import checked_frame
from latenttune.bluesky.storage import MsgpackStorage, TiledStorage, open_tiled, read_documents
from latenttune.io.runs import RunSeries, open_run

__all__ = [
    "ArraySignal",
    "CDIDetector",
    "DataKeys",
    "LatentTracker",
    "MsgpackStorage",
    "RunSeries",
    "SimulatedCDIDetector",
    "SimulationOptions",
    "TiledStorage",
    "open_run",
    "open_tiled",
    "checked_frame",
    "track_sample",
    "read_documents",
]
