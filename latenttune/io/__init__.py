"""Data I/O: diffraction time series in (CXI, cohere) and run results out.

Read side
    :func:`open_series` returns a lazily read, validated :class:`Series` of
    :class:`Frame` objects from a CXI-style HDF5 file (stacked or one entry per
    frame), a directory of cohere-style amplitude frames, or a single ``.npy``.
Write side
    :class:`CXISeriesWriter` / :func:`write_series` write CXI-style series frame
    by frame; :func:`write_amplitude_frames` exports cohere-style frames;
    :class:`ResultWriter` / :func:`read_results` handle the crash-safe,
    resumable results file of a tracking or replay run.

See DESIGN.md section 5.
"""

from __future__ import annotations

from latenttune.io.cohere import CohereDirSeries, NpySeries, write_amplitude_frames
from latenttune.io.cxi import CXISeries
from latenttune.io.cxi_writer import CXISeriesWriter, write_series
from latenttune.io.errors import ResultsFileError, SeriesFormatError
from latenttune.io.results import Reconstruction, ResultWriter, read_results, reconstruction
from latenttune.io.series import Frame, Series, open_series

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
    "reconstruction",
    "Reconstruction",
    "write_amplitude_frames",
    "write_series",
]
