"""docs/PROMETHEUS.md against live processes: the broker, the learner and one actor run as their own processes
(`magicmask broker | learner | actor`, as on separate machines) on loopback with metrics on; once they have
trained a little, each one's /metrics is scraped. Every magicmask_* name a process exposes must be documented
in its section of the page (or the section every process shares) with its type and labels, and every name
documented there must be exposed. The supervisor's status table reads the same endpoints."""
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from magicmask import supervisor
from magicmask.protocol import config as C
from magicmask.protocol.transport import free_ports
from magicmask.supervisor import Rate, Supervisor
from tests.helpers import PATIENCE

# waits are for conditions, bounded by PATIENCE (tests/helpers.py); a test's limit is several of those
pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "PROMETHEUS.md"
PROCESSES = ("broker", "learner", "actor")
ROW = re.compile(r"^\|\s*`(magicmask_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|")


def documented() -> dict[str, dict[str, tuple[str, set[str]]]]:
    """{process: {name: (type, label names)}} from the page's tables; a table belongs to the `## ` heading
    above it: one naming a process, or "Every process"."""
    out = {p: {} for p in (*PROCESSES, "every")}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            words = line[3:].lower().split()
            section = "every" if words[:2] == ["every", "process"] else words[0] if words[0] in PROCESSES else None
        elif section and (m := ROW.match(line)):
            labels = {x.strip(" `") for x in m.group(3).split(",") if x.strip(" `-")}
            out[section][m.group(1)] = (m.group(2), labels)
    return {p: {**out["every"], **out[p]} for p in PROCESSES}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=PATIENCE) as r:
        return r.read().decode()


def exposed(text: str) -> dict[str, tuple[str, set[str] | None]]:
    """{name as exposed: (type, label names, None without a sample yet)} of the magicmask_* families.
    A counter family `x` is exposed as samples `x_total` (and `x_created`): its name is `x_total`."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("magicmask_"):
            continue
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        values = [s for s in fam.samples if s.name == name]
        assert len(values) + sum(s.name == fam.name + "_created" for s in fam.samples) == len(fam.samples), fam
        out[name] = (fam.type, set(values[0].labels) if values else None)
    return out


def sample(text: str, name: str, **labels) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def metrics_base() -> tuple[list[int], int]:
    """Six free socket ports and a metrics port m with m + 1 and m + 2 (learner, actor 0) free as well."""
    for _ in range(50):
        ports = free_ports(len(C.PORT_FIELDS) + 1)
        m = ports[-1]
        try:
            for p in (m + 1, m + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        if not {m + 1, m + 2} & set(ports):
            return ports[:-1], m
    raise RuntimeError("no three consecutive free ports")


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """(the run's config, {process: metrics port}) of a broker, a learner and actor 0 that have trained a
    little (each process polled until it has: the learner updated, the actor reported, the broker broadcast)."""
    tmp_path = tmp_path_factory.mktemp("live")
    ports, metrics = metrics_base()  # broker; learner +1; actor 0 +2
    sets = [*C.port_overrides(ports, metrics), "env.name=gates", "run.agents=1",
            "env.copies=2", "actor.fragment_len=8", "ppo.minibatches=2", "env.eval_every=1", "env.eval_episodes=1",
            "actor.report_every=8", "broker.snapshot_every=8", "run.total_steps=100000000", "net.heartbeat_s=0.2"]
    args = [a for s in sets for a in ("--set", s)]
    procs = {}
    try:
        for role in PROCESSES:
            extra = ["--agent", "0"] if role == "actor" else []
            log = open(tmp_path / f"{role}.log", "wb")
            procs[role] = subprocess.Popen([sys.executable, "-m", "magicmask.cli", role, *extra, "--run-dir",
                                            str(tmp_path / "run"), *args], cwd=ROOT, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
        port = {"broker": metrics, "learner": metrics + 1, "actor": metrics + 2}
        ready = {"learner": ("magicmask_learner_updates_total", {}),
                 "actor": ("magicmask_actor_reports_total", {"agent": "0"}),
                 "broker": ("magicmask_broker_snapshot_rounds_total", {})}
        deadline = time.time() + 3 * PATIENCE
        for role, (name, labels) in ready.items():
            while True:
                assert procs[role].poll() is None, (tmp_path / f"{role}.log").read_text()[-3000:]
                try:
                    if (sample(scrape(port[role]), name, **labels) or 0) >= 1:
                        break
                except OSError:
                    pass  # not serving yet
                assert time.time() < deadline, f"{role}: {name} never reached 1"
                time.sleep(0.5)
        yield C.load(overrides=sets, environ={}), port
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_every_exposed_metric_is_documented_and_every_documented_one_exposed(live_run):
    _, ports = live_run
    doc = documented()
    for role, port in ports.items():
        text = scrape(port)
        got = exposed(text)
        want = doc[role]
        assert sorted(set(got) - set(want)) == [], f"{role} exposes these, undocumented in {DOC.name}"
        assert sorted(set(want) - set(got)) == [], f"{DOC.name} documents these for the {role}, not exposed"
        for name, (kind, labels) in got.items():
            assert want[name][0] == kind, f"{name}: exposed as a {kind}, documented as a {want[name][0]}"
            assert labels is None or labels == want[name][1], f"{name}: labels {labels}, documented {want[name][1]}"
    # rates are counters (PromQL's rate()), never gauges of a rate
    assert not [n for p in ports.values() for n in exposed(scrape(p)) if "per_second" in n or "_sps" in n]


def test_supervisor_status_rates_from_counter_deltas(live_run, tmp_path, monkeypatch):
    """The live status table's steps/s: the increase of the learner's env-steps counter between two scrapes."""
    cfg, ports = live_run
    # The supervisor gives a scrape 0.5 s; a process that does not answer in time (a loaded machine makes that
    # happen now and then) shows its last answered figures and adds no sample to the rates. A status read
    # while the learner or the broker did not answer is no new reading of what they expose: it is taken again.
    answered = {}

    def scrape(port, host="127.0.0.1"):
        answered[port] = bool(samples := real_scrape(port, host))
        return samples
    real_scrape = supervisor.scrape
    monkeypatch.setattr(supervisor, "scrape", scrape)

    def status(*roles):
        """sup.status(), taken again until the `roles` answered its scrapes."""
        deadline = time.time() + PATIENCE
        while True:
            answered.clear()
            st = sup.status()
            if all(answered.get(ports[role]) for role in roles):
                return st
            assert time.time() < deadline, f"{roles}: a scrape went unanswered for {PATIENCE} s: {answered}"
            time.sleep(0.2)
    sup = Supervisor(cfg, tmp_path, tmp_path / "config.yaml")
    first = status("learner")  # the learner's first sample: taken again only while the learner did not answer
    assert first["sps"] is None and first["agents"][0]["sps"] is None  # one scrape: no rate yet
    assert first["agents"][0]["steps"] > 0 and first["version"] >= 1
    deadline = time.time() + PATIENCE
    # 0 until an update lands between two scrapes; the steps column may lag the counter by one scrape
    while not ((st := status("learner", "broker"))["sps"] and st["agents"][0]["steps"] > first["agents"][0]["steps"]):
        assert time.time() < deadline, "no rate: the learner stopped training, or the counter is not read"
        time.sleep(0.2)
    assert st["sps"] > 0 and st["sps"] == pytest.approx(st["agents"][0]["sps"])
    assert st["snapshot_seq"] >= 1


def test_rate_over_a_window_survives_a_counter_reset():
    r = Rate(window_s=10.0)
    r.add(0.0, 100.0)
    assert r.per_second() is None
    r.add(5.0, 150.0)
    assert r.per_second() == pytest.approx(10.0)
    r.add(10.0, 20.0)   # the process restarted: its counter counts from 0 again, all 20 are new
    assert r.per_second() == pytest.approx((50 + 20) / 10)
    r.add(12.0, None)   # unreachable: no sample
    r.add(20.0, 40.0)   # only the last 10 s count
    assert r.per_second() == pytest.approx(20 / 10)


def test_status_holds_the_last_answer_of_a_process_that_misses_a_scrape(tmp_path, monkeypatch):
    """A missed scrape keeps the learner's last figures in the status (not zeros) and feeds no rate sample."""
    cfg = C.load(overrides=["run.agents=1", "net.metrics_port=9400"], environ={})
    learner_port = cfg.metrics_port_of("learner")
    answers = iter([100.0, None, 300.0])

    def scrape(port, host="127.0.0.1"):
        if port != learner_port or (steps := next(answers)) is None:
            return {}
        agent = ("agent", "0")
        return {("magicmask_learner_env_steps_total", agent): steps, ("magicmask_learner_agent_env_steps", agent): steps,
                ("magicmask_learner_policy_version",): steps / 100}
    monkeypatch.setattr(supervisor, "scrape", scrape)
    sup = Supervisor(cfg, tmp_path, tmp_path / "config.yaml")
    assert sup.status()["agents"][0]["steps"] == 100
    held = sup.status()                                  # no answer: the last figures, no new rate sample
    assert held["agents"][0]["steps"] == 100 and held["version"] == 1 and held["agents"][0]["sps"] is None
    assert len(sup.step_rates[0].samples) == 1 and held["snapshot_seq"] is None   # the broker never answered
    time.sleep(0.05)
    st = sup.status()
    assert st["agents"][0]["steps"] == 300 and st["agents"][0]["sps"] > 0 and len(sup.step_rates[0].samples) == 2


def test_documented_counters_carry_the_total_suffix():
    """The names on the page are the exposed ones: prometheus_client appends _total to every counter."""
    for role, names in documented().items():
        for name, (kind, _) in names.items():
            assert kind in ("counter", "gauge"), (role, name, kind)
            assert name.endswith("_total") == (kind == "counter"), f"{role}: {name} is documented as a {kind}"
