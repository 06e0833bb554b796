"""Chaos: during one gates run (deploy/chaos.py, real processes on loopback) the learner, the broker and the actors
are each killed with SIGKILL twice at seeded random moments, the learner is frozen with SIGSTOP for longer than
the actors' liveness timeout, and one actor's network is cut (an eBPF drop on lo: root and Linux >= 6.6, else
the run goes without, with a warning). The run must still end by itself with exit status 0 and leave a whole
run behind: every agent at run.total_steps, metrics.jsonl with each update version once, 1..N, N the final
checkpoint's (a restarted learner drops the rows after the checkpoint it resumes from and writes those
versions again), a final checkpoint that loads and plays, no process left, and no restart but the kills'."""
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "deploy" / "chaos.py"
# faults wait for their target's last one to recover, so the later ones can slip: at 20,480 steps and faults up to
# 0.6 of them, a loaded CI machine once finished the run before the last kill (39 s); faults now end by 0.35 of
# twice the steps
HEARTBEAT_S, STEPS, LAST_FAULT_AT = 0.5, 40960, 0.35

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_a_run_survives_kills_a_frozen_learner_and_a_network_cut(tmp_path):
    probe = subprocess.run([sys.executable, str(CHAOS), "--probe-cut"], capture_output=True, text=True, timeout=60)
    cut = probe.returncode == 0
    if not cut:
        warnings.warn(f"the network cut is not exercised: {probe.stdout.strip()} {probe.stderr.strip()}")
    run_dir, summary = tmp_path / "run", tmp_path / "chaos.json"
    res = subprocess.run(
        [sys.executable, str(CHAOS), "--kills", "6", "--seed", "3", "--agents", "2", "--steps", str(STEPS),
         "--stop", "learner", "--stop-s", "4", "--cut-s", "4" if cut else "0", "--heartbeat-s", str(HEARTBEAT_S),
         "--pause-max", "3", "--last-fault-at", str(LAST_FAULT_AT), "--timeout", "330", "--run-dir", str(run_dir), "--json", str(summary)],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    out = res.stdout[-4000:] + res.stderr[-4000:]
    s = json.loads(summary.read_text())
    faults = {f["kind"]: f for f in s["faults"]}

    # every fault was made, and its target worked again afterwards
    assert s["done"] == s["planned"] == 7 + cut, out
    assert s["kills"] == {"learner": 2, "broker": 2, "actor": 2}, out
    assert all(f.get("recovered_s") is not None and "error" not in f for f in s["faults"]), s["faults"]
    liveness = 3 * HEARTBEAT_S
    assert faults["stop"]["role"] == "learner" and faults["stop"]["silence_s"] > liveness, faults["stop"]
    if cut:   # the cut actor heard neither peer for longer than its liveness timeout: the packets were dropped
        quiet = faults["cut"]["silence_s"]
        assert None not in quiet.values() and min(quiet.values()) > liveness, faults["cut"]

    # the run ended by itself, and the supervisor restarted exactly the killed processes
    assert s["supervisor_exit"] == 0, out
    deaths = re.findall(r"^(\w+) exited with (-?\d+); restarting", (run_dir / "supervisor.log").read_text(), re.M)
    killed = sorted(f["role"] for f in s["faults"] if f["kind"] == "kill")
    assert sorted(name for name, _ in deaths) == killed and {code for _, code in deaths} == {"-9"}, deaths

    # what it left: versions 1..N each once, N the final checkpoint's; every agent at total_steps
    from magicmask.explain.episodes import load_run, record_episode
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    run = load_run(run_dir)
    versions = [r["version"] for r in rows]
    assert versions == list(range(1, run.version + 1)), f"versions {versions}, final checkpoint {run.version}"
    for a in ("0", "1"):
        assert max(r["agents"][a]["env_steps"] for r in rows if a in r["agents"]) >= STEPS, a
    # the final checkpoint plays
    assert all(record_episode(run.make_env(a), run.policies[a], a, seed=0).length > 0 for a in (0, 1))
    left = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True).stdout
    assert not left, f"processes left behind:\n{left}"
    assert res.returncode == 0, out   # the script's own checks agree
