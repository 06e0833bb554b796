"""Several hosts on one machine: three network namespaces, each with a veth pair to a bridge in a fourth (the
switch), addresses 10.77.0.1-3/24. The broker and the learner run on host 0, actor 0 on host 1, actor 1 on
host 2, as separate `magicmask` processes over real TCP with CURVE keys (the only safe way to bind beyond
loopback). This is what loopback tests cannot show: the roles find each other by address and the whole run
completes across hosts, and the delays measured on both paths follow what is configured on the channel:
the broker's report delay (actor -> broker) and a probe subscriber's snapshot delay (broker -> host 1).

Needs root and `ip netns`; skipped with the reason otherwise. The kernel-delay test also needs netem.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from deploy.netns import NET, Hosts, NetnsUnavailable, generate_keys
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol import security as S
from magicmask.protocol.codec import decode
from magicmask.protocol.transport import make_socket, tcp

ROOT = Path(__file__).resolve().parents[2]
STEPS = 1024  # env steps per agent: 4 fragments of 64 x 4 (gates), about 20 reports and snapshot rounds

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def hosts():
    """Names of three namespaces on one bridge: host i has eth0 = 10.77.0.(i+1)/24, and lo up (deploy/netns.py).
    Names carry the pid so parallel runs do not collide; everything is deleted afterwards, also on failure."""
    made = Hosts(3, NET)
    try:
        made.create()
    except NetnsUnavailable as e:
        pytest.skip(str(e))
    try:
        yield made.names
    finally:
        made.delete()


@pytest.fixture
def keys(tmp_path):
    """CURVE keys for the broker, the learner, actors 0 and 1 and the probe, made by `magicmask keys`."""
    return generate_keys(tmp_path / "keys", 2, ["probe"])


def probe(keys_dir: str, host: str, port: int, receiver: int) -> None:
    """A subscriber with its own allowed key (run in a host's namespace): prints `seq delay_s` per snapshot on
    receiver's topic, delay = receipt minus the broker's body["created_at"] (one clock: one kernel)."""
    public, secret = S.load_pair(keys_dir, "probe")
    curve = S.SocketSecurity(public, secret, Path(keys_dir) / S.PUBLIC, S.load_public(keys_dir, "broker"))
    sub = make_socket(zmq.Context(), zmq.SUB, curve=curve)
    sub.setsockopt(zmq.SUBSCRIBE, M.snapshot_topic(receiver))
    sub.connect(tcp(host, port))
    while True:
        frames = sub.recv_multipart()
        t = time.time()
        msg = decode(frames[1:], 1 << 26)
        print(msg.seq, t - msg.body["created_at"], flush=True)


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else "(no log)"


def train(hosts, keys, run_dir: Path, *overrides: str) -> dict:
    """One run across the hosts; returns the learner's metrics rows, the broker's snapshot lines and the probe's
    snapshot delays. Fails with the logs' tails when a process fails; every process is gone on return."""
    run_dir.mkdir(parents=True)
    sets = [f"net.host={NET}.1", f"security.keys_dir={keys}", "run.agents=2", f"run.total_steps={STEPS}",
            "env.eval_every=0", *overrides]
    common = ["--config", str(ROOT / "deploy/configs/gates.yaml"), "--run-dir", str(run_dir),
              *sum((["--set", s] for s in sets), [])]
    roles = {"broker": (hosts[0], ["broker", *common]), "learner": (hosts[0], ["learner", *common]),
             "actor0": (hosts[1], ["actor", "--agent", "0", *common]),
             "actor1": (hosts[2], ["actor", "--agent", "1", *common]),
             "probe": (hosts[1], ["-c", f"from tests.system.test_multihost import probe; "
                                        f"probe({str(keys)!r}, '{NET}.1', {C.Config().net.broker_snapshots_port}, 0)"])}
    procs = {}

    def logs() -> str:
        return "\n".join(f"--- {n}.log\n{tail(run_dir / f'{n}.log')}" for n in procs)

    def wait(name: str, timeout_s: float) -> None:
        try:
            procs[name].wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {timeout_s} s\n{logs()}")
    try:
        for name, (ns, args) in roles.items():
            with open(run_dir / f"{name}.log", "wb") as log:  # `ip netns exec` execs: the pid is python's
                cmd = ["ip", "netns", "exec", ns, sys.executable, *([] if name == "probe" else ["-m", "magicmask.cli"]),
                       *args]
                procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait("learner", 240)
        for name in ("actor0", "actor1", "broker"):  # they stop by themselves on the learner's Stop
            wait(name, 30)
        procs["probe"].send_signal(signal.SIGTERM)
        wait("probe", 10)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for name in ("broker", "learner", "actor0", "actor1"):
        assert procs[name].returncode == 0, f"{name} exited with {procs[name].returncode}\n{logs()}"
    assert "learner stopped: every agent reached run.total_steps" in tail(run_dir / "learner.log", 100_000), logs()
    snapshots = run_dir / "critical" / "snapshots.jsonl"
    assert snapshots.is_file(), f"the broker wrote no snapshot\n{logs()}"
    probe_lines = [x.split() for x in (run_dir / "probe.log").read_text().splitlines()]
    return {"rows": [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()],
            "snapshots": [json.loads(x) for x in snapshots.read_text().splitlines()],
            "snapshot_delay": [float(x[1]) for x in probe_lines if len(x) == 2 and x[0].isdigit()], "logs": logs()}


def report_delays(run: dict) -> list[float]:
    return [d for line in run["snapshots"] for d in line["report_delay_s"].values()]


def check_everyone_arrived(run: dict) -> None:
    """Every actor's fragments reached the learner and its reports reached the broker."""
    trained: dict[str, int] = {}
    for row in run["rows"]:
        for a, d in row["agents"].items():
            trained[a] = max(trained.get(a, 0), d["env_steps"])
    assert set(trained) == {"0", "1"} and min(trained.values()) >= STEPS, f"steps trained per agent: {trained}"
    last = run["snapshots"][-1]["agent_steps"]
    assert set(last) == {"0", "1"} and min(last.values()) >= STEPS // 2, f"steps reported per agent: {last}"
    got = len(run["snapshot_delay"])
    assert got >= 5, f"the probe on host 1 got {got} snapshots\n{run['logs']}"


def test_run_across_three_hosts_with_curve_and_impairment(hosts, keys, tmp_path):
    """comm.latency_ms=100 on both broker paths shows up as >= 100 ms in both measured delays; without it they
    are a few ms: the measurements see the channel, and the run completes across hosts either way."""
    impaired = train(hosts, keys, tmp_path / "impaired", "comm.latency_ms=100", "comm.impair_reports=true")
    control = train(hosts, keys, tmp_path / "control")
    for run in (impaired, control):
        check_everyone_arrived(run)
    rep, snap = report_delays(impaired), impaired["snapshot_delay"]
    # the impairment holds a message latency_ms after the broker got it (reports) or stamped it (snapshots);
    # a snapshot's stamp is taken while packing, a few us after the round's start the delay counts from
    assert min(rep) >= 0.099 and min(snap) >= 0.099, (sorted(rep)[:5], sorted(snap)[:5])
    rep0, snap0 = report_delays(control), control["snapshot_delay"]
    assert statistics.median(rep0) < 0.05 and statistics.median(snap0) < 0.05, (rep0, snap0)


def test_kernel_delay_netem(hosts, keys, tmp_path):
    """50 ms of kernel delay (netem) on every host's egress: each path crosses one such qdisc, so both measured
    delays are >= 50 ms. Skipped where the kernel has no netem (sch_netem), as on the development machines."""
    if shutil.which("tc") is None:
        pytest.skip("`tc` (iproute2) is not installed")
    for ns in hosts:
        res = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
                              "delay", "50ms"], capture_output=True, text=True)
        if "Specified qdisc kind is unknown" in res.stderr:
            pytest.skip(f"the kernel has no netem qdisc: tc says {res.stderr.strip()!r}")
        assert res.returncode == 0, res.stderr
    run = train(hosts, keys, tmp_path / "netem")
    check_everyone_arrived(run)
    rep, snap = report_delays(run), run["snapshot_delay"]
    assert min(rep) >= 0.05 and min(snap) >= 0.05, (sorted(rep)[:5], sorted(snap)[:5])
    assert statistics.median(rep) < 0.2 and statistics.median(snap) < 0.2, (rep, snap)
