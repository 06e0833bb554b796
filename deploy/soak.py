"""Soak: the default job's processes (`magicmask run --config connect4`, no explanation) for HOURS hours, with
every process's resident memory (RSS) and open file descriptors (from /proc) and the queue depths on the
Prometheus endpoints (an actor's fragment queue, the broker's buffer) sampled every --interval seconds into
soak.csv and plotted in soak.png, both in the run directory. deploy/soak.sh is the entry point.

    deploy/soak.sh HOURS [--interval 60] [--warmup 10] [--limit 5] [--run-dir DIR] [--json FILE] [-- RUN OPTIONS]

run.total_steps is set out of reach and the run is stopped with SIGINT after HOURS, so it lasts that long; RUN
OPTIONS go to `magicmask run` as they are (--agents 2, --set ...). After the warm-up (--warmup minutes: buffers,
caches and the league fill), neither the RSS nor the descriptors of any process may grow by more than --limit
percent. Growth is the Theil-Sen trend of the samples after the warm-up (the median slope over all pairs of
samples) times their span, relative to their median: a steady leak moves it, one outlier (a descriptor open
for a scrape, a burst of garbage) does not. Exit status 1 when a process grew more, restarted (its figures then
mean nothing), or the run ended before its time; 0 otherwise.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from magicmask.protocol import config as C
from magicmask.supervisor import scrape

QUEUES = {"actor": "magicmask_actor_fragment_queue", "broker": "magicmask_broker_buffer_size"}
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def children(pid: int) -> dict[str, int]:
    """{name: pid} of the supervisor (`supervisor`) and its children (`broker`, `learner`, `actor<i>`), from /proc."""
    out = {"supervisor": pid}
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit() or int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) != pid:
                continue
            args = [a.decode() for a in (d / "cmdline").read_bytes().split(b"\0")]
        except (OSError, IndexError):
            continue
        if "magicmask.cli" in args:
            role = args[args.index("magicmask.cli") + 1]
            out[role + (args[args.index("--agent") + 1] if role == "actor" else "")] = int(d.name)
    return out


def sample(pid: int) -> tuple[float, int] | None:
    """(RSS in MiB, open file descriptors) of a process; None when it is gone."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError):
        return None


def queue(cfg: C.Config, name: str) -> float | None:
    """The process's queue gauge (QUEUES), None for processes without one or when its endpoint does not answer."""
    role = name[:5] if name.startswith("actor") else name
    if role not in QUEUES:
        return None
    m = scrape(cfg.metrics_port_of(role, int(name[5:]) if role == "actor" else 0))
    return next((v for k, v in m.items() if k[0] == QUEUES[role]), None)


def theil_sen_growth(t: list[float], v: list[float]) -> float:
    """Percent growth of v over the span of t along the median pairwise slope, relative to v's median."""
    slopes = [(v[j] - v[i]) / (t[j] - t[i]) for i in range(len(t)) for j in range(i + 1, len(t)) if t[j] > t[i]]
    level = statistics.median(v)
    return 100.0 * statistics.median(slopes) * (t[-1] - t[0]) / level if slopes and level else 0.0


def analyse(rows: list[dict], warmup_s: float, limit: float) -> dict[str, dict]:
    """Per process: its pids, the samples after the warm-up, its RSS and descriptors at the warm-up's end and at
    the end, their growth (%), the largest queue depth, and what is wrong ("" when nothing)."""
    out = {}
    for name in dict.fromkeys(r["process"] for r in rows):
        mine = [r for r in rows if r["process"] == name]
        after = [r for r in mine if r["elapsed_s"] >= warmup_s]
        pids = list(dict.fromkeys(r["pid"] for r in mine))
        judged = after or mine   # first and last figures: from the warm-up's end on
        res = {"pids": pids, "samples": len(after), "rss_mb": [judged[0]["rss_mb"], judged[-1]["rss_mb"]],
               "fds": [judged[0]["fds"], judged[-1]["fds"]],
               "queue_max": max((r["queue"] for r in mine if r["queue"] != ""), default=None)}
        problems = []
        if len(pids) > 1:
            problems.append(f"restarted ({len(pids) - 1} times)")
        if len(after) < 5:
            problems.append(f"{len(after)} samples after the warm-up, 5 needed")
        else:
            t = [r["elapsed_s"] for r in after]
            for key in ("rss_mb", "fds"):
                res[f"{key}_growth_pct"] = g = round(theil_sen_growth(t, [r[key] for r in after]), 2)
                if g > limit:
                    problems.append(f"{key} grew {g:.1f}% > {limit}%")
        res["problem"] = "; ".join(problems)
        out[name] = res
    return out


def plot(rows: list[dict], warmup_s: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for i, name in enumerate(dict.fromkeys(r["process"] for r in rows)):
        mine = [r for r in rows if r["process"] == name]
        t = [r["elapsed_s"] / 60 for r in mine]
        for ax, key in zip(axes, ("rss_mb", "fds", "queue")):
            pts = [(x, r[key]) for x, r in zip(t, mine) if r[key] != ""]
            if pts:
                ax.plot(*zip(*pts), label=name, lw=1, color=f"C{i % 10}")
    for ax, label in zip(axes, ("RSS (MiB)", "open file descriptors", "queue depth")):
        ax.axvline(warmup_s / 60, color="grey", ls="--", lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=4)
    axes[0].set_title("soak: per process (dashed: end of the warm-up; queue: actor fragments, broker buffer entries)")
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("hours", type=float)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=10.0, help="minutes not judged")
    p.add_argument("--limit", type=float, default=5.0, help="growth allowed after the warm-up, percent")
    p.add_argument("--run-dir", type=Path, help="default: runs/soak-<time>")
    p.add_argument("--json", type=Path, help="also write the per-process results here")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:split])
    run_dir = (a.run_dir or Path("runs") / time.strftime("soak-%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "magicmask.cli", "run", "--config", "connect4", "--run-dir", str(run_dir),
           "--set", f"run.total_steps={10**12}", *argv[split + 1:]]
    duration = a.hours * 3600
    with open(run_dir / "soak-supervisor.log", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    t0, rows, cfg, early = time.monotonic(), [], None, None
    fields = ["elapsed_s", "process", "pid", "rss_mb", "fds", "queue"]
    with open(run_dir / "soak.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        try:
            while True:
                now = time.monotonic() - t0
                if proc.poll() is not None:
                    early = now
                    break
                if cfg is None and (run_dir / "config.yaml").is_file():
                    cfg = C.load(run_dir / "config.yaml", environ={})
                for name, pid in children(proc.pid).items():
                    got = sample(pid)
                    if got is None:
                        continue
                    q = queue(cfg, name) if cfg else None
                    rows.append({"elapsed_s": round(now, 1), "process": name, "pid": pid, "rss_mb": round(got[0], 2),
                                 "fds": got[1], "queue": "" if q is None else q})
                    w.writerow(rows[-1])
                f.flush()
                if now >= duration:
                    break
                time.sleep(max(0.0, min(now + a.interval, duration) - (time.monotonic() - t0)))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)   # the supervisor stops every child
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    plot(rows, a.warmup * 60, run_dir / "soak.png")
    res = analyse(rows, a.warmup * 60, a.limit)
    if a.json:
        a.json.write_text(json.dumps({"early_exit_s": early, "processes": res}, indent=1))
    print(f"soak {a.hours:g} h ({time.monotonic() - t0:.0f} s), warm-up {a.warmup:g} min, limit {a.limit:g}%, "
          f"{a.interval:g} s between samples: {run_dir / 'soak.csv'}, {run_dir / 'soak.png'}")
    for name, r in res.items():
        growth = ", ".join(f"{k[:-11]} {r[k]:+.2f}%" for k in ("rss_mb_growth_pct", "fds_growth_pct") if k in r)
        print(f"  {name:10s} RSS {r['rss_mb'][0]:.1f} -> {r['rss_mb'][1]:.1f} MiB, fds {r['fds'][0]} -> {r['fds'][1]}"
              f"{', queue max ' + format(r['queue_max'], 'g') if r['queue_max'] is not None else ''}; "
              f"growth after the warm-up: {growth or '-'}" + (f"  FAIL: {r['problem']}" if r["problem"] else ""))
    if early is not None:
        print(f"FAIL: the run ended after {early:.0f} s, before its time; see {run_dir / 'soak-supervisor.log'}")
    return 1 if early is not None or any(r["problem"] for r in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
