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
import os
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
from latenttune.model.checkpoint import LoadedModel
from latenttune.outputs import check_outputs
from latenttune.physics import forward
from latenttune.tracking import FrameRecord, Strategy, TrackResult, track
from latenttune.model.views import check_view_index, check_views

log = logging.getLogger(__name__)

__all__ = ["FrameReport", "frame_line", "replay_series", "versions"]


def frame_line(index: int, cost: float, steps: int, seconds: float, status: str, extra: str = "") -> str:
    """The one line a tracked frame prints, wherever it was tracked (replay, track, a Bluesky run)."""
    return f"frame {index:4d}  cost {cost:.5f}  steps {steps:4d}  {seconds * 1e3:7.1f} ms{extra}  {status}"


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
        if r.physics is not None:
            p = r.physics
            kept = "refined" if p.accepted else "decoded kept"
            restarted = f", restarted {p.restarts}x, kept {p.start}" if p.restarts else ""
            stagnated = ", stagnated" if p.stagnated else ""
            truth += (f"  hybrid{'' if np.isnan(self.E_r_refined) else f' E_r {self.E_r_refined:.4f}'} ({kept}, "
                      f"LLK {p.llk:.2f}{restarted}{stagnated})")
        return frame_line(r.index, r.cost, r.steps, r.seconds, r.status, truth)


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


def _physics_fields(series: Series, record: FrameRecord, intensity: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The per-frame fields of hybrid tracking's physics stage (held output and NaN on a skipped frame).

    ``refined_density`` is the frame's reconstruction (the refined density when it was accepted,
    else the decoded one; :attr:`FrameRecord.output_density`), ``refined_accepted`` says which;
    ``refined_warm`` is 1 when the stage started from the previous frame's output, ``refined_start``
    names the start of the kept refinement (``warm``, ``decoded`` or a restart's,
    :data:`latenttune.tracking.physics_stage.RESTART_STARTS`), ``refined_restarts`` counts the restarts run, and
    ``llk`` is the Poisson log-likelihood of ``refined_density`` (about 1 at the noise level).
    """
    outcome = record.physics
    nan = float("nan")
    e_r, e_q, _ = _truth_metrics(series, record, intensity, mask, record.output_density)
    return {
        "refined_density": record.output_density,
        "refined_accepted": np.int8(outcome is not None and outcome.accepted),
        "refined_warm": np.int8(outcome is not None and outcome.warm),
        "refined_start": "" if outcome is None else outcome.start,
        "refined_restarts": np.int8(0 if outcome is None else outcome.restarts),
        "refined_seconds": nan if outcome is None else outcome.seconds,
        "llk": nan if outcome is None else outcome.llk,
        "misfit_refined": nan if outcome is None else outcome.misfit_refined,
        "free_misfit_decoded": nan if outcome is None else outcome.free_misfit_decoded,
        "free_misfit_refined": nan if outcome is None else outcome.free_misfit_refined,
        "E_r_refined": e_r,
        "E_q_refined": e_q,
    }


def _settings(loaded: LoadedModel, strategy: Strategy, views: int) -> dict[str, Any]:
    """Every setting that changes the results (checked on resume, :mod:`latenttune.io.identity`)."""
    parameter = next(loaded.model.parameters(), None)
    physics = getattr(strategy, "physics", None)
    return {
        **strategy_settings(strategy),
        **({"views": views} if views > 1 else {}),  # absent for 1, so older results files still resume
        "model_checksum": loaded.checksum,
        "physics": None if physics is None else dataclasses.asdict(physics),
        "device": "cpu" if parameter is None else parameter.device.type,
    }


def _frame_range(frames: tuple[int, int | None] | None, length: int) -> tuple[int, int]:
    """``frames`` checked against a series of ``length`` frames: ``(first, stop)``."""
    if frames is None:
        return 0, length
    try:
        first, stop = frames
    except (TypeError, ValueError):
        raise TypeError(f"`frames` must be None or a pair (start, stop), got {frames!r}") from None
    stop = length if stop is None else stop
    for name, value in (("start", first), ("stop", stop)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"`frames` {name} must be an integer >= 0, got {value!r}")
    if not first < stop:
        raise ValueError(f"`frames` must have start < stop, got {first}:{stop}")
    if stop > length:
        raise ValueError(f"`frames` {first}:{stop} reaches beyond the series: it has {length} frame(s), 0 to "
                         f"{length - 1}")
    return int(first), int(stop)


def _recorded_path(series_path: Path, out: str | Path) -> str:
    """How a results file at ``out`` records its series: relative to its own folder (a URL as it is)."""
    text = str(series_path)
    if "://" in text:
        return text
    source, folder = Path(text).resolve(), Path(out).resolve().parent
    try:
        return os.path.relpath(source, folder)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(source)


def _load_state(strategy: Strategy, text: Any, partial: Path) -> int:
    """Restore the strategy's state stored in a row and return the run's view; a damaged state is a one-line error."""
    try:
        state = json.loads(str(text))
        strategy.load_state_dict(state)
        view = state.get("view", 0)  # rows written before views existed: the identity
        check_view_index(view)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ResultsFileError(partial, f"cannot resume: the stored strategy state cannot be loaded ({exc!r})") from None
    return int(view)


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
    frames: tuple[int, int | None] | None = None,
    views: int = 1,
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
    frames : (start, stop), optional
        Track only the series frames ``start`` to ``stop - 1`` (``stop`` None: to the end), as
        ``latenttune replay --frames START:STOP``; rows keep their series frame numbers. The range is
        one of the settings a resume must repeat.
    views : {1, 24, 48}
        Symmetric views of the first tracked frame to choose the model's view from
        (:mod:`latenttune.model.views`; the run's view is stored in every row's ``strategy_state``, and a
        resume keeps it). One of the settings a resume must repeat.

    The results file records the series as ``series`` (its path relative to the results file's
    folder, so the pair can move together; ``series_identity`` holds the absolute path).

    A hybrid strategy (:class:`latenttune.tracking.HybridStrategy`) also stores, per frame, the
    physics stage's output ``refined_density`` (the frame's reconstruction), ``refined_accepted``
    (1 when the refined density replaced the decoded one), ``refined_seconds``, the misfits
    ``misfit_refined``, ``free_misfit_decoded`` and ``free_misfit_refined``, and ``E_r_refined`` /
    ``E_q_refined``; ``density``, ``cost``, ``E_r`` and ``E_q`` stay those of the decoded latent. On
    resume the last stored output is the physics stage's warm start.

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
    first, stop = _frame_range(frames, len(series))
    steps = int(getattr(strategy, "steps_per_frame", 1))
    physics = getattr(strategy, "physics", None)
    views = check_views(views)
    settings = _settings(loaded, strategy, views)
    if frames is not None:
        settings["frames"] = [first, stop]
    file_attrs = {
        "model_checksum": loaded.checksum,
        "model_path": str(loaded.path),
        "strategy": strategy.name,
        "uses_network_gradient": bool(strategy.uses_network_gradient),
        "steps_per_frame": steps,
        "controller": json.dumps(strategy.state_dict()),
        "series": _recorded_path(series.path, out),
        "versions": json.dumps(versions()),
        "physics": json.dumps(None if physics is None else dataclasses.asdict(physics)),
        IDENTITY_ATTR: series_identity(series),
        SETTINGS_ATTR: settings,
        **(attrs or {}),
    }
    start, held, held_output, view = first, None, None, 0
    try:  # on resume: same series, same content so far, same settings, or a one-line refusal
        digest = (check_resume(out, file_attrs, series, ("strategy_state", "latent"), first=first) if resume
                  else ReadDigest(next_index=first))
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
            view = _load_state(strategy, previous["strategy_state"][rows - 1], writer.partial_path)
            held = np.asarray(previous["latent"][rows - 1], dtype=np.float64)
            if physics is not None and "refined_density" in previous:
                held_output = np.asarray(previous["refined_density"][rows - 1])
            log.info("resuming %s at frame %d of %d", out, start, len(series))
        if digest.next_index != start:  # pragma: no cover - both come from the same rows
            raise ResultsFileError(writer.partial_path, f"cannot resume: rows end at frame {start - 1}, the "
                                   f"series digest at frame {digest.next_index - 1}")
        todo = digest.frames(series, stop)  # from `start` on, each folded into the series digest
        stopped = {"flag": False}

        def on_frame(record: FrameRecord) -> bool:
            frame = series[record.index]
            e_r, e_q, p_rms = _truth_metrics(series, record, frame.intensity, frame.mask)
            refined = {} if physics is None else _physics_fields(series, record, frame.intensity, frame.mask)
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

        # a fresh run (no row yet) starts the strategy from the encoder, whatever its first frame
        result = track(todo, model, strategy, callback=on_frame, start_index=start if writer.num_frames_written else 0,
                       held_latent=held, held_output=held_output, views=views, view=view)
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
