"""Check the files a command is about to write before it writes any of them.

A command that writes several files (``latenttune replay --out OUT`` writes ``OUT``,
``OUT.partial`` and the summary figure ``OUT.png``; ``latenttune track`` also the simulated series
``OUT.series.cxi``) calls :func:`check_outputs` first, so that no name choice loses data:

* two outputs that are the same file (``--out r.png`` is also the figure ``r.png``) are refused;
* an output that is one of the inputs (the series, the model) is refused, even with
  ``--overwrite``;
* an output that already exists is refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

__all__ = ["check_outputs", "same_file"]

PathLike = str | os.PathLike[str]


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (same resolved path, or the same inode)."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:  # pragma: no cover - vanished between the calls
        return False


def check_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[str, PathLike | None] | None = None,
    *,
    overwrite: bool = False,
    may_exist: Collection[str] = (),
) -> None:
    """Refuse output names that collide with each other or with an input, or would replace a file.

    Parameters
    ----------
    outputs : mapping of str to path
        What each output is (used in the message, e.g. ``"the summary figure (OUT.png)"``) and
        its path; None entries are ignored.
    inputs : mapping of str to path, optional
        What each input is and its path (None entries, e.g. a URL, are ignored).
    overwrite : bool
        Allow replacing existing outputs (never an input).
    may_exist : collection of str
        Labels of outputs that may exist without ``overwrite`` (their writer decides, e.g. the
        ``.partial`` file of a run to resume).

    Raises
    ------
    ValueError
        Two outputs are the same file, or an output is an input.
    FileExistsError
        An output exists and ``overwrite`` is False.
    """
    named = [(label, Path(path)) for label, path in outputs.items() if path is not None]
    sources = [(label, Path(path)) for label, path in (inputs or {}).items() if path is not None]
    for i, (label, path) in enumerate(named):
        for other_label, other in named[i + 1:]:
            if same_file(path, other):
                raise ValueError(
                    f"{label} {str(path)!r} is also {other_label}: one would overwrite the other; choose another --out"
                )
        for source_label, source in sources:
            if same_file(path, source):
                raise ValueError(
                    f"{label} {str(path)!r} is {source_label}: refusing to write over an input "
                    "(also with --overwrite); choose another --out"
                )
    for label, path in named:
        if path.exists() and not overwrite and label not in may_exist:
            raise FileExistsError(f"{label} {str(path)!r} exists; pass --overwrite to replace it")
