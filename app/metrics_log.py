"""Reading a run's `metrics.jsonl`: the learner appends one row per update, with per agent its env steps, the
mean training return of the batch, the latest evaluation the actor sent (`eval`, written once) and the actor's
cumulative channel figures (`comm`). The learning curves and the communication study both read it through
here, so the file's shape is known in one place."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file; a torn line (a process killed mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def number(x) -> float | None:
    """A finite int or float as float; None for anything else (missing, NaN, bool, text)."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


@dataclass(frozen=True)
class AgentRecord:
    """One agent's entry in one learner row; None or empty where the row does not have it."""
    agent: int
    time: float | None             # the row's wall-clock time (time.time() of the learner)
    env_steps: int | None          # the agent's env steps consumed so far
    mean_return: float | None      # mean training return of the episodes that ended in the batch
    eval: dict[str, float]         # the evaluation first written in this row: its finite numbers
    comm: dict | None              # the actor's cumulative snapshot-use figures, as it sent them


def agent_records(run_dir: str | Path) -> list[AgentRecord]:
    """Every agent entry of RUN_DIR/metrics.jsonl, in file order; FileNotFoundError when there is none."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no learner metrics (train first: magicmask run)")
    out = []
    for row in read_jsonl(path):
        for agent, d in (row.get("agents") or {}).items():
            steps = number(d.get("env_steps"))
            evals = {k: v for k, v in ((k, number(v)) for k, v in (d.get("eval") or {}).items()) if v is not None}
            out.append(AgentRecord(int(agent), number(row.get("time")), None if steps is None else int(steps),
                                   number(d.get("mean_return")), evals,
                                   d["comm"] if isinstance(d.get("comm"), dict) else None))
    return out
