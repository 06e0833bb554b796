"""Cells of the communication study (`magicmask commstudy`) trained across network-namespace hosts instead of on
loopback, and compared with the study's own loopback runs of the same cells and seeds.

Per (cell, seed), with the overrides the study would use (run.seed, explain.seed and, per-seed design,
comm.seed = the seed; run.progress=false; the study's --set items; the cell's overrides): the broker and the
learner run on host 0 (10.77.0.1), the run's actors spread over hosts 1..--actor-hosts (actor i on host
1 + i mod --actor-hosts), each a separate `magicmask` process in its namespace, over TCP between the hosts with
CURVE keys (deploy/netns.py). Then `magicmask explain RUN_DIR --no-report` (on this machine: the study explains
without the HTML report too), and the run is read as the study reads its runs (magicmask.commstudy.runs).

Where the delay is made: comm.latency_ms, jitter and loss are the broker's impairment (broker/impairment.py,
in the broker's send path, per link), the same mechanism as on loopback; what changes is the channel the
messages cross (veth pairs and a bridge between namespaces, CURVE encryption) and that every role is its own
process started here (no supervisor: no restart). Whether the kernel has netem is tried and said; netem is
never used (this script compares hosts with loopback at equal impairment).

Cells: --cell NAME:OVERRIDES, repeatable. NAME is the cell's label in the study (its folder
STUDY/cells/NAME/), OVERRIDES its config overrides separated by commas (or spaces), e.g.
    --cell baseline:                                    (no overrides)
    --cell latency=1000ms:comm.latency_ms=1000,comm.jitter_ms=200
    --cell loss=0.9:comm.loss=0.9,comm.loss_model=iid
A comma splits only before a `section.field=`, so a value may hold commas (explain.k_fractions=0.1,0.2).
--cell NAME without a colon takes the cell's overrides from the loopback study's study.json; with no --cell
every cell of that study.json is run.

Output folder OUT:
  keys/                          the CURVE keys of the runs (magicmask keys generate)
  cells/<cell>/seed<s>/          the run directories (logs/<role>.log, hosts.json: where each role ran)
  hosts.csv                      one row per run: cell, seed, where (hosts | loopback), run_dir, error, wall_s,
                                 step_rate and every quantity of the study (magicmask.commstudy.runs.METRICS)
  hosts.md                       first line: where the delay was made and the machine; then per cell and
                                 quantity the mean [95% t] over seeds on hosts and on loopback and the paired
                                 difference hosts - loopback [95% t] with +/- where it excludes 0

Needs root and `ip netns` (a clear error otherwise). Exit status 0 when every run trained and was explained,
1 when some run failed (the tables are written with what there is), 2 on a bad argument or missing input.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # run as a script: deploy/ is on the path, the repository root is not
    sys.path.insert(0, str(ROOT))

from deploy.netns import Hosts, NetnsUnavailable, check_available, generate_keys  # noqa: E402
from magicmask.commstudy.runs import METRIC_NAMES, RunData, best_return, read_run, run_metrics  # noqa: E402
from magicmask.config_file import resolve_config  # noqa: E402
from magicmask.explain.stats import fmt_interval, mean_sd, paired_differences, significant, t_interval  # noqa: E402
from magicmask.explain.tables import write_csv  # noqa: E402
from magicmask.machine import machine_line  # noqa: E402
from magicmask.protocol import config as C  # noqa: E402
from magicmask.sweep import run_dir as study_run_dir, safe_name  # noqa: E402

DEFAULT_CONFIG = "commstudy-gates8"
# the quantities hosts.md compares (hosts.csv has every one); step_rate: env steps per second per agent, and
# age_at_use_steps (the age in the agent's own steps) beside age_at_use_s, which a slower machine inflates
COMPARED = ("train_return", "steps_to_target", "steps_to_target_masked", "final_return", "fidelity_k10",
            "delivered_share", "delay_s", "age_at_use_s", "age_at_use_steps", "guided_share", "step_rate")
CSV_COLUMNS = ("cell", "seed", "where", "run_dir", "error", "wall_s", "step_rate", *METRIC_NAMES)
IGNORED_SECTIONS = ("net", "security")   # where a hosts run's config may differ from its loopback run's
OVERRIDE_START = re.compile(r"[,\s]+(?=[A-Za-z_]\w*\.[A-Za-z_][\w.]*=)")


class UsageError(ValueError):
    """A bad argument or missing input; the message names it (exit status 2)."""


@dataclass
class Cell:
    name: str
    overrides: list[str]


@dataclass
class Plan:
    config: Path
    cells: list[Cell]
    seeds: list[int]
    out: Path
    overrides: list[str] = field(default_factory=list)    # every run's (the study's --set items and ours)
    comm_seed: str = "per-seed"
    loopback: Path | None = None
    study: dict | None = None                             # the loopback study's study.json
    target: float | None = None
    target_fraction: float = 0.9
    actor_hosts: int = 2
    timeout_s: float = 900.0
    reuse: bool = False


# ---------------- arguments ----------------
def split_overrides(text: str) -> list[str]:
    """'comm.latency_ms=1000,comm.jitter_ms=200' -> two items; a comma splits only before `section.field=`."""
    items = [s.strip() for s in OVERRIDE_START.split(text.strip()) if s.strip()]
    for it in items:
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise UsageError(f"{it!r}: an override is section.field=value")
    return items


def parse_cell(text: str) -> tuple[str, list[str] | None]:
    """'NAME:OVERRIDES' -> (NAME, overrides); 'NAME' -> (NAME, None): take them from the study's study.json."""
    name, colon, rest = text.partition(":")
    if not name.strip():
        raise UsageError(f"--cell {text!r}: expected NAME:OVERRIDE,OVERRIDE... (NAME: the study's cell label)")
    try:
        return name.strip(), (split_overrides(rest) if colon else None)
    except UsageError as e:
        raise UsageError(f"--cell {text!r}: {e}") from None


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise UsageError("--seeds: no seed given")
    return list(dict.fromkeys(seeds))


def loopback_runs(plan: Plan) -> dict[tuple[str, int], Path]:
    """The loopback study's run of every (cell, seed): STUDY/cells/<cell>/runs/default/seed<s>/; UsageError
    naming every missing one."""
    if plan.loopback is None:
        return {}
    found, missing = {}, []
    for cell in plan.cells:
        for s in plan.seeds:
            rd = study_run_dir(plan.loopback / "cells" / safe_name(cell.name), [], s)
            if (rd / "config.yaml").is_file():
                found[(cell.name, s)] = rd
            else:
                missing.append(str(rd))
    if missing:
        have = sorted(p.name for p in (plan.loopback / "cells").glob("*")) if (plan.loopback / "cells").is_dir() \
            else []
        raise UsageError(f"--loopback {plan.loopback}: no run (config.yaml) in " + ", ".join(missing)
                         + f"; the study's cells there: {', '.join(have) or 'none'}")
    return found


def make_plan(args) -> Plan:
    """The plan from the arguments and the loopback study's study.json; every cell's config is loaded here, so
    a bad override fails before any namespace or process exists."""
    loopback = Path(args.loopback).resolve() if args.loopback else None
    study = None
    if loopback is not None:
        if not loopback.is_dir():
            raise UsageError(f"--loopback {loopback}: no such folder (a finished `magicmask commstudy` folder)")
        sj = loopback / "study.json"
        study = json.loads(sj.read_text()) if sj.is_file() else None
    known = {c["label"]: list(c["overrides"]) for c in (study or {}).get("cells", [])}
    cells = []
    for text in args.cell or ([] if study is None else [c for c in known]):
        name, overrides = parse_cell(text)
        if overrides is None:
            if name not in known:
                raise UsageError(f"--cell {name}: no overrides given and no such cell in "
                                 f"{'the loopback study.json' if study else 'a study.json (none: give --loopback)'}"
                                 f"{': ' + ', '.join(known) if known else ''}; use --cell {name}:OVERRIDES")
            overrides = known[name]
        elif name in known and sorted(overrides) != sorted(known[name]):
            ran = " ".join(known[name]) or "no overrides"
            raise UsageError(f"--cell {text}: the loopback study ran {name} with {ran}: give those (or --cell "
                             f"{name} alone) to compare the same cell")
        cells.append(Cell(name, overrides))
    if not cells:
        raise UsageError("no cell: give --cell NAME:OVERRIDES (or --loopback a study folder with a study.json)")
    if len({c.name for c in cells}) != len(cells):
        raise UsageError("--cell: a cell name is given twice")
    config = resolve_config(args.config or (study or {}).get("config") or DEFAULT_CONFIG)
    plan = Plan(config, cells, parse_seeds(args.seeds), Path(args.out).resolve(),
                [*(study or {}).get("overrides", []), *args.set],
                args.comm_seed or (study or {}).get("comm_seed") or "per-seed", loopback, study,
                args.target_return, args.target_fraction, args.actor_hosts, args.timeout, args.reuse)
    if plan.comm_seed not in ("per-seed", "fixed"):
        raise UsageError(f"--comm-seed {plan.comm_seed!r}: allowed per-seed, fixed")
    if not 1 <= plan.actor_hosts <= 200:
        raise UsageError(f"--actor-hosts {plan.actor_hosts}: allowed 1..200")
    for cell in cells:
        for s in plan.seeds:
            try:
                C.load(plan.config, run_overrides(plan, cell, s))
            except C.ConfigError as e:
                raise UsageError(f"cell {cell.name}, seed {s}: {e}") from None
    return plan


# ---------------- one run across the hosts ----------------
def run_overrides(plan: Plan, cell: Cell, seed: int, hosts_net: list[str] = ()) -> list[str]:
    """A run's overrides in the order sweep.train_command gives them (then the hosts' network settings)."""
    seeds = [f"run.seed={seed}", f"explain.seed={seed}", *([f"comm.seed={seed}"] if plan.comm_seed == "per-seed"
                                                          else [])]
    return [*seeds, "run.progress=false", *cell.overrides, *plan.overrides, *hosts_net]


def run_dir(plan: Plan, cell: Cell, seed: int) -> Path:
    return plan.out / "cells" / safe_name(cell.name) / f"seed{seed}"


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop(procs: dict[str, subprocess.Popen]) -> None:
    """Kill what is still running of the processes this run started (each is its own process group)."""
    for p in procs.values():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs.values():
        p.wait()


def train_across(plan: Plan, hosts: Hosts, keys: Path, cell: Cell, seed: int, log) -> float:
    """Train one (cell, seed) with every role in its host's namespace; returns the wall time. RuntimeError with
    the failing role's log tail when the run does not complete."""
    rd = run_dir(plan, cell, seed)
    if rd.exists():   # a run left by an earlier try: the learner would append to its metrics.jsonl
        shutil.rmtree(rd)
    (rd / "logs").mkdir(parents=True)
    net = [f"net.host={hosts.address(0)}", f"security.keys_dir={keys}"]
    cfg = C.load(plan.config, run_overrides(plan, cell, seed, net))
    C.save(cfg, rd / "config.yaml")
    common = ["--config", str(rd / "config.yaml"), "--run-dir", str(rd)]
    roles = {"broker": (0, ["broker", *common]), "learner": (0, ["learner", *common])}
    roles |= {f"actor{i}": (1 + i % plan.actor_hosts, ["actor", "--agent", str(i), *common])
              for i in range(cfg.run.agents)}
    placement = {n: {"host": h, "namespace": hosts[h], "address": hosts.address(h)} for n, (h, _) in roles.items()}
    (rd / "hosts.json").write_text(json.dumps({"roles": placement, "finished": False}, indent=1))
    env = {"OPENBLAS_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}   # as the supervisor's children
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.monotonic()

    def failed(what: str, name: str) -> RuntimeError:
        return RuntimeError(f"{what}; {rd / 'logs' / (name + '.log')} ends:\n{tail(rd / 'logs' / (name + '.log'))}")
    try:
        for name, (h, args) in roles.items():
            with open(rd / "logs" / f"{name}.log", "wb") as f:
                procs[name] = hosts.popen(h, [sys.executable, "-m", "magicmask.cli", *args], cwd=ROOT, env=env,
                                          stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = t0 + plan.timeout_s
        while procs["learner"].poll() is None:   # a role that dies early fails the run now, not at the timeout
            dead = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if dead:
                raise failed(f"{dead[0]} exited with {procs[dead[0]].returncode} during training", dead[0])
            if time.monotonic() > deadline:
                raise failed(f"the learner was still running after {plan.timeout_s:g} s", "learner")
            time.sleep(0.5)
        wall = time.monotonic() - t0
        if procs["learner"].returncode != 0:
            raise failed(f"the learner exited with {procs['learner'].returncode}", "learner")
        for name, p in procs.items():   # they stop by themselves on the learner's Stop
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                raise failed(f"{name} still running 30 s after the learner stopped", name) from None
            if p.returncode != 0:
                raise failed(f"{name} exited with {p.returncode}", name)
    finally:
        stop(procs)
    if "every agent reached run.total_steps" not in (rd / "logs" / "learner.log").read_text(errors="replace"):
        raise failed("the learner stopped before every agent reached run.total_steps", "learner")
    if not (rd / "checkpoints" / "latest").is_file():
        raise failed("no checkpoint (checkpoints/latest)", "learner")
    (rd / "hosts.json").write_text(json.dumps({"roles": placement, "finished": True, "wall_s": wall}, indent=1))
    log(f"commstudy_hosts: [{cell.name}] seed {seed}: trained across {len(hosts)} hosts in {wall:.0f} s")
    return wall


def explain(rd: Path, timeout_s: float) -> None:
    """`magicmask explain RUN_DIR --no-report` on this machine (as the study: no HTML report)."""
    with open(rd / "explain.log", "wb") as f:
        res = subprocess.run([sys.executable, "-m", "magicmask.cli", "explain", str(rd), "--no-report"], cwd=ROOT,
                             stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s)
    if res.returncode:
        raise RuntimeError(f"magicmask explain exited with {res.returncode}; {rd / 'explain.log'} ends:\n"
                           f"{tail(rd / 'explain.log')}")


def finished_run(rd: Path) -> float | None:
    """The wall time of a run this script finished before (--reuse), else None."""
    try:
        info = json.loads((rd / "hosts.json").read_text())
    except (OSError, ValueError):
        return None
    return info.get("wall_s") if info.get("finished") and (rd / "checkpoints" / "latest").is_file() else None


# ---------------- comparing ----------------
def config_differences(hosts_rd: Path, loop_rd: Path) -> list[str]:
    """Fields (outside net.* and security.*) whose values differ between two runs' config.yaml."""
    try:
        a, b = (yaml.safe_load((d / "config.yaml").read_text()) or {} for d in (hosts_rd, loop_rd))
    except OSError:
        return []
    out = []
    for section in sorted(set(a) | set(b)):
        if section in IGNORED_SECTIONS:
            continue
        sa, sb = a.get(section) or {}, b.get(section) or {}
        out += [f"{section}.{k}: hosts {sa.get(k)!r}, loopback {sb.get(k)!r}" for k in sorted(set(sa) | set(sb))
                if sa.get(k) != sb.get(k)]
    return out


def resolve_target(plan: Plan, runs: list[RunData]) -> tuple[float | None, str]:
    """The study's rule: given, or the fraction of the best evaluation return of every run compared."""
    if plan.target is not None:
        return plan.target, "given with --target-return"
    best = best_return(runs)
    basis = f"{plan.target_fraction:g} x the highest evaluation return of the runs compared (hosts and loopback)" \
            + ("" if best is None else f", {best:g}")
    return (None if best is None else plan.target_fraction * best), basis


def comparison_rows(plan: Plan, rows: list[dict]) -> list[dict]:
    """Per cell and quantity: hosts and loopback mean [95% t] over the seeds, and the paired difference."""
    out = []
    by = {(r["cell"], r["seed"], r["where"]): r for r in rows}
    for cell in plan.cells:
        for q in COMPARED:
            h = [by.get((cell.name, s, "hosts"), {}).get(q) for s in plan.seeds]
            lo = [by.get((cell.name, s, "loopback"), {}).get(q) for s in plan.seeds]
            hn = [math.nan if v is None else v for v in h]
            ln = [math.nan if v is None else v for v in lo]
            d = paired_differences(hn, ln)
            ci = t_interval(d)
            out.append({"cell": cell.name, "quantity": q, "hosts": mean_sd(h), "hosts_ci": t_interval(h),
                        "loopback": mean_sd(lo), "loopback_ci": t_interval(lo),
                        "diff": (float(d.mean()) if len(d) else math.nan, len(d)), "diff_ci": ci,
                        "significant": significant(ci)})
    return out


def markdown(plan: Plan, meta: dict, rows: list[dict], comparison: list[dict]) -> str:
    lines = [meta["first_line"], "", "# Study cells across network-namespace hosts vs loopback", "",
             f"- config: {plan.config}; seeds {', '.join(map(str, plan.seeds))}; comm.seed: {plan.comm_seed}"
             + (f"; every run also: {' '.join(plan.overrides)}" if plan.overrides else ""),
             f"- hosts: the broker and the learner on host 0 ({meta['address0']}), actor i on host "
             f"1 + i mod {plan.actor_hosts} (namespaces on one bridge, veth pairs), TCP with CURVE keys; each role "
             f"its own process, started directly (no supervisor, so no restart)",
             f"- loopback: {plan.loopback or '(none given)'}: the study's runs of the same cells and seeds "
             f"(`magicmask run` on 127.0.0.1 without keys)",
             f"- target: {meta['target']:.4g} ({meta['target_basis']})" if meta["target"] is not None
             else f"- target: none ({meta['target_basis']})",
             f"- wall time of this invocation {meta['wall_s'] / 60:.1f} min; load average {meta['load_start']:.2f} "
             f"at the start, {meta['load_end']:.2f} at the end", ""]
    if plan.study and plan.study.get("target") is not None:
        lines[-1:-1] = [f"- the loopback study's own target: {plan.study['target']:.4g} "
                        f"({plan.study.get('target_basis', '')})"]
    lines += ["Cells:", ""] + [f"- {c.name}: {' '.join(c.overrides) or '(the config as given)'}" for c in plan.cells]
    lines += ["", "Per cell and quantity: mean [95% Student-t interval] over the seeds, hosts and loopback; hosts - "
              "loopback paired over the seeds both have, [95% t interval of the differences], + / - where it "
              "excludes 0. step_rate: env steps per second per agent (learner's rows); age_at_use_steps = age_at_use_s x "
              "step_rate, the age in the agent's own steps, which a slower (loaded) machine does not inflate.", ""]
    for cell in plan.cells:
        lines += [f"## {cell.name}", "", "| quantity | hosts | loopback | hosts - loopback |", "|---|---|---|---|"]
        for c in (c for c in comparison if c["cell"] == cell.name):
            (hm, _, hn), (lm, _, ln), (dm, dn) = c["hosts"], c["loopback"], c["diff"]
            diff = " ".join(filter(None, (fmt_interval(dm, c["diff_ci"], dn), c["significant"])))
            lines.append(f"| {c['quantity']} | {fmt_interval(hm, c['hosts_ci'], hn)}{note(hn, plan)} | "
                         f"{fmt_interval(lm, c['loopback_ci'], ln)}{note(ln, plan)} | {diff}{note(dn, plan)} |")
        lines.append("")
    lines += ["## Runs", "", "| cell | seed | where | wall s | error | run |", "|---|---|---|---|---|---|"]
    for r in rows:
        err = (r["error"] or "").splitlines()[0] if r["error"] else ""
        wall = "" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        lines.append(f"| {r['cell']} | {r['seed']} | {r['where']} | {wall} | {err} | {r['run_dir']} |")
    lines += ["", "## Checks", "", "Config differences between a hosts run and its loopback run (net.* and security.* "
              "aside), and loopback runs without an explanation:", ""]
    lines += [f"- {d}" for d in meta["notes"]] or [
        "- none: every pair ran the same config" if plan.loopback else "- no loopback runs (no --loopback)"]
    return "\n".join(lines) + "\n"


def note(n: int, plan: Plan) -> str:
    return f" (n={n})" if 0 < n < len(plan.seeds) else ""


# ---------------- the whole comparison ----------------
def run(plan: Plan, log=print) -> int:
    loops = loopback_runs(plan)
    check_available()
    t0, load_start = time.monotonic(), os.getloadavg()[0]
    plan.out.mkdir(parents=True, exist_ok=True)
    agents = max(C.load(plan.config, run_overrides(plan, c, plan.seeds[0])).run.agents for c in plan.cells)
    keys = generate_keys(plan.out / "keys", agents)
    results: list[tuple[RunData, float | None]] = []
    with Hosts(1 + plan.actor_hosts) as hosts:
        found, seen = hosts.netem()
        address0 = hosts.address(0)
        for cell in plan.cells:
            for s in plan.seeds:
                rd, error, wall = run_dir(plan, cell, s), None, None
                try:
                    wall = finished_run(rd) if plan.reuse else None
                    if wall is None:
                        log(f"commstudy_hosts: [{cell.name}] seed {s}: training across the hosts in {rd}")
                        wall = train_across(plan, hosts, keys, cell, s, log)
                    else:
                        log(f"commstudy_hosts: [{cell.name}] seed {s}: reusing {rd}")
                    if not (plan.reuse and (rd / "report" / "metrics.json").is_file()):
                        explain(rd, plan.timeout_s)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    error = f"{type(e).__name__}: {e}"
                    log(f"commstudy_hosts: [{cell.name}] seed {s}: FAILED: {error}")
                results.append((read_run(cell.name, s, rd, error), wall))
    kernel = "the kernel has netem, not used here" if found else "no netem on this kernel"
    first = (f"Delay and loss made by the broker's impairment (broker/impairment.py: in the broker's send path, per "
             f"link, as on loopback), not by the kernel: {kernel} ({seen}). Machine: {machine_line()}.")
    loop_data = [(read_run(c, s, rd), None) for (c, s), rd in loops.items()]
    everything = [r for r, _ in results + loop_data]
    target, basis = resolve_target(plan, everything)
    rows = [{"cell": r.cell, "seed": r.seed, "where": where, "run_dir": str(r.run_dir), "error": r.error,
             "wall_s": wall, "step_rate": r.step_rate, **run_metrics(r, target)}
            for where, group in (("hosts", results), ("loopback", loop_data)) for r, wall in group]
    diffs = [f"{r.cell} seed {r.seed}: {d}" for r, _ in results if (r.cell, r.seed) in loops
             for d in config_differences(r.run_dir, loops[(r.cell, r.seed)])]
    diffs += [f"{r.cell} seed {r.seed}: the loopback run has no explanation (report/metrics.json)"
              for r, _ in loop_data if r.explain is None]
    meta = {"first_line": first, "address0": address0, "target": target, "target_basis": basis,
            "wall_s": time.monotonic() - t0, "load_start": load_start, "load_end": os.getloadavg()[0],
            "notes": diffs}
    write_csv(plan.out / "hosts.csv", CSV_COLUMNS, rows)
    (plan.out / "hosts.md").write_text(markdown(plan, meta, rows, comparison_rows(plan, rows)))
    failed = [r for r, _ in results if r.error]
    log(f"commstudy_hosts: wrote {plan.out / 'hosts.md'} and hosts.csv ({len(results)} runs across hosts, "
        f"{len(loop_data)} on loopback{f', {len(failed)} FAILED' if failed else ''})")
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="deploy/commstudy_hosts.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train cells of the communication study across network-namespace hosts (broker and learner\n"
                    "on host 0, actors on the others, TCP with CURVE keys; the delay is the broker's impairment)\n"
                    "and compare them with the study's loopback runs. Needs root and `ip netns`.",
        epilog="cells: --cell NAME:OVERRIDE,OVERRIDE... e.g.\n"
               "  --cell baseline:\n"
               "  --cell latency=1000ms:comm.latency_ms=1000,comm.jitter_ms=200\n"
               "  --cell loss=0.9:comm.loss=0.9,comm.loss_model=iid\n"
               "NAME is the study's cell label (STUDY/cells/NAME/); --cell NAME alone takes its overrides from "
               "STUDY/study.json.\nexample: python deploy/commstudy_hosts.py --loopback /tmp/study --seeds 0,1,2 "
               "--out /tmp/hosts --cell baseline --cell latency=1000ms")
    ap.add_argument("--config", help=f"YAML config or preset name (default: the loopback study's config from its "
                                     f"study.json, else {DEFAULT_CONFIG})")
    ap.add_argument("--cell", action="append", default=[], metavar="NAME:OVERRIDES",
                    help="a cell (repeatable); default: every cell of the loopback study's study.json")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    ap.add_argument("--out", required=True, help="output folder (runs, keys, hosts.csv, hosts.md)")
    ap.add_argument("--loopback", metavar="STUDY_DIR",
                    help="a finished `magicmask commstudy` folder: its runs of the same cells and seeds "
                         "(STUDY_DIR/cells/<cell>/runs/default/seed<s>/) are the comparison")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="an override for every run (repeatable), after the study's own --set items")
    ap.add_argument("--comm-seed", choices=("per-seed", "fixed"),
                    help="comm.seed design as in the study (default: the study's, else per-seed: comm.seed = seed)")
    ap.add_argument("--target-return", type=float, help="the return that counts as reached (default: the "
                                                        "study's rule, --target-fraction x the best of every run)")
    ap.add_argument("--target-fraction", type=float, default=0.9, help="(default 0.9)")
    ap.add_argument("--actor-hosts", type=int, default=2, help="hosts the actors are spread over (default 2)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds one run may train, or be explained "
                                                                 "(default 900)")
    ap.add_argument("--reuse", action="store_true", help="keep runs (and explanations) this script finished in "
                                                         "OUT before")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        plan = make_plan(args)
        return run(plan)
    except (UsageError, C.ConfigError, NetnsUnavailable) as e:
        print(f"commstudy_hosts: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
