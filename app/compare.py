"""`magicmask compare RUN_DIR [RUN_DIR...]` and `magicmask sweep`.

compare: explain every run (or reuse its report/metrics.json with --reuse), then aggregate per environment,
method and metric over the runs (mean, sample standard deviation, number of runs with a finite value):
  compare.csv  env,method,metric,mean,std,n_runs
  compare.md   the paper's Table 1 shape: methods as columns, metrics by environment as rows, "mean ± std".

sweep: train one run per grid cell and seed (`magicmask run` in a subprocess, one after the other), explain
each, then write per cell a compare.{csv,md} and over the cells
  sweep.csv    cell,env,method,metric,mean,std,n_runs
  sweep.md     the paper's Tables 2-9 shape: per method a table with a metric per row, grid cells as columns.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from magicmask.protocol.transport import free_ports

ROOT = Path(__file__).resolve().parents[1]
METHOD_ORDER = ("magicmask", "statemask", "edge", "lazymdp", "valuemax", "random")
METRIC_ORDER = ("final_average_reward", "reward_preservation", "kl_divergence", "inter_agent_fidelity",
                "precision_at_k", "recall_at_2k", "reward_drop_pct", "control_reward_drop_pct", "return_drop",
                "fidelity_score", "window_len", "fit_seconds", "score_seconds", "inter_agent_seconds")
COMPARE_COLUMNS = ("env", "method", "metric", "mean", "std", "n_runs")


def _method_key(m: str):
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def _metric_key(name: str):
    base = re.sub(r"_k\d+$", "", name)
    k = re.search(r"_k(\d+)$", name)
    return (METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER), base, int(k.group(1)) if k else -1)


def run_env(run_dir: Path) -> str:
    """The run's environment name (report/summary.json, else config.yaml)."""
    s = run_dir / "report" / "summary.json"
    if s.is_file():
        return json.loads(s.read_text()).get("env", "?")
    c = run_dir / "config.yaml"
    if c.is_file():
        return ((yaml.safe_load(c.read_text()) or {}).get("env") or {}).get("name", "?")
    return "?"


def explain_runs(run_dirs, reuse: bool = False, overrides=(), log=print, report: bool = True) -> list[tuple[str, dict]]:
    """(env, metrics.json) per run, running `explain` where needed."""
    from magicmask.explain_cmd import run_explain
    out = []
    for rd in map(Path, run_dirs):
        mpath = rd / "report" / "metrics.json"
        if not (reuse and mpath.is_file()):
            log(f"compare: explaining {rd}")
            run_explain(rd, overrides=overrides, log=log, report=report)
        else:
            log(f"compare: reusing {mpath}")
        out.append((run_env(rd), json.loads(mpath.read_text())))
    return out


def _stats(vals) -> tuple[float, float, int]:
    v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)


def aggregate(entries: list[tuple[str, dict]]) -> list[dict]:
    """Rows env,method,metric,mean,std,n_runs over the runs of each environment (non-finite values left out;
    std is the sample standard deviation, 0 for a single run)."""
    groups: dict[tuple[str, str, str], list] = {}
    for env, metrics in entries:
        for method, d in metrics.items():
            if not isinstance(d, dict):
                continue
            for name, v in d.items():
                if isinstance(v, (int, float)) or v is None:
                    groups.setdefault((env, method, name), []).append(v)
    rows = []
    for (env, method, name) in sorted(groups, key=lambda k: (k[0], _method_key(k[1]), _metric_key(k[2]))):
        mean, std, n = _stats(groups[(env, method, name)])
        rows.append({"env": env, "method": method, "metric": name, "mean": mean, "std": std, "n_runs": n})
    return rows


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return "–"
    return f"{mean:.3g} ± {std:.2g}" if n > 1 else f"{mean:.3g}"


def _write_rows(path: Path, columns, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def compare_markdown(rows: list[dict], title: str = "Comparison of explainers") -> str:
    """Methods as columns, (environment, metric) as rows, mean ± std over runs."""
    methods = sorted({r["method"] for r in rows}, key=_method_key)
    envs = sorted({r["env"] for r in rows})
    cell = {(r["env"], r["method"], r["metric"]): r for r in rows}
    runs = {}
    for r in rows:
        runs[r["env"]] = max(runs.get(r["env"], 0), r["n_runs"])
    lines = [f"# {title}", "", "Mean ± sample standard deviation over runs (seeds); – : not defined for the method "
             "(see docs/metrics.md). " + ", ".join(f"{e}: {runs[e]} run(s)" for e in envs) + ".", "",
             "| env | metric | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for env in envs:
        metrics = sorted({r["metric"] for r in rows if r["env"] == env}, key=_metric_key)
        for m in metrics:
            vals = [cell.get((env, meth, m)) for meth in methods]
            lines.append(f"| {env} | {m} | " + " | ".join(fmt(v["mean"], v["std"], v["n_runs"]) if v else "–"
                                                        for v in vals) + " |")
    return "\n".join(lines) + "\n"


def write_compare(entries, out: Path, title: str = "Comparison of explainers") -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(entries)
    _write_rows(out / "compare.csv", COMPARE_COLUMNS, rows)
    (out / "compare.md").write_text(compare_markdown(rows, title))
    return rows


def run_compare(run_dirs, out=None, reuse: bool = False, overrides=(), log=print, report: bool = True) -> Path:
    """Explain (or reuse) every run, write compare.csv / compare.md into `out` (default: the first run's parent
    folder), copy them into each run's report/ and rebuild its HTML report."""
    run_dirs = [Path(r) for r in run_dirs]
    out = Path(out) if out else run_dirs[0].parent
    entries = explain_runs(run_dirs, reuse, overrides, log, report=False)
    write_compare(entries, out)
    log(f"compare: wrote {out / 'compare.md'} and {out / 'compare.csv'} ({len(run_dirs)} runs)")
    for rd in run_dirs:
        for name in ("compare.md", "compare.csv"):
            if (rd / "report").resolve() != out.resolve():
                shutil.copyfile(out / name, rd / "report" / name)
        if report:
            _report(rd, log)
    return out


def _report(run_dir: Path, log) -> None:
    try:
        from magicmask.report import write_report
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("magicmask.report"):
            raise
        log("compare: explain/report.py is not installed; no HTML report written")
        return
    log(f"compare: report: {write_report(run_dir)}")


# ---------------- sweep ----------------
def parse_grid(items) -> list[tuple[str, list[str]]]:
    """['mask.tau=0.3,0.5', 'comm.enabled=true,false'] -> [('mask.tau', ['0.3', '0.5']), ...]."""
    grid = []
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"--grid {it!r}: expected section.field=v1,v2,...")
        k, vs = it.split("=", 1)
        vals = [v.strip() for v in vs.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"--grid {it!r}: no values")
        grid.append((k.strip(), vals))
    return grid


def grid_cells(grid) -> list[list[str]]:
    """Every combination as a list of 'key=value' overrides ([[]] for an empty grid)."""
    if not grid:
        return [[]]
    return [[f"{k}={v}" for (k, _), v in zip(grid, combo)] for combo in itertools.product(*[vs for _, vs in grid])]


def cell_label(cell: list[str]) -> str:
    return ",".join(cell) if cell else "default"


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]+", "_", label).replace(",", "__")


def _port_overrides() -> list[str]:
    names = ["learner_fragments_port", "learner_weights_port", "learner_router_port", "broker_reports_port",
             "broker_snapshots_port", "broker_router_port", "metrics_port"]
    return [f"net.{n}={p}" for n, p in zip(names, free_ports(len(names)))]


def train_command(config: str, run_dir: Path, seed: int, cell: list[str], overrides) -> list[str]:
    cmd = [sys.executable, "-m", "magicmask.cli", "run", "--config", str(config), "--run-dir", str(run_dir)]
    # the seed varies training and the explainers' own randomness alike (baseline training, random windows)
    for o in [f"run.seed={seed}", f"explain.seed={seed}", "run.progress=false", *cell, *overrides, *_port_overrides()]:
        cmd += ["--set", o]
    return cmd


def sweep_markdown(rows: list[dict], cells: list[str], title: str) -> str:
    """Per method a table: a metric per row, grid cells as columns, mean ± std over seeds."""
    lines = [f"# {title}", "", "Mean ± sample standard deviation over seeds; columns are the grid cells.", ""]
    idx = {(r["cell"], r["method"], r["metric"]): r for r in rows}
    for method in sorted({r["method"] for r in rows}, key=_method_key):
        lines += [f"## {method}", "", "| metric | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
        for m in sorted({r["metric"] for r in rows if r["method"] == method}, key=_metric_key):
            vals = [idx.get((c, method, m)) for c in cells]
            lines.append(f"| {m} | " + " | ".join(fmt(v["mean"], v["std"], v["n_runs"]) if v else "–" for v in vals) + " |")
        lines.append("")
    return "\n".join(lines)


def run_sweep(config: str, seeds: list[int], grid_items, out, overrides=(), reuse: bool = False,
              dry_run: bool = False, log=print, timeout: float | None = None) -> Path:
    out = Path(out)
    grid = parse_grid(grid_items)
    cells = grid_cells(grid)
    plan = [(cell, s, out / "runs" / _safe(cell_label(cell)) / f"seed{s}") for cell in cells for s in seeds]
    if dry_run:
        for cell, s, rd in plan:
            log(" ".join(train_command(config, rd, s, cell, overrides)))
        return out
    out.mkdir(parents=True, exist_ok=True)
    all_rows = []
    for cell in cells:
        label = cell_label(cell)
        run_dirs = []
        for c, s, rd in plan:
            if c != cell:
                continue
            if reuse and (rd / "checkpoints" / "latest").is_file():
                log(f"sweep: [{label}] seed {s}: reusing {rd}")
            else:
                rd.mkdir(parents=True, exist_ok=True)
                cmd = train_command(config, rd, s, cell, overrides)
                log(f"sweep: [{label}] seed {s}: training in {rd}")
                with open(rd / "sweep_train.log", "w") as f:
                    res = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
                if res.returncode != 0:
                    raise RuntimeError(f"sweep: training failed (exit {res.returncode}); see {rd / 'sweep_train.log'}")
            run_dirs.append(rd)
        entries = explain_runs(run_dirs, reuse, (), log, report=False)
        cell_dir = out / "runs" / _safe(label)
        write_compare(entries, cell_dir, f"Comparison of explainers, {label}")
        for r in aggregate(entries):
            all_rows.append({"cell": label, **r})
    _write_rows(out / "sweep.csv", ("cell",) + COMPARE_COLUMNS, all_rows)
    title = "Sweep: " + (", ".join(k for k, _ in grid) if grid else "seeds only") + f" (config {config})"
    (out / "sweep.md").write_text(sweep_markdown(all_rows, [cell_label(c) for c in cells], title))
    log(f"sweep: wrote {out / 'sweep.md'} and {out / 'sweep.csv'} ({len(plan)} runs)")
    return out
