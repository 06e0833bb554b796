"""Wire format: one msgpack header frame, then one raw frame per numpy array (zero-copy on send).

Nothing received is ever unpickled: msgpack with `strict_map_key` and no extension types, and arrays are
rebuilt with `np.frombuffer` from a dtype on the allow-list. A PUB socket puts a topic frame first; the
subscriber strips it (`decode(frames[1:])`).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Sequence

import msgpack
import numpy as np

from magicmask.protocol.messages import (COMPATIBLE_VERSIONS, DTYPE_NAMES, DTYPES, KINDS, PROTOCOL_VERSION, Message,
                                         ProtocolError)

_HEADER_KEYS = {"v": int, "k": str, "a": int, "i": int, "s": int, "p": int, "t": float, "b": dict, "x": list}


def new_incarnation() -> int:
    """A random id chosen at process start, so a restarted process is told apart from its last life."""
    return int.from_bytes(os.urandom(6), "little")


def encode(kind: str, body: dict | None = None, arrays: dict[str, np.ndarray] | None = None, *,
           agent: int = -1, incarnation: int = 0, seq: int = 0, policy_version: int = -1,
           sent_at: float | None = None) -> list:
    """Build the frames of a message. Arrays are sent as their own buffers (made contiguous if needed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}; allowed: {', '.join(KINDS)}")
    arrays = arrays or {}
    specs, frames = [], []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        dtype = DTYPE_NAMES.get(arr.dtype)
        if dtype is None:
            raise ValueError(f"array {name!r}: dtype {arr.dtype} not allowed on the wire ({', '.join(DTYPES)}, "
                             "native byte order)")
        specs.append([name, dtype, list(arr.shape)])
        frames.append(memoryview(arr).cast("B") if arr.size else b"")
    header = {"v": PROTOCOL_VERSION, "k": kind, "a": int(agent), "i": int(incarnation), "s": int(seq),
              "p": int(policy_version), "t": float(time.time() if sent_at is None else sent_at),
              "b": body or {}, "x": specs}
    return [msgpack.packb(header, use_bin_type=True), *frames]


def _buf(frame) -> memoryview:
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


# name -> (numpy dtype, itemsize), looked up once: np.dtype("float32") parses the name on every call
_DTYPE_OF = {name: (dtype, dtype.itemsize) for dtype, name in DTYPE_NAMES.items()}


def decode(frames: Sequence[Any], max_bytes: int) -> Message:
    """Parse and structurally check frames; raises ProtocolError (never anything else) on bad input."""
    if not frames:
        raise ProtocolError("malformed", "empty message")
    bufs = [_buf(f) for f in frames]
    total = sum(map(len, bufs))
    if total > max_bytes:
        raise ProtocolError("oversized", f"{total} bytes > limit {max_bytes}")
    try:
        header = msgpack.unpackb(bufs[0], raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several types on garbage
        raise ProtocolError("malformed", f"header is not msgpack: {type(e).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed", "header is not a map")
    if "v" in header and header["v"] not in COMPATIBLE_VERSIONS:
        raise ProtocolError("version", f"protocol version {header['v']!r}; this process speaks "
                            f"{', '.join(map(str, COMPATIBLE_VERSIONS))}: run the same magic-mask release everywhere")
    for key, t in _HEADER_KEYS.items():
        v = header.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) if t is float else (
            isinstance(v, t) and not (t is int and isinstance(v, bool)))
        if not ok:
            raise ProtocolError("malformed", f"header field {key!r} missing or not {t.__name__}")
    if header["k"] not in KINDS:
        raise ProtocolError("kind", f"unknown kind {header['k']!r}")
    specs = header["x"]
    if len(specs) != len(frames) - 1:
        raise ProtocolError("malformed", f"{len(specs)} arrays declared, {len(frames) - 1} frames sent")
    arrays = {}
    for spec, buf in zip(specs, bufs[1:]):
        # msgpack gives plain ints, so `type(d) is int` is the isinstance check without bool
        if (not isinstance(spec, list) or len(spec) != 3 or not isinstance(spec[0], str)
                or spec[1] not in _DTYPE_OF or not isinstance(spec[2], list)
                or not all(type(d) is int and 0 <= d for d in spec[2])):
            raise ProtocolError("malformed", f"bad array spec {spec!r:.100}")
        name, dtype_name, shape = spec
        if name in arrays:
            raise ProtocolError("malformed", f"array {name!r} sent twice")
        dtype, itemsize = _DTYPE_OF[dtype_name]
        n = math.prod(shape) * itemsize  # exact: a Python int cannot wrap round as an int64 product can
        if n != len(buf):
            raise ProtocolError("malformed", f"array {name!r}: {len(buf)} bytes for shape {shape} {dtype_name} ({n})")
        arrays[name] = np.ndarray(shape, dtype, buf) if n else np.zeros(shape, dtype)  # a view, as frombuffer's
    return Message(kind=header["k"], agent=header["a"], incarnation=header["i"], seq=header["s"],
                   policy_version=header["p"], sent_at=float(header["t"]), body=header["b"], arrays=arrays)


class Sender:
    """Stamps a process's identity and a per-sender sequence number on every message it sends."""

    def __init__(self, agent: int = -1, incarnation: int | None = None):
        self.agent = agent
        self.incarnation = new_incarnation() if incarnation is None else incarnation
        self.seq = 0

    def pack(self, kind: str, body: dict | None = None, arrays: dict | None = None, policy_version: int = -1,
             sent_at: float | None = None) -> list:
        self.seq += 1
        return encode(kind, body, arrays, agent=self.agent, incarnation=self.incarnation, seq=self.seq,
                      policy_version=policy_version, sent_at=sent_at)
