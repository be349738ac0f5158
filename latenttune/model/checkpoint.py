"""Model checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_model`.

A checkpoint carries the model's config, a schema version, the training recipe and a checksum of
its weights, and loads with ``torch.load(weights_only=True)`` (no pickled code).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latenttune.device import check_device
from latenttune.model.network import LatentAutoencoder, ModelConfig

log = logging.getLogger(__name__)

__all__ = ["state_checksum", "save_checkpoint", "load_checkpoint", "load_model", "LoadedModel", "model_path", "DEFAULT_MODEL_PATH",
           "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "data" / "default_model.pt"


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _verify_checksum(path: Path, state: Any, stored: Any) -> None:
    """Recompute the weights' checksum and refuse a checkpoint whose weights do not match it."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} is not a latenttune checkpoint: `state_dict` must map names to tensors")
    actual = state_checksum(state)
    if actual != stored:
        raise ValueError(
            f"{str(path)!r}: the weights do not match the checkpoint's checksum (stored {stored!r}, "
            f"recomputed {actual!r}): the file was altered or damaged"
        )


def save_checkpoint(
    path: str | Path,
    model: LatentAutoencoder,
    *,
    recipe: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically (temporary file, then rename).

    The file holds ``schema_version``, ``config`` (dict), ``state_dict``, ``recipe`` (the training
    configuration that produced it, as JSON text), ``extra`` (JSON text: optimiser-free metadata
    such as validation figures), ``checksum`` (of the weights) and, for resumable training
    checkpoints, ``extra_state`` (optimiser state and random-generator state: tensors and plain
    containers). Only tensors, strings, numbers and plain containers are stored, so it loads with
    ``weights_only=True``.

    Returns
    -------
    str
        The weights' checksum.
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checksum = state_checksum(state)
    payload = {
        "schema_version": SCHEMA_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "recipe": json.dumps(recipe or {}),
        "extra": json.dumps(extra or {}),
        "checksum": checksum,
    }
    if extra_state is not None:
        payload["extra_state"] = extra_state
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return checksum


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check its schema.

    Returns
    -------
    dict
        ``config`` (:class:`ModelConfig`), ``state_dict``, ``recipe`` (dict), ``extra`` (dict),
        ``extra_state`` (dict, empty unless saved), ``checksum``, ``schema_version``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ValueError(f"{str(path)!r} is not a readable latenttune checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or "schema_version" not in payload:
        raise ValueError(f"{str(path)!r} is not a latenttune checkpoint (no schema_version)")
    if payload["schema_version"] != SCHEMA_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint schema {payload['schema_version']}, this latenttune reads {SCHEMA_VERSION}"
        )
    missing = sorted({"config", "state_dict", "checksum"} - set(payload))
    if missing:
        raise ValueError(f"{str(path)!r} is not a complete latenttune checkpoint: it lacks {missing}")
    _verify_checksum(path, payload["state_dict"], payload["checksum"])
    return {
        "schema_version": payload["schema_version"],
        "config": ModelConfig.from_dict(payload["config"]),
        "state_dict": payload["state_dict"],
        "recipe": json.loads(payload.get("recipe", "{}")),
        "extra": json.loads(payload.get("extra", "{}")),
        "checksum": payload["checksum"],
        "extra_state": payload.get("extra_state", {}),
    }


@dataclass
class LoadedModel:
    """A model ready for inference with where it came from."""

    model: LatentAutoencoder
    path: Path
    checksum: str
    recipe: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def model_path(name_or_path: str | Path) -> Path:
    """The checkpoint file ``"default"`` (the model shipped in the package) or a path names."""
    return DEFAULT_MODEL_PATH if str(name_or_path) == "default" else Path(name_or_path)


def load_model(name_or_path: str | Path = "default", device: str | torch.device = "cpu") -> LoadedModel:
    """Load ``"default"`` (the model shipped in the package) or a checkpoint path, in eval mode.

    Parameters
    ----------
    name_or_path : str or Path
        ``"default"`` or a path to a checkpoint written by :func:`save_checkpoint`.
    device : str or torch.device
        Where the model runs (``"cpu"`` or ``"cuda"``).
    """
    path = model_path(name_or_path)
    device = check_device(device)
    ckpt = load_checkpoint(path, map_location="cpu")
    model = LatentAutoencoder(ckpt["config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or wrongly shaped weights
        detail = " ".join(str(exc).split())
        raise ValueError(f"{str(path)!r}: the weights do not match the checkpoint's config: {detail[:300]}") from None
    model.eval().requires_grad_(False).to(device)
    start = ckpt["extra"].get("learned_start")
    if start is not None and np.shape(start) == (model.latent_dim - model.config.physical_dim,):
        model.learned_start = np.asarray(start, dtype=np.float64)
    log.info("loaded model %s (checksum %s, k=%d)", path, ckpt["checksum"], model.latent_dim)
    return LoadedModel(model=model, path=path, checksum=ckpt["checksum"], recipe=ckpt["recipe"], extra=ckpt["extra"])
