"""Physics-aware training of the autoencoder on simulated pairs.

``latenttune train --config FILE.toml --out model.pt`` calls :func:`train`. The TOML file has
three tables, each mapping onto a frozen dataclass::

    [model]   -> latenttune.model.ModelConfig       (architecture)
    [data]    -> sim.training.TrainingPairGenerator (what the simulator draws)
    [train]   -> TrainConfig                        (optimisation; [train.loss] -> LossWeights)

Data are drawn on the fly from the simulator's training-pair generator, which is a pure
function of ``(seed, index)``: optimisation step ``s`` on rank ``r`` of ``W`` takes the pairs
``(s W + r) B ... (s W + r) B + B - 1``, so a resumed run sees exactly the pairs an uninterrupted
run would, and DistributedDataParallel ranks never share a pair. Validation uses a fixed set
drawn with a different seed.

A run may start from a trained model instead of fresh weights (``[train] init_from``, optionally
pinned by ``init_checksum``) and may train its encoder alone (``trainable = "encoder"``): the
decoder then stays bit for bit that of the starting model, so the latent space, what it can draw
and every tracker built on it stay as they were, while the encoder learns to land closer in it.
The checkpoints record where the weights came from (``extra["init"]``), with every seed the
starting model was trained on, so that held-out evaluation avoids them too.

The recipe (:class:`RunConfig`, :func:`load_run_config`) is in
:mod:`latenttune.model.training_config`. Two files come out: ``out`` holds the best weights so far (by validation loss) and is what
``--model PATH`` loads; ``out.last.pt`` (next to it) also holds the optimiser and step for
``--resume``. Both are written atomically.

Multi-GPU / multi-node: launch with ``torchrun --nproc_per_node G -m latenttune.cli train ...``;
the process group comes from torchrun's environment (``nccl`` on CUDA, ``gloo`` on CPU), each
rank trains on its own pairs and DDP averages gradients, and only rank 0 writes files. At each
checkpoint the ranks' weight checksums are gathered into ``extra["rank_checksums"]`` (they must
all be equal) and each rank's perturbation-generator state into ``extra_state["noise_by_rank"]``,
so that a resumed DDP run continues every rank's own random stream.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latenttune.limits import check_allocation
from latenttune.model.crystal import PhysicalLayout, parameter_loss, physical_targets
from latenttune.model.losses import LossWeights, centre_density, centre_shifts, reciprocal_loss, smoothness_loss, twin_aware_loss
from latenttune.model.checkpoint import load_checkpoint, model_path, save_checkpoint, state_checksum
from latenttune.model.network import LatentAutoencoder
from latenttune.model.training_config import RunConfig, TrainConfig, load_run_config
from latenttune.validation import check_choice
from sim.training import TrainingPairGenerator

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "RunConfig", "TrainProgress", "TrainResult", "load_run_config", "train", "last_path",
           "training_seeds", "check_training_memory"]


def last_path(out: str | Path) -> Path:
    """The resumable ``last`` checkpoint that goes with the best checkpoint ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".last" + (out.suffix or ".pt"))


@dataclass(frozen=True)
class TrainProgress:
    """Reported to the callback after every step (``validation`` only after a validation)."""

    step: int
    steps: int
    loss: float
    lr: float
    elapsed_s: float
    validation: dict[str, float] | None = None


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train` (scipy-style vocabulary)."""

    out: Path
    nit: int
    fun: float
    validation: dict[str, float]
    elapsed_s: float
    status: int
    message: str


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


class _PairBatches(torch.utils.data.Dataset):
    """Batch number ``j`` -> the stacked pairs ``j B ... j B + B - 1`` (workers share nothing)."""

    def __init__(self, generator: TrainingPairGenerator, batch_size: int, layout: PhysicalLayout | None = None) -> None:
        self.generator = generator
        self.batch_size = batch_size
        self.layout = layout

    def __len__(self) -> int:  # pragma: no cover - sampler drives the indices
        return 2**62

    def __getitem__(self, j: int) -> Batch:
        return _stack([self.generator.sample(j * self.batch_size + i) for i in range(self.batch_size)], self.layout)


def _stack(pairs: list[Any], layout: PhysicalLayout | None = None) -> Batch:
    """Tensors of a list of pairs: intensity, centred density, mask and the physical targets.

    The targets (:func:`latenttune.model.crystal.physical_targets`, stacked per key) are empty unless
    ``layout`` is given; they follow the density's centring roll.
    """
    intensity = torch.from_numpy(np.stack([p.intensity for p in pairs]).astype(np.float32))
    density = torch.from_numpy(np.stack([p.density for p in pairs]).astype(np.complex64))
    mask = torch.from_numpy(np.stack([p.mask for p in pairs]).astype(bool))
    shifts = centre_shifts(density)
    targets: dict[str, torch.Tensor] = {}
    if layout is not None:
        per_pair = [physical_targets(p.descriptor, shift, layout) for p, shift in zip(pairs, shifts)]
        targets = {key: torch.from_numpy(np.stack([t[key] for t in per_pair])) for key in per_pair[0]}
    return intensity, centre_density(density, shifts), mask, targets


def _to(batch: Batch, device: torch.device) -> Batch:
    intensity, density, mask, targets = batch
    return (intensity.to(device, non_blocking=True), density.to(device, non_blocking=True),
            mask.to(device, non_blocking=True), {k: v.to(device, non_blocking=True) for k, v in targets.items()})


def _losses(
    model: nn.Module, batch: Batch, weights: LossWeights, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    intensity, target, mask, targets = batch
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    z, pred = model(intensity, mask)
    layout = core.physical_layout
    supervised = None
    if layout is not None and targets and weights.physical > 0:
        supervised = weights.physical * parameter_loss(z[:, : layout.size], targets, layout)
    real = twin_aware_loss(pred, target, weights, supervised)
    recip = reciprocal_loss(pred, intensity, mask)
    terms = {"amplitude": real["amplitude"].mean(), "phase": real["phase"].mean(), "reciprocal": recip.mean()}
    if supervised is not None:
        terms["physical"] = real["extra"].mean() / weights.physical
    loss = real["loss"].mean() + weights.reciprocal * terms["reciprocal"]
    if weights.smoothness > 0:
        smooth = smoothness_loss(core.decode_tensor, z, weights.smoothness_step, pred, generator).mean()
        terms["smoothness"] = smooth
        loss = loss + weights.smoothness * smooth
    terms["loss"] = loss
    return terms


@torch.no_grad()
def _validate(model: LatentAutoencoder, batches: list[Batch], weights: LossWeights) -> dict[str, float]:
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    generator = torch.Generator().manual_seed(0)
    for batch in batches:
        terms = _losses(model, batch, weights, generator)
        size = batch[0].shape[0]
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * size
        count += size
    model.train()
    return {name: value / count for name, value in sums.items()}


def _distributed() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


def check_training_memory(config: RunConfig) -> None:
    """Refuse a run whose model and batch cannot fit in memory, before any tensor of it is made.

    The model is built on torch's ``meta`` device (no memory) to count its weights; the lower bound
    is the weights with their gradients and two AdamW moments, plus one batch of input patterns and
    the first convolution's output (float32).

    Raises
    ------
    ValueError
        The bound exceeds the machine's free memory or the process's address-space limit (named).
    """
    with torch.device("meta"):
        weights = sum(p.numel() for p in LatentAutoencoder(config.model).parameters())
    m, batch = config.model, config.train.batch_size
    grid = m.encoder_grid
    need = 4 * (4 * weights + batch * grid**3 * (2 + m.encoder_channels[0]))
    check_allocation(f"training the [model] table ({weights:,} weights, n = {m.n}) with `train.batch_size` {batch}",
                     need, "choose a smaller `model.hidden`, fewer channels, a smaller `model.n` or "
                           "`train.batch_size`")


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    device: str = "cpu",
    callback: Callable[[TrainProgress], bool | None] | None = None,
) -> TrainResult:
    """Train an autoencoder and write its best and last checkpoints.

    Parameters
    ----------
    config : RunConfig
        Model, data and optimisation settings.
    out : str or Path
        Best checkpoint; ``last_path(out)`` holds the resumable state.
    resume : bool
        Continue from ``last_path(out)``. The config must be the same except ``train.steps``,
        which may change to lengthen or shorten the schedule (the cosine decay is recomputed).
    device : {"cpu", "cuda"}
        Where to train. Under torchrun each rank uses ``cuda:LOCAL_RANK``.
    callback : callable, optional
        Called with a :class:`TrainProgress` after every step; returning True stops training
        (the last checkpoint is written first).

    Returns
    -------
    TrainResult
    """
    check_choice("device", device, ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`device` is 'cuda' but torch sees no CUDA device")
    out = Path(out)
    rank, world = _distributed()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device("cpu")
    tc = config.train
    check_training_memory(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        model = LatentAutoencoder(config.model)
    origin = _initialise(model, config) if tc.init_from and not resume else None
    if tc.trainable == "encoder":
        model.decoder.requires_grad_(False)
    model.to(torch_device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=tc.lr, weight_decay=tc.weight_decay)
    noise = torch.Generator().manual_seed(tc.seed * 1_000_003 + rank)
    start_step, best, history, elapsed_before = 0, math.inf, [], 0.0
    recipe = config.to_dict()
    if resume:
        state = _load_last(last_path(out), recipe)
        model.load_state_dict(state["state_dict"])
        optimiser.load_state_dict(state["extra_state"]["optimiser"])
        noise_by_rank = state["extra_state"].get("noise_by_rank")
        # each rank continues its own perturbation stream (rank 0's alone in a single-process run)
        noise.set_state(noise_by_rank[rank] if noise_by_rank and len(noise_by_rank) == world else state["extra_state"]["noise"])
        start_step = state["extra"]["step"]
        origin = state["extra"].get("init")
        best = state["extra"].get("best_val_loss", math.inf)
        history = state["extra"].get("history", [])
        elapsed_before = state["extra"].get("elapsed_s", 0.0)
        log.info("resuming from step %d of %d", start_step, tc.steps)
    ddp = model
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[torch_device.index] if device == "cuda" else None)

    val_generator = dataclasses.replace(config.data, seed=tc.val_seed)
    layout = model.physical_layout
    val_batches = [
        _to(_stack([val_generator.sample(i) for i in range(j, min(j + tc.batch_size, tc.val_samples))], layout), torch_device)
        for j in range(0, tc.val_samples, tc.batch_size)
    ]
    sampler = [(s * world + rank) for s in range(start_step, tc.steps)]
    loader = torch.utils.data.DataLoader(
        _PairBatches(config.data, tc.batch_size, layout),
        batch_size=None,
        sampler=sampler,
        num_workers=tc.num_workers,
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    step = start_step
    validation: dict[str, float] = history[-1]["validation"] if history else {}
    status, message, last_loss = 0, "completed all steps", math.nan
    for batch in loader:
        lr = tc.learning_rate(step)
        for group in optimiser.param_groups:
            group["lr"] = lr
        batch = _to(batch, torch_device)
        terms = _losses(ddp, batch, tc.loss, noise)
        optimiser.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if tc.grad_clip > 0:
            nn.utils.clip_grad_norm_(parameters, tc.grad_clip)
        optimiser.step()
        step += 1
        last_loss = float(terms["loss"].detach())
        if not math.isfinite(last_loss):
            status, message = 2, f"loss became non-finite at step {step}"
            log.error(message)
            break
        report = None
        if step % tc.eval_every == 0 or step == tc.steps:
            validation = _validate(model, val_batches, tc.loss)
            elapsed = elapsed_before + time.perf_counter() - t0
            history.append({"step": step, "train_loss": last_loss, "validation": validation, "elapsed_s": elapsed})
            log.info("step %d: train loss %.4f, validation %s", step, last_loss, validation)
            extra = _extra(step, best, history, elapsed, torch_device, origin)
            ranks = _gather_ranks(model, noise, world)
            if rank == 0 and validation["loss"] < best:
                best = validation["loss"]
                extra["best_val_loss"] = best
                save_checkpoint(out, model, recipe=recipe, extra={**extra, **ranks["extra"]})
            extra["best_val_loss"] = best
            _save_last(rank, out, model, optimiser, noise, recipe, extra, ranks)
            report = validation
        if callback is not None and callback(
            TrainProgress(step, tc.steps, last_loss, lr, elapsed_before + time.perf_counter() - t0, report)
        ):
            status, message = 1, f"stopped by the callback at step {step}"
            if report is None:  # the last checkpoint is not at this step yet: write it before stopping
                elapsed = elapsed_before + time.perf_counter() - t0
                ranks = _gather_ranks(model, noise, world)
                _save_last(rank, out, model, optimiser, noise, recipe,
                           _extra(step, best, history, elapsed, torch_device, origin), ranks)
            break
    elapsed = elapsed_before + time.perf_counter() - t0
    if world > 1:
        torch.distributed.barrier()
    return TrainResult(out=out, nit=step, fun=last_loss, validation=validation, elapsed_s=elapsed, status=status, message=message)


def _gather_ranks(model: nn.Module, noise: torch.Generator, world: int) -> dict[str, Any]:
    """Every rank's weight checksum and perturbation-generator state (collective when ``world > 1``).

    The checksums (``extra["rank_checksums"]``) show that the DDP ranks hold the same weights; the
    generator states (``extra_state["noise_by_rank"]``) let each rank resume its own stream.
    """
    if world == 1:
        return {"extra": {}, "extra_state": {}}
    # Buffers (the latent batch norm's running statistics) are updated by each rank's own batches;
    # DDP re-broadcasts them from rank 0 at the next forward, so do it now before they are saved.
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, src=0)
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, (state_checksum(model.state_dict()), noise.get_state()))
    return {
        "extra": {"rank_checksums": [checksum for checksum, _ in gathered]},
        "extra_state": {"noise_by_rank": [state for _, state in gathered]},
    }


def _save_last(
    rank: int,
    out: Path,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    noise: torch.Generator,
    recipe: dict[str, Any],
    extra: dict[str, Any],
    ranks: dict[str, Any],
) -> None:
    """Write the resumable ``last`` checkpoint (rank 0 only)."""
    if rank != 0:
        return
    save_checkpoint(
        last_path(out),
        model,
        recipe=recipe,
        extra={**extra, **ranks["extra"]},
        extra_state={"optimiser": optimiser.state_dict(), "noise": noise.get_state(), **ranks["extra_state"]},
    )


def _extra(
    step: int, best: float, history: list[dict[str, Any]], elapsed: float, device: torch.device, origin: dict[str, Any] | None
) -> dict[str, Any]:
    hardware = platform.processor() or platform.machine()
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    extra = {
        "step": step,
        "best_val_loss": best,
        "history": history,
        "elapsed_s": elapsed,
        "hardware": f"{hardware}, {os.cpu_count()} CPU cores",
        "torch": torch.__version__,
    }
    if origin is not None:
        extra["init"] = origin
    return extra


def _initialise(model: LatentAutoencoder, config: RunConfig) -> dict[str, Any]:
    """Load ``train.init_from``'s weights into ``model``.

    Returns
    -------
    dict
        Where the weights came from, stored as the checkpoints' ``extra["init"]``: ``path``,
        ``checksum`` and the ``seeds`` (data and validation) the starting model was trained on,
        its own starting model's included, so that held-out evaluation can avoid all of them.
    """
    tc = config.train
    path = model_path(tc.init_from)
    state = load_checkpoint(path)
    if state["config"].to_dict() != config.model.to_dict():
        raise ValueError(f"`train.init_from` {str(path)!r} has model config {state['config'].to_dict()}, "
                         f"which differs from [model] {config.model.to_dict()}")
    if tc.init_checksum and state["checksum"] != tc.init_checksum:
        raise ValueError(f"`train.init_from` {str(path)!r} has weights checksum {state['checksum']!r}, "
                         f"but `train.init_checksum` requires {tc.init_checksum!r}")
    model.load_state_dict(state["state_dict"])
    log.info("initialised from %s (checksum %s); training %s", path, state["checksum"], tc.trainable)
    return {"path": str(path), "checksum": str(state["checksum"]), "seeds": sorted(training_seeds(state["recipe"], state["extra"]))}


def training_seeds(recipe: dict[str, Any], extra: dict[str, Any]) -> set[int]:
    """Every data and validation seed a checkpoint's weights were trained on (its starting model's too).

    Parameters
    ----------
    recipe, extra : dict
        A checkpoint's ``recipe`` and ``extra`` (:func:`latenttune.model.load_checkpoint`).
    """
    run = RunConfig.from_dict(recipe) if recipe else RunConfig()  # no recipe: the defaults it was built with
    return {run.data.seed, run.train.val_seed} | {int(s) for s in extra.get("init", {}).get("seeds", [])}


def _without_steps(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe without ``train.steps``: a resumed run may lengthen or shorten its schedule."""
    train_table = {k: v for k, v in recipe.get("train", {}).items() if k != "steps"}
    return {**recipe, "train": train_table}


def _load_last(path: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {str(path)!r} does not exist (train without --resume first)")
    state = load_checkpoint(path)
    if _without_steps(state["recipe"]) != _without_steps(recipe):
        raise ValueError(f"cannot resume from {str(path)!r}: it was trained with a different config")
    stored_steps = state["recipe"].get("train", {}).get("steps")
    done = state["extra"]["step"]
    if stored_steps != recipe["train"]["steps"]:
        if recipe["train"]["steps"] <= done:
            raise ValueError(
                f"`steps` must exceed the {done} steps {str(path)!r} has already done, got {recipe['train']['steps']}"
            )
        log.warning("schedule changed on resume: %s -> %d steps in all (the cosine decay is recomputed "
                    "from step %d on)", stored_steps, recipe["train"]["steps"], done)
    if "optimiser" not in state.get("extra_state", {}):
        raise ValueError(f"cannot resume from {str(path)!r}: it holds no optimiser state")
    return state
