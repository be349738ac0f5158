"""Exceptions raised by :mod:`latenttune.io`.

Every format error names the file, the dataset (or array) inside it and the
rule that was broken, so a beamline user can find and fix the offending item
without reading the code.
"""

from __future__ import annotations

import os

__all__ = ["SeriesFormatError", "ResultsFileError"]


class SeriesFormatError(ValueError):
    """A diffraction time series on disk does not follow the expected layout.

    Parameters
    ----------
    file : str or os.PathLike
        The file (or directory) being read.
    dataset : str
        The dataset path inside an HDF5 file, or the array / frame file name
        for numpy and TIFF inputs.
    rule : str
        The rule that was broken, with the offending value.
    frame : int, optional
        The frame index (0-based) when the problem concerns a single frame.

    Attributes
    ----------
    file, dataset, rule, frame
        The parts of the message, kept for programmatic use.
    """

    def __init__(
        self, file: str | os.PathLike[str], dataset: str, rule: str, frame: int | None = None
    ) -> None:
        self.file = os.fspath(file)
        self.dataset = dataset
        self.rule = rule
        self.frame = frame
        where = f"frame {frame}: " if frame is not None else ""
        super().__init__(f"{self.file}: dataset '{dataset}': {where}{rule}")


class ResultsFileError(ValueError):
    """A results file cannot be read, resumed or written as asked.

    Parameters
    ----------
    file : str or os.PathLike
        The results file (final or ``.partial``).
    rule : str
        What is wrong, with the offending value.
    """

    def __init__(self, file: str | os.PathLike[str], rule: str) -> None:
        self.file = os.fspath(file)
        self.rule = rule
        super().__init__(f"{self.file}: {rule}")
