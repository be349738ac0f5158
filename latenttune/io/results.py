"""Results file of a tracking or replay run: :class:`ResultWriter` writes it, :func:`read_results` reads it.

Layout (HDF5, one row per processed frame, every dataset resizable along axis 0):

=============  ==================  =========  ====================================
dataset        shape               dtype      meaning
=============  ==================  =========  ====================================
``latent``     (T, k)              float32    latent vector after the frame
``cost``       (T,)                float32    cost of the frame
``density``    (T, n, n, n)        complex64  decoded density
``time``       (T,)                float64    frame time stamp, seconds
``steps``      (T,)                int32      controller steps spent on the frame
extra fields   (T, ...)            as given   the tracker's and the physics stage's
=============  ==================  =========  ====================================

The per-frame fields a tracking run writes are named once, with their units and meaning, in
:mod:`latenttune.io.rows`; every dataset the schema knows carries ``units`` and ``description``
attributes. Root attributes: the caller's ``attrs`` (model checksum, strategy, settings, package
versions; dicts are JSON-encoded), plus ``format``, ``n``, ``k``, ``frames_complete``, ``complete``
and ``resume_count``.

Reading gives a :class:`Results` object: attributes per field (the defaults for fields an older
file lacks are filled here, once), densities read on first use, the reconstruction the file
reports, the stagnation flags and a summary.

Crash safety: rows go to ``path + ".partial"``; after ALL datasets of a frame
are written, the root attribute ``frames_complete`` is updated and the file is
flushed. Readers and :class:`ResultWriter` with ``resume=True`` trust only
``frames_complete``: a crash between dataset writes leaves at most some
datasets one row longer, which is ignored on reading and truncated on resume.
:meth:`ResultWriter.close` renames the file atomically to ``path``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import operator
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latenttune.io._attrs import decode_attr, encode_attr, read_attrs, write_attrs
from latenttune.io.errors import ResultsFileError
from latenttune.io.rows import ALIASES, FIELDS, FrameRow
from latenttune.quality import DEFAULT_RESTART_LLK, is_stagnated, stagnation_sentence

__all__ = ["ResultWriter", "Results", "RunSummary", "read_results", "Reconstruction", "RESULTS_FORMAT",
           "CORE_FIELDS"]

logger = logging.getLogger(__name__)

RESULTS_FORMAT = "latenttune-results/2"
#: Formats this version reads (older ones through :data:`latenttune.io.rows.ALIASES`).
READABLE_FORMATS = ("latenttune-results/1", RESULTS_FORMAT)
CORE_FIELDS = ("latent", "cost", "density", "time", "steps")
RESERVED_ATTRS = ("format", "n", "k", "frames_complete", "complete", "resume_count")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _partial(path: Path) -> Path:
    return Path(str(path) + ".partial")


def _describe(dataset: h5py.Dataset) -> None:
    """Give a dataset the schema's ``units`` and ``description`` attributes (when the schema knows it)."""
    known = FIELDS.get(dataset.name.rsplit("/", 1)[-1])
    if known is not None:
        dataset.attrs["units"] = known.units
        dataset.attrs["description"] = known.description


def _same(a: Any, b: Any) -> bool:
    a, b = decode_attr(encode_attr(a)), decode_attr(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


class ResultWriter:
    """Write a run's results frame by frame, crash-safe and resumable.

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
        self.path = Path(path)
        self.partial_path = _partial(self.path)
        self.n, self.k = int(n), int(k)
        self._closed = False
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
        if self._closed:
            raise ValueError(f"results writer for {self.path} is closed")
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

    def append_row(self, row: FrameRow) -> int:
        """Write one tracked frame's row (:class:`latenttune.io.rows.FrameRow`) and flush it."""
        fields = row.datasets()
        core = {name: fields.pop(name) for name in CORE_FIELDS}
        return self.append(**core, **fields)

    # -- closing ------------------------------------------------------------------
    def close(self) -> Path:
        """Mark the run complete and rename ``path.partial`` to ``path`` atomically.

        Returns
        -------
        pathlib.Path
            The final results file.
        """
        if self._closed:
            return self.path
        self._closed = True
        self._f.attrs["complete"] = True
        self._f.flush()
        self._f.close()
        os.replace(self.partial_path, self.path)
        logger.info("wrote %d frame(s) of results to %s", self._count, self.path)
        return self.path

    def abort(self) -> None:
        """Close without renaming: the ``.partial`` file stays, ready to resume."""
        if self._closed:
            return
        self._closed = True
        self._f.close()
        logger.warning(
            "left %d complete frame(s) in %s (resume with resume=True)",
            self._count, self.partial_path,
        )

    def discard(self) -> None:
        """Close and delete ``path.partial``: for a run that produced nothing worth keeping."""
        if not self._closed:
            self._closed = True
            self._f.close()
        self.partial_path.unlink(missing_ok=True)
        logger.info("discarded %s", self.partial_path)

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _open_for_reading(path: str | os.PathLike[str]) -> tuple[Path, h5py.File]:
    """The results file at ``path`` (or its ``.partial`` when only that exists), open for reading."""
    p = Path(path)
    if not p.exists():
        alt = _partial(p)
        if not alt.exists():
            raise FileNotFoundError(f"no results file {p} (nor {alt.name})")
        p = alt
    try:
        return p, h5py.File(p, "r")
    except OSError as exc:
        if "lock" not in str(exc).lower():
            raise ResultsFileError(p, f"cannot be opened as HDF5 ({exc})") from exc
    logger.warning("%s is locked by a writer; reading without file locking", p)
    return p, h5py.File(p, "r", locking=False)


#: Datasets read on first use (the densities: the large ones).
_LAZY = ("density", "output_density")


@dataclass(frozen=True)
class Reconstruction:
    """The densities a results file reports, and which ones they are.

    Attributes
    ----------
    density : ndarray, shape (T, n, n, n)
        Per row: the hybrid tracker's output (``output_density``) when the file has it, else the
        decoded density of the tracked latent (``density``).
    label : str
        ``"hybrid"`` or ``"decoded"``: which of the two ``density`` holds.
    E_r : ndarray, shape (T,)
        Real-space error of ``density`` per row (NaN without ground truth).
    refined : ndarray of bool, shape (T,)
        Rows whose density is a refined one (the physics stage's result was kept); all False for
        ``"decoded"``.
    """

    density: np.ndarray
    label: str
    E_r: np.ndarray
    refined: np.ndarray

    def row_label(self, row: int) -> str:
        """What row ``row`` shows: ``"refined"``, ``"decoded"`` or ``"decoded (refinement not kept)"``."""
        if self.label == "decoded":
            return "decoded"
        return "refined" if self.refined[row] else "decoded (refinement not kept)"


@dataclass(frozen=True)
class RunSummary:
    """A run in a few numbers (what a command prints at the end; NaN where the file cannot say).

    Attributes
    ----------
    frames : int
        Rows in the file.
    cost_mean, cost_final : float
        Tracking cost over the rows and of the last row.
    E_r_mean, E_r_max : float
        Real-space error of the decoded latents (NaN without truth).
    output_E_r_mean, output_E_r_max : float
        Real-space error of the hybrid's output (NaN without truth or physics stage).
    accepted : int
        Rows whose refined density was kept (0 without a physics stage).
    llk_median, llk_max : float
        Poisson LLK of the outputs.
    seconds_mean : float
        The tracker's time per frame (truth metrics and writing not counted).
    """

    frames: int
    cost_mean: float
    cost_final: float
    E_r_mean: float
    E_r_max: float
    output_E_r_mean: float
    output_E_r_max: float
    accepted: int
    llk_median: float
    llk_max: float
    seconds_mean: float


def _finite_stat(values: np.ndarray, how: Any) -> float:
    values = np.asarray(values, dtype=float)
    return float(how(values)) if np.isfinite(values).any() else math.nan


class Results:
    """A results file read back, up to its last complete frame (see :func:`read_results`).

    Every per-frame field of :mod:`latenttune.io.rows` is an attribute (an array with one entry per
    row); a field an older file lacks reads as its default here (NaN metrics, index ``0..T-1``, ...),
    so no reader needs to know which version wrote the file. The densities are read on first use.

    Attributes
    ----------
    path : Path
        The file actually read (the final file, or its ``.partial``).
    attrs : dict
        The root attributes, decoded.
    num_frames : int
        Complete rows.
    complete : bool
        Whether the run finished (a ``.partial`` file, or a run stopped early, is not complete).
    has_physics : bool
        Whether the run had a physics stage (hybrid tracking): the ``physics_*`` fields,
        ``output_density`` and ``llk`` are then meaningful.
    extra : dict
        Datasets the schema does not know (from :meth:`ResultWriter.append` with other fields).
    """

    def __init__(self, path: Path, attrs: dict[str, Any], fields: dict[str, np.ndarray], stored: dict[str, str]) -> None:
        self.path = path
        self.attrs = attrs
        self.num_frames = int(fields["cost"].shape[0])
        self.complete = bool(attrs.get("complete", False))
        self._stored = stored  # today's field name -> the dataset's name in this file
        self.has_physics = "output_density" in stored
        T, k = self.num_frames, int(fields["latent"].shape[1]) if fields["latent"].ndim == 2 else 0
        nan = np.full(T, np.nan)

        def get(name: str, default: Any) -> np.ndarray:
            return fields[name] if name in fields else default

        self.latent = fields["latent"]
        self.cost = fields["cost"]
        self.time = fields["time"]
        self.steps = fields["steps"]
        self.index = np.asarray(get("index", np.arange(T)), dtype=int)
        self.step_costs = get("step_costs", np.empty((T, 0), dtype=np.float32))
        self.encoded = get("encoded", np.full((T, k), np.nan, dtype=np.float32))
        self.seconds = np.asarray(get("seconds", nan), dtype=float)
        self.status = get("status", np.array(["ok"] * T, dtype=object))
        self.strategy_state = get("strategy_state", np.array(["{}"] * T, dtype=object))
        self.series_sha256 = get("series_sha256", np.array([""] * T, dtype=object))
        self.E_r = np.asarray(get("E_r", nan), dtype=float)
        self.E_q = np.asarray(get("E_q", nan), dtype=float)
        self.phase_rms = np.asarray(get("phase_rms", nan), dtype=float)
        self.physics_accepted = np.asarray(get("physics_accepted", np.full(T, self.has_physics)), dtype=bool)
        self.physics_warm = np.asarray(get("physics_warm", np.zeros(T)), dtype=bool)
        self.physics_start = get("physics_start", np.array([""] * T, dtype=object))
        self.physics_restarts = np.asarray(get("physics_restarts", np.zeros(T)), dtype=int)
        self.physics_seconds = np.asarray(get("physics_seconds", nan), dtype=float)
        self.llk = np.asarray(get("llk", nan), dtype=float)
        self.misfit_refined = np.asarray(get("misfit_refined", nan), dtype=float)
        self.free_misfit_decoded = np.asarray(get("free_misfit_decoded", nan), dtype=float)
        self.free_misfit_refined = np.asarray(get("free_misfit_refined", nan), dtype=float)
        self.E_r_output = np.asarray(get("E_r_output", self.E_r if not self.has_physics else nan), dtype=float)
        self.E_q_output = np.asarray(get("E_q_output", self.E_q if not self.has_physics else nan), dtype=float)
        self.extra = {name: value for name, value in fields.items() if name not in FIELDS}

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
                    path: str | os.PathLike[str] = "<memory>") -> Results:
        """Results held in memory (a figure of arrays computed elsewhere; tests), as if read from a file.

        Parameters
        ----------
        fields : mapping of str to array_like
            Per-frame arrays by field name (older names are read through the aliases); at least
            ``cost`` and ``density``. ``latent``, ``time`` and ``steps`` default to zeros.
        attrs : mapping, optional
            Root attributes (e.g. ``{"settings": {...}}``).
        """
        data = {ALIASES.get(name, name): np.asarray(value) for name, value in fields.items()}
        for name in ("cost", "density"):
            if name not in data:
                raise ValueError(f"`fields` must hold {name!r}")
        T = len(data["cost"])
        data.setdefault("latent", np.zeros((T, 0), np.float32))
        data.setdefault("time", np.zeros(T))
        data.setdefault("steps", np.zeros(T, np.int32))
        lazy = {name: data.pop(name) for name in _LAZY if name in data}
        results = cls(Path(path), {"complete": True, **dict(attrs or {})}, data, {name: name for name in [*data, *lazy]})
        results.__dict__.update(lazy)  # the cached densities
        return results

    def __getattr__(self, name: str) -> Any:
        """Datasets the schema does not know, by name (e.g. an extra field a caller wrote)."""
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute or dataset {name!r}")

    def has_field(self, name: str) -> bool:
        """Whether the file stores field ``name`` (under today's name or an older one)."""
        return name in self._stored

    # -- densities, read on first use ------------------------------------------------------------

    def _read(self, name: str, rows: slice | int = slice(None)) -> np.ndarray:
        _, f = _open_for_reading(self.path)
        with f:
            dataset = f[self._stored[name]]
            if isinstance(rows, int):
                return dataset[rows if rows >= 0 else self.num_frames + rows]
            return dataset[: self.num_frames][rows]

    @functools.cached_property
    def density(self) -> np.ndarray:
        """Decoded density of every row's latent, shape (T, n, n, n), complex64."""
        return self._read("density")

    @functools.cached_property
    def output_density(self) -> np.ndarray:
        """Every row's reconstruction: the physics stage's output (hybrid), else the decoded density."""
        return self._read("output_density") if self.has_physics else self.density

    def density_at(self, row: int, *, output: bool = True) -> np.ndarray:
        """One row's reconstruction (``output=True``) or decoded density, read alone."""
        if "output_density" in self.__dict__ or "density" in self.__dict__:
            return (self.output_density if output else self.density)[row]
        return self._read("output_density" if output and self.has_physics else "density", int(row))

    # -- what the file reports -----------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting the run was tracked with (empty for a file that does not record them)."""
        value = self.attrs.get("settings")
        return value if isinstance(value, dict) else {}

    @property
    def has_truth(self) -> bool:
        """Whether the series had ground truth (some row has a real-space error)."""
        return bool(np.isfinite(self.E_r).any() or np.isfinite(self.E_r_output).any())

    def reconstruction(self, which: str = "auto") -> Reconstruction:
        """The reconstruction the file reports.

        Parameters
        ----------
        which : {"auto", "hybrid", "decoded"}
            ``"auto"``: the hybrid tracker's output when the file has it, else the decoded densities;
            ``"hybrid"`` requires it; ``"decoded"`` always takes the decoded densities.
        """
        if which not in ("auto", "hybrid", "decoded"):
            raise ValueError(f"`which` must be 'auto', 'hybrid' or 'decoded', got {which!r}")
        if which == "hybrid" and not self.has_physics:
            raise ValueError("these results hold no refined densities (they were not tracked with the hybrid strategy)")
        if self.has_physics and which != "decoded":
            return Reconstruction(self.output_density, "hybrid", self.E_r_output, self.physics_accepted)
        return Reconstruction(self.density, "decoded", self.E_r, np.zeros(self.num_frames, dtype=bool))

    @property
    def stagnation_threshold(self) -> float:
        """The ``restart_llk`` the run was tracked with (the default when the file does not record it)."""
        physics = self.settings.get("physics")
        value = physics.get("restart_llk") if isinstance(physics, dict) else None
        try:
            threshold = float(value)
        except (TypeError, ValueError):
            return DEFAULT_RESTART_LLK
        return threshold if math.isfinite(threshold) else DEFAULT_RESTART_LLK

    @property
    def stagnated(self) -> np.ndarray | None:
        """Per row: whether the output's LLK stayed above the threshold (None without a physics stage)."""
        if not self.has_physics:
            return None
        return is_stagnated(self.llk, self.stagnation_threshold)

    def stagnation_summary(self) -> str:
        """One sentence: how many frames stagnated and which ("" without a physics stage)."""
        flags = self.stagnated
        return "" if flags is None else stagnation_sentence(flags, self.index, self.stagnation_threshold)

    def summary(self) -> RunSummary:
        """The run in a few numbers (:class:`RunSummary`)."""
        return RunSummary(
            frames=self.num_frames,
            cost_mean=_finite_stat(self.cost, np.nanmean), cost_final=float(self.cost[-1]) if self.num_frames else math.nan,
            E_r_mean=_finite_stat(self.E_r, np.nanmean), E_r_max=_finite_stat(self.E_r, np.nanmax),
            output_E_r_mean=_finite_stat(self.E_r_output, np.nanmean) if self.has_physics else math.nan,
            output_E_r_max=_finite_stat(self.E_r_output, np.nanmax) if self.has_physics else math.nan,
            accepted=int(self.physics_accepted.sum()) if self.has_physics else 0,
            llk_median=_finite_stat(self.llk, np.nanmedian), llk_max=_finite_stat(self.llk, np.nanmax),
            seconds_mean=_finite_stat(self.seconds, np.nanmean),
        )

    def last_state(self) -> dict[str, Any]:
        """The strategy's state after the last row (for a resume)."""
        return json.loads(str(self.strategy_state[-1]))

    def __repr__(self) -> str:
        what = "hybrid" if self.has_physics else "decoded"
        return (f"Results({str(self.path)!r}, frames={self.num_frames}, {what}, "
                f"{'complete' if self.complete else 'partial'})")


def read_results(path: str | os.PathLike[str]) -> Results:
    """Read a results file, final or partial, up to its last complete frame.

    Parameters
    ----------
    path : str or os.PathLike
        The final file, or a ``.partial`` file. When ``path`` does not exist but ``path +
        ".partial"`` does, the partial file is read.

    Returns
    -------
    Results
        Per-frame fields as attributes, densities read on first use. Files written before the
        current layout read through :data:`latenttune.io.rows.ALIASES`.
    """
    p, f = _open_for_reading(path)
    with f:
        if "frames_complete" not in f.attrs:
            raise ResultsFileError(p, "not a latenttune results file (no frames_complete attribute)")
        fc = int(f.attrs["frames_complete"])
        fields: dict[str, np.ndarray] = {}
        stored: dict[str, str] = {}
        for stored_name, ds in f.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            name = ALIASES.get(stored_name, stored_name)
            if ds.shape[0] < fc:
                raise ResultsFileError(p, f"dataset {stored_name!r} has {ds.shape[0]} rows but frames_complete = {fc}")
            stored[name] = stored_name
            if name in _LAZY:
                continue
            if h5py.check_string_dtype(ds.dtype) is not None:
                fields[name] = np.array(ds.asstr()[:fc], dtype=object)
            else:
                fields[name] = ds[:fc]
        missing = [name for name in ("latent", "cost", "time", "steps") if name not in fields]
        if missing:
            raise ResultsFileError(p, f"corrupt results file: datasets {missing} are missing")
        attrs = read_attrs(f)
    return Results(p, attrs, fields, stored)
