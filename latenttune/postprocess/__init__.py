"""Post-processing of reconstructions: displacement and strain in physical units.

:mod:`latenttune.postprocess.strain` turns one reconstruction into displacement, strain and their
statistics; :mod:`latenttune.postprocess.frames` does it for every frame of a run (the tracker's
frames as they come, or a stored results file).
"""

from latenttune.postprocess.strain import StrainFrame, StrainSettings, phase_gradient, postprocess_density, support_of

__all__ = ["StrainFrame", "StrainSettings", "phase_gradient", "postprocess_density", "support_of"]
