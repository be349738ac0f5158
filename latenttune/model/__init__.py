"""The model wing: the autoencoder, its checkpoints, training, and how its predictions are asked for.

* :mod:`~latenttune.model.network`: :class:`ModelConfig` and :class:`LatentAutoencoder` (measured
  intensity -> latent ``z`` -> complex density), on :mod:`~latenttune.model.crystal` (the explicit
  crystal parameters) and :mod:`~latenttune.model.onednn` (the CPU convolution path);
* :mod:`~latenttune.model.checkpoint`: :func:`load_model`, :func:`save_checkpoint`, :func:`load_checkpoint`;
* :mod:`~latenttune.model.losses`, :mod:`~latenttune.model.training`,
  :mod:`~latenttune.model.cycle_training`: training on simulated pairs;
* :mod:`~latenttune.model.latent_cost` (the cost of a latent against a measured pattern),
  :mod:`~latenttune.model.encoders` (choosing between a model's encoders),
  :mod:`~latenttune.model.views` (the encoder asked in symmetric views of a pattern);
* :mod:`~latenttune.model.evaluation`, :mod:`~latenttune.model.diagnosis`,
  :mod:`~latenttune.model.latent_walk`: what a model can and cannot draw.

The names below are the ones most callers need (imported on first use); the rest live in their modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_MODEL_PATH": "checkpoint",
    "SCHEMA_VERSION": "checkpoint",
    "LoadedModel": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "model_path": "checkpoint",
    "save_checkpoint": "checkpoint",
    "LatentAutoencoder": "network",
    "ModelConfig": "network",
    "normalise_intensity": "network",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import on first use, so that ``latenttune.model.symmetry`` (for the command line) loads no torch."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
