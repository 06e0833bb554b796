"""Message kinds and their schemas: what each kind's header body and arrays must look like.

Every message is a msgpack header (see `codec.py`) plus one raw frame per array. The schema of a kind
names its body fields with their types and its arrays with dtype and shape. Shapes use symbols that the
receiver binds from its run config (`T` fragment length, `E` env copies, `A` actions, `K` key size,
`F` bytes of a finder bitmap, `obs` the observation shape); an int is that length; any other symbol must be
the same wherever it appears in one message.

A fragment's per-step columns of one dtype travel as one block (`FRAGMENT_FLOATS` rows of `floats`,
`FRAGMENT_FLAGS` rows of `flags`, `FRAGMENT_BOOT` rows of `boot`): the receiver's decode and validate cost
is per array (~5-10 us each in Python), and 18 columns as 3 blocks took a fragment's from 21 arrays to 6
(docs/BENCHMARKS.md). `fragment_columns` gives the columns back by name, as views.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# 3: a fragment's per-step columns travel as three blocks (floats, flags, boot) instead of 18 arrays
# 2: a snapshot's finders are a packed bitmap per entry (1: an int64 bit set, <= 64 agents)
PROTOCOL_VERSION = 3
# Versions a receiver accepts: exactly its own (the format has no optional parts yet).
COMPATIBLE_VERSIONS = (PROTOCOL_VERSION,)

FRAGMENT, REPORT, SNAPSHOT, WEIGHTS, HEARTBEAT, STOP = (
    "Fragment", "CriticalReport", "CriticalSnapshot", "Weights", "Heartbeat", "Stop")
KINDS = (FRAGMENT, REPORT, SNAPSHOT, WEIGHTS, HEARTBEAT, STOP)

DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
# dtype -> its name in DTYPES (native byte order only): a dict lookup, because numpy 2's `dtype.name` is
# computed in Python on every access (2-6 us), which was most of the cost of encoding a small message
DTYPE_NAMES = {np.dtype(d): d for d in DTYPES}


class ProtocolError(ValueError):
    """A received message is not acceptable; `cause` is the metric label, the text says why."""

    def __init__(self, cause: str, detail: str):
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


@dataclass
class Message:
    kind: str
    agent: int
    incarnation: int
    seq: int
    policy_version: int
    sent_at: float
    body: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Schema:
    body: dict[str, type | tuple]                     # required body fields and their types
    arrays: dict[str, tuple[str, tuple]] | None = None  # name -> (dtype, shape spec); None: free-form


_STEP = ("T", "E")
FRAGMENT_FLOATS = ("logp_mu", "logp_pi", "values", "mask_values", "rewards", "final_values", "final_mask_values",
                   "m", "eps")
FRAGMENT_FLAGS = ("terminated", "truncated", "perturbed",
                  "masked",        # the mask's coin was part of the behaviour distribution
                  "mask_applied",  # ... and decided the action (masked and not epsilon-random)
                  "eps_random", "guided")
FRAGMENT_BOOT = ("boot_values", "boot_mask_values")   # [E]: the values of the observations after the fragment
# every column a learner reads, in this order; the [T, E, ...] ones, then the [E] ones
FRAGMENT_COLUMNS = ("obs", "actions", "legal", *FRAGMENT_FLOATS, *FRAGMENT_FLAGS, *FRAGMENT_BOOT)
SCHEMAS: dict[str, Schema] = {
    FRAGMENT: Schema(
        body={"episodes": list, "env_steps": int, "eval": dict},
        arrays={
            "obs": ("obs_dtype", ("T", "E", "*obs")),
            "actions": ("int64", _STEP),
            "legal": ("bool", ("T", "E", "A")),
            "floats": ("float32", (len(FRAGMENT_FLOATS), "T", "E")),
            "flags": ("bool", (len(FRAGMENT_FLAGS), "T", "E")),
            "boot": ("float32", (len(FRAGMENT_BOOT), "E")),
        }),
    REPORT: Schema(
        body={"env_steps": int},
        arrays={
            "keys": ("float32", ("N", "K")),
            "scores": ("float32", ("N",)),
            "steps": ("int64", ("N",)),
            "positions": ("int32", ("N",)),
        }),
    SNAPSHOT: Schema(
        body={"created_at": float, "clock": int, "receiver": int},
        arrays={
            "keys": ("float32", ("N", "K")),
            "scores": ("float32", ("N",)),
            "finders": ("uint8", ("N", "F")),  # who reported each state: see finder_bytes
        }),
    WEIGHTS: Schema(body={"target": int}, arrays=None),
    HEARTBEAT: Schema(body={"role": str}, arrays=None),
    STOP: Schema(body={"reason": str}, arrays={}),
}


def finder_bytes(agents: int) -> int:
    """Width F of a snapshot's `finders` rows for a run of `agents` agents: one bit per agent, agent i at bit
    i % 8 of byte i // 8 (numpy's packbits with bitorder="little"). A bitmap rather than a list of ids, so
    every row has the same width and the schema checks it (receivers bind F from run.agents)."""
    return (int(agents) + 7) // 8


def finder_mask(ids, agents: int) -> np.ndarray:
    """The packed finder row (uint8[F]) with the bits of `ids` set; ids outside 0..agents-1 are refused."""
    ids = np.fromiter(ids, np.int64)
    if ids.size and not (0 <= ids.min() and ids.max() < agents):
        raise ValueError(f"agent ids {sorted(set(ids[(ids < 0) | (ids >= agents)].tolist()))[:5]} are not in "
                         f"0..{agents - 1}")
    bits = np.zeros(finder_bytes(agents) * 8, bool)
    bits[ids] = True
    return np.packbits(bits, bitorder="little")


def finder_ids(row: np.ndarray) -> list[int]:
    """The agent ids whose bits are set in one packed finder row."""
    return np.flatnonzero(np.unpackbits(np.asarray(row, np.uint8), bitorder="little")).tolist()


def snapshot_topic(receiver: int) -> bytes:
    """The PUB topic of `receiver`'s snapshots. SUB matches topics by prefix, so the id is closed with "/":
    b"snap/1" would also take the snapshots of agents 10-19, 100-199, ..."""
    return b"snap/%d/" % receiver


def fragment_columns(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A fragment's columns by name (`FRAGMENT_COLUMNS`), the blocks' rows as views (nothing is copied)."""
    cols = {"obs": arrays["obs"], "actions": arrays["actions"], "legal": arrays["legal"]}
    for block, names in (("floats", FRAGMENT_FLOATS), ("flags", FRAGMENT_FLAGS), ("boot", FRAGMENT_BOOT)):
        cols.update(zip(names, arrays[block]))
    return cols


def _type_ok(v: Any, t) -> bool:
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, t)


def validate(msg: Message, context: dict[str, Any], allowed_kinds=KINDS) -> Message:
    """Check a decoded message against its kind's schema and the receiver's run context.

    `context` binds shape symbols (`T`, `E`, `A`, `K`, `obs`) and `obs_dtype`; unbound symbols are free but
    consistent. Raises ProtocolError with the cause used as the drop-metric label.
    """
    if msg.kind not in allowed_kinds:
        raise ProtocolError("kind", f"kind {msg.kind!r} is not accepted on this socket (accepted: {', '.join(allowed_kinds)})")
    schema = SCHEMAS[msg.kind]
    for name, t in schema.body.items():
        if name not in msg.body:
            raise ProtocolError("schema", f"{msg.kind}: body field {name!r} missing")
        if not _type_ok(msg.body[name], t):
            raise ProtocolError("schema", f"{msg.kind}: body field {name!r}={msg.body[name]!r:.80} is not {t}")
    if schema.arrays is None:
        return msg
    if set(msg.arrays) != set(schema.arrays):
        missing = sorted(set(schema.arrays) - set(msg.arrays))
        extra = sorted(set(msg.arrays) - set(schema.arrays))
        raise ProtocolError("schema", f"{msg.kind}: arrays missing {missing}, unexpected {extra}")
    free: dict[str, int] = {}
    obs_dtype = context.get("obs_dtype", "float32")
    with np.errstate(over="ignore", invalid="ignore"):  # for _all_finite's sums, once per message
        for name, (dtype, shape) in schema.arrays.items():
            arr = msg.arrays[name]
            want_dtype = obs_dtype if dtype == "obs_dtype" else dtype
            if DTYPE_NAMES.get(arr.dtype) != want_dtype:
                raise ProtocolError("dtype", f"{msg.kind}.{name}: dtype {arr.dtype.name}, expected {want_dtype}")
            want: list[int | None] = []
            for sym in shape:
                if type(sym) is int:
                    want.append(sym)
                elif sym == "*obs":
                    want.extend(context["obs"]) if "obs" in context else want.extend([None] * (arr.ndim - len(shape) + 1))
                elif sym in context:
                    want.append(int(context[sym]))
                else:
                    want.append(free.setdefault(sym, arr.shape[len(want)] if arr.ndim > len(want) else -1))
            # equal tuples settle it; otherwise the element-wise rule (None: any length)
            if arr.shape != tuple(want) and (arr.ndim != len(want) or any(
                    w is not None and w != s for w, s in zip(want, arr.shape))):
                raise ProtocolError("shape", f"{msg.kind}.{name}: shape {list(arr.shape)}, expected {want}")
            if arr.dtype.kind == "f" and not _all_finite(arr):
                raise ProtocolError("value", f"{msg.kind}.{name}: contains NaN or infinity")
    return msg


def _all_finite(arr: np.ndarray) -> bool:
    """Every element finite. On a small array, one sum settles it in a single call: a NaN or infinity makes
    the sum NaN or infinite, and only a sum that is not finite (which finite elements can also give, by
    overflow) needs the element-wise check; on a large one isfinite's vectorised pass is faster than the
    pairwise sum (0.7 MB of observations: 22 us against 32). The caller silences the overflow warnings."""
    if arr.size > 8192:
        return bool(np.isfinite(arr).all())
    return math.isfinite(np.add.reduce(arr, axis=None)) or bool(np.isfinite(arr).all())
