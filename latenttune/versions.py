"""Installed package versions for provenance (results files, run metadata, benchmark records).

Versions come from the installed distributions' metadata (:mod:`importlib.metadata`); no package is
imported to ask it.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["CORE_DISTRIBUTIONS", "UNKNOWN", "installed_version", "versions"]

#: Distributions whose versions decide the numbers of every run.
CORE_DISTRIBUTIONS = ("latenttune", "torch", "numpy", "scipy", "h5py")
#: What :func:`versions` gives for a distribution that is not installed.
UNKNOWN = "unknown"


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (e.g. ``"cohere-core"``), None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(*extra: str) -> dict[str, str]:
    """Versions of the core distributions and of ``extra`` ones, by distribution name.

    Parameters
    ----------
    *extra : str
        Further distribution names (e.g. ``"bluesky", "ophyd", "event-model"``), after the core
        set :data:`CORE_DISTRIBUTIONS` (latenttune, torch, numpy, scipy, h5py); a name given twice
        appears once.

    Returns
    -------
    dict[str, str]
        Name to version, in that order; ``"unknown"`` for a distribution that is not installed.
    """
    out: dict[str, str] = {}
    for name in (*CORE_DISTRIBUTIONS, *extra):
        if name not in out:
            version = installed_version(name)
            out[name] = UNKNOWN if version is None else version
    return out
