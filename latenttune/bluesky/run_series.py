"""Stored tracking runs as series: moved to :mod:`latenttune.io.runs` (the core reads runs without Bluesky).

Kept so that ``from latenttune.bluesky.run_series import open_run`` goes on working.
"""

from __future__ import annotations

from latenttune.io.runs import RECORDED, MsgpackRunSeries, RunSeries, TiledRunSeries, open_run

__all__ = ["RunSeries", "MsgpackRunSeries", "TiledRunSeries", "open_run", "RECORDED"]
