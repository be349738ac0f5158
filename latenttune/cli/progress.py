"""Progress bars on a terminal, plain lines in a log.

A progress bar redraws itself with carriage returns. On a terminal that is what one wants; in a log
file (``latenttune replay ... > run.log 2>&1``) the redraws and the per-frame lines interleave into
carriage-return soup. So the commands draw their bar (on stderr) only when stderr is a terminal, and
write their per-frame lines (on stdout) through :func:`say` either way: a log holds the lines alone.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["is_terminal", "progress_bar", "say"]


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for a file, a pipe, a closed or captured stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress_bar(total: int | None, unit: str, desc: str, *, disable: bool = False) -> Any:
    """A tqdm bar on stderr, drawn only when stderr is a terminal (``disable`` turns it off as well)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=disable or not is_terminal(sys.stderr))


def say(line: str) -> None:
    """Write one line to stdout without breaking a bar that is being drawn (tqdm clears and redraws it)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
