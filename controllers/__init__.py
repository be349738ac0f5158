"""Controllers that tune a latent vector from cost values alone (numpy only).

Never imports ``latenttune`` (docs/conventions.md section 1).

Modules: :mod:`controllers.protocol` (the :class:`Controller` interface: ``suggest``/``ingest``/
``reset``/``to_dict``), :mod:`controllers.es_params` (validated :class:`ESParams` of Scheinker's
bounded extremum seeking, with the defaults and their reasons) and
:mod:`controllers.extremum_seeking` (the pure :func:`es_step` core, :class:`ESState` and the
:class:`ExtremumSeeking` controller).
"""

from controllers.es_params import COST_NORMALISATIONS, ESParams, default_frequencies
from controllers.extremum_seeking import (
    ESState,
    ExtremumSeeking,
    es_step,
    from_unit_box,
    initial_state,
    to_unit_box,
)
from controllers.protocol import Controller

__all__ = [
    "COST_NORMALISATIONS",
    "Controller",
    "ESParams",
    "ESState",
    "ExtremumSeeking",
    "default_frequencies",
    "es_step",
    "from_unit_box",
    "initial_state",
    "to_unit_box",
]
