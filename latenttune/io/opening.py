"""The input dispatcher :func:`open_series`: picks the reader of a diffraction time series.

It lives apart from :mod:`latenttune.io.series` (the :class:`~latenttune.io.series.Series` base
class the readers subclass) so that the imports run one way: the readers
(:mod:`latenttune.io.cxi`, :mod:`latenttune.io.cohere`, :mod:`latenttune.io.runs`) import the
base, and this module imports the readers (lazily, only the one an input needs).
"""

from __future__ import annotations

import os
from pathlib import Path

from latenttune.io.errors import SeriesFormatError
from latenttune.io.series import HDF5_SUFFIXES, Series
from latenttune.outputs import check_input

__all__ = ["open_series"]


def open_series(path: str | os.PathLike[str], *, amplitude: bool = False) -> Series:
    """Open a diffraction time series for lazy, validated reading.

    Parameters
    ----------
    path : str or os.PathLike
        A CXI-style HDF5 file (stacked or one entry per frame), a directory of
        frames (``*.npy`` or ``*.tif``), or a single ``.npy``, shape (T, N, N, N) or
        (N, N, N) (photon counts, or amplitudes with ``amplitude=True``), or a ``.msgpack`` file of a
        stored Bluesky tracking run (:class:`latenttune.io.runs.RunSeries`; runs in
        a tiled catalog open with :func:`latenttune.io.runs.open_run`).

    amplitude : bool
        A folder of ``.npy``/``.tif`` frames or a ``.npy`` file holds amplitudes (cohere's convention,
        squared here). By default they hold intensities (photon counts), as everywhere in latenttune
        (``latenttune prepare`` reads them the same way); ``--amplitude`` says the other.

    Returns
    -------
    Series
        Use as a context manager (or call ``close()``) to release the file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (or is a dangling symbolic link).
    ValueError
        If ``path`` is a symbolic-link loop, a FIFO, a device or a socket (refused before it is
        opened: reading one could block forever).
    SeriesFormatError
        If the content breaks a layout rule (the message names file, dataset
        and rule).
    """
    p = Path(path)
    if not os.path.lexists(p):
        raise FileNotFoundError(f"`path` does not exist: {p}")
    check_input(p, "`path`", directory=True)  # a link loop, a dangling link, a FIFO or device: never opened
    if p.is_dir():
        from latenttune.io.cohere import CohereDirSeries

        return CohereDirSeries(p, amplitude=amplitude)
    suffix = p.suffix.lower()
    if suffix == ".msgpack":  # a stored Bluesky tracking run (latenttune.bluesky.storage.MsgpackStorage)
        from latenttune.io.runs import MsgpackRunSeries

        return MsgpackRunSeries(p)
    if suffix == ".npy":
        from latenttune.io.cohere import NpySeries

        return NpySeries(p, amplitude=amplitude)
    import h5py

    if suffix in HDF5_SUFFIXES or h5py.is_hdf5(p):
        from latenttune.io.cxi import CXISeries

        return CXISeries(p)
    raise SeriesFormatError(
        p,
        "<file>",
        "unsupported input: expected a CXI/HDF5 file (.cxi, .h5), a .npy file, "
        f"a .msgpack Bluesky run, or a directory of .npy/.tif frames, got suffix {suffix or '(none)'!r}",
    )
