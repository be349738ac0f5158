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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.io import ResultWriter, Series, open_series, read_results
from latenttune.metrics import amplitude_error, phase_rms, real_space_error
from latenttune.model import LoadedModel
from latenttune.physics import forward
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

    def line(self) -> str:
        """One human-readable line."""
        r = self.record
        truth = "" if np.isnan(self.E_r) else f"  E_r {self.E_r:.4f}  phase RMS {self.phase_rms:.3f}"
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


def _truth_metrics(series: Series, record: FrameRecord, intensity: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    if record.status != "ok":
        return (np.nan, np.nan, np.nan)
    e_q = float(amplitude_error(forward(record.density), intensity, mask))
    if not series.has_truth:
        return (np.nan, e_q, np.nan)
    truth = series.truth(record.index)
    alignment = real_space_error(truth, record.density)
    return (float(alignment.error), e_q, float(phase_rms(truth, alignment.aligned, align=False)))


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
        Continue ``out.partial`` from its last complete frame.
    overwrite : bool
        Replace an existing ``out``.
    callback : callable, optional
        ``callback(report)`` after each frame; returning True stops (the partial file stays resumable).
    attrs : dict, optional
        Extra attributes for the results file.

    Returns
    -------
    (Path, TrackResult)
        The results path (``out`` when complete, ``out.partial`` when stopped early) and the
        frames processed in this call.
    """
    own_series = not isinstance(series, Series)
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
        **(attrs or {}),
    }
    start, held = 0, None
    writer = ResultWriter(out, n=model.config.n, k=model.latent_dim, attrs=file_attrs, resume=resume, overwrite=overwrite)
    try:
        if resume and writer.num_frames_written:
            rows = writer.num_frames_written
            previous = read_results(writer.partial_path)
            # a bad leading frame gets no row, so continue after the last frame written, not after `rows`
            start = int(previous["index"][rows - 1]) + 1 if "index" in previous else rows
            strategy.load_state_dict(json.loads(str(previous["strategy_state"][rows - 1])))
            held = np.asarray(previous["latent"][rows - 1], dtype=np.float64)
            log.info("resuming %s at frame %d of %d", out, start, len(series))
        frames = (series[i] for i in range(start, len(series)))
        stopped = {"flag": False}

        def on_frame(record: FrameRecord) -> bool:
            frame = series[record.index]
            e_r, e_q, p_rms = _truth_metrics(series, record, frame.intensity, frame.mask)
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
            )
            if callback is not None and callback(FrameReport(record, e_r, e_q, p_rms)):
                stopped["flag"] = True
                return True
            return False

        result = track(frames, model, strategy, callback=on_frame, start_index=start, held_latent=held)
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
