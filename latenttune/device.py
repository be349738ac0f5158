"""Where torch runs: check a requested device before anything is moved to it, and how many threads."""

from __future__ import annotations

import torch

from latenttune.limits import check_threads

__all__ = ["check_device", "set_threads"]


def check_device(device: str | torch.device) -> torch.device:
    """The torch device for ``device``, or a one-line error when this machine cannot provide it.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        ``device`` is not a torch device, or asks for a GPU that is not there.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"`device` must be 'cpu' or 'cuda', got {device!r} ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"`device` {str(device)!r} needs a CUDA GPU, but torch finds none on this machine "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"`device` {str(device)!r} does not exist: this machine has {count} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"`device` must be 'cpu' or 'cuda', got {str(device)!r}")
    return dev


def set_threads(threads: int | None) -> int:
    """Run torch's CPU operations on ``threads`` threads (intra-op); None keeps torch's choice.

    On a busy machine fewer threads than cores are steadier: in this project's benchmarks on a
    2-core CPU shared with another job, one torch thread timed more evenly than two.

    Parameters
    ----------
    threads : int or None
        Number of threads, from 1 to :func:`latenttune.limits.max_threads` (four per CPU core: more
        only adds contention, and a huge number aborts inside the BLAS library).

    Returns
    -------
    int
        The number of threads torch now uses.

    Raises
    ------
    ValueError
        ``threads`` is not an integer in that range.
    """
    if threads is not None:
        torch.set_num_threads(check_threads(threads))
    return torch.get_num_threads()
