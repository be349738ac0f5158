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

from latenttune._lazy import lazy_exports

_MODULES = {
    "render": ("RenderSettings", "DensityView", "IsoPanel", "SlicePanels", "isosurface", "render_density"),
    "paths": ("line_path", "axes_path", "lissajous_path", "PATHS"),
    "traverse": ("encode_patterns", "traverse_frames", "write_traverse_movie"),
    "tracking_movie": ("tracking_frames", "write_tracking_movie", "resolve_series"),
    "writer": ("MovieWriter", "write_movie"),
    "vtk_export": ("export_vti", "export_result_frame"),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
