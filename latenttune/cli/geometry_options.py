"""The measurement-geometry options of ``latenttune prepare`` and how they become a :class:`BraggGeometry`.

Three sources, later ones overriding earlier ones key by key: what a CXI input's
``entry_1/instrument_1`` says, a geometry file (``--geometry``), and the flags. None of them given:
no geometry (the command says what is then missing).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from latenttune.cli.argtypes import positive_float

__all__ = ["add_geometry_options", "geometry_from_args"]


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _signed_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_geometry_options(p: argparse.ArgumentParser) -> None:
    """Register the geometry flags on ``p``."""
    from latenttune.geometry import PRESETS

    g = p.add_argument_group(
        "measurement geometry (for voxel sizes in nm, displacement and strain; input axes: rocking angle, detector "
        "row, detector column)",
        "The flags alone use the usual approximation: detector perpendicular to the exit beam at the Bragg angle, "
        "rocking about the axis normal to the scattering plane. --geometry FILE (or --preset with the angles) gives "
        "the full diffractometer (docs/strain.md).")
    g.add_argument("--energy-kev", type=positive_float, default=None, help="photon energy, keV")
    g.add_argument("--detector-distance-m", type=positive_float, default=None, help="sample to detector distance, m")
    g.add_argument("--pixel-size-um", type=_numbers, default=None, metavar="P|PROW,PCOL",
                   help="detector pixel size, um (one number: square pixels)")
    g.add_argument("--rocking-step-deg", type=_signed_float, default=None, help="rocking-angle step per frame, deg")
    g.add_argument("--reflection", default=None, metavar="HKL", help="the reflection measured, e.g. 111 or 2,0,0")
    g.add_argument("--lattice-constant-nm", type=positive_float, default=None,
                   help="cubic lattice constant of the reference lattice, nm (gold: 0.4078)")
    g.add_argument("--geometry", default=None, metavar="FILE",
                   help="geometry file (.json or .toml): the keys above plus the diffractometer's circles, angles and "
                        "direct beam")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a diffractometer layout; give its angles with --sample-angles-deg and --detector-angles-deg")
    g.add_argument("--sample-angles-deg", type=_numbers, default=None, metavar="A,B,...",
                   help="sample circles' angles at the first frame of the scan (outermost first)")
    g.add_argument("--detector-angles-deg", type=_numbers, default=None, metavar="A,B,...",
                   help="detector circles' angles (outermost first)")
    g.add_argument("--direct-beam", type=_numbers, default=None, metavar="ROW,COL",
                   help="detector pixel the direct beam hits with the detector angles at 0")


_FLAGS = {"energy_kev": "--energy-kev", "detector_distance_m": "--detector-distance-m",
          "pixel_size_um": "--pixel-size-um", "rocking_step_deg": "--rocking-step-deg", "reflection": "--reflection",
          "lattice_constant_nm": "--lattice-constant-nm"}


def geometry_from_args(args: argparse.Namespace, inputs: Sequence[str]) -> Any:
    """The :class:`BraggGeometry` the options (and a CXI input) give, or None when nothing gives one."""
    from pathlib import Path

    from latenttune.geometry import BraggGeometry, load_geometry
    from latenttune.geometry.record import read_cxi_instrument

    values: dict[str, Any] = {}
    sources = []
    cxi = [s for s in inputs if Path(s.split(":")[0]).suffix.lower() in (".cxi", ".h5", ".hdf5", ".nxs")]
    if len(cxi) == 1 and Path(cxi[0]).is_file():
        found = read_cxi_instrument(cxi[0])
        if found:
            values.update(found)
            sources.append(f"{Path(cxi[0]).name}'s instrument_1")
    if args.geometry is not None:
        values.update(load_geometry(args.geometry).to_dict())
        sources.append(f"geometry file {Path(args.geometry).name}")
    flags = {key: getattr(args, key) for key in _FLAGS if getattr(args, key) is not None}
    if flags:
        sources.append("flags")
    values.update(flags)
    if args.preset is not None:
        setup = {"preset": args.preset, "sample_angles_deg": args.sample_angles_deg,
                 "detector_angles_deg": args.detector_angles_deg}
        if args.sample_angles_deg is None or args.detector_angles_deg is None:
            raise ValueError("`--preset` needs `--sample-angles-deg` and `--detector-angles-deg`")
        if args.direct_beam is not None:
            setup["direct_beam"] = args.direct_beam
        values.pop("diffractometer", None)
        values.update(setup)
    elif args.sample_angles_deg is not None or args.detector_angles_deg is not None or args.direct_beam is not None:
        raise ValueError("`--sample-angles-deg`, `--detector-angles-deg` and `--direct-beam` need `--preset` "
                         "(or put them in a --geometry file)")
    if not values:
        return None
    if isinstance(values.get("pixel_size_um"), list) and len(values["pixel_size_um"]) == 1:
        values["pixel_size_um"] = values["pixel_size_um"] * 2
    missing = [flag for key, flag in _FLAGS.items() if key not in values]
    if missing:
        raise ValueError(f"the measurement geometry is incomplete: give {', '.join(missing)} (found the rest in "
                         f"{', '.join(sources)})")
    values["source"] = " + ".join(sources)
    return BraggGeometry.from_dict(values)


def warn_quantity(series: Any, amplitude: bool, option: str = "--amplitude") -> None:
    """Print a one-line warning when the first volume looks like the other quantity (:mod:`latenttune.io.quantity`)."""
    import sys

    import numpy as np

    from latenttune.io.quantity import quantity_warning

    first = next(iter(series))
    values = np.asarray(getattr(first, "intensity", first), dtype=np.float64)
    raw = np.sqrt(np.abs(values)) if amplitude else values  # the values as stored (amplitudes were squared)
    line = quantity_warning(raw, amplitude, option)
    if line:
        print(f"warning: {line}", file=sys.stderr)


def resolution_line(series_path: Any) -> str:
    """What the crop and binning cost in resolution, from a prepared series' record."""
    import h5py

    from latenttune.geometry.record import RESOLUTION_ATTR, TRANSFORM_ATTR
    from latenttune.io._attrs import read_attrs

    with h5py.File(series_path, "r") as f:
        attrs = read_attrs(f)
    voxels, transform = attrs[RESOLUTION_ATTR], attrs[TRANSFORM_ATTR]

    from latenttune.geometry import FrameTransform

    angles = FrameTransform.from_dict(transform).axis_angles_deg

    def nm(values: Any) -> str:
        return " x ".join(f"{v:.1f}" for v in values) + " nm"

    return (f"voxel size {nm(voxels['voxel_size_nm_prepared'])} on the model's grid, resolution "
            f"{nm(voxels.get('resolution_nm_prepared', voxels['voxel_size_nm_prepared']))} from the q range kept "
            f"(the whole "
            f"input: {nm(voxels['voxel_size_nm_input'])}: what the crop and binning cost); grid axes at "
            f"{', '.join(f'{a:.1f}' for a in angles)} deg (a rocking scan's grid is not orthogonal)")


def open_prepared(path: Any, N: int, *, amplitude: bool = False) -> Any:
    """Open a series for tracking; a raw measured volume (not on the model's grid) gets the prepare command to run."""
    import shlex

    from latenttune.io import open_series
    from latenttune.io.errors import SeriesFormatError

    prepare = (f"`latenttune prepare {shlex.quote(str(path))} --out prepared.cxi{' --amplitude' if amplitude else ''}` "
               f"(with the geometry: --energy-kev ... or --geometry FILE), then `latenttune replay prepared.cxi --out "
               f"results.h5`")
    try:
        series = open_series(path, amplitude=amplitude)
    except SeriesFormatError as exc:
        text = str(exc)
        if any(word in text for word in ("must be cubic", "grid size N must be even", "wrong ndim")):
            raise ValueError(f"{path} is not a series on the model's {N}^3 grid ({text.split(': ')[-1]}): a measured "
                             f"volume is put on it by {prepare}") from None
        raise
    if series.N != N:
        series.close()
        raise ValueError(f"{path} has diffraction grid N = {series.N} but the model expects N = {N}: a measured volume "
                         f"(or a series prepared for another model) is put on the model's grid by {prepare}")
    return series


def note_geometry(series: Any) -> None:
    """Say what the run will give in physical units, or that the series has no geometry."""
    from latenttune.geometry.record import MISSING_GEOMETRY, series_geometry

    found = series_geometry(series.metadata.get("root_attrs") or {})
    if found is None:
        print(f"note: {MISSING_GEOMETRY}")
    else:
        geometry, transform, _ = found
        sizes = " x ".join(f"{v:.1f}" for v in transform.voxel_size_nm)
        print(f"geometry: reflection {''.join(map(str, geometry.reflection))}, voxel {sizes} nm; every frame's "
              f"displacement (nm) and strain go into the results")


def run_quality_lines(results: Any, series: Any) -> list[str]:
    """After a run: free LLK, whether the LLK flag can discriminate at these counts, the strain summary."""
    import numpy as np

    from latenttune.quality import low_counts_sentence

    lines = []
    if np.isfinite(results.llk_free).any():
        lines.append(f"free LLK (held-out voxels, PyNX's form): median {np.nanmedian(results.llk_free):.2f}, "
                     f"max {np.nanmax(results.llk_free):.2f}")
    if results.has_physics:
        counts = [float(np.sum(series[int(i)].intensity)) for i in results.index[:3]]
        sentence = low_counts_sentence(float(np.median(counts)))
        if sentence:
            lines.append(f"note: {sentence}")
    if results.has_strain:
        lines.append(f"strain along G inside the support: mean of the frames' std "
                     f"{np.nanmean(results.strain_std):.2e}; "
                     f"post-processing {np.nanmean(results.postprocess_seconds) * 1e3:.0f} ms per frame")
    return lines
