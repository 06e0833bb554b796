"""`magicmask commstudy`: how the channel between the broker and the actors (latency, loss, bandwidth,
topology: the impairment model of broker/impairment.py) changes learning and explanations.

Design: one factor at a time. A baseline cell (the config's comm settings: with the presets, sharing on
and no impairment) and, for every selected axis (latency with jitter, iid loss, bursty loss, bandwidth cap,
topology), one cell per value with only that axis changed; plus the NoComm ablation (comm.enabled=false) as
the reference that tells whether sharing matters at all. A full factorial grid would multiply the runs
(4 latencies x 9 losses x 4 caps x 4 topologies x seeds) beyond any 2-core budget, and the question asked is
"what does each impairment do", which the one-factor design answers.

Every cell is trained for every seed and explained by `run_sweep` (explain/compare.py: `magicmask run` in a
subprocess with free ports, then `magicmask explain`), one run after the other (the runs share the machine's
cores; parallel runs would only slow each other down and distort the timings). Per run it reads:
  metrics.jsonl           the learner's rows: the actors' evaluation returns (greedy, and with the mask in
                          its explaining mode) per agent at its env steps, and the actors' cumulative
                          snapshot-use figures (body "comm" of their fragments: received, applied, gaps,
                          delivery delay, age of the snapshot in use at each step, stale steps, guided steps)
  critical/snapshots.jsonl  the broker's rounds and which receivers the loss model dropped in each
  report/metrics.json     explain's MAGIC-MASK metrics (fidelity score at K = 10%, inter-agent fidelity,
                          precision at k, final average return)
A quantity a run does not have (no evaluations, explain failed, comm off: no snapshot in use) is left empty,
never filled in. The study folder gets:
  commstudy_runs.csv      one row per run (cell, seed) with every quantity
  commstudy.csv           one row per cell: mean, sample standard deviation and count of every quantity
  commstudy.md            the same as tables, with the plan, target, definitions and wall time
  index.html              the figures (embedded PNGs: one self-contained file) and the tables
  img/*.png               the figures as files (for docs/)
  study.json              the plan, the target and the wall time
  cells/<cell>/           run_sweep's output per cell (runs/default/seed<s>/ run directories, sweep.md)
"""
from __future__ import annotations

import argparse
import base64
import csv
import datetime as _dt
import io
import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from magicmask.compare import _safe, _stats, cell_label, run_sweep
from magicmask.protocol import config as C

DEFAULT_CONFIG = "deploy/configs/commstudy-gates.yaml"
TOPOLOGIES = ("full", "ring", "star", "random-k")


class StudyError(ValueError):
    """A bad study option; the message names the option (and config field), the value and what is allowed."""


# ---------------- the grid ----------------
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


def parse_values(axis: str, text: str) -> list[str]:
    """Comma-separated values of one axis, checked and normalised ('100.0' -> '100'); StudyError otherwise."""
    ax = AXES[axis]
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items:
        raise StudyError(f"--{axis} ({ax.field}): no values given; allowed: {ax.allowed}")
    out = []
    for v in items:
        if ax.choices:
            if v not in ax.choices:
                raise StudyError(f"--{axis} ({ax.field}): {v!r} is not allowed; allowed: {ax.allowed}")
            out.append(v)
            continue
        try:
            x = float(v)
        except ValueError:
            raise StudyError(f"--{axis} ({ax.field}): {v!r} is not a number; allowed: {ax.allowed}") from None
        too_high = ax.hi is not None and (x >= ax.hi if ax.hi_open else x > ax.hi)
        if not math.isfinite(x) or x < ax.lo or too_high:
            raise StudyError(f"--{axis} ({ax.field}): {v!r} is out of range; allowed: {ax.allowed}")
        out.append(f"{x:g}")
    return list(dict.fromkeys(out))  # repeated values would only repeat runs


@dataclass(frozen=True)
class Cell:
    """One configuration of the study: its label (folder and table name), axis, value and config overrides."""
    label: str
    axis: str          # "baseline", "nocomm" or an axis name
    value: str
    overrides: tuple[str, ...]


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
    for name in axes:
        ax = AXES[name]
        for v in values[name]:
            if v == ax.baseline:
                continue  # that is the baseline cell
            if name == "latency":
                cells.append(Cell(f"latency={v}ms", name, v, (f"comm.latency_ms={v}",
                                                                f"comm.jitter_ms={float(v) * jitter:g}")))
            elif name in ("loss", "burst"):
                model = "iid" if name == "loss" else "bursty"
                cells.append(Cell(f"{name}={v}", name, v, (f"comm.loss={v}", f"comm.loss_model={model}")))
            elif name == "bandwidth":
                cells.append(Cell(f"bandwidth={v}B/s", name, v, (f"comm.bandwidth_bps={v}",)))
            elif v == "random-k":
                cells.append(Cell(f"topology=random-{random_k}", name, v,
                                  ("comm.topology=random-k", f"comm.random_k={random_k}")))
            else:
                cells.append(Cell(f"topology={v}", name, v, (f"comm.topology={v}",)))
    return cells


@dataclass
class Study:
    """Everything a study needs to run and to report: the config, seeds, cells, folder and target rule."""
    config: str
    seeds: list[int]
    cells: list[Cell]
    out: Path
    overrides: list[str] = field(default_factory=list)  # --set, for every run
    target: float | None = None                           # None: auto
    target_fraction: float = 0.9
    reuse: bool = False
    command: str = ""


def check_cells(study: Study) -> C.Config:
    """Load the config with every cell's overrides before any process starts (a bad value fails here, naming
    the field, the value and what is allowed). Returns the baseline's config."""
    base = None
    for cell in study.cells:
        cfg = C.load(study.config, [*study.overrides, *cell.overrides])
        base = base or cfg
    if base.run.agents < 2:
        raise StudyError(f"run.agents={base.run.agents}: a communication study needs at least 2 agents")
    return base


# ---------------- the command line ----------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `magicmask commstudy` (every one has a default and a help text)."""
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config of every run (default {DEFAULT_CONFIG})")
    p.add_argument("--out", default=None,
                   help="study folder: commstudy.csv/.md, index.html, img/, cells/<cell>/ (default "
                        "runs/commstudy-<date>-<time>)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run.seed values (default 0,1,2)")
    p.add_argument("--axes", default=",".join(AXES),
                   help=f"comma-separated axes varied one at a time from the baseline (default {','.join(AXES)})")
    p.add_argument("--full", action="store_true",
                   help="use every axis's full value list instead of the default subset; an explicit "
                        "--latency/--loss/... still wins")
    kind = {"loss": " with comm.loss_model=iid", "burst": " with comm.loss_model=bursty (Gilbert-Elliott, "
                                                        "mean burst comm.burst_len)"}
    for ax in AXES.values():
        p.add_argument(f"--{ax.name}", default=None, metavar="V1,V2",
                       help=f"values of {ax.field}{kind.get(ax.name, '')} ({ax.allowed}); default "
                            f"{','.join(ax.default)}, with --full {','.join(ax.full)}")
    p.add_argument("--jitter", type=float, default=0.2,
                   help="jitter of a latency cell as a fraction of its latency: comm.jitter_ms = J x latency "
                        "(default 0.2)")
    p.add_argument("--random-k", type=int, default=1,
                   help="comm.random_k of the random-k topology cell (default 1: each agent hears one peer)")
    p.add_argument("--nocomm", action=argparse.BooleanOptionalAction, default=True,
                   help="include the NoComm reference cell, comm.enabled=false (default: yes)")
    p.add_argument("--target-return", default="auto",
                   help="evaluation return that counts as 'reached' for steps-to-target; auto: --target-fraction "
                        "x the highest evaluation return any agent of the study reached (default auto)")
    p.add_argument("--target-fraction", type=float, default=0.9,
                   help="the fraction of the auto target (default 0.9)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field of every run, e.g. --set run.total_steps=20000 (repeatable)")
    p.add_argument("--reuse", action="store_true",
                   help="skip runs of --out that have a checkpoint and explanations already (resume a study)")
    p.add_argument("--dry-run", action="store_true", help="print the cells, the runs and the estimate, and stop")


def study_from_args(args, argv=None) -> tuple[Study, C.Config]:
    """Validate every option (StudyError names it) and the cells' configs; the study and its baseline config."""
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise StudyError(f"--seeds: {args.seeds!r} is not allowed; allowed: comma-separated integers >= 0") from None
    if not seeds or min(seeds) < 0:
        raise StudyError(f"--seeds: {args.seeds!r} is not allowed; allowed: comma-separated integers >= 0")
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    values = {}
    for name, ax in AXES.items():
        given = getattr(args, name)
        if given is not None and name not in axes:
            raise StudyError(f"--{name} {given}: the axis {name!r} is not in --axes={args.axes!r}, so its values "
                             f"would be ignored; allowed: add it to --axes or leave --{name} out")
        values[name] = parse_values(name, given if given is not None else
                                    ",".join(ax.full if args.full else ax.default))
    target = None
    if str(args.target_return).strip().lower() != "auto":
        try:
            target = float(args.target_return)
        except ValueError:
            raise StudyError(f"--target-return: {args.target_return!r} is not allowed; allowed: auto or a number") from None
    if not 0.0 < args.target_fraction <= 1.0:
        raise StudyError(f"--target-fraction: {args.target_fraction!r} is out of range; allowed: (0, 1]")
    cells = build_grid(axes, values, args.jitter, args.random_k, args.nocomm)
    out = Path(args.out) if args.out else Path("runs") / f"commstudy-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "magicmask " + shlex.join(argv) if argv else "magicmask.commstudy.main (from Python)"
    study = Study(args.config, seeds, cells, out, list(args.set), target, args.target_fraction, args.reuse, command)
    return study, check_cells(study)


# Rates behind the up-front estimate, for gates with an evaluation after every fragment (the commstudy-gates
# preset) on an idle 2-core machine; basis in docs/COMMUNICATION.md: a run costs a fixed part (start-up of 6
# processes, checkpoint, in-process `magicmask explain` of MAGIC-MASK with 4 agents x 20 episodes) plus its env
# steps at the whole system's throughput.
GATES_FIXED_S = 16.0
GATES_SYSTEM_STEPS_PER_S = 1500.0


def estimate_seconds(study: Study, cfg: C.Config) -> float | None:
    """Wall-clock estimate of the whole study on an idle 2-core machine; None outside gates (no measured rates)."""
    if cfg.env.name != "gates":
        return None
    per_run = GATES_FIXED_S + cfg.run.agents * cfg.run.total_steps / GATES_SYSTEM_STEPS_PER_S
    return per_run * len(study.cells) * len(study.seeds)


def describe_plan(study: Study, cfg: C.Config) -> str:
    """The cells with their overrides, the number of runs and the estimate (printed before anything runs)."""
    n = len(study.cells) * len(study.seeds)
    est = estimate_seconds(study, cfg)
    lines = [f"commstudy: {len(study.cells)} cells x {len(study.seeds)} seeds = {n} runs of {study.config} "
             f"({cfg.env.name}, {cfg.run.agents} agents, {cfg.run.total_steps} env steps each)",
             "estimate on an idle 2-core machine: " + (f"{est / 60:.0f} min (gates rates, docs/COMMUNICATION.md)"
                                                      if est is not None else f"none (rates are measured on gates, "
                                                                              f"not {cfg.env.name})")]
    lines += [f"  {c.label:24s} {' '.join(c.overrides) or '(the config as given)'}" for c in study.cells]
    return "\n".join(lines)


# ---------------- reading a run ----------------
@dataclass
class RunData:
    """What one finished (or failed) run left behind, as read from its directory; None/empty where absent."""
    cell: str
    seed: int
    run_dir: Path
    agents: int = 0
    curves: dict[int, list[tuple[int, float, float | None]]] = field(default_factory=dict)  # steps, plain, masked
    comm: dict[int, dict] = field(default_factory=dict)       # the latest cumulative figures per agent
    step_rate: float | None = None                             # env steps per second per agent (learner's rows)
    rounds: list[tuple[float, list[int]]] | None = None        # broker rounds: (time, receivers dropped)
    explain: dict | None = None                                # report/metrics.json["magicmask"]
    comm_enabled: bool = True
    error: str | None = None


def _jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a torn last line (a process killed mid-write) is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def read_run(cell: str, seed: int, run_dir: Path, error: str | None = None) -> RunData:
    run = RunData(cell, seed, Path(run_dir), error=error)
    cfg_path = run.run_dir / "config.yaml"
    if cfg_path.is_file():
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        run.agents = int((cfg.get("run") or {}).get("agents", 0))
        run.comm_enabled = bool((cfg.get("comm") or {}).get("enabled", True))
    mpath = run.run_dir / "metrics.jsonl"
    if mpath.is_file():
        seen: dict[int, list[tuple[float, float]]] = {}   # agent -> (time, env steps) of its rows
        for row in _jsonl(mpath):
            for a, d in (row.get("agents") or {}).items():
                ev, steps = d.get("eval") or {}, _num(d.get("env_steps"))
                if steps is not None and _num(row.get("time")) is not None:
                    seen.setdefault(int(a), []).append((row["time"], steps))
                plain = _num(ev.get("return_plain"))
                if plain is not None and steps is not None:
                    run.curves.setdefault(int(a), []).append((int(steps), plain, _num(ev.get("return_masked"))))
                if isinstance(d.get("comm"), dict):
                    run.comm[int(a)] = d["comm"]
        rates = [(v[-1][1] - v[0][1]) / (v[-1][0] - v[0][0]) for v in seen.values() if v[-1][0] > v[0][0]]
        run.step_rate = float(np.mean(rates)) if rates else None
    spath = run.run_dir / "critical" / "snapshots.jsonl"
    if spath.is_file():
        run.rounds = [(float(r.get("time", 0.0)), list(r.get("dropped") or [])) for r in _jsonl(spath)]
    xpath = run.run_dir / "report" / "metrics.json"
    if xpath.is_file():
        run.explain = (json.loads(xpath.read_text()) or {}).get("magicmask")
    return run


# ---------------- per-run quantities ----------------
METRICS: tuple[tuple[str, str], ...] = (
    ("steps_to_target", "env steps per agent until the agent's greedy evaluation return first reached the "
                        "target (mean over agents; empty unless every agent reached it)"),
    ("steps_to_target_masked", "the same for the evaluation return with the mask in its explaining mode "
                               "(m <= tau perturbs): how soon the mask stops perturbing critical steps"),
    ("target_reached", "share of agents whose greedy evaluation return reached the target"),
    ("final_return", "explain: mean unmasked greedy return per episode at the final checkpoint"),
    ("fidelity_k10", "explain: MAGIC-MASK's fidelity score at K = 10% (higher: its top window matters more)"),
    ("reward_drop_k10", "explain: reward drop (%) when MAGIC-MASK's top 10% window is randomised"),
    ("inter_agent_fidelity", "explain: rank agreement of the agents' masks on common states (Spearman)"),
    ("precision_at_k", "explain: share of MAGIC-MASK's top-k steps that are truly critical (gates)"),
    ("snapshots_sent", "broker: snapshot messages submitted to the links (one per receiver and round), counted "
                       "per agent up to the time of its last figures in metrics.jsonl"),
    ("snapshots_dropped", "broker: of those, lost by the loss model"),
    ("snapshots_delivered", "actors: snapshots received on the stream (all agents)"),
    ("delivered_share", "snapshots_delivered / snapshots_sent"),
    ("snapshots_undelivered", "sent - dropped - delivered: still in flight or queued (latency, bandwidth) at that "
                              "time, overflowed, or sent before the actor subscribed"),
    ("snapshot_gaps", "actors: sequence-number gaps (snapshots never applied: lost or overtaken)"),
    ("delay_s", "actors: mean delivery delay of applied snapshots, receive time - creation (s)"),
    ("age_at_use_s", "actors: mean age of the snapshot in use, over env steps that had one (s)"),
    ("age_at_use_steps", "age_at_use_s x the run's env steps per second per agent: the age in the agent's own "
                         "steps, which a slower (loaded) machine does not inflate"),
    ("stale_share", "actors: share of those steps taken while the broker was silent (snapshot stale)"),
    ("guided_share", "actors: share of env steps left unperturbed because a peer marked the state critical"),
)
METRIC_NAMES = tuple(m for m, _ in METRICS)


def best_return(runs: list[RunData]) -> float | None:
    """The highest greedy evaluation return any agent of any run reached (the auto target's reference)."""
    vals = [p for r in runs for curve in r.curves.values() for _, p, _ in curve]
    return max(vals) if vals else None


def steps_to(curve: list[tuple[int, float, float | None]], target: float, masked: bool) -> int | None:
    """Env steps of the first evaluation at or above `target` (None: never, or no such evaluation)."""
    for steps, plain, mret in sorted(curve, key=lambda c: c[0]):
        v = mret if masked else plain
        if v is not None and v >= target:
            return steps
    return None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def run_metrics(run: RunData, target: float | None) -> dict[str, float | None]:
    """Every quantity of METRICS for one run; None where the run does not have it."""
    out: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    agents = range(run.agents) if run.agents else sorted(run.curves)
    if target is not None and run.curves and all(a in run.curves for a in agents):
        for name, masked in (("steps_to_target", False), ("steps_to_target_masked", True)):
            hits = [steps_to(run.curves[a], target, masked) for a in agents]
            out[name] = float(np.mean(hits)) if all(h is not None for h in hits) else None
            if not masked:
                out["target_reached"] = float(np.mean([h is not None for h in hits]))
    ex = run.explain or {}
    for name, key in (("final_return", "final_average_reward"), ("fidelity_k10", "fidelity_score_k10"),
                      ("reward_drop_k10", "reward_drop_pct_k10"), ("inter_agent_fidelity", "inter_agent_fidelity"),
                      ("precision_at_k", "precision_at_k")):
        out[name] = _num(ex.get(key))
    if run.comm and (not run.agents or len(run.comm) == run.agents):
        tot = {k: sum(_num(c.get(k)) or 0.0 for c in run.comm.values())
               for k in ("snapshots_received", "snapshots_applied", "snapshot_gaps", "delay_s_sum", "steps",
                         "use_steps", "age_at_use_s_sum", "stale_steps", "guided_steps")}
        out["snapshots_delivered"] = tot["snapshots_received"]
        out["snapshot_gaps"] = tot["snapshot_gaps"]
        out["delay_s"] = _ratio(tot["delay_s_sum"], tot["snapshots_applied"]) if run.comm_enabled else None
        out["age_at_use_s"] = _ratio(tot["age_at_use_s_sum"], tot["use_steps"])
        if out["age_at_use_s"] is not None and run.step_rate is not None:
            out["age_at_use_steps"] = out["age_at_use_s"] * run.step_rate
        out["stale_share"] = _ratio(tot["stale_steps"], tot["use_steps"])
        out["guided_share"] = _ratio(tot["guided_steps"], tot["steps"])
        if run.rounds is not None:
            # the broker's rounds up to the moment each agent's figures were taken (so both count the same span)
            sent = [(t, a in dropped) for a, c in run.comm.items() for t, dropped in run.rounds
                    if t <= (_num(c.get("at")) or math.inf)]
            out["snapshots_sent"] = float(len(sent))
            out["snapshots_dropped"] = float(sum(d for _, d in sent))
            out["delivered_share"] = _ratio(out["snapshots_delivered"], out["snapshots_sent"])
            out["snapshots_undelivered"] = out["snapshots_sent"] - out["snapshots_dropped"] - out["snapshots_delivered"]
    return out


def aggregate(cells: list[Cell], per_run: list[tuple[RunData, dict]]) -> list[dict]:
    """One row per cell: for every metric its mean, sample std and the number of runs that have it."""
    rows = []
    for cell in cells:
        mine = [(r, m) for r, m in per_run if r.cell == cell.label]
        row = {"cell": cell.label, "axis": cell.axis, "value": cell.value, "runs": len(mine),
               "complete": sum(r.explain is not None for r, _ in mine)}
        for name in METRIC_NAMES:
            mean, std, n = _stats([m[name] for _, m in mine])
            row[name], row[f"{name}_std"], row[f"{name}_n"] = (mean, std, n) if n else (None, None, 0)
        rows.append(row)
    return rows


# ---------------- files ----------------
def _cellval(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""  # unavailable: left empty, never filled in
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def write_csv(path: Path, columns, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cellval(r.get(c)) for c in columns])


CELL_COLUMNS = ("cell", "axis", "value", "runs", "complete",
                *[c for m in METRIC_NAMES for c in (m, f"{m}_std", f"{m}_n")])
RUN_COLUMNS = ("cell", "seed", "run_dir", "error", *METRIC_NAMES)

# The two tables (and figures): what the runs learned and explained, and what the channel did.
LEARNING = ("steps_to_target", "steps_to_target_masked", "target_reached", "final_return", "fidelity_k10",
            "inter_agent_fidelity", "precision_at_k")
CHANNEL = ("delivered_share", "snapshots_dropped", "snapshots_undelivered", "age_at_use_s", "age_at_use_steps",
           "delay_s", "guided_share")


def fmt(mean: float, std: float, n: int) -> str:
    """'mean ± std' readable for counts and steps (integers from 100 up) and for fractions; a std that is only
    floating-point noise (identical seeds) shows as 0."""
    if abs(mean) >= 100:
        return f"{mean:.0f}" + (f" ± {std:.0f}" if n > 1 else "")
    noise = std <= 1e-9 * max(1.0, abs(mean))
    return f"{mean:.3g}" + ("" if n < 2 else " ± 0" if noise else f" ± {std:.2g}")


def _md_table(rows: list[dict], metrics) -> list[str]:
    """Cells as rows, metrics as columns: mean ± std, with (n=...) where fewer runs than the complete ones have it."""
    lines = ["| cell | runs | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for r in rows:
        vals = []
        for m in metrics:
            n = r[f"{m}_n"]
            vals.append("–" if not n else fmt(r[m], r[f"{m}_std"], n) + (f" (n={n})" if n < r["complete"] else ""))
        lines.append(f"| {r['cell']} | {r['complete']}/{r['runs']} | " + " | ".join(vals) + " |")
    return lines


def markdown_tables(study: Study, rows: list[dict]) -> list[str]:
    """The result tables and the cells' overrides (shared by commstudy.md and index.html)."""
    return ["## Learning and explanation", "", *_md_table(rows, LEARNING), "",
            "## The channel", "", *_md_table(rows, CHANNEL), "",
            "## Cells", "", "| cell | overrides |", "|---|---|",
            *[f"| {c.label} | {' '.join(f'`{o}`' for o in c.overrides) or '(the config as given)'} |"
              for c in study.cells], ""]


def summary_line(study: Study, meta: dict) -> str:
    return (f"Seeds {','.join(map(str, study.seeds))}; {len(study.cells)} cells; {meta['runs']} runs; wall time "
            f"{meta['wall_s'] / 60:.1f} min on {meta['machine']} (load average {meta['load_start']:.1f} at the "
            f"start, {meta['load_end']:.1f} at the end). Target return {_cellval(meta['target']) or 'unavailable'} "
            f"({meta['target_basis']}). Mean ± sample standard deviation over the seeds of each cell; (n=...): "
            "fewer runs than the complete ones have the quantity; – : no run of the cell has it. runs: "
            "complete (trained and explained) / planned.")


def markdown(study: Study, rows: list[dict], meta: dict) -> str:
    lines = [f"# Communication study ({study.config})", "", f"Command: `{meta['command']}`", "",
             summary_line(study, meta), "", *markdown_tables(study, rows),
             "## Definitions", "", *[f"- `{m}`: {d}" for m, d in METRICS], ""]
    return "\n".join(lines)


# ---------------- figures ----------------
AXIS_COLOURS = {"baseline": "#333333", "nocomm": "#7f7f7f", "latency": "#1f77b4", "loss": "#d62728",
                "burst": "#ff7f0e", "bandwidth": "#2ca02c", "topology": "#9467bd"}


def _dots(fig, rows: list[dict], per_run: list[tuple[RunData, dict]], metrics, ncols: int = 4) -> None:
    """Per metric a panel, cells top to bottom: the seeds as small dots, their mean as a diamond with the sample
    std as a bar; dashed line: the baseline's mean, dotted: NoComm's. A cell without the quantity says n/a."""
    nrows = math.ceil(len(metrics) / ncols)
    y = np.arange(len(rows))[::-1]
    ref = {r["cell"]: r for r in rows}
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for yi, r in zip(y, rows):
            if r[f"{m}_n"] == 0:
                ax.text(0.02, yi, "n/a", va="center", fontsize=7, color="#999999", transform=ax.get_yaxis_transform())
                continue
            colour = AXIS_COLOURS.get(r["axis"], "#333333")
            seeds = [v[m] for run, v in per_run if run.cell == r["cell"] and v[m] is not None]
            ax.scatter(seeds, [yi] * len(seeds), s=10, color=colour, alpha=0.5, zorder=2)
            ax.errorbar(r[m], yi, xerr=r[f"{m}_std"] if r[f"{m}_n"] > 1 else None, fmt="D", ms=5, color=colour,
                        capsize=2, lw=1.0, zorder=3)
        for name, style in (("baseline", "--"), ("nocomm", ":")):
            if name in ref and ref[name][f"{m}_n"]:
                ax.axvline(ref[name][m], color="black", ls=style, lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([r["cell"] for r in rows] if i % ncols == 0 else [], fontsize=7)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
        if m in ("age_at_use_s", "age_at_use_steps", "delay_s"):
            vals = [r[m] for r in rows if r[f"{m}_n"] and r[m] > 0]
            if vals and max(vals) / min(vals) > 20:
                ax.set_xscale("log")
    fig.tight_layout()


def team_curve(run: RunData, masked: bool) -> dict[int, float]:
    """Mean over agents of the evaluation return at each env-step count where every agent was evaluated."""
    by_step: dict[int, list[float]] = {}
    for curve in run.curves.values():
        for s, p, mret in curve:
            v = mret if masked else p
            if v is not None:
                by_step.setdefault(s, []).append(v)
    n = len(run.curves)
    return {s: float(np.mean(v)) for s, v in by_step.items() if len(v) == n}


def _curves(fig, study: Study, runs: list[RunData], target: float | None) -> None:
    """Per axis a panel: the team's evaluation return (mask in explaining mode) against env steps per agent,
    mean over seeds, one line per cell of the axis, with the baseline and NoComm for reference."""
    axes = [a for a in AXES if any(c.axis == a for c in study.cells)] or ["baseline"]
    for i, name in enumerate(axes):
        ax = fig.add_subplot(1, len(axes), i + 1)
        cells = [c for c in study.cells if c.axis in ("baseline", "nocomm", name)]
        colours = iter(("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2",
                        "#bcbd22"))
        for c in cells:
            curves = [team_curve(r, masked=True) for r in runs if r.cell == c.label]
            steps = sorted(set().union(*curves)) if curves else []
            steps = [s for s in steps if all(s in cu for cu in curves)]
            if not steps:
                continue
            mean = [np.mean([cu[s] for cu in curves]) for s in steps]
            style = (dict(color="black", lw=1.6) if c.axis == "baseline" else
                     dict(color="#7f7f7f", lw=1.6, ls=":") if c.axis == "nocomm" else dict(color=next(colours), lw=1.0))
            ax.plot(steps, mean, label=c.label, **style)
        if target is not None:
            ax.axhline(target, color="#999999", lw=0.7, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("env steps per agent", fontsize=8)
        if i == 0:
            ax.set_ylabel("team eval return, mask explaining", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:  # a panel whose cells have no evaluations stays empty
            ax.legend(fontsize=6, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()


def _save(fig, img_dir: Path, stem: str) -> str:
    """Write the figure to img/<stem>.png and return an <img> whose source is the same PNG, embedded."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    data = buf.getvalue()
    (img_dir / f"{stem}.png").write_bytes(data)
    return f'<img class="plot" alt="{stem}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


# ---------------- the page ----------------
def html_page(study: Study, rows: list[dict], per_run: list[tuple[RunData, dict]], meta: dict, img_dir: Path) -> str:
    from magicmask.report import BROKEN_IMAGES_SCRIPT, CSS, _e, _figure, _markdown_to_html, _note, _table
    runs = [r for r, _ in per_run]
    n_rows = len(rows)
    fig = _figure(14, 1.2 + 0.32 * n_rows * 2)
    _dots(fig, rows, per_run, LEARNING)
    learning = _save(fig, img_dir, "commstudy-learning")
    fig = _figure(14, 1.2 + 0.32 * n_rows * 2)
    _dots(fig, rows, per_run, CHANNEL)
    channel = _save(fig, img_dir, "commstudy-channel")
    n_axes = max(1, len({c.axis for c in study.cells} - {"baseline", "nocomm"}))
    fig = _figure(max(6.0, 3.6 * n_axes), 3.4)
    _curves(fig, study, runs, meta["target"])
    curves = _save(fig, img_dir, "commstudy-curves")
    failed = [f"{r.cell} seed {r.seed}: {r.error}" for r in runs if r.error]
    info = [("config", study.config), ("seeds", ",".join(map(str, study.seeds))), ("cells", str(len(study.cells))),
            ("runs", str(meta["runs"])), ("wall time", f"{meta['wall_s'] / 60:.1f} min"),
            ("target return", _cellval(meta["target"]) or "unavailable"),
            ("date", _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))]
    head = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in info)
    sections = [
        ("learning", "Learning and explanation",
         "Per cell: small dots = the seeds, diamond = their mean, bar = sample standard deviation; dashed line = "
         "baseline, dotted = NoComm. n/a: no run of the cell has the quantity.", learning),
        ("channel", "The channel", "The same layout for what the broker sent and the actors received and used.",
         channel),
        ("curves", "Evaluation curves",
         "The team's mean evaluation return with the mask in its explaining mode (the return it keeps while "
         f"perturbing every step with m <= tau), mean over seeds; grey dashed: the target ({meta['target_basis']}).",
         curves),
    ]
    body = "".join(f'<section id="{sid}"><h2>{_e(t)}</h2><p class="what">{_e(what)}</p>{img}</section>'
                   for sid, t, what, img in sections)
    if failed:
        body += '<section id="failures"><h2>Failed runs</h2>' + "".join(_note(f) for f in failed) + "</section>"
    body += (f'<section id="tables"><h2>Tables</h2><p class="what">{_e(summary_line(study, meta))}</p>'
             f'<p class="what">Command: <code>{_e(meta["command"])}</code></p>'
             f'{_markdown_to_html(chr(10).join(markdown_tables(study, rows)))}'
             f'<h3>Definitions</h3>{_table(["quantity", "definition"], [list(m) for m in METRICS])}</section>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>MAGIC-MASK communication study'
            f'</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>\n'
            f'<body><header><h1>MAGIC-MASK communication study</h1><dl>{head}</dl></header>\n<main>{body}</main>\n'
            '<footer>Written by explain/commstudy.py; every picture is embedded (also in img/ beside this page).'
            f'</footer>\n{BROKEN_IMAGES_SCRIPT}\n</body></html>\n')


def write_outputs(study: Study, runs: list[RunData], meta: dict) -> list[dict]:
    """Resolve the target, compute and aggregate every quantity, write the csv, md, html and img/ files."""
    if study.target is not None:
        meta["target"], meta["target_basis"] = study.target, "given with --target-return"
    else:
        best = best_return(runs)
        meta["target"] = None if best is None else study.target_fraction * best
        meta["target_basis"] = (f"{study.target_fraction:g} x the highest evaluation return any agent reached"
                                + ("" if best is None else f", {best:g}"))
    per_run = [(r, run_metrics(r, meta["target"])) for r in runs]
    rows = aggregate(study.cells, per_run)
    out = study.out
    (out / "img").mkdir(parents=True, exist_ok=True)
    write_csv(out / "commstudy_runs.csv", RUN_COLUMNS,
              [{"cell": r.cell, "seed": r.seed, "run_dir": str(r.run_dir), "error": r.error, **m} for r, m in per_run])
    write_csv(out / "commstudy.csv", CELL_COLUMNS, rows)
    (out / "commstudy.md").write_text(markdown(study, rows, meta))
    (out / "index.html").write_text(html_page(study, rows, per_run, meta, out / "img"), encoding="utf-8")
    (out / "study.json").write_text(json.dumps({
        "command": meta["command"], "config": study.config, "seeds": study.seeds, "overrides": study.overrides,
        "cells": [{"label": c.label, "axis": c.axis, "value": c.value, "overrides": list(c.overrides)}
                  for c in study.cells],
        **{k: meta[k] for k in ("runs", "wall_s", "machine", "load_start", "load_end", "target", "target_basis")}},
        indent=1))
    return rows


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def run_study(study: Study, log=print) -> Path:
    """Train and explain every (cell, seed) through run_sweep, one cell after the other, then write the outputs.
    A cell whose training or explanation fails is reported (its runs' quantities empty), and the study goes on."""
    t0 = time.monotonic()
    load_start = os.getloadavg()[0]
    study.out.mkdir(parents=True, exist_ok=True)
    runs: list[RunData] = []
    total = len(study.cells) * len(study.seeds)
    for i, cell in enumerate(study.cells):
        cell_dir = study.out / "cells" / _safe(cell.label)
        log(f"commstudy: [{i + 1}/{len(study.cells)}] {cell.label}: {' '.join(cell.overrides) or 'the config as given'}")
        error = None
        try:
            run_sweep(study.config, study.seeds, [], cell_dir, [*study.overrides, *cell.overrides], study.reuse,
                      log=log)
        except (RuntimeError, ValueError, OSError) as e:  # one broken cell must not take the study down
            error = f"{type(e).__name__}: {e}"
            log(f"commstudy: {cell.label}: FAILED: {error}")
        runs += [read_run(cell.label, s, cell_dir / "runs" / _safe(cell_label([])) / f"seed{s}", error)
                 for s in study.seeds]
        done, elapsed = (i + 1) * len(study.seeds), time.monotonic() - t0
        log(f"commstudy: {done}/{total} runs in {elapsed / 60:.1f} min; about "
            f"{elapsed / done * (total - done) / 60:.1f} min left")
    meta = {"command": study.command, "runs": total, "wall_s": time.monotonic() - t0, "machine": _machine(),
            "load_start": load_start, "load_end": os.getloadavg()[0]}
    write_outputs(study, runs, meta)
    log(f"commstudy: wrote {study.out / 'commstudy.csv'}, commstudy.md and index.html "
        f"({meta['wall_s'] / 60:.1f} min)")
    return study.out


def main(args, argv=None, log=print) -> int:
    """`magicmask commstudy` (explain/cli.py hands its parsed arguments and its argv here)."""
    study, cfg = study_from_args(args, argv)
    log(describe_plan(study, cfg))
    if args.dry_run:
        return 0
    run_study(study, log)
    return 0
