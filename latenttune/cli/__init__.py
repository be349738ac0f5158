"""The ``latenttune`` command line: the only code of the package that prints.

* :mod:`~latenttune.cli.main`: the parser, ``main`` and the one-line error handling;
* :mod:`~latenttune.cli.argtypes`: argument types and shared options.
"""

from __future__ import annotations

from latenttune.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
