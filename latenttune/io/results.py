"""Results file of a tracking or replay run: :func:`read_results` reads it into a :class:`Results` object.

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

Writing: :class:`latenttune.io.results_writer.ResultWriter` (frame by frame, crash-safe, resumable).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latenttune.io._attrs import read_attrs
from latenttune.io.errors import ResultsFileError
from latenttune.io.partial import partial_path_of
from latenttune.io.rows import ALIASES, FIELDS, READOUT_SHAPES
from latenttune.io.results_writer import ResultWriter
from latenttune.quality import DEFAULT_RESTART_LLK, is_stagnated, stagnation_sentence

__all__ = ["ResultWriter", "Results", "RunSummary", "read_results", "Reconstruction"]

logger = logging.getLogger(__name__)


def _open_for_reading(path: str | os.PathLike[str]) -> tuple[Path, h5py.File]:
    """The results file at ``path`` (or its ``.partial`` when only that exists), open for reading."""
    p = Path(path)
    if not p.exists():
        alt = partial_path_of(p)
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
_LAZY = ("density", "output_density", "phase", "displacement", "strain", "support")
#: The post-processing's volumes, read on first use (:meth:`Results.field_at` reads one row).
STRAIN_VOLUMES = ("phase", "displacement", "strain", "support")


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
    has_readout : bool
        Whether the file holds the latents' physical readout (a model with explicit crystal
        parameters: :mod:`latenttune.model.readout`). The ``readout_*`` attributes are float arrays
        of shape ``(T,) + READOUT_SHAPES[name]`` either way: NaN for a file without the readout, and
        the 0/1 and winding fields as 0.0/1.0 and -1.0/0.0/1.0.
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
        self.has_readout = all(name in stored for name in READOUT_SHAPES)
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
        self.E_q = np.asarray(get("E_q", self.cost), dtype=float)  # format 3 writes no E_q: it is the cost
        self.phase_rms = np.asarray(get("phase_rms", nan), dtype=float)
        self.physics_accepted = np.asarray(get("physics_accepted", np.full(T, self.has_physics)), dtype=bool)
        self.physics_warm = np.asarray(get("physics_warm", np.zeros(T)), dtype=bool)
        self.physics_start = get("physics_start", np.array([""] * T, dtype=object))
        self.physics_restarts = np.asarray(get("physics_restarts", np.zeros(T)), dtype=int)
        self.physics_seconds = np.asarray(get("physics_seconds", nan), dtype=float)
        self.llk = np.asarray(get("llk", nan), dtype=float)
        self.llk_free = np.asarray(get("llk_free", nan), dtype=float)
        self.has_strain = "strain" in stored
        self.strain_mean = np.asarray(get("strain_mean", nan), dtype=float)
        self.strain_std = np.asarray(get("strain_std", nan), dtype=float)
        self.strain_histogram = np.asarray(get("strain_histogram", np.zeros((T, 0))), dtype=float)
        self.lattice_strain = np.asarray(get("lattice_strain", nan), dtype=float)
        self.phase_ramp = np.asarray(get("phase_ramp", np.full((T, 3), np.nan)), dtype=float)
        self.support_com = np.asarray(get("support_com", np.full((T, 3), np.nan)), dtype=float)
        self.postprocess_seconds = np.asarray(get("postprocess_seconds", nan), dtype=float)
        self.misfit_refined = np.asarray(get("misfit_refined", nan), dtype=float)
        self.free_misfit_decoded = np.asarray(get("free_misfit_decoded", nan), dtype=float)
        self.free_misfit_refined = np.asarray(get("free_misfit_refined", nan), dtype=float)
        self.E_r_output = np.asarray(get("E_r_output", self.E_r if not self.has_physics else nan), dtype=float)
        self.E_q_output = np.asarray(get("E_q_output", self.E_q if not self.has_physics else nan), dtype=float)
        self.latent_misfit = np.asarray(get("latent_misfit", nan), dtype=float)
        self.readback_seconds = np.asarray(get("readback_seconds", nan), dtype=float)
        self.orientation_ties = np.asarray(get("orientation_ties", np.zeros(T)), dtype=int)

        def readout(name: str) -> np.ndarray:
            value = fields[name] if self.has_readout else np.full((T, *READOUT_SHAPES[name]), np.nan)
            return np.asarray(value, dtype=float)

        self.readout_orientation_deg = readout("readout_orientation_deg")
        self.readout_facet_distances = readout("readout_facet_distances")
        self.readout_active_facets = readout("readout_active_facets")
        self.readout_size = readout("readout_size")
        self.readout_phase_coefficients = readout("readout_phase_coefficients")
        self.readout_dislocation_present = readout("readout_dislocation_present")
        self.readout_dislocation_winding = readout("readout_dislocation_winding")
        self.readout_dislocation_point = readout("readout_dislocation_point")
        self.readout_dislocation_direction = readout("readout_dislocation_direction")
        self.readout_learned_norm = readout("readout_learned_norm")
        self.readout_learned_fraction = readout("readout_learned_fraction")
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

    def _extra(self, name: str) -> Any:
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

    def field_at(self, name: str, row: int) -> np.ndarray:
        """One row of a post-processing volume (``phase``, ``displacement``, ``strain``, ``support``), read alone."""
        if name not in STRAIN_VOLUMES:
            raise ValueError(f"`name` must be one of {STRAIN_VOLUMES}, got {name!r}")
        if name not in self._stored:
            raise ValueError(f"{self.path} has no {name!r}: the run had no measurement geometry (see docs/strain.md)")
        if name in self.__dict__:
            return self.__dict__[name][row]
        return self._read(name, int(row))

    def __getattr__(self, name: str) -> Any:
        """The post-processing's volumes (read on first use), then datasets the schema does not know."""
        if name in STRAIN_VOLUMES and name in self.__dict__.get("_stored", {}):
            value = self._read(name)
            self.__dict__[name] = value
            return value
        return self._extra(name)

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
