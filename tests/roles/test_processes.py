"""The learner and the actor on real loopback sockets (each run in a thread through its own main loop),
facing hand-made peers: malformed input is dropped and counted while they keep serving, weights and
fragments follow the contract, guided steps are never perturbed."""
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from magicmask.actors.actor import Actor
from magicmask.actors.envs import env_spec, make_env
from magicmask.actors.state_keys import StateKeys
from magicmask.models.networks import AgentNets
from magicmask.learner.server import Learner
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode
from magicmask.protocol.transport import tcp
from tests.helpers import PATIENCE, fragment_arrays, fragment_columns, fragment_wire, recv, wait_until

# Every wait below is for a condition, bounded by PATIENCE (tests/helpers.py); the limit of a whole test is
# several of those, for a run that is merely slow, not broken
pytestmark = pytest.mark.timeout(600)

def make_cfg(ports, *extra):
    return C.load(overrides=C.port_overrides(ports) + [
        "net.metrics_port=0", "env.name=gates", "run.agents=1", "actor.fragment_len=8", "env.copies=2",
        "ppo.minibatches=2", "env.eval_every=0", *extra], environ={})




def start_learner(cfg, run_dir):
    """A real Learner running its main loop in a thread: (learner, thread, stop event)."""
    stop = threading.Event()
    learner = Learner(cfg, env_spec(cfg), run_dir, stop)
    th = threading.Thread(target=learner.run, daemon=True)
    th.start()
    return learner, th, stop


def learner_peers(ctx, cfg):
    """An actor's view of a running learner: (SUB to its whole stream, PUSH for fragments), returned once the
    learner is bound and the SUB's subscription is in force at its PUB.

    The slow-joiner problem: a SUB's subscription reaches the PUB some time after connect() (later still
    while the learner thread is starting), and what the PUB sends before that is lost for good; the learner
    publishes a new version once. So the SUB takes every topic (one subscription) and we wait for the
    learner's first heartbeat on it: from then on nothing published is lost to us."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(tcp("127.0.0.1", cfg.net.learner_weights_port))
    push = ctx.socket(zmq.PUSH)
    push.connect(tcp("127.0.0.1", cfg.net.learner_fragments_port))
    frames = recv(sub, int(PATIENCE * 1000))
    assert frames is not None, "the learner published nothing (not bound, or no heartbeat)"
    return sub, push


def next_weights(sub, pred, timeout=PATIENCE):
    """The first weights message on `sub` (topic w/...) that satisfies `pred`, or None after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        frames = recv(sub, 500)
        if frames and frames[0].startswith(b"w/"):
            msg = decode(frames[1:], 1 << 24)
            if pred(msg):
                return msg
    return None


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_learner_drops_malformed_input_and_keeps_serving(tmp_path, free_ports, ctx):
    cfg = make_cfg(free_ports(6), "net.max_message_mb=0.05")
    spec = env_spec(cfg)
    learner, th, stop = start_learner(cfg, tmp_path)
    sub, push = learner_peers(ctx, cfg)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(tcp("127.0.0.1", cfg.net.learner_router_port))
    try:
        s = Sender(agent=0)
        body = {"episodes": [{"return": 1.0}], "env_steps": 16, "eval": {}}
        good = fragment_arrays(cfg, spec)
        header = msgpack.unpackb(s.pack(M.FRAGMENT, body, good)[0])
        bad = {
            "malformed": [[b"\x00not msgpack"], [msgpack.packb(header)]],  # garbage; header without its frames
            "version": [[msgpack.packb({**header, "v": 7})]],
            "oversized": [s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec, obs_shape=(1100,)))],
            "kind": [s.pack(M.HEARTBEAT, {"role": "actor"})],
            "shape": [s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec, obs_shape=(spec.obs_dim + 1,)))],
            "value": [s.pack(M.FRAGMENT, body, fragment_wire({**fragment_columns(cfg, spec),
                                                               "rewards": np.full_like(good["floats"][0], np.inf)}))],
            "schema": [Sender(agent=3).pack(M.FRAGMENT, body, good)],  # agent id outside the run
        }
        for frames_list in bad.values():
            for frames in frames_list:
                push.send_multipart(frames)
        dealer.send_multipart([b"garbage"])
        dealer.send_multipart(Sender(0).pack(M.HEARTBEAT, {"role": "actor", "want": "weights"}))
        w = recv(dealer, int(PATIENCE * 1000))
        assert w is not None, "the learner stopped answering weight requests"
        msg = decode(w, 1 << 24)
        assert msg.kind == M.WEIGHTS and msg.body["target"] == 0 and msg.policy_version == 0
        AgentNets(1, spec.obs_dim, spec.n_actions, cfg.ppo.hidden).load_agent_state(0, msg.arrays)
        # a valid fragment still trains: version 1 is published, with the credit for one fragment
        push.send_multipart(s.pack(M.FRAGMENT, body, good, policy_version=0))
        got = next_weights(sub, lambda m: m.policy_version == 1)
        assert got is not None, (f"no update after a valid fragment (learner thread alive: {th.is_alive()}, version "
                                 f"{learner.version}, pending {dict(learner.pending)}, drops {learner.drops.counts})")
        assert got.body["fragments"] == 1 and got.body["incarnation"] == s.incarnation
        for cause, frames_list in bad.items():
            assert learner.drops.counts.get(("fragments", cause), 0) == len(frames_list), (cause, learner.drops.counts)
        assert learner.drops.counts.get(("router", "malformed")) == 1
    finally:
        stop.set()
        th.join(PATIENCE)
    assert not th.is_alive()
    assert (tmp_path / "checkpoints" / "latest").is_file()  # the final checkpoint on stop


def test_stale_fragment_returns_its_credit_at_once(tmp_path, free_ports, ctx):
    """A fragment dropped for policy lag is never trained on: its credit must come back without an update
    (else an actor that had two dropped fragments in flight waited forever: found in a 3-agent run), and the
    evaluation it carries is kept (the fragment after a long evaluation is the one most likely stale)."""
    cfg = make_cfg(free_ports(6), "learner.max_policy_lag=0")
    spec = env_spec(cfg)
    learner, th, stop = start_learner(cfg, tmp_path)
    sub, push = learner_peers(ctx, cfg)
    try:
        s = Sender(agent=0)
        body = {"episodes": [], "env_steps": 16, "eval": {}}
        push.send_multipart(s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec), policy_version=0))
        assert next_weights(sub, lambda m: m.policy_version == 1 and m.body["fragments"] == 1) is not None
        push.send_multipart(s.pack(M.FRAGMENT, {**body, "eval": {"return_plain": 3.0}}, fragment_arrays(cfg, spec),
                                   policy_version=0))  # lag 1 > 0
        w = next_weights(sub, lambda m: m.body["fragments"] == 2)
        assert w is not None, "the stale fragment's credit never came back"
        assert w.policy_version == 1 and learner.version == 1          # returned without an update
        assert learner.drops.counts.get(("fragments", "stale")) == 1
        assert learner.last_eval[0] == {"return_plain": 3.0}           # its evaluation is kept all the same
    finally:
        stop.set()
        th.join(PATIENCE)


def test_learner_survives_failed_checkpoint_writes_and_tries_again(tmp_path, free_ports, ctx, monkeypatch):
    """A full disk at a checkpoint: the learner logs and counts it and keeps training, and the next checkpoint is
    written once there is room. A failed final checkpoint makes its exit status 1 and the run's end is not
    announced (no Stop): a restarted learner continues from the last good checkpoint."""
    import errno

    import torch
    from prometheus_client import REGISTRY
    cfg = make_cfg(free_ports(6), "learner.checkpoint_every=1", "learner.checkpoint_seconds=0")
    spec = env_spec(cfg)
    disk_full = threading.Event()
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if disk_full.is_set():
            f.write(b"\x80partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save)

    def failures():
        return REGISTRY.get_sample_value("magicmask_learner_checkpoint_failures_total") or 0.0
    before = failures()
    stop, status = threading.Event(), []
    learner = Learner(cfg, spec, tmp_path, stop)
    th = threading.Thread(target=lambda: status.append(learner.run()), daemon=True)
    th.start()
    sub, push = learner_peers(ctx, cfg)
    s = Sender(agent=0)
    body = {"episodes": [], "env_steps": 16, "eval": {}}
    try:
        disk_full.set()
        for v in (1, 2):
            push.send_multipart(s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec), policy_version=v - 1))
            assert next_weights(sub, lambda m: m.policy_version == v) is not None, f"no version {v}: training stopped"
        wait_until(lambda: failures() - before == 2, what=lambda: f"2 failed checkpoints, {failures() - before} so far")
        assert checkpoint_names(tmp_path) == []
        disk_full.clear()
        push.send_multipart(s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec), policy_version=2))
        assert next_weights(sub, lambda m: m.policy_version == 3) is not None
        wait_until(lambda: checkpoint_names(tmp_path) == ["ckpt-00000003.pt", "latest"],
                   what=lambda: f"checkpoint 3 and latest, the folder holds {checkpoint_names(tmp_path)}")
        disk_full.set()
    finally:
        stop.set()
        th.join(PATIENCE)
    assert status == [1] and failures() - before == 3
    assert (tmp_path / "checkpoints" / "latest").read_text() == "ckpt-00000003.pt"
    while (frames := recv(sub, 300)) is not None:
        assert frames[0] != b"stop", "an unfinished run announced its end"


def test_learner_checkpoints_by_time_as_well_as_by_updates(tmp_path, free_ports, ctx):
    """learner.checkpoint_seconds: with checkpoint_every far off, an update after that many seconds writes one."""
    cfg = make_cfg(free_ports(6), "learner.checkpoint_every=1000", "learner.checkpoint_seconds=1")
    spec = env_spec(cfg)
    learner, th, stop = start_learner(cfg, tmp_path)
    sub, push = learner_peers(ctx, cfg)
    s = Sender(agent=0)
    body = {"episodes": [], "env_steps": 16, "eval": {}}
    try:
        # The learner's own clock decides (learner.last_checkpoint, set at start and when a checkpoint write
        # begins), not a fixed sleep of ours: each fragment goes once more than 1 s passed since then. Sleeping
        # 1.1 s after version 1 arrived raced with the write that version 1 itself starts after publishing (it
        # is due: more than 1 s since the start), which restarts the learner's clock.
        def after_a_second():
            wait_until(lambda: time.monotonic() - learner.last_checkpoint > 1.05, 30, "1 s since the last checkpoint")
        after_a_second()
        push.send_multipart(s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec), policy_version=0))
        assert next_weights(sub, lambda m: m.policy_version == 1) is not None
        wait_until(lambda: "ckpt-00000001.pt" in checkpoint_names(tmp_path),
                   what=lambda: f"the checkpoint of version 1, the folder holds {checkpoint_names(tmp_path)}")
        after_a_second()
        push.send_multipart(s.pack(M.FRAGMENT, body, fragment_arrays(cfg, spec), policy_version=1))
        wait_until(lambda: "ckpt-00000002.pt" in checkpoint_names(tmp_path),
                   what=lambda: f"the checkpoint of version 2, the folder holds {checkpoint_names(tmp_path)}")
    finally:
        stop.set()
        th.join(PATIENCE)


def checkpoint_names(run_dir):
    """Every file in the checkpoints folder, temporary ones included."""
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir()) if (run_dir / "checkpoints").is_dir() else []


def test_actor_follows_the_contract_and_survives_bad_input(tmp_path, free_ports, ctx):
    cfg = make_cfg(free_ports(6), "actor.guidance_prob=1.0", "actor.eps0=0.3", "actor.eps_min=0.3", "actor.report_every=10")
    spec = env_spec(cfg)
    # hand-made learner and broker
    pull = ctx.socket(zmq.PULL)
    pull.bind(tcp("127.0.0.1", cfg.net.learner_fragments_port))
    pub = ctx.socket(zmq.PUB)
    pub.bind(tcp("127.0.0.1", cfg.net.learner_weights_port))
    router = ctx.socket(zmq.ROUTER)
    router.bind(tcp("127.0.0.1", cfg.net.learner_router_port))
    reports = ctx.socket(zmq.PULL)
    reports.bind(tcp("127.0.0.1", cfg.net.broker_reports_port))
    snaps = ctx.socket(zmq.PUB)
    snaps.bind(tcp("127.0.0.1", cfg.net.broker_snapshots_port))
    broker_router = ctx.socket(zmq.ROUTER)
    broker_router.bind(tcp("127.0.0.1", cfg.net.broker_router_port))
    stop = threading.Event()
    actor = Actor(cfg, 0, tmp_path, stop)
    th = threading.Thread(target=actor.run, daemon=True)
    th.start()
    learner, broker = Sender(-1), Sender(-1)

    def beat():
        """A live learner heartbeats (net.heartbeat_s): without, the actor deems ours silent 3 s after its last
        message and stops sending, which a loaded machine reaches between two steps of this test."""
        pub.send_multipart([b"hb", *learner.pack(M.HEARTBEAT, {"role": "learner"})])

    def recv_beating(sock, timeout=PATIENCE):
        """recv(sock), heartbeating meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            beat()
            if (frames := recv(sock, 200)) is not None:
                return frames
        return None
    try:
        req = recv(router, int(PATIENCE * 1000))
        assert req is not None and decode(req[1:], 1 << 20).body["want"] == "weights"
        ident = req[0]
        nets = AgentNets(1, spec.obs_dim, spec.n_actions, cfg.ppo.hidden, seed=1)
        wrong = {k: v[..., :1] for k, v in nets.agent_state(0).items()}
        router.send_multipart([ident, b"garbage"])
        router.send_multipart([ident, *learner.pack(M.WEIGHTS, {"target": 0}, wrong, policy_version=0)])
        router.send_multipart([ident, *learner.pack(M.WEIGHTS, {"target": 9}, nets.agent_state(0), policy_version=0)])
        causes = ("malformed", "shape", "schema")
        wait_until(lambda: all(actor.drops.counts.get(("weights", c)) == 1 for c in causes),
                   what=lambda: f"a drop of each cause {causes}, counted {actor.drops.counts}")
        assert actor.version == -1, "bad weights were applied"
        # a snapshot from a peer that holds every non-gate state of the gates env: those steps get guided
        env = make_env(cfg, 0)
        obs, _, info = env.reset(seed=0)
        states = [obs]
        for _ in range(env.spec.obs_dim):
            obs, _, _, term, trunc, _ = env.step(0)
            if term or trunc:
                break
            states.append(obs)
        keys = StateKeys(spec.obs_dim, cfg.actor.key_dim, cfg.actor.key_seed)(np.stack(states))
        br = recv(broker_router, int(PATIENCE * 1000))
        assert br is not None and decode(br[1:], 1 << 20).body["want"] == "snapshot"
        snap = broker.pack(M.SNAPSHOT, {"created_at": time.time(), "clock": 50, "receiver": 0},
                               {"keys": keys, "scores": np.ones(len(keys), np.float32),
                                "finders": np.full((len(keys), 1), 0b10, np.uint8)})  # a peer's (id 1)
        broker_router.send_multipart([br[0], *snap])
        # the snapshot is in use before the weights come: the first fragment (8 steps, milliseconds) starts as
        # they arrive, and a snapshot sent just before them on another connection may well arrive after it
        wait_until(lambda: actor.guidance.seq == 1, what="the actor to take the snapshot")
        router.send_multipart([ident, *learner.pack(M.WEIGHTS, {"target": 0}, nets.agent_state(0), policy_version=0)])
        frames = recv_beating(pull)
        assert frames is not None, "no fragment from the actor"
        ctx_ = {"T": cfg.actor.fragment_len, "E": cfg.env.copies, "A": spec.n_actions, "obs": spec.obs_shape,
                "obs_dtype": spec.obs_dtype}
        frag = M.validate(decode(frames, 1 << 24), ctx_, (M.FRAGMENT,))
        a = M.fragment_columns(frag.arrays)
        assert frag.policy_version == 0 and frag.agent == 0
        assert np.all(np.take_along_axis(a["legal"], a["actions"][..., None], -1))
        assert a["guided"].any(), "no step was guided by the peer's snapshot"
        assert not (a["guided"] & (a["perturbed"] | a["eps_random"])).any()
        np.testing.assert_array_equal(a["mask_applied"], a["masked"] & ~a["eps_random"])
        assert (a["perturbed"] <= a["mask_applied"]).all()
        # garbage on the stream sockets is counted too, and the actor keeps going; first make sure the actor's
        # SUBs hear our PUBs (slow joiner): publish heartbeats until it has heard each
        for peer, sock, sender in ((actor.links.learner, pub, learner), (actor.links.broker, snaps, broker)):
            t0 = peer.last_heard
            wait_until(lambda: sock.send_multipart([b"hb", *sender.pack(M.HEARTBEAT, {"role": peer.name})])
                       or peer.last_heard > t0, what=f"the actor to hear the {peer.name}'s PUB")
        pub.send_multipart([b"w/0", b"junk"])
        snaps.send_multipart([M.snapshot_topic(0), b"junk"])
        rep = recv_beating(reports)
        assert rep is not None and decode(rep, 1 << 20).kind == M.REPORT
        # out of credit (2 fragments untrained) the actor waits; credit from the learner releases it
        assert recv_beating(pull) is not None
        wait_until(lambda: beat() or (actor.credit.in_flight == 2 and actor.outbox.must_wait()),
                   what=lambda: f"the actor out of credit and waiting (in flight {actor.credit.in_flight}, learner "
                                f"alive {actor.links.learner.alive}, queued {len(actor.outbox.queue)})")
        assert recv(pull, 1000) is None, "the actor ran past its credit"
        pub.send_multipart([b"w/0", *learner.pack(M.WEIGHTS, {"target": 0, "incarnation": actor.sender.incarnation,
                                                              "fragments": 2}, nets.agent_state(0), policy_version=1)])
        assert recv_beating(pull) is not None, "credit did not release the actor"
        assert actor.drops.counts.get(("weights", "malformed"), 0) == 2  # the junk came before the credit
        wait_until(lambda: actor.drops.counts.get(("snapshots", "malformed"), 0) == 1,  # another pipe
                   what=lambda: f"the junk snapshot counted, drops {actor.drops.counts}")
    finally:
        stop.set()
        th.join(PATIENCE)
    assert not th.is_alive()
