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

from latenttune._lazy import lazy_exports

_MODULES = {
    "checkpoint": (
        "DEFAULT_MODEL_PATH", "SCHEMA_VERSION", "LoadedModel", "load_checkpoint", "load_model", "model_path",
        "save_checkpoint",
    ),
    "network": ("LatentAutoencoder", "ModelConfig", "normalise_intensity"),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
