"""Command-line interface: ``latenttune <command> ...``.

Only this module prints and draws progress bars; the library logs and takes callbacks.
Each sub-command lives in a small ``_cmd_*`` function that parses nothing itself: the parser
is built in :func:`build_parser` so ``--help`` documents every option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from latenttune import __version__

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from sim.scenarios import SCENARIOS

    names = sorted(name for name in SCENARIOS if name != "latent-walk")
    p = sub.add_parser(
        "simulate",
        help="simulate a time-varying sample and write its measured series (CXI) with the truth",
        description=(
            "Simulate a time-varying 3D crystal d(r, t), its diffraction |F d|^2 on the (2n)^3 grid, "
            "and a detector (Poisson counting, background, beamstop, gaps, saturation). Writes a "
            "CXI-style HDF5 series whose `entry_1/truth` group holds the ground-truth densities."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("scenario", choices=names, help="time-varying scenario to simulate")
    p.add_argument("--frames", type=_positive_int, default=20, help="number of frames T")
    p.add_argument("--n", type=_positive_int, default=32, help="object grid size n (diffraction grid is 2n)")
    p.add_argument("--photons", type=_positive_float, default=1e8, help="expected total photons per frame")
    p.add_argument("--background", type=_non_negative_float, default=0.0, help="mean background counts per voxel")
    p.add_argument("--beamstop", type=_non_negative_float, default=0.0, help="beamstop radius in voxels (0: none)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the whole series follows from it)")
    p.add_argument("--layout", choices=["stacked", "entries"], default="stacked",
                   help="CXI layout: one 4-D dataset, or one entry per frame")
    p.add_argument("--out", required=True, help="output file (.cxi or .h5)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from latenttune.simulate import simulate_series

    from tqdm import tqdm

    with tqdm(total=args.frames, unit="frame", desc=f"simulate {args.scenario}", file=sys.stderr) as bar:

        def on_frame(summary) -> None:
            bar.update(1)
            tqdm.write(summary.line(), file=sys.stdout)

        path = simulate_series(
            args.scenario,
            args.out,
            num_frames=args.frames,
            n=args.n,
            photons=args.photons,
            background=args.background,
            beamstop_radius=args.beamstop,
            seed=args.seed,
            layout=args.layout,
            overwrite=args.overwrite,
            callback=on_frame,
        )
    print(f"wrote {args.frames} frames to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``latenttune`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="latenttune",
        description=(
            "Real-time 3D coherent diffraction imaging of samples that change while they are measured: "
            "an autoencoder latent space tuned by extremum seeking."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``latenttune`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        parser.exit(2, f"latenttune {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"latenttune {args.command}: interrupted\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
