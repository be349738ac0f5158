"""Model checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_model`.

A checkpoint carries the model's config, a schema version, the training recipe, a checksum of its
weights and one of its config, and loads with ``torch.load(weights_only=True)`` (no pickled code).
Before any tensor of the model is made, the config is checked against its own checksum (when the
file has one: older checkpoints do not) and against the shapes of the stored weights (the model is
built on torch's ``meta`` device, which allocates nothing), so an edited config cannot ask for
more memory than the file's own weights take.
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
from latenttune.limits import check_allocation
from latenttune.model.network import LatentAutoencoder, ModelConfig
from latenttune.model.paths import DEFAULT_MODEL_PATH, model_path  # re-exported: the names callers import from here
from latenttune.outputs import check_input

log = logging.getLogger(__name__)

__all__ = ["state_checksum", "config_checksum", "save_checkpoint", "load_checkpoint", "load_model", "LoadedModel",
           "model_path", "DEFAULT_MODEL_PATH", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def config_checksum(config: dict[str, Any]) -> str:
    """Checksum of a model config (its plain-data form, :meth:`ModelConfig.to_dict`)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Weight dtypes a checkpoint may store (those numpy represents: the weights' checksum is computed on them).
_WEIGHT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8,
                  torch.uint8, torch.bool)


def _verify_checksum(path: Path, state: Any, stored: Any) -> None:
    """Recompute the weights' checksum and refuse a checkpoint whose weights do not match it."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} is not a latenttune checkpoint: `state_dict` must map names to tensors")
    for name, tensor in state.items():
        if tensor.dtype not in _WEIGHT_DTYPES:
            raise ValueError(
                f"{str(path)!r}: weight {name!r} is stored as {tensor.dtype}, which latenttune checkpoints do not "
                "hold; convert the model to float32 (model.float()) and save it with save_checkpoint again"
            )
    actual = state_checksum(state)
    if actual != stored:
        raise ValueError(
            f"{str(path)!r}: the weights do not match the checkpoint's checksum (stored {stored!r}, "
            f"recomputed {actual!r}): the file was altered or damaged"
        )


def _model_config(path: Path, config: Any) -> ModelConfig:
    """The checkpoint's config as a :class:`ModelConfig` (one-line error for anything else)."""
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} is not a latenttune checkpoint: `config` must be a table of settings, got "
                         f"{type(config).__name__}")
    try:
        return ModelConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r}: the checkpoint's config is not a valid model config: {exc}") from None


def _verify_config_checksum(path: Path, config: dict[str, Any], stored: Any) -> None:
    """Refuse a config that does not match its own checksum (a checkpoint written before it existed has none)."""
    if stored is not None and config_checksum(config) != stored:
        raise ValueError(
            f"{str(path)!r}: the config does not match the checkpoint's config checksum (stored {stored!r}, "
            f"recomputed {config_checksum(config)!r}): the file was altered or damaged"
        )


def _check_config_fits(path: Path, config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """Refuse a config whose model would not have exactly the stored weights (built on ``meta``: no memory)."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in LatentAutoencoder(config).state_dict().items()}
    stored = {name: tuple(t.shape) for name, t in state.items()}
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    wrong = [f"shape of {name} {stored[name]} (the config makes {expected[name]})"
             for name in sorted(set(expected) & set(stored)) if stored[name] != expected[name]]
    parts = ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {unexpected[:3]}"] if unexpected else [])
    if parts or wrong:
        raise ValueError(f"{str(path)!r}: the weights do not match the checkpoint's config: "
                         f"{'; '.join(parts + wrong[:1])}")


def _json_field(path: Path, payload: dict[str, Any], name: str) -> dict[str, Any]:
    """A JSON-text field of a checkpoint (``recipe``, ``extra``) as a dict; a damaged one is a one-line error."""
    try:
        value = json.loads(payload.get(name, "{}"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r}: the checkpoint's `{name}` is not valid JSON text ({exc}): the file was "
                         "altered or damaged") from None
    if not isinstance(value, dict):
        raise ValueError(f"{str(path)!r}: the checkpoint's `{name}` must be a JSON object, got "
                         f"{type(value).__name__}")
    return value


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
    such as validation figures), ``checksum`` (of the weights), ``config_checksum`` (of the config,
    :func:`config_checksum`) and, for resumable training
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
    config = model.config.to_dict()
    payload = {
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "config_checksum": config_checksum(config),
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
    """Read a checkpoint safely (``weights_only=True``) and check its schema, checksums and shapes.

    Returns
    -------
    dict
        ``config`` (:class:`ModelConfig`), ``state_dict``, ``recipe`` (dict), ``extra`` (dict),
        ``extra_state`` (dict, empty unless saved), ``checksum``, ``schema_version``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a readable latenttune checkpoint: a FIFO or device, the wrong schema, weights or config
        that do not match their checksums, a config that does not fit the stored weights, weights
        in a dtype checkpoints do not hold (bfloat16), damaged JSON fields; or a file larger than the
        memory this process can get.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"model checkpoint {str(path)!r} does not exist")
    check_input(path, "model checkpoint")
    check_allocation(f"model checkpoint {str(path)!r}", 2 * path.stat().st_size,
                     "the file is read whole and its weights copied once")
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
    config = _model_config(path, payload["config"])
    _check_config_fits(path, config, payload["state_dict"])
    _verify_config_checksum(path, payload["config"], payload.get("config_checksum"))
    return {
        "schema_version": payload["schema_version"],
        "config": config,
        "state_dict": payload["state_dict"],
        "recipe": _json_field(path, payload, "recipe"),
        "extra": _json_field(path, payload, "extra"),
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
