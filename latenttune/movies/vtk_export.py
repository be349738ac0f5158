"""ParaView / VTK export of a density: VTK XML image data (``.vti``) with amplitude and phase.

The library is **pyevtk** (``pyevtk.hl.imageToVTK``): a small pure-Python package (one dependency,
numpy), long maintained, whose only job is writing binary VTK XML files, ImageData included.
The alternatives were heavier or did not fit: ``vtk`` itself is a very large wheel, ``pyvista``
depends on ``vtk``, and ``meshio`` writes unstructured meshes but no ImageData. pyevtk writes the
arrays as raw little-endian binary in an ``AppendedData`` block with 64-bit block headers
(``header_type="UInt64"``), which ParaView and VTK's ``vtkXMLImageDataReader`` read directly.

Layout of the file:

* one point per voxel; array axis 0, 1, 2 is VTK x, y, z (pyevtk writes x fastest);
* ``Origin`` puts the object's centre voxel (index ``n//2``) at 0, ``Spacing`` is the voxel size;
* point data ``amplitude`` = ``|d|`` and ``phase`` = ``angle(d)`` in radians, both float32.

No field data: pyevtk places ``FieldData`` inside ``Piece``, where VTK's readers may not look for it.

The file is written under a hidden temporary name next to ``out`` and renamed atomically
(:func:`latenttune.io.partial.replace_when_done`); a failure removes the temporary.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.io import Results, read_results
from latenttune.io.partial import replace_when_done
from latenttune.outputs import check_outputs
from latenttune.validation import check_choice, is_integer

log = logging.getLogger(__name__)

__all__ = ["export_vti", "export_result_frame", "result_row"]


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    try:
        a = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"`spacing` must be a positive number or three positive numbers, got {spacing!r}") from None
    a = np.full(3, float(a)) if a.ndim == 0 else a
    if a.shape != (3,) or not np.isfinite(a).all() or not (a > 0).all():
        raise ValueError(f"`spacing` must be a positive number or three positive numbers, got {spacing!r}")
    return tuple(float(v) for v in a)


def export_vti(
    density: Any,
    out: str | os.PathLike[str],
    *,
    spacing: float | tuple[float, float, float] = 1.0,
    overwrite: bool = False,
) -> Path:
    """Write ``density`` as VTK image data with point data ``amplitude`` and ``phase``.

    Parameters
    ----------
    density : array_like, shape (n0, n1, n2)
        Complex density (a real array is taken as amplitude with phase 0 or pi by its sign).
    out : str or os.PathLike
        Output file; must end in ``.vti``.
    spacing : float or (float, float, float)
        Voxel size along x, y, z (e.g. in nm); the origin puts voxel ``n//2`` at 0.
    overwrite : bool
        Replace an existing ``out``; otherwise it is a FileExistsError.

    Returns
    -------
    Path
        ``out``.
    """
    from pyevtk.hl import imageToVTK

    out = Path(out)
    if out.suffix.lower() != ".vti":
        raise ValueError(f"`out` must end in .vti (VTK XML image data), got {str(out)!r}")
    d = np.asarray(density)
    if d.ndim != 3 or min(d.shape) < 2:
        raise ValueError(f"`density` must be a 3-D array (n, n, n), got shape {d.shape}")
    if d.dtype.kind not in "iufc":
        raise TypeError(f"`density` must be numeric (complex density), got dtype {d.dtype}")
    if not np.isfinite(d).all():
        raise ValueError("`density` must be finite everywhere (found NaN or inf)")
    step = _check_spacing(spacing)
    if out.exists() and not overwrite:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    if not out.parent.exists():
        raise FileNotFoundError(f"the folder of `out` does not exist: {out.parent}")
    origin = tuple(-(s // 2) * h for s, h in zip(d.shape, step))
    point_data = {
        "amplitude": np.ascontiguousarray(np.abs(d), dtype=np.float32),
        "phase": np.ascontiguousarray(np.angle(d), dtype=np.float32),
    }
    with replace_when_done(out, suffix=".vti") as tmp:  # .{stem}.{random}.partial.vti, renamed onto `out`
        base = str(tmp.partial_path)[: -len(".vti")]  # pyevtk appends ".vti" itself
        imageToVTK(base, origin=origin, spacing=step, pointData=point_data)
    log.info("wrote %s (%s voxels, amplitude and phase)", out, "x".join(map(str, d.shape)))
    return out


def result_row(results: Results, frame: int) -> int:
    """Row of the results holding series frame ``frame`` (the ``index`` column; the row number without it).

    Negative ``frame`` counts from the last row. ValueError names the frames available.
    """
    if not is_integer(frame):
        raise TypeError(f"`frame` must be an integer, got {frame!r}")
    T = results.num_frames
    if T == 0:
        raise ValueError("the results file holds no frames")
    index = results.index
    if frame < 0:
        if frame < -T:
            raise ValueError(f"`frame` {frame} is out of range: the results hold {T} frames")
        return int(T + frame)
    rows = np.flatnonzero(index == frame)
    if rows.size == 0:
        raise ValueError(
            f"`frame` {frame} is not in the results; they hold series frames {int(index.min())} .. {int(index.max())}"
            + ("" if len(index) == index.max() - index.min() + 1 else " (with gaps)")
        )
    return int(rows[-1])


def export_result_frame(
    results: str | os.PathLike[str] | Results,
    frame: int,
    out: str | os.PathLike[str],
    *,
    spacing: float | tuple[float, float, float] = 1.0,
    overwrite: bool = False,
    which: str = "auto",
) -> tuple[Path, str]:
    """Export the reconstruction of series frame ``frame`` from a results file to ``out`` (.vti).

    ``frame`` is the series frame number (the ``frame N`` that tracking prints, the results'
    ``index`` column); negative values count from the last row. ``which`` picks the density
    (:meth:`latenttune.io.Results.reconstruction`): ``"auto"`` exports the hybrid tracker's output when the
    file has it, else the decoded density. ``results`` is the file or what
    :func:`latenttune.io.read_results` returned for it. See :func:`export_vti` for the other parameters.

    Returns
    -------
    (Path, str)
        The file written and what it holds (``"refined"``, ``"decoded"`` or ``"decoded
        (refinement not kept)"``).
    """
    source = results.path if isinstance(results, Results) else results
    check_outputs({"`out`": out}, {"`results`": source}, overwrite=True,  # never over the results it reads
                  kinds={"`out`": "export"})
    data = results if isinstance(results, Results) else read_results(results)
    row = result_row(data, frame)
    check_choice("which", which, ("auto", "hybrid", "decoded"))
    if which == "hybrid" and not data.has_physics:
        data.reconstruction("hybrid")  # the one-line refusal
    output = data.has_physics and which != "decoded"
    label = ("refined" if data.physics_accepted[row] else "decoded (refinement not kept)") if output else "decoded"
    return export_vti(data.density_at(row, output=output), out, spacing=spacing, overwrite=overwrite), label
