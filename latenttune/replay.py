"""Track a stored series and write the results frame by frame (``latenttune replay`` / ``track``).

:func:`replay_series` runs :func:`latenttune.tracking.track` over a
:class:`latenttune.io.Series` and appends every frame to a results file
(:class:`latenttune.io.ResultWriter`: ``OUT.partial``, flushed per frame, renamed to ``OUT`` at the
end). Each frame also stores its index in the series and the strategy's state (JSON), so
``resume=True`` continues an interrupted run exactly where it stopped: nothing lost, nothing
duplicated, and the same costs as an uninterrupted run. When the series carries ground truth, the real-space error ``E_r``, the
amplitude error ``E_q`` and the phase RMS are stored per frame too.

The live demo (``latenttune track``) simulates a series and then replays it through this same
function, so replaying a recorded run reproduces its costs exactly.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.frame_policy import no_usable_frame_error
from latenttune.io import ResultsFileError, ResultWriter, Series, open_series, read_results
from latenttune.io.identity import (
    DIGEST_FIELD,
    IDENTITY_ATTR,
    SETTINGS_ATTR,
    ReadDigest,
    check_resume,
    series_identity,
    strategy_settings,
)
from latenttune.metrics import amplitude_error, phase_rms, real_space_error
from latenttune.model import LoadedModel
from latenttune.outputs import check_outputs
from latenttune.physics import forward
from latenttune.refine import RefineSettings, refine_density
from latenttune.tracking import FrameRecord, Strategy, TrackResult, track

log = logging.getLogger(__name__)

__all__ = ["FrameReport", "replay_series", "versions"]


@dataclasses.dataclass(frozen=True)
class FrameReport:
    """A frame's record plus the truth metrics (NaN without ground truth)."""

    record: FrameRecord
    E_r: float
    E_q: float
    phase_rms: float
    E_r_refined: float = float("nan")

    def line(self) -> str:
        """One human-readable line."""
        r = self.record
        truth = "" if np.isnan(self.E_r) else f"  E_r {self.E_r:.4f}  phase RMS {self.phase_rms:.3f}"
        if not np.isnan(self.E_r_refined):
            truth += f"  refined E_r {self.E_r_refined:.4f}"
        return f"frame {r.index:4d}  cost {r.cost:.5f}  steps {r.steps:4d}  {r.seconds * 1e3:7.1f} ms{truth}  {r.status}"


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    out = {}
    for name in ("latenttune", "torch", "numpy", "scipy", "h5py"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out[name] = "unknown"
    return out


def _truth_metrics(series: Series, record: FrameRecord, intensity: np.ndarray, mask: np.ndarray,
                   density: np.ndarray | None = None) -> tuple[float, float, float]:
    """(E_r, E_q, phase RMS) of ``density`` (default: the record's) on the record's frame."""
    if record.status != "ok":
        return (np.nan, np.nan, np.nan)
    density = record.density if density is None else density
    e_q = float(amplitude_error(forward(density), intensity, mask))
    if not series.has_truth:
        return (np.nan, e_q, np.nan)
    truth = series.truth(record.index)
    alignment = real_space_error(truth, density)
    return (float(alignment.error), e_q, float(phase_rms(truth, alignment.aligned, align=False)))


def _refined_fields(series: Series, record: FrameRecord, intensity: np.ndarray, mask: np.ndarray,
                    settings: RefineSettings) -> dict[str, Any]:
    """The per-frame fields of the optional physics refinement (NaN/held on a skipped frame)."""
    if record.status != "ok":
        refined, seconds = record.density, 0.0
    else:
        start = time.perf_counter()
        refined = refine_density(record.density, intensity, mask, settings)
        seconds = time.perf_counter() - start
    e_r, e_q, _ = _truth_metrics(series, record, intensity, mask, refined)
    return {"refined_density": refined, "refined_seconds": seconds, "E_r_refined": e_r, "E_q_refined": e_q}


def _settings(loaded: LoadedModel, strategy: Strategy, refine: RefineSettings | None) -> dict[str, Any]:
    """Every setting that changes the results (checked on resume, :mod:`latenttune.io.identity`)."""
    parameter = next(loaded.model.parameters(), None)
    return {
        **strategy_settings(strategy),
        "model_checksum": loaded.checksum,
        "refine": None if refine is None else dataclasses.asdict(refine),
        "device": "cpu" if parameter is None else parameter.device.type,
    }


def _load_state(strategy: Strategy, text: Any, partial: Path) -> None:
    """Restore the strategy's state stored in a row; a damaged state is a one-line error."""
    try:
        strategy.load_state_dict(json.loads(str(text)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ResultsFileError(partial, f"cannot resume: the stored strategy state cannot be loaded ({exc!r})") from None


def replay_series(
    series: Series | str | Path,
    loaded: LoadedModel,
    strategy: Strategy,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[FrameReport], bool | None] | None = None,
    attrs: dict[str, Any] | None = None,
    refine: RefineSettings | None = None,
) -> tuple[Path, TrackResult]:
    """Track every frame of ``series`` with ``strategy`` and write the results file ``out``.

    Parameters
    ----------
    series : Series or path
        A series (:func:`latenttune.io.open_series` accepts CXI files in both layouts, directories of
        cohere-style frames and ``.npy`` stacks).
    loaded : LoadedModel
        The model (:func:`latenttune.model.load_model`).
    strategy : Strategy
        A fresh strategy (its state is restored from the file on resume).
    out : str or Path
        Results file.
    resume : bool
        Continue ``out.partial`` from its last complete frame. Refused (one-line
        :class:`~latenttune.io.ResultsFileError`) unless the series (path, uid, and the content of
        every frame already read) and every setting that changes the results are the same
        (:func:`latenttune.io.identity.check_resume`).
    overwrite : bool
        Replace an existing ``out``.
    callback : callable, optional
        ``callback(report)`` after each frame; returning True stops (the partial file stays resumable).
    attrs : dict, optional
        Extra attributes for the results file.
    refine : RefineSettings, optional
        Also refine each frame's decoded density with HIO/ER on the voxels
        (:func:`latenttune.refine.refine_density`, no network) and store ``refined_density``,
        ``refined_seconds``, ``E_r_refined`` and ``E_q_refined`` per frame. The tracking itself
        (latents, costs) is unchanged. Default: off.

    Returns
    -------
    (Path, TrackResult)
        The results path (``out`` when complete, ``out.partial`` when stopped early) and the
        frames processed in this call.

    Raises
    ------
    latenttune.frame_policy.NoUsableFrameError
        No frame of the series could be tracked (all skipped by the frame policy); no results
        file is left behind.
    """
    if refine is not None and not isinstance(refine, RefineSettings):
        raise TypeError(f"`refine` must be None or a RefineSettings, got {type(refine).__name__}")
    own_series = not isinstance(series, Series)
    check_outputs({"`out`": Path(out), "`out`.partial": Path(f"{out}.partial")},  # never write over the input
                  {"the series": series if own_series else series.path}, overwrite=True)
    series = open_series(series) if own_series else series
    out = Path(out)
    if out.exists() and not overwrite and not resume:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    model = loaded.model
    if series.N != model.config.N:
        raise ValueError(
            f"`series` has diffraction grid N = {series.N} but the model expects N = {model.config.N} (n = {model.config.n})"
        )
    steps = int(getattr(strategy, "steps_per_frame", 1))
    file_attrs = {
        "model_checksum": loaded.checksum,
        "model_path": str(loaded.path),
        "strategy": strategy.name,
        "uses_network_gradient": bool(strategy.uses_network_gradient),
        "steps_per_frame": steps,
        "controller": json.dumps(strategy.state_dict()),
        "series": str(series.path),
        "versions": json.dumps(versions()),
        "refine": json.dumps(None if refine is None else dataclasses.asdict(refine)),
        IDENTITY_ATTR: series_identity(series),
        SETTINGS_ATTR: _settings(loaded, strategy, refine),
        **(attrs or {}),
    }
    start, held = 0, None
    try:  # on resume: same series, same content so far, same settings, or a one-line refusal
        digest = check_resume(out, file_attrs, series, ("strategy_state", "latent")) if resume else ReadDigest()
        writer = ResultWriter(out, n=model.config.n, k=model.latent_dim, attrs=file_attrs, resume=resume,
                              overwrite=overwrite)
    except BaseException:
        if own_series:
            series.close()
        raise
    try:
        if resume and writer.num_frames_written:
            rows = writer.num_frames_written
            previous = read_results(writer.partial_path)
            # a bad leading frame gets no row, so continue after the last frame written, not after `rows`
            start = int(previous["index"][rows - 1]) + 1 if "index" in previous else rows
            _load_state(strategy, previous["strategy_state"][rows - 1], writer.partial_path)
            held = np.asarray(previous["latent"][rows - 1], dtype=np.float64)
            log.info("resuming %s at frame %d of %d", out, start, len(series))
        if digest.next_index != start:  # pragma: no cover - both come from the same rows
            raise ResultsFileError(writer.partial_path, f"cannot resume: rows end at frame {start - 1}, the "
                                   f"series digest at frame {digest.next_index - 1}")
        frames = digest.frames(series)  # from `start` on, each folded into the series digest
        stopped = {"flag": False}

        def on_frame(record: FrameRecord) -> bool:
            frame = series[record.index]
            e_r, e_q, p_rms = _truth_metrics(series, record, frame.intensity, frame.mask)
            refined = {} if refine is None else _refined_fields(series, record, frame.intensity, frame.mask, refine)
            step_costs = np.full(steps, np.nan, dtype=np.float32)
            step_costs[: record.steps] = record.step_costs[:steps]
            writer.append(
                latent=record.latent.astype(np.float32),
                cost=np.float32(record.cost),
                density=record.density,
                time=record.time,
                steps=record.steps,
                index=record.index,
                step_costs=step_costs,
                encoded=record.encoded.astype(np.float32),
                seconds=record.seconds,
                status=record.status,
                strategy_state=json.dumps(record.state),
                E_r=e_r,
                E_q=e_q,
                phase_rms=p_rms,
                **refined,
                **{DIGEST_FIELD: digest.at(record.index)},
            )
            report = FrameReport(record, e_r, e_q, p_rms, refined.get("E_r_refined", float("nan")))
            if callback is not None and callback(report):
                stopped["flag"] = True
                return True
            return False

        result = track(frames, model, strategy, callback=on_frame, start_index=start, held_latent=held)
        if not stopped["flag"] and writer.num_frames_written == 0:
            writer.discard()  # nothing to keep: no file marked complete with no frame in it
            raise no_usable_frame_error(series)
    except BaseException:
        writer.abort()
        raise
    finally:
        if own_series:
            series.close()
    if stopped["flag"]:
        writer.abort()
        return writer.partial_path, result
    return writer.close(), result
