"""The rows of a results file, named once: :data:`FIELDS`, :class:`FrameRow`, :data:`ALIASES`.

Every per-frame dataset of a results file is listed here with its units and description (written
as the dataset's ``units`` and ``description`` attributes). :class:`FrameRow` is one frame's row;
:meth:`FrameRow.from_record` builds it from the tracker's record and the physics stage's outcome
(the one place where a record's attributes become file fields), and :meth:`FrameRow.datasets` is
the one place where the fields get their dataset names. :data:`ALIASES` maps the names older files
used to today's, so :func:`latenttune.io.read_results` reads them the same way.

Groups of fields:

* the core (every results file): ``latent``, ``cost``, ``density``, ``time``, ``steps``;
* the tracker's (every file a replay writes): ``index``, ``step_costs``, ``encoded``, ``seconds``,
  ``status``, ``strategy_state``, ``series_sha256`` and, for a series with ground truth, the truth
  metrics ``E_r`` and ``phase_rms`` (``E_q``, written before format 3, equals ``cost``);
* the physics stage's (hybrid tracking): ``output_density`` (the frame's reconstruction),
  ``physics_accepted``, ``physics_warm``, ``physics_start``, ``physics_restarts``,
  ``physics_seconds``, ``llk``, ``llk_free``, ``misfit_refined``, ``free_misfit_decoded``,
  ``free_misfit_refined``, ``E_r_output``, ``E_q_output``;
* the post-processing's (a series with a measurement geometry: :mod:`latenttune.postprocess`):
  ``phase``, ``displacement``, ``strain``, ``support``, ``strain_mean``, ``strain_std``,
  ``strain_histogram``, ``lattice_strain``, ``phase_ramp``, ``support_com``, ``postprocess_seconds``;
* the readout's (models with explicit crystal parameters: :mod:`latenttune.model.readout`): the
  tracked latent read out as named physical quantities, ``readout_orientation_deg``,
  ``readout_facet_distances``, ``readout_active_facets``, ``readout_size``,
  ``readout_phase_coefficients``, ``readout_dislocation_present``, ``readout_dislocation_winding``,
  ``readout_dislocation_point``, ``readout_dislocation_direction``, ``readout_learned_norm``,
  ``readout_learned_fraction`` (:data:`READOUT_SHAPES` gives each one's per-frame shape).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ALIASES", "CORE_FIELDS", "FIELDS", "PHASE_TERMS", "READABLE_FORMATS", "READOUT_SHAPES", "RESULTS_FORMAT",
           "TRUTH_FIELDS",
           "Field", "FrameRow", "PhysicsRow", "TruthMetrics"]

RESULTS_FORMAT = "latenttune-results/3"
"""The layout this version writes (the ``format`` root attribute). Format 3 writes no ``E_q`` (it
equals ``cost``), no truth metrics on a series without ground truth, and adds ``llk_free`` and the
post-processing's fields (group ``strain``)."""
READABLE_FORMATS = ("latenttune-results/1", "latenttune-results/2", RESULTS_FORMAT)
"""Layouts this version reads (format 1 through :data:`ALIASES`; ``E_q`` of a format-3 file is its ``cost``)."""
TRUTH_FIELDS = ("E_r", "phase_rms", "E_r_output")
"""Fields that need the ground truth: written only for a series that has one."""
CORE_FIELDS = ("latent", "cost", "density", "time", "steps")
"""The datasets every results file has."""


@dataclass(frozen=True)
class Field:
    """One per-frame dataset: its name, units and meaning."""

    name: str
    units: str
    description: str
    group: str


_SCHEMA = """
latent                         -         core    latent vector after the frame (the tracked estimate), in the model's
                                                 box [-1, 1]^k
cost                           -         core    amplitude misfit of the decoded latent against the frame: the
                                                 tracking cost, in [0, 1]
density                        arbitrary core    decoded density of the latent (complex, object grid n^3)
time                           s         core    frame time stamp
steps                          -         core    cost evaluations spent on the frame (the encoders' included)
index                          -         tracker frame number in the series
step_costs                     -         tracker cost of each of the strategy's evaluations on the frame, in order
                                                 (NaN-padded)
encoded                        -         tracker the encoders' chosen prediction of the frame (NaN when the strategy
                                                 did not ask)
seconds                        s         tracker wall time of the tracker on the frame (truth metrics and writing not
                                                 included)
status                         -         tracker 'ok', or 'skipped: <reason>' for a frame that could not be tracked
strategy_state                 -         tracker the strategy's state after the frame, JSON (for an exact resume)
series_sha256                  -         tracker running SHA-256 over every frame read up to this one (for the resume
                                                 check)
E_r                            -         tracker real-space error of the decoded density against the truth (NaN
                                                 without truth)
E_q                            -         tracker amplitude error of the decoded density against the measured frame
                                                 (files before format 3 only: it equals cost)
phase_rms                      rad       tracker phase RMS error of the decoded density inside the support (NaN
                                                 without truth)
output_density                 arbitrary physics the frame's reconstruction: the physics stage's refined density when
                                                 it was accepted, else the decoded density
physics_accepted               -         physics 1 when the physics stage's refined density was accepted as the output
physics_warm                   -         physics 1 when the physics stage started from the previous frame's output
physics_start                  -         physics where the kept refinement started: warm, decoded, alternative or a
                                                 restart's kind
physics_restarts               -         physics restarts the physics stage ran on the frame
physics_seconds                s         physics wall time of the physics stage on the frame
llk                            -         physics Poisson log-likelihood of the output (PyNX form, about 1 at the noise
                                                 level)
llk_free                       -         physics free log-likelihood of the output: Poisson LLK on the held-out voxels
                                                 (the flux scale fitted on the others), as PyNX computes it
misfit_refined                 -         physics amplitude misfit of the refined candidate on the measured voxels
free_misfit_decoded            -         physics amplitude misfit of the decoded density on the held-out voxels
free_misfit_refined            -         physics amplitude misfit of the refined candidate on the held-out voxels
E_r_output                     -         physics real-space error of the output against the truth (NaN without truth)
E_q_output                     -         physics amplitude error of the output against the measured frame
latent_misfit                  -         physics real-space misfit 1 - |<o, d>|^2 / (|o|^2 |d|^2) of the decoded
                                                 latent d against the output o (about E_r(d, o)^2: how closely the
                                                 latent follows the reconstruction; NaN without a read-back)
readback_seconds               s         physics wall time of reading the latent back from the output (NaN without one)
orientation_ties               -         physics distinct orientations (more than 5 degrees apart) whose crystal fitted the
                                                 output's shape within 5 % of the best, where the read-back searched
                                                 the whole orientation box (the run's first frame, or one with no
                                                 previous fit): the one of lowest surface energy was kept, so a value
                                                 above 1 marks an orientation decided by that prior; 1 on frames that
                                                 followed the previous orientation; 0 without a read-back
readout_orientation_deg        deg       readout rotation vector (x, y, z components) of the crystal's cubic axes,
                                                 read out of the latent's explicit parameters in the laboratory frame
                                                 (the 24 cubic-equivalent rotations describe the same crystal)
readout_facet_distances        voxel     readout distances from the grid centre of the 26 {100}, {110}, {111} facet
                                                 planes (in the order of latenttune.model.crystal.NORMALS, crystal
                                                 frame of readout_orientation_deg)
readout_active_facets          -         readout 1 for each of the 26 planes that bounds the rendered crystal (the
                                                 nearest plane at some voxel inside it: a face of positive area), 0
                                                 for one beyond it or touching it only at an edge or a corner
readout_size                   voxel     readout equivalent-sphere radius (3 V / 4 pi)^(1/3) of the occupancy V of the
                                                 explicitly rendered crystal
readout_phase_coefficients     rad       readout coefficients of the smooth Bragg phase in x, y, z, x^2, y^2, z^2, xy,
                                                 xz, yz with x = r / (n/4) (r centred voxel coordinates)
readout_dislocation_present    -         readout 1 when the latent draws a dislocation line (|winding| >= 0.5), else 0
readout_dislocation_winding    -         readout the line's winding G.b rounded to -1, 0 or +1: the phase turns by 2
                                                 pi times it counter-clockwise about readout_dislocation_direction
                                                 (the pair (direction, winding) equals (-direction, -winding))
readout_dislocation_point      voxel     readout point of the dislocation line closest to the grid centre (centred
                                                 coordinates; meaningful when readout_dislocation_present is 1)
readout_dislocation_direction  -         readout unit direction of the dislocation line
readout_learned_norm           -         readout Euclidean norm of the learned part of the latent (box units)
phase                          rad       strain  phase of the reconstruction with the phase ramp and offset
                                                 removed (0 at the support's centre of mass), wrapped to (-pi, pi];
                                                 0 outside the support (object grid; laboratory positions: the
                                                 geometry group's real_basis)
displacement                   nm        strain  displacement along G, u = phase / |G| (phase unwrapped inside the
                                                 support), 0 at the support's centre of mass; 0 outside the support
strain                         -         strain  heterogeneous strain along G, from the gradient of the wrapped
                                                 phase (ramp removed, so its mean over the support is near 0); 0
                                                 outside the support
support                        -         strain  1 inside the support (amplitude above the post-processing's
                                                 support_threshold of the maximum), else 0
strain_mean                    -         strain  mean of the heterogeneous strain inside the support
strain_std                     -         strain  standard deviation of the heterogeneous strain inside the support
strain_histogram               -         strain  voxels of the support per strain bin (edges: the geometry group's
                                                 strain_histogram_edges; values beyond fall into the end bins)
lattice_strain                 -         strain  mean lattice strain against the reference lattice constant, from
                                                 the Bragg peak's position in q (full geometry only, else NaN); the
                                                 absolute strain is strain + lattice_strain
phase_ramp                     rad       strain  phase ramp removed, per object voxel along each array axis (the
                                                 Bragg peak's offset from the window centre)
support_com                    voxel     strain  the support's centre of mass, object-grid voxels (the displacement's
                                                 reference)
postprocess_seconds            s         strain  wall time of the post-processing of the frame
average_density                arbitrary static  aligned average of the best runs of a static scan (latenttune static
                                                 --average)
readout_learned_fraction       -         readout share of the decoded density drawn by the learned residual: ||decoded
                                                 - explicit|| / ||decoded||, explicit = the rendered crystal amplitude
                                                 * exp(i phase)
"""
"""name, units ("-": none), group, description (continued on indented lines)."""


def _parse(table: str) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for line in table.strip("\n").splitlines():
        if line[:1].isspace():  # the description goes on
            last = fields.popitem()[1]
            fields[last.name] = Field(last.name, last.units, f"{last.description} {line.strip()}", last.group)
            continue
        name, units, group, description = line.split(maxsplit=3)
        fields[name] = Field(name, "" if units == "-" else units, description, group)
    return fields


FIELDS: dict[str, Field] = _parse(_SCHEMA)
"""Every per-frame dataset a tracking run writes, by name."""

ALIASES: dict[str, str] = {
    "refined_density": "output_density",
    "refined_accepted": "physics_accepted",
    "refined_warm": "physics_warm",
    "refined_start": "physics_start",
    "refined_restarts": "physics_restarts",
    "refined_seconds": "physics_seconds",
    "E_r_refined": "E_r_output",
    "E_q_refined": "E_q_output",
}
"""Dataset names of results files written before format 2, and today's name for each."""

READOUT_SHAPES: dict[str, tuple[int, ...]] = {
    "readout_orientation_deg": (3,),
    "readout_facet_distances": (26,),
    "readout_active_facets": (26,),
    "readout_size": (),
    "readout_phase_coefficients": (9,),
    "readout_dislocation_present": (),
    "readout_dislocation_winding": (),
    "readout_dislocation_point": (3,),
    "readout_dislocation_direction": (3,),
    "readout_learned_norm": (),
    "readout_learned_fraction": (),
}
"""The readout fields (group ``readout`` of :data:`FIELDS`, in order) and each one's shape per frame."""

PHASE_TERMS: tuple[str, ...] = ("x", "y", "z", "x^2", "y^2", "z^2", "xy", "xz", "yz")
"""The terms of ``readout_phase_coefficients``, in order (``x = r / (n/4)``)."""

#: The readout fields written as 0/1 (or -1/0/+1) integers.
_READOUT_INTEGERS = ("readout_active_facets", "readout_dislocation_present", "readout_dislocation_winding")


@dataclass(frozen=True)
class TruthMetrics:
    """A density's errors on one frame: ``E_r`` and ``phase_rms`` against the truth (NaN without one), ``E_q``."""

    E_r: float = math.nan
    E_q: float = math.nan
    phase_rms: float = math.nan


@dataclass(frozen=True, eq=False)
class PhysicsRow:
    """The physics stage's part of a row (hybrid tracking)."""

    output_density: np.ndarray
    accepted: bool
    warm: bool
    start: str
    restarts: int
    seconds: float
    llk: float
    misfit_refined: float
    free_misfit_decoded: float
    free_misfit_refined: float
    output_metrics: TruthMetrics
    latent_misfit: float = math.nan
    readback_seconds: float = math.nan
    llk_free: float = math.nan
    orientation_ties: int = 0


@dataclass(frozen=True, eq=False)
class FrameRow:
    """One frame's row of a results file."""

    index: int
    time: float
    latent: np.ndarray
    cost: float
    steps: int
    step_costs: np.ndarray
    encoded: np.ndarray
    density: np.ndarray
    seconds: float
    status: str
    strategy_state: str
    series_sha256: str
    metrics: TruthMetrics
    physics: PhysicsRow | None = None
    readout: dict[str, np.ndarray] | None = None
    has_truth: bool = True
    strain: dict[str, Any] | None = None

    @classmethod
    def from_record(cls, record: Any, *, slots: int, digest: str, metrics: TruthMetrics,
                    output_metrics: TruthMetrics | None = None, hybrid: bool = False,
                    readout: dict[str, np.ndarray] | None = None, has_truth: bool = True,
                    strain: dict[str, Any] | None = None) -> FrameRow:
        """The row of a tracker's record (:class:`latenttune.tracking.tracker.FrameRecord`).

        Parameters
        ----------
        record : FrameRecord
            What the tracker did on the frame.
        slots : int
            Width of ``step_costs`` (the strategy's evaluations per frame; fixed for a run).
        digest : str
            The series digest after the frame.
        metrics, output_metrics : TruthMetrics
            Errors of the decoded density and of the output.
        hybrid : bool
            The run has a physics stage: the row carries its fields (held output and NaN on a skipped
            frame).
        readout : dict of str to ndarray, optional
            The latent's physical readout (:func:`latenttune.model.readout.readout_rows`: every name of
            :data:`READOUT_SHAPES`); None for a model without explicit parameters.
        has_truth : bool
            The series has ground truth: the row carries :data:`TRUTH_FIELDS` (else they are left out).
        strain : dict of str to value, optional
            The post-processing's fields (group ``strain`` of :data:`FIELDS`;
            :meth:`latenttune.postprocess.frames.FramePostprocessor.row`).
        """
        step_costs = np.full(slots, np.nan, dtype=np.float32)
        step_costs[: record.steps] = record.step_costs[:slots]
        physics = None
        if hybrid:
            outcome = record.physics
            nan = math.nan
            physics = PhysicsRow(
                output_density=record.output_density,
                accepted=outcome is not None and outcome.accepted,
                warm=outcome is not None and outcome.warm,
                start="" if outcome is None else outcome.start,
                restarts=0 if outcome is None else outcome.restarts,
                seconds=nan if outcome is None else outcome.seconds,
                llk=nan if outcome is None else outcome.llk,
                misfit_refined=nan if outcome is None else outcome.misfit_refined,
                free_misfit_decoded=nan if outcome is None else outcome.free_misfit_decoded,
                free_misfit_refined=nan if outcome is None else outcome.free_misfit_refined,
                output_metrics=output_metrics or TruthMetrics(),
                latent_misfit=nan if record.readback is None else record.readback.misfit,
                readback_seconds=nan if record.readback is None else record.readback.seconds,
                llk_free=nan if outcome is None else outcome.llk_free,
                orientation_ties=0 if record.readback is None else record.readback.orientation_ties,
            )
        return cls(index=record.index, time=record.time, latent=record.latent, cost=record.cost, steps=record.steps,
                   step_costs=step_costs, encoded=record.encoded, density=record.density, seconds=record.seconds,
                   status=record.status, strategy_state=json.dumps(record.state), series_sha256=digest,
                   metrics=metrics, physics=physics, readout=readout, has_truth=has_truth, strain=strain)

    def datasets(self) -> dict[str, Any]:
        """The row as ``{dataset name: value}``, in the file's dtypes (the one place names are given)."""
        out: dict[str, Any] = {
            "latent": np.asarray(self.latent).astype(np.float32), "cost": np.float32(self.cost),
            "density": self.density, "time": self.time, "steps": self.steps, "index": self.index,
            "step_costs": self.step_costs, "encoded": np.asarray(self.encoded).astype(np.float32),
            "seconds": self.seconds, "status": self.status, "strategy_state": self.strategy_state,
            "E_r": self.metrics.E_r, "phase_rms": self.metrics.phase_rms,
        }
        p = self.physics
        if p is not None:
            out.update({
                "output_density": p.output_density, "physics_accepted": np.int8(p.accepted),
                "physics_warm": np.int8(p.warm), "physics_start": p.start, "physics_restarts": np.int8(p.restarts),
                "physics_seconds": p.seconds, "llk": p.llk, "misfit_refined": p.misfit_refined,
                "free_misfit_decoded": p.free_misfit_decoded, "free_misfit_refined": p.free_misfit_refined,
                "E_r_output": p.output_metrics.E_r, "E_q_output": p.output_metrics.E_q,
                "latent_misfit": p.latent_misfit, "readback_seconds": p.readback_seconds, "llk_free": p.llk_free,
                "orientation_ties": np.int8(min(p.orientation_ties, 127)),
            })
        if self.readout is not None:
            out.update(_readout_datasets(self.readout))
        if self.strain is not None:
            out.update(self.strain)
        if not self.has_truth:
            for name in TRUTH_FIELDS:
                out.pop(name, None)
        out["series_sha256"] = self.series_sha256
        return out


def _readout_datasets(readout: dict[str, Any]) -> dict[str, np.ndarray]:
    """The readout's values in the file's dtypes (float64; int8 for the 0/1 and winding fields), shapes checked."""
    missing = sorted(set(READOUT_SHAPES) - set(readout))
    unknown = sorted(set(readout) - set(READOUT_SHAPES))
    if missing or unknown:
        raise ValueError(f"`readout` must hold exactly the fields {list(READOUT_SHAPES)}; missing {missing}, "
                         f"unknown {unknown}")
    out = {}
    for name, shape in READOUT_SHAPES.items():
        value = np.asarray(readout[name])
        if value.shape != shape:
            raise ValueError(f"`readout[{name!r}]` must have shape {shape}, got {value.shape}")
        out[name] = value.astype(np.int8) if name in _READOUT_INTEGERS else value.astype(np.float64)
    return out
