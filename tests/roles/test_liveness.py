"""Heartbeats and dead peers on real loopback sockets (the ZeroMQ guide's Paranoid Pirate rule: a peer is
silent after 3 heartbeat intervals without any traffic). The actor runs in a thread against hand-made
learner and broker peers; the real Learner and Broker run in threads for the heartbeat rate."""
import threading
import time

import numpy as np
import pytest
import zmq
from prometheus_client import REGISTRY

from magicmask.actors.actor import Actor
from magicmask.actors.envs import env_spec
from magicmask.broker.server import Broker
from magicmask.models.networks import AgentNets
from magicmask.learner.server import Learner
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode, encode
from magicmask.protocol.transport import tcp
from tests.helpers import PATIENCE, recv, wait_for, wait_until

# waits are for conditions, bounded by PATIENCE (tests/helpers.py); a test's limit is several of those
pytestmark = pytest.mark.timeout(600)

HB = 0.2


def make_cfg(ports, *extra):
    return C.load(overrides=C.port_overrides(ports) + [
        "net.metrics_port=0", "env.name=gates", "run.agents=1", "actor.fragment_len=8", "env.copies=2",
        "ppo.minibatches=2", "env.eval_every=0", f"net.heartbeat_s={HB}", *extra], environ={})




def gauge(name, **labels):
    return REGISTRY.get_sample_value(name, {k: str(v) for k, v in labels.items()})


class Peers:
    """Hand-made learner and broker: bound sockets the actor connects to."""

    def __init__(self, ctx, cfg):
        def sock(kind, port):
            s = ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            s.bind(tcp("127.0.0.1", port))
            return s
        n = cfg.net
        self.pull = sock(zmq.PULL, n.learner_fragments_port)
        self.pub = sock(zmq.PUB, n.learner_weights_port)
        self.router = sock(zmq.ROUTER, n.learner_router_port)
        self.reports = sock(zmq.PULL, n.broker_reports_port)
        self.snaps = sock(zmq.PUB, n.broker_snapshots_port)
        self.broker_router = sock(zmq.ROUTER, n.broker_router_port)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def start_actor(cfg, tmp_path, peers, spec):
    """Run an actor and give it its first weights through the learner ROUTER; returns (actor, thread, stop, nets)."""
    stop = threading.Event()
    actor = Actor(cfg, 0, tmp_path, stop)
    th = threading.Thread(target=actor.run, daemon=True)
    th.start()
    req = recv(peers.router, int(PATIENCE * 1000))
    assert req is not None and decode(req[1:], 1 << 20).body["want"] == "weights"
    nets = AgentNets(1, spec.obs_dim, spec.n_actions, cfg.ppo.hidden, seed=1)
    learner = Sender(-1)
    peers.router.send_multipart([req[0], *learner.pack(M.WEIGHTS, {"target": 0}, nets.agent_state(0),
                                                       policy_version=0)])
    wait_until(lambda: actor.version == 0, what="the actor to take its first weights")
    return actor, th, stop, nets, learner


def test_silent_learner_bounded_queue_then_resume_with_new_incarnation(tmp_path, free_ports, ctx):
    cfg = make_cfg(free_ports(6), "actor.offline_queue=3", "actor.max_inflight=2")
    spec = env_spec(cfg)
    peers = Peers(ctx, cfg)
    actor, th, stop, nets, old = start_actor(cfg, tmp_path, peers, spec)
    try:
        # credit for 2 fragments, which the learner takes heartbeating (the actor deems it silent 0.6 s after
        # its last message, and a loaded machine may take that long between two of the actor's steps: the
        # second fragment would be queued, not sent); then it says nothing more: silent after 3 x 0.2 s
        first, deadline = [], time.monotonic() + PATIENCE
        while len(first) < 2 and time.monotonic() < deadline:
            peers.pub.send_multipart([b"hb", *old.pack(M.HEARTBEAT, {"role": "learner"})])
            if (f := recv(peers.pull, int(HB * 1000))) is not None:
                first.append(f)
        assert len(first) == 2, f"{len(first)} of the 2 fragments within credit reached the learner"
        wait_until(lambda: not actor.links.learner.alive, what="the actor to deem the quiet learner silent")
        outbox = actor.outbox
        t0, d0 = actor.t, outbox.dropped
        longest = 0
        deadline = time.time() + PATIENCE
        while time.time() < deadline and outbox.dropped < d0 + 3:  # keeps acting and dropping the oldest
            # the queue's length as the actor publishes it, after each put: the deque itself, read from this
            # thread, may be caught in the middle of a put (the new one in, the oldest not yet out)
            longest = max(longest, gauge("magicmask_actor_fragment_queue", agent=0))
            time.sleep(0.01)
        assert actor.t > t0, "the actor stopped stepping while the learner was silent"
        assert outbox.dropped >= d0 + 3, "a full queue dropped nothing"
        assert longest <= cfg.actor.offline_queue
        # the counter counts every drop: it reaches the drops made so far (read first: the actor goes on dropping
        # while the counter is read, and the counter follows each drop a few instructions later)
        dropped = outbox.dropped
        wait_until(lambda: gauge("magicmask_actor_fragments_dropped_total", agent=0, cause="offline_queue") >= dropped,
                   what=f"the drop counter to reach {dropped}")
        assert gauge("magicmask_actor_learner_silent", agent=0) == 1
        assert recv(peers.pull, 300) is None, "the actor sent to a silent learner"
        # a restarted learner (new incarnation) heartbeats: credit resets, the queue flows, oldest first
        new = Sender(-1)
        got = []

        def beat():
            peers.pub.send_multipart([b"hb", *new.pack(M.HEARTBEAT, {"role": "learner", "incarnation": new.incarnation})])
        deadline = time.time() + PATIENCE
        while time.time() < deadline and len(got) < 2:
            beat()
            f = recv(peers.pull, int(HB * 1000))
            if f is not None:
                got.append(decode(f, 1 << 24))
        assert len(got) == 2, "queued fragments did not reach the restarted learner"
        assert actor.links.learner.incarnation == new.incarnation
        # alive while it heartbeats (checked heartbeating: 0.6 s after our last beat it is silent again, and a
        # loaded machine may stall this thread that long)
        wait_until(lambda: beat() or actor.links.learner.alive, what="the actor to deem the heartbeating learner alive")
        # oldest first (seq order); not "produced before the heartbeat": the actor keeps acting, and a full queue
        # drops its oldest, until it hears the learner (that check raced: 1 failure in 4 runs under load)
        assert got[0].seq < got[1].seq, "not the oldest queued first"
        wait_until(lambda: actor.credit.sent == 2, what=lambda: f"2 fragments sent to the new learner, "
                                                                f"{actor.credit.sent} so far")
        assert actor.credit.returned == 0, "credit was not reset for the new learner"
        # credit from the new learner releases the rest
        peers.pub.send_multipart([b"w/0", *new.pack(M.WEIGHTS, {"target": 0, "incarnation": actor.sender.incarnation,
                                                                "fragments": 2}, nets.agent_state(0), policy_version=1)])
        f = recv(peers.pull, int(PATIENCE * 1000))
        assert f is not None and decode(f, 1 << 24).seq > got[1].seq
        assert actor.version == 1, "the restarted learner's weights were not taken"
    finally:
        stop.set()
        th.join(PATIENCE)
    assert not th.is_alive(), "the actor did not stop"


def snapshot(inc, seq, keys):
    return encode(M.SNAPSHOT, {"created_at": time.time(), "clock": 50, "receiver": 0},
                  {"keys": keys, "scores": np.ones(len(keys), np.float32),
                   "finders": np.full((len(keys), 1), 0b10, np.uint8)},  # a peer's (id 1)
                  agent=-1, incarnation=inc, seq=seq)


def test_silent_broker_marks_snapshot_stale_and_recovers_after_restart(tmp_path, free_ports, ctx):
    cfg = make_cfg(free_ports(6), "actor.offline_queue=2")
    spec = env_spec(cfg)
    peers = Peers(ctx, cfg)
    actor, th, stop, *_ = start_actor(cfg, tmp_path, peers, spec)
    K = cfg.actor.key_dim
    rng = np.random.default_rng(0)
    try:
        req = recv(peers.broker_router, int(PATIENCE * 1000))
        assert req is not None and decode(req[1:], 1 << 20).body["want"] == "snapshot"
        old = Sender(-1)
        keys_a = rng.standard_normal((3, K)).astype(np.float32)
        peers.broker_router.send_multipart([req[0], *snapshot(old.incarnation, 5, keys_a)])
        wait_until(lambda: actor.guidance.seq == 5, what="the actor to take snapshot 5")
        def beat():
            peers.snaps.send_multipart([b"hb", *old.pack(M.HEARTBEAT, {"role": "broker"})])
            return gauge("magicmask_actor_snapshot_stale", agent=0) == 0
        assert wait_for(beat, PATIENCE, HB / 2), "a heartbeating broker is deemed silent"
        # the broker goes quiet: stale after 3 intervals, the last snapshot stays in use
        wait_until(lambda: gauge("magicmask_actor_snapshot_stale", agent=0) == 1, what="the snapshot to go stale")
        assert gauge("magicmask_actor_peer_silence_seconds", agent=0, peer="broker") > 3 * HB
        np.testing.assert_array_equal(actor.guidance.keys, keys_a)
        while peers.broker_router.poll(0):
            peers.broker_router.recv_multipart()
        # a restarted broker heartbeats: the actor asks for the current snapshot and takes seq 1 < 5
        new = Sender(-1)
        req = None
        deadline = time.time() + PATIENCE
        while req is None and time.time() < deadline:
            peers.snaps.send_multipart([b"hb", *new.pack(M.HEARTBEAT, {"role": "broker"})])
            req = recv(peers.broker_router, int(HB * 1000))
        assert req is not None and decode(req[1:], 1 << 20).body["want"] == "snapshot", "no re-request"
        keys_b = rng.standard_normal((2, K)).astype(np.float32)
        peers.broker_router.send_multipart([req[0], *snapshot(new.incarnation, 1, keys_b)])
        wait_until(lambda: actor.guidance.seq == 1 and actor.guidance.incarnation == new.incarnation,
                   what="the actor to take the restarted broker's snapshot 1")
        np.testing.assert_array_equal(actor.guidance.keys, keys_b)
        # not stale while the restarted broker heartbeats (checked heartbeating: 0.6 s after its last message it
        # is stale again, and a loaded machine may stall this thread that long)
        assert wait_for(lambda: peers.snaps.send_multipart([b"hb", *new.pack(M.HEARTBEAT, {"role": "broker"})])
                        or gauge("magicmask_actor_snapshot_stale", agent=0) == 0, PATIENCE, HB / 2), \
            "the restarted, heartbeating broker's snapshot is deemed stale"
    finally:
        stop.set()
        th.join(PATIENCE)
    assert not th.is_alive(), "the actor did not stop"


def test_a_snapshot_is_used_from_the_next_step_not_the_next_fragment(tmp_path, free_ports, ctx):
    """A snapshot that arrives in the middle of a fragment is applied there (the age at use falls to a step's
    time), while the fragment still runs: here one fragment is 40,000 steps, many seconds of acting."""
    cfg = make_cfg(free_ports(6), "actor.fragment_len=20000")
    peers = Peers(ctx, cfg)
    actor, th, stop, *_ = start_actor(cfg, tmp_path, peers, env_spec(cfg))
    try:
        wait_until(lambda: actor.t > 100, what="the actor to act")
        keys = np.random.default_rng(0).standard_normal((2, cfg.actor.key_dim)).astype(np.float32)
        inc = Sender(-1).incarnation
        sent_at_step = actor.t
        deadline = time.time() + PATIENCE
        while actor.guidance.seq != 7 and time.time() < deadline:
            peers.snaps.send_multipart([M.snapshot_topic(0), *snapshot(inc, 7, keys)])   # PUB: resend until subscribed
            time.sleep(0.05)
        assert actor.guidance.seq == 7, "the snapshot was not applied"
        assert actor.fragments == 0 and actor.t < cfg.actor.fragment_len * cfg.env.copies, \
            "applied only after the fragment"
        assert actor.t >= sent_at_step
        np.testing.assert_array_equal(actor.guidance.keys, keys)
    finally:
        stop.set()
        th.join(4 * PATIENCE)  # it stops at the fragment's end (collect checks no stop): seconds idle, minutes loaded
    assert not th.is_alive(), "the actor did not stop"


def test_learner_and_broker_heartbeat_at_the_configured_interval(tmp_path, free_ports, ctx):
    cfg = make_cfg(free_ports(6))
    spec = env_spec(cfg)
    stop = threading.Event()
    learner = Learner(cfg, spec, tmp_path / "l", stop)
    (tmp_path / "l").mkdir()
    broker = Broker(cfg, tmp_path / "b", stop)
    threads = [threading.Thread(target=x.run, daemon=True) for x in (learner, broker)]
    for t in threads:
        t.start()
    subs = []
    for port in (cfg.net.learner_weights_port, cfg.net.broker_snapshots_port):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"hb")
        s.connect(tcp("127.0.0.1", port))
        subs.append(s)
    try:
        for s in subs:  # connected (the learner binds after its slow start) and heartbeating
            assert recv(s, int(PATIENCE * 1000)) is not None
        # the interval from the beats' own send times, not from how many arrive in a fixed window (a loaded
        # machine may stall a thread now and then: the count would say nothing about the interval)
        beats = {0: [], 1: []}
        deadline = time.time() + 60
        while time.time() < deadline and min(map(len, beats.values())) < 10:
            for i, s in enumerate(subs):
                if s.poll(10):
                    beats[i].append(decode(s.recv_multipart()[1:], 1 << 20))
        for i, (role, inc) in enumerate((("learner", learner.sender.incarnation),
                                          ("broker", broker.hb_sender.incarnation))):
            ms = beats[i]
            assert len(ms) >= 10, f"{role}: {len(ms)} heartbeats in 60 s at net.heartbeat_s={HB}"
            assert all(m.kind == M.HEARTBEAT and m.body["role"] == role and m.body["incarnation"] == inc
                       and m.incarnation == inc for m in ms)
            gaps = np.diff([m.sent_at for m in ms])
            assert gaps.min() >= 0.9 * HB, f"{role}: heartbeats closer than net.heartbeat_s={HB}: {gaps}"
            assert np.median(gaps) <= 2 * HB, f"{role}: heartbeat gaps {gaps} at net.heartbeat_s={HB}"
    finally:
        stop.set()
        for t in threads:
            t.join(PATIENCE)
    assert not any(t.is_alive() for t in threads)


def test_learner_resumes_if_a_checkpoint_exists(tmp_path, free_ports):
    cfg = make_cfg(free_ports(6), "learner.resume_if_checkpoint=true")
    spec = env_spec(cfg)
    first = Learner(cfg, spec, tmp_path)  # no checkpoint yet: starts fresh
    assert first.version == 0
    first.version = 3
    first.save()
    assert Learner(cfg, spec, tmp_path).version == 3  # a restart continues from it


def test_a_restarted_learner_drops_the_metrics_rows_of_updates_it_lost(tmp_path, free_ports):
    """A learner killed after its checkpoint at version 3 had written rows up to version 5 (the last one torn):
    its restart continues at version 3, so rows 4 and 5 go and the versions it writes next are not repeats."""
    import json
    cfg = make_cfg(free_ports(6), "learner.resume_if_checkpoint=true")
    spec = env_spec(cfg)
    first = Learner(cfg, spec, tmp_path)
    first.version = 3
    first.save()
    rows = [json.dumps({"version": v, "agents": {}}) for v in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + '\n{"version": 6, "ag')
    assert Learner(cfg, spec, tmp_path).version == 3
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(rows[:3]) + "\n"
    empty = tmp_path / "fresh"   # no checkpoint yet: it starts at 0, and every row of the lost learner goes
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    assert Learner(cfg, spec, empty).version == 0 and (empty / "metrics.jsonl").read_text() == ""
