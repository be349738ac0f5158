"""Track a stored series and write the results frame by frame (``latenttune replay`` / ``track``).

:func:`replay_series` runs :func:`latenttune.tracking.track` over a
:class:`latenttune.io.Series` and appends every frame to a results file
(:class:`latenttune.io.ResultWriter`: ``OUT.partial``, flushed per frame, renamed to ``OUT`` at the
end). Each frame also stores its index in the series and the strategy's state (JSON), so
``resume=True`` continues an interrupted run exactly where it stopped: nothing lost, nothing
duplicated, and the same costs as an uninterrupted run. When the series carries ground truth, the real-space error ``E_r``, the
amplitude error ``E_q`` and the phase RMS are stored per frame too. Each frame is read from the
series once (the tracker's record carries it to the row) and its truth once.

The live demo (``latenttune track``) simulates a series and then replays it through this same
function, so replaying a recorded run reproduces its costs exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.frame_policy import no_usable_frame_error
from latenttune.geometry.record import MISSING_GEOMETRY, series_geometry
from latenttune.io import ResultsFileError, ResultWriter, Series, open_series, read_results
from latenttune.io.identity import IDENTITY_ATTR, SETTINGS_ATTR, ReadDigest, check_resume, series_identity
from latenttune.io.rows import FrameRow, TruthMetrics
from latenttune.metrics import amplitude_error, phase_rms, real_space_error
from latenttune.model.checkpoint import LoadedModel
from latenttune.model.network import LatentAutoencoder
from latenttune.model.readout import read_out, readout_rows
from latenttune.model.views import check_view_index, check_views, viewed
from latenttune.outputs import check_outputs
from latenttune.physics import forward
from latenttune.postprocess.frames import FramePostprocessor, context_groups
from latenttune.postprocess.strain import StrainSettings
from latenttune.tracking.strategy import Strategy, check_strategy
from latenttune.tracking.tracker import FrameRecord, TrackResult, track
from latenttune.versions import versions

log = logging.getLogger(__name__)

__all__ = ["FrameReport", "frame_line", "replay_series"]


def frame_line(index: int, cost: float, steps: int, seconds: float, status: str, extra: str = "") -> str:
    """The one line a tracked frame prints, wherever it was tracked (replay, track, a Bluesky run)."""
    return f"frame {index:4d}  cost {cost:.5f}  steps {steps:4d}  {seconds * 1e3:7.1f} ms{extra}  {status}"


@dataclasses.dataclass(frozen=True)
class FrameReport:
    """A frame's record plus its row's metrics (NaN without ground truth)."""

    record: FrameRecord
    metrics: TruthMetrics
    output_metrics: TruthMetrics
    strain: str = ""

    def line(self) -> str:
        """One human-readable line."""
        r = self.record
        decoded, output = self.metrics.E_r, self.output_metrics.E_r
        truth = "" if np.isnan(decoded) else f"  E_r {decoded:.4f}  phase RMS {self.metrics.phase_rms:.3f}"
        if r.physics is not None:
            p = r.physics
            kept = "refined" if p.accepted else "decoded kept"
            restarted = f", restarted {p.restarts}x, kept {p.start}" if p.restarts else ""
            stagnated = ", stagnated" if p.stagnated else ""
            truth += (f"  hybrid{'' if np.isnan(output) else f' E_r {output:.4f}'} ({kept}, "
                      f"LLK {p.llk:.2f}, free LLK {p.llk_free:.2f}{restarted}{stagnated})")
        if r.readback is not None:  # how closely the latent follows the reconstruction (no truth needed)
            truth += f"  latent misfit {r.readback.misfit:.4f}"
            if r.readback.orientation_ties > 1:
                truth += f"  orientation: {r.readback.orientation_ties} readings tied, lowest surface energy kept"
        if self.strain:
            truth += f"  {self.strain}"
        return frame_line(r.index, r.cost, r.steps, r.seconds, r.status, truth)


def _metrics(density: np.ndarray, intensity: np.ndarray, mask: np.ndarray, truth: np.ndarray | None) -> TruthMetrics:
    """``E_r``, ``E_q`` and the phase RMS of ``density`` on a frame (``truth`` None: E_q only)."""
    e_q = float(amplitude_error(forward(density), intensity, mask))
    if truth is None:
        return TruthMetrics(E_q=e_q)
    alignment = real_space_error(truth, density)
    return TruthMetrics(E_r=float(alignment.error), E_q=e_q, phase_rms=float(phase_rms(truth, alignment.aligned,
                                                                                       align=False)))


def frame_row(series: Series, record: FrameRecord, digest: str, slots: int, hybrid: bool,
              model: LatentAutoencoder | None = None, post: FramePostprocessor | None = None) -> FrameRow:
    """A tracked frame's results row: the truth read once, metrics of the decoded density and the output.

    With ``model`` (the run's model) and a model with explicit crystal parameters, the row also
    carries the latent's physical readout (:mod:`latenttune.model.readout`, in the laboratory frame
    of the record's view); a skipped frame gets the readout of the latent it holds. With ``post``
    (a series with a measurement geometry), the row carries the reconstruction's displacement and
    strain (:mod:`latenttune.postprocess`). A series without ground truth gets no truth fields.
    """
    metrics = output_metrics = TruthMetrics()
    if record.status == "ok":
        frame = record.frame
        truth = series.truth(record.index) if series.has_truth else None
        metrics = _metrics(record.density, frame.intensity, frame.mask, truth)
        if hybrid:
            output_metrics = _metrics(record.output_density, frame.intensity, frame.mask, truth)
    readout = None
    if model is not None and model.physical_layout is not None:
        physical = read_out(record.latent, viewed(model, record.state.get("view", 0)), record.density)
        readout = None if physical is None else readout_rows(physical)
    strain = None
    if post is not None:
        shown = record.output_density if hybrid and record.output_density is not None else record.density
        strain = post.row(shown if record.status == "ok" else None, np.shape(record.density)[0])
    return FrameRow.from_record(record, slots=slots, digest=digest, metrics=metrics, output_metrics=output_metrics,
                                hybrid=hybrid, readout=readout, has_truth=series.has_truth, strain=strain)


def strain_words(row: FrameRow) -> str:
    """The frame line's strain part (empty without post-processing)."""
    if row.strain is None or not np.isfinite(row.strain["strain_mean"]):
        return ""
    text = f"strain {row.strain['strain_mean']:+.1e} +- {row.strain['strain_std']:.1e}"
    lattice = row.strain["lattice_strain"]
    return text + (f" (lattice {lattice:+.2e})" if np.isfinite(lattice) else "")


def run_postprocessor(series: Series, postprocess: bool | StrainSettings) -> tuple[FramePostprocessor | None, dict]:
    """The post-processor of a series with a measurement geometry (None without one, or when switched off)."""
    if postprocess is False:
        return None, {}
    found = series_geometry(series.metadata.get("root_attrs") or {})
    if found is None:
        log.info("%s", MISSING_GEOMETRY)
        return None, {}
    geometry, transform, resolution = found
    settings = postprocess if isinstance(postprocess, StrainSettings) else StrainSettings()
    post = FramePostprocessor(geometry, transform, settings)
    root = series.metadata.get("root_attrs") or {}
    groups = context_groups(geometry, transform, settings, resolution,
                            {k: root[k] for k in ("prepare_summary", "prepare_frames", "prepare_inputs") if k in root})
    attrs = {"geometry": geometry.to_dict(), "frame_transform": transform.to_dict(), "resolution": resolution,
             "postprocess_settings": dataclasses.asdict(settings)}
    return post, {"attrs": attrs, "groups": groups}


def _settings(loaded: LoadedModel, strategy: Strategy, views: int) -> dict[str, Any]:
    """Every setting that changes the results (checked on resume, :mod:`latenttune.io.identity`)."""
    parameter = next(loaded.model.parameters(), None)
    return {
        **strategy.describe().settings,
        **({"views": views} if views > 1 else {}),  # absent for 1, so older results files still resume
        "model_checksum": loaded.checksum,
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


def _load_state(strategy: Strategy, text: Any, output: np.ndarray | None, partial: Path) -> int:
    """Restore the strategy's state stored in a row and return the run's view; a damaged state is a one-line error."""
    try:
        state = json.loads(str(text))
        strategy.load_state_dict(state, previous_output=output)
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
    postprocess: bool | StrainSettings = True,
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
    postprocess : bool or StrainSettings
        When the series carries a measurement geometry (``latenttune prepare`` with one), turn each
        frame's reconstruction into displacement and strain (:mod:`latenttune.postprocess`; these
        settings, or the defaults for True) and store them and the geometry in the results file.
        False: never.

    The results file records the series as ``series`` (its path relative to the results file's
    folder, so the pair can move together; ``series_identity`` holds the absolute path).

    A strategy with a physics stage (:class:`latenttune.tracking.HybridStrategy`) also stores, per
    frame, the stage's fields (:mod:`latenttune.io.rows`): ``output_density`` (the frame's
    reconstruction), ``physics_accepted``, the misfits, ``llk``, ``E_r_output`` / ``E_q_output``;
    ``density``, ``cost``, ``E_r`` and ``E_q`` stay those of the decoded latent. On resume the last
    stored output is the physics stage's warm start.

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
    if not isinstance(loaded, LoadedModel):
        raise TypeError(f"`loaded` must be a LoadedModel (latenttune.model.load_model(...)), got "
                        f"{type(loaded).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be callable or None, got {type(callback).__name__}")
    own_series = not isinstance(series, Series)
    check_outputs({"`out`": Path(out), "`out`.partial": Path(f"{out}.partial")},  # never write over the input
                  {"the series": series if own_series else series.path}, overwrite=True,
                  kinds={"`out`": "results"})  # a results file is .h5: never named like an export or a movie
    model = loaded.model
    strategy = check_strategy(strategy, model.latent_dim)
    views = check_views(views)
    series = open_series(series) if own_series else series
    out = Path(out)
    if out.exists() and not overwrite and not resume:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    if series.N != model.config.N:
        raise ValueError(
            f"`series` has diffraction grid N = {series.N} but the model expects N = {model.config.N} (n = {model.config.n})"
        )
    first, stop = _frame_range(frames, len(series))
    description = strategy.describe()
    hybrid = strategy.has_physics_stage
    settings = _settings(loaded, strategy, views)
    if frames is not None:
        settings["frames"] = [first, stop]
    post, context = run_postprocessor(series, postprocess)
    file_attrs = {
        **context.get("attrs", {}),
        "model_checksum": loaded.checksum,
        "model_path": str(loaded.path),
        "strategy": description.name,
        "uses_network_gradient": description.uses_network_gradient,
        "steps_per_frame": description.steps_per_frame,
        "strategy_description": description.to_dict(),
        "controller": json.dumps(strategy.state_dict()),
        "series": _recorded_path(series.path, out),
        "versions": json.dumps(versions()),
        IDENTITY_ATTR: series_identity(series),
        SETTINGS_ATTR: settings,
        **(attrs or {}),
    }
    start, held, view = first, None, 0
    try:  # on resume: same series, same content so far, same settings, or a one-line refusal
        digest = (check_resume(out, file_attrs, series, ("strategy_state", "latent"), first=first) if resume
                  else ReadDigest(next_index=first))
        writer = ResultWriter(out, n=model.config.n, k=model.latent_dim, attrs=file_attrs, resume=resume,
                              overwrite=overwrite)
        if context and not resume:
            writer.write_groups(context["groups"])
    except BaseException:
        if own_series:
            series.close()
        raise
    try:
        if resume and writer.num_frames_written:
            previous = read_results(writer.partial_path)
            # a bad leading frame gets no row, so continue after the last frame written, not after the row count
            start = int(previous.index[-1]) + 1
            output = previous.density_at(-1) if hybrid and previous.has_physics else None
            view = _load_state(strategy, previous.strategy_state[-1], output, writer.partial_path)
            held = np.asarray(previous.latent[-1], dtype=np.float64)
            log.info("resuming %s at frame %d of %d", out, start, len(series))
        if digest.next_index != start:  # pragma: no cover - both come from the same rows
            raise ResultsFileError(writer.partial_path, f"cannot resume: rows end at frame {start - 1}, the "
                                   f"series digest at frame {digest.next_index - 1}")
        todo = digest.frames(series, stop)  # from `start` on, each folded into the series digest
        stopped = {"flag": False}
        # the readout fields, unless a resumed file was begun without them (every row has the same fields)
        readout_model = model if not writer.num_frames_written or "readout_size" in writer.extra_fields else None

        def on_frame(record: FrameRecord) -> bool:
            row = frame_row(series, record, digest.at(record.index), strategy.cost_slots, hybrid,
                            readout_model, post)
            writer.append_row(row)
            report = FrameReport(record, row.metrics, row.physics.output_metrics if row.physics else row.metrics,
                                 strain_words(row))
            if callback is not None and callback(report):
                stopped["flag"] = True
                return True
            return False

        # a fresh run (no row yet) starts the strategy from the encoder, whatever its first frame
        result = track(todo, model, strategy, callback=on_frame, start_index=start if writer.num_frames_written else 0,
                       held_latent=held, views=views, view=view, keep_densities=False)
        if not stopped["flag"] and writer.num_frames_written == 0:
            writer.discard()  # nothing to keep: no file marked complete with no frame in it
            raise no_usable_frame_error(result.skipped, series.path)
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
