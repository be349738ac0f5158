"""Ctrl-C handling of the CLI: the first press while tracking stops after the current frame.

One :data:`_INTERRUPTS` object serves the whole process: :func:`latenttune.cli.main` resets it (and
records its command line in :data:`_ARGV`) at the start of every call, so code that imported it
reads the state of the current run.
"""

from __future__ import annotations

import shlex
import sys


class _Interrupts:
    """Ctrl-C handling of the CLI.

    While a run is tracking (:meth:`deferred`), the first Ctrl-C asks it to stop after the current
    frame: the partial results stay complete and resumable, and the command prints how to continue.
    A second Ctrl-C, or one at any other time, interrupts at once. The handler only sets a flag
    when it defers, so a press can never be lost inside library code; a press that was lost anyway
    (an exception swallowed in a finaliser) still stops the run at the next frame or phase.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget any earlier press: the state of a new command."""
        self.requested = False
        self.deferring = False

    def handler(self, signum: int, frame: object) -> None:
        first = not self.requested
        self.requested = True
        if self.deferring and first:
            sys.stderr.write("\nCtrl-C: stopping after this frame (press again to stop at once)\n")
            return
        raise KeyboardInterrupt

    def check(self, *_: object) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (a callback between steps)."""
        if self.requested:
            raise KeyboardInterrupt

    def deferred(self) -> _Deferred:
        """Context in which the first Ctrl-C only requests a stop."""
        return _Deferred(self)


class _Deferred:
    def __init__(self, interrupts: _Interrupts) -> None:
        self.interrupts = interrupts

    def __enter__(self) -> None:
        self.interrupts.check()  # a press before tracking started (and possibly swallowed) stops here
        self.interrupts.deferring = True

    def __exit__(self, *exc: object) -> None:
        self.interrupts.deferring = False


#: The one Ctrl-C state of the process (reset, never replaced, by each ``main()`` call).
_INTERRUPTS = _Interrupts()
#: The current command line without the program name (updated in place by each ``main()`` call).
_ARGV: list[str] = []


def _resume_command() -> str:
    """The command line that continues the current run (``--resume`` added)."""
    argv = list(_ARGV)
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["latenttune", *argv])
