"""The actor process of one agent: E env copies, masked action selection, fragments to the learner,
critical reports to the broker, peer guidance from the broker's latest snapshot.

Sockets (DESIGN.md): PUSH fragments -> learner (a full pipe blocks while the learner is alive; see Liveness),
SUB weights <- learner (topic per agent, last-value semantics), DEALER -> learner ROUTER for the current
weights at start, PUSH reports -> broker, SUB snapshots <- broker (topic "snap/<agent>"), DEALER -> broker
ROUTER for the current snapshot at start (the Clone pattern: subscribe first, then ask for state, then
ignore stream messages whose sequence number is not newer).

Liveness (the ZeroMQ guide's Paranoid Pirate rule): both SUB sockets also take topic b"hb", the
Heartbeat the learner and the broker publish every `net.heartbeat_s`; any message from a peer counts as a
heartbeat, and a peer not heard for 3 intervals is silent (logged once when it goes silent and once when
it returns; gauge `magicmask_actor_peer_silence_seconds{peer}`).
- Broker silent: the last snapshot stays in use, `magicmask_actor_snapshot_stale` = 1. When the broker is
  heard again (or with a new incarnation) the actor asks its ROUTER for the current snapshot (Clone
  pattern); a snapshot from a new broker incarnation is applied whatever its seq (a restarted broker counts
  from 1 again).
- Learner silent: the actor keeps acting with its last weights. Fragments go into a local queue bounded by
  `actor.offline_queue`; when it is full the OLDEST fragment is dropped and counted
  (`magicmask_actor_fragments_dropped{cause="offline_queue"}`). Nothing is sent to a silent learner. When
  the learner is heard again the queue is sent oldest first, within credit. While the learner is alive the
  actor collects only with credit and an empty queue (a full pipe blocks it: back-pressure, no drops).
- A new learner incarnation (a restart) counts trained fragments from zero: the actor resets its credit
  counters (sent/trained) and its record of weight versions, so the new learner's weights are taken.
No wait blocks for ever: every loop polls at most 200 ms and checks stop.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import zmq
from prometheus_client import Counter, Gauge, start_http_server

from magicmask.models.action_selection import epsilon, select_training, softmax_legal
from magicmask.actors.envs import make_env
from magicmask.actors.evaluation import evaluate
from magicmask.actors.state_keys import StateKeys, max_cosine
from magicmask.models.networks import AgentNets, nets_for
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender
from magicmask.protocol.config import Config
from magicmask.protocol.drops import DropLog
from magicmask.protocol.envspec import EnvSpec
from magicmask.protocol.security import for_process
from magicmask.protocol.transport import make_socket, receive, tcp

log = logging.getLogger("actor")

STEPS = Counter("magicmask_actor_env_steps", "Env steps taken by this actor", ["agent"])
FRAGMENTS = Counter("magicmask_actor_fragments", "Fragments sent to the learner", ["agent"])
REPORTS = Counter("magicmask_actor_reports", "Critical reports sent to the broker", ["agent"])
SNAP_SEQ = Gauge("magicmask_actor_snapshot_seq", "Sequence number of the latest snapshot used", ["agent"])
SNAP_GAPS = Counter("magicmask_actor_snapshot_gaps", "Snapshots missed (sequence-number gaps)", ["agent"])
SNAP_AGE = Gauge("magicmask_actor_snapshot_delay_seconds", "Delivery delay of the latest snapshot", ["agent"])
POLICY_VERSION = Gauge("magicmask_actor_policy_version", "Policy version in use", ["agent"])
SILENCE = Gauge("magicmask_actor_peer_silence_seconds", "Seconds since the peer (learner, broker) was last heard",
                ["agent", "peer"])
SNAP_STALE = Gauge("magicmask_actor_snapshot_stale",
                   "1 while the broker is silent (> 3 heartbeat intervals): the snapshot in use is stale", ["agent"])
LEARNER_SILENT = Gauge("magicmask_actor_learner_silent", "1 while the learner is silent (> 3 heartbeat intervals)", ["agent"])
FRAG_DROPPED = Counter("magicmask_actor_fragments_dropped", "Fragments dropped by the actor", ["agent", "cause"])
QUEUED = Gauge("magicmask_actor_fragment_queue", "Fragments waiting in the actor's local queue", ["agent"])
GUIDED = Counter("magicmask_actor_guided_steps", "Steps left unperturbed because a peer marked them critical", ["agent"])


class PeerPolicies:
    """Latest weights of every agent (own and peers), inference only. Peers play the other seats. Each agent's
    networks are built from its own spec (`spec.for_agent`): in Dou Dizhu the landlord's and the peasants'
    observations differ in size."""

    def __init__(self, spec: EnvSpec, cfg: Config):
        self.nets: dict[int, AgentNets] = {}
        self.versions: dict[int, int] = {}
        self.spec, self.cfg = spec, cfg
        self.rng = np.random.default_rng()

    def load(self, agent: int, arrays: dict, version: int) -> None:
        net = self.nets.get(agent)
        if net is None:
            net = nets_for(self.spec.for_agent(agent), self.cfg.ppo.hidden, 1, action_head=self.cfg.ppo.action_head)
            net.requires_grad_(False)
        net.load_agent_state(0, arrays)  # raises ValueError on a wrong name or shape
        self.nets[agent] = net
        self.versions[agent] = version

    @torch.no_grad()
    def forward(self, agent: int, obs: np.ndarray, actions: np.ndarray | None = None):
        """obs[B, ...] -> logits[B, A] (only the columns `actions` when given), value, m, mask value."""
        cols = None if actions is None else torch.as_tensor(actions)
        logits, value, mlogit, mvalue = self.nets[agent](torch.as_tensor(obs)[None], actions=cols)
        return logits[0].numpy(), value[0].numpy(), torch.sigmoid(mlogit[0]).numpy(), mvalue[0].numpy()

    def opponent(self, agent: int, obs: np.ndarray, legal: np.ndarray) -> int:
        """A peer's move in a shared world: sampled from its policy; uniform random until its weights arrive."""
        if agent not in self.nets:
            return int(self.rng.choice(np.flatnonzero(legal)))
        cols = np.flatnonzero(legal)  # logits of the legal actions only (Dou Dizhu: a handful of 27,472)
        p = softmax_legal(self.forward(agent, obs[None], cols)[0], np.ones((1, len(cols)), bool))[0]
        return int(cols[self.rng.choice(len(p), p=p)])


class Actor:
    def __init__(self, cfg: Config, agent: int, run_dir: Path, stop_event=None):
        self.cfg, self.agent, self.run_dir = cfg, agent, Path(run_dir)
        self.stop_event = stop_event
        self.sender = Sender(agent)
        # Reproducible from run.seed; a restarted actor (the supervisor counts restarts) plays new episodes
        restart = int(os.environ.get("MAGICMASK_RESTART", "0"))
        self.seed = int(np.random.SeedSequence([cfg.run.seed, agent, restart]).generate_state(1)[0])
        self.rng = np.random.default_rng(self.seed)
        self.envs = [make_env(cfg, agent, c) for c in range(cfg.env.copies)]
        self.spec = self.envs[0].spec.for_agent(agent)  # this agent's own observation shape
        self.peers = PeerPolicies(self.spec, cfg)
        for env in self.envs:
            env.set_opponent(self.peers.opponent)
        self.keys = StateKeys(self.spec.obs_dim, cfg.actor.key_dim, cfg.actor.key_seed)
        n_masked = int(round(cfg.mask.masked_copies * cfg.env.copies))
        self.masked_copy = np.arange(cfg.env.copies) < n_masked
        self.max_bytes = int(cfg.net.max_message_mb * 2**20)
        self.drops = DropLog(log)
        self.version = -1
        self.t = 0                 # this agent's env steps (all copies)
        self.snap_seq = 0
        self.snap_keys = np.zeros((0, cfg.actor.key_dim), np.float32)
        self.episodes: list[dict] = []
        self.ep_return = np.zeros(cfg.env.copies)
        self.ep_len = np.zeros(cfg.env.copies, dtype=np.int64)
        self.episode_seed = self.seed * 1000
        self.stopped = False
        self._env_steps, self._guided_steps = STEPS.labels(agent), GUIDED.labels(agent)  # bound once: step loop
        self.sent = 0              # fragments sent by this incarnation
        self.trained = 0           # ... of which the learner has trained on (credit-based flow control)
        self.queue: deque = deque()  # packed fragments not yet sent (bounded by actor.offline_queue)
        self.dropped = 0           # fragments dropped from a full queue
        self.snap_inc = None       # broker incarnation of the snapshot in use
        self.snap_created = None   # broker's created_at (wall clock) of the snapshot in use
        # Cumulative snapshot-use figures of this incarnation, sent with every fragment (body "comm") so the
        # learner's metrics.jsonl keeps what the Prometheus gauges forget when the run ends (the
        # communication study, explain/commstudy.py, reads them); cumulative, so a dropped fragment loses nothing.
        self.comm = {"snapshots_received": 0, "snapshots_applied": 0, "snapshot_gaps": 0, "delay_s_sum": 0.0,
                     "steps": 0, "use_steps": 0, "age_at_use_s_sum": 0.0, "stale_steps": 0, "guided_steps": 0}
        self.silent_after = 3 * cfg.net.heartbeat_s
        now = time.monotonic()
        self.last_heard = {"learner": now, "broker": now}
        self.alive = {"learner": True, "broker": True}
        self.peer_inc: dict[str, int | None] = {"learner": None, "broker": None}

    # ---------------- sockets ----------------
    def connect(self) -> None:
        cfg, ctx = self.cfg, zmq.Context.instance()
        self.ctx = ctx
        la, ba = cfg.learner_addr(), cfg.broker_addr()
        sec = for_process(cfg, "actor", self.agent)  # CURVE client keys; .client() is None without keys
        lc, bc = sec.client("learner"), sec.client("broker")
        self.frag_sock = make_socket(ctx, zmq.PUSH, hwm=2, curve=lc)
        self.frag_sock.connect(tcp(la, cfg.net.learner_fragments_port))
        self.weights_sock = make_socket(ctx, zmq.SUB, max_bytes=self.max_bytes, curve=lc)
        self.weights_sock.setsockopt(zmq.SUBSCRIBE, b"w/")
        self.weights_sock.setsockopt(zmq.SUBSCRIBE, b"stop")
        self.weights_sock.setsockopt(zmq.SUBSCRIBE, b"hb")
        self.weights_sock.connect(tcp(la, cfg.net.learner_weights_port))
        self.learner_req = make_socket(ctx, zmq.DEALER, max_bytes=self.max_bytes, curve=lc)
        self.learner_req.connect(tcp(la, cfg.net.learner_router_port))
        self.report_sock = make_socket(ctx, zmq.PUSH, hwm=100, curve=bc)
        self.report_sock.connect(tcp(ba, cfg.net.broker_reports_port))
        self.snap_sock = make_socket(ctx, zmq.SUB, max_bytes=self.max_bytes, curve=bc)
        self.snap_sock.setsockopt(zmq.SUBSCRIBE, b"snap/%d" % self.agent)
        self.snap_sock.setsockopt(zmq.SUBSCRIBE, b"hb")
        self.snap_sock.connect(tcp(ba, cfg.net.broker_snapshots_port))
        self.broker_req = make_socket(ctx, zmq.DEALER, max_bytes=self.max_bytes, curve=bc)
        self.broker_req.connect(tcp(ba, cfg.net.broker_router_port))
        self.poller = zmq.Poller()
        for s in (self.weights_sock, self.learner_req, self.snap_sock, self.broker_req):
            self.poller.register(s, zmq.POLLIN)

    def close(self) -> None:
        for s in (self.frag_sock, self.weights_sock, self.learner_req, self.report_sock, self.snap_sock, self.broker_req):
            s.close(linger=0)

    def request_state(self) -> None:
        """Late joiner: ask for the current weights and snapshot (subscriptions are already open)."""
        hb = {"role": "actor"}
        self.learner_req.send_multipart(self.sender.pack(M.HEARTBEAT, {**hb, "want": "weights"}))
        self.broker_req.send_multipart(self.sender.pack(M.HEARTBEAT, {**hb, "want": "snapshot"}))

    def request_snapshot(self) -> None:
        self.broker_req.send_multipart(self.sender.pack(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}),
                                       flags=zmq.NOBLOCK)

    def heard(self, peer: str, incarnation: int) -> None:
        """Any message from a peer is a heartbeat: note it, notice a return and a new incarnation."""
        self.last_heard[peer] = time.monotonic()
        old = self.peer_inc[peer]
        self.peer_inc[peer] = incarnation
        restarted = old is not None and old != incarnation
        if restarted:
            log.warning("agent %d: the %s restarted (incarnation %x -> %x)", self.agent, peer, old, incarnation)
            if peer == "learner":  # the new learner counts trained fragments from zero, and versions anew
                self.sent = self.trained = 0
                self.peers.versions.clear()
        returned = not self.alive[peer]
        if returned:
            self.alive[peer] = True
            log.warning("agent %d: the %s is heard again", self.agent, peer)
        if peer == "broker" and (restarted or returned):
            SNAP_STALE.labels(self.agent).set(0)
            try:
                self.request_snapshot()  # Clone pattern: ask for the current state on return
            except zmq.Again:
                pass
        self.check_liveness()

    def silence(self, peer: str) -> float:
        return time.monotonic() - self.last_heard[peer]

    def check_liveness(self) -> None:
        for peer in ("learner", "broker"):
            quiet = self.silence(peer)
            SILENCE.labels(self.agent, peer).set(quiet)
            if quiet > self.silent_after and self.alive[peer]:
                self.alive[peer] = False
                log.warning("agent %d: the %s is silent (nothing for %.1fs > 3 x net.heartbeat_s)%s", self.agent,
                            peer, quiet, "; acting on the last weights, queueing fragments" if peer == "learner"
                            else "; the snapshot in use is stale")
            if peer == "broker":
                SNAP_STALE.labels(self.agent).set(0 if self.alive[peer] else 1)
            else:
                LEARNER_SILENT.labels(self.agent).set(0 if self.alive[peer] else 1)

    def poll(self, timeout_ms: int = 0) -> None:
        """Apply every pending weights, snapshot and stop message; never blocks longer than timeout_ms."""
        events = dict(self.poller.poll(timeout_ms))
        for sock in (self.weights_sock, self.learner_req):
            while sock in events and sock.poll(0):
                msg = receive(sock, "weights", self.drops, self.max_bytes, kinds=(M.WEIGHTS, M.STOP, M.HEARTBEAT),
                              topic=sock is self.weights_sock)
                if msg is None:
                    continue
                self.heard("learner", msg.incarnation)
                if msg.kind == M.HEARTBEAT:
                    continue
                if msg.kind == M.STOP:
                    log.info("stop received from the learner: %s", msg.body.get("reason"))
                    self.stopped = True
                    continue
                self.on_weights(msg)
        for sock in (self.snap_sock, self.broker_req):
            while sock in events and sock.poll(0):
                msg = receive(sock, "snapshots", self.drops, self.max_bytes, kinds=(M.SNAPSHOT, M.HEARTBEAT),
                              context={"K": self.cfg.actor.key_dim}, topic=sock is self.snap_sock)
                if msg is None:
                    continue
                self.heard("broker", msg.incarnation)
                if msg.kind == M.SNAPSHOT:
                    self.on_snapshot(msg, stream=sock is self.snap_sock)
        self.check_liveness()

    def on_weights(self, msg: M.Message) -> None:
        target = msg.body["target"]
        if not isinstance(target, int) or not 0 <= target < self.cfg.run.agents:
            self.drops.drop("weights", "schema", f"target {target!r} out of range")
            return
        if (target == self.agent and msg.body.get("incarnation") == self.sender.incarnation
                and isinstance(msg.body.get("fragments"), int)):
            # credit returned (fragments trained on or dropped as stale): read even from a repeated version,
            # which is how the learner returns the credit of a dropped fragment without an update
            self.trained = max(self.trained, msg.body["fragments"])
        if msg.policy_version <= self.peers.versions.get(target, -1):
            return  # last-value semantics: an older or repeated message is ignored
        try:
            self.peers.load(target, msg.arrays, msg.policy_version)
        except ValueError as e:
            self.drops.drop("weights", "shape", str(e))
            return
        if target == self.agent:
            self.version = msg.policy_version
            self.t = max(self.t, int(msg.body.get("env_steps", 0)))  # resume keeps the epsilon schedule
            POLICY_VERSION.labels(self.agent).set(self.version)

    def on_snapshot(self, msg: M.Message, stream: bool = True) -> None:
        """Apply a snapshot if it is newer. `stream`: it came on the (impaired) PUB stream, not as a state reply."""
        self.comm["snapshots_received"] += int(stream)
        if msg.incarnation != self.snap_inc:
            self.snap_seq = 0  # a (re)started broker counts from 1 again: its first snapshot is taken whatever its seq
            self.snap_inc = msg.incarnation
        elif msg.seq <= self.snap_seq:
            return  # Clone pattern: the stream may repeat what the state request already gave
        if self.snap_seq and msg.seq > self.snap_seq + 1:
            SNAP_GAPS.labels(self.agent).inc(msg.seq - self.snap_seq - 1)
            self.comm["snapshot_gaps"] += msg.seq - self.snap_seq - 1
        self.snap_seq = msg.seq
        SNAP_SEQ.labels(self.agent).set(msg.seq)
        delay = max(0.0, time.time() - msg.body["created_at"])
        SNAP_AGE.labels(self.agent).set(delay)
        self.snap_created = float(msg.body["created_at"])
        self.comm["snapshots_applied"] += 1
        self.comm["delay_s_sum"] += delay
        others = (msg.arrays["finders"] & ~np.int64(1 << self.agent)) != 0
        self.snap_keys = np.ascontiguousarray(msg.arrays["keys"][others])

    # ---------------- acting ----------------
    def reset_copy(self, c: int):
        self.episode_seed += 1
        env = self.envs[c]
        if hasattr(env, "set_episode_opponent"):
            others = [a for a in range(self.cfg.run.agents) if a != self.agent] or [self.agent]
            rnd = self.rng.random() < self.cfg.env.random_opponent_frac
            env.set_episode_opponent(-1 if rnd else int(self.rng.choice(others)))
        obs, legal, _ = env.reset(seed=self.episode_seed)
        return obs, legal

    def collect(self, obs, legal, pos):
        """One fragment: T steps of every copy. Returns the arrays, and the state to continue from."""
        cfg, T, E = self.cfg, self.cfg.actor.fragment_len, self.cfg.env.copies
        A = self.spec.n_actions
        buf = {
            "obs": np.zeros((T, E, *self.spec.obs_shape), self.spec.obs_dtype),
            "actions": np.zeros((T, E), np.int64), "legal": np.zeros((T, E, A), bool),
            **{k: np.zeros((T, E), np.float32) for k in (
                "logp_mu", "logp_pi", "values", "mask_values", "rewards", "final_values", "final_mask_values", "m", "eps")},
            **{k: np.zeros((T, E), bool) for k in (
                "terminated", "truncated", "perturbed", "masked", "mask_applied", "eps_random", "guided")},
        }
        report = {"keys": [], "scores": [], "steps": [], "positions": []}
        for t in range(T):
            obs_b, legal_b = np.stack(obs), np.stack(legal)
            # the policy over the actions legal in some copy, in those columns only (Dou Dizhu: a few of its
            # 27,472 ids; the same distribution and the same random draws as over every column)
            cols = np.flatnonzero(legal_b.any(0))
            logits, value, m, mvalue = self.peers.forward(self.agent, obs_b, cols)
            legal_c = legal_b[:, cols]
            pi = softmax_legal(logits, legal_c)
            eps = epsilon(self.t, cfg.actor.eps0, cfg.actor.eps_min, cfg.actor.eps_decay, cfg.actor.eps_fixed)
            keys = self.keys(obs_b)
            guided = np.zeros(E, bool)
            self.comm["steps"] += E
            if cfg.comm.enabled and self.snap_created is not None:  # a snapshot is in use: its age now
                self.comm["use_steps"] += E
                self.comm["age_at_use_s_sum"] += E * max(0.0, time.time() - self.snap_created)
                self.comm["stale_steps"] += E * (not self.alive["broker"])
            if cfg.comm.enabled and len(self.snap_keys):
                guided = (max_cosine(keys, self.snap_keys) >= cfg.actor.guidance_rho) & (
                    self.rng.random(E) < cfg.actor.guidance_prob)
                self._guided_steps.inc(int(guided.sum()))
                self.comm["guided_steps"] += int(guided.sum())
            masked = self.masked_copy & (self.t >= cfg.mask.start_step) & ~guided
            picks, logp_mu, perturbed, eps_random, applied = select_training(
                self.rng, pi, legal_c, m, eps, masked, guided)
            actions = cols[picks]
            buf["obs"][t], buf["legal"][t], buf["actions"][t] = obs_b, legal_b, actions
            buf["logp_mu"][t], buf["logp_pi"][t] = logp_mu, np.log(pi[np.arange(E), picks])
            buf["values"][t], buf["mask_values"][t], buf["m"][t], buf["eps"][t] = value, mvalue, m, eps
            buf["perturbed"][t], buf["masked"][t], buf["mask_applied"][t] = perturbed, masked, applied
            buf["eps_random"][t], buf["guided"][t] = eps_random, guided
            report["keys"].append(keys)
            report["scores"].append(m)
            report["steps"].append(np.full(E, self.t, np.int64))
            report["positions"].append(pos.astype(np.int32).copy())
            for c in range(E):
                o, lg, r, term, trunc, info = self.envs[c].step(int(actions[c]))
                buf["rewards"][t, c], buf["terminated"][t, c], buf["truncated"][t, c] = r, term, trunc
                self.ep_return[c] += r
                self.ep_len[c] += 1
                pos[c] += 1
                if term or trunc:
                    if trunc and not term:  # bootstrap from the real final observation's value
                        _, fv, _, fmv = self.peers.forward(self.agent, o[None])
                        buf["final_values"][t, c], buf["final_mask_values"][t, c] = fv[0], fmv[0]
                    self.episodes.append({"return": float(self.ep_return[c]), "length": int(self.ep_len[c]),
                                          **{k: float(v) for k, v in info.get("episode_stats", {}).items()}})
                    self.ep_return[c], self.ep_len[c], pos[c] = 0.0, 0, 0
                    o, lg = self.reset_copy(c)
                obs[c], legal[c] = o, lg
            self.t += E
            self._env_steps.inc(E)
            if self.t % cfg.actor.report_every < E:
                self.send_report(report)
                report = {k: [] for k in report}
        _, bv, _, bmv = self.peers.forward(self.agent, np.stack(obs))
        buf["boot_values"], buf["boot_mask_values"] = bv.astype(np.float32), bmv.astype(np.float32)
        return buf

    def send_report(self, report: dict) -> None:
        """A CriticalReport: the highest-m (least perturbable) states since the last report."""
        if not report["scores"]:
            return
        scores = np.concatenate(report["scores"]).astype(np.float32)
        top = np.argsort(-scores, kind="stable")[: self.cfg.actor.report_top]
        top = top[scores[top] >= self.cfg.actor.report_min_m]  # only states this agent is confident are critical
        arrays = {"keys": np.concatenate(report["keys"])[top].astype(np.float32), "scores": scores[top],
                  "steps": np.concatenate(report["steps"])[top], "positions": np.concatenate(report["positions"])[top]}
        try:
            self.report_sock.send_multipart(self.sender.pack(M.REPORT, {"env_steps": self.t}, arrays), flags=zmq.NOBLOCK)
            REPORTS.labels(self.agent).inc()
        except zmq.Again:
            pass  # broker unreachable and its pipe full: reports are advisory, a later one supersedes this

    def send_fragment(self, buf: dict, eval_stats: dict) -> None:
        """Queue the fragment and send what credit and the pipe allow; never blocks.

        Queue rule: at most `actor.offline_queue` fragments wait; a new one beyond that drops the OLDEST,
        counted in magicmask_actor_fragments_dropped{cause="offline_queue"}. The run loop only collects
        beyond credit while the learner is silent, so drops happen only then.
        """
        comm = {**self.comm, "at": time.time()}  # "at": wall-clock time of these figures, to match them with the broker's snapshot log
        body = {"episodes": self.episodes, "env_steps": self.t, "eval": eval_stats, "comm": comm}
        frames = self.sender.pack(M.FRAGMENT, body, buf, policy_version=self.version)
        self.episodes = []
        self.queue.append(frames)
        while len(self.queue) > self.cfg.actor.offline_queue:
            self.queue.popleft()
            self.dropped += 1
            FRAG_DROPPED.labels(self.agent, "offline_queue").inc()
        self.flush()

    def has_credit(self) -> bool:
        return self.sent - self.trained < self.cfg.actor.max_inflight

    def flush(self) -> None:
        """Send queued fragments, oldest first, while the learner is alive, credit lasts and the pipe takes them."""
        while self.queue and self.alive["learner"] and self.has_credit():
            try:
                self.frag_sock.send_multipart(self.queue[0], copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                break  # pipe full: back-pressure, try again on the next turn
            self.queue.popleft()
            self.sent += 1
            FRAGMENTS.labels(self.agent).inc()
        QUEUED.labels(self.agent).set(len(self.queue))

    def must_wait(self) -> bool:
        """Before collecting: with the learner alive, wait for credit and an empty queue; never while it is silent."""
        return self.alive["learner"] and (bool(self.queue) or not self.has_credit())

    def should_stop(self) -> bool:
        return self.stopped or (self.stop_event is not None and self.stop_event.is_set())

    def run(self) -> None:
        self.connect()
        try:
            self.request_state()
            start = last_ask = time.monotonic()
            while self.version < 0 and not self.should_stop():
                if time.monotonic() - start > self.cfg.actor.weights_timeout_s:
                    raise TimeoutError(f"no weights from the learner at {self.cfg.learner_addr()}:"
                                       f"{self.cfg.net.learner_router_port} within {self.cfg.actor.weights_timeout_s}s")
                self.poll(200)
                if time.monotonic() - last_ask > 2.0:  # the learner may have started after us: ask again
                    self.request_state()
                    last_ask = time.monotonic()
            log.info("agent %d: weights version %d received, acting", self.agent, self.version)
            state = [self.reset_copy(c) for c in range(self.cfg.env.copies)]
            obs, legal = [s[0] for s in state], [s[1] for s in state]
            pos = np.zeros(self.cfg.env.copies, np.int64)
            n = 0
            while not self.should_stop():
                self.poll(0)
                self.flush()
                while self.must_wait() and not self.should_stop():
                    self.poll(200)  # out of credit or pipe full: wait for the learner (queue if it goes silent)
                    self.flush()
                if self.should_stop():
                    break
                buf = self.collect(obs, legal, pos)
                n += 1
                ev = {}
                if self.cfg.env.eval_every and (n == 1 or n % self.cfg.env.eval_every == 0):  # n == 1: the baseline
                    ev = evaluate(self.cfg, self.agent, self.peers, self.rng)
                self.send_fragment(buf, ev)
        finally:
            self.close()


def main(cfg: Config, agent: int, run_dir: Path, stop_event=None) -> int:
    torch.set_num_threads(1)  # one core per actor: more threads thrash on small machines
    if not stop_event and cfg.metrics_port_of("actor", agent):
        start_http_server(cfg.metrics_port_of("actor", agent), addr=cfg.net.metrics_host)
    actor = Actor(cfg, agent, run_dir, stop_event)
    if stop_event is None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(actor, "stopped", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(actor, "stopped", True))
    actor.run()
    return 0
