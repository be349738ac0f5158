"""Writing the results file of a tracking or replay run, frame by frame: :class:`ResultWriter`.

Crash safety: rows go to ``path + ".partial"``; after ALL datasets of a frame are written, the root
attribute ``frames_complete`` is updated and the file is flushed. Readers and :class:`ResultWriter`
with ``resume=True`` trust only ``frames_complete``: a crash between dataset writes leaves at most
some datasets one row longer, which is ignored on reading and truncated on resume.
:meth:`ResultWriter.close` renames the file atomically to ``path`` (the
:class:`latenttune.io.partial.PartialFile` lifecycle). The layout is described in
:mod:`latenttune.io.results`; the per-frame fields a tracking run writes are named in
:mod:`latenttune.io.rows`, and every dataset the schema knows gets ``units`` and ``description``
attributes.
"""

from __future__ import annotations

import logging
import operator
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from latenttune.io._attrs import decode_attr, encode_attr, read_attrs, write_attrs
from latenttune.io.errors import ResultsFileError
from latenttune.io.partial import PartialFile
from latenttune.io.rows import CORE_FIELDS, FIELDS, READABLE_FORMATS, RESULTS_FORMAT, FrameRow

__all__ = ["ResultWriter", "RESERVED_ATTRS"]

logger = logging.getLogger(__name__)

RESERVED_ATTRS = ("format", "n", "k", "frames_complete", "complete", "resume_count")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _describe(dataset: h5py.Dataset) -> None:
    """Give a dataset the schema's ``units`` and ``description`` attributes (when the schema knows it)."""
    known = FIELDS.get(dataset.name.rsplit("/", 1)[-1])
    if known is not None:
        dataset.attrs["units"] = known.units
        dataset.attrs["description"] = known.description


def write_described_groups(f: h5py.File, groups: Mapping[str, Mapping[str, tuple[Any, str, str]]]) -> None:
    """Write groups of datasets into an open file, replacing them: group -> name -> (value, units, description)."""
    for group_name, items in groups.items():
        if group_name in f:
            del f[group_name]
        group = f.create_group(group_name)
        for name, (value, units, description) in items.items():
            ds = group.create_dataset(name, data=value)
            ds.attrs["units"] = units
            ds.attrs["description"] = description
    f.flush()


def _same(a: Any, b: Any) -> bool:
    a, b = decode_attr(encode_attr(a)), decode_attr(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


class ResultWriter(PartialFile):
    """Write a run's results frame by frame, crash-safe and resumable (a :class:`latenttune.io.partial.PartialFile`).

    Parameters
    ----------
    path : str or os.PathLike
        Final results file; rows go to ``path + ".partial"`` until :meth:`close`.
    n : int
        Object grid size (density rows are (n, n, n)).
    k : int
        Latent dimension.
    attrs : dict
        Root attributes: model checksum, controller parameters, package
        versions, ... (dicts/lists JSON-encoded). Must not use the reserved
        keys ``format``, ``n``, ``k``, ``frames_complete``, ``complete``,
        ``resume_count``.
    resume : bool
        Reopen an existing ``path.partial`` and continue after its last complete
        frame. ``n``, ``k`` and the ``match_keys`` attributes must agree with
        the file; other attributes keep the file's values.
    overwrite : bool
        Without ``resume``: discard an existing ``path`` / ``path.partial``.
    match_keys : sequence of str
        Attributes that must be equal for a resume (default: ``model_checksum``).
        A key present on one side only is a mismatch.

    Raises
    ------
    FileExistsError
        A fresh run would clobber ``path`` or ``path.partial`` (pass
        ``resume=True`` or ``overwrite=True``).
    FileNotFoundError
        ``resume=True`` and there is no ``path.partial``.
    ResultsFileError
        ``resume=True`` on a complete run, an inconsistent file, or attributes
        that differ in a ``match_keys`` key.

    Examples
    --------
    >>> with ResultWriter("run.h5", n=32, k=8, attrs={"model_checksum": "ab12"}) as w:
    ...     w.append(z, cost, d, time=t, steps=40, timing_s=0.02)  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n: int,
        k: int,
        attrs: Mapping[str, Any],
        resume: bool = False,
        overwrite: bool = False,
        match_keys: Sequence[str] = ("model_checksum",),
    ) -> None:
        for name, v in (("n", n), ("k", k)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        if not isinstance(attrs, Mapping):
            raise TypeError(f"`attrs` must be a dict, got {type(attrs).__name__}")
        clash = sorted(set(attrs) & set(RESERVED_ATTRS))
        if clash:
            raise ValueError(f"`attrs` must not use the reserved keys {clash}")
        super().__init__(path, keep_partial=True)
        self.n, self.k = int(n), int(k)
        if resume:
            self._f = self._open_resume(attrs, tuple(match_keys))
        else:
            self._f = self._open_fresh(attrs, overwrite)
        self._count = int(self._f.attrs["frames_complete"])
        self._extras = [name for name in self._f.keys() if name not in CORE_FIELDS]

    # -- opening ------------------------------------------------------------------
    def _open_fresh(self, attrs: Mapping[str, Any], overwrite: bool) -> h5py.File:
        if not overwrite:
            if self.partial_path.exists():
                raise FileExistsError(
                    f"partial results file exists: {self.partial_path} (pass resume=True to "
                    "continue it, or overwrite=True to discard it)"
                )
            if self.path.exists():
                raise FileExistsError(
                    f"results file exists: {self.path} (pass overwrite=True to replace it)"
                )
        if overwrite and self.path.exists():
            self.path.unlink()
        self.partial_path.parent.mkdir(parents=True, exist_ok=True)  # like `mkdir -p`: a new run folder
        f = h5py.File(self.partial_path, "w")
        try:
            write_attrs(f, attrs)
            f.attrs["format"] = RESULTS_FORMAT
            f.attrs["n"] = self.n
            f.attrs["k"] = self.k
            f.attrs["complete"] = False
            f.attrs["resume_count"] = 0
            n, k = self.n, self.k
            f.create_dataset("latent", (0, k), np.float32, maxshape=(None, k), chunks=(256, k))
            f.create_dataset("cost", (0,), np.float32, maxshape=(None,), chunks=(1024,))
            f.create_dataset(
                "density", (0, n, n, n), np.complex64, maxshape=(None, n, n, n), chunks=(1, n, n, n)
            )
            f.create_dataset("time", (0,), np.float64, maxshape=(None,), chunks=(1024,))
            f.create_dataset("steps", (0,), np.int32, maxshape=(None,), chunks=(1024,))
            for name in CORE_FIELDS:
                _describe(f[name])
            f.attrs["frames_complete"] = 0
            f.flush()
        except BaseException:
            f.close()
            raise
        return f

    def _open_resume(self, attrs: Mapping[str, Any], match_keys: tuple[str, ...]) -> h5py.File:
        p = self.partial_path
        if not p.exists():
            if self.path.exists():
                raise ResultsFileError(
                    self.path, "the run is already complete: there is no .partial file to resume"
                )
            raise FileNotFoundError(f"cannot resume: no partial results file {p}")
        try:
            f = h5py.File(p, "r+")
        except OSError as exc:
            raise ResultsFileError(p, f"cannot be opened for resuming ({exc})") from exc
        try:
            self._check_resumable(f, attrs, match_keys)
        except BaseException:
            f.close()
            raise
        return f

    def _check_resumable(
        self, f: h5py.File, attrs: Mapping[str, Any], match_keys: tuple[str, ...]
    ) -> None:
        p = self.partial_path
        found = decode_attr(f.attrs.get("format"))
        if found in READABLE_FORMATS and found != RESULTS_FORMAT:
            raise ResultsFileError(p, f"cannot resume: the file has the older layout {found!r} (this latenttune "
                                   f"writes {RESULTS_FORMAT!r}); start a new --out")
        if found != RESULTS_FORMAT or "frames_complete" not in f.attrs:
            raise ResultsFileError(p, f"not a latenttune results file (format != {RESULTS_FORMAT!r})")
        for name, v in (("n", self.n), ("k", self.k)):
            if int(f.attrs[name]) != v:
                raise ResultsFileError(
                    p, f"cannot resume: `{name}` = {v} differs from the file's {int(f.attrs[name])}"
                )
        for key in match_keys:
            here, there = key in attrs, key in f.attrs
            if here != there or (here and not _same(attrs[key], f.attrs[key])):
                raise ResultsFileError(
                    p,
                    f"cannot resume: attribute {key!r} differs (file: "
                    f"{decode_attr(f.attrs[key]) if there else '<missing>'!r}, given: "
                    f"{attrs[key] if here else '<missing>'!r})",
                )
        changed = [
            key for key in attrs if key in f.attrs and not _same(attrs[key], f.attrs[key])
        ]
        if changed:
            logger.info("resume keeps the file's values of attributes %s", changed)
        for key in attrs:
            if key not in f.attrs:
                f.attrs[key] = encode_attr(attrs[key])
        fc = int(f.attrs["frames_complete"])
        missing = [name for name in CORE_FIELDS if not isinstance(f.get(name), h5py.Dataset)]
        if missing:
            raise ResultsFileError(p, f"corrupt results file: datasets {missing} are missing")
        for name, ds in f.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.shape[0] < fc:
                raise ResultsFileError(
                    p,
                    f"corrupt results file: dataset {name!r} has {ds.shape[0]} rows but "
                    f"frames_complete = {fc}",
                )
            if ds.shape[0] > fc:
                logger.warning(
                    "%s: truncating dataset %r from %d to %d rows (incomplete last frame)",
                    p, name, ds.shape[0], fc,
                )
                ds.resize(fc, axis=0)
        f.attrs["resume_count"] = int(f.attrs.get("resume_count", 0)) + 1
        f.flush()
        logger.info("resuming %s after %d complete frame(s)", p, fc)

    # -- writing ------------------------------------------------------------------
    @property
    def num_frames_written(self) -> int:
        """Number of complete frames in the file (rows that readers trust)."""
        return self._count

    @property
    def extra_fields(self) -> list[str]:
        """Names of the extra per-frame datasets (fixed by the first frame)."""
        return list(self._extras)

    @property
    def attrs(self) -> dict[str, Any]:
        """The file's root attributes, decoded."""
        return read_attrs(self._f)

    def _coerce(
        self, latent: Any, cost: Any, density: Any, time: Any, steps: Any
    ) -> dict[str, np.ndarray]:
        n, k = self.n, self.k
        z = np.asarray(latent)
        if z.shape != (k,) or z.dtype.kind not in "iuf":
            raise ValueError(f"`latent` must be a real array of shape ({k},), got {z.dtype} {z.shape}")
        d = np.asarray(density)
        if d.shape != (n, n, n) or d.dtype.kind not in "iufc":
            raise ValueError(
                f"`density` must be a numeric array of shape {(n, n, n)}, got {d.dtype} {d.shape}"
            )
        out = {"latent": z.astype(np.float32), "density": d.astype(np.complex64)}
        for name, v in (("cost", cost), ("time", time)):
            a = np.asarray(v)
            if a.shape != () or a.dtype.kind not in "iuf":
                raise ValueError(f"`{name}` must be a real scalar, got {v!r}")
            out[name] = a
        try:
            out["steps"] = np.int32(operator.index(steps))
        except TypeError:
            raise ValueError(f"`steps` must be an integer, got {steps!r}") from None
        return out

    def _coerce_extra(self, name: str, value: Any) -> np.ndarray:
        if name in CORE_FIELDS or not _NAME_RE.match(name):
            raise ValueError(f"extra field name {name!r} must be an identifier other than {CORE_FIELDS}")
        a = np.asarray(value)
        if a.dtype.kind in "US":
            if a.shape != ():
                raise ValueError(f"extra field `{name}`: strings must be scalars, got shape {a.shape}")
            return np.array(str(a), dtype=object)
        if a.dtype.kind not in "biufc":
            raise TypeError(f"extra field `{name}` must be numeric, boolean or str, got {a.dtype}")
        return a

    def append(
        self,
        latent: Any,
        cost: float,
        density: Any,
        time: float,
        steps: int,
        **extra: Any,
    ) -> int:
        """Write the results of one frame and flush them.

        Parameters
        ----------
        latent : array_like
            (k,) latent vector.
        cost : float
            Cost of the frame.
        density : array_like
            (n, n, n) decoded density.
        time : float
            Frame time stamp in seconds.
        steps : int
            Controller steps spent on the frame.
        **extra
            Further per-frame fields (scalars, arrays, or str); the set of names
            and each field's shape are fixed by the first frame.

        Returns
        -------
        int
            Index of the row just written.
        """
        self._check_open("results writer")
        rows = self._coerce(latent, cost, density, time, steps)
        extras = {name: self._coerce_extra(name, v) for name, v in extra.items()}
        f, t = self._f, self._count
        if t == 0:
            for name in self._extras:
                if name not in extras:
                    del f[name]  # left over from a crashed first frame
            for name, a in extras.items():
                ds = f.get(name)
                if ds is not None and ds.shape[1:] != a.shape:
                    del f[name]
                    ds = None
                if ds is None:
                    dtype = h5py.string_dtype() if a.dtype == object else a.dtype
                    chunks = (1,) + a.shape if a.size > 64 else (256,) + a.shape
                    _describe(f.create_dataset(
                        name, (0,) + a.shape, dtype, maxshape=(None,) + a.shape, chunks=chunks
                    ))
            self._extras = list(extras)
        else:
            if set(extras) != set(self._extras):
                raise ValueError(
                    f"extra fields must be the same for every frame: expected "
                    f"{sorted(self._extras)}, got {sorted(extras)}"
                )
            for name, a in extras.items():
                if f[name].shape[1:] != a.shape:
                    raise ValueError(
                        f"extra field `{name}` must have shape {f[name].shape[1:]} "
                        f"(fixed by the first frame), got {a.shape}"
                    )
        rows.update(extras)
        for name, value in rows.items():
            ds = f[name]
            ds.resize(t + 1, axis=0)
            ds[t] = value
        # Only now is the frame complete: readers and resume trust this counter.
        f.attrs["frames_complete"] = t + 1
        f.flush()
        self._count = t + 1
        return t

    def write_groups(self, groups: Mapping[str, Mapping[str, tuple[Any, str, str]]]) -> None:
        """Write groups of described datasets (the run's geometry, prepare's record), replacing them."""
        self._check_open("results writer")
        write_described_groups(self._f, groups)

    def append_row(self, row: FrameRow) -> int:
        """Write one tracked frame's row (:class:`latenttune.io.rows.FrameRow`) and flush it."""
        fields = row.datasets()
        core = {name: fields.pop(name) for name in CORE_FIELDS}
        return self.append(**core, **fields)

    # -- closing ------------------------------------------------------------------
    # -- the partial-file lifecycle (close, abort, discard and the context manager: PartialFile) ------
    def _finish(self) -> None:
        """Mark the run complete; the rename to ``path`` follows (:meth:`PartialFile.close`)."""
        self._f.attrs["complete"] = True
        self._f.flush()
        self._f.close()

    def _release(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def _on_closed(self) -> None:
        logger.info("wrote %d frame(s) of results to %s", self._count, self.path)

    def _on_aborted(self) -> None:
        logger.warning("left %d complete frame(s) in %s (resume with resume=True)", self._count, self.partial_path)
