"""Command-line interface: ``latenttune <command> ...``.

Only the :mod:`latenttune.cli` package prints and draws progress bars; the library logs and takes
callbacks. This module builds the parser (:func:`build_parser`, so ``--help`` documents every
option) from the command modules, each of which registers its sub-commands and runs them in small
``_cmd_*`` functions that parse nothing themselves:

* :mod:`~latenttune.cli.data`: ``simulate``, ``prepare``;
* :mod:`~latenttune.cli.model`: ``train``, ``train-cycle-encoder``, ``evaluate``;
* :mod:`~latenttune.cli.tracking`: ``track``, ``replay``;
* :mod:`~latenttune.cli.movies`: ``movie``, ``export``.

:func:`main` runs a command, turns an expected failure (memory errors included) into one line on stderr
(with its traceback before it under ``-v``) and Ctrl-C into exit status 130
(:mod:`latenttune.cli.interrupts`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from latenttune import __version__
from latenttune.cli import data, model, movies, static, tracking
from latenttune.cli.interrupts import _ARGV, _INTERRUPTS, _resume_command

log = logging.getLogger(__name__)


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
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug) and the traceback behind an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data.add_parsers(sub)  # simulate, prepare
    model.add_parsers(sub)  # train, train-cycle-encoder, evaluate
    tracking.add_parsers(sub)  # track, replay
    static.add_parsers(sub)  # static, strain
    movies.add_movie_parser(sub)
    movies.add_export_parser(sub)
    return parser


#: Failures a user can cause (bad input, files, devices, servers, sizes beyond the memory): one line and exit
#: status 2. A ``RuntimeError`` counts only when it is an allocator's (:func:`_is_allocation_error`).
_EXPECTED = (ValueError, TypeError, OSError, ImportError, MemoryError)

#: What the allocators say when they cannot allocate (torch's CPU and CUDA allocators, numpy).
_ALLOCATION_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "Unable to allocate", "CUDA out of memory",
                        "out of memory")


def _is_allocation_error(exc: BaseException) -> bool:
    """True for a memory error: ``MemoryError``, or a ``RuntimeError`` of torch's or numpy's allocator."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(words in str(exc) for words in _ALLOCATION_MESSAGES))


def _is_expected(exc: BaseException) -> bool:
    """True for a failure the user can cause and fix: one line, exit status 2 (:data:`_EXPECTED`)."""
    return isinstance(exc, _EXPECTED) or _is_allocation_error(exc)


def _one_line(exc: BaseException) -> str:
    """The error in one line; a memory error says so and what to change."""
    text = " ".join(str(exc).split())
    if _is_allocation_error(exc):
        detail = text.split("DefaultCPUAllocator: ")[-1] if "DefaultCPUAllocator" in text else text
        return (f"out of memory ({detail or type(exc).__name__}): this input needs more memory than the machine's "
                "free memory or the process's address-space limit (ulimit -v) allow; use smaller sizes (grid, "
                "frames, batch, model) or a machine with more memory")
    return text or type(exc).__name__


def _set_up(args: argparse.Namespace) -> None:
    """Before a command does anything: check its ``--device`` and apply its ``--threads``.

    torch is loaded here only for a GPU or a thread count: ``--device cpu`` needs no check, so a
    command refusing its files (:mod:`latenttune.outputs`) answers before torch is loaded.
    """
    device = getattr(args, "device", None)
    if device not in (None, "cpu") or getattr(args, "threads", None) is not None:
        from latenttune.device import check_device, set_threads

        if device is not None:
            check_device(device)
        if getattr(args, "threads", None) is not None:
            set_threads(args.threads)
            log.info("torch uses %d CPU thread(s)", args.threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``latenttune`` console script.

    Every expected failure (:data:`_EXPECTED`, and a ``RuntimeError`` of torch's or numpy's allocator)
    ends with one line on stderr and exit status 2 (with ``-v``, its traceback is printed first);
    Ctrl-C ends with exit status 130 (after the current frame while tracking).
    """
    parser = build_parser()
    _ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_ARGV)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _INTERRUPTS.reset()
    import threading

    handle = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _INTERRUPTS.handler) if handle else None
    try:
        _set_up(args)
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - only the expected ones become one line (_is_expected)
        if not _is_expected(exc):
            raise
        if args.verbose:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        parser.exit(2, f"latenttune {args.command}: error: {_one_line(exc)}\n")
    except KeyboardInterrupt:
        hint = ""
        out = getattr(args, "out", None)
        if args.command in ("track", "replay") and out and Path(str(out) + ".partial").exists():
            hint = f"; partial results in {out}.partial, continue with: {_resume_command()}"
        parser.exit(130, f"latenttune {args.command}: interrupted{hint}\n")
    finally:
        if handle and previous is not None:
            signal.signal(signal.SIGINT, previous)
