"""Data I/O: diffraction time series in (CXI, cohere) and run results out.

Read side
    :func:`open_series` returns a lazily read, validated :class:`Series` of
    :class:`Frame` objects from a CXI-style HDF5 file (stacked or one entry per
    frame), a directory of cohere-style amplitude frames, or a single ``.npy``.
Write side
    :class:`CXISeriesWriter` / :func:`write_series` write CXI-style series frame
    by frame; :func:`write_amplitude_frames` exports cohere-style frames;
    :class:`ResultWriter` / :func:`read_results` (a :class:`Results` object) handle the
    crash-safe, resumable results file of a tracking or replay run; its rows are named in
    :mod:`latenttune.io.rows`.

See docs/conventions.md section 6.
"""

from __future__ import annotations

from latenttune.io.cohere import CohereDirSeries, NpySeries, write_amplitude_frames
from latenttune.io.cxi import CXISeries
from latenttune.io.cxi_writer import CXISeriesWriter, write_series
from latenttune.io.errors import ResultsFileError, SeriesFormatError
from latenttune.io.opening import open_series
from latenttune.io.results import Reconstruction, Results, ResultWriter, RunSummary, read_results
from latenttune.io.series import Frame, Series

__all__ = [
    "CXISeries",
    "CXISeriesWriter",
    "CohereDirSeries",
    "Frame",
    "NpySeries",
    "ResultWriter",
    "ResultsFileError",
    "Series",
    "SeriesFormatError",
    "open_series",
    "read_results",
    "Reconstruction",
    "Results",
    "RunSummary",
    "write_amplitude_frames",
    "write_series",
]
