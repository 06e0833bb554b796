"""The broker process on real loopback sockets (PULL reports, PUB snapshots, ROUTER state requests), run in a
thread via `main` (and once as its own process); its parts as units: test_broker_parts.py."""
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from prometheus_client import REGISTRY

from magicmask.broker import server
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode, encode
from magicmask.protocol.transport import tcp
from tests.helpers import PATIENCE, wait_until

# waits are for conditions, bounded by PATIENCE (tests/helpers.py); a test's limit is several of those
pytestmark = pytest.mark.timeout(600)
D = 32
ROOT = Path(__file__).resolve().parents[2]


def unit_keys(n, d=D, seed=0):
    """n nearly orthogonal unit keys (random Gaussian directions: cosine ~ +-0.3 in 32 dims)."""
    k = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return k / np.linalg.norm(k, axis=1, keepdims=True)


def metric(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0



def make_cfg(ports, agents=1, **sections):
    cfg = C.Config()
    cfg.run.agents = agents
    cfg.actor.key_dim = D
    net = cfg.net
    (net.broker_reports_port, net.broker_snapshots_port, net.broker_router_port) = ports
    net.host, net.metrics_port, net.heartbeat_s = "127.0.0.1", 0, 0.2  # a client waits for a heartbeat
    for sec, values in sections.items():
        for k, v in values.items():
            setattr(getattr(cfg, sec), k, v)
    return cfg


@pytest.fixture
def start_broker(tmp_path):
    """start_broker(cfg) runs `server.main` in a thread; stopped and joined at teardown."""
    running = []

    def start(cfg):
        ev = threading.Event()
        th = threading.Thread(target=server.main, args=(cfg, tmp_path, ev), daemon=True)
        th.start()
        running.append((ev, th))
        return ev, th

    yield start
    for ev, th in running:
        ev.set()
        th.join(PATIENCE)
        assert not th.is_alive()


class Client:
    """Actor-side sockets of a test: PUSH reports, SUB snapshots (topics of `receivers`), DEALERs.

    The slow joiner: a SUB's subscription reaches the PUB some time after connect(), and what the broker
    broadcasts before that is lost to us. So the SUB takes every topic with one subscription (b"") and the
    client is ready once the broker's first heartbeat arrives on it: from then on no broadcast is missed.
    Snapshots for other receivers and heartbeats are skipped on reading."""

    def __init__(self, cfg, receivers=(0,)):
        self.cfg, self.ctx = cfg, zmq.Context()
        self.context = {"K": D, "F": M.finder_bytes(cfg.run.agents)}  # what an actor binds
        self.senders = {}
        self.topics = {M.snapshot_topic(r) for r in receivers}
        self.push = self._sock(zmq.PUSH)
        self.push.connect(tcp("127.0.0.1", cfg.net.broker_reports_port))
        self.sub = self._sock(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(tcp("127.0.0.1", cfg.net.broker_snapshots_port))
        deadline = time.time() + PATIENCE
        while not (self.sub.poll(100) and self.sub.recv_multipart()[0] == b"hb"):
            assert time.time() < deadline, "no heartbeat from the broker's PUB"
        self.dealer = self._sock(zmq.DEALER)
        self.dealer.connect(tcp("127.0.0.1", cfg.net.broker_router_port))

    def _sock(self, kind):
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        return s

    def sender(self, agent):
        return self.senders.setdefault(agent, Sender(agent))

    def report(self, agent, env_steps, keys=None, scores=None):
        keys = np.zeros((0, D), np.float32) if keys is None else np.asarray(keys, np.float32)
        scores = np.full(len(keys), 0.5, np.float32) if scores is None else np.asarray(scores, np.float32)
        n = len(keys)
        arrays = {"keys": keys, "scores": scores, "steps": np.full(n, env_steps, np.int64),
                  "positions": np.zeros(n, np.int32)}
        self.push.send_multipart(self.sender(agent).pack(M.REPORT, {"env_steps": env_steps}, arrays))

    def snapshot(self, timeout=PATIENCE):
        """(receive time, Message) of the next snapshot for our receivers on the SUB, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.sub.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            frames = self.sub.recv_multipart()
            t = time.time()
            if frames[0] not in self.topics:
                continue  # a heartbeat, or another receiver's snapshot
            msg = M.validate(decode(frames[1:], 2**26), self.context, (M.SNAPSHOT,))
            assert frames[0] == M.snapshot_topic(msg.body["receiver"])
            return t, msg
        return None

    def take(self, n, timeout=PATIENCE, quiet=0.3):
        """The next n snapshots (fewer only after `timeout`), then anything more that comes within `quiet` s:
        waits for what is expected instead of stopping at the first pause of a busy broker."""
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and (got := self.snapshot(max(0.0, deadline - time.monotonic()))) is not None:
            out.append(got)
        while (got := self.snapshot(quiet)) is not None:
            out.append(got)
        return out

    def request(self, agent, timeout=PATIENCE, dealer=None):
        dealer = dealer or self.dealer
        dealer.send_multipart(self.sender(agent).pack(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}))
        if not dealer.poll(int(timeout * 1000)):
            return None
        return M.validate(decode(dealer.recv_multipart(), 2**26), self.context, (M.SNAPSHOT,))

    def close(self):
        for s in (self.push, self.sub, self.dealer):
            s.close(linger=0)
        self.ctx.term()


@pytest.fixture
def clients():
    made = []

    def make(cfg, receivers=(0,)):
        made.append(Client(cfg, receivers))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_snapshot_every_50_steps_and_late_joiner(free_ports, start_broker, clients, tmp_path):
    cfg = make_cfg(free_ports(3), agents=2, broker={"min_score": 0.0})  # low scores, never forgotten here
    start_broker(cfg)
    c = clients(cfg, receivers=(0, 1))
    keys = unit_keys(20)
    for i, steps in enumerate(range(25, 501, 25)):       # 20 reports, the clock crosses 10 multiples of 50
        c.report(i % 2, steps, keys[i:i + 1], [0.01 * (i + 1)])
    snaps = c.take(20)
    by_r = {r: [m for _, m in snaps if m.body["receiver"] == r] for r in (0, 1)}
    for r, ms in by_r.items():
        assert [m.seq for m in ms] == list(range(1, 11))
        assert [m.body["clock"] for m in ms] == list(range(50, 501, 50))
        assert len({m.incarnation for m in ms}) == 1 and all(m.agent == -1 for m in ms)
        sc = ms[-1].arrays["scores"]
        assert len(sc) == 20 and np.all(np.diff(sc) <= 0)  # full buffer, best first
    lines = [json.loads(x) for x in (tmp_path / "critical" / "snapshots.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, 11)) and lines[-1]["n"] == 20
    assert lines[-1]["finders"][:2] == [[1], [0]] and lines[-1]["dropped"] == []
    assert metric("magicmask_broker_snapshot_seq") == 10
    # a late joiner: state request over the ROUTER gives the current snapshot with the last seq (Clone)
    late = c._sock(zmq.DEALER)
    late.connect(tcp("127.0.0.1", cfg.net.broker_router_port))
    try:
        m = c.request(1, dealer=late)
    finally:
        late.close(linger=0)
    assert m is not None and m.seq == 10 and m.body["receiver"] == 1 and m.body["clock"] == 500
    np.testing.assert_array_equal(m.arrays["finders"], by_r[1][-1].arrays["finders"])
    assert c.snapshot(0.3) is None  # the state reply went to the DEALER only, not to the stream


def test_loss_counted_as_seq_gaps(free_ports, start_broker, clients):
    rounds, p = 300, 0.3
    cfg = make_cfg(free_ports(3), agents=2, comm={"loss": p, "seed": 11}, broker={"save_snapshots": False})
    dropped0 = {r: metric("magicmask_link_messages_total", link=f"-1->{r}", event="dropped") for r in (0, 1)}
    start_broker(cfg)
    c = clients(cfg, receivers=(0, 1))
    for i in range(1, rounds + 1):
        c.report(0, 50 * i, unit_keys(1, seed=i), [0.5])
    deadline = time.monotonic() + PATIENCE
    while (m := c.request(0)) is not None and m.seq < rounds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m is not None and m.seq == rounds
    # every round was broadcast (the state reply says so), the drops counted as it was: what was not dropped is
    # on its way, and no more comes. Wait for that many (a pause of 0.3 s in their delivery, which a loaded
    # machine may make, would have counted the rest as lost), then for anything more
    sent = sum(rounds - (metric("magicmask_link_messages_total", link=f"-1->{r}", event="dropped") - dropped0[r])
               for r in (0, 1))
    snaps = c.take(sent)
    received = lost = 0
    for r in (0, 1):
        last, gaps, n = 0, 0, 0
        for _, m in snaps:
            if m.body["receiver"] != r:
                continue
            assert m.seq > last
            gaps += m.seq - last - 1           # the receiver's rule: a seq jump counts as gaps
            last, n = m.seq, n + 1
        gaps += rounds - last                  # losses after the last one received
        assert gaps == rounds - n
        assert gaps == metric("magicmask_link_messages_total", link=f"-1->{r}", event="dropped") - dropped0[r]
        received, lost = received + n, lost + gaps
    total = 2 * rounds
    assert received + lost == total
    assert abs(lost - p * total) <= 4 * math.sqrt(total * p * (1 - p)), lost


def test_latency_delays_every_snapshot(free_ports, start_broker, clients):
    """comm.latency_ms=50: every snapshot arrives 50 ms after it was made, never earlier, and typically on time.
    On time as far as the machine allows: a broker without the latency runs beside it, and its snapshots' own
    delay (threads waking, two ZeroMQ I/O threads, this thread reading) is allowed on top. On an idle machine
    that is a millisecond or two; on a loaded one every delivery is late by hundreds of ms, latency or not
    (measured: a median of 174 ms against 90 ms allowed, with the machine's load at 19 on 2 cores)."""
    cfg = make_cfg(free_ports(3), comm={"latency_ms": 50.0}, broker={"save_snapshots": False})
    control = make_cfg(free_ports(3), broker={"save_snapshots": False})
    start_broker(cfg)
    start_broker(control)
    c, k = clients(cfg), clients(control)
    snaps, plain = [], []
    for i in range(1, 11):  # receive each before the next report, so receive time is arrival time
        k.report(0, 50 * i, unit_keys(1, seed=i))
        c.report(0, 50 * i, unit_keys(1, seed=i))
        plain.append(k.snapshot())
        snaps.append(c.snapshot())
    assert [m.seq for _, m in snaps] == [m.seq for _, m in plain] == list(range(1, 11))
    delays = [t - m.body["created_at"] for t, m in snaps]
    overhead = [t - m.body["created_at"] for t, m in plain]
    # never early; typically on time (the median: a loaded machine may stall one delivery now and then)
    assert min(delays) >= 0.050 and np.median(delays) < 0.050 + 0.04 + np.median(overhead), (delays, overhead)


def test_impaired_report_path(free_ports, start_broker, clients):
    cfg = make_cfg(free_ports(3), comm={"latency_ms": 40.0, "impair_reports": True})
    start_broker(cfg)
    c = clients(cfg)
    t0 = time.time()
    c.report(0, 50, unit_keys(1))
    got = c.snapshot()
    assert got is not None and got[0] - t0 >= 0.080  # 40 ms on the report link + 40 ms on the snapshot link


def test_ring_topology(free_ports, start_broker, clients):
    n = 5
    cfg = make_cfg(free_ports(3), agents=n, comm={"topology": "ring"}, broker={"min_score": 0.0})
    start_broker(cfg)
    c = clients(cfg, receivers=range(n))
    keys = unit_keys(n)
    for a in range(n):
        c.report(a, 10, keys[a:a + 1], [0.1 * (a + 1)])
    c.report(0, 50)  # crosses the clock
    snaps = {m.body["receiver"]: m for _, m in c.take(n)}
    assert sorted(snaps) == list(range(n))
    for r, m in snaps.items():
        want = {(r - 1) % n, r, (r + 1) % n}
        finders = [M.finder_ids(f) for f in m.arrays["finders"]]
        assert all(len(f) == 1 for f in finders) and {f[0] for f in finders} == want
        for k, f in zip(m.arrays["keys"], finders):
            np.testing.assert_allclose(k, keys[f[0]], atol=1e-6)
    m = c.request(2)
    assert sorted(M.finder_ids(f)[0] for f in m.arrays["finders"]) == [1, 2, 3]


def test_256_agents_every_finder_arrives_and_each_topic_is_its_own(free_ports, start_broker, clients):
    """Agent ids past 63 (the old bit sets' limit) are kept and named in the finder bitmaps of a ring, and a
    subscriber of agent 1 gets agent 1's snapshots only (not 10-19, 100-199: SUB matches topic prefixes)."""
    n = 256
    cfg = make_cfg(free_ports(3), agents=n, comm={"topology": "ring"}, broker={"min_score": 0.0, "save_snapshots": False})
    start_broker(cfg)
    c = clients(cfg, receivers=(0, 199, 200, 202))
    sub = c._sock(zmq.SUB)
    got = []
    try:
        for topic in (M.snapshot_topic(1), M.snapshot_topic(20), b"hb"):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.connect(tcp("127.0.0.1", cfg.net.broker_snapshots_port))
        wait_until(lambda: sub.poll(100) and sub.recv_multipart()[0] == b"hb", what="a heartbeat on the SUB")
        sub.setsockopt(zmq.UNSUBSCRIBE, b"hb")  # connected: from now on only the two snapshot topics
        keys = unit_keys(2)
        c.report(200, 10, keys[:1], [0.9])
        c.report(255, 20, keys[1:], [0.8])
        c.report(201, 30, keys[:1], [0.5])  # the state agent 200 found
        c.report(0, 50)                     # crosses the clock
        snaps = {m.body["receiver"]: m for _, m in c.take(4)}

        def more(timeout_ms):
            while sub.poll(timeout_ms):
                frames = sub.recv_multipart()
                if frames[0] != b"hb":  # one may still come, sent before the unsubscription took effect
                    got.append((frames[0], decode(frames[1:], 2**26).body["receiver"]))
                    return True
            return False

        def two():
            more(100)
            return len(got) >= 2
        # the two this SUB subscribed to (their own connection: no telling when they arrive beside the other's)
        # then anything more, for 0.5 s
        wait_until(two, step=0, what=lambda: f"2 snapshots on the second SUB, got {got}")
        while more(500):
            pass
    finally:
        sub.close(linger=0)
    assert sorted(snaps) == [0, 199, 200, 202]
    for r, want in ((200, [[200, 201]]), (199, [[200]]), (202, [[201]]), (0, [[255]])):
        m = snaps[r]
        assert m.arrays["finders"].shape == (1, 32) and [M.finder_ids(f) for f in m.arrays["finders"]] == want, r
        np.testing.assert_allclose(m.arrays["keys"][0], keys[0 if r != 0 else 1], atol=1e-6)
    assert sorted(got) == [(M.snapshot_topic(1), 1), (M.snapshot_topic(20), 20)]


def test_nocomm_receives_but_never_broadcasts(free_ports, start_broker, clients):
    cfg = make_cfg(free_ports(3), comm={"enabled": False})
    before = metric("magicmask_broker_reports_total", agent="0")
    start_broker(cfg)
    c = clients(cfg)
    for i in range(1, 5):
        c.report(0, 50 * i, unit_keys(1, seed=i))
    wait_until(lambda: metric("magicmask_broker_reports_total", agent="0") - before == 4, what="4 reports applied")
    assert c.snapshot(0.5) is None
    m = c.request(0)
    assert m.seq == 0 and len(m.arrays["scores"]) == 0  # nothing shared in the ablation


def test_malformed_messages_are_dropped_and_broker_keeps_serving(free_ports, start_broker, clients):
    cfg = make_cfg(free_ports(3), net={"max_message_mb": 0.01}, broker={"save_snapshots": False})
    start_broker(cfg)
    c = clients(cfg)
    causes = ["malformed", "version", "oversized", "kind", "shape", "schema", "agent", "request"]
    before = {(s, k): metric("magicmask_dropped_messages_total", socket=s, cause=k)
              for s in ("reports", "router") for k in causes}
    s = Sender(0)
    good = s.pack(M.REPORT, {"env_steps": 10}, {"keys": unit_keys(2), "scores": np.ones(2, np.float32),
                                               "steps": np.zeros(2, np.int64), "positions": np.zeros(2, np.int32)})
    truncated = [bytes(good[0]), bytes(good[1])[:-4], *map(bytes, good[2:])]
    header = msgpack.unpackb(good[0])
    wrong_version = [msgpack.packb({**header, "v": 99}), *map(bytes, good[1:])]
    big = s.pack(M.REPORT, {"env_steps": 10}, {"keys": unit_keys(120), "scores": np.ones(120, np.float32),
                                              "steps": np.zeros(120, np.int64),
                                              "positions": np.zeros(120, np.int32)})  # ~17 KB > 10.5 KB
    wrong_kind = s.pack(M.WEIGHTS, {"target": 0}, {"w": np.zeros(3, np.float32)})
    wrong_shape = s.pack(M.REPORT, {"env_steps": 10}, {"keys": unit_keys(2, d=16), "scores": np.ones(2, np.float32),
                                                      "steps": np.zeros(2, np.int64),
                                                      "positions": np.zeros(2, np.int32)})
    no_body = s.pack(M.REPORT, {}, {"keys": unit_keys(2), "scores": np.ones(2, np.float32),
                                    "steps": np.zeros(2, np.int64), "positions": np.zeros(2, np.int32)})
    stranger = Sender(7).pack(M.REPORT, {"env_steps": 10}, {"keys": unit_keys(1), "scores": np.ones(1, np.float32),
                                                           "steps": np.zeros(1, np.int64),
                                                           "positions": np.zeros(1, np.int32)})
    for frames in ([b"\x00garbage\xff"], [b""], truncated, wrong_version, big, wrong_kind, wrong_shape, no_body,
                   stranger):
        c.push.send_multipart(frames)
    for frames in ([b"garbage"], wrong_version, wrong_kind, good,
                   encode(M.HEARTBEAT, {"role": "actor", "want": "coffee"}, agent=0),
                   encode(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}, agent=5)):
        c.dealer.send_multipart(frames)
    # still serving: a valid request is answered, and a valid report after the bad ones (same pipe, FIFO)
    # produces a snapshot that holds only the valid states
    m = c.request(0)
    assert m is not None and m.seq == 0
    c.report(0, 50, unit_keys(1, seed=42), [0.7])
    got = c.snapshot()
    assert got is not None and got[1].seq == 1 and got[1].arrays["scores"].tolist() == pytest.approx([0.7])
    delta = {k: metric("magicmask_dropped_messages_total", socket=k[0], cause=k[1]) - v for k, v in before.items()}
    assert delta[("reports", "malformed")] == 3  # garbage, empty frame, truncated array frame
    assert delta[("reports", "version")] == 1 and delta[("reports", "oversized")] == 1
    assert delta[("reports", "kind")] == 1 and delta[("reports", "shape")] == 1
    assert delta[("reports", "schema")] == 1 and delta[("reports", "agent")] == 1
    assert delta[("router", "malformed")] == 1 and delta[("router", "version")] == 1
    assert delta[("router", "kind")] == 2 and delta[("router", "request")] == 1
    assert delta[("router", "agent")] == 1


def test_stop_message_ends_the_broker(free_ports, start_broker, clients):
    cfg = make_cfg(free_ports(3))
    ev, th = start_broker(cfg)
    c = clients(cfg)
    c.push.send_multipart(Sender(-2).pack(M.STOP, {"reason": "test over"}))
    th.join(PATIENCE)
    assert not th.is_alive() and not ev.is_set()


def test_sigterm_ends_the_broker_process(free_ports, tmp_path):
    p1, p2, p3 = free_ports(3)
    code = ("import logging, sys; from pathlib import Path; logging.basicConfig(level='INFO'); "
            "from magicmask.protocol import config as C; from magicmask.broker.server import main; "
            f"cfg = C.Config(); cfg.net.metrics_port = 0; cfg.net.broker_reports_port = {p1}; "
            f"cfg.net.broker_snapshots_port = {p2}; cfg.net.broker_router_port = {p3}; "
            f"sys.exit(main(cfg, Path({str(tmp_path)!r})))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        ctx = zmq.Context()
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(tcp("127.0.0.1", p3))
        d.send_multipart(Sender(0).pack(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}))
        ok = d.poll(int(PATIENCE * 1000))  # a fresh interpreter imports first
        d.close(linger=0)
        ctx.term()
        assert ok, "broker process did not answer"
        proc.terminate()
        assert proc.wait(PATIENCE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopping" in proc.stderr.read()
