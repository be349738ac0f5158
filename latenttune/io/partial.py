"""Files written under a partial name and renamed onto their target only when complete.

Every writer of the package follows one lifecycle: the data go to a *partial* file next to the
target (same folder, so the rename never crosses file systems); a successful :meth:`close`
renames it atomically onto the target with :func:`os.replace`, so the target is either absent, the
old file, or the complete new one. What happens to the partial file otherwise depends on the
writer:

* ``keep_partial=True`` (results, CXI series): :meth:`~PartialFile.abort` (and a failed close)
  leaves the partial file, readable or resumable; :meth:`~PartialFile.discard` deletes it.
* ``keep_partial=False`` (movies, one-shot exports): any failure deletes it.

:class:`PartialFile` is that lifecycle as a base class; :func:`hidden_partial_path` names a hidden
temporary next to a target; :func:`replace_when_done` is the one-shot form (write the temporary in
a ``with`` block, renamed when the block ends normally, removed on any failure).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import TypeVar

__all__ = ["PartialFile", "hidden_partial_path", "partial_path_of", "replace_when_done"]

logger = logging.getLogger(__name__)

_P = TypeVar("_P", bound="PartialFile")


def partial_path_of(path: str | os.PathLike[str]) -> Path:
    """``path + ".partial"``: the visible partial file of a resumable or readable writer."""
    return Path(str(path) + ".partial")


def hidden_partial_path(path: str | os.PathLike[str], suffix: str | None = None) -> Path:
    """A fresh hidden name next to ``path``: ``.{stem}.{random}.partial{suffix}``.

    The suffix (``path``'s own unless given) is kept last, for tools that pick the format by it
    (ffmpeg) or append it themselves (pyevtk); the random part keeps two writers of the same
    target apart.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix if suffix is None else suffix}")


class PartialFile:
    """Base of a writer whose file is renamed from ``partial_path`` onto ``path`` when complete.

    Parameters
    ----------
    path : str or os.PathLike
        The target file.
    partial_path : str or os.PathLike, optional
        Where the data go until :meth:`close`; default ``path + ".partial"``
        (:func:`partial_path_of`). It must be in the folder of ``path``.
    keep_partial : bool
        Whether :meth:`abort` and a failed :meth:`close` keep the partial file (readable or
        resumable) or delete it.

    Notes
    -----
    Subclasses open their handle on ``partial_path`` and fill in the hooks:

    ``_finish()``
        complete, flush and close the handle before the rename (raise to refuse the close:
        the partial file is then kept or deleted as for :meth:`abort`);
    ``_release()``
        close the handle without completing it (abort, discard, a failed close); it may be
        called after ``_finish`` and must then do nothing harmful;
    ``_on_closed()``, ``_on_aborted()``, ``_on_discarded()``
        report (log) what happened.

    Used as a context manager it closes on success and aborts on an exception.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        partial_path: str | os.PathLike[str] | None = None,
        *,
        keep_partial: bool = True,
    ) -> None:
        self.path = Path(path)
        self.partial_path = partial_path_of(self.path) if partial_path is None else Path(partial_path)
        self.keep_partial = bool(keep_partial)
        self._closed = False

    # -- hooks ------------------------------------------------------------------------
    def _finish(self) -> None:
        """Complete, flush and close the handle before the rename (default: nothing)."""

    def _release(self) -> None:
        """Close the handle without completing it (default: nothing)."""

    def _on_closed(self) -> None:
        """Called after a successful rename (default: nothing)."""

    def _on_aborted(self) -> None:
        """Called after :meth:`abort` kept or deleted the partial file (default: nothing)."""

    def _on_discarded(self) -> None:
        """Called after :meth:`discard` deleted the partial file."""
        logger.info("discarded %s", self.partial_path)

    # -- lifecycle --------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`close`, :meth:`abort` or :meth:`discard` was called."""
        return self._closed

    def _check_open(self, what: str) -> None:
        """Refuse to write to a closed file (one line naming ``what`` and the target)."""
        if self._closed:
            raise ValueError(f"{what} for {self.path} is closed")

    def _finalise(self) -> None:
        """Rename the partial file onto ``path`` atomically."""
        os.replace(self.partial_path, self.path)

    def _drop_partial(self) -> None:
        self.partial_path.unlink(missing_ok=True)

    def close(self) -> Path:
        """Finish the file and rename it onto ``path`` atomically; returns ``path`` (idempotent).

        When finishing or renaming fails, the handle is released and the partial file kept or
        deleted (``keep_partial``), and the error propagates.
        """
        if self._closed:
            return self.path
        self._closed = True
        try:
            self._finish()
            self._finalise()
        except BaseException:
            try:
                self._release()
            except Exception:  # the first error is the one to report
                logger.debug("could not release %s after a failed close", self.partial_path, exc_info=True)
            if not self.keep_partial:
                self._drop_partial()
            raise
        self._on_closed()
        return self.path

    def abort(self) -> None:
        """Stop without writing ``path``: the partial file is kept or deleted (``keep_partial``)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release()
        finally:
            if not self.keep_partial:
                self._drop_partial()
        self._on_aborted()

    def discard(self) -> None:
        """Stop (if still open) and delete the partial file: nothing of the run is kept."""
        try:
            if not self._closed:
                self._closed = True
                self._release()
        finally:
            self._drop_partial()
        self._on_discarded()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def replace_when_done(path: str | os.PathLike[str], suffix: str | None = None) -> PartialFile:
    """One-shot atomic write: a hidden temporary in the folder of ``path``, renamed when done.

    Write the file at ``.partial_path`` inside the ``with`` block; when the block ends normally
    the temporary replaces ``path`` (:func:`os.replace`), on any exception (or a failed rename) it
    is removed and ``path`` is left as it was. ``suffix`` sets the temporary's last suffix
    (:func:`hidden_partial_path`).

    Examples
    --------
    >>> with replace_when_done("d.vti") as tmp:  # doctest: +SKIP
    ...     tmp.partial_path.write_bytes(data)
    """
    return PartialFile(path, hidden_partial_path(path, suffix), keep_partial=False)
