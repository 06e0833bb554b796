"""A 3-minute soak (deploy/soak.py, what deploy/soak.sh runs): the default job's processes (connect4, 2 agents
here to spare the CI's cores) sampled every 3 s after a 1-minute warm-up. Actor 1 is given a leak (a
sitecustomize that, in that process only, keeps 1 MiB and one open descriptor more every second): the soak
must fail on it, for both figures, and on nothing else, so the trend check is shown to catch a real leak while
the untouched processes stay under the limit."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT_PCT = 5.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

LEAK = '''
import os, threading, time
if b"actor\\x00--agent\\x001\\x00" in open("/proc/self/cmdline", "rb").read():
    def leak(kept=[]):
        while True:
            kept.append((b"x" * 2**20, os.open(os.devnull, os.O_RDONLY)))
            time.sleep(1)
    threading.Thread(target=leak, daemon=True).start()
'''


def test_soak_finds_an_injected_leak_and_nothing_else(tmp_path):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(LEAK)
    run_dir, result = tmp_path / "run", tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "inject")}
    res = subprocess.run(
        [sys.executable, "deploy/soak.py", "0.05", "--interval", "3", "--warmup", "1", "--limit", str(LIMIT_PCT),
         "--run-dir", str(run_dir), "--json", str(result), "--", "--agents", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    out = res.stdout[-4000:] + res.stderr[-4000:]
    r = json.loads(result.read_text())
    procs = r["processes"]
    assert r["early_exit_s"] is None, out
    assert set(procs) == {"supervisor", "broker", "learner", "actor0", "actor1"}, out
    leaky = procs.pop("actor1")
    assert "rss_mb grew" in leaky["problem"] and "fds grew" in leaky["problem"], out
    for name, p in procs.items():
        assert p["problem"] == "", f"{name}: {p['problem']}\n{out}"
        assert p["samples"] >= 25 and abs(p["rss_mb_growth_pct"]) <= LIMIT_PCT, (name, p)
    assert res.returncode == 1, out   # the leak, and only it, fails the soak

    with open(run_dir / "soak.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    queues = {}
    for row in rows:
        if row["queue"]:
            queues.setdefault(row["process"], []).append(float(row["queue"]))
    assert set(queues) == {"broker", "actor0", "actor1"}, sorted(queues)
    assert max(queues["broker"]) <= 64 and max(queues["actor0"] + queues["actor1"]) <= 8, queues  # top_k, offline_queue
    assert (run_dir / "soak.png").stat().st_size > 10_000
    left = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True).stdout
    assert not left, f"processes left behind:\n{left}"
