"""The ``latenttune`` command line: the only code of the package that prints.

* :mod:`~latenttune.cli.main`: the parser, ``main`` and the one-line error handling;
* :mod:`~latenttune.cli.data`: ``simulate`` and ``prepare``;
* :mod:`~latenttune.cli.model`: ``train``, ``train-cycle-encoder`` and ``evaluate``;
* :mod:`~latenttune.cli.tracking`: ``track``, ``replay`` and the tracking options;
* :mod:`~latenttune.cli.movies`: ``movie`` and ``export``;
* :mod:`~latenttune.cli.interrupts`: Ctrl-C handling (stop after the current frame while tracking);
* :mod:`~latenttune.cli.argtypes`: argument types and shared options.
"""

from __future__ import annotations

from latenttune.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
