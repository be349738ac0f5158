"""argparse ``type=`` converters shared by the command-line interfaces.

Each raises :class:`argparse.ArgumentTypeError` naming the rule, which argparse turns into a
one-line usage error naming the option.
"""

from __future__ import annotations

import argparse
import re
import math

from latenttune import limits
from latenttune.model.symmetry import VIEW_COUNTS

__all__ = ["command", "positive_int", "non_negative_int", "positive_float", "non_negative_float", "fraction", "binning",
           "frame_range", "add_threads_option", "add_views_option", "thread_count", "steps_per_frame", "frame_count",
           "object_grid", "grid_size", "seed", "photons"]


def _int_at_least(text: str, low: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def _int_in(text: str, low: int, high: int, rule: str) -> int:
    """An integer in ``[low, high]``; the message says the rule and, above ``high``, why there is a bound."""
    value = _int_at_least(text, low, rule)
    if value > high:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def thread_count(text: str) -> int:
    """Torch CPU threads: an integer from 1 to four per core of this machine."""
    high = limits.max_threads()
    return _int_in(text, 1, high, f"a positive integer, at most {high} (4 per CPU core of this machine)")


def steps_per_frame(text: str) -> int:
    """Cost evaluations per frame: an integer from 0 to :data:`latenttune.limits.MAX_STEPS_PER_FRAME`."""
    return _int_in(text, 0, limits.MAX_STEPS_PER_FRAME, f"an integer from 0 to {limits.MAX_STEPS_PER_FRAME:,}")


def frame_count(text: str) -> int:
    """A number of frames: an integer from 1 to :data:`latenttune.limits.MAX_FRAMES`."""
    return _int_in(text, 1, limits.MAX_FRAMES, f"a positive integer, at most {limits.MAX_FRAMES:,}")


def object_grid(text: str) -> int:
    """An object grid n: an integer from 1 to :data:`latenttune.limits.MAX_OBJECT_GRID`."""
    return _int_in(text, 1, limits.MAX_OBJECT_GRID,
                   f"a positive integer, at most {limits.MAX_OBJECT_GRID} (the diffraction grid is 2n per axis)")


def grid_size(text: str) -> int:
    """A diffraction grid N: an integer from 1 to :data:`latenttune.limits.MAX_GRID`."""
    return _int_in(text, 1, limits.MAX_GRID, f"a positive integer, at most {limits.MAX_GRID}")


def seed(text: str) -> int:
    """A random seed: an integer from 0 to 2^63 - 1 (files store it as a 64-bit integer)."""
    return _int_in(text, 0, limits.MAX_SEED, "an integer from 0 to 2^63 - 1")


def photons(text: str) -> float:
    """Expected photons per frame: a positive finite number up to :data:`latenttune.limits.MAX_PHOTONS`."""
    value = positive_float(text)
    if value > limits.MAX_PHOTONS:
        raise argparse.ArgumentTypeError(f"must be at most {limits.MAX_PHOTONS:g} (the Poisson sampler's limit), "
                                         f"got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def binning(text: str) -> tuple[int, int, int] | None:
    """``auto`` -> None; ``B`` -> (B, B, B); ``B0,B1,B2`` -> per axis (each an integer >= 1)."""
    if text.strip().lower() == "auto":
        return None
    parts = text.split(",")
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"must be 'auto', one integer or three comma-separated integers, got {text!r}")
    values = [_int_at_least(p.strip(), 1, "'auto' or integers >= 1") for p in parts]
    return tuple(values * 3 if len(values) == 1 else values)  # type: ignore[return-value]


def frame_range(text: str) -> tuple[int, int | None]:
    """``A:B`` -> (A, B), frames A to B - 1 as in Python; ``A:`` -> (A, None); ``:B`` -> (0, B)."""
    head, sep, tail = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"must be START:STOP (frames START to STOP - 1, either may be left out), "
                                         f"got {text!r}")
    start = _int_at_least(head, 0, "START:STOP with integers >= 0") if head.strip() else 0
    stop = _int_at_least(tail, 0, "START:STOP with integers >= 0") if tail.strip() else None
    if stop is not None and stop <= start:
        raise argparse.ArgumentTypeError(f"STOP must be greater than START, got {text!r}")
    return start, stop


#: Help text that states its option's default itself ("(default: 24 for hybrid, ...)", "(default auto: ...)").
_STATES_DEFAULT = re.compile(r"\(default\b|\bdefault:")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default once: appended as "(default: X)" unless the help text states it
    itself, the default is None (nothing to show) or the option is a flag (off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (_STATES_DEFAULT.search(text) or action.default is None or action.default is argparse.SUPPRESS
                or (action.option_strings and action.nargs == 0)):
            return text
        return super()._get_help_string(action)


def command(sub: argparse._SubParsersAction, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    """A sub-command's parser, its help line and description (white space folded), defaults shown in ``--help``
    once (:class:`DefaultsHelpFormatter`)."""
    return sub.add_parser(name, help=help_text, description=" ".join(description.split()),
                          formatter_class=DefaultsHelpFormatter)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` on a heavy command: torch's CPU threads (``latenttune.cli.main`` applies it first)."""
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="torch CPU threads (default: torch's choice, one per core); on a busy machine 1 is "
                             "steadier than 2")


def add_views_option(parser: argparse.ArgumentParser, default: int, help_text: str) -> None:
    """``--views {1,24,48}``: symmetric views of a pattern to choose the encoder's prediction from."""
    parser.add_argument("--views", type=int, choices=VIEW_COUNTS, default=default, help=help_text)
