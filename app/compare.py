"""`magicmask compare RUN_DIR [RUN_DIR...]`: explain every run (or reuse its report/metrics.json with --reuse),
then aggregate per environment, method and metric over the runs (mean, sample standard deviation, number of
runs with a finite value):
  compare.csv  env,method,metric,mean,std,n_runs
  compare.md   the paper's Table 1 shape: methods as columns, metrics by environment as rows, "mean ± std".
`magicmask sweep` (sweep.py) writes the same tables per grid cell.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import yaml

from magicmask.api import explain_run
from magicmask.explain.stats import fmt_mean_sd, mean_sd, significant, t_interval
from magicmask.explain.tables import write_csv
from magicmask.protocol.config import EXPLAINERS

METRIC_ORDER = ("final_average_reward", "reward_preservation", "kl_divergence", "inter_agent_fidelity",
                "precision_at_k", "recall_at_2k", "reward_drop_pct", "control_reward_drop_pct", "return_drop",
                "fidelity_score", "window_len", "fit_seconds", "score_seconds", "inter_agent_seconds")
COMPARE_COLUMNS = ("env", "method", "metric", "mean", "std", "n_runs", "ci_lo", "ci_hi", "significant")


def method_key(m: str):
    """Sort key of explainers: the config's order, others (a stand-in oracle) after them by name."""
    return (EXPLAINERS.index(m) if m in EXPLAINERS else len(EXPLAINERS), m)


def metric_key(name: str):
    """Sort key of metric names: the order of docs/metrics.md, a metric's K fractions in increasing order."""
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
    out = []
    for rd in map(Path, run_dirs):
        mpath = rd / "report" / "metrics.json"
        if not (reuse and mpath.is_file()):
            log(f"compare: explaining {rd}")
            explain_run(rd, overrides=overrides, report=report, log=log)
        else:
            log(f"compare: reusing {mpath}")
        out.append((run_env(rd), json.loads(mpath.read_text())))
    return out


def aggregate(entries: list[tuple[str, dict]]) -> list[dict]:
    """Rows env,method,metric,mean,std,n_runs,ci_lo,ci_hi,significant over the runs of each environment
    (non-finite values left out; std is the sample standard deviation, 0 for a single run). The 95% interval:
    over several runs the t-interval of the runs' values (the seeds' spread); for one run the run's own
    bootstrap interval over episodes where metrics.json has one (`<metric>_ci`). `significant` is '+' when the
    interval lies above 0, '-' below, '' otherwise."""
    groups: dict[tuple[str, str, str], list] = {}
    own_ci: dict[tuple[str, str, str], list] = {}
    for env, metrics in entries:
        for method, d in metrics.items():
            if not isinstance(d, dict):
                continue
            for name, v in d.items():
                if isinstance(v, (int, float)) or v is None:
                    groups.setdefault((env, method, name), []).append(v)
                elif name.endswith("_ci") and isinstance(v, list) and len(v) == 2:
                    own_ci.setdefault((env, method, name[:-3]), []).append(v)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], method_key(k[1]), metric_key(k[2]))):
        mean, std, n = mean_sd(groups[key])
        if n >= 2:
            ci = t_interval(groups[key])
        elif n == 1 and len(own_ci.get(key, [])) == 1:
            ci = [float("nan") if x is None else float(x) for x in own_ci[key][0]]
        else:
            ci = [float("nan"), float("nan")]
        rows.append({"env": key[0], "method": key[1], "metric": key[2], "mean": mean, "std": std, "n_runs": n,
                     "ci_lo": ci[0], "ci_hi": ci[1], "significant": significant(ci)})
    return rows


def _cell(r: dict) -> str:
    """'mean ± sd [lo, hi]' with the significance mark where the row has an interval."""
    text = fmt_mean_sd(r["mean"], r["std"], r["n_runs"])
    if math.isfinite(r["ci_lo"]) and math.isfinite(r["ci_hi"]):
        text += f" [{r['ci_lo']:.3g}, {r['ci_hi']:.3g}]" + (f" {r['significant']}" if r["significant"] else "")
    return text


def compare_markdown(rows: list[dict], title: str = "Comparison of explainers") -> str:
    """Methods as columns, (environment, metric) as rows, mean ± std over runs and the 95% interval."""
    methods = sorted({r["method"] for r in rows}, key=method_key)
    envs = sorted({r["env"] for r in rows})
    cell = {(r["env"], r["method"], r["metric"]): r for r in rows}
    runs = {}
    for r in rows:
        runs[r["env"]] = max(runs.get(r["env"], 0), r["n_runs"])
    lines = [f"# {title}", "", "Mean ± sample standard deviation over runs (seeds), then the 95% interval in "
             "brackets: over several runs the t-interval across them, for one run its bootstrap interval over "
             "episodes (where metrics.json has one). + / -: the interval lies above / below 0 (significant at 5%; "
             "for drop_minus_control: the method's steps matter more / less than random ones). – : not defined "
             "for the method (see docs/metrics.md). " + ", ".join(f"{e}: {runs[e]} run(s)" for e in envs) + ".", "",
             "| env | metric | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for env in envs:
        metrics = sorted({r["metric"] for r in rows if r["env"] == env}, key=metric_key)
        for m in metrics:
            vals = [cell.get((env, meth, m)) for meth in methods]
            lines.append(f"| {env} | {m} | " + " | ".join(_cell(v) if v else "–" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def write_compare(entries, out: Path, title: str = "Comparison of explainers") -> list[dict]:
    """compare.csv and compare.md of (env, metrics.json) entries into `out`; the aggregated rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(entries)
    write_csv(out / "compare.csv", COMPARE_COLUMNS, rows)
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
            from magicmask.report import write_report
            log(f"compare: report: {write_report(rd)}")
    return out
