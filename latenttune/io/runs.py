"""A stored :func:`~latenttune.bluesky.track_sample` run, read as a diffraction series.

:class:`RunSeries` is a :class:`latenttune.io.Series` whose frames are the events of a run's
``primary`` stream: the measured pattern and mask the live tracker saw (prepared with the same
:func:`latenttune.frame_policy.checked_frame`), with the detector's sample time. So
``latenttune replay RUN.msgpack`` (or ``latenttune replay CATALOG --uid UID``) runs the same
tracking code on the same arrays, and with the live run's strategy settings reproduces the costs
it recorded (:attr:`RunSeries.recorded`).

Two sources: a msgpack file written by :class:`~latenttune.bluesky.storage.MsgpackStorage`
(scanned once; a frame's arrays are read back from the file on access; decoded without pickle,
:mod:`latenttune.io.msgpack_safe`), or a run in a tiled catalog (an embedded catalog's directory
or file, or a server URL) given with its uid (:mod:`latenttune.io.tiled`).

This module is part of the core: reading a stored run never imports the Bluesky packages. Like
every reader it checks structure only; the values of each frame go to the tracker's frame policy
(:mod:`latenttune.frame_policy`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.frame_policy import checked_frame
from latenttune.io._checks import check_grid
from latenttune.io.errors import SeriesFormatError
from latenttune.io.series import HDF5_SUFFIXES, Series
from latenttune.limits import MAX_FRAMES
from latenttune.outputs import check_input

log = logging.getLogger(__name__)

__all__ = ["RunSeries", "MsgpackRunSeries", "TiledRunSeries", "open_run", "check_document", "RECORDED", "STREAM",
           "MD_KEY"]

#: Event stream of the tracked frames.
STREAM = "primary"
#: Key of the start document's latenttune metadata (data keys, model, strategy, versions).
MD_KEY = "latenttune"

#: Recorded per-frame quantities (tracker output and detector stamps) that :attr:`RunSeries.recorded` holds.
RECORDED = ("cost", "latent", "es_steps", "status", "frame_index", "sample_time")


def _keys_from_start(start: dict[str, Any], where: Path, dataset: str) -> dict[str, Any]:
    md = start.get(MD_KEY)
    if not isinstance(md, dict) or not isinstance(md.get("keys"), dict) or not md["keys"].get("pattern"):
        raise SeriesFormatError(
            where, dataset, f"not a track_sample run: the start document has no {MD_KEY!r} metadata with data keys"
        )
    bad = {name: key for name, key in md["keys"].items() if not (key is None or isinstance(key, str))}
    if bad or not isinstance(md["keys"]["pattern"], str):
        raise SeriesFormatError(where, dataset, f"the {MD_KEY!r} metadata's data keys must be names (text) or None, "
                                f"got {bad or md['keys']['pattern']!r}")
    return md


# -- validation of the documents (msgpack) ---------------------------------------------------------------

_NUMBER = (int, float, np.integer, np.floating)
_SEQUENCE = (list, tuple, np.ndarray)
#: Fields each document this reader uses must have, and their types (what event-model requires of them).
_REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "start": {"uid": (str,), "time": _NUMBER},
    "descriptor": {"uid": (str,), "data_keys": (dict,)},
    "event": {"descriptor": (str,), "data": (dict,), "time": _NUMBER},
    "event_page": {"descriptor": (str,), "data": (dict,), "time": _SEQUENCE},
    "stop": {},
}
_TYPE_WORDS = {_NUMBER: "a number", _SEQUENCE: "a list", (str,): "text", (dict,): "a mapping"}


def check_document(name: str, doc: Any, where: Path, position: int) -> dict[str, Any]:
    """A run document, refused in one line when it lacks a field this reader uses or has the wrong type.

    Parameters
    ----------
    name : str
        The document's kind (``"start"``, ``"descriptor"``, ``"event"``, ``"event_page"``, ``"stop"``;
        others pass unchecked).
    doc : object
        The document as decoded.
    where : Path
        The run file (for the message).
    position : int
        The document's position in the file, from 1 (for the message).

    Raises
    ------
    SeriesFormatError
        Not a mapping, a required field missing, or of the wrong type (bool is not a number).
    """
    if not isinstance(doc, dict):
        raise SeriesFormatError(where, name, f"document {position} ({name!r}) must be a mapping of fields, got "
                                f"{type(doc).__name__}: the run file is damaged")
    for key, types in _REQUIRED.get(name, {}).items():
        if key not in doc:
            raise SeriesFormatError(where, name, f"document {position} ({name!r}) lacks the required field {key!r}: "
                                    "the run file is damaged")
        if isinstance(doc[key], bool) or not isinstance(doc[key], types):
            raise SeriesFormatError(where, name, f"document {position} ({name!r}): field {key!r} must be "
                                    f"{_TYPE_WORDS[types]}, got {type(doc[key]).__name__}")
    return doc


def _event_page(name: str, doc: dict[str, Any], where: Path, position: int) -> dict[str, Any]:
    """An ``event`` or ``event_page`` of the tracked stream as a page, its lengths and data keys checked."""
    if name == "event":
        return {"data": {k: [v] for k, v in doc["data"].items()}, "time": [doc["time"]]}
    length = len(doc["time"])
    if not all(isinstance(t, _NUMBER) and not isinstance(t, bool) for t in doc["time"]):
        raise SeriesFormatError(where, name, f"document {position} ('event_page'): every `time` must be a number")
    for key, values in doc["data"].items():
        if not isinstance(values, _SEQUENCE) or len(values) != length:
            got = len(values) if isinstance(values, _SEQUENCE) else type(values).__name__
            raise SeriesFormatError(where, name, f"document {position} ('event_page'): data key {key!r} must hold one "
                                    f"value per event, {length} like `time`, got {got}")
    return doc


def _check_frame_keys(page: dict[str, Any], keys: dict[str, Any], where: Path, name: str, position: int) -> None:
    """Every event of the tracked stream must carry the pattern (and the mask, when the run has one)."""
    for role in ("pattern", "mask"):
        key = keys.get(role)
        if key is not None and key not in page["data"]:
            raise SeriesFormatError(where, name, f"document {position} ({name!r}) has no {role} (data key {key!r}): "
                                    "every event of the tracked stream must carry it")


def _pattern_shape(descriptor: dict[str, Any], keys: dict[str, Any], where: Path) -> Any:
    """The declared shape of the pattern in the tracked stream's descriptor (checked to be a list of integers)."""
    spec = descriptor["data_keys"].get(keys["pattern"])
    if spec is None:
        raise SeriesFormatError(where, "descriptor", f"the {STREAM!r} stream has no data key {keys['pattern']!r}")
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not isinstance(shape, _SEQUENCE) or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                                   for s in shape):
        raise SeriesFormatError(where, "descriptor", f"data key {keys['pattern']!r} must declare its `shape` as a "
                                f"list of integers, got {shape!r}")
    return shape


def _grid(shape: Any, where: Path, dataset: str) -> int:
    shape = tuple(int(s) for s in (shape or ()))
    if len(shape) != 3:
        raise SeriesFormatError(where, dataset, f"the pattern must be 3-D (N, N, N), got shape {shape}")
    return check_grid(shape, where, dataset)


class RunSeries(Series):
    """Frames of a stored tracking run (abstract; use :func:`open_run` or :func:`latenttune.io.open_series`).

    Attributes
    ----------
    uid : str
        The run's uid.
    start, stop : dict
        The run's start and stop documents (``stop`` is {} for a run that never closed).
    recorded : dict of ndarray
        What the live run recorded per frame: ``cost`` (T,), ``latent`` (T, k), ``es_steps``,
        ``status``, and the detector's ``frame_index`` and ``sample_time`` where present.
    """

    uid: str
    start: dict[str, Any]
    stop: dict[str, Any]
    recorded: dict[str, np.ndarray]

    def _setup(self, path: Path, start: dict[str, Any], stop: dict[str, Any], N: int, times: np.ndarray,
               recorded: dict[str, np.ndarray], source: str, fmt: str) -> None:
        self.uid = str(start.get("uid", ""))
        self.start, self.stop, self.recorded = start, stop, recorded
        md = start[MD_KEY]
        metadata = {
            "format": fmt,
            "source": source,
            "uid": self.uid,
            "exit_status": stop.get("exit_status"),
            "keys": dict(md["keys"]),
            "strategy": md.get("strategy", {}),
            "model_path": md.get("model_path"),
            "model_checksum": md.get("model_checksum"),
            "time_source": "detector sample_time" if md["keys"].get("sample_time") else "event time - run start",
            "num_frames": int(len(times)),
            "N": N,
        }
        Series.__init__(self, path, N, times, False, metadata)
        log.info("opened run %s (%s): %d frames, N = %d, exit status %s", self.uid, source, len(times), N,
                 metadata["exit_status"])

    def _arrays(self, i: int) -> tuple[Any, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (f"{type(self).__name__}({self.metadata['source']!r}, uid={self.uid!r}, frames={len(self)}, "
                f"N={self._N}, {state})")

    def _read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        pattern, mask = self._arrays(i)
        try:
            frame = checked_frame(pattern, mask, self._N)
            return frame.intensity, frame.mask
        except (TypeError, ValueError) as exc:
            raise SeriesFormatError(self._path, self.metadata["keys"]["pattern"], str(exc), frame=i) from exc


def _stack(values: list[Any]) -> np.ndarray:
    try:
        return np.asarray(values)
    except ValueError:  # pragma: no cover - ragged values
        return np.asarray(values, dtype=object)


class MsgpackRunSeries(RunSeries):
    """A run stored by :class:`~latenttune.bluesky.storage.MsgpackStorage` (one ``.msgpack`` file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import msgpack

        from latenttune.io.msgpack_safe import UnsafeContentError, unpacker as safe_unpacker

        p = Path(path)
        start: dict[str, Any] | None = None
        stop: dict[str, Any] = {}
        descriptors: set[str] = set()
        locations: list[tuple[int, int]] = []  # (byte offset of the event page, row in it)
        rows: list[dict[str, Any]] = []
        keys: dict[str, Any] = {}
        N = 0
        position = 0
        check_input(p, "`path`")  # a FIFO or device: refused before it is opened
        with open(p, "rb") as f:
            unpacker = safe_unpacker(f)
            while True:
                offset = unpacker.tell()
                try:
                    item = unpacker.unpack()
                except msgpack.OutOfData:
                    break
                except UnsafeContentError as exc:
                    raise SeriesFormatError(p, "<msgpack>", f"refused: {exc}") from None
                except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
                    raise SeriesFormatError(
                        p, "<msgpack>", f"cannot be read as a msgpack document stream ({exc})") from exc
                if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
                    raise SeriesFormatError(
                        p, "<msgpack>", "not a Bluesky document stream: expected (name, document) pairs")
                name, doc = item
                position += 1
                doc = check_document(name, doc, p, position)
                if name == "start":
                    start = doc
                    keys = _keys_from_start(doc, p, "start")["keys"]
                elif start is None:
                    raise SeriesFormatError(
                        p, "<msgpack>", f"the stream must begin with a start document, got {name!r}")
                elif name == "descriptor" and doc.get("name") == STREAM:
                    descriptors.add(doc["uid"])
                    N = _grid(_pattern_shape(doc, keys, p), p, keys["pattern"])
                elif name in ("event", "event_page") and doc["descriptor"] in descriptors:
                    page = _event_page(name, doc, p, position)
                    _check_frame_keys(page, keys, p, name, position)
                    if len(locations) + len(page["time"]) > MAX_FRAMES:
                        raise SeriesFormatError(p, STREAM, f"the run holds more than {MAX_FRAMES:,} frames: split it")
                    for j in range(len(page["time"])):
                        locations.append((offset, j))
                        rows.append({k: page["data"][v][j] for k, v in keys.items()
                                     if k != "pattern" and k != "mask" and v is not None and v in page["data"]}
                                    | {"_time": page["time"][j]})
                elif name == "stop":
                    stop = doc
        if start is None:
            raise SeriesFormatError(p, "<msgpack>", "no start document: not a Bluesky run file")
        if not rows:
            raise SeriesFormatError(p, STREAM, f"the run has no events in stream {STREAM!r}")
        if not stop:
            log.warning("%s: the run has no stop document (it did not close); reading its %d frames", p, len(rows))
        recorded = {name: _stack([r[name] for r in rows]) for name in RECORDED if all(name in r for r in rows)}
        if "sample_time" in recorded:
            times = np.asarray(recorded["sample_time"], dtype=np.float64)
        else:
            times = np.array([r["_time"] for r in rows], dtype=np.float64) - float(start["time"])
        self._locations = locations
        self._file = open(p, "rb")
        self._keys = keys
        self._setup(p, start, stop, N, times, recorded, str(p), "bluesky-msgpack")

    def _arrays(self, i: int) -> tuple[Any, Any]:
        from latenttune.io.msgpack_safe import unpacker

        offset, j = self._locations[i]
        self._file.seek(offset)
        name, doc = unpacker(self._file).unpack()
        data = doc["data"] if name == "event_page" else {k: [v] for k, v in doc["data"].items()}
        mask_key = self._keys.get("mask")
        return data[self._keys["pattern"]][j], (data[mask_key][j] if mask_key else None)

    def _close(self) -> None:
        self._file.close()


class TiledRunSeries(RunSeries):
    """A run in a tiled catalog, written by :class:`~latenttune.bluesky.storage.TiledStorage`."""

    def __init__(self, uri: str | os.PathLike[str], uid: str, *, api_key: str | None = None) -> None:
        from latenttune.io.tiled import _catalog_paths, _is_remote, open_tiled

        if not isinstance(uid, str) or not uid:
            raise ValueError(f"`uid` must be a non-empty run uid, got {uid!r}")
        remote = _is_remote(str(uri))
        where = Path(str(uri)) if remote else _catalog_paths(uri)[0]
        self._client = open_tiled(uri, api_key=api_key)
        try:
            if uid not in self._client:
                raise SeriesFormatError(where, uid, f"no run with uid {uid!r} in the catalog")
            run = self._client[uid]
            start = check_document("start", dict(run.metadata.get("start") or {}), where, 1)
            stop = dict(run.metadata.get("stop") or {})
            md = _keys_from_start(start, where, "start")
            keys = md["keys"]
            if STREAM not in run:
                raise SeriesFormatError(where, uid, f"the run has no events in stream {STREAM!r}")
            node = run[STREAM]
            if keys["pattern"] not in node:
                raise SeriesFormatError(where, uid, f"the {STREAM!r} stream has no data key {keys['pattern']!r}")
            pattern = node[keys["pattern"]]
            N = _grid(pattern.shape[1:], where, keys["pattern"])
            T = int(pattern.shape[0])
            if T == 0:
                raise SeriesFormatError(where, uid, f"the run has no events in stream {STREAM!r}")
            recorded = {}
            for name in RECORDED:
                key = keys.get(name)
                if key and key in node:
                    recorded[name] = np.asarray(node[key].read())[:T]
            if "sample_time" in recorded:
                times = np.asarray(recorded["sample_time"], dtype=np.float64)
            else:
                times = np.asarray(node["time"].read(), dtype=np.float64)[:T] - float(start["time"])
        except BaseException:
            self._close_client()
            raise
        self._pattern = pattern
        self._mask = node[keys["mask"]] if keys.get("mask") and keys["mask"] in node else None
        self._setup(where, start, stop, N, times, recorded, f"{uri} (uid {uid})", "bluesky-tiled")

    def _arrays(self, i: int) -> tuple[Any, Any]:
        return self._pattern[i], (None if self._mask is None else self._mask[i])

    def _close_client(self) -> None:
        context = getattr(self._client, "context", None)
        if context is not None and hasattr(context, "close"):
            context.close()

    def _close(self) -> None:
        self._close_client()


#: Files that can hold stored runs: a msgpack run file, an embedded tiled catalog.
_RUN_SUFFIXES = (".msgpack", ".db", ".sqlite")


def open_run(source: str | os.PathLike[str], uid: str | None = None, *, api_key: str | None = None) -> RunSeries:
    """Open a stored tracking run as a series.

    Parameters
    ----------
    source : str or Path
        A ``.msgpack`` run file; or, with ``uid``, a tiled catalog: a server URL
        (``http(s)://...``) or an embedded catalog (its directory, ``catalog.db`` or
        ``sqlite:///...`` URI).
    uid : str, optional
        The run's uid (required for tiled; for a msgpack file it must match the file's run).
    api_key : str, optional
        tiled server API key.

    Returns
    -------
    RunSeries
    """
    text = str(source)
    if uid is None:
        if not Path(text).is_file():
            if Path(text).is_dir() or text.startswith(("http://", "https://", "sqlite:")) or text.endswith(".db"):
                raise ValueError(f"`uid` is required to open a run in the tiled catalog {text!r} (--uid)")
            raise FileNotFoundError(f"`source` does not exist: {text}")
        return MsgpackRunSeries(text)
    if Path(text).is_file() and Path(text).suffix.lower() not in _RUN_SUFFIXES:
        kind = "a series file" if Path(text).suffix.lower() in HDF5_SUFFIXES + (".npy",) else "not a run store"
        raise ValueError(
            f"`uid` applies to a tiled catalog (directory, .db file or server URL) or a .msgpack run file, "
            f"but {text!r} is {kind}: replay a series file without --uid"
        )
    if Path(text).is_file() and Path(text).suffix == ".msgpack":
        series = MsgpackRunSeries(text)
        if series.uid != uid:
            series.close()
            raise ValueError(f"`uid` {uid!r} does not match the run in {text} (uid {series.uid!r})")
        return series
    return TiledRunSeries(text, uid, api_key=api_key)
