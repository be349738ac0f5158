"""The geometry in files: CXI ``instrument_1`` fields, the prepared series' record, what a series carries.

* :func:`read_cxi_instrument` reads what a CXI file (PyNX, cdiutils, this project) says of the
  geometry: ``entry_1/instrument_1/source_1/energy`` (J), ``detector_1/distance`` (m),
  ``detector_1/x_pixel_size`` and ``y_pixel_size`` (m), and this project's full ``geometry``
  attribute when the file was written by ``latenttune prepare``;
* :func:`instrument_fields` gives the same fields to write;
* :func:`prepared_geometry` is what ``latenttune prepare`` stores with a prepared series (the
  geometry, the transform of its window, the resolution before and after the crop and binning);
* :func:`series_geometry` reads it back from an opened series (None when the series has none).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latenttune.geometry.setup import BraggGeometry
from latenttune.geometry.transform import FrameTransform, _qconversion, frame_transform, q_step_of

log = logging.getLogger(__name__)

__all__ = ["GEOMETRY_ATTR", "TRANSFORM_ATTR", "RESOLUTION_ATTR", "MISSING_GEOMETRY", "instrument_fields",
           "prepared_geometry", "read_cxi_instrument", "resolution", "series_geometry", "window_centre"]

GEOMETRY_ATTR = "geometry"
TRANSFORM_ATTR = "frame_transform"
RESOLUTION_ATTR = "resolution"
#: What a command says when a series has no geometry.
MISSING_GEOMETRY = ("no measurement geometry: no voxel size in nm, displacement or strain; give it to `latenttune "
                    "prepare` (--energy-kev, --detector-distance-m, --pixel-size-um, --rocking-step-deg, --reflection, "
                    "--lattice-constant-nm, or --geometry FILE)")

_J_PER_KEV = 1.602176634e-16


def read_cxi_instrument(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a CXI file's ``entry_1/instrument_1`` (and this project's ``geometry`` attribute) says, as geometry keys.

    Returns a possibly empty dict with any of ``energy_kev``, ``detector_distance_m``,
    ``pixel_size_um`` and, for a file written by ``latenttune prepare``, every key of
    :meth:`BraggGeometry.to_dict`.
    """
    import h5py

    out: dict[str, Any] = {}
    try:
        f = h5py.File(path, "r")
    except OSError:
        return out
    with f:
        stored = f.attrs.get(GEOMETRY_ATTR)
        if stored is not None:
            out.update(json.loads(stored if isinstance(stored, str) else stored.decode()))
            return out
        entry = f.get("entry_1")
        instrument = entry.get("instrument_1") if isinstance(entry, h5py.Group) else None
        if not isinstance(instrument, h5py.Group):
            return out

        def scalar(name: str) -> float | None:
            ds = instrument.get(name)
            if isinstance(ds, h5py.Dataset) and ds.size == 1 and ds.dtype.kind in "iuf":
                return float(np.asarray(ds[()]).reshape(-1)[0])
            return None

        energy = scalar("source_1/energy")
        if energy is not None and energy > 0:
            out["energy_kev"] = energy / _J_PER_KEV if energy < 1e-10 else energy / 1e3  # J (CXI) or eV
        distance = scalar("detector_1/distance")
        if distance is not None and distance > 0:
            out["detector_distance_m"] = distance
        x, y = scalar("detector_1/x_pixel_size"), scalar("detector_1/y_pixel_size")
        if x is not None and y is not None and x > 0 and y > 0:
            out["pixel_size_um"] = [y * 1e6, x * 1e6]  # rows (y), columns (x)
    return out


def instrument_fields(geometry: BraggGeometry) -> dict[str, tuple[Any, str, str]]:
    """The CXI ``instrument_1`` datasets of ``geometry``: path -> (value, units, description)."""
    return {
        "source_1/energy": (geometry.energy_kev * _J_PER_KEV, "J", "photon energy"),
        "source_1/wavelength": (geometry.wavelength_nm * 1e-9, "m", "X-ray wavelength"),
        "detector_1/distance": (geometry.detector_distance_m, "m", "sample to detector distance"),
        "detector_1/y_pixel_size": (geometry.pixel_size_um[0] * 1e-6, "m", "pixel size along the detector rows"),
        "detector_1/x_pixel_size": (geometry.pixel_size_um[1] * 1e-6, "m", "pixel size along the detector columns"),
    }


def window_centre(start: Sequence[int], binning: Sequence[int], N: int) -> tuple[float, float, float]:
    """Input voxel at the centre of prepared voxel ``N // 2`` of a window starting at ``start``."""
    return tuple(float(s + b * (N // 2) + (b - 1) / 2) for s, b in zip(start, binning))  # type: ignore[return-value]


def resolution(geometry: BraggGeometry, shape: Sequence[int], binning: Sequence[int], N: int,
               centre: Sequence[float]) -> dict[str, list[float]]:
    """Voxel sizes (nm): of a reconstruction of the whole input array, of the prepared grid, and the resolution kept.

    The real-space voxel along an axis is ``2 pi`` over the q range the array spans. The prepared
    grid spans ``N b`` input voxels (binning ``b``); where that is less than the input, the crop
    drops the outer q range and coarsens the resolution; where it is more, the grid's extra range
    is masked (not measured) and the resolution stays that of the measured range.
    """
    B = q_step_of(_qconversion(geometry, centre, (1, 1, 1), 3))
    basis = 2 * np.pi * np.linalg.inv(B).T  # columns scaled by 1 / (voxels along the axis)
    span = N * np.asarray(binning, dtype=float)
    before = np.linalg.norm(basis / np.asarray(shape, dtype=float), axis=0)
    grid = np.linalg.norm(basis / span, axis=0)
    kept = np.linalg.norm(basis / np.minimum(span, np.asarray(shape, dtype=float)), axis=0)
    return {"voxel_size_nm_input": before.tolist(), "voxel_size_nm_prepared": grid.tolist(),
            "resolution_nm_prepared": kept.tolist()}


def prepared_geometry(geometry: BraggGeometry, shape: Sequence[int], start: Sequence[int], binning: Sequence[int],
                      N: int, peak: Sequence[float]) -> dict[str, Any]:
    """The attributes a prepared series stores: geometry, its window's transform, resolution."""
    centre = window_centre(start, binning, N)
    transform = frame_transform(geometry, N, binning, centre, peak=peak)
    return {GEOMETRY_ATTR: geometry.to_dict(), TRANSFORM_ATTR: transform.to_dict(),
            RESOLUTION_ATTR: resolution(geometry, shape, binning, N, centre)}


def series_geometry(attrs: Mapping[str, Any]) -> tuple[BraggGeometry, FrameTransform, dict] | None:
    """The geometry, transform and resolution stored with a series (its root attributes), or None."""
    stored = attrs.get(GEOMETRY_ATTR)
    transform = attrs.get(TRANSFORM_ATTR)
    if not isinstance(stored, Mapping) or not isinstance(transform, Mapping):
        return None
    geometry = BraggGeometry.from_dict({k: v for k, v in stored.items()})
    return geometry, FrameTransform.from_dict(dict(transform)), dict(attrs.get(RESOLUTION_ATTR) or {})
