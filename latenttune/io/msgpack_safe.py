"""Decode msgpack run files without pickle: numeric and string ndarrays only.

Bluesky runs stored by :class:`latenttune.bluesky.storage.MsgpackStorage` (suitcase-msgpack)
encode numpy arrays and scalars the msgpack-numpy way: a map ``{b"nd": True, b"type": dtype,
b"kind": b"", b"shape": shape, b"data": bytes}``. ``msgpack_numpy.decode`` unpickles the data of
an object array (``kind b"O"``), so a crafted run file would run code on ``latenttune replay``.
:func:`decode_object` reads the same encoding but builds arrays from raw bytes only, for plain
dtypes (bool, integer, float, complex, bytes, str); anything else raises
:class:`UnsafeContentError` and nothing in the file is executed. Data written by
msgpack-numpy for these dtypes decodes to the same arrays.
"""

from __future__ import annotations

import math
from typing import IO, Any

import numpy as np

__all__ = ["UnsafeContentError", "decode_object", "unpacker"]

#: numpy dtype kinds that decode from raw bytes (no pickle, no Python objects).
SAFE_KINDS = "biufcSU"
_MAX_BUFFER = 2**31 - 1


class UnsafeContentError(ValueError):
    """A msgpack document holds data that cannot be decoded without pickle (or is malformed)."""


def _dtype(descr: Any) -> np.dtype:
    if isinstance(descr, bytes):
        descr = descr.decode("ascii", errors="replace")
    if not isinstance(descr, str):  # a structured dtype (list of fields): msgpack-numpy kind "V"
        raise UnsafeContentError(f"array dtype must be a plain dtype string, got {type(descr).__name__}")
    try:
        dtype = np.dtype(descr)
    except TypeError as exc:
        raise UnsafeContentError(f"array dtype {descr!r} is not a numpy dtype ({exc})") from None
    if dtype.kind not in SAFE_KINDS or dtype.hasobject:
        raise UnsafeContentError(
            f"array dtype {dtype} is refused: only bool, integer, float, complex, bytes and str arrays "
            "are decoded (object arrays would need pickle)"
        )
    return dtype


def _array(obj: dict[Any, Any]) -> np.ndarray:
    kind = obj.get(b"kind", b"")
    if kind not in (b"", ""):
        raise UnsafeContentError(
            f"array of kind {kind!r} is refused: msgpack-numpy stores object and structured arrays with "
            "pickle, which is never run on a data file"
        )
    dtype = _dtype(obj.get(b"type"))
    shape = obj.get(b"shape")
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise UnsafeContentError(f"array shape must be a list of non-negative integers, got {shape!r}")
    data = obj.get(b"data")
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeContentError(f"array data must be bytes, got {type(data).__name__}")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise UnsafeContentError(
            f"array data must hold {expected} bytes for shape {tuple(shape)} of {dtype}, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _scalar(obj: dict[Any, Any]) -> Any:
    dtype = _dtype(obj.get(b"type"))
    data = obj.get(b"data")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise UnsafeContentError(f"numpy scalar of {dtype} must carry {dtype.itemsize} bytes of data")
    return np.frombuffer(data, dtype=dtype)[0]


def decode_object(obj: dict[Any, Any]) -> Any:
    """``object_hook`` for :class:`msgpack.Unpacker`: msgpack-numpy's encodings without pickle.

    Parameters
    ----------
    obj : dict
        A decoded msgpack map.

    Returns
    -------
    Any
        A read-only ndarray, a numpy scalar, a complex number, or ``obj`` unchanged.

    Raises
    ------
    UnsafeContentError
        An encoded array or scalar whose dtype is not plain (object, structured, ...) or whose
        shape and data disagree.
    """
    if b"nd" in obj:
        return _array(obj) if obj[b"nd"] is True else _scalar(obj)
    if b"complex" in obj:
        text = obj.get(b"data")
        text = text.decode("ascii", errors="replace") if isinstance(text, bytes) else text
        try:
            return complex(str(text))
        except ValueError:
            raise UnsafeContentError(f"complex number must be written as text, got {text!r}") from None
    return obj


def unpacker(file: IO[bytes]) -> Any:
    """A :class:`msgpack.Unpacker` over ``file`` that decodes arrays with :func:`decode_object`.

    Parameters
    ----------
    file : binary file object
        Positioned where reading starts.

    Returns
    -------
    msgpack.Unpacker
    """
    import msgpack

    return msgpack.Unpacker(file, object_hook=decode_object, raw=False, max_buffer_size=_MAX_BUFFER)
