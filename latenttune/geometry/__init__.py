"""Measurement geometry of a Bragg CDI scan and the transform of a reconstruction to physical space.

:mod:`latenttune.geometry.setup` says what was measured (:class:`BraggGeometry`), from
``latenttune prepare``'s flags, a geometry file, a preset or a CXI file;
:mod:`latenttune.geometry.transform` places the reconstruction's voxels in the laboratory and
crystal frames (xrayutilities computes ``q``); :mod:`latenttune.geometry.cxi` reads and writes it
in CXI files' ``instrument_1``. The conventions are in ``docs/strain.md``.
"""

from latenttune.geometry.setup import PRESETS, BraggGeometry, Diffractometer, load_geometry, wavelength_nm
from latenttune.geometry.transform import FrameTransform, frame_transform, q_at

__all__ = ["PRESETS", "BraggGeometry", "Diffractometer", "FrameTransform", "frame_transform", "load_geometry", "q_at",
           "wavelength_nm"]
