"""Put measured 3D intensities on the model's grid: ``latenttune prepare``.

* :mod:`~latenttune.prepare.settings`: :class:`PrepareSettings`;
* :mod:`~latenttune.prepare.masks`: what was not measured (:func:`build_mask`, CXI pixel-mask bits);
* :mod:`~latenttune.prepare.window`: oversampling, the Bragg peak, binning and the ``N^3`` window;
* :mod:`~latenttune.prepare.pipeline`: one volume (:func:`prepare_volume`) or a series
  (:func:`prepare_series`) written as a CXI series. The steps are described there.
"""

from __future__ import annotations

from latenttune.prepare.masks import MASK_GAP, MASK_HOT, build_mask
from latenttune.prepare.pipeline import FramePreparation, PreparedFrame, prepare_series, prepare_volume
from latenttune.prepare.settings import DEFAULT_OVERSAMPLING, PrepareSettings
from latenttune.prepare.window import choose_binning, estimate_oversampling, find_peak

__all__ = [
    "DEFAULT_OVERSAMPLING",
    "MASK_GAP",
    "MASK_HOT",
    "FramePreparation",
    "PrepareSettings",
    "PreparedFrame",
    "build_mask",
    "choose_binning",
    "estimate_oversampling",
    "find_peak",
    "prepare_series",
    "prepare_volume",
]
