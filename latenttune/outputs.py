"""The output guard: check the files a command is about to write before it writes (or reads) any.

Every command that writes (``simulate``, ``prepare``, ``train``, ``train-cycle-encoder``,
``track``, ``replay``, ``export``, ``movie``) and the Bluesky storage call :func:`check_outputs`
first, so that no name choice loses data:

* two outputs that are the same file (``--out r.png`` is also the figure ``r.png``) are refused;
* an output that is one of the inputs is refused, even with ``--overwrite``. Inputs are compared
  as files: a ``FILE:/dataset`` spec is its ``FILE`` (:func:`input_path`), symbolic links are
  followed and hard links recognised (same device and inode), and an existing output inside an
  input folder (a frame of a frame folder) is refused too;
* an output must have the suffix of its kind (:data:`OUTPUT_KINDS`: results ``.h5``, series
  ``.cxi``/``.h5``, exports ``.vti``, movies ``.mp4``/``.gif``), so a results file can never be
  named like the export or movie made from it;
* an output that is a directory, a FIFO, a device or a socket is refused, and so is an input that
  is a FIFO, a device or a socket (reading one would block or never end); a symbolic-link loop is
  answered in one line;
* an output that already exists is refused unless ``overwrite`` is given.

All of it happens before any work. :func:`check_input` is the same rule for one input file
(readers call it before they open anything).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path

__all__ = ["OUTPUT_KINDS", "check_outputs", "check_output_path", "check_input", "input_path", "same_file",
           "file_status"]

PathLike = str | os.PathLike[str]

#: The suffixes each kind of output must have, and the kind in words.
OUTPUT_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "results": ((".h5",), "a results file"),
    "series": ((".cxi", ".h5"), "a CXI series"),
    "export": ((".vti",), "a VTK image"),
    "movie": ((".mp4", ".gif"), "a movie"),
}

_KINDS_OF_FILES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _what(mode: int) -> str:
    """A file's type in words (``"a FIFO (named pipe)"``, ...) from its ``st_mode``."""
    for test, words in _KINDS_OF_FILES:
        if test(mode):
            return words
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def file_status(path: PathLike, label: str) -> os.stat_result | None:
    """``os.stat`` of ``path`` (links followed); None when nothing is there.

    Raises
    ------
    ValueError
        ``path`` is a symbolic-link loop (or a chain too long to follow).
    """
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{label} {os.fspath(path)!r} is a symbolic-link loop: it names no file") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise


def input_path(spec: PathLike | None) -> Path | None:
    """The file (or folder) an input spec reads: ``FILE:/dataset`` -> ``FILE``; None for a URL or None."""
    if spec is None:
        return None
    text = os.fspath(spec)
    if "://" in text:
        return None
    if os.path.lexists(text):
        return Path(text)
    head, sep, tail = text.rpartition(":")
    if sep and head and tail and os.path.lexists(head):
        return Path(head)
    return Path(text)


def _dangling(path: PathLike) -> str:
    """`` (a dangling symbolic link to TARGET)`` when ``path`` is one, else ``""``."""
    if os.path.islink(path):
        try:
            return f" (a dangling symbolic link to {os.readlink(path)!r})"
        except OSError:  # pragma: no cover - removed between the calls
            return " (a dangling symbolic link)"
    return ""


def check_input(path: PathLike, label: str, *, directory: bool = False) -> Path:
    """``path`` if it is a regular file (or, with ``directory``, a folder) that exists.

    Parameters
    ----------
    path : path
        The input.
    label : str
        What it is, for the message (e.g. ``"`path`"``, ``"the input series"``).
    directory : bool
        Accept a folder too.

    Raises
    ------
    FileNotFoundError
        Nothing is there, or ``path`` is a dangling symbolic link (said so).
    ValueError
        A symbolic-link loop, a FIFO, a device or a socket (reading one would block or never end),
        or a folder where a file is needed.
    """
    st = file_status(path, label)
    if st is None:
        raise FileNotFoundError(f"{label} does not exist: {os.fspath(path)}{_dangling(path)}")
    if stat.S_ISREG(st.st_mode) or (directory and stat.S_ISDIR(st.st_mode)):
        return Path(path)
    need = "a regular file or a folder" if directory else "a regular file"
    raise ValueError(f"{label} {os.fspath(path)!r} is {_what(st.st_mode)}, not {need}: latenttune reads only "
                     f"{'files and folders' if directory else 'regular files'} (a FIFO or device could block forever)")


def check_output_path(path: PathLike, label: str, kind: str | None = None) -> Path:
    """Refuse an output that is a folder, a FIFO, a device, a socket or a link loop, or has the wrong suffix.

    Parameters
    ----------
    path : path
        The output.
    label : str
        What it is, for the message (e.g. ``"--out"``).
    kind : str, optional
        A key of :data:`OUTPUT_KINDS`: the suffixes ``path`` must end in.
    """
    st = file_status(path, label)
    text = os.fspath(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        example = f" (e.g. {os.path.join(text, 'out' + OUTPUT_KINDS[kind][0][0])!r})" if kind else ""
        raise ValueError(f"{label} {text!r} is a directory: name a file in it instead{example}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{label} {text!r} is {_what(st.st_mode)}, not a regular file: latenttune writes only "
                         "regular files; choose another name")
    if kind is not None:
        suffixes, words = OUTPUT_KINDS[kind]
        if Path(text).suffix.lower() not in suffixes:
            raise ValueError(f"{label} {text!r} must end in {' or '.join(suffixes)} ({words}), got suffix "
                             f"{Path(text).suffix or '(none)'!r}")
    return Path(text)


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (same path once links are followed, or the same inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:  # missing, dangling or a loop: no file to share
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _inside(path: Path, folder: Path) -> bool:
    """True when the existing file ``path`` lies inside ``folder`` (links followed)."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root and real != root


def _check_sources(sources: list[tuple[str, Path]]) -> list[tuple[str, Path, bool]]:
    """Every input that exists, checked (no loop, FIFO, device or socket): (label, path, is a folder)."""
    checked = []
    for label, source in sources:
        st = file_status(source, label)
        if st is None:
            if os.path.islink(source):
                raise FileNotFoundError(f"{label} does not exist: {source}{_dangling(source)}")
            continue  # the reader says what is missing, in its own words
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            check_input(source, label, directory=True)  # the one-line refusal
        checked.append((label, source, stat.S_ISDIR(st.st_mode)))
    return checked


def check_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[str, PathLike | None] | None = None,
    *,
    overwrite: bool = False,
    may_exist: Collection[str] = (),
    kinds: Mapping[str, str] | None = None,
) -> None:
    """Refuse output names that collide with each other or with an input, or would replace a file.

    Parameters
    ----------
    outputs : mapping of str to path
        What each output is (used in the message, e.g. ``"the summary figure (OUT.png)"``) and
        its path; None entries are ignored.
    inputs : mapping of str to path, optional
        What each input is and its path or spec (``FILE:/dataset`` specs are their ``FILE``; None
        entries and URLs are ignored).
    overwrite : bool
        Allow replacing existing outputs (never an input).
    may_exist : collection of str
        Labels of outputs that may exist without ``overwrite`` (their writer decides, e.g. the
        ``.partial`` file of a run to resume).
    kinds : mapping of str to str, optional
        The kind (:data:`OUTPUT_KINDS`) of outputs, by label: their suffix rule.

    Raises
    ------
    ValueError
        Two outputs are the same file, an output is an input (or an existing file inside an input
        folder), an output is a folder or not a regular file or has the wrong suffix, a path is a
        symbolic-link loop, or an input is a FIFO, a device or a socket.
    FileNotFoundError
        An input is a dangling symbolic link.
    FileExistsError
        An output exists and ``overwrite`` is False.
    """
    named = [(label, Path(path)) for label, path in outputs.items() if path is not None]
    for label, path in named:
        file_status(path, label)  # a loop is answered before anything compares it
    sources = _check_sources([(label, p) for label, spec in (inputs or {}).items()
                              if (p := input_path(spec)) is not None])
    for i, (label, path) in enumerate(named):
        for other_label, other in named[i + 1:]:
            if same_file(path, other):
                raise ValueError(
                    f"{label} {str(path)!r} is also {other_label}: one would overwrite the other; choose another --out"
                )
        for source_label, source, folder in sources:
            if same_file(path, source):
                raise ValueError(
                    f"{label} {str(path)!r} is {source_label}: refusing to write over an input "
                    "(also with --overwrite); choose another --out"
                )
            if folder and os.path.lexists(path) and _inside(path, source):
                raise ValueError(
                    f"{label} {str(path)!r} is a file inside {source_label} {str(source)!r}: refusing to write over "
                    "a file in an input folder (also with --overwrite); choose another --out"
                )
    for label, path in named:
        check_output_path(path, label, (kinds or {}).get(label))
    for label, path in named:
        if path.exists() and not overwrite and label not in may_exist:
            raise FileExistsError(f"{label} {str(path)!r} exists; pass --overwrite to replace it")
