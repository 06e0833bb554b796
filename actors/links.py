"""The actor's sockets to the learner and the broker, and what it knows of their health.

Sockets (docs/ARCHITECTURE.md): PUSH fragments -> learner (a full pipe blocks while the learner is alive; actors/outbox.py
never sends to a silent one), SUB weights <- learner (topic per agent, last-value semantics, and "stop"),
DEALER -> learner ROUTER for the current weights, PUSH reports -> broker, SUB snapshots <- broker (topic
"snap/<agent>/"), DEALER -> broker ROUTER for the current snapshot. Both SUB sockets also take topic b"hb".

State requests (the ZeroMQ guide's Clone pattern): subscribe first, then ask the ROUTER for the current
state, then ignore stream messages that are not newer (actors/critical.py applies the sequence rule). The
actor asks at start, again every 2 s until the first weights arrive (the learner may start after it), and
asks the broker again whenever the broker is heard again or restarted.

Liveness (the guide's Paranoid Pirate rule): the learner and the broker publish a Heartbeat every
`net.heartbeat_s`; any message from a peer counts as one, and a peer not heard for 3 intervals is silent
(logged once when it goes silent and once when it returns). A message from a new incarnation of a peer is
delivered flagged `restarted`, so the actor can reset what it counted with the old one.
No call blocks for longer than the timeout it is given.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import zmq
from prometheus_client import Gauge

from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender
from magicmask.protocol.config import Config
from magicmask.protocol.drops import DropLog
from magicmask.protocol.security import for_process
from magicmask.protocol.transport import make_socket, receive, tcp

log = logging.getLogger("actor")

SILENCE = Gauge("magicmask_actor_peer_silence_seconds", "Seconds since the peer (learner, broker) was last heard",
                ["agent", "peer"])
SNAP_STALE = Gauge("magicmask_actor_snapshot_stale",
                   "1 while the broker is silent (> 3 heartbeat intervals): the snapshot in use is stale", ["agent"])
LEARNER_SILENT = Gauge("magicmask_actor_learner_silent", "1 while the learner is silent (> 3 heartbeat intervals)",
                       ["agent"])


class PeerHealth:
    """One peer's liveness as the actor sees it: when it was last heard, whether it is silent, its incarnation."""

    def __init__(self, name: str, agent: int, silent_after: float, when_silent: str):
        self.name, self.agent, self.silent_after, self.when_silent = name, agent, silent_after, when_silent
        self.last_heard = time.monotonic()
        self.alive = True
        self.incarnation: int | None = None

    def silence(self) -> float:
        return time.monotonic() - self.last_heard

    def heard(self, incarnation: int) -> tuple[bool, bool]:
        """Note a message from the peer; returns (restarted: a new incarnation, returned: it was silent)."""
        self.last_heard = time.monotonic()
        old, self.incarnation = self.incarnation, incarnation
        restarted = old is not None and old != incarnation
        if restarted:
            log.warning("agent %d: the %s restarted (incarnation %x -> %x)", self.agent, self.name, old, incarnation)
        returned = not self.alive
        if returned:
            self.alive = True
            log.warning("agent %d: the %s is heard again", self.agent, self.name)
        return restarted, returned

    def check(self) -> None:
        """Mark the peer silent once it has not been heard for `silent_after` seconds."""
        quiet = self.silence()
        if quiet > self.silent_after and self.alive:
            self.alive = False
            log.warning("agent %d: the %s is silent (nothing for %.1fs > 3 x net.heartbeat_s); %s", self.agent,
                        self.name, quiet, self.when_silent)


@dataclass
class Delivery:
    """One message received from a peer."""
    peer: str          # "learner" or "broker"
    msg: M.Message
    stream: bool       # it came on the peer's PUB stream, not as a ROUTER reply
    restarted: bool    # the first message heard from a new incarnation of the peer


class Links:
    """The six sockets, the two peers' health, and the state requests."""

    def __init__(self, cfg: Config, agent: int, sender: Sender, drops: DropLog):
        self.cfg, self.agent, self.sender, self.drops = cfg, agent, sender, drops
        self.max_bytes = int(cfg.net.max_message_mb * 2**20)
        silent_after = 3 * cfg.net.heartbeat_s
        self.learner = PeerHealth("learner", agent, silent_after, "acting on the last weights, queueing fragments")
        self.broker = PeerHealth("broker", agent, silent_after, "the snapshot in use is stale")
        self.last_ask = -float("inf")
        self.frag_sock: zmq.Socket | None = None
        self.weights_sock: zmq.Socket | None = None
        self.learner_req: zmq.Socket | None = None
        self.report_sock: zmq.Socket | None = None
        self.snap_sock: zmq.Socket | None = None
        self.broker_req: zmq.Socket | None = None
        self.poller = zmq.Poller()          # the four receiving sockets (poll)
        self.snap_poller = zmq.Poller()     # the broker's two (poll_snapshots, every step): one zmq_poll call
        self.silence_gauges = {p: SILENCE.labels(agent, p.name) for p in (self.learner, self.broker)}
        self.snapshot_stale = SNAP_STALE.labels(agent)
        self.learner_silent = LEARNER_SILENT.labels(agent)

    def connect(self) -> None:
        cfg, ctx = self.cfg, zmq.Context.instance()
        la, ba = cfg.learner_addr(), cfg.broker_addr()
        sec = for_process(cfg, "actor", self.agent)  # CURVE client keys; .client() is None without keys
        lc, bc = sec.client("learner"), sec.client("broker")
        self.frag_sock = make_socket(ctx, zmq.PUSH, hwm=2, curve=lc)
        self.frag_sock.connect(tcp(la, cfg.net.learner_fragments_port))
        self.weights_sock = self._subscriber(ctx, lc, (b"w/", b"stop", b"hb"), tcp(la, cfg.net.learner_weights_port))
        self.learner_req = make_socket(ctx, zmq.DEALER, max_bytes=self.max_bytes, curve=lc)
        self.learner_req.connect(tcp(la, cfg.net.learner_router_port))
        self.report_sock = make_socket(ctx, zmq.PUSH, hwm=100, curve=bc)
        self.report_sock.connect(tcp(ba, cfg.net.broker_reports_port))
        self.snap_sock = self._subscriber(ctx, bc, (M.snapshot_topic(self.agent), b"hb"),
                                          tcp(ba, cfg.net.broker_snapshots_port))
        self.broker_req = make_socket(ctx, zmq.DEALER, max_bytes=self.max_bytes, curve=bc)
        self.broker_req.connect(tcp(ba, cfg.net.broker_router_port))
        for s in (self.weights_sock, self.learner_req, self.snap_sock, self.broker_req):
            self.poller.register(s, zmq.POLLIN)
        for s in (self.snap_sock, self.broker_req):
            self.snap_poller.register(s, zmq.POLLIN)

    def _subscriber(self, ctx, curve, topics, endpoint) -> zmq.Socket:
        s = make_socket(ctx, zmq.SUB, max_bytes=self.max_bytes, curve=curve)
        for topic in topics:
            s.setsockopt(zmq.SUBSCRIBE, topic)
        s.connect(endpoint)
        return s

    def close(self) -> None:
        for s in (self.frag_sock, self.weights_sock, self.learner_req, self.report_sock, self.snap_sock,
                  self.broker_req):
            if s is not None:
                s.close(linger=0)

    # ---------------- state requests (Clone) ----------------
    def ask_state(self, again_after: float = 0.0) -> None:
        """Ask both ROUTERs for the current weights and snapshot, unless asked within `again_after` seconds."""
        if time.monotonic() - self.last_ask < again_after:
            return
        self.last_ask = time.monotonic()
        self.learner_req.send_multipart(self.sender.pack(M.HEARTBEAT, {"role": "actor", "want": "weights"}))
        self.broker_req.send_multipart(self.sender.pack(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}))

    def ask_snapshot(self) -> None:
        try:
            self.broker_req.send_multipart(self.sender.pack(M.HEARTBEAT, {"role": "actor", "want": "snapshot"}),
                                           flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the broker's pipe is full: the next return asks again

    # ---------------- sending ----------------
    def send_fragment(self, frames: list) -> bool:
        """False when the pipe is full (back-pressure: try again later)."""
        try:
            self.frag_sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def send_report(self, frames: list) -> bool:
        """False when the broker is unreachable and its pipe full: reports are advisory, a later one supersedes."""
        try:
            self.report_sock.send_multipart(frames, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    # ---------------- receiving and liveness (Paranoid Pirate) ----------------
    def poll(self, timeout_ms: int = 0) -> list[Delivery]:
        """Every message waiting on the four receiving sockets, waiting at most timeout_ms for the first."""
        events = dict(self.poller.poll(timeout_ms))
        got = []
        for sock in (self.weights_sock, self.learner_req):
            while sock in events and sock.poll(0):
                msg = receive(sock, "weights", self.drops, self.max_bytes, kinds=(M.WEIGHTS, M.STOP, M.HEARTBEAT),
                              topic=sock is self.weights_sock)
                if msg is not None:
                    got.append(self._heard(self.learner, msg, stream=sock is self.weights_sock))
        if self.snap_sock in events or self.broker_req in events:
            got += self.poll_snapshots()
        self.check_liveness()
        return got

    def poll_snapshots(self) -> list[Delivery]:
        """Snapshots (and heartbeats) already waiting on the broker's two sockets, without waiting and without
        the learner's: the actor takes them at every step, so guidance uses a snapshot as soon as it arrives,
        while weights wait for the fragment's end (a fragment is acted with one policy version). One prebuilt
        poller over both sockets: 4 us per step where a `Socket.poll(0)` of each took 13 (each builds a poller).
        An actor stepped in-process by a test never connected: its poller is empty."""
        if not self.snap_poller.poll(0):
            return []
        got = []
        for sock in (self.snap_sock, self.broker_req):
            while sock.poll(0):
                msg = receive(sock, "snapshots", self.drops, self.max_bytes, kinds=(M.SNAPSHOT, M.HEARTBEAT),
                              context={"K": self.cfg.actor.key_dim, "F": M.finder_bytes(self.cfg.run.agents)},
                              topic=sock is self.snap_sock)
                if msg is not None:
                    got.append(self._heard(self.broker, msg, stream=sock is self.snap_sock))
        return got

    def _heard(self, peer: PeerHealth, msg: M.Message, stream: bool) -> Delivery:
        restarted, returned = peer.heard(msg.incarnation)
        if peer is self.broker and (restarted or returned):
            self.snapshot_stale.set(0)
            self.ask_snapshot()  # Clone pattern: ask for the current state on return
        return Delivery(peer.name, msg, stream, restarted)

    def check_liveness(self) -> None:
        for peer, gauge in self.silence_gauges.items():
            peer.check()
            gauge.set(peer.silence())
        self.snapshot_stale.set(0 if self.broker.alive else 1)
        self.learner_silent.set(0 if self.learner.alive else 1)
