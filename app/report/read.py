"""The report's inputs: the files `magicmask explain` / `compare` leave in RUN_DIR/report/ and the run's own
config and checkpoint pointer. A missing or unreadable file becomes a message for its section, never an error,
so the page is written from whatever is there."""
from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magicmask.protocol import config as C

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Trace:
    """One (method, agent, episode) importance series, ordered by step."""
    method: str
    agent: str
    episode: int
    seed: str
    steps: np.ndarray
    importance: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    true_critical: np.ndarray | None


def agent_key(a: str):
    """Numeric agents first in numeric order, then named ones (e.g. 'team')."""
    try:
        return (0, int(a), "")
    except (TypeError, ValueError):
        return (1, 0, str(a))


def method_key(m: str):
    """The explainers in the project's canonical order (config.EXPLAINERS), unknown names after them."""
    order = C.EXPLAINERS
    return (order.index(m), m) if m in order else (len(order), m)


def to_float(x, default=float("nan")) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def _bool_or_none(x: str):
    s = str(x).strip().lower()
    return True if s in ("true", "1", "yes") else False if s in ("false", "0", "no") else None


def read_importance(path: Path) -> list[Trace]:
    """importance.csv -> one Trace per (method, agent, episode), in method, agent, episode order."""
    groups: dict[tuple, list] = defaultdict(list)
    seeds = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        col = {name.strip(): i for i, name in enumerate(header)}
        need = ("method", "episode", "agent", "step", "importance")
        missing = [n for n in need if n not in col]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        im, ie, ia, ist, ii = (col[n] for n in need)
        iseed, iact, irew, itc = (col.get(n) for n in ("seed", "action", "reward", "true_critical"))
        for row in reader:
            if not row:
                continue
            key = (row[im], row[ia], int(float(row[ie])))
            if iseed is not None and key not in seeds:
                seeds[key] = row[iseed]
            groups[key].append((int(float(row[ist])), to_float(row[ii]),
                                to_float(row[iact]) if iact is not None else float("nan"),
                                to_float(row[irew], 0.0) if irew is not None else 0.0,
                                _bool_or_none(row[itc]) if itc is not None else None))
    traces = []
    for (method, agent, episode), rows in groups.items():
        rows.sort(key=lambda r: r[0])
        tc = [r[4] for r in rows]
        traces.append(Trace(method, agent, episode, seeds.get((method, agent, episode), ""),
                            np.array([r[0] for r in rows]), np.nan_to_num(np.array([r[1] for r in rows], float)),
                            np.array([r[2] for r in rows]), np.array([r[3] for r in rows], float),
                            None if any(t is None for t in tc) else np.array(tc, bool)))
    traces.sort(key=lambda t: (method_key(t.method), agent_key(t.agent), t.episode))
    return traces


def read_fidelity(path: Path) -> list[dict]:
    """fidelity.csv -> rows with numbers as floats, `episode` an int, `agent` a str, K in percent."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            r = dict(row)
            for k in ("k", "window_start", "window_len", "episode_len", "return_orig", "return_perturbed",
                      "reward_drop_pct", "fidelity_score", "control_reward_drop_pct"):
                if k in r:
                    r[k] = to_float(r[k])
            r["episode"] = int(to_float(row.get("episode"), -1))
            r["agent"] = str(row.get("agent", ""))
            out.append(r)
    ks = [r["k"] for r in out if math.isfinite(r.get("k", float("nan")))]
    if ks and max(ks) <= 1.0:   # K written as a fraction of the episode (explain.k_fractions): show percent
        for r in out:
            r["k"] = round(r["k"] * 100, 6)
    return out


def read_critical_states(path: Path) -> list[dict]:
    """critical_states.jsonl -> one dict per line; lines that are not JSON are skipped."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == PNG_MAGIC
    except OSError:
        return False


@dataclass
class Inputs:
    """Everything read from RUN_DIR/report/; None where a file is absent, with the reason in `missing`."""
    traces: list[Trace] | None = None
    fidelity: list[dict] | None = None
    states: list[dict] | None = None
    metrics: dict | None = None
    compare_md: str | None = None
    compare_csv: list[list[str]] | None = None
    summary: dict = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)   # file name -> what the page says instead


def read_inputs(run_dir: Path) -> Inputs:
    """Read every input file of RUN_DIR/report/ that exists."""
    report_dir = run_dir / "report"
    out = Inputs()

    def read(name, reader):
        p = report_dir / name
        if not p.is_file():
            out.missing[name] = f"{name} not found in {report_dir} (run `magicmask explain {run_dir}` first)."
            return None
        out.missing[name] = f"{name} is empty."
        try:
            return reader(p)
        except Exception as e:   # noqa: BLE001 - any broken file is reported on the page
            out.missing[name] = f"{name} could not be read: {type(e).__name__}: {e}"
            return None

    out.traces = read("importance.csv", read_importance)
    out.fidelity = read("fidelity.csv", read_fidelity)
    out.states = read("critical_states.jsonl", read_critical_states)
    out.metrics = read("metrics.json", lambda p: json.loads(p.read_text()))
    if out.metrics is not None and not isinstance(out.metrics, dict):
        out.metrics, out.missing["metrics.json"] = None, "metrics.json is not a mapping of method to metrics."
    out.compare_md = read("compare.md", lambda p: p.read_text())
    out.compare_csv = read("compare.csv", lambda p: list(csv.reader(p.read_text().splitlines())))
    summary = read("summary.json", lambda p: json.loads(p.read_text()))
    out.summary = summary if isinstance(summary, dict) else {}
    return out


def read_config(run_dir: Path, run=None):
    """The run's config (the loaded run's, else config.yaml), or None when there is none readable."""
    if run is not None:
        return run.cfg
    try:
        return C.load(run_dir / "config.yaml", environ={}) if (run_dir / "config.yaml").is_file() else None
    except Exception:   # noqa: BLE001 - the header then shows what the files say
        return None


def checkpoint_version(run_dir: Path, run=None) -> str:
    """The explained checkpoint's version: the loaded run's, else the `latest` pointer's, else 'unknown'."""
    if run is not None:
        return str(run.version)
    pointer = run_dir / "checkpoints" / "latest"
    if pointer.is_file():
        m = re.search(r"(\d+)", pointer.read_text())
        if m:
            return str(int(m.group(1)))
    return "unknown"
