"""The broker process: collects critical reports, keeps the shared top-K buffer, broadcasts snapshots.

Sockets, all bound on cfg.net.host -- the ZeroMQ guide's Clone pattern (server holds PULL +
PUB + ROUTER):
- PULL `broker_reports_port`: `CriticalReport` from actors (and `Stop`, which ends the process). The step clock is the largest `env_steps` any agent reported.
- PUB `broker_snapshots_port`: every time the clock crosses a multiple of `broker.snapshot_every`, one full
  `CriticalSnapshot` per receiving agent on topic b"snap/<receiver>/" (`messages.snapshot_topic`), holding the
  buffer entries that the receiver's topology neighbours found. Receivers with the same neighbours share one
  filtering of the buffer per round (`source_groups`): the full topology filters once for everybody. Each
  message is complete on its own (last-value semantics), so a lost one is healed by the next. Sends go
  through the seeded per-link `Impairment` (link (-1, r)); the poll loop releases delayed ones. PUB drops at its high-water mark rather than block (the guide's HWM
  rule): a slow subscriber loses snapshots, never stalls the broker. With comm.enabled False (the NoComm
  ablation) nothing is broadcast; reports are still received and counted.
- ROUTER `broker_router_port`: a `Heartbeat` {"role": "actor", "want": "snapshot"} from agent r is answered
  with r's current snapshot, unimpaired: the Clone pattern's state request for late joiners.
- SUB to the learner's PUB (`learner_weights_port` at the learner's address, topic b"stop" only): the learner
  sends Stop there when every agent reached `run.total_steps` (and only then), so a run whose processes were
  started one by one (several hosts, pods) ends by itself: the broker stops with exit status 0, as the
  actors do on the same message. A learner that dies or is interrupted sends none: the broker keeps serving
  for its restart.

Sequence numbers: each receiver has its own Sender (same incarnation) and every round advances all of them,
so receiver r sees seq 1, 2, 3, ... on its topic and the seq equals the broadcast round. A state reply
carries the seq of the last broadcast (0 before the first one) without advancing it.

Receiver side (actors/links.py and actors/critical.py implement it): subscribe to b"snap/<r>/" first,
then ask the ROUTER for the current snapshot over a DEALER; apply a snapshot only if its seq is greater than
the last one applied (the stream may repeat what the state reply gave, and reordering may deliver an old one
late); a jump from s to s' > s + 1 counts s' - s - 1 gaps (lost snapshots). Delay = receive time -
body["created_at"].

Liveness: a `Heartbeat` {"role": "broker", "incarnation": ...} on topic b"hb" every `net.heartbeat_s`,
straight to PUB (never impaired: it reports the broker's health, not the channel's). Every header carries the
broker's incarnation; a restarted broker starts its sequence numbers again at 1, and actors accept a lower seq
from a new incarnation (and re-ask the ROUTER for the current snapshot when the broker is heard again).

Delivery delay: PUB/SUB gives the broker no receipt, so snapshot delay is measured by its receiver (actor gauge
`magicmask_actor_snapshot_delay_seconds`); the broker measures the report path: each applied report's
delay is now minus the header's send time (the sender's clock: one host, or synchronised clocks), so it
includes the network and any report-path impairment. Gauge `magicmask_broker_report_delay_seconds{agent}`,
and per snapshot in snapshots.jsonl `report_delay_s` (each agent's latest) beside `agent_steps`. The log's
`finders` are the agent ids of each entry, best first (the wire carries a bitmap).

Every malformed or unacceptable message is dropped and counted (DropLog, sockets "reports", "router" and
"learner") and the broker keeps serving.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import zmq
from prometheus_client import Counter, Gauge

from magicmask.broker.critical_buffer import CriticalBuffer
from magicmask.broker.impairment import Impairment
from magicmask.broker.topology import neighbours
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, encode
from magicmask.protocol.config import Config
from magicmask.protocol.drops import DropLog
from magicmask.protocol.security import for_process, release
from magicmask.protocol.transport import HeartbeatPublisher, make_socket, receive, serve_metrics, tcp

log = logging.getLogger("broker")

REPORTS = Counter("magicmask_broker_reports", "Critical reports applied (after any report-path impairment)",
                  ["agent"])
SNAPSHOTS = Counter("magicmask_broker_snapshots", "Snapshot messages published (after impairment)", ["receiver"])
ROUNDS = Counter("magicmask_broker_snapshot_rounds", "Snapshot rounds (clock crossings of snapshot_every)")
SNAP_SEQ = Gauge("magicmask_broker_snapshot_seq", "Sequence number of the latest snapshot round")
BUFFER_SIZE = Gauge("magicmask_broker_buffer_size", "Entries in the critical-state buffer")
CLOCK = Gauge("magicmask_broker_clock", "Step clock: the largest env_steps reported by any agent")
AGENT_STEPS = Gauge("magicmask_broker_agent_steps", "Latest env_steps reported per agent", ["agent"])
REPORT_DELAY = Gauge("magicmask_broker_report_delay_seconds",
                     "Delivery delay of the agent's latest report: applied minus the sender's send time", ["agent"])
STATE_REQUESTS = Counter("magicmask_broker_state_requests", "Snapshot requests answered on the ROUTER")

DRAIN = 1000  # messages taken from one socket per loop turn, so releases and stop stay timely


def pack_snapshot(sender: Sender, buffer: CriticalBuffer, receiver: int, sources: set[int] | None,
                  clock: int, *, advance: bool = True) -> list:
    """The frames (no topic) of receiver's CriticalSnapshot, filtered by its topology sources.

    `advance` (a broadcast) takes the sender's next seq; a state reply (advance=False) carries the current
    seq, i.e. the last broadcast's, as the Clone pattern requires.
    """
    keys, scores, finders = buffer.entries_for(receiver, sources)
    return _pack(sender, {"keys": keys, "scores": scores, "finders": finders}, receiver, clock, advance)


def _pack(sender: Sender, arrays: dict, receiver: int, clock: int, advance: bool) -> list:
    body = {"created_at": time.time(), "clock": int(clock), "receiver": int(receiver)}
    if advance:
        return sender.pack(M.SNAPSHOT, body, arrays)
    return encode(M.SNAPSHOT, body, arrays, agent=sender.agent, incarnation=sender.incarnation, seq=sender.seq)


def source_groups(buffer: CriticalBuffer, topology: dict[int, set[int]]) -> list[tuple[np.ndarray, list[int]]]:
    """(packed source row, receivers) per distinct source set of the topology: receivers with the same
    neighbours get the same arrays, so a round filters the buffer once per group, not once per receiver."""
    groups: dict[frozenset, list[int]] = {}
    for r, sources in topology.items():
        groups.setdefault(frozenset(sources), []).append(r)
    return [(buffer.source_mask(sources), receivers) for sources, receivers in groups.items()]


def pack_round(senders: dict[int, Sender], buffer: CriticalBuffer, groups, clock: int) -> list[tuple[int, list]]:
    """(receiver, frames with topic) of one broadcast round, receivers in id order; every sender advances."""
    arrays = {}
    for allowed, receivers in groups:
        keys, scores, finders = buffer.entries(allowed)
        for r in receivers:
            arrays[r] = {"keys": keys, "scores": scores, "finders": finders}
    return [(r, [M.snapshot_topic(r), *_pack(senders[r], arrays[r], r, clock, True)]) for r in sorted(arrays)]


def _nbytes(frames) -> int:
    return sum(memoryview(f).nbytes for f in frames)


class Broker:
    def __init__(self, cfg: Config, run_dir: Path, stop_event=None):
        self.cfg, self.run_dir, self.stop_event = cfg, Path(run_dir), stop_event
        self.n = cfg.run.agents
        self.buffer = CriticalBuffer.from_config(cfg)
        self.topology = neighbours(cfg.comm, self.n)
        self.groups = source_groups(self.buffer, self.topology)
        self.impairment = Impairment(cfg.comm)
        incarnation = Sender(-1).incarnation
        self.senders = {r: Sender(-1, incarnation) for r in range(self.n)}
        self.hb_sender = Sender(-1, incarnation)
        self.seq = 0            # broadcast rounds so far (= every receiver's last seq)
        self.clock = 0
        self.agent_steps: dict[int, int] = {}
        self.report_delay: dict[int, float] = {}  # agent -> delivery delay of its latest report (seconds)
        self.reports = 0
        self.published = 0
        self.drops = DropLog(log)
        self.max_bytes = int(cfg.net.max_message_mb * 2**20)
        self.context = {"K": cfg.actor.key_dim}
        self.stopping = False
        self._releasing = False
        self.ctx: zmq.Context | None = None  # sockets and heartbeat: made by bind()
        self.pull: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self.router: zmq.Socket | None = None
        self.learner_sub: zmq.Socket | None = None
        self.hb: HeartbeatPublisher | None = None
        self.poller = zmq.Poller()
        self.snap_file = None
        if cfg.broker.save_snapshots:
            (self.run_dir / "critical").mkdir(parents=True, exist_ok=True)
            self.snap_file = open(self.run_dir / "critical" / "snapshots.jsonl", "a", buffering=1)

    # ---------------- sockets ----------------
    def bind(self) -> None:
        cfg = self.cfg
        keys = for_process(cfg, "broker")
        curve = keys.server()  # None without security.keys_dir
        self.ctx = zmq.Context()
        self.pull = make_socket(self.ctx, zmq.PULL, max_bytes=self.max_bytes, curve=curve)
        self.pub = make_socket(self.ctx, zmq.PUB, curve=curve)  # at the HWM a PUB drops: a slow subscriber never blocks us
        self.router = make_socket(self.ctx, zmq.ROUTER, max_bytes=self.max_bytes, curve=curve)
        self.hb = HeartbeatPublisher(self.pub, self.hb_sender, "broker", cfg.net.heartbeat_s)
        try:
            self.pull.bind(tcp(cfg.net.host, cfg.net.broker_reports_port))
            self.pub.bind(tcp(cfg.net.host, cfg.net.broker_snapshots_port))
            self.router.bind(tcp(cfg.net.host, cfg.net.broker_router_port))
        except zmq.ZMQError as e:
            self.close()
            raise RuntimeError(f"broker: cannot bind on {cfg.net.host} ports {cfg.net.broker_reports_port}, "
                               f"{cfg.net.broker_snapshots_port}, {cfg.net.broker_router_port}: {e}") from e
        self.learner_sub = make_socket(self.ctx, zmq.SUB, max_bytes=self.max_bytes, curve=keys.client("learner"))
        self.learner_sub.setsockopt(zmq.SUBSCRIBE, b"stop")
        self.learner_sub.connect(tcp(cfg.learner_addr(), cfg.net.learner_weights_port))
        self.poller.register(self.pull, zmq.POLLIN)
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(self.learner_sub, zmq.POLLIN)
        log.info("broker on %s: reports %d, snapshots %d, state requests %d; %d agents, topology %s, comm %s",
                 cfg.net.host, cfg.net.broker_reports_port, cfg.net.broker_snapshots_port,
                 cfg.net.broker_router_port, self.n, cfg.comm.topology, "on" if cfg.comm.enabled else "OFF (NoComm)")

    def close(self) -> None:
        for s in (self.pull, self.pub, self.router, self.learner_sub):
            if s is not None:
                s.close(linger=0)
        if self.ctx is not None:
            release(self.ctx)  # the CURVE authenticator's thread, if any, holds sockets of ctx
            self.ctx.term()
            self.ctx = None
        if self.snap_file is not None:
            self.snap_file.close()
            self.snap_file = None

    # ---------------- loop ----------------
    def should_stop(self) -> bool:
        return self.stopping or (self.stop_event is not None and self.stop_event.is_set())

    def run(self) -> None:
        self.bind()
        try:
            while not self.should_stop():
                self.hb.beat()
                nd = self.impairment.next_due()
                timeout = max(1, min(100, int(self.cfg.net.heartbeat_s * 500)))
                if nd is not None:
                    timeout = min(timeout, max(0, math.ceil((nd - time.monotonic()) * 1000)))
                events = dict(self.poller.poll(timeout))
                if self.pull in events:
                    self._drain(self.pull, self.on_pull)
                if self.router in events:
                    self._drain(self.router, self.on_router)
                if self.learner_sub in events:
                    self._drain(self.learner_sub, self.on_learner)
                self.release()
        finally:
            log.info("broker stopping: %d reports, %d snapshot rounds, %d messages dropped",
                     self.reports, self.seq, self.drops.total())
            self.close()

    def _drain(self, sock, handler) -> None:
        for _ in range(DRAIN):
            if self.should_stop() or not sock.poll(0):
                return
            handler()

    def _receive(self, sock, name, kinds, identity=False, topic=False):
        try:
            return receive(sock, name, self.drops, self.max_bytes, self.context, kinds=kinds, identity=identity,
                           topic=topic)
        except zmq.ZMQError:
            raise
        except Exception as e:  # receive promises ProtocolError only; never let bad input kill the broker
            self.drops.drop(name, "error", f"{type(e).__name__}: {e}")
            return (None, None) if identity else None

    def on_pull(self) -> None:
        msg = self._receive(self.pull, "reports", (M.REPORT, M.STOP))
        if msg is None:
            return
        if msg.kind == M.STOP:
            log.info("stop received (sender %d): %s", msg.agent, msg.body.get("reason"))
            self.stopping = True
            return
        if not 0 <= msg.agent < self.n:
            self.drops.drop("reports", "agent", f"report from agent {msg.agent}, run has {self.n} agents")
            return
        if self.cfg.comm.impair_reports:
            size = sum(a.nbytes for a in msg.arrays.values())
            self.impairment.submit((msg.agent, -1), msg, size)
            return
        self.apply_report(msg)

    def on_learner(self) -> None:
        msg = self._receive(self.learner_sub, "learner", (M.STOP,), topic=True)
        if msg is not None:
            log.info("the learner ended the run: %s", msg.body.get("reason"))
            self.stopping = True

    def on_router(self) -> None:
        ident, msg = self._receive(self.router, "router", (M.HEARTBEAT,), identity=True)
        if msg is None:
            return
        if msg.body.get("want") != "snapshot":
            self.drops.drop("router", "request", f"unknown request {msg.body.get('want')!r:.40}")
            return
        r = msg.agent
        if not 0 <= r < self.n:
            self.drops.drop("router", "agent", f"snapshot request from agent {r}, run has {self.n} agents")
            return
        # NoComm ablation: an empty snapshot (sources = nobody), so a waiting client is answered, nothing shared
        sources = self.topology[r] if self.cfg.comm.enabled else set()
        frames = pack_snapshot(self.senders[r], self.buffer, r, sources, self.clock, advance=False)
        self.router.send_multipart([ident, *frames], copy=False)  # ROUTER drops an unroutable reply silently
        STATE_REQUESTS.inc()

    # ---------------- state ----------------
    def apply_report(self, msg: M.Message) -> None:
        a, steps = msg.agent, int(msg.body["env_steps"])
        self.reports += 1
        REPORTS.labels(agent=str(a)).inc()
        # the header's send time (actor's clock) to now: network, queueing and any report-path impairment
        self.report_delay[a] = max(0.0, time.time() - msg.sent_at)
        REPORT_DELAY.labels(agent=str(a)).set(self.report_delay[a])
        self.agent_steps[a] = max(self.agent_steps.get(a, 0), steps)
        AGENT_STEPS.labels(agent=str(a)).set(self.agent_steps[a])
        old = self.clock
        self.clock = max(self.clock, steps)
        CLOCK.set(self.clock)
        self.buffer.add(msg.arrays["keys"], msg.arrays["scores"], a, self.clock)
        BUFFER_SIZE.set(len(self.buffer))
        every = self.cfg.broker.snapshot_every
        crossed = self.clock // every - old // every
        if crossed > 0:
            # One full snapshot however many multiples a report jumped (each is complete on its own); the
            # scores age once per multiple crossed, after packing, so a snapshot shows undecayed fresh scores.
            self.broadcast()
            self.buffer.age(crossed)

    def broadcast(self) -> None:
        if not self.cfg.comm.enabled:
            return
        self.seq += 1
        rounds = pack_round(self.senders, self.buffer, self.groups, self.clock)
        now = time.monotonic()   # after packing, which stamps created_at: the delay a receiver measures is >= the latency
        dropped = []
        for r, frames in rounds:
            if not self.impairment.submit((-1, r), frames, _nbytes(frames), now):
                dropped.append(r)
        ROUNDS.inc()
        SNAP_SEQ.set(self.seq)
        if self.snap_file is not None:
            _, scores, finders = self.buffer.entries(None)
            self.snap_file.write(json.dumps({
                "seq": self.seq, "clock": self.clock, "time": time.time(), "n": len(scores),
                "finders": [M.finder_ids(f) for f in finders], "scores": [round(float(s), 6) for s in scores],
                "dropped": dropped, "agent_steps": {str(a): n for a, n in sorted(self.agent_steps.items())},
                "report_delay_s": {str(a): round(d, 6) for a, d in sorted(self.report_delay.items())}}) + "\n")
        self.release()

    def release(self) -> None:
        """Hand over every impaired message whose time has come (snapshots to PUB, reports to the buffer)."""
        if self._releasing:  # a released report may broadcast, which releases: one level is enough
            return
        self._releasing = True
        try:
            while due := self.impairment.due():
                for link, payload in due:
                    if link[1] == -1:
                        self.apply_report(payload)
                    else:
                        self.pub.send_multipart(payload, copy=False)
                        self.published += 1
                        SNAPSHOTS.labels(receiver=str(link[1])).inc()
        finally:
            self._releasing = False


def main(cfg: Config, run_dir: Path, stop_event=None) -> int:
    """Run the broker until Stop, SIGTERM/SIGINT (process) or stop_event (in-process tests)."""
    serve_metrics(cfg.metrics_port_of("broker"), cfg.net.metrics_host)
    broker = Broker(cfg, run_dir, stop_event)
    if stop_event is None:
        def _stop(signum, _frame):
            log.info("signal %d: stopping", signum)
            broker.stopping = True
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    broker.run()
    return 0
