"""CURVE security on real loopback sockets: the real Broker and Learner (each in a thread through its own run
loop) with keys, facing the real actor's sockets (actors/links.py) with an allowed key, with a key that is not
in the allow-list, and without CURVE at all. Plus `magicmask keys generate` and the config rule that refuses
an unauthenticated bind beyond loopback."""
import logging
import os
import shutil
import stat
import threading
import time

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from magicmask import cli
from magicmask.actors.envs import env_spec
from magicmask.actors.links import Links
from magicmask.broker.server import Broker
from magicmask.learner.server import Learner
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol import security as S
from magicmask.protocol.codec import Sender, decode
from magicmask.protocol.drops import DropLog
from magicmask.protocol.transport import make_socket, tcp
from tests.helpers import PATIENCE, fragment_arrays

# waits are for conditions, bounded by PATIENCE (tests/helpers.py); a test's limit is several of those
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def keys(tmp_path):
    """(allowed keys dir, rogue keys dir): the rogue has its own actor-0 pair (not in the allow-list) and
    knows the servers' public keys, as anyone may."""
    good, rogue = tmp_path / "keys", tmp_path / "rogue"
    S.generate_keys(good, S.default_names(1))
    S.generate_keys(rogue, ["actor-0"])
    for server in S.SERVERS:
        shutil.copy(good / S.PUBLIC / f"{server}.key", rogue / S.PUBLIC / f"{server}.key")
    return good, rogue


def make_cfg(ports, keys_dir, *extra):
    return C.load(overrides=C.port_overrides(ports) + [
        "net.metrics_port=0", "env.name=gates", "run.agents=1", "actor.fragment_len=8", "env.copies=2",
        "ppo.minibatches=2", "env.eval_every=0", "actor.key_dim=8", "broker.save_snapshots=false",
        f"security.keys_dir={keys_dir}", *extra], environ={})


def recv(sock, timeout_ms):
    return sock.recv_multipart() if sock.poll(timeout_ms) else None


def send(sock, frames):
    """Send without blocking: a refused client's PUSH or DEALER may have no pipe left to queue in."""
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.Again:
        pass


HANDSHAKE_ENDS = {"HANDSHAKE_SUCCEEDED", "HANDSHAKE_FAILED_AUTH", "HANDSHAKE_FAILED_PROTOCOL",
                  "HANDSHAKE_FAILED_NO_DETAIL"}


def handshake_events(sock_factory, endpoint, seconds=1.0):
    """Names of the monitor events of a fresh socket that connects to endpoint, until its first handshake has
    ended (the server may still be starting: the client retries its connection meanwhile) and `seconds` more
    (the client reconnects after a refusal: no later handshake may succeed)."""
    s = sock_factory()
    mon = s.get_monitor_socket()
    s.connect(endpoint)
    names, t, end = set(), time.time(), None
    try:
        while end is None or time.time() < end:
            assert time.time() - t < PATIENCE, f"no handshake with {endpoint} ended within {PATIENCE} s: {names}"
            if mon.poll(50):
                names.add(recv_monitor_message(mon)["event"].name)
                if end is None and names & HANDSHAKE_ENDS:
                    end = time.time() + seconds
    finally:  # closed whatever happens: the test's ctx.term() waits for every socket of the context
        s.disable_monitor()
        mon.close(linger=0)
        s.close(linger=0)
    return names


def wait_heartbeat(sub, timeout_ms=int(PATIENCE * 1000)):
    """Wait for a server's first heartbeat on `sub` (subscribed to b"" or b"hb"): the server is bound and
    the SUB's subscriptions, sent together when it connected, are in force at its PUB. Waiting for this
    instead of a fixed time is what keeps a later single publication from being lost (the slow joiner)."""
    deadline = time.time() + timeout_ms / 1000
    while time.time() < deadline:
        frames = recv(sub, 100)
        if frames and frames[0] == b"hb":
            return True
    return False


def keys_cli(argv):
    """`magicmask keys ARGV...`, in this process."""
    return cli.main(["keys", *argv])


def start(target):
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th


# ---------------------------------------------------------------- broker: reports in, snapshots out
def test_broker_admits_only_allowed_actor_keys(tmp_path, free_ports, keys, caplog):
    good, rogue = keys
    ports = free_ports(6)
    cfg, rogue_cfg = make_cfg(ports, good), make_cfg(ports, rogue)
    stop = threading.Event()
    broker = Broker(cfg, tmp_path / "run", stop)
    th = start(broker.run)
    ctx = zmq.Context()
    actor_sec = {"allowed": S.for_process(cfg, "actor", 0), "rogue": S.for_process(rogue_cfg, "actor", 0)}

    def sockets(name):
        """The actor's broker-side sockets, made as actors/links.py makes them (plain: no CURVE)."""
        curve = actor_sec[name].client("broker") if name in actor_sec else None
        push = make_socket(ctx, zmq.PUSH, hwm=100, curve=curve)
        push.connect(tcp("127.0.0.1", cfg.net.broker_reports_port))
        sub = make_socket(ctx, zmq.SUB, curve=curve)
        sub.setsockopt(zmq.SUBSCRIBE, M.snapshot_topic(0))
        sub.setsockopt(zmq.SUBSCRIBE, b"hb")
        sub.connect(tcp("127.0.0.1", cfg.net.broker_snapshots_port))
        dealer = make_socket(ctx, zmq.DEALER, curve=curve)
        dealer.connect(tcp("127.0.0.1", cfg.net.broker_router_port))
        return push, sub, dealer

    def report(push, env_steps):
        arrays = {"keys": np.eye(1, 8, dtype=np.float32), "scores": np.ones(1, np.float32),
                  "steps": np.full(1, env_steps, np.int64), "positions": np.zeros(1, np.int32)}
        send(push, Sender(0).pack(M.REPORT, {"env_steps": env_steps}, arrays))

    socks = {name: sockets(name) for name in ("allowed", "rogue", "plain")}
    try:
        # the refusal is an authentication failure, seen by the client itself
        ev = handshake_events(lambda: make_socket(ctx, zmq.PUSH, curve=actor_sec["rogue"].client("broker")),
                              tcp("127.0.0.1", cfg.net.broker_reports_port))
        assert "HANDSHAKE_FAILED_AUTH" in ev and "HANDSHAKE_SUCCEEDED" not in ev, ev
        ev = handshake_events(lambda: make_socket(ctx, zmq.PUSH, curve=actor_sec["allowed"].client("broker")),
                              tcp("127.0.0.1", cfg.net.broker_reports_port), 0.5)
        assert "HANDSHAKE_SUCCEEDED" in ev, ev
        # reports from the rogue and from a plain client never arrive (each would cross the 50-step clock)
        for name in ("rogue", "plain"):
            for steps in (50, 100, 150):
                report(socks[name][0], steps)
            send(socks[name][2], Sender(0).pack(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}))
        assert wait_heartbeat(socks["allowed"][1]), "the allowed actor hears nothing from the broker's PUB"
        time.sleep(1.0)
        assert broker.reports == 0 and broker.seq == 0
        # the allowed actor: its report arrives and makes a snapshot, which only it receives
        report(socks["allowed"][0], 200)
        got = None
        deadline = time.time() + PATIENCE
        while got is None and time.time() < deadline:
            frames = recv(socks["allowed"][1], 100)
            got = frames if frames and frames[0] != b"hb" else None
        assert got is not None and got[0] == M.snapshot_topic(0), "the allowed actor got no snapshot"
        snap = M.validate(decode(got[1:], 2**26), {"K": 8, "F": 1}, (M.SNAPSHOT,))
        assert broker.reports == 1 and snap.body["clock"] == 200
        socks["allowed"][2].send_multipart(Sender(0).pack(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}))
        reply = recv(socks["allowed"][2], int(PATIENCE * 1000))
        assert reply is not None and decode(reply, 2**26).kind == M.SNAPSHOT
        for name in ("rogue", "plain"):
            _, sub, dealer = socks[name]
            assert recv(sub, 500) is None, f"{name} received a snapshot from the PUB"
            assert recv(dealer, 100) is None, f"{name} received a snapshot from the ROUTER"
        assert broker.reports == 1
        assert "is not in the allow-list" in caplog.text  # the server says why, with the refused key
    finally:
        for group in socks.values():
            for s in group:
                s.close(linger=0)
        ctx.term()
        stop.set()
        th.join(PATIENCE)
    assert not th.is_alive()


# ---------------------------------------------------------------- learner: fragments in, weights out
def test_learner_admits_only_allowed_actor_keys(tmp_path, free_ports, keys):
    good, rogue = keys
    ports = free_ports(6)
    cfg = make_cfg(ports, good, "net.max_message_mb=0.05")
    rogue_cfg = make_cfg(ports, rogue, "net.max_message_mb=0.05")
    spec = env_spec(cfg)
    stop = threading.Event()
    learner = Learner(cfg, spec, tmp_path / "run", stop)
    th = start(learner.run)
    # the real actor's sockets (actors/links.py), one with an allowed key, one with a rogue key
    allowed, intruder = (Links(c, 0, Sender(0), DropLog(logging.getLogger("test"))) for c in (cfg, rogue_cfg))
    allowed.connect()
    intruder.connect()
    body = {"episodes": [{"return": 1.0}], "env_steps": 16, "eval": {}}
    try:
        assert wait_heartbeat(allowed.weights_sock), "the allowed actor hears nothing from the learner's PUB"
        # state requests: only the allowed actor is answered
        ask = Sender(0).pack(M.HEARTBEAT, {"role": "actor", "want": "weights"})
        send(intruder.learner_req, ask)
        allowed.learner_req.send_multipart(ask)
        w = recv(allowed.learner_req, int(PATIENCE * 1000))
        assert w is not None and decode(w, 1 << 24).kind == M.WEIGHTS, "the allowed actor got no weights"
        assert recv(intruder.learner_req, 500) is None, "the rogue actor received weights from the ROUTER"
        # the rogue's fragment never arrives: no update, nothing pending, nothing counted as dropped
        s = Sender(0)
        send(intruder.frag_sock, s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec), policy_version=0))
        time.sleep(1.0)
        assert learner.version == 0 and not learner.pending.get(0) and not learner.drops.counts
        # the allowed actor: an oversized fragment is still refused by the size limit under CURVE, a valid
        # one trains, and version 1 is published to it and not to the rogue
        allowed.frag_sock.send_multipart(
            s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec, obs_shape=(1100,)), policy_version=0))
        allowed.frag_sock.send_multipart(s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec), policy_version=0))
        got, deadline = None, time.time() + PATIENCE
        while time.time() < deadline and got is None:
            frames = recv(allowed.weights_sock, 500)
            if frames and frames[0].startswith(b"w/") and decode(frames[1:], 1 << 24).policy_version == 1:
                got = frames
        assert got is not None, "no weights update reached the allowed actor"
        assert learner.version >= 1 and learner.drops.counts.get(("fragments", "oversized")) == 1
        assert recv(intruder.weights_sock, 1000) is None, "the rogue actor received weights from the PUB"
    finally:
        allowed.close()
        intruder.close()
        stop.set()
        th.join(PATIENCE)
    assert not th.is_alive()


# ---------------------------------------------------------------- keys and config
def test_keys_generate_makes_the_layout(tmp_path, capsys):
    d = tmp_path / "k"
    assert keys_cli(["generate", str(d), "--agents", "3"]) == 0
    names = ["broker", "learner", "actor-0", "actor-1", "actor-2"]
    assert sorted(p.name for p in (d / "public_keys").iterdir()) == sorted(f"{n}.key" for n in names)
    assert sorted(p.name for p in (d / "private_keys").iterdir()) == sorted(f"{n}.key_secret" for n in names)
    pairs = {}
    for n in names:
        pub, _ = zmq.auth.load_certificate(d / "public_keys" / f"{n}.key")
        pub2, sec = zmq.auth.load_certificate(d / "private_keys" / f"{n}.key_secret")
        assert pub == pub2 and sec and len(pub) == 40 and len(sec) == 40  # Z85 of 32-byte keys
        assert stat.S_IMODE(os.stat(d / "private_keys" / f"{n}.key_secret").st_mode) == 0o600
        with open(d / "public_keys" / f"{n}.key") as f:
            assert "secret" not in f.read()
        pairs[n] = pub
    assert len(set(pairs.values())) == len(names)
    assert stat.S_IMODE(os.stat(d / "private_keys").st_mode) == 0o700
    assert "security.keys_dir=" in capsys.readouterr().out
    # again with more agents: existing pairs kept, new ones added; --force replaces
    assert keys_cli(["generate", str(d), "--agents", "5", "--name", "monitor"]) == 0
    assert zmq.auth.load_certificate(d / "public_keys" / "actor-0.key")[0] == pairs["actor-0"]
    assert (d / "public_keys" / "actor-4.key").is_file() and (d / "private_keys" / "monitor.key_secret").is_file()
    assert keys_cli(["generate", str(d), "--agents", "1", "--force"]) == 0
    assert zmq.auth.load_certificate(d / "public_keys" / "actor-0.key")[0] != pairs["actor-0"]
    # a process whose key pair is missing fails with the path and the field
    cfg = make_cfg([1, 2, 3, 4, 5, 6], d)
    with pytest.raises(C.ConfigError, match="security.keys_dir.*actor-9.key_secret"):
        S.for_process(cfg, "actor", 9)
    with pytest.raises(C.ConfigError, match="no public_keys/ folder"):
        S.for_process(make_cfg([1, 2, 3, 4, 5, 6], tmp_path / "nothing"), "broker")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "eth0", "learner.example.org", "::"])
def test_non_loopback_bind_without_keys_needs_insecure(host):
    with pytest.raises(C.ConfigError) as e:
        C.load(overrides=[f"net.host='{host}'"], environ={})
    msg = str(e.value)
    assert f"net.host={host!r}" in msg and "security.keys_dir" in msg and "net.insecure=true" in msg
    assert "magicmask keys generate" in msg
    assert C.load(overrides=[f"net.host='{host}'", "net.insecure=true"], environ={}).net.insecure
    assert C.load(overrides=[f"net.host='{host}'", "security.keys_dir=/some/keys"], environ={}).net.host == host
    with pytest.raises(C.ConfigError, match="net.host"):  # the environment override is checked too (pods)
        C.load(environ={"MAGICMASK_HOST": host})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_bind_needs_no_keys(host):
    assert C.load(overrides=[f"net.host='{host}'"], environ={}).net.host == host


def test_metrics_bind_loopback_by_default_and_actor_metrics_port():
    cfg = C.load(environ={})
    assert cfg.net.metrics_host == "127.0.0.1"
    assert [cfg.metrics_port_of("actor", i) for i in range(3)] == [9402, 9403, 9404]
    cfg = C.load(overrides=["net.actor_metrics_port=9500"], environ={})
    assert {cfg.metrics_port_of("actor", i) for i in range(3)} == {9500}
    with pytest.raises(C.ConfigError, match="net.actor_metrics_port=9401"):
        C.load(overrides=["net.actor_metrics_port=9401"], environ={})
