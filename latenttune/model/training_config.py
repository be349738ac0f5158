"""A training run's recipe: :class:`TrainConfig`, :class:`RunConfig` and :func:`load_run_config`.

The TOML file of ``latenttune train --config FILE.toml`` has three tables, each mapping onto a
frozen dataclass::

    [model]   -> latenttune.model.ModelConfig       (architecture)
    [data]    -> sim.training.TrainingPairGenerator (what the simulator draws)
    [train]   -> TrainConfig                        (optimisation; [train.loss] -> LossWeights)

The recipe is stored in every checkpoint (:meth:`RunConfig.to_dict`), so a model says how it was
made; :mod:`latenttune.model.training` runs it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.model.losses import LossWeights
from latenttune.model.network import ModelConfig
from latenttune.outputs import check_input
from latenttune.validation import check_choice, check_int, check_number
from sim.detector import Detector
from sim.training import TrainingPairGenerator

__all__ = ["TrainConfig", "RunConfig", "load_run_config"]


_TRAINABLE = ("all", "encoder")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes
    ----------
    steps : int
        Optimisation steps in all.
    batch_size : int
        Pairs per step and per rank.
    lr : float
        Peak learning rate of AdamW (cosine decay to ``lr * min_lr_ratio`` after ``warmup`` steps).
    min_lr_ratio, warmup : float, int
        Learning-rate schedule.
    weight_decay, grad_clip : float
        AdamW weight decay; gradient-norm clip (0: none).
    eval_every : int
        Steps between validations (an "epoch"); best and last checkpoints are written then.
    val_samples, val_seed : int
        Size and seed of the fixed validation set.
    seed : int
        Seed of the weights' initialisation and of the smoothness term's perturbations.
    num_workers : int
        DataLoader worker processes that simulate pairs (0: in the training process).
    loss : LossWeights
        Loss term weights.
    init_from : str
        Checkpoint (a path, or ``"default"`` for the shipped model) whose weights start the run
        instead of a fresh initialisation; its model config must equal ``[model]``. Empty: none.
    init_checksum : str
        When set, the weights checksum ``init_from`` must have (what :func:`load_model` reports):
        a recipe that fine-tunes a particular model refuses any other.
    trainable : {"all", "encoder"}
        What the optimiser updates. ``"encoder"`` (needs ``init_from``) freezes the decoder: its
        weights stay exactly those of ``init_from``, so the latent space, what it can draw and
        every tracker working in it stay as they were, while the encoder learns to land closer in
        it (a better one-shot prediction and ES starting point).
    """

    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    eval_every: int = 200
    val_samples: int = 64
    val_seed: int = 10_000_019
    seed: int = 0
    num_workers: int = 0
    loss: LossWeights = field(default_factory=LossWeights)
    init_from: str = ""
    init_checksum: str = ""
    trainable: str = "all"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "val_samples"):
            check_int(f"train.{name}", getattr(self, name), low=1)
        for name in ("warmup", "num_workers"):
            check_int(f"train.{name}", getattr(self, name), low=0)
        check_number("train.lr", self.lr, low=0, open_low=True)
        check_number("train.min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        if isinstance(self.loss, dict):
            object.__setattr__(self, "loss", LossWeights(**self.loss))
        for name in ("init_from", "init_checksum"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"`train.{name}` must be a string, got {type(getattr(self, name)).__name__}")
        check_choice("train.trainable", self.trainable, _TRAINABLE)
        if self.trainable != "all" and not self.init_from:
            raise ValueError(f"`train.trainable = {self.trainable!r}` needs `train.init_from`: a frozen decoder "
                             "must come from a trained model")
        if self.init_checksum and not self.init_from:
            raise ValueError("`train.init_checksum` is set but `train.init_from` is empty")

    def learning_rate(self, step: int) -> float:
        """Learning rate at ``step`` (linear warm-up, then cosine decay)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        floor = self.lr * self.min_lr_ratio
        return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run (the "recipe" stored in checkpoints)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: TrainingPairGenerator = field(default_factory=TrainingPairGenerator)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, stored as the checkpoint's recipe."""
        return {
            "model": self.model.to_dict(),
            "data": _plain(dataclasses.asdict(self.data)),
            "train": _plain(dataclasses.asdict(self.train)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from the TOML tables ``model``, ``data``, ``train`` (each optional)."""
        unknown = set(data) - {"model", "data", "train"}
        if unknown:
            raise ValueError(f"unknown config tables {sorted(unknown)}; allowed: ['data', 'model', 'train']")
        model = ModelConfig.from_dict(data.get("model", {}))
        data_table = dict(data.get("data", {}))
        data_table.setdefault("n", model.n)
        if isinstance(data_table.get("detector"), dict):
            data_table["detector"] = _build(Detector, data_table["detector"], "data.detector")
        if isinstance(data_table.get("mix"), dict):
            data_table["mix"] = tuple(data_table["mix"].items())
        generator = _build(TrainingPairGenerator, data_table, "data")
        if generator.n != model.n:
            raise ValueError(f"`data.n` ({generator.n}) must equal `model.n` ({model.n})")
        train_table = dict(data.get("train", {}))
        loss = _build(LossWeights, train_table.pop("loss", {}), "train.loss")
        return cls(model=model, data=generator, train=_build(TrainConfig, {**train_table, "loss": loss}, "train"))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"unknown keys in [{where}]: {sorted(unknown)}; allowed: {sorted(known)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return cls(**kwargs)


def load_run_config(path: str | Path) -> RunConfig:
    """Read a training configuration TOML file."""
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"training config {str(path)!r} does not exist")
    check_input(path, "training config")  # a dangling link, a FIFO or a device: one line, never a blocked read
    with open(path, "rb") as fh:
        try:
            table = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"training config {str(path)!r} is not valid TOML: {exc}") from exc
    return RunConfig.from_dict(table)
