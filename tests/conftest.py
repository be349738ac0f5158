"""Shared fixtures: a tiny autoencoder (n = 8), its configs and a tiny training TOML.

The tests run from the repository root (``python -m pytest``), where ``sim`` and ``latenttune``
import directly. Torch runs single-threaded here: the tests use tiny grids, where a second
intra-op thread only adds contention (on the shared 2-core machine a tiny conv3d step was
measured about 100x slower with 2 threads under load than with 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

#: ``[model]`` table of the tiny test model (object grid 8^3, diffraction grid 16^3, k = 4).
TINY_MODEL: dict[str, Any] = {
    "n": 8,
    "latent_dim": 4,
    "encoder_channels": [4, 8],
    "decoder_channels": [8, 4],
    "hidden": 16,
}

#: ``[train]`` table of a tiny training run.
TINY_TRAIN: dict[str, Any] = {"steps": 4, "batch_size": 2, "eval_every": 2, "val_samples": 2}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def toml_text(tables: dict[str, dict[str, Any]]) -> str:
    """TOML text of ``{"table": {key: value}}`` (dotted table names such as ``"train.loss"`` allowed)."""
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def tiny_tables(**train: Any) -> dict[str, dict[str, Any]]:
    """The tiny run's TOML tables, with ``train`` overrides."""
    return {"model": dict(TINY_MODEL), "train": {**TINY_TRAIN, **train}}


def cli_commands(parser: Any = None, prefix: tuple[str, ...] = ()):
    """Every (sub)command of the CLI with its parser: (("replay",), parser), (("movie", "traverse"), parser), ..."""
    if parser is None:
        from latenttune.cli import build_parser

        parser = build_parser()
    for action in parser._actions:
        if action.choices and hasattr(action, "_name_parser_map"):
            for name, sub in action.choices.items():
                yield from cli_commands(sub, (*prefix, name))
            return
    yield prefix, parser


def run_cli(capsys, *argv: Any) -> tuple[int, str, str]:
    """Run the ``latenttune`` CLI in-process: (exit status, stdout, stderr)."""
    from latenttune.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def tiny_config():
    """:class:`~latenttune.model.ModelConfig` of the tiny model."""
    from latenttune.model import ModelConfig

    return ModelConfig.from_dict(TINY_MODEL)


@pytest.fixture
def tiny_model(tiny_config):
    """A tiny random :class:`~latenttune.model.LatentAutoencoder` (seeded, eval mode, global RNG untouched)."""
    from latenttune.model import LatentAutoencoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = LatentAutoencoder(tiny_config)
    return model.eval()


@pytest.fixture
def lively_model(tiny_config):
    """A tiny random model whose decoder depends strongly on ``z``.

    A freshly initialised decoder gives an almost constant amplitude (``sigmoid(-3)``) that
    barely changes with ``z``; here every decoder weight is scaled by 3 and the amplitude bias is
    zeroed, so different latents decode to clearly different densities (relative L2 change
    about 0.3 to 0.9 between random latents), as a trained decoder does.
    """
    from latenttune.model import LatentAutoencoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = LatentAutoencoder(tiny_config)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
        model.decoder.amplitude.bias.zero_()
    return model.eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, lively_model) -> Path:
    """``lively_model`` written with :func:`~latenttune.model.save_checkpoint` to the test's folder."""
    from latenttune.model import save_checkpoint

    path = tmp_path / "tiny.pt"
    save_checkpoint(path, lively_model)
    return path


@pytest.fixture
def checkpoint(tiny_checkpoint) -> Path:
    """The tiny checkpoint (a test module may define its own ``checkpoint``)."""
    return tiny_checkpoint


@pytest.fixture
def loaded(tiny_checkpoint):
    """The tiny checkpoint, loaded (a test module may define its own ``loaded``)."""
    from latenttune.model import load_model

    return load_model(tiny_checkpoint)


@pytest.fixture
def tiny_patterns() -> tuple[np.ndarray, np.ndarray]:
    """Three simulated measured patterns (3, 16, 16, 16) float32 and their masks (bool)."""
    from sim.training import TrainingPairGenerator

    pairs = TrainingPairGenerator(n=8, seed=5).batch(range(3))
    return pairs.intensity.astype(np.float32), pairs.mask.astype(bool)


@pytest.fixture
def write_tiny_toml(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``write_tiny_toml(name="tiny.toml", tables=None, **train_overrides) -> Path``."""

    def write(name: str = "tiny.toml", tables: dict[str, dict[str, Any]] | None = None, **train: Any) -> Path:
        path = tmp_path / name
        path.write_text(toml_text(tables if tables is not None else tiny_tables(**train)))
        return path

    return write


@pytest.fixture
def tiny_toml(write_tiny_toml) -> Path:
    """A tiny training config TOML file (n = 8, 4 steps of batch 2)."""
    return write_tiny_toml()
