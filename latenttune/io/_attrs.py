"""Encoding of HDF5 attributes shared by the writers and readers.

Scalars, strings and numeric arrays are stored as they are. Dictionaries,
lists, tuples and ``None`` are stored as JSON strings (HDF5 attributes cannot
hold nested structures); on reading, a string that holds a JSON object or array
is decoded back, bytes become ``str`` and numpy scalars become Python scalars.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["encode_attr", "decode_attr", "write_attrs", "read_attrs"]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def encode_attr(value: Any) -> Any:
    """Return ``value`` in a form HDF5 can store as an attribute.

    Parameters
    ----------
    value : Any
        A scalar, string, numpy array, or a JSON-serialisable container.

    Returns
    -------
    Any
        ``value`` itself, or its JSON text for dicts, lists, tuples and None.
    """
    if value is None or isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    if isinstance(value, (str, bytes, bool, int, float, np.generic)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return value
    return str(value)


def decode_attr(value: Any) -> Any:
    """Inverse of :func:`encode_attr` (JSON objects/arrays are decoded).

    Parameters
    ----------
    value : Any
        A raw attribute value as h5py returns it.

    Returns
    -------
    Any
        A Python value.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "[") or text == "null":
            try:
                return json.loads(text)
            except ValueError:
                return value
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return [decode_attr(v) for v in value.tolist()]
    return value


def write_attrs(node: Any, attrs: Mapping[str, Any] | None) -> None:
    """Write ``attrs`` onto an h5py group or dataset, encoding each value."""
    if not attrs:
        return
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"`attrs` keys must be non-empty strings, got {key!r}")
        node.attrs[key] = encode_attr(value)


def read_attrs(node: Any) -> dict[str, Any]:
    """Read every attribute of an h5py group or dataset, decoded."""
    return {key: decode_attr(node.attrs[key]) for key in node.attrs.keys()}
