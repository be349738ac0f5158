"""Post-processing every frame of a run: :class:`FramePostprocessor`, :func:`postprocess_results`.

The tracker hands each frame's reconstruction to a :class:`FramePostprocessor` (``latenttune
replay`` does when the series carries a geometry), whose :meth:`~FramePostprocessor.row` gives the
results file's ``strain`` fields (:mod:`latenttune.io.rows`). :func:`postprocess_results` does the
same for a results file written without them (an older run, or a run whose series had no
geometry, given one now): it writes a new results file with the fields added.

:func:`context_groups` gives the groups a results file with post-processing carries:
``geometry`` (the measurement, the transform of the voxels to the laboratory and crystal
frames, voxel sizes, ``G``, ``q``, the strain histogram's edges) and ``prepare`` (what ``latenttune
prepare`` did: input, peak, crop window, binning, masked voxels), each dataset with ``units`` and
``description`` attributes.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.geometry import BraggGeometry, FrameTransform
from latenttune.postprocess.strain import StrainFrame, StrainSettings, postprocess_density

log = logging.getLogger(__name__)

__all__ = ["FramePostprocessor", "context_groups", "postprocess_results"]


class FramePostprocessor:
    """Post-process reconstructions of one run (one geometry, one transform, one set of settings).

    Parameters
    ----------
    geometry : BraggGeometry
    transform : FrameTransform
    settings : StrainSettings, optional
    """

    def __init__(self, geometry: BraggGeometry, transform: FrameTransform, settings: StrainSettings | None = None) -> None:
        if not isinstance(geometry, BraggGeometry):
            raise TypeError(f"`geometry` must be a BraggGeometry, got {type(geometry).__name__}")
        if not isinstance(transform, FrameTransform):
            raise TypeError(f"`transform` must be a FrameTransform, got {type(transform).__name__}")
        self.geometry = geometry
        self.transform = transform
        self.settings = StrainSettings() if settings is None else settings

    def __call__(self, density: np.ndarray) -> StrainFrame:
        """The frame's displacement and strain (:func:`latenttune.postprocess.postprocess_density`)."""
        return postprocess_density(density, self.transform, self.geometry, self.settings)

    def row(self, density: np.ndarray | None, n: int) -> dict[str, Any]:
        """The results file's ``strain`` fields of a reconstruction (None or one without support: NaN and zeros)."""
        frame = None
        if density is not None:
            try:
                frame = self(density)
            except ValueError as exc:  # no support: a blank row, said in the log
                log.warning("frame not post-processed: %s", exc)
        if frame is None:
            zero = np.zeros((n, n, n), dtype=np.float32)
            return {"phase": zero, "displacement": zero, "strain": zero, "support": zero.astype(np.int8),
                    "strain_mean": math.nan, "strain_std": math.nan,
                    "strain_histogram": np.zeros(self.settings.histogram_bins, dtype=np.int32),
                    "lattice_strain": math.nan, "phase_ramp": np.full(3, np.nan), "support_com": np.full(3, np.nan),
                    "postprocess_seconds": math.nan}
        return {"phase": frame.phase, "displacement": frame.displacement, "strain": frame.strain,
                "support": frame.support.astype(np.int8), "strain_mean": frame.mean, "strain_std": frame.std,
                "strain_histogram": frame.histogram, "lattice_strain": frame.lattice_strain,
                "phase_ramp": frame.ramp, "support_com": frame.centre_of_mass, "postprocess_seconds": frame.seconds}


def context_groups(geometry: BraggGeometry, transform: FrameTransform, settings: StrainSettings,
                   resolution: Mapping[str, Any] | None = None,
                   prepare: Mapping[str, Any] | None = None) -> dict[str, dict[str, tuple[Any, str, str]]]:
    """The ``geometry`` and ``prepare`` groups of a results file: name -> (value, units, description)."""
    hkl = "".join(str(h) for h in geometry.reflection)
    d = geometry.diffractometer
    groups: dict[str, dict[str, tuple[Any, str, str]]] = {"geometry": {
        "energy": (geometry.energy_kev, "keV", "photon energy"),
        "wavelength": (geometry.wavelength_nm, "nm", "X-ray wavelength"),
        "detector_distance": (geometry.detector_distance_m, "m", "sample to detector distance"),
        "pixel_size": (np.asarray(geometry.pixel_size_um), "um", "detector pixel size along rows and columns"),
        "rocking_step": (geometry.rocking_step_deg, "deg", "rocking-angle step per frame"),
        "reflection": (np.asarray(geometry.reflection), "", f"Miller indices hkl of the reflection measured ({hkl})"),
        "lattice_constant": (geometry.lattice_constant_nm, "nm", "cubic lattice constant of the reference lattice"),
        "d_spacing": (geometry.d_spacing_nm, "nm", "interplanar spacing of the reflection in the reference lattice"),
        "two_theta": (geometry.two_theta_deg, "deg", "Bragg angle 2 theta of the reference lattice"),
        "approximation": (geometry.approximation(), "", "what the geometry assumes"),
        "source": (geometry.source, "", "where the geometry came from"),
        "diffractometer": ("none (simple approximation)" if d is None else str(d.to_dict()), "",
                           "the diffractometer's circles, angles and direct beam (xrayutilities conventions)"),
        "G": (transform.G, "1/nm", "G of the reference lattice in the laboratory frame (along q_peak), |G| = 2 pi / d"),
        "q_peak": (transform.q_peak, "1/nm", "q of the Bragg peak's centre of mass, laboratory frame"),
        "q_centre": (transform.q_centre, "1/nm", "q of the prepared window's centre voxel N/2, laboratory frame"),
        "q_step": (transform.q_step, "1/nm", "column k: change of q per prepared voxel along array axis k (laboratory "
                                             "frame)"),
        "real_basis": (transform.real_basis, "nm", "column k: laboratory-frame displacement per object voxel along "
                                                    "array axis k (the reconstruction's voxel edges; not orthogonal "
                                                    "for a rocking scan)"),
        "voxel_size": (transform.voxel_size_nm, "nm", "lengths of the object voxel's edges along the array axes"),
        "axis_angles": (transform.axis_angles_deg, "deg", "angles between the voxel edges (axes 0-1, 0-2, 1-2)"),
        "lab_to_crystal": (transform.lab_to_crystal, "", "rows: the crystal frame's x, y, z axes in the laboratory frame "
                                                          "(z along G, x along the incident beam's part normal to G)"),
        "strain_histogram_edges": (settings.edges, "", "edges of the bins of strain_histogram"),
        "support_threshold": (settings.support_threshold, "", "support: amplitude above this fraction of the maximum"),
    }}
    if resolution:
        for key, what in (("voxel_size_nm_input", "voxel size a reconstruction of the whole input would have"),
                          ("voxel_size_nm_prepared", "voxel size of the prepared grid (the reconstruction's)"),
                          ("resolution_nm_prepared", "resolution from the q range kept by the crop and binning")):
            if key in resolution:
                groups["geometry"][key.replace("_nm", "")] = (np.asarray(resolution[key]), "nm", what)
    if prepare:
        summary = prepare.get("prepare_summary") or {}
        frames = prepare.get("prepare_frames") or []
        first = frames[0] if frames else {}
        group: dict[str, tuple[Any, str, str]] = {
            "inputs": (str(prepare.get("prepare_inputs", "")), "", "the measured inputs prepare read (JSON list)"),
            "grid": (int(summary.get("grid", 0)), "voxel", "prepared grid N"),
            "binning": (np.asarray(summary.get("binning", [1, 1, 1])), "voxel", "input voxels summed per grid voxel"),
            "oversampling": (np.asarray(summary.get("oversampling", [np.nan] * 3), dtype=float), "",
                             "estimated oversampling of the input per axis"),
            "centre": (str(summary.get("centre", "")), "", "series: one window for all frames; frame: each its own"),
        }
        if frames:
            group["peak"] = (np.asarray([f["peak"] for f in frames], dtype=float), "voxel",
                             "Bragg peak (centre of mass) per frame, input voxels")
            group["window_start"] = (np.asarray([f["start"] for f in frames], dtype=int), "voxel",
                                     "first input voxel of the crop window per frame and axis")
            group["input_shape"] = (np.asarray(first["shape"], dtype=int), "voxel", "shape of the measured input")
            reasons = sorted(first.get("masked", {}))
            group["masked_reasons"] = (",".join(reasons), "", "the reasons of masked_voxels, in order")
            group["masked_voxels"] = (np.asarray([[f["masked"].get(r, 0) for r in reasons] for f in frames], dtype=int),
                                      "voxel", "masked grid voxels per frame by first reason (masked_reasons)")
            group["counts_kept"] = (np.asarray([f["counts_kept"] for f in frames], dtype=float), "counts",
                                    "counts in the prepared frame")
            group["counts"] = (np.asarray([f["counts"] for f in frames], dtype=float), "counts",
                               "counts at the measured voxels of the input frame")
        groups["prepare"] = group
    return groups


def postprocess_results(results: str | os.PathLike[str], out: str | os.PathLike[str],
                        geometry: BraggGeometry | None = None, transform: FrameTransform | None = None,
                        settings: StrainSettings | None = None, *, overwrite: bool = False,
                        callback: Callable[[int, StrainFrame | None], object] | None = None) -> Path:
    """Add the post-processing's fields to a stored results file, written as a new file ``out``.

    Parameters
    ----------
    results : path
        A complete results file.
    out : path
        The new results file (written under a temporary name, renamed when complete).
    geometry, transform : optional
        The measurement geometry and transform; default: those stored in the results file (or its
        series, for a file written without them).
    settings : StrainSettings, optional
    overwrite : bool
        Replace an existing ``out``.
    callback : callable, optional
        ``callback(row, frame)`` after each row.
    """
    import h5py

    from latenttune.geometry.record import series_geometry
    from latenttune.io import read_results
    from latenttune.io.partial import replace_when_done
    from latenttune.io.results_writer import _describe, write_described_groups

    src, out = Path(results), Path(out)
    if src.resolve() == out.resolve():
        raise ValueError("`out` must differ from `results` (a new file is written)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    data = read_results(src)
    if not data.complete:
        raise ValueError(f"`results` {str(src)!r} is not complete (a partial run): finish it first")
    resolution: dict = {}
    prepare: dict = {}
    if geometry is None or transform is None:
        found = series_geometry(data.attrs)
        series_attrs = _series_attrs(src, data.attrs)
        if found is None:
            found = series_geometry(series_attrs)
        if found is None:
            from latenttune.geometry.record import MISSING_GEOMETRY

            raise ValueError(f"{src}: {MISSING_GEOMETRY}")
        geometry, transform, resolution = found if geometry is None else (geometry, found[1], found[2])
        prepare = series_attrs
    post = FramePostprocessor(geometry, transform, settings)
    n = int(data.attrs.get("n", data.density_at(0).shape[0]))
    with replace_when_done(out, suffix=out.suffix or ".h5") as tmp:
        shutil.copyfile(src, tmp.partial_path)
        with h5py.File(tmp.partial_path, "r+") as f:
            for name in FIELD_NAMES:
                if name in f:
                    del f[name]
            rows = []
            for row in range(data.num_frames):
                density = data.density_at(row) if str(data.status[row]) == "ok" else None
                values = post.row(density, n)
                rows.append(values)
                if callback is not None:
                    callback(row, None if density is None else values)
            for name in FIELD_NAMES:
                stacked = np.stack([np.asarray(r[name]) for r in rows])
                _describe(f.create_dataset(name, data=stacked, chunks=(1,) + stacked.shape[1:] if stacked.ndim > 1 else None))
            write_described_groups(f, context_groups(geometry, transform, post.settings, resolution, prepare))
            f.attrs["postprocessed_from"] = str(src)
    log.info("post-processed %d frame(s) of %s into %s", data.num_frames, src, out)
    return out


#: The results file's fields the post-processing writes (group ``strain`` of the schema).
FIELD_NAMES = ("phase", "displacement", "strain", "support", "strain_mean", "strain_std", "strain_histogram",
               "lattice_strain", "phase_ramp", "support_com", "postprocess_seconds")


def _series_attrs(results_path: Path, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The root attributes of the series a results file records (empty when it cannot be read)."""
    import h5py

    from latenttune.io._attrs import read_attrs

    recorded = attrs.get("series")
    if not recorded or "://" in str(recorded):
        return {}
    path = (results_path.parent / str(recorded)) if not Path(str(recorded)).is_absolute() else Path(str(recorded))
    try:
        with h5py.File(path, "r") as f:
            return read_attrs(f)
    except (OSError, ValueError):
        return {}
