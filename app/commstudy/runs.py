"""What one run of the study left behind and the quantities computed from it: evaluation curves and the actors'
channel figures (metrics.jsonl), the broker's rounds and drops (critical/snapshots.jsonl), explain's
MAGIC-MASK metrics (report/metrics.json); then per run every quantity of METRICS and per cell their mean,
sample sd, count and 95% interval. A quantity a run does not have is None, never filled in."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from magicmask.commstudy.grid import Cell
from magicmask.explain.stats import mean_sd, t_interval
from magicmask.metrics_log import agent_records, number, read_jsonl


@dataclass
class RunData:
    """What one finished (or failed) run left behind, as read from its directory; None/empty where absent."""
    cell: str
    seed: int
    run_dir: Path
    agents: int = 0
    curves: dict[int, list[tuple[int, float, float | None]]] = field(default_factory=dict)  # steps, plain, masked
    train_returns: dict[int, list[float]] = field(default_factory=dict)   # per learner row: the batch's mean return
    comm: dict[int, dict] = field(default_factory=dict)       # the latest cumulative figures per agent
    step_rate: float | None = None                             # env steps per second per agent (learner's rows)
    rounds: list[tuple[float, list[int]]] | None = None        # broker rounds: (time, receivers dropped)
    explain: dict | None = None                                # report/metrics.json["magicmask"]
    comm_enabled: bool = True
    error: str | None = None


def _read_metrics(run: RunData) -> None:
    """Evaluation curves, the latest channel figures and the env-step rate from the learner's rows."""
    seen: dict[int, list[tuple[float, int]]] = {}   # agent -> (time, env steps) of its rows
    for rec in agent_records(run.run_dir):
        if rec.comm is not None:
            run.comm[rec.agent] = rec.comm
        if rec.env_steps is None:
            continue
        if rec.mean_return is not None:
            run.train_returns.setdefault(rec.agent, []).append(rec.mean_return)
        if rec.time is not None:
            seen.setdefault(rec.agent, []).append((rec.time, rec.env_steps))
        plain = rec.eval.get("return_plain")
        if plain is not None:
            run.curves.setdefault(rec.agent, []).append((rec.env_steps, plain, rec.eval.get("return_masked")))
    rates = [(v[-1][1] - v[0][1]) / (v[-1][0] - v[0][0]) for v in seen.values() if v[-1][0] > v[0][0]]
    run.step_rate = float(np.mean(rates)) if rates else None


def read_run(cell: str, seed: int, run_dir: Path, error: str | None = None) -> RunData:
    """Everything the study reads of one run directory (a missing file leaves its part empty)."""
    run = RunData(cell, seed, Path(run_dir), error=error)
    cfg_path = run.run_dir / "config.yaml"
    if cfg_path.is_file():
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        run.agents = int((cfg.get("run") or {}).get("agents", 0))
        run.comm_enabled = bool((cfg.get("comm") or {}).get("enabled", True))
    if (run.run_dir / "metrics.jsonl").is_file():
        _read_metrics(run)
    spath = run.run_dir / "critical" / "snapshots.jsonl"
    if spath.is_file():
        run.rounds = [(float(r.get("time", 0.0)), list(r.get("dropped") or [])) for r in read_jsonl(spath)]
    xpath = run.run_dir / "report" / "metrics.json"
    if xpath.is_file():
        run.explain = (json.loads(xpath.read_text()) or {}).get("magicmask")
    return run


METRICS: tuple[tuple[str, str], ...] = (
    ("steps_to_target", "env steps per agent until the agent's greedy evaluation return first reached the "
                        "target (mean over agents; empty unless every agent reached it)"),
    ("steps_to_target_masked", "the same for the evaluation return with the mask in its explaining mode "
                               "(m <= tau perturbs): how soon the mask stops perturbing critical steps"),
    ("target_reached", "share of agents whose greedy evaluation return reached the target"),
    ("train_return", "mean return of the training episodes over the whole run (mean over the learner's rows, then "
                     "over agents): what the episodes cost with epsilon, the mask's perturbations and, where "
                     "peers shared critical states, the steps their guidance kept unperturbed"),
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
EXPLAIN_KEYS = (("final_return", "final_average_reward"), ("fidelity_k10", "fidelity_score_k10"),
                ("reward_drop_k10", "reward_drop_pct_k10"), ("inter_agent_fidelity", "inter_agent_fidelity"),
                ("precision_at_k", "precision_at_k"))   # (quantity, key in report/metrics.json)
COMM_SUMS = ("snapshots_received", "snapshots_applied", "snapshot_gaps", "delay_s_sum", "steps", "use_steps",
             "age_at_use_s_sum", "stale_steps", "guided_steps")


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


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _learning(run: RunData, target: float | None, out: dict) -> None:
    """train_return when every agent has training returns; steps_to_target (greedy and masked) and
    target_reached when every agent has evaluations."""
    agents = range(run.agents) if run.agents else sorted(run.curves)
    if run.train_returns and all(a in run.train_returns for a in agents):
        out["train_return"] = float(np.mean([np.mean(run.train_returns[a]) for a in agents]))
    if target is None or not run.curves or not all(a in run.curves for a in agents):
        return
    for name, masked in (("steps_to_target", False), ("steps_to_target_masked", True)):
        hits = [steps_to(run.curves[a], target, masked) for a in agents]
        out[name] = float(np.mean(hits)) if all(h is not None for h in hits) else None
        if not masked:
            out["target_reached"] = float(np.mean([h is not None for h in hits]))


def _channel(run: RunData, out: dict) -> None:
    """The channel's quantities, when every agent's cumulative figures reached metrics.jsonl."""
    if not run.comm or (run.agents and len(run.comm) != run.agents):
        return
    tot = {k: sum(number(c.get(k)) or 0.0 for c in run.comm.values()) for k in COMM_SUMS}
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
                if t <= (number(c.get("at")) or math.inf)]
        out["snapshots_sent"] = float(len(sent))
        out["snapshots_dropped"] = float(sum(d for _, d in sent))
        out["delivered_share"] = _ratio(out["snapshots_delivered"], out["snapshots_sent"])
        out["snapshots_undelivered"] = out["snapshots_sent"] - out["snapshots_dropped"] - out["snapshots_delivered"]


def run_metrics(run: RunData, target: float | None) -> dict[str, float | None]:
    """Every quantity of METRICS for one run; None where the run does not have it."""
    out: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    _learning(run, target, out)
    ex = run.explain or {}
    for name, key in EXPLAIN_KEYS:
        out[name] = number(ex.get(key))
    _channel(run, out)
    return out


def aggregate(cells: list[Cell], per_run: list[tuple[RunData, dict]]) -> list[dict]:
    """One row per cell: for every metric its mean, sample std, the number of runs that have it and the 95%
    Student-t interval of the mean over those runs (the seeds), NaN (an empty csv cell) below 2 runs."""
    rows = []
    for cell in cells:
        mine = [(r, m) for r, m in per_run if r.cell == cell.label]
        row = {"cell": cell.label, "axis": cell.axis, "value": cell.value, "runs": len(mine),
               "complete": sum(r.explain is not None for r, _ in mine)}
        for name in METRIC_NAMES:
            vals = [m[name] for _, m in mine]
            mean, std, n = mean_sd(vals)
            row[name], row[f"{name}_std"], row[f"{name}_n"] = (mean, std, n) if n else (None, None, 0)
            row[f"{name}_ci_lo"], row[f"{name}_ci_hi"] = t_interval(vals)
        rows.append(row)
    return rows
