"""The policy-server wire protocol (version 1): msgpack maps in binary WebSocket frames.

Nothing received is ever unpickled: a message decodes to maps, lists, strings, numbers, booleans, nil and
byte strings only, and numpy arrays travel as ``{"__nd__": 1, "dtype": "<f4", "shape": [..], "data": bytes}``
with a whitelisted numeric dtype whose byte count must match the shape exactly. See docs/scaleout.md for the
message table; :func:`check_request` is its executable form on the server side.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # 16 MiB: a few 512x512 RGB cameras, with room to spare
MAX_NDIM = 8
ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float; never object, void, string or datetime
REQUEST_TYPES = ("hello", "reset", "infer", "stats", "bye")
ND_KEY = "__nd__"


class ProtocolError(ValueError):
    """A malformed or disallowed message; the message says what and where."""


# ----- encoding -----
def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise TypeError(f"array dtype {obj.dtype} cannot be sent (allowed kinds: bool, int, uint, float)")
        a = np.ascontiguousarray(obj)
        return {ND_KEY: 1, "dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in a policy-server message")


def encode(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, default=_default, use_bin_type=True)


# ----- decoding -----
def _array(d: dict[str, Any]) -> np.ndarray:
    dtype, shape, data = d.get("dtype"), d.get("shape"), d.get("data")
    if not isinstance(dtype, str) or len(dtype) > 8:
        raise ProtocolError(f"array dtype must be a short string such as '<f4', got {dtype!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ProtocolError(f"array dtype {dtype!r} is not a numpy dtype") from None
    if dt.kind not in ALLOWED_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise ProtocolError(f"array dtype {dtype!r} is not allowed (bool, int, uint, float only)")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ProtocolError(f"array shape must be a list of at most {MAX_NDIM} non-negative ints, got {shape!r}")
    if not isinstance(data, bytes):
        raise ProtocolError(f"array data must be bytes, got {type(data).__name__}")
    expected = math.prod(shape) * dt.itemsize
    if expected != len(data):
        raise ProtocolError(f"array of dtype {dtype} and shape {shape} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()  # a writable copy, owned by the receiver


def _hook(d: dict[str, Any]) -> Any:
    if ND_KEY in d:
        return _array(d)
    return d


def decode(data: bytes | bytearray | memoryview, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """bytes -> message map. Raises :class:`ProtocolError` (never anything else) on bad input."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected a binary frame, got {type(data).__name__} (text frames are not accepted)")
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        msg = msgpack.unpackb(bytes(data), raw=False, object_hook=_hook, strict_map_key=True)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 — msgpack raises several types on garbage
        raise ProtocolError(f"not a msgpack message: {type(e).__name__}: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a map, got {type(msg).__name__}")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("a message needs a string field 'type'")
    return msg


def _need(msg: dict, key: str, types: tuple[type, ...], what: str) -> Any:
    v = msg.get(key)
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise ProtocolError(f"{msg['type']!r} needs {key!r} as {what}, got {v!r:.80}")
    return v


def check_request(msg: dict[str, Any]) -> None:
    """Validate a client request's fields (types and shapes only; policies check the content)."""
    t = msg["type"]
    if t not in REQUEST_TYPES:
        raise ProtocolError(f"unknown message type {t!r}; expected one of {', '.join(REQUEST_TYPES)}")
    if t == "hello":
        _need(msg, "protocol", (int,), "an int")
    elif t == "reset":
        task = _need(msg, "task", (dict,), "a map {name, instruction, index}")
        for key, types in (("name", (str,)), ("instruction", (str,)), ("index", (int,))):
            if not isinstance(task.get(key), types) or isinstance(task.get(key), bool):
                raise ProtocolError(f"'reset' needs task.{key} as {types[0].__name__}, got {task.get(key)!r:.80}")
        _need(msg, "seed", (int,), "an int")
    elif t == "infer":
        obs = _need(msg, "obs", (dict,), "a map")
        images = obs.get("images")
        if not isinstance(images, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                   for k, v in images.items()):
            raise ProtocolError("'infer' needs obs.images as a map of camera name -> array")
        if not isinstance(obs.get("proprio"), np.ndarray):
            raise ProtocolError("'infer' needs obs.proprio as an array")
        if not isinstance(obs.get("instruction"), str):
            raise ProtocolError("'infer' needs obs.instruction as a string")


def error(code: str, message: str) -> dict[str, Any]:
    """An error reply. Codes: malformed, version, auth, state, policy, busy."""
    return {"type": "error", "code": code, "message": message[:2000]}
