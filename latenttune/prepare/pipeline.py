"""Put a measured 3D intensity on the model's grid: ``latenttune prepare``.

A measurement comes in any shape and axis order with the Bragg peak anywhere
(:mod:`latenttune.io.measured` reads it); the model wants an ``N^3`` grid (``N = 2n``) with the
peak at index ``N // 2`` and a mask of what was not measured (docs/conventions.md sections 2 and 6). For
each series :func:`prepare_series` does, in order:

1. **Mask** (:func:`build_mask`, CXI pixel-mask bits): the user's or file's mask (bits kept);
   NaN, inf and negative voxels (``0x1`` invalid); hot pixels, a voxel brighter than
   ``hot_factor * (median of its measured neighbours + 1)`` (``0x4``); detector gaps, a run of at
   most ``max_gap_width`` planes or lines whose counts sum to exactly 0 while the nearest planes or
   lines on both sides hold at least ``gap_min_counts`` (``0x200``; a Poisson line with that many
   counts expected is empty with probability below ``exp(-gap_min_counts)``).
2. **Oversampling** (:func:`estimate_oversampling`): per axis, from the extent of the object's
   autocorrelation along the axis, which is the inverse Fourier transform of the intensity's
   projection onto that axis (the same idea as cohere's ``get_oversample_ratio``). Oversampling
   ``s`` means the object spans ``1/s`` of the real-space field of view; the model's object box is
   half of it (``n = N/2``), so ``s < min_oversampling`` (2) is an error.
3. **Binning** (:func:`choose_binning`): counts are summed over ``b`` voxels per axis (binning
   divides the oversampling by ``b``), ``b`` chosen so that the oversampling comes closest to the
   model's training data (``oversampling``, :data:`DEFAULT_OVERSAMPLING`) without going below
   ``min_oversampling``; cropping alone keeps the oversampling and drops the outer q range.
4. **Peak** (:func:`find_peak`): the centre of mass of the central lobe of the Bragg peak
   (iterated in a box of the lobe's width around the brightest smoothed voxel), of the whole
   series (``centre="series"``: one window, so the sample's changes stay in the frames) or of each
   frame (``centre="frame"``).
5. **Window**: ``N`` bins per axis, with the bin holding the peak at ``N // 2``; parts of the
   window outside the measured array are masked (``0x200``), and so is every bin with a masked
   voxel in it (its sum would be short). No count is rescaled: the prepared frame holds exactly
   the counts of the fully measured bins, and the report says how many counts fell outside the
   window or in masked bins.

The peak must leave at least ``edge_margin * N`` measured output voxels on each side, or the
frame is refused with a message that says what to change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latenttune.io.cxi import MASK_INVALID
from latenttune.io.cxi_writer import CXISeriesWriter
from latenttune.geometry import BraggGeometry
from latenttune.geometry.record import instrument_fields, prepared_geometry
from latenttune.io.measured import MeasuredSeries, MeasuredVolume, open_measured
from latenttune.limits import MAX_GRID, check_allocation, check_voxels
from latenttune.outputs import check_output_path, check_outputs
from latenttune.prepare.masks import MASK_GAP, MASK_HOT, REASONS, reasons
from latenttune.prepare.settings import PrepareSettings
from latenttune.prepare.window import (
    check_fit,
    choose_binning,
    cut_window,
    estimate_oversampling,
    find_peak,
    window_start,
)
from latenttune.validation import is_integer

log = logging.getLogger(__name__)

__all__ = ["FramePreparation", "PreparedFrame", "prepare_volume", "prepare_series", "check_measured_size",
           "MIN_SIDE"]

#: Fewest voxels a measured volume needs along each axis to find its peak, gaps and oversampling.
MIN_SIDE = 8
#: Bytes per input voxel a series needs at least while it is summed and masked (float64 sums and
#: values, the volume as read, the masks).
_BYTES_PER_INPUT_VOXEL = 32
#: Bytes per window voxel (``N^3`` bins of ``b0 b1 b2`` input voxels) a frame needs at least: the
#: float64 window and the bool window of what lies inside the array.
_BYTES_PER_WINDOW_VOXEL = 9


@dataclass(frozen=True)
class FramePreparation:
    """What :func:`prepare_volume` did to one measured volume.

    Attributes
    ----------
    source : str
        Where the volume came from.
    shape : tuple of int
        Its shape.
    peak : tuple of float
        The peak (centre of mass) the window is centred on, in input voxels.
    binning : tuple of int
        Input voxels summed per output voxel along each axis.
    start : tuple of int
        First input voxel of the window along each axis (negative: the window starts outside).
    grid : int
        Output grid ``N``.
    oversampling : tuple of float
        Estimated oversampling of the input, per axis (of the series' sum with ``centre="series"``).
    counts : float
        Counts at the measured voxels of the input.
    counts_kept : float
        Counts in the prepared frame (the fully measured bins of the window).
    counts_outside : float
        Counts outside the window.
    counts_masked : float
        Counts inside the window, in bins with a masked voxel.
    masked : dict of str to int
        Masked output voxels by first reason: ``mask`` (user or file mask), ``invalid`` (NaN,
        negative), ``hot``, ``gap`` (detector gap), ``outside`` (beyond the measured array).
    peak_offset : tuple of float
        Centre of mass of the prepared frame's central lobe minus ``N // 2``, per axis.
    """

    source: str
    shape: tuple[int, ...]
    peak: tuple[float, ...]
    binning: tuple[int, ...]
    start: tuple[int, ...]
    grid: int
    oversampling: tuple[float, ...]
    counts: float
    counts_kept: float
    counts_outside: float
    counts_masked: float
    masked: dict[str, int] = field(default_factory=dict)
    peak_offset: tuple[float, ...] = (0.0, 0.0, 0.0)

    @property
    def oversampling_out(self) -> tuple[float, ...]:
        """Oversampling of the prepared frame (binning divides it)."""
        return tuple(s / b for s, b in zip(self.oversampling, self.binning))

    @property
    def action(self) -> str:
        """What was done, in words: binned and/or cropped (and padded where the window leaves the array)."""
        N = self.grid
        spans = [N * b for b in self.binning]
        parts = []
        if any(b > 1 for b in self.binning):
            parts.append(f"binned {'x'.join(map(str, self.binning))} (counts summed)")
        cropped = [a for a, (L, w) in enumerate(zip(self.shape, spans)) if L > w]
        parts.append(f"cropped to {N}^3 around the peak" if cropped else f"placed on {N}^3 around the peak")
        padded = [a for a, (s, L, w) in enumerate(zip(self.start, self.shape, spans)) if s < 0 or s + w > L]
        if padded:
            axes = f"axes {', '.join(map(str, padded))} reach" if len(padded) > 1 else f"axis {padded[0]} reaches"
            parts.append(f"{axes} beyond the measured array (masked)")
        return ", ".join(parts)

    def line(self) -> str:
        """One human-readable line."""
        def pct(x: float) -> str:
            return f"{100 * x / self.counts:.1f}%" if self.counts > 0 else "n/a"

        total = self.grid ** 3
        reasons = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in self.masked.items() if v)
        return (f"{self.source}: peak at ({', '.join(f'{c:.1f}' for c in self.peak)}) of "
                f"{'x'.join(map(str, self.shape))}; {self.action}; kept {pct(self.counts_kept)} of "
                f"{self.counts:.4g} counts ({pct(self.counts_outside)} outside the window, {pct(self.counts_masked)} "
                f"in masked bins); masked {100 * sum(self.masked.values()) / total:.1f}%"
                f"{f' ({reasons})' if reasons else ''}; oversampling "
                f"{', '.join(f'{s:.1f}' for s in self.oversampling_out)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for a file's attributes)."""
        return {**dataclasses.asdict(self), "action": self.action}


@dataclass(frozen=True, eq=False)
class PreparedFrame:
    """A measured volume on the model's grid.

    Attributes
    ----------
    intensity : ndarray, float32, (N, N, N)
        Counts, peak at ``N // 2``; 0 at masked voxels.
    mask : ndarray, uint32, (N, N, N)
        CXI pixel-mask bits, nonzero = not measured.
    report : FramePreparation
    """

    intensity: np.ndarray
    mask: np.ndarray
    report: FramePreparation


def _check_grid(N: Any) -> int:
    if not is_integer(N) or N < 4 or N % 2 or N > MAX_GRID:
        raise ValueError(f"`N` must be an even integer from 4 to {MAX_GRID} (the model's grid, N = 2n), got {N!r}")
    return int(N)


def _check_shape(shape: Sequence[int], source: str) -> None:
    """Refuse a volume too small to prepare, naming the rule and what to give instead."""
    if min(shape) < MIN_SIDE:
        raise ValueError(f"{source}: the measured volume is {'x'.join(map(str, shape))}, too small: every axis needs "
                         f"at least {MIN_SIDE} voxels to find the peak, the gaps and the oversampling; give the "
                         "measured volume uncropped")


def check_measured_size(series: MeasuredSeries) -> None:
    """Refuse a measured series whose volumes are too small to prepare or too large to read into memory.

    Call it before reading any volume of ``series``: only the declared shape is looked at.
    """
    _check_shape(series.shape, f"`inputs` ({series.sources[0]})")
    check_voxels(f"`inputs` ({series.sources[0]})", series.shape, _BYTES_PER_INPUT_VOXEL,
                 "prepare a smaller part of the measurement")


def _check_window(N: int, binning: Sequence[int], source: str) -> None:
    """Refuse a window (``N^3`` bins of ``binning`` voxels) that cannot fit in the memory left."""
    voxels = N**3 * int(np.prod(binning))
    check_allocation(f"{source}: the window of {N}^3 bins of {'x'.join(map(str, binning))} voxels",
                     _BYTES_PER_WINDOW_VOXEL * voxels, "choose a smaller --bin or --grid")


def prepare_volume(
    volume: MeasuredVolume | np.ndarray,
    N: int,
    settings: PrepareSettings | None = None,
    *,
    peak: Sequence[float] | None = None,
    binning: Sequence[int] | None = None,
    oversampling: Sequence[float] | None = None,
) -> PreparedFrame:
    """Put one measured volume on the ``N^3`` grid (see the module docstring for the steps).

    Parameters
    ----------
    volume : MeasuredVolume or ndarray
        The measured counts (an ndarray: no mask, source ``"<array>"``).
    N : int
        The model's diffraction grid (even).
    settings : PrepareSettings, optional
    peak, binning, oversampling : optional
        Found from this volume when not given (a series passes those of its sum).

    Returns
    -------
    PreparedFrame

    Raises
    ------
    ValueError
        The volume has no counts, its oversampling is too low for the model, or the peak is too
        close to an edge (the message names the axis, the numbers and what to change).
    """
    settings = PrepareSettings() if settings is None else settings
    N = _check_grid(N)
    if not isinstance(volume, MeasuredVolume):
        volume = MeasuredVolume(np.asarray(volume), None, None, "<array>")
    _check_shape(np.shape(volume.intensity), volume.source)
    why = reasons(volume.intensity, volume.mask, settings)
    bad = np.logical_or.reduce([why[k] for k in ("mask", "invalid", "hot", "gap")])
    with np.errstate(invalid="ignore"):
        values = np.where(bad, 0.0, np.asarray(volume.intensity, dtype=np.float64))
    counts = float(values.sum())
    if not counts > 0:
        raise ValueError(f"{volume.source}: no counts at the measured voxels")
    sigma = estimate_oversampling(values, ~bad) if oversampling is None else np.asarray(oversampling, dtype=float)
    centre = find_peak(values, sigma) if peak is None else np.asarray(peak, dtype=float)
    b = tuple(int(v) for v in (choose_binning(sigma, settings) if binning is None else binning))
    check_fit(volume.source, centre, values.shape, b, sigma, N, settings)
    _check_window(N, b, volume.source)
    start = window_start(centre, b, N)
    window = cut_window(values, start, b, N, 0.0)
    outside = ~cut_window(np.ones(values.shape, dtype=bool), start, b, N, False).all(axis=(1, 3, 5))
    binned = {k: cut_window(v, start, b, N, False).any(axis=(1, 3, 5)) for k, v in why.items()}
    binned["outside"] = outside & ~np.logical_or.reduce(list(binned.values()))
    masked_out = np.logical_or.reduce(list(binned.values()))
    sums = window.sum(axis=(1, 3, 5))
    intensity = np.where(masked_out, 0.0, sums)
    bits = np.zeros((N, N, N), dtype=np.uint32)
    file_bits = None if volume.mask is None else cut_window(np.asarray(volume.mask, dtype=np.uint32), start, b, N, 0)
    if file_bits is not None:
        bits |= np.bitwise_or.reduce(file_bits, axis=(1, 3, 5)).astype(np.uint32)
    for reason, bit in (("invalid", MASK_INVALID), ("hot", MASK_HOT), ("gap", MASK_GAP), ("outside", MASK_GAP)):
        bits[binned[reason]] |= np.uint32(bit)
    first = np.zeros((N, N, N), dtype=bool)
    masked = {}
    for reason in REASONS:
        only = binned[reason] & ~first
        masked[reason] = int(only.sum())
        first |= binned[reason]
    kept = float(intensity.sum())
    offset = find_peak(intensity, np.asarray(sigma) / np.asarray(b)) - N // 2 if kept > 0 else np.full(3, np.nan)
    report = FramePreparation(
        source=volume.source, shape=tuple(int(s) for s in values.shape), peak=tuple(float(c) for c in centre),
        binning=b, start=tuple(int(s) for s in start), grid=int(N), oversampling=tuple(float(s) for s in sigma),
        counts=counts, counts_kept=kept, counts_outside=counts - float(window.sum()),
        counts_masked=float(window.sum()) - kept, masked=masked, peak_offset=tuple(float(o) for o in offset),
    )
    log.info("%s", report.line())
    return PreparedFrame(intensity=intensity.astype(np.float32), mask=bits, report=report)


# -- a series ----------------------------------------------------------------------------------------


def _series_sum(series: MeasuredSeries, settings: PrepareSettings) -> tuple[np.ndarray, np.ndarray]:
    """Counts summed over the frames (masked voxels left out) and the fraction of frames measuring each voxel."""
    total = np.zeros(series.shape)
    measured = np.zeros(series.shape)
    for volume in series:
        why = reasons(volume.intensity, volume.mask, settings)
        bad = np.logical_or.reduce(list(why.values()))
        with np.errstate(invalid="ignore"):
            total += np.where(bad, 0.0, np.asarray(volume.intensity, dtype=np.float64))
        measured += ~bad
    return total, measured / len(series)


def prepare_series(
    inputs: MeasuredSeries | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    N: int,
    settings: PrepareSettings | None = None,
    *,
    overwrite: bool = False,
    callback: Callable[[FramePreparation], object] | None = None,
    geometry: BraggGeometry | None = None,
) -> tuple[Path, list[FramePreparation]]:
    """Prepare measured volumes and write them as one CXI series the other commands read.

    Parameters
    ----------
    inputs : MeasuredSeries, path or sequence of paths
        What :func:`latenttune.io.measured.open_measured` opens (a folder of time steps is one
        series); give a :class:`MeasuredSeries` for a user mask or amplitudes.
    out : str or Path
        The CXI file, ``.cxi`` or ``.h5`` (written to ``OUT.partial`` and renamed when complete);
        never one of the inputs (nor the mask), also with ``overwrite``.
    N : int
        The model's diffraction grid (``model.config.N``), even, at most
        :data:`latenttune.limits.MAX_GRID`.
    settings : PrepareSettings, optional
    overwrite : bool
        Replace an existing ``out``.
    callback : callable, optional
        ``callback(report)`` after each frame is written.
    geometry : BraggGeometry, optional
        The measurement's geometry (:mod:`latenttune.geometry`): stored with the series (root
        attributes ``geometry``, ``frame_transform``, ``resolution`` and the CXI
        ``entry_1/instrument_1`` fields), so that tracking gives displacement and strain in nm.
        The input's axes are (rocking angle, detector row, detector column).

    Returns
    -------
    (Path, list of FramePreparation)
        The series file and what was done to each frame.
    """
    settings = PrepareSettings() if settings is None else settings
    N = _check_grid(N)
    out = check_output_path(out, "`out`", "series")
    series = inputs if isinstance(inputs, MeasuredSeries) else open_measured(inputs)
    check_outputs({"`out`": out, "`out`.partial": Path(f"{out}.partial")},  # never over an input, a mask included
                  {f"the input {str(f)!r}": f for f in series.files}, overwrite=True)
    if out.exists() and not overwrite:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    check_measured_size(series)
    total, measured = _series_sum(series, settings)
    if not total.sum() > 0:
        raise ValueError(f"`inputs` hold no counts at measured voxels ({len(series)} frame(s))")
    sigma = estimate_oversampling(total, measured)
    binning = choose_binning(sigma, settings)
    common = find_peak(total, sigma) if settings.centre == "series" else None
    times = series.times
    reports: list[FramePreparation] = []
    summary = {"grid": int(N), "binning": list(binning), "oversampling": [float(s) for s in sigma],
               "centre": settings.centre, "peak": None if common is None else [float(c) for c in common]}
    attrs = {
        "prepared_by": "latenttune prepare",
        "prepare_settings": json.dumps(dataclasses.asdict(settings)),
        "prepare_summary": json.dumps(summary),
        "prepare_inputs": json.dumps(series.sources[:1000]),
        "time_source": "the inputs' time stamps" if times is not None else "frame index (the inputs have none)",
    }
    if common is not None:  # one window for all: refuse it before writing anything
        check_fit(f"the sum of {len(series)} frame(s)", common, series.shape, binning, sigma, int(N), settings)
    if geometry is not None:  # the window of the series' peak (of the sum's, when each frame has its own)
        reference = common if common is not None else find_peak(total, sigma)
        attrs.update(prepared_geometry(geometry, series.shape, window_start(reference, binning, int(N)), binning,
                                       int(N), reference))
    writer = CXISeriesWriter(out, int(N), attrs=attrs, overwrite=overwrite, compression="gzip")
    if geometry is not None:
        writer.annotate(instrument=instrument_fields(geometry))
    try:
        for index, volume in enumerate(series):
            frame = prepare_volume(volume, N, settings, peak=common, binning=binning, oversampling=sigma)
            time = float(index) if times is None else times[index]
            writer.append(frame.intensity, mask=frame.mask, time=time)
            reports.append(frame.report)
            if callback is not None:
                callback(frame.report)
        writer.annotate({"prepare_frames": [r.to_dict() for r in reports[:1000]]})
        writer.close()
    except BaseException:
        writer.abort()
        writer.partial_path.unlink(missing_ok=True)  # a prepared series is made again, never resumed
        raise
    log.info("prepared %d frame(s) into %s", len(reports), out)
    return out, reports
