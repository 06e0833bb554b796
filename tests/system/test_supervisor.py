"""`magicmask run` on a shared machine and when processes die: two runs at once each take their own free ports
(net.auto_ports) and finish; a port the user pinned that something else holds, or a read-only or full disk,
stops the run before any process starts; a killed learner and a killed broker are restarted and the run
completes."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from magicmask.protocol import config as C
from tests.helpers import PATIENCE, end_run, wait_until

ROOT = Path(__file__).resolve().parents[2]

# waits are for conditions, bounded by PATIENCE (tests/helpers.py) or a few times it for a whole run; a test's
# limit is several of those (CI: 2 cores shared with other jobs, where a run takes many times its idle time)
pytestmark = pytest.mark.timeout(900)


def run_cmd(run_dir: Path, *overrides: str, steps: int = 3000) -> list[str]:
    """A short gates run with the ports left at their defaults unless `overrides` set them."""
    cmd = [sys.executable, "-m", "magicmask.cli", "run", "--config", "gates", "--run-dir", str(run_dir),
           "--steps", str(steps), "--agents", "2", "--set", "env.eval_every=0", "--set", "run.progress=false"]
    return cmd + [x for o in overrides for x in ("--set", o)]


def ports(run_dir: Path) -> set[int]:
    net = yaml.safe_load((run_dir / "config.yaml").read_text())["net"]
    return {net[f] for f in C.PORT_FIELDS} | set(range(net["metrics_port"], net["metrics_port"] + 4))


def test_two_runs_at_once_take_their_own_ports_and_both_finish(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = subprocess.Popen(run_cmd(a), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        second = subprocess.run(run_cmd(b), cwd=ROOT, capture_output=True, text=True, timeout=3 * PATIENCE)
        out_a, _ = first.communicate(timeout=3 * PATIENCE)
    finally:
        end_run(first, a)
        end_run(None, b)  # b's processes, if the timeout killed its supervisor
    assert first.returncode == 0, out_a[-3000:]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "free ports taken (net.auto_ports)" in second.stdout
    assert not ports(a) & ports(b), "the two runs share a port"
    defaults = C.NetConfig()
    assert not (ports(a) | ports(b)) & {getattr(defaults, f) for f in C.PORT_FIELDS}
    for run_dir in (a, b):
        assert "every agent reached run.total_steps=3000" in (run_dir / "logs" / "learner.log").read_text()


def test_a_pinned_port_in_use_stops_the_run_before_any_process_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(run_cmd(tmp_path / "r", f"net.broker_snapshots_port={port}"), cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"magicmask run: cannot start: port {port} on 127.0.0.1 (net.broker_snapshots_port) "
                           f"is in use by "), line
    assert not (tmp_path / "r").exists(), "a folder was made (or a process started) before the check"


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs folder mounted with those options (root only; skipped elsewhere)."""
    mounted = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                             text=True)
        if res.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.parametrize("options,says", [
    ("ro,size=1m", "cannot be written: Read-only file system"),
    ("size=1m", "its disk has 1.0 MiB free, less than run.min_free_mb=100"),
])
def test_a_read_only_or_full_disk_stops_the_run_before_any_process_starts(tmpfs, options, says):
    run_dir = tmpfs(options) / "run"
    res = subprocess.run(run_cmd(run_dir), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"magicmask run: cannot start: run directory {run_dir}") and says in line, line
    assert not (run_dir / "logs").exists() and not (run_dir / "config.yaml").exists()


def pids(pattern: str) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()]


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def snapshot_seqs(run_dir: Path) -> list[int]:
    """The broker's broadcast rounds as logged (seq starts at 1 again in a restarted broker)."""
    return [json.loads(x)["seq"] for x in (run_dir / "critical" / "snapshots.jsonl").read_text().splitlines()]


def test_killed_broker_and_learner_are_restarted_and_the_run_completes(tmp_path):
    """kill -9 of the broker mid-run, then of the learner: the supervisor restarts both (the learner from its
    latest checkpoint), the run completes with exit status 0, every agent reaches run.total_steps, and
    metrics.jsonl's versions are strictly increasing (the dead learner's rows after its checkpoint dropped).
    The broker goes first: the run cannot end without the learner, so its restart is seen whatever the speed."""
    run_dir, steps = tmp_path / "r", 12288
    cmd = run_cmd(run_dir, "learner.checkpoint_every=2", "learner.batch_deadline_s=2", "learner.liveness_s=3",
                  steps=steps)
    out_file = tmp_path / "supervisor.out"
    with open(out_file, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    learner_log, broker_log = run_dir / "logs" / "learner.log", run_dir / "logs" / "broker.log"
    try:
        wait_until(lambda: len(rows(run_dir)) >= 3, 2 * PATIENCE, "3 updates")
        (pid,) = pids(f"magicmask.cli broker .*{run_dir}")
        rounds = len(snapshot_seqs(run_dir))
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: 1 in snapshot_seqs(run_dir)[rounds:], what="a broadcast from a restarted broker")
        (pid,) = pids(f"magicmask.cli learner .*{run_dir}")
        os.kill(pid, signal.SIGKILL)
        proc.wait(3 * PATIENCE)
    finally:
        end_run(proc, run_dir)
    out = out_file.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "learner exited with -9; restarting in 0.5 s (1/5)" in out
    assert "broker exited with -9; restarting in 0.5 s (1/5)" in out
    assert broker_log.read_text().count("broker on 127.0.0.1") == 2
    versions = [r["version"] for r in rows(run_dir)]
    assert all(b > a for a, b in zip(versions, versions[1:])), f"versions not strictly increasing: {versions}"
    reached = {a: max(r["agents"][a]["env_steps"] for r in rows(run_dir) if a in r["agents"]) for a in ("0", "1")}
    assert min(reached.values()) >= steps, reached
    log = learner_log.read_text()
    assert "resumed from" in log and "every agent reached run.total_steps" in log


def test_restart_budgets_and_backoff(tmp_path):
    """run.max_restarts covers every process; an old config's run.max_actor_restarts still sets the actors'
    budget. Each restart of a process waits twice as long as its last, at most 30 s, and 0.5 s again after a
    life of 60 s or more."""
    from magicmask.supervisor import Supervisor
    old = tmp_path / "old.yaml"
    old.write_text("run:\n  agents: 2\n  max_actor_restarts: 2\n  max_restarts: 7\n")
    budgets = {c.name: (c.max_restarts, c.budget_field)
               for c in Supervisor(C.load(old, environ={}), tmp_path, old).children}
    assert budgets == {"broker": (7, "run.max_restarts"), "learner": (7, "run.max_restarts"),
                       "actor0": (2, "run.max_actor_restarts"), "actor1": (2, "run.max_actor_restarts")}
    cfg = C.load(overrides=["run.agents=1"], environ={})
    child = Supervisor(cfg, tmp_path, old).children[2]
    assert child.max_restarts == cfg.run.max_restarts == 5
    waits = [child.backoff(1.0) for _ in range(9)]
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert [child.backoff(s) for s in (60.0, 5.0, 5.0, 120.0)] == [0.5, 1, 2, 0.5]
