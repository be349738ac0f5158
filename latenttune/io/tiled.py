"""Clients of a tiled catalog (a server URL or an embedded SQLite catalog), for reading runs.

Kept out of :mod:`latenttune.bluesky` so that reading a stored run
(:func:`latenttune.io.runs.open_run`) never imports the Bluesky packages. Errors a user can meet
come back as one-line exceptions: :class:`ConnectionError` for a server that cannot be reached,
:class:`PermissionError` for a server that refuses the API key (or needs one),
:class:`FileNotFoundError` for a missing embedded catalog and :class:`ModuleNotFoundError` when
the optional ``tiled`` extra is not installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["CATALOG_FILE", "DATA_DIR", "open_tiled"]

#: File name of an embedded tiled catalog inside its directory.
CATALOG_FILE = "catalog.db"
#: Folder (inside an embedded catalog's directory) of the runs' HDF5 files.
DATA_DIR = "data"


def _is_remote(uri: str) -> bool:
    return str(uri).startswith(("http://", "https://"))


def _catalog_paths(location: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(catalog file, catalog directory) of an embedded catalog given as a directory, file or sqlite URI."""
    text = str(location)
    if text.startswith("sqlite:///"):  # sqlite:///relative.db or sqlite:////absolute.db
        path = Path(text[len("sqlite:///"):])
        return path, path.parent
    path = Path(text)
    if path.is_dir() or path.suffix == "":
        return path / CATALOG_FILE, path
    return path, path.parent


def _require_tiled() -> None:
    """Raise a clear error when the optional ``tiled`` extra is not installed."""
    try:
        import tiled  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            "tiled storage needs the optional 'tiled' extra: pip install 'latenttune[tiled]'"
        ) from exc


def _embedded_client(directory: Path, catalog_file: Path, *, create: bool) -> Any:
    _require_tiled()
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    data = directory / DATA_DIR
    writable = directory / "writable"
    if create:
        for folder in (directory, data, writable):
            folder.mkdir(parents=True, exist_ok=True)
    elif not catalog_file.exists():
        raise FileNotFoundError(f"no tiled catalog at {catalog_file}")
    from sqlalchemy.exc import SQLAlchemyError

    try:
        catalog = from_uri(
            f"sqlite:///{catalog_file.absolute()}",
            writable_storage=[str(writable.absolute()), f"sqlite:///{(directory / 'tables.db').absolute()}"],
            readable_storage=[str(data.absolute())],
            init_if_not_exists=create,
        )
        return from_context(Context.from_app(build_app(catalog)))
    except SQLAlchemyError as exc:  # not an SQLite file, or not a tiled catalog
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise ValueError(f"{str(catalog_file)!r} cannot be opened as a tiled catalog ({detail})") from None


def open_tiled(uri: str | os.PathLike[str], *, api_key: str | None = None) -> Any:
    """A tiled client for a server URL or an embedded catalog.

    Parameters
    ----------
    uri : str or Path
        ``http(s)://...`` (a tiled server; the API key may also come from ``TILED_API_KEY``), or an
        embedded catalog: its directory, its ``catalog.db`` file, or ``sqlite:///.../catalog.db``.
    api_key : str, optional
        API key for a server.

    Raises
    ------
    ConnectionError
        The server cannot be reached (after tiled's own retries; ``TILED_RETRY_ATTEMPTS`` and
        ``TILED_RETRY_TIMEOUT`` set how long it tries).
    PermissionError
        The server needs an API key and none was given, or refuses the one given.
    FileNotFoundError
        No embedded catalog at ``uri``.
    """
    _require_tiled()
    if _is_remote(str(uri)):
        return _remote_client(str(uri), api_key)
    catalog_file, directory = _catalog_paths(uri)
    return _embedded_client(directory, catalog_file, create=False)


def _remote_client(uri: str, api_key: str | None) -> Any:
    """``tiled.client.from_uri`` with its connection and authentication failures as one-line errors."""
    import httpx
    from tiled.client import from_uri

    try:
        return from_uri(uri, api_key=api_key)
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise PermissionError(
                f"the tiled server {uri} refused access (HTTP {status}): give a valid API key "
                "(environment variable TILED_API_KEY)"
            ) from None
        raise ConnectionError(f"the tiled server {uri} answered HTTP {status}") from None
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach the tiled server {uri}: {exc or type(exc).__name__}") from None
    except RuntimeError as exc:  # tiled's own refusal, e.g. "This server requires API key authentication."
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "api key" in first.lower() or "authenticat" in first.lower():
            raise PermissionError(
                f"the tiled server {uri} needs an API key: {first} Set TILED_API_KEY"
            ) from None
        raise ConnectionError(f"cannot open the tiled server {uri}: {first}") from None
