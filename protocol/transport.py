"""Sockets and addresses shared by every role: tcp endpoints from the config, sockets that never block
shutdown (linger 0), and `receive`, which decodes, validates and counts drops in one place so that a
malformed message never crashes a process."""
from __future__ import annotations

import socket
import time
from typing import Iterable

import zmq
from prometheus_client import disable_created_metrics, start_http_server

from magicmask.protocol.codec import decode
from magicmask.protocol.drops import DropLog
from magicmask.protocol.messages import HEARTBEAT, KINDS, Message, ProtocolError, validate


def tcp(host: str, port: int) -> str:
    """A ZeroMQ tcp endpoint; an IPv6 literal goes in brackets (net.host=::1 -> tcp://[::1]:port)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def make_socket(ctx: zmq.Context, kind: int, *, hwm: int = 1000, max_bytes: int | None = None,
                curve=None) -> zmq.Socket:
    """A socket with linger 0 (ctx.term() never hangs) and the high-water marks set.

    `curve`: a protocol.security.SocketSecurity (from `for_process(cfg, role).server()` or `.client(peer)`)
    to authenticate and encrypt the socket with CURVE; None: plain ZeroMQ (security.keys_dir empty).

    At the high-water mark ZeroMQ's PUB and ROUTER drop and PUSH and DEALER block (the guide's rule): that
    is the full-queue rule of every pipe in the system, chosen per socket type by the caller.
    """
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IPV6, 1)   # IPv6 addresses too (net.host=::1); IPv4 ones work as before
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.RCVHWM, hwm)
    if max_bytes:
        # Hard guard against memory exhaustion: libzmq disconnects a peer that sends a frame over it.
        # The message limit itself is checked (and the drop counted) by `receive`, below twice this size.
        s.setsockopt(zmq.MAXMSGSIZE, int(2 * max_bytes))
    if curve is not None:
        curve.apply(s)
    return s


def receive(sock: zmq.Socket, name: str, drops: DropLog, max_bytes: int, context: dict | None = None,
            kinds: Iterable[str] = KINDS, topic: bool = False, identity: bool = False):
    """Receive one multipart message without blocking and return a validated Message, or None.

    With `topic` the first frame (a PUB topic) is stripped; with `identity` (ROUTER) the routing id is
    returned as well: (identity, Message | None). Every failure is dropped and counted under `name`.
    """
    try:
        frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:  # a CURVE socket can poll readable before its message is whole: nothing to read yet
        return (None, None) if identity else None
    ident = None
    if identity:
        ident, frames = frames[0].bytes, frames[1:]
    if topic:
        frames = frames[1:]
    try:
        msg: Message | None = validate(decode(frames, max_bytes), context or {}, tuple(kinds))
    except ProtocolError as e:
        drops.drop(name, e.cause, str(e))
        msg = None
    return (ident, msg) if identity else msg


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free TCP ports on `host`, for runs that must not collide (tests, sweeps, benchmarks):
    all n are held open until every one is picked, so they differ."""
    socks = []
    try:
        return [_bind(host, 0, socks) for _ in range(n)]
    finally:
        for s in socks:
            s.close()


def free_run_ports(n_sockets: int, n_metrics: int, host: str = "127.0.0.1", tries: int = 100) -> tuple[list[int], int]:
    """Ports for one run on this machine: `n_sockets` free ports for its sockets and the first of `n_metrics`
    consecutive free ports for its metrics endpoints (net.metrics_port: broker, learner, one per agent), all
    distinct. Every port is held open until all are picked, so a socket port never lands inside the metrics
    block (free_ports alone checks each port, not the block after net.metrics_port)."""
    for _ in range(tries):
        socks = []
        try:
            base = _bind(host, 0, socks)
            if base + n_metrics > 65536:
                continue
            for port in range(base + 1, base + n_metrics):
                _bind(host, port, socks)
            ports = [_bind(host, 0, socks) for _ in range(n_sockets)]
            return ports, base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {n_metrics} consecutive free ports on {host} after {tries} tries")


def _bind(host: str, port: int, socks: list) -> int:
    """Bind a TCP socket on host:port (port 0: the kernel picks), IPv4 or IPv6 as the host is (net.host=::1)."""
    family = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0][0]
    s = socket.socket(family, socket.SOCK_STREAM)
    socks.append(s)
    s.bind((host.strip("[]"), port))
    return s.getsockname()[1]


class HeartbeatPublisher:
    """The guide's heartbeat: a `Heartbeat` {"role", "incarnation"} on a PUB socket's topic b"hb" at most
    every `interval_s` (call `beat()` often; it sends only when the interval has passed)."""

    def __init__(self, pub: zmq.Socket, sender, role: str, interval_s: float):
        self.pub, self.sender, self.role, self.interval_s = pub, sender, role, interval_s
        self.last = -float("inf")

    def beat(self, policy_version: int = -1) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return
        self.last = now
        body = {"role": self.role, "incarnation": self.sender.incarnation}
        self.pub.send_multipart([b"hb", *self.sender.pack(HEARTBEAT, body, policy_version=policy_version)])


def serve_metrics(port: int, host: str) -> None:
    """Serve this process's Prometheus metrics on host:port (port 0: off). prometheus_client's
    `<counter>_created` series are switched off: docs/PROMETHEUS.md lists exactly what is exposed."""
    if port:
        disable_created_metrics()
        start_http_server(port, addr=host)
