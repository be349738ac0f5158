"""Simulated measured series: scenario -> forward model -> detector -> CXI file.

This is the library side of ``latenttune simulate``; it logs and reports each frame through a
callback, and writes the file frame by frame (flushed, atomic rename at the end) so an
interrupted simulation leaves a readable partial file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latenttune.io import CXISeriesWriter, open_series
from latenttune.limits import MAX_FRAMES, MAX_OBJECT_GRID, MAX_PHOTONS, MAX_SEED, check_allocation
from latenttune.outputs import check_output_path
from latenttune.physics import forward
from latenttune.validation import check_int, check_number
from sim.detector import Detector
from sim.scenarios import make_scenario

log = logging.getLogger(__name__)

__all__ = ["FrameSummary", "simulate_series"]


@dataclass(frozen=True)
class FrameSummary:
    """What one simulated frame looks like, for progress reports.

    Attributes
    ----------
    index : int
        Frame index.
    total_counts : float
        Photons counted in the measured voxels.
    max_counts : float
        Brightest measured voxel.
    masked_fraction : float
        Fraction of voxels not measured (beamstop, gaps, saturation).
    change : float
        Relative L2 change of the true density from the previous frame (0 for the first).
    """

    index: int
    total_counts: float
    max_counts: float
    masked_fraction: float
    change: float

    def line(self) -> str:
        """One human-readable line."""
        return (
            f"frame {self.index:4d}  counts {self.total_counts:10.4g}  max {self.max_counts:9.4g}  "
            f"masked {100 * self.masked_fraction:5.2f}%  change {self.change:7.4f}"
        )


#: Bytes per voxel of the diffraction grid that simulating a frame needs at least: the complex128
#: wavefield and the float64 intensity made from it.
_BYTES_PER_VOXEL = 24


def _check_settings(num_frames: int, n: int, photons: float, seed: int) -> None:
    """Refuse sizes and numbers the simulation cannot make, before anything is written."""
    check_int("num_frames", num_frames, low=1, high=MAX_FRAMES)
    check_int("n", n, low=1, high=MAX_OBJECT_GRID)
    check_number("photons", photons, low=0, high=MAX_PHOTONS, open_low=True)
    check_int("seed", seed, low=0, high=MAX_SEED)
    check_allocation(f"`n` = {n}: one frame's (2n)^3 = {2 * n}^3 wavefield", _BYTES_PER_VOXEL * (2 * n) ** 3,
                     "choose a smaller --n")


def simulate_series(
    scenario: str,
    out: str | Path,
    *,
    num_frames: int = 20,
    n: int = 32,
    photons: float = 1e8,
    background: float = 0.0,
    beamstop_radius: float = 0.0,
    seed: int = 0,
    layout: str = "stacked",
    overwrite: bool = False,
    callback: Callable[[FrameSummary], object] | None = None,
    scenario_options: dict | None = None,
) -> Path:
    """Simulate ``num_frames`` frames of a named scenario and write them as a CXI series.

    Parameters
    ----------
    scenario : str
        Name of a :mod:`sim.scenarios` scenario (``growth``, ``rotation``, ``strain``, ...).
    out : str or Path
        Output ``.cxi``/``.h5`` file (no other suffix); the ground truth goes to its ``truth`` group.
    num_frames, n : int
        Number of frames (at most :data:`latenttune.limits.MAX_FRAMES`) and object grid size
        (diffraction grid ``2 n``; at most :data:`latenttune.limits.MAX_OBJECT_GRID`, and refused
        before anything is written when one frame would not fit in the memory left).
    photons, background, beamstop_radius : float
        Detector model (:class:`sim.detector.Detector`); ``photons`` at most
        :data:`latenttune.limits.MAX_PHOTONS` (the Poisson sampler's limit).
    seed : int
        Seed of everything random: the sample's evolution and the photon noise (0 to 2^63 - 1:
        the file stores it as a 64-bit integer).
    layout : {"stacked", "entries"}
        CXI layout (docs/conventions.md section 6).
    overwrite : bool
        Replace an existing output file.
    callback : callable, optional
        Called with a :class:`FrameSummary` after each frame is written.
    scenario_options : dict, optional
        Extra keyword arguments of the scenario (``latent-walk`` needs ``decode`` and
        ``latent_bounds``: see :func:`latenttune.model.latent_walk.latent_walk_scenario`).

    Returns
    -------
    Path
        The written file.
    """
    out = check_output_path(out, "`out`", "series")
    _check_settings(num_frames, n, photons, seed)
    if out.exists() and not overwrite:
        raise FileExistsError(f"`out` {str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    scenario_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    sample = make_scenario(scenario, scenario_rng, n=n, num_frames=num_frames, **(scenario_options or {}))
    detector = Detector(photons=photons, background=background, beamstop_radius=beamstop_radius)
    attrs = {
        "scenario": scenario,
        "scenario_params": json.dumps(sample.params()),
        "seed": int(seed),
        "detector": json.dumps(dataclasses.asdict(detector)),
    }
    N = 2 * n
    log.info("simulating %d frames of %r at n=%d into %s", num_frames, scenario, n, out)
    previous = None
    with CXISeriesWriter(out, N, layout=layout, attrs=attrs, truth=True, overwrite=overwrite) as writer:
        for index, density in enumerate(sample):
            measurement = detector.measure(forward(density), noise_rng)
            writer.append(measurement.counts, mask=measurement.mask, time=float(index), truth=density)
            change = 0.0 if previous is None else float(np.linalg.norm(density - previous) / np.linalg.norm(previous))
            previous = density
            measured = ~measurement.mask
            summary = FrameSummary(
                index=index,
                total_counts=float(measurement.counts[measured].sum()),
                max_counts=float(measurement.counts[measured].max(initial=0.0)),
                masked_fraction=float(measurement.mask.mean()),
                change=change,
            )
            log.debug(summary.line())
            if callback is not None:
                callback(summary)
    return out


def check_simulated_series(
    path: str | Path,
    *,
    scenario: str,
    num_frames: int,
    n: int,
    photons: float,
    beamstop_radius: float,
    seed: int,
    background: float = 0.0,
) -> None:
    """Refuse a simulated series that :func:`simulate_series` would not make with these settings.

    ``latenttune track --resume`` continues on the series it simulated before, so every setting
    that made the series must be the one given again.

    Parameters
    ----------
    path : str or Path
        A series written by :func:`simulate_series`.
    scenario, num_frames, n, photons, beamstop_radius, seed, background
        The settings given now (see :func:`simulate_series`).

    Raises
    ------
    FileNotFoundError
        No series at ``path``.
    ValueError
        A setting differs (named as its ``track`` option), or ``path`` is not a simulated series.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: the simulated series {str(path)!r} does not exist")
    with open_series(path) as series:
        attrs = series.metadata.get("root_attrs") or {}
        found = {"--frames": len(series), "--n": series.n}
    detector = attrs.get("detector")
    if "scenario" not in attrs or "seed" not in attrs or not isinstance(detector, dict):
        raise ValueError(f"{str(path)!r} is not a series written by `latenttune simulate`/`track`: it has no settings")
    found.update({"--scenario": attrs["scenario"], "--seed": attrs["seed"], "--photons": detector.get("photons"),
                  "--beamstop": detector.get("beamstop_radius"), "--background": detector.get("background")})
    given = {"--scenario": scenario, "--seed": seed, "--frames": num_frames, "--n": n, "--photons": photons,
             "--beamstop": beamstop_radius, "--background": background}
    for option, value in given.items():
        if found[option] != value:
            raise ValueError(f"`{option}` differs from the series {str(path)!r} being resumed: it was made with "
                             f"{found[option]!r}, given {value!r}")
