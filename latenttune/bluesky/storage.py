"""Where tracking runs go: a msgpack document stream (default) or a tiled catalog (``tiled`` extra).

:class:`MsgpackStorage` (embedded, no server) writes every run as one ``DIR/<uid>.msgpack`` file
of ``(name, document)`` pairs (suitcase-msgpack; numpy arrays through msgpack-numpy; events as
``event_page`` documents), flushed after every document so an interrupted run keeps every
frame it measured. :func:`read_documents` reads such a file back.

:class:`TiledStorage` writes runs into a tiled catalog with bluesky's ``TiledWriter``. Tiled's
event tables hold scalars only (a run whose events carry >= 2-D arrays is lost at stop, and
SQLite tables reject 1-D array columns too), so every array-valued data key (pattern, mask,
latent, slices) goes to an external HDF5 file per run and stream, one row per event, declared
with ``external="STREAM:"`` and ``StreamResource``/``StreamDatum`` documents
(``join_method: "stack"``); the catalog registers the files and serves them as arrays.
:meth:`TiledStorage.embedded` makes a catalog in a local directory (SQLite, no server)::

    DIR/catalog.db    the catalog
    DIR/data/         the HDF5 files of the runs (read by the catalog)
    DIR/writable/     tiled's own writable storage; DIR/tables.db its event tables

which a user can later serve over HTTP with
``tiled serve catalog DIR/catalog.db -r DIR/data -w DIR/writable -w sqlite:///DIR/tables.db``,
or point at a real tiled server with :meth:`TiledStorage.from_uri`.
"""

from __future__ import annotations

import copy
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import event_model
import numpy as np

from latenttune.io.msgpack_safe import UnsafeContentError, unpacker
from latenttune.io.tiled import CATALOG_FILE, DATA_DIR, _embedded_client, open_tiled
from latenttune.outputs import check_outputs
from latenttune.validation import check_int

log = logging.getLogger(__name__)

__all__ = [
    "CATALOG_FILE",
    "DATA_DIR",
    "MsgpackStorage",
    "TiledStorage",
    "open_tiled",
    "read_documents",
]

_MSGPACK_SUFFIX = ".msgpack"


# -- msgpack --------------------------------------------------------------------------------------


class MsgpackStorage:
    """RunEngine callback that writes each run to ``directory/<prefix>.msgpack``.

    Parameters
    ----------
    directory : str or Path
        Output folder (created if missing).
    file_prefix : str
        File name template filled from the start document (default ``"{start[uid]}"``).
    flush : bool
        Flush after every document (default True: a crash loses nothing already emitted).

    Attributes
    ----------
    paths : list of Path
        Files written so far, in run order.

    Examples
    --------
    >>> storage = MsgpackStorage("runs")      # doctest: +SKIP
    >>> RE.subscribe(storage)                 # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str], *, file_prefix: str = "{start[uid]}",
                 flush: bool = True) -> None:
        if not isinstance(file_prefix, str) or not file_prefix:
            raise ValueError(f"`file_prefix` must be a non-empty string, got {file_prefix!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.file_prefix = file_prefix
        self.flush = bool(flush)
        self.paths: list[Path] = []
        self._router = event_model.RunRouter([self._factory])

    def _factory(self, name: str, start: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        import suitcase.msgpack

        path = self.directory / f"{self.file_prefix.format(start=start)}{_MSGPACK_SUFFIX}"
        check_outputs({"the run file": path})  # never over an existing file (another run, a series, a model)
        serializer = suitcase.msgpack.Serializer(str(self.directory), file_prefix=self.file_prefix, flush=self.flush)
        self.paths.append(path)
        log.info("writing run %s to %s", start.get("uid"), path)
        return [serializer], []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self._router(name, doc)

    def __repr__(self) -> str:
        return f"MsgpackStorage({str(self.directory)!r})"


def read_documents(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield the ``(name, document)`` pairs of a msgpack run file, in order.

    A file cut short (a run that crashed) yields every complete document. Arrays are decoded
    without pickle (:mod:`latenttune.io.msgpack_safe`): a document that would need it raises
    :class:`~latenttune.io.msgpack_safe.UnsafeContentError` and nothing in it is run.

    Parameters
    ----------
    path : str or Path
        A file written by :class:`MsgpackStorage` (suitcase-msgpack).
    """
    p = Path(path)
    with open(p, "rb") as f:
        try:
            for item in unpacker(f):
                if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
                    raise ValueError(f"{p}: not a Bluesky document stream (expected (name, document) pairs)")
                yield item[0], item[1]
        except UnsafeContentError as exc:
            raise UnsafeContentError(f"{p}: {exc}") from None


# -- tiled ----------------------------------------------------------------------------------------


class _ExternalArrays:
    """Per-run document transformer: array data keys -> one HDF5 file per stream + StreamDatum.

    Emits, downstream: the start document; each descriptor with its array keys marked
    ``external="STREAM:"`` followed by one ``StreamResource`` per array key; per event the
    ``StreamDatum`` documents of its rows and the event without the array keys; the stop
    document after the HDF5 files are closed.
    """

    def __init__(self, downstream: Any, data_directory: Path) -> None:
        self.downstream = downstream
        self.data_directory = data_directory
        self.run_uid = ""
        self._files: dict[str, Any] = {}  # descriptor uid -> h5py.File
        self._arrays: dict[str, dict[str, tuple[str, Any]]] = {}  # descriptor uid -> {key: (sres uid, dataset)}
        self._rows: dict[str, int] = {}

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.run_uid = doc["uid"]
            self.downstream(name, doc)
        elif name == "descriptor":
            self._descriptor(doc)
        elif name == "event":
            self._event(doc)
        elif name == "event_page":
            for event in event_model.unpack_event_page(doc):
                self._event(event)
        elif name == "stop":
            self.close()
            self.downstream(name, doc)
        else:
            self.downstream(name, doc)

    def _descriptor(self, doc: dict[str, Any]) -> None:
        import h5py

        doc = copy.deepcopy(doc)
        keys = [k for k, v in doc["data_keys"].items()
                if v.get("dtype") == "array" and "external" not in v and len(v.get("shape") or []) >= 1]
        resources = []
        if keys:
            stream = doc.get("name", "primary")
            path = (self.data_directory / f"{self.run_uid}_{stream}_{doc['uid'][:8]}.h5").absolute()
            check_outputs({"the run's array file": path})  # never over an existing file
            f = h5py.File(path, "x", libver="latest")
            arrays = {}
            for key in keys:
                spec = doc["data_keys"][key]
                shape = tuple(int(s) for s in spec["shape"])
                dtype = np.dtype(spec.get("dtype_numpy") or "<f8")
                dataset = f"/entry/{key}"
                ds = f.create_dataset(dataset, shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape),
                                      dtype=dtype)
                spec["external"] = "STREAM:"
                sres_uid = str(uuid.uuid4())
                arrays[key] = (sres_uid, ds)
                resources.append({
                    "uid": sres_uid,
                    "run_start": self.run_uid,
                    "data_key": key,
                    "mimetype": "application/x-hdf5",
                    "uri": f"file://localhost{path.as_posix()}",
                    "parameters": {"dataset": dataset, "chunk_shape": [1, *shape], "join_method": "stack",
                                   "swmr": True},
                })
            f.swmr_mode = True  # readers may follow the file while the run goes on
            self._files[doc["uid"]] = f
            self._arrays[doc["uid"]] = arrays
            self._rows[doc["uid"]] = 0
            log.info("run %s: %s of stream %r go to %s", self.run_uid, keys, stream, path)
        self.downstream("descriptor", doc)
        for resource in resources:
            self.downstream("stream_resource", resource)

    def _event(self, doc: dict[str, Any]) -> None:
        arrays = self._arrays.get(doc["descriptor"])
        if not arrays:
            self.downstream("event", doc)
            return
        row = self._rows[doc["descriptor"]]
        for key, (sres_uid, ds) in arrays.items():
            value = np.asarray(doc["data"][key], dtype=ds.dtype)
            if value.shape != ds.shape[1:]:
                raise ValueError(f"event {doc['seq_num']}: `{key}` must have shape {ds.shape[1:]}, got {value.shape}")
            ds.resize(row + 1, axis=0)
            ds[row] = value
            ds.flush()
        self._rows[doc["descriptor"]] = row + 1
        for key, (sres_uid, _) in arrays.items():
            self.downstream("stream_datum", {
                "uid": f"{sres_uid}/{row}",
                "stream_resource": sres_uid,
                "descriptor": doc["descriptor"],
                "indices": {"start": row, "stop": row + 1},
                "seq_nums": {"start": doc["seq_num"], "stop": doc["seq_num"] + 1},
            })
        event = dict(doc)
        event["data"] = {k: v for k, v in doc["data"].items() if k not in arrays}
        event["timestamps"] = {k: v for k, v in doc["timestamps"].items() if k not in arrays}
        if "filled" in doc:
            event["filled"] = {k: v for k, v in doc["filled"].items() if k not in arrays}
        self.downstream("event", event)

    def close(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            f.close()


def _tiled_writer_class() -> type:
    """bluesky's ``TiledWriter``: from ``bluesky_tiled_plugins`` (where bluesky >= 1.15 moved it), else bluesky's own."""
    try:
        from bluesky_tiled_plugins import TiledWriter
    except ImportError:  # bluesky < 1.15 without the plugins package
        from bluesky.callbacks.tiled_writer import TiledWriter
    return TiledWriter


class TiledStorage:
    """RunEngine callback that writes each run into a tiled catalog, arrays as external HDF5.

    Parameters
    ----------
    client : tiled client
        A writable tiled container (:func:`open_tiled`, :meth:`embedded`, :meth:`from_uri`).
    data_directory : str or Path
        Where the runs' HDF5 files go; the catalog must be allowed to read it (embedded: the
        ``data`` folder; a server: one of its ``-r`` locations, reachable at the same path).
    batch_size : int
        Events (and stream rows) the ``TiledWriter`` collects before each write (default 10);
        the catalog lags the run by fewer frames than this (the HDF5 files, written in SWMR
        mode, never lag). 1 writes every frame at once, which costs several times more per frame
        than large batches (``docs/bluesky.md``).

    Attributes
    ----------
    uids : list of str
        Runs written so far.
    """

    def __init__(self, client: Any, data_directory: str | os.PathLike[str], *, batch_size: int = 10) -> None:
        TiledWriter = _tiled_writer_class()
        batch_size = check_int("batch_size", batch_size, low=1)
        self.client = client
        self.data_directory = Path(data_directory).absolute()
        self.data_directory.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.uids: list[str] = []
        self._writer = TiledWriter(client, batch_size=batch_size)
        self._router = event_model.RunRouter([self._factory])

    @classmethod
    def embedded(cls, directory: str | os.PathLike[str], *, batch_size: int = 10) -> TiledStorage:
        """Open (or create) an embedded SQLite catalog in ``directory``; no server needed."""
        directory = Path(directory)
        client = _embedded_client(directory, directory / CATALOG_FILE, create=True)
        return cls(client, directory / DATA_DIR, batch_size=batch_size)

    @classmethod
    def from_uri(cls, uri: str, data_directory: str | os.PathLike[str], *, api_key: str | None = None,
                 batch_size: int = 10) -> TiledStorage:
        """Write to a tiled server (``http(s)://...``) or an existing embedded catalog."""
        return cls(open_tiled(uri, api_key=api_key), data_directory, batch_size=batch_size)

    def _factory(self, name: str, start: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        self.uids.append(start["uid"])
        return [_ExternalArrays(self._writer, self.data_directory)], []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self._router(name, doc)

    def close(self) -> None:
        """Close the client's connection (embedded catalogs: stop the in-process app)."""
        context = getattr(self.client, "context", None)
        if context is not None and hasattr(context, "close"):
            context.close()

    def __repr__(self) -> str:
        return f"TiledStorage({self.client!r}, data_directory={str(self.data_directory)!r})"
