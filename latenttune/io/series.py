"""Read side of diffraction time series: :class:`Frame` and the :class:`Series` base class.

A series is a sequence of measured 3D diffraction patterns ``I(q, t)`` on an
``N^3`` grid (q = 0 at index ``N // 2``), each with a boolean mask
(True = voxel not measured) and a time stamp in seconds. Frames are read lazily
on access, so a long series never has to fit in memory.

The readers subclass :class:`Series`; :func:`latenttune.io.open_series` (in
:mod:`latenttune.io.opening`) picks one by the input. This module imports none of them.

Supported inputs (docs/conventions.md section 6):

* CXI-style HDF5 (``.cxi``, ``.h5``, ...): see :mod:`latenttune.io.cxi`.
* cohere-style amplitude frames: a directory of ``*.npy`` or ``*.tif`` files,
  or one ``.npy`` of shape (T, N, N, N) or (N, N, N): see
  :mod:`latenttune.io.cohere`.
* a stored Bluesky tracking run (``.msgpack``): see :mod:`latenttune.io.runs`.

Readers check structure only (shapes, dtypes, layout); whether a frame's values can be tracked
is decided by :func:`latenttune.frame_policy.frame_problem`.
"""

from __future__ import annotations

import abc
import logging
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.frame_policy import Frame

__all__ = ["Frame", "Series", "HDF5_SUFFIXES"]

logger = logging.getLogger(__name__)


class Series(abc.ABC):
    """A lazily read diffraction time series (abstract base).

    Subclasses provide the raw readers; this class provides indexing,
    validation of every frame on read, iteration and resource handling.

    Parameters
    ----------
    path : pathlib.Path
        The file or directory the series comes from.
    N : int
        Diffraction grid size (even).
    times : numpy.ndarray
        float64 (T,) time stamps in seconds.
    has_truth : bool
        Whether a ground-truth density is stored with every frame.
    metadata : dict
        Free-form description of the source (format, layout, attributes, ...).
    """

    def __init__(
        self,
        path: Path,
        N: int,
        times: np.ndarray,
        has_truth: bool,
        metadata: dict[str, Any],
    ) -> None:
        self._path = Path(path)
        self._N = int(N)
        self._times = np.asarray(times, dtype=np.float64)
        self._has_truth = bool(has_truth)
        self._metadata = metadata
        self._closed = False

    # -- raw readers provided by subclasses ----------------------------------
    @abc.abstractmethod
    def _read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(intensity float32, mask bool)`` of frame ``i`` (structure checked)."""

    def _read_truth(self, i: int) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _close(self) -> None:
        """Release file handles (subclasses override)."""

    # -- public API -----------------------------------------------------------
    @property
    def path(self) -> Path:
        """The file or directory the series was opened from."""
        return self._path

    @property
    def N(self) -> int:
        """Diffraction grid size (N = 2n)."""
        return self._N

    @property
    def n(self) -> int:
        """Object grid size (n = N / 2)."""
        return self._N // 2

    @property
    def times(self) -> np.ndarray:
        """Time stamps of all frames in seconds, float64 (T,) (a copy)."""
        return self._times.copy()

    @property
    def metadata(self) -> dict[str, Any]:
        """Description of the source: format, layout, attributes, time source, ..."""
        return self._metadata

    @property
    def has_truth(self) -> bool:
        """True when a ground-truth density (simulated series) is stored."""
        return self._has_truth

    @property
    def truth_attrs(self) -> dict[str, Any]:
        """Attributes describing the ground truth (scenario, params, seed); {} if none."""
        return dict(self._metadata.get("truth_attrs") or {})

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        return int(self._times.shape[0])

    def _index(self, t: Any) -> int:
        try:
            i = operator.index(t)
        except TypeError:
            raise TypeError(
                f"series index must be an integer, got {type(t).__name__}"
            ) from None
        T = len(self)
        if not -T <= i < T:
            raise IndexError(
                f"frame index {i} is out of range for a series of {T} frame(s) "
                f"(valid: {-T} .. {T - 1}) in {self._path}"
            )
        return i + T if i < 0 else i

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"series {self._path} is closed")

    def __getitem__(self, t: int) -> Frame:
        i = self._index(t)
        self._check_open()
        intensity, mask = self._read_raw(i)
        return Frame(intensity=intensity, mask=mask, time=float(self._times[i]), index=i)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def truth(self, t: int) -> np.ndarray:
        """Ground-truth complex density of frame ``t``.

        Parameters
        ----------
        t : int
            Frame index (negative counts from the end).

        Returns
        -------
        numpy.ndarray
            complex64 (n, n, n).

        Raises
        ------
        LookupError
            If the series stores no ground truth (``has_truth`` is False).
        """
        i = self._index(t)
        self._check_open()
        if not self._has_truth:
            raise LookupError(f"series {self._path} stores no ground truth (has_truth is False)")
        return self._read_truth(i)

    def close(self) -> None:
        """Close the underlying files (idempotent)."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Series:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"{type(self).__name__}({str(self._path)!r}, frames={len(self)}, N={self._N}, "
            f"truth={self._has_truth}, {state})"
        )


#: File suffixes read as HDF5 (CXI-style) without sniffing the content.
HDF5_SUFFIXES = (".cxi", ".h5", ".hdf5", ".hdf", ".nxs")
