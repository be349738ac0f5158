"""One-shot evaluation of a model on held-out simulated samples (``latenttune evaluate``).

For each held-out pair ``(intensity, mask, truth)`` drawn from the simulator with a seed that
training never used, the encoder predicts ``z`` and the decoder the density; we report the
real-space error ``E_r`` against the truth (global phase, subpixel shift and twin removed) and the
amplitude error ``E_q`` of the prediction's diffraction against the measured counts
(:mod:`latenttune.metrics`). The same figures for a trivial predictor, the mean training density
(centred, aligned the same way), say what the model adds.

With ``views`` > 1 the report also gives the one-shot prediction asked in that many symmetric
views of the pattern, the view chosen by the measured misfit alone
(:func:`latenttune.model.views.choose_view`): the prediction the trackers start from with ``views=48``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from latenttune.model.encoders import choose_encoder
from latenttune.model.latent_cost import LatentCost
from latenttune.model.losses import centre_density
from latenttune.metrics import amplitude_error, real_space_error
from latenttune.model.checkpoint import LoadedModel
from latenttune.physics import forward
from latenttune.model.training import training_seeds
from latenttune.model.training_config import RunConfig
from latenttune.model.views import check_views, choose_view
from latenttune.validation import check_int
from sim.training import TrainingPairGenerator

log = logging.getLogger(__name__)

__all__ = ["EvaluationReport", "evaluate_model", "mean_training_density", "held_out_generator"]


@dataclass(frozen=True)
class EvaluationReport:
    """Per-sample figures of a one-shot evaluation.

    Attributes
    ----------
    E_r, E_q : ndarray, shape (S,)
        Real-space and amplitude errors of the model's one-shot prediction (the identity view).
    E_r_views, E_q_views : ndarray, shape (S,)
        The same for the best of ``views`` views (equal to ``E_r``, ``E_q`` when ``views`` is 1).
    view_index : ndarray of int, shape (S,)
        The chosen view of each sample (0 = identity).
    seconds_per_view_choice : ndarray, shape (S,)
        Wall time of the choice among ``views`` views (encode, decode and score them all).
    E_r_trivial, E_q_trivial : ndarray, shape (S,)
        The same for the mean training density.
    seconds_per_prediction : ndarray, shape (S,)
        Wall time of encode + decode of one pattern.
    families : tuple of str
        Simulator family of each sample.
    seed : int
        Seed of the held-out samples.
    views : int
        How many views the choice tried.
    E_r_encoders, E_q_encoders : ndarray, shape (S,), or None
        A model with a cycle encoder: the same for the better-fitting of its two encoders' predictions
        (identity view; :func:`latenttune.model.encoders.choose_encoder`, what the trackers start from).
    encoder_index : ndarray of int, shape (S,), or None
        The chosen encoder of each sample (0 = the model's encoder, 1 = the cycle encoder).
    """

    E_r: np.ndarray
    E_q: np.ndarray
    E_r_views: np.ndarray
    E_q_views: np.ndarray
    view_index: np.ndarray
    seconds_per_view_choice: np.ndarray
    E_r_trivial: np.ndarray
    E_q_trivial: np.ndarray
    seconds_per_prediction: np.ndarray
    families: tuple[str, ...]
    seed: int
    views: int = 1
    E_r_encoders: np.ndarray | None = None
    E_q_encoders: np.ndarray | None = None
    encoder_index: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        """Medians and 90th percentiles (and the median time per prediction in ms)."""
        out: dict[str, float] = {"samples": float(len(self.E_r))}
        for name in ("E_r", "E_q", "E_r_views", "E_q_views", "E_r_trivial", "E_q_trivial"):
            values = getattr(self, name)
            out[f"{name}_median"] = float(np.median(values))
            out[f"{name}_p90"] = float(np.percentile(values, 90))
        out["ms_per_prediction_median"] = float(np.median(self.seconds_per_prediction) * 1e3)
        out["ms_per_view_choice_median"] = float(np.median(self.seconds_per_view_choice) * 1e3)
        out["views"] = float(self.views)
        out["identity_view_fraction"] = float(np.mean(self.view_index == 0))
        if self.E_r_encoders is not None:
            for name in ("E_r_encoders", "E_q_encoders"):
                out[f"{name}_median"] = float(np.median(getattr(self, name)))
                out[f"{name}_p90"] = float(np.percentile(getattr(self, name), 90))
            out["cycle_encoder_fraction"] = float(np.mean(self.encoder_index == 1))
        return out

    def table(self) -> str:
        """A small markdown table of the summary."""
        s = self.summary()
        rows = [
            "| predictor | median E_r | p90 E_r | median E_q | p90 E_q |",
            "| --- | --- | --- | --- | --- |",
            f"| encoder one-shot | {s['E_r_median']:.3f} | {s['E_r_p90']:.3f} | {s['E_q_median']:.3f} | {s['E_q_p90']:.3f} |",
        ]
        if self.views > 1:
            rows.append(f"| encoder one-shot, best of {self.views} views by measured misfit | "
                        f"{s['E_r_views_median']:.3f} | {s['E_r_views_p90']:.3f} | {s['E_q_views_median']:.3f} | "
                        f"{s['E_q_views_p90']:.3f} |")
        if self.E_r_encoders is not None:
            rows.append(f"| better of the two encoders by measured misfit (cycle encoder chosen for "
                        f"{s['cycle_encoder_fraction']:.0%}) | {s['E_r_encoders_median']:.3f} | {s['E_r_encoders_p90']:.3f} | "
                        f"{s['E_q_encoders_median']:.3f} | {s['E_q_encoders_p90']:.3f} |")
        rows += [
            f"| mean training density | {s['E_r_trivial_median']:.3f} | {s['E_r_trivial_p90']:.3f} | "
            f"{s['E_q_trivial_median']:.3f} | {s['E_q_trivial_p90']:.3f} |",
        ]
        return "\n".join(rows)


def held_out_generator(loaded: LoadedModel, seed: int) -> TrainingPairGenerator:
    """The model's training-data generator with another seed (checked against the training seeds)."""
    recipe = RunConfig.from_dict(loaded.recipe) if loaded.recipe else RunConfig(model=loaded.model.config)
    used = training_seeds(loaded.recipe, loaded.extra)
    if seed in used:
        raise ValueError(f"`seed` {seed} was used in training (training/validation seeds {sorted(used)}); pick another")
    return dataclasses.replace(recipe.data, seed=seed)


def mean_training_density(loaded: LoadedModel, samples: int = 64) -> np.ndarray:
    """Mean of centred training densities: the trivial predictor."""
    recipe = RunConfig.from_dict(loaded.recipe) if loaded.recipe else RunConfig(model=loaded.model.config)
    densities = torch.from_numpy(np.stack([recipe.data.sample(i).density for i in range(samples)]))
    return centre_density(densities).mean(dim=0).numpy()


def evaluate_model(
    loaded: LoadedModel,
    *,
    samples: int = 64,
    seed: int = 12345,
    views: int = 48,
    callback: Callable[[int, float, float], object] | None = None,
) -> EvaluationReport:
    """Evaluate the encoder's one-shot prediction on ``samples`` held-out pairs.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`latenttune.model.load_model`.
    samples : int
        Number of held-out pairs.
    seed : int
        Seed of the held-out pairs; must differ from the training and validation seeds.
    views : {1, 24, 48}
        Also report the best of this many symmetric views (:mod:`latenttune.model.views`); 1 = identity only.
    callback : callable, optional
        ``callback(index, E_r, E_q)`` after each sample (progress reporting; the best view's figures).
    """
    samples = check_int("samples", samples, low=1)
    views = check_views(views)
    generator = held_out_generator(loaded, seed)
    model = loaded.model
    trivial = mean_training_density(loaded)
    trivial_intensity = forward(trivial)
    per_sample: dict[str, list[float]] = {k: [] for k in ("E_r", "E_q", "E_r_views", "E_q_views", "view", "t_views",
                                                         "E_r_trivial", "E_q_trivial", "t", "E_r_encoders",
                                                         "E_q_encoders", "encoder")}
    families = []
    with torch.inference_mode():
        for i in range(samples):
            pair = generator.sample(i)
            start = time.perf_counter()
            z = model.encode(pair.intensity, pair.mask)
            prediction = model.decode(z)[0].cpu().numpy()
            per_sample["t"].append(time.perf_counter() - start)
            per_sample["E_r"].append(real_space_error(pair.density, prediction).error)
            per_sample["E_q"].append(amplitude_error(forward(prediction), pair.intensity, pair.mask))
            if views > 1:
                start = time.perf_counter()
                choice = choose_view(model, pair.intensity, pair.mask, views=views)
                per_sample["t_views"].append(time.perf_counter() - start)
                per_sample["view"].append(choice.index)
                per_sample["E_r_views"].append(real_space_error(pair.density, choice.density).error)
                per_sample["E_q_views"].append(amplitude_error(forward(choice.density), pair.intensity, pair.mask))
            else:
                per_sample["t_views"].append(per_sample["t"][-1])
                per_sample["view"].append(0)
                per_sample["E_r_views"].append(per_sample["E_r"][-1])
                per_sample["E_q_views"].append(per_sample["E_q"][-1])
            if model.encoder_count > 1:
                pick = choose_encoder(model, LatentCost(model, pair.intensity, pair.mask))
                picked = prediction if pick.index == 0 else model.decode(pick.latent)[0].cpu().numpy()
                per_sample["encoder"].append(pick.index)
                per_sample["E_r_encoders"].append(real_space_error(pair.density, picked).error)
                per_sample["E_q_encoders"].append(amplitude_error(forward(picked), pair.intensity, pair.mask))
            per_sample["E_r_trivial"].append(real_space_error(pair.density, trivial).error)
            per_sample["E_q_trivial"].append(amplitude_error(trivial_intensity, pair.intensity, pair.mask))
            families.append(str(pair.family))
            log.debug("sample %d (%s): E_r %.4f E_q %.4f (best view %d: E_r %.4f)", i, pair.family, per_sample["E_r"][-1],
                      per_sample["E_q"][-1], per_sample["view"][-1], per_sample["E_r_views"][-1])
            if callback is not None:
                callback(i, per_sample["E_r_views"][-1], per_sample["E_q_views"][-1])
    return EvaluationReport(
        E_r=np.array(per_sample["E_r"]),
        E_q=np.array(per_sample["E_q"]),
        E_r_views=np.array(per_sample["E_r_views"]),
        E_q_views=np.array(per_sample["E_q_views"]),
        view_index=np.array(per_sample["view"], dtype=int),
        seconds_per_view_choice=np.array(per_sample["t_views"]),
        E_r_trivial=np.array(per_sample["E_r_trivial"]),
        E_q_trivial=np.array(per_sample["E_q_trivial"]),
        seconds_per_prediction=np.array(per_sample["t"]),
        families=tuple(families),
        seed=seed,
        views=views,
        **({} if model.encoder_count == 1 else {
            "E_r_encoders": np.array(per_sample["E_r_encoders"]), "E_q_encoders": np.array(per_sample["E_q_encoders"]),
            "encoder_index": np.array(per_sample["encoder"], dtype=int)}),
    )
