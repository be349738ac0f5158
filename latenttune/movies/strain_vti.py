"""ParaView export of a post-processed frame: amplitude, phase, displacement, strain and support in nm.

The reconstruction's own grid is not orthogonal (a rocking scan's voxels are sheared), and VTK
image data is a regular grid. So the frame is resampled (linear interpolation; nearest voxel for
the support) onto a cubic grid in the **crystal frame** (``z`` along ``G``;
:mod:`latenttune.geometry.transform`) whose spacing is the cube root of the reconstruction's voxel
volume, over the support's extent plus two voxels. The file's ``Direction`` puts that grid in the
laboratory frame (its columns are the crystal axes in laboratory coordinates), ``Spacing`` is in
nm and ``Origin`` puts the support's centre of mass at 0. Field data: ``G`` and ``q_peak`` (1/nm,
laboratory frame), ``voxel_size_nm`` and ``real_basis_nm`` of the reconstruction's grid. Written
with pyevtk (:mod:`latenttune.movies.vtk_export` says why), under a temporary name renamed when
complete.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from latenttune.geometry import FrameTransform
from latenttune.io import Results, read_results
from latenttune.io.partial import replace_when_done
from latenttune.movies.vtk_export import result_row
from latenttune.postprocess.orthogonal import orthogonalise

log = logging.getLogger(__name__)

__all__ = ["export_strain_vti"]


def export_strain_vti(results: str | os.PathLike[str] | Results, frame: int, out: str | os.PathLike[str], *,
                      overwrite: bool = False) -> Path:
    """Write series frame ``frame`` of a post-processed results file as a ``.vti`` (see the module docstring).

    Raises
    ------
    ValueError
        ``out`` does not end in ``.vti``, or the results have no displacement and strain (their
        series had no measurement geometry).
    """
    from pyevtk.vtk import VtkFile, VtkImageData

    out = Path(out)
    if out.suffix.lower() != ".vti":
        raise ValueError(f"`out` must end in .vti (VTK XML image data), got {str(out)!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    data = results if isinstance(results, Results) else read_results(results)
    if not data.has_strain:
        raise ValueError(f"{data.path} has no displacement or strain: its series had no measurement geometry "
                         "(latenttune prepare --energy-kev ... or --geometry FILE; docs/strain.md)")
    row = result_row(data, frame)
    transform = FrameTransform.from_dict(data.attrs["frame_transform"])
    support = data.field_at("support", row).astype(bool)
    if not support.any():
        raise ValueError(f"frame {frame} has no support (it was skipped or not post-processed)")
    density = data.density_at(row)
    unit_phase = np.exp(1j * data.field_at("phase", row))
    volumes = {"amplitude": np.abs(density), "phase_cos": unit_phase.real, "phase_sin": unit_phase.imag,
               "displacement": data.field_at("displacement", row), "strain": data.field_at("strain", row)}
    centre = data.support_com[row]
    grid, h, origin = orthogonalise(volumes, support, transform, centre)
    point_data = {"amplitude": grid["amplitude"],
                  "phase": np.arctan2(grid.pop("phase_sin"), grid.pop("phase_cos")).astype(np.float32),
                  "displacement": grid["displacement"], "strain": grid["strain"], "support": grid["support"]}
    shape = point_data["amplitude"].shape
    direction = transform.lab_to_crystal.T  # columns: the image axes (crystal x, y, z) in the laboratory frame
    fields = {"G": transform.G, "q_peak": transform.q_peak, "voxel_size_nm": transform.voxel_size_nm,
              "real_basis_nm": transform.real_basis.ravel()}
    with replace_when_done(out, suffix=".vti") as tmp:
        base = str(tmp.partial_path)[: -len(".vti")]
        w = VtkFile(base, VtkImageData)
        end = tuple(s - 1 for s in shape)
        w.openGrid(start=(0, 0, 0), end=end, origin=tuple(float(o) for o in origin), spacing=(h, h, h))
        w.xml.addAttributes(Direction=" ".join(f"{v:.10g}" for v in direction.ravel()))
        w.openData("Field")
        for name, value in fields.items():  # pyevtk's addHeader, plus the NumberOfTuples VTK's readers need
            array = np.ascontiguousarray(value, dtype=np.float64)
            w.xml.openElement("DataArray")
            w.xml.addAttributes(Name=name, NumberOfComponents=1, NumberOfTuples=array.size, type="Float64",
                                format="appended", offset=w.offset)
            w.xml.closeElement()
            w.offset += array.size * 8 + 8
        w.closeData("Field")
        w.openPiece(start=(0, 0, 0), end=end)
        w.openData("Point", scalars="strain")
        for name, value in point_data.items():
            w.addData(name, np.asfortranarray(value))
        w.closeData("Point")
        w.closePiece()
        w.closeGrid()
        for value in fields.values():
            w.appendData(np.ascontiguousarray(value, dtype=np.float64))
        for value in point_data.values():
            w.appendData(np.asfortranarray(value))
        w.save()
    log.info("wrote %s: %s voxels of %.2f nm in the crystal frame", out, "x".join(map(str, shape)), h)
    return out
