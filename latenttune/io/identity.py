"""What a results file was made from, so that ``resume`` never mixes two runs.

A results file (:mod:`latenttune.io.results`) of a replay stores, next to its rows:

* ``series_identity`` (root attribute): where the series came from (its resolved path, and the
  run uid for a stored Bluesky run);
* ``settings`` (root attribute): every setting that changes the numbers: the model checksum, the
  strategy's settings (:meth:`latenttune.tracking.strategy.Strategy.settings`: steps per frame,
  mode, ES gain and dither, reseeding, learning rate, the physics stage's settings, ...), the views
  and the device;
* ``series_sha256`` (one per row): a running SHA-256 over every frame read (from the run's first
  frame, see ``replay --frames``) up to and including that row's frame (intensity, mask and time of each, in order), so it also covers frames that
  were skipped before the first estimate and got no row.

:func:`check_resume` compares all three with the run about to continue and raises
:class:`~latenttune.io.errors.ResultsFileError` with one line naming the first difference. A file
that lacks them (written before they existed) cannot be checked and is refused as well.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.io._attrs import _json_default
from latenttune.io.errors import ResultsFileError
from latenttune.io.results import read_results
from latenttune.io.series import Frame, Series

__all__ = [
    "DIGEST_FIELD",
    "IDENTITY_ATTR",
    "SETTINGS_ATTR",
    "ReadDigest",
    "check_resume",
    "series_identity",
]

#: Root attribute: where the series came from.
IDENTITY_ATTR = "series_identity"
#: Root attribute: every setting that changes the results.
SETTINGS_ATTR = "settings"
#: Per-row field: running SHA-256 of the frames read up to that row's frame.
DIGEST_FIELD = "series_sha256"

def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists, numpy scalars Python numbers)."""
    return json.loads(json.dumps(value, default=_json_default))


def series_identity(series: Series) -> dict[str, Any]:
    """Where ``series`` came from: ``{"path": resolved path or URL, "uid": run uid or None}``."""
    text = str(series.path)
    path = text if "://" in text else str(Path(text).resolve())
    uid = series.metadata.get("uid") if isinstance(series.metadata, Mapping) else None
    return {"path": path, "uid": uid or None}


def _frame_bytes(frame: Frame) -> bytes:
    intensity = np.ascontiguousarray(frame.intensity, dtype=np.float32)
    mask = np.packbits(np.asarray(frame.mask, dtype=bool))
    head = np.array([frame.index], dtype="<i8").tobytes() + np.array([frame.time], dtype="<f8").tobytes()
    return head + intensity.astype("<f4", copy=False).tobytes() + mask.tobytes()


class ReadDigest:
    """A running SHA-256 over the frames read, in order.

    Parameters
    ----------
    value : str
        The digest so far ("" before any frame).
    next_index : int
        Index of the next frame to read.
    """

    def __init__(self, value: str = "", next_index: int = 0) -> None:
        self.value = value
        self.next_index = int(next_index)
        self._by_index: dict[int, str] = {}

    def update(self, frame: Frame) -> str:
        """Fold ``frame`` into the digest and return the new value."""
        if frame.index != self.next_index:
            raise ValueError(f"frames must be read in order: expected frame {self.next_index}, got {frame.index}")
        self.value = hashlib.sha256(self.value.encode() + _frame_bytes(frame)).hexdigest()
        self._by_index[frame.index] = self.value
        self.next_index = frame.index + 1
        return self.value

    def frames(self, series: Series, stop: int | None = None) -> Iterator[Frame]:
        """Read ``series`` from :attr:`next_index` on (to ``stop``), folding every frame in."""
        for i in range(self.next_index, len(series) if stop is None else stop):
            frame = series[i]
            self.update(frame)
            yield frame

    def at(self, index: int) -> str:
        """The digest after frame ``index`` (a frame read through this object)."""
        return self._by_index[index]


def _differs(partial: Path, what: str, there: Any, here: Any) -> ResultsFileError:
    return ResultsFileError(
        partial,
        f"cannot resume: {what} differs: the file was made with {there!r}, this run has {here!r} "
        "(resume with the same series and settings, or start a new --out)",
    )


def check_resume(out: str | os.PathLike[str], attrs: Mapping[str, Any], series: Series,
                 fields: Sequence[str] = (), first: int = 0) -> ReadDigest:
    """Refuse to resume ``out`` unless it comes from the same series, content and settings.

    Parameters
    ----------
    out : str or Path
        The results file; its ``out.partial`` is checked.
    attrs : mapping
        The attributes the resumed run would write: ``series_identity`` and ``settings``.
    series : Series
        The series the resumed run reads.
    fields : sequence of str
        Per-row fields the caller needs to continue (e.g. the strategy's state).
    first : int
        The run's first frame (a run over part of the series starts there).

    Returns
    -------
    ReadDigest
        The digest of every frame up to the file's last row, ready for the next frame. A missing
        ``out.partial`` gives a fresh digest (the results writer then reports what is missing).

    Raises
    ------
    ResultsFileError
        One line naming the first difference: the series (path or uid), a setting, the content of
        a frame already processed, or a file too old to carry this information; or a corrupt file.
    """
    partial = Path(str(out) + ".partial")
    if not partial.exists():
        return ReadDigest(next_index=first)
    previous = read_results(partial)
    file_attrs = previous.attrs
    for key in (IDENTITY_ATTR, SETTINGS_ATTR):
        if not isinstance(file_attrs.get(key), dict):
            raise ResultsFileError(
                partial, f"cannot resume: the file has no {key!r} (written by an older latenttune), so the "
                "run it continues cannot be checked; start a new --out")
    identity, file_identity = _plain(attrs[IDENTITY_ATTR]), file_attrs[IDENTITY_ATTR]
    for key in sorted(set(identity) | set(file_identity)):
        if identity.get(key) != file_identity.get(key):
            name = "the series" if key == "path" else f"the series {key}"
            raise _differs(partial, name, file_identity.get(key), identity.get(key))
    settings, file_settings = _plain(attrs[SETTINGS_ATTR]), file_attrs[SETTINGS_ATTR]
    for key in [*settings, *sorted(set(file_settings) - set(settings))]:
        if settings.get(key, "<not set>") != file_settings.get(key, "<not set>"):
            raise _differs(partial, f"`{key}`", file_settings.get(key, "<not set>"), settings.get(key, "<not set>"))
    rows = previous.num_frames
    if rows == 0:
        return ReadDigest(next_index=first)
    if not (previous.has_field(DIGEST_FIELD) and previous.has_field("index")):
        raise ResultsFileError(partial, f"cannot resume: the rows carry no {DIGEST_FIELD!r}, so the frames "
                               "already processed cannot be checked; start a new --out")
    missing = [name for name in fields if not previous.has_field(name)]
    if missing:
        raise ResultsFileError(partial, f"cannot resume: the rows lack {missing} (a damaged file); start a new --out")
    expected = {int(i): str(d) for i, d in zip(previous.index, previous.series_sha256)}
    last = int(previous.index[rows - 1])
    if last >= len(series):
        raise ResultsFileError(partial, f"cannot resume: the file holds frame {last} but the series has only "
                               f"{len(series)} frames")
    digest = ReadDigest(next_index=first)
    for frame in digest.frames(series, stop=last + 1):
        if frame.index in expected and digest.value != expected[frame.index]:
            raise ResultsFileError(
                partial, f"cannot resume: the series content differs from what this run read before "
                f"(frames {first} to {frame.index}; first row that disagrees: frame {frame.index}); start a new --out")
    return digest
