"""The study's one-factor-at-a-time grid: its axes (the comm field each sets, allowed values, the default and
full value lists), the check of given values, and the cells with their config overrides."""
from __future__ import annotations

import math
from dataclasses import dataclass

TOPOLOGIES = ("full", "ring", "star", "random-k")


class StudyError(ValueError):
    """A bad study option; the message names the option (and config field), the value and what is allowed."""


@dataclass(frozen=True)
class Axis:
    """One factor of the study: the config field it sets, its value check, and its default and full values."""
    name: str
    field: str
    allowed: str                   # said in errors and help
    baseline: str                  # the value of the baseline cell (not repeated as a cell of the axis)
    default: tuple[str, ...]
    full: tuple[str, ...]
    lo: float | None = None        # numeric axes: lo <= v (< hi when hi_open, else <= hi)
    hi: float | None = None
    hi_open: bool = False
    choices: tuple[str, ...] = ()  # categorical axes


AXES: dict[str, Axis] = {a.name: a for a in (
    Axis("latency", "comm.latency_ms", "milliseconds >= 0", "0", ("100", "1000"), ("10", "100", "1000"), lo=0.0),
    Axis("loss", "comm.loss", "probabilities in [0, 1)", "0", ("0.5", "0.9"), ("0.1", "0.3", "0.5", "0.9"),
         lo=0.0, hi=1.0, hi_open=True),
    Axis("burst", "comm.loss", "probabilities in [0, 1)", "0", ("0.5",), ("0.1", "0.3", "0.5", "0.9"),
         lo=0.0, hi=1.0, hi_open=True),
    Axis("bandwidth", "comm.bandwidth_bps", "bytes per second >= 0 (0: no cap)", "0", ("10000",),
         ("100000", "30000", "10000"), lo=0.0),
    Axis("topology", "comm.topology", ", ".join(TOPOLOGIES), "full", ("ring", "star", "random-k"),
         ("ring", "star", "random-k"), choices=TOPOLOGIES),
)}


def _check_value(ax: Axis, axis: str, v: str) -> str:
    """One value of an axis, normalised ('100.0' -> '100'); StudyError naming the option, field and range."""
    if ax.choices:
        if v not in ax.choices:
            raise StudyError(f"--{axis} ({ax.field}): {v!r} is not allowed; allowed: {ax.allowed}")
        return v
    try:
        x = float(v)
    except ValueError:
        raise StudyError(f"--{axis} ({ax.field}): {v!r} is not a number; allowed: {ax.allowed}") from None
    too_high = ax.hi is not None and (x >= ax.hi if ax.hi_open else x > ax.hi)
    if not math.isfinite(x) or x < ax.lo or too_high:
        raise StudyError(f"--{axis} ({ax.field}): {v!r} is out of range; allowed: {ax.allowed}")
    return f"{x:g}"


def parse_values(axis: str, text: str) -> list[str]:
    """Comma-separated values of one axis, checked and normalised ('100.0' -> '100'); StudyError otherwise."""
    ax = AXES[axis]
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items:
        raise StudyError(f"--{axis} ({ax.field}): no values given; allowed: {ax.allowed}")
    return list(dict.fromkeys(_check_value(ax, axis, v) for v in items))  # repeated values would only repeat runs


@dataclass(frozen=True)
class Cell:
    """One configuration of the study: its label (folder and table name), axis, value and config overrides."""
    label: str
    axis: str          # "baseline", "nocomm" or an axis name
    value: str
    overrides: tuple[str, ...]


def _axis_cell(name: str, v: str, jitter: float, random_k: int) -> Cell:
    """The cell that sets axis `name` to `v` and leaves every other comm field as the baseline has it."""
    if name == "latency":
        return Cell(f"latency={v}ms", name, v, (f"comm.latency_ms={v}", f"comm.jitter_ms={float(v) * jitter:g}"))
    if name in ("loss", "burst"):
        model = "iid" if name == "loss" else "bursty"
        return Cell(f"{name}={v}", name, v, (f"comm.loss={v}", f"comm.loss_model={model}"))
    if name == "bandwidth":
        return Cell(f"bandwidth={v}B/s", name, v, (f"comm.bandwidth_bps={v}",))
    if v == "random-k":
        return Cell(f"topology=random-{random_k}", name, v, ("comm.topology=random-k", f"comm.random_k={random_k}"))
    return Cell(f"topology={v}", name, v, (f"comm.topology={v}",))


def build_grid(axes: list[str], values: dict[str, list[str]], jitter: float, random_k: int,
               nocomm: bool) -> list[Cell]:
    """The one-factor-at-a-time grid: baseline, NoComm (if asked), then per axis one cell per non-baseline value.

    Latency cells add jitter = `jitter` x latency; `loss` cells lose messages independently (iid), `burst`
    cells in Gilbert-Elliott bursts of mean length comm.burst_len at the same stationary rate; the random-k
    topology uses comm.random_k = `random_k`.
    """
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        raise StudyError(f"--axes: {','.join(unknown)} is not allowed; allowed: a comma-separated subset of "
                         f"{', '.join(AXES)}")
    if not 0.0 <= jitter <= 10.0:
        raise StudyError(f"--jitter (comm.jitter_ms as a fraction of the latency): {jitter!r} is out of range; "
                         "allowed: 0 to 10")
    if random_k < 1:
        raise StudyError(f"--random-k (comm.random_k): {random_k!r} is out of range; allowed: integers >= 1")
    cells = [Cell("baseline", "baseline", "", ())]
    if nocomm:
        cells.append(Cell("nocomm", "nocomm", "", ("comm.enabled=false",)))
    cells += [_axis_cell(name, v, jitter, random_k) for name in axes for v in values[name]
              if v != AXES[name].baseline]  # the baseline value is the baseline cell
    return cells
