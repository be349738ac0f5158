"""Movies and exports people look at instead of arrays.

Modules (one concept each):

* :mod:`~latenttune.movies.render`: isosurface of the amplitude coloured by the phase, central slices,
  fixed camera and colour limits (:class:`RenderSettings`, :class:`DensityView`, :func:`render_density`);
* :mod:`~latenttune.movies.paths`: latent paths (:func:`line_path`, :func:`axes_path`, :func:`lissajous_path`);
* :mod:`~latenttune.movies.traverse`: latent-space traversal movies (:func:`write_traverse_movie`);
* :mod:`~latenttune.movies.tracking_movie`: a results file played back (:func:`write_tracking_movie`);
* :mod:`~latenttune.movies.writer`: MP4 (imageio-ffmpeg) and GIF (Pillow) files, streamed frame by frame
  (:class:`MovieWriter`);
* :mod:`~latenttune.movies.vtk_export`: ParaView ``.vti`` export (:func:`export_vti`, :func:`export_result_frame`);
* :mod:`~latenttune.cli.movies`: the ``latenttune movie ...`` and ``latenttune export`` commands.

The names below are imported on first use, so ``import latenttune.movies`` (and building the CLI
parser) loads neither matplotlib nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RenderSettings": "render",
    "DensityView": "render",
    "IsoPanel": "render",
    "SlicePanels": "render",
    "isosurface": "render",
    "render_density": "render",
    "line_path": "paths",
    "axes_path": "paths",
    "lissajous_path": "paths",
    "PATHS": "paths",
    "encode_patterns": "traverse",
    "traverse_frames": "traverse",
    "write_traverse_movie": "traverse",
    "tracking_frames": "tracking_movie",
    "write_tracking_movie": "tracking_movie",
    "resolve_series": "tracking_movie",
    "MovieWriter": "writer",
    "write_movie": "writer",
    "export_vti": "vtk_export",
    "export_result_frame": "vtk_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
