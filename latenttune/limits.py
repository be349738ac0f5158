"""Sizes bounded before they are allocated: sane maxima, the machine's free memory, the address space.

Every size a user or a file can choose (grid sizes, frame counts, steps per frame, threads, the
shapes a file declares, a model's layer widths) is checked here before anything of that size is
made, so a typo or a crafted 2 KB file gets a one-line error naming the rule instead of a request
for terabytes (or an abort inside a native library). Two kinds of rule:

* **sane maxima** (:data:`MAX_OBJECT_GRID`, :data:`MAX_GRID`, :data:`MAX_FRAMES`,
  :data:`MAX_STEPS_PER_FRAME`, :func:`max_threads`, :data:`MAX_PHOTONS`, :data:`MAX_SEED`): far
  beyond any real use, far below what breaks the program;
* **memory** (:func:`check_allocation`): an allocation's lower bound against the memory this
  process can still get, the smaller of the machine's free memory (``MemAvailable`` plus free swap,
  ``/proc/meminfo``) and what the process's address-space limit leaves (``ulimit -v``:
  ``RLIMIT_AS`` minus the address space already mapped). The error names the limit that refuses.

The estimates are lower bounds (what the work needs at least), so a valid input is never refused;
an allocation that still fails later is one line too (the CLI turns memory errors into one line).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from latenttune.validation import check_int

__all__ = [
    "MAX_OBJECT_GRID",
    "MAX_GRID",
    "MAX_FRAMES",
    "MAX_STEPS_PER_FRAME",
    "MAX_PHOTONS",
    "MAX_SEED",
    "MAX_VOXELS",
    "MemoryLimit",
    "max_threads",
    "memory_limits",
    "check_allocation",
    "check_voxels",
    "check_threads",
    "format_bytes",
]

#: Largest object grid n (the diffraction grid is N = 2n): one 1024^3 float32 pattern is 4 GiB.
MAX_OBJECT_GRID = 512
#: Largest diffraction grid N a series, a prepared series or a model may have.
MAX_GRID = 2 * MAX_OBJECT_GRID
#: Most frames a series may declare or a command may make (a time stamp per frame is kept in memory).
MAX_FRAMES = 10_000_000
#: Most cost evaluations per frame a strategy may spend (ES keeps every evaluated latent of a frame).
MAX_STEPS_PER_FRAME = 1_000_000
#: Most expected photons per simulated frame: numpy's Poisson sampler refuses means above about 9.2e18.
MAX_PHOTONS = 1e18
#: Largest random seed: seeds are stored as 64-bit integers in the files they make.
MAX_SEED = 2**63 - 1
#: Most voxels one measured volume may have (2^34: 128 GiB as float64).
MAX_VOXELS = 2**34


def max_threads() -> int:
    """The most CPU threads a command may ask torch for: four per core of this machine."""
    return 4 * (os.cpu_count() or 1)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``"512 GiB"``, ``"3.8 GiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if value >= 100 or unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} EiB"  # pragma: no cover - the loop returns


@dataclass(frozen=True)
class MemoryLimit:
    """How many bytes this process can still allocate, and which limit says so.

    Attributes
    ----------
    available : int
        Bytes still available under this limit.
    name : str
        The limit in words, as the error message names it.
    """

    available: int
    name: str


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes ({} where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _address_space_in_use() -> int:
    """Bytes of address space this process has mapped (``VmSize``), 0 where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _address_space_limit() -> int | None:
    """The soft ``RLIMIT_AS`` in bytes, None when there is none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else int(soft)


def memory_limits() -> list[MemoryLimit]:
    """The limits on what this process can still allocate (none known: an empty list)."""
    limits = []
    info = _meminfo()
    if "MemAvailable" in info:
        free = info["MemAvailable"] + info.get("SwapFree", 0)
        limits.append(MemoryLimit(free, f"the machine's free memory ({format_bytes(free)} available)"))
    soft = _address_space_limit()
    if soft is not None:
        left = max(soft - _address_space_in_use(), 0)
        limits.append(MemoryLimit(left, f"the process's address-space limit (ulimit -v {soft // 1024} kB, "
                                        f"{format_bytes(left)} of it left)"))
    return limits


def check_allocation(what: str, nbytes: float, advice: str = "") -> None:
    """Refuse work that needs at least ``nbytes`` when this process cannot get that much memory.

    Parameters
    ----------
    what : str
        What needs the memory, naming the argument that sets its size (e.g. "`--n` 4096: the
        (2n)^3 wavefield").
    nbytes : float
        A lower bound of the bytes it needs.
    advice : str
        What to change (appended to the message).

    Raises
    ------
    ValueError
        ``nbytes`` exceeds the smallest of :func:`memory_limits`; the message names that limit.
    """
    if not math.isfinite(nbytes):
        raise ValueError(f"{what} needs more memory than any machine has{'; ' + advice if advice else ''}")
    limits = memory_limits()
    if not limits:  # pragma: no cover - no /proc and no address-space limit
        return
    tightest = min(limits, key=lambda limit: limit.available)
    if nbytes > tightest.available:
        raise ValueError(f"{what} needs at least {format_bytes(nbytes)} of memory, more than {tightest.name}"
                         f"{'; ' + advice if advice else ''}")


def check_voxels(what: str, shape: Any, bytes_per_voxel: float, advice: str = "") -> int:
    """The number of voxels of ``shape``, refused above :data:`MAX_VOXELS` or the memory left.

    Parameters
    ----------
    what : str
        What has this shape (a file and dataset, an argument), for the message.
    shape : sequence of int
        The declared shape.
    bytes_per_voxel : float
        A lower bound of the bytes the work needs per voxel.
    advice : str
        What to change.
    """
    voxels = math.prod(int(s) for s in shape)
    if voxels > MAX_VOXELS:
        raise ValueError(f"{what} has shape {tuple(int(s) for s in shape)}: {voxels:,} voxels, more than the "
                         f"{MAX_VOXELS:,} latenttune reads in one volume{'; ' + advice if advice else ''}")
    check_allocation(f"{what} (shape {tuple(int(s) for s in shape)})", voxels * bytes_per_voxel, advice)
    return voxels


def check_threads(threads: Any) -> int:
    """``threads`` as an int in ``[1, max_threads()]`` (ValueError naming the rule otherwise)."""
    return int(check_int("threads", threads, low=1, high=max_threads()))
