"""deploy/commstudy_hosts.py: a study cell trained across network-namespace hosts (deploy/netns.py: broker and
learner on host 0, actor 0 on host 1, actor 1 on host 2, TCP with CURVE keys) and compared with a loopback run
of the same cell. The slow case needs root and `ip netns` (skipped with the reason otherwise, as
test_multihost.py); the argument checks need neither."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.netns import NET, Hosts, NetnsUnavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "commstudy_hosts.py"
STEPS = 1024          # env steps per agent, as test_multihost.py
LATENCY_S = 0.5
CELL = "latency=500ms"
SMALL = ["--set", "run.agents=2", "--set", f"run.total_steps={STEPS}", "--set", "explain.episodes=2"]


def script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def netns():
    """Skip where namespaces cannot be made (the reasons of test_multihost.py); the script makes its own."""
    probe = Hosts(1)
    try:
        probe.create()
    except NetnsUnavailable as e:
        pytest.skip(str(e))
    probe.delete()


def test_help_and_missing_loopback_runs(tmp_path):
    """--help documents the cell syntax; a loopback run that is not there is an error naming its path, before
    anything is trained (no root needed)."""
    res = script("--help", timeout=60)
    assert res.returncode == 0 and "--cell NAME:OVERRIDE" in res.stdout, res.stderr
    (tmp_path / "study" / "cells").mkdir(parents=True)
    res = script("--out", str(tmp_path / "out"), "--loopback", str(tmp_path / "study"), "--cell",
                 f"{CELL}:comm.latency_ms=500", timeout=60)
    missing = tmp_path / "study" / "cells" / CELL / "runs" / "default" / "seed0"
    assert res.returncode == 2 and str(missing) in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def rows_of(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.long   # ~1-2 min on 2 cores; test_multihost.py runs the same roles across hosts in every suite
@pytest.mark.timeout(420)
def test_cell_across_hosts_against_loopback(netns, tmp_path):
    """One latency cell (500 ms, no jitter), 2 agents, 1 seed across the hosts: the run completes with every role
    where the plan puts it, the actors measure the configured delay, and with a loopback folder (here: a copy of
    the hosts run in the study's layout, so the difference is exactly 0) hosts.csv and hosts.md compare them."""
    out, study = tmp_path / "out", tmp_path / "study"
    cell = [f"{CELL}:comm.latency_ms={LATENCY_S * 1000:g},comm.jitter_ms=0"]
    res = script("--out", str(out), "--cell", *cell, *SMALL)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rd = out / "cells" / CELL / "seed0"

    # across hosts: the roles ran where the plan says, over the bridge with keys, and the run completed
    roles = json.loads((rd / "hosts.json").read_text())["roles"]
    assert {n: r["host"] for n, r in roles.items()} == {"broker": 0, "learner": 0, "actor0": 1, "actor1": 2}
    assert roles["actor1"]["address"] == f"{NET}.3"
    cfg = yaml.safe_load((rd / "config.yaml").read_text())
    assert cfg["net"]["host"] == f"{NET}.1" and cfg["security"]["keys_dir"] == str(out / "keys")
    assert (cfg["run"]["seed"], cfg["comm"]["seed"], cfg["comm"]["latency_ms"]) == (0, 0, 500.0)
    trained: dict[str, int] = {}
    for line in (rd / "metrics.jsonl").read_text().splitlines():
        for a, d in json.loads(line)["agents"].items():
            trained[a] = max(trained.get(a, 0), d["env_steps"])
    assert set(trained) == {"0", "1"} and min(trained.values()) >= STEPS, trained
    assert (rd / "checkpoints" / "latest").is_file() and (rd / "report" / "metrics.json").is_file()

    # a loopback folder in the study's layout, then the comparison (--reuse: nothing is trained again)
    shutil.copytree(rd, study / "cells" / CELL / "runs" / "default" / "seed0")
    res = script("--out", str(out), "--cell", *cell, *SMALL, "--loopback", str(study), "--reuse")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "reusing" in res.stdout and "training across" not in res.stdout, res.stdout
    rows = rows_of(out / "hosts.csv")
    assert [(r["cell"], r["seed"], r["where"]) for r in rows] == [(CELL, "0", "hosts"), (CELL, "0", "loopback")]
    hosts = rows[0]
    # the broker holds every snapshot latency_ms, counted from the round's start; the snapshot's created_at
    # (what the actors' delay counts from) is stamped while packing, which a loaded machine can make tens of ms
    # later (0.473 s seen at load 7 on 2 cores): near the latency, not at least it
    assert abs(float(hosts["delay_s"]) - LATENCY_S) < 0.1, hosts["delay_s"]
    assert float(hosts["delivered_share"]) > 0.5 and hosts["final_return"] and hosts["fidelity_k10"], hosts
    assert rows[1]["delay_s"] == hosts["delay_s"]
    md = (out / "hosts.md").read_text()
    first = md.splitlines()[0]
    assert "broker's impairment" in first and "netem" in first and "cores" in first, first
    assert f"## {CELL}" in md and "- none: every pair ran the same config" in md, md
    delay = next(x for x in md.splitlines() if x.startswith("| delay_s |"))
    assert delay.endswith("| 0 |"), delay   # hosts - loopback of a run and its copy
