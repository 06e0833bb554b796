"""The learner process: receives fragments, assembles one batch per agent, runs one batched PPO + mask
update for all agents at once, publishes versioned weights, writes metrics and checkpoints.

Sockets: PULL fragments (its high-water mark plus PUSH on the actor side is the back-pressure: a full
pipe blocks actors, training data is never dropped silently), PUB weights (topic "w/<agent>", each
message complete on its own: last-value semantics) and "stop", ROUTER for late joiners asking for the
current weights.

Network groups: agents whose observations differ in shape (Dou Dizhu's landlord and peasants) cannot share
one stack of parameters, so the learner holds one `NetGroup` (stacked networks, BatchedPPO, Adam state) per
group of `EnvSpec.groups()`, and an update runs one vectorised update per group that has ready agents: a
loop over groups (one or two), never over the agents inside one. Each fragment's observations are checked
against its own agent's shape; a fragment with another group's shape is dropped (cause "shape").

Batch rule: an update runs when every live agent has `fragments_per_batch` fragments, or when
`batch_deadline_s` passed since the first agent had its batch (then with the agents that have one).
Fragments whose policy version lags by more than `max_policy_lag` are dropped and counted; a fragment
from a new incarnation of an actor discards what the old one had queued (its partial state is void).

Flow control: credit-based, the rules in protocol/credit.py (`LearnerCredit` is this side): every weights
message tells an actor how many of its current incarnation's fragments were dealt with, so the learner's
queue per agent holds at most `actor.max_inflight` fragments.

Liveness: a `Heartbeat` {"role": "learner", "incarnation": ...} on topic b"hb" every `net.heartbeat_s` (the
header carries the same incarnation), so actors can tell a silent learner (3 intervals without any traffic)
and a restarted one (a new incarnation: they reset their credit counters). With
`learner.resume_if_checkpoint` a restarted learner continues from its last checkpoint when there is one
(versions and env steps continue from it; metrics.jsonl rows of later, lost updates are dropped).

Checkpoints: every `learner.checkpoint_every` updates or `learner.checkpoint_seconds`, whichever comes first,
and at the end. A write that fails (a full disk) is logged and counted and training goes on: the last good
checkpoint stays in place (learner/checkpoint.py).

The end: when every agent reached `run.total_steps` and the final checkpoint is written, a Stop on topic
"stop" (repeated for a heartbeat interval) tells the actors and the broker that the run is over. Nothing else
sends it: an interrupted or failed learner leaves them running for its restart.
"""
from __future__ import annotations

import json
import logging
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zmq
from prometheus_client import Counter, Gauge

from magicmask.learner import checkpoint
from magicmask.learner.batched_ppo import BatchedPPO
from magicmask.models.networks import StackedNets, group_nets
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender
from magicmask.protocol.config import Config
from magicmask.protocol.credit import Admission, LearnerCredit
from magicmask.protocol.drops import DropLog
from magicmask.protocol.envspec import EnvSpec
from magicmask.protocol.security import for_process, release
from magicmask.protocol.transport import HeartbeatPublisher, make_socket, receive, serve_metrics, tcp

log = logging.getLogger("learner")

UPDATES = Counter("magicmask_learner_updates", "Batched updates done")
VERSION = Gauge("magicmask_learner_policy_version", "Current policy version")
AGENT_STEPS = Gauge("magicmask_learner_agent_env_steps",
                    "Env steps trained on per agent since the run began (resumed ones too): progress", ["agent"])
ENV_STEPS = Counter("magicmask_learner_env_steps", "Env steps trained on by this learner process (rate(): steps/s)",
                    ["agent"])
AGENT_RETURN = Gauge("magicmask_learner_mean_return", "Mean training episode return (last batch)", ["agent"])
AGENT_KEEP = Gauge("magicmask_learner_keep_rate", "Mean mask keep-probability m (last batch)", ["agent"])
AGENT_LAG = Gauge("magicmask_learner_policy_lag", "Policy lag of the agent's last fragment", ["agent"])
AGENT_EVAL = Gauge("magicmask_learner_eval", "Latest evaluation figures reported by the actor", ["agent", "name"])
STALE = Counter("magicmask_learner_stale_fragments", "Fragments dropped for policy lag", ["agent"])
RESTARTS = Counter("magicmask_learner_actor_incarnations", "New actor incarnations seen", ["agent"])
CHECKPOINT_FAILURES = Counter("magicmask_learner_checkpoint_failures",
                              "Checkpoint writes that failed (the last good checkpoint stays in place)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"learner.device={name!r} but CUDA is not available on this machine")
    return torch.device(name)


@dataclass
class NetGroup:
    """Agents that share an observation shape: their stacked networks and the update that trains them."""
    agents: list[int]
    nets: StackedNets
    ppo: BatchedPPO


class Learner:
    def __init__(self, cfg: Config, spec: EnvSpec, run_dir: Path, stop_event=None):
        self.cfg, self.spec, self.run_dir = cfg, spec, Path(run_dir)
        self.stop_event = stop_event
        self.device = resolve_device(cfg.learner.device)
        self.n = cfg.run.agents
        torch.manual_seed(cfg.run.seed)
        self.groups = []
        for agents, nets in group_nets(spec, cfg.ppo, cfg.mask, cfg.run.seed):
            nets = nets.to(self.device)
            self.groups.append(NetGroup(agents, nets, BatchedPPO(nets, cfg.ppo, cfg.mask, self.device)))
        # agent id -> (its group, its index in the group's stack)
        self.slot = {a: (g, j) for g in self.groups for j, a in enumerate(g.agents)}
        self.obs_shapes = [spec.for_agent(a).obs_shape for a in range(self.n)]
        self.version = 0
        self.consumed = np.zeros(self.n, np.int64)       # env steps trained on, per agent
        self.pending: dict[int, list] = defaultdict(list)
        self.first_ready: float | None = None
        self.last_seen = np.full(self.n, time.monotonic())
        self.credit = LearnerCredit(self.n)
        self.last_eval: dict[int, dict] = {}
        self.last_comm: dict[int, dict] = {}  # the actor's cumulative snapshot-use figures (fragment body "comm")
        self.returns: dict[int, list] = defaultdict(list)
        self.lags: dict[int, list] = defaultdict(list)
        self.drops = DropLog(log)
        self.sender = Sender(-1)
        self.max_bytes = int(cfg.net.max_message_mb * 2**20)
        # the observation shape is per agent: checked in on_fragment, once the sender is known
        self.context = {"T": cfg.actor.fragment_len, "E": cfg.env.copies, "A": spec.n_actions,
                        "obs_dtype": spec.obs_dtype}
        self.stopping = False
        self.tb = None                   # TensorBoard writer, opened by run()
        self.frag_sock: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self.router: zmq.Socket | None = None
        self.poller = zmq.Poller()
        self.hb: HeartbeatPublisher | None = None  # on the PUB socket: made by bind()
        self.t_start = time.time()
        self.consumed_start = 0          # env steps already trained on when this process started (resume)
        self.last_checkpoint = time.monotonic()
        for p in checkpoint.remove_partial(self.run_dir / "checkpoints"):
            log.warning("removed %s, a checkpoint write a killed learner left half done", p.name)
        if cfg.learner.resume or (cfg.learner.resume_if_checkpoint
                                   and checkpoint.latest(self.run_dir / "checkpoints") is not None):
            self.resume()
        if cfg.learner.resume or cfg.learner.resume_if_checkpoint:
            self.trim_metrics()

    # ---------------- state ----------------
    def state(self) -> dict:
        """Everything --resume needs; one group keeps the original format (learner/checkpoint.py)."""
        st = {"version": self.version, "consumed": torch.as_tensor(self.consumed), "spec": self.spec.to_dict()}
        groups = [{"agents": g.agents, "nets": g.nets.state_dict(), "optim": g.ppo.optimizer.state_dict()}
                  for g in self.groups]
        if len(groups) == 1:
            st.update(nets=groups[0]["nets"], optim=groups[0]["optim"])
        else:
            st["groups"] = groups
        return st

    def resume(self) -> None:
        path = checkpoint.latest(self.run_dir / "checkpoints")
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        # read on the CPU whatever device wrote it: load_state_dict copies the tensors onto this learner's
        # device, and the plain values (version, consumed) are read without a device round trip
        st = checkpoint.load(path, "cpu")
        spec = self.spec.to_dict()
        if "mirror_actions" not in st["spec"]:
            spec.pop("mirror_actions", None)   # written before envs declared their mirror: the networks are the same
        if st["spec"] != spec:
            raise ValueError(f"--resume: checkpoint {path} was made for env spec {st['spec']}, this run has {spec}")
        for g, gs in zip(self.groups, checkpoint.group_states(st)):  # same spec: same groups, same order
            try:
                g.nets.load_state_dict(gs["nets"])
                g.ppo.optimizer.load_state_dict(gs["optim"])
            except (RuntimeError, ValueError) as e:
                raise ValueError(f"--resume: checkpoint {path} does not fit the networks of agents {g.agents} "
                                 f"(were ppo.hidden, ppo.action_head or ppo.board_filters changed?): {e}") from e
        self.version = int(st["version"])
        self.consumed = st["consumed"].numpy().astype(np.int64)
        log.info("resumed from %s at version %d, steps %s", path, self.version, self.consumed.tolist())

    def trim_metrics(self) -> None:
        """A learner that continues a run starts at its checkpoint's version (0 without one): the rows a stopped
        learner wrote for later updates describe training that is lost, and this learner writes those versions
        again. They are dropped, with a torn last line, so metrics.jsonl's versions stay strictly increasing.
        The file is replaced atomically."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        keep = []
        for line in lines:
            try:
                if json.loads(line)["version"] <= self.version:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                pass
        if len(keep) == len(lines):
            return
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        tmp.replace(path)
        log.warning("metrics.jsonl: %d rows after version %d dropped (updates lost with the learner that wrote them)",
                    len(lines) - len(keep), self.version)

    # ---------------- sockets ----------------
    def bind(self) -> None:
        cfg, ctx = self.cfg, zmq.Context.instance()
        curve = for_process(cfg, "learner").server()  # None without security.keys_dir
        self.frag_sock = make_socket(ctx, zmq.PULL, hwm=cfg.learner.fragment_queue, max_bytes=self.max_bytes, curve=curve)
        self.frag_sock.bind(tcp(cfg.net.host, cfg.net.learner_fragments_port))
        self.pub = make_socket(ctx, zmq.PUB, hwm=100, curve=curve)
        self.pub.bind(tcp(cfg.net.host, cfg.net.learner_weights_port))
        self.router = make_socket(ctx, zmq.ROUTER, max_bytes=self.max_bytes, curve=curve)
        self.router.bind(tcp(cfg.net.host, cfg.net.learner_router_port))
        self.hb = HeartbeatPublisher(self.pub, self.sender, "learner", cfg.net.heartbeat_s)
        self.poller.register(self.frag_sock, zmq.POLLIN)
        self.poller.register(self.router, zmq.POLLIN)

    def close(self) -> None:
        for s in (self.frag_sock, self.pub, self.router):
            if s is not None:
                s.close(linger=0)
        release(zmq.Context.instance())  # stop the CURVE authenticator, if any

    def weights_frames(self, agent: int) -> list:
        group, j = self.slot[agent]
        arrays = group.nets.agent_state(j)
        body = {"target": agent, "env_steps": int(self.consumed[agent]), **self.credit.grant(agent)}
        return self.sender.pack(M.WEIGHTS, body, arrays, policy_version=self.version)

    def publish(self) -> None:
        for a in range(self.n):
            self.pub.send_multipart([b"w/%d" % a, *self.weights_frames(a)])

    def heartbeat(self) -> None:
        """Publish a Heartbeat when net.heartbeat_s passed since the last one."""
        self.hb.beat(policy_version=self.version)

    def publish_stop(self, reason: str) -> None:
        self.pub.send_multipart([b"stop", *self.sender.pack(M.STOP, {"reason": reason})])

    # ---------------- receiving ----------------
    def on_fragment(self, msg: M.Message) -> None:
        a = msg.agent
        if not 0 <= a < self.n:
            self.drops.drop("fragments", "schema", f"agent id {a} not in 0..{self.n - 1}")
            return
        got = tuple(msg.arrays["obs"].shape[2:])
        if got != self.obs_shapes[a]:
            self.drops.drop("fragments", "shape", f"Fragment.obs of agent {a}: observation shape {list(got)}, "
                                                  f"expected agent {a}'s {list(self.obs_shapes[a])}")
            return
        old = self.credit.incarnation.get(a)
        admission = self.credit.admit(a, msg.incarnation)
        if admission is Admission.RETIRED:
            self.drops.drop("fragments", "old_incarnation", f"agent {a} incarnation {msg.incarnation} was replaced")
            return
        if admission is Admission.REPLACED:
            log.warning("agent %d restarted (incarnation %x -> %x): its queued fragments are discarded",
                        a, old, msg.incarnation)
            self.pending[a].clear()
        if admission is not Admission.SAME:
            RESTARTS.labels(a).inc()
        self.last_seen[a] = time.monotonic()
        comm = msg.body.get("comm")  # optional; kept even from a stale fragment: it describes the channel
        if isinstance(comm, dict):
            self.last_comm[a] = {str(k): float(v) for k, v in comm.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if msg.body["eval"]:   # kept even from a stale fragment: the evaluation used the actor's current weights
            self.last_eval[a] = {k: float(v) for k, v in msg.body["eval"].items() if isinstance(v, (int, float))}
            for k, v in self.last_eval[a].items():
                AGENT_EVAL.labels(a, k).set(v)
        lag = self.version - msg.policy_version
        AGENT_LAG.labels(a).set(lag)
        self.lags[a].append(lag)
        if lag > self.cfg.learner.max_policy_lag:
            STALE.labels(a).inc()
            self.drops.drop("fragments", "stale", f"agent {a}: policy lag {lag} > {self.cfg.learner.max_policy_lag}")
            self.credit.deal(a)  # its credit comes back at once, with the current weights (credit.py, rule 3)
            self.pub.send_multipart([b"w/%d" % a, *self.weights_frames(a)])
            return
        self.pending[a].append(msg)
        for ep in msg.body["episodes"]:
            if isinstance(ep, dict) and isinstance(ep.get("return"), (int, float)):
                self.returns[a].append(float(ep["return"]))
        if len(self.pending[a]) >= self.cfg.learner.fragments_per_batch and self.first_ready is None:
            self.first_ready = time.monotonic()

    def on_request(self, ident: bytes, msg: M.Message | None) -> None:
        if msg is None or msg.body.get("want") != "weights":
            return
        for a in range(self.n):
            self.router.send_multipart([ident, *self.weights_frames(a)])

    # ---------------- updating ----------------
    def ready_agents(self) -> list[int]:
        k = self.cfg.learner.fragments_per_batch
        ready = [a for a in range(self.n) if len(self.pending[a]) >= k]
        if not ready:
            return []
        now = time.monotonic()
        live = [a for a in range(self.n) if now - self.last_seen[a] < self.cfg.learner.liveness_s]
        if all(a in ready for a in live):
            return ready
        if self.first_ready is not None and now - self.first_ready >= self.cfg.learner.batch_deadline_s:
            return ready
        return []

    def make_batch(self, agents: list[int]) -> dict[str, torch.Tensor]:
        k = self.cfg.learner.fragments_per_batch
        per_agent = []
        for a in agents:
            frags, self.pending[a] = self.pending[a][:k], self.pending[a][k:]
            per_agent.append(frags)
        columns = [[M.fragment_columns(f.arrays) for f in frags] for frags in per_agent]
        batch = {}
        for name in M.FRAGMENT_COLUMNS:
            axis = 0 if name in M.FRAGMENT_BOOT else 1  # fragments join along the copies axis
            stacked = np.stack([np.concatenate([c[name] for c in cols], axis=axis) for cols in columns])
            batch[name] = torch.as_tensor(stacked, device=self.device)
        return batch

    def update(self, agents: list[int]) -> None:
        """One batched update of `agents`: per network group, one vectorised update of its ready agents."""
        t0 = time.monotonic()
        lr_frac = max(0.0, 1.0 - float(self.consumed.mean()) / self.cfg.run.total_steps) if self.cfg.ppo.anneal_lr else 1.0
        stats: dict[int, dict[str, float]] = {}
        steps = self.cfg.actor.fragment_len * self.cfg.env.copies * self.cfg.learner.fragments_per_batch
        for g in self.groups:
            members = [a for a in agents if self.slot[a][0] is g]
            if not members:
                continue
            out = g.ppo.update(self.make_batch(members), [self.slot[a][1] for a in members], lr_frac,
                               tick=self.heartbeat)  # a long update stays audible
            for j, a in enumerate(members):
                stats[a] = {k: float(v[j]) for k, v in out.items()}
        self.version += 1
        for a in agents:
            self.consumed[a] += steps
            ENV_STEPS.labels(a).inc(steps)
            self.credit.deal(a, self.cfg.learner.fragments_per_batch)
        self.first_ready = None if not any(len(self.pending[a]) >= self.cfg.learner.fragments_per_batch
                                           for a in range(self.n)) else time.monotonic()
        self.publish()
        self.record(agents, stats, steps, time.monotonic() - t0)
        every_s = self.cfg.learner.checkpoint_seconds
        if (self.version % self.cfg.learner.checkpoint_every == 0
                or (every_s and time.monotonic() - self.last_checkpoint >= every_s)):
            self.save()

    def record(self, agents, stats: dict[int, dict[str, float]], steps, update_s) -> None:
        UPDATES.inc()
        VERSION.set(self.version)
        now = time.time()
        elapsed = now - self.t_start
        sps = float(self.consumed.sum() - self.consumed_start) / max(elapsed, 1e-9)
        row = {"time": now, "version": self.version, "update_s": update_s, "steps_per_s": sps, "agents": {}}
        for a in agents:
            rets = self.returns.pop(a, [])
            d = dict(stats[a])
            d["env_steps"] = int(self.consumed[a])
            lags = self.lags.pop(a, [])
            if lags:
                d["policy_lag"] = float(np.mean(lags))
            if rets:
                d["mean_return"] = float(np.mean(rets))
                AGENT_RETURN.labels(a).set(d["mean_return"])
            AGENT_STEPS.labels(a).set(self.consumed[a])
            AGENT_KEEP.labels(a).set(d.get("keep_rate", 0.0))
            ev = self.last_eval.pop(a, None)
            if ev:
                d["eval"] = ev
                if abs(ev.get("return_plain", 0.0)) > 1e-9:
                    d["reward_preservation"] = ev["return_masked"] / ev["return_plain"]
            if a in self.last_comm:
                d["comm"] = self.last_comm[a]
            row["agents"][str(a)] = d
            if self.tb is not None:
                step = int(self.consumed[a])
                for k, v in d.items():
                    if isinstance(v, float):
                        self.tb.add_scalar(f"agent{a}/{k}", v, step)
                for k, v in (ev or {}).items():
                    self.tb.add_scalar(f"agent{a}/eval_{k}", v, step)
        if self.tb is not None:
            self.tb.add_scalar("learner/steps_per_s", sps, self.version)
            self.tb.add_scalar("learner/update_s", update_s, self.version)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def save(self) -> bool:
        """Write a checkpoint; False when the write failed (a full or read-only disk): that is logged and counted
        and training goes on, the last good checkpoint still in place and the next one tried on schedule."""
        self.last_checkpoint = time.monotonic()
        try:
            path = checkpoint.save(self.state(), self.run_dir / "checkpoints", self.version)
        except OSError as e:
            CHECKPOINT_FAILURES.inc()
            log.error("checkpoint of version %d failed, the last good one stays: %s", self.version, e)
            return False
        log.info("checkpoint %s", path.name)
        return True

    def serve(self, poll_ms: int) -> None:
        """Answer state requests and take fragments, waiting at most poll_ms for the first message."""
        events = dict(self.poller.poll(poll_ms))
        if self.router in events:
            while self.router.poll(0):
                ident, msg = receive(self.router, "router", self.drops, self.max_bytes, kinds=(M.HEARTBEAT,),
                                     identity=True)
                self.on_request(ident, msg)
        if self.frag_sock in events:
            for _ in range(64):  # bounded burst, then serve the router again
                if not self.frag_sock.poll(0):
                    break
                msg = receive(self.frag_sock, "fragments", self.drops, self.max_bytes, self.context,
                              kinds=(M.FRAGMENT,))
                if msg is not None:
                    self.on_fragment(msg)

    def should_stop(self) -> bool:
        return self.stopping or (self.stop_event is not None and self.stop_event.is_set())

    def run(self) -> int:
        """Train until every agent reached run.total_steps or stop is asked for. Returns the exit status: 0, or 1
        when the last checkpoint could not be written (a restarted learner then continues from the last good
        one, so the run's end is not announced)."""
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only the process needs it
        self.tb = SummaryWriter(str(self.run_dir / "tb"))
        self.bind()
        self.t_start, self.consumed_start = time.time(), int(self.consumed.sum())
        self.publish()
        reason, finished = "interrupted", False
        poll_ms = max(1, min(100, int(self.cfg.net.heartbeat_s * 500)))
        try:
            while not self.should_stop():
                self.heartbeat()
                self.serve(poll_ms)
                agents = self.ready_agents()
                if agents:
                    self.heartbeat()
                    self.update(agents)
                if self.consumed.min() >= self.cfg.run.total_steps:
                    reason, finished = f"every agent reached run.total_steps={self.cfg.run.total_steps}", True
                    break
        finally:
            saved = self.save()
            if finished and saved:
                self.announce_finished(reason)
            self.tb.close()
            self.close()
            log.info("learner stopped: %s%s", reason, "" if saved else " (the last checkpoint could not be written)")
        return 0 if saved else 1

    def announce_finished(self, reason: str) -> None:
        """The run's end, for every process started on its own (several hosts, pods): Stop on topic "stop" every
        50 ms for one heartbeat interval (at least 0.15 s). PUB is fire-and-forget, so the repeats reach a
        subscriber that was reconnecting; actors and the broker stop on it. Only a finished run sends it: a
        learner that is interrupted or fails leaves the others running for its restart."""
        end = time.monotonic() + max(0.15, self.cfg.net.heartbeat_s)
        while True:
            self.publish_stop(reason)
            if time.monotonic() >= end:
                return
            time.sleep(0.05)


def main(cfg: Config, spec: EnvSpec, run_dir: Path, stop_event=None) -> int:
    torch.set_num_threads(cfg.learner.torch_threads)
    if not stop_event:
        serve_metrics(cfg.metrics_port_of("learner"), cfg.net.metrics_host)
    learner = Learner(cfg, spec, run_dir, stop_event)
    if stop_event is None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(learner, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(learner, "stopping", True))
    return learner.run()
