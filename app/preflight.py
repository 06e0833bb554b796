"""What `magicmask run` settles before it starts any process, so that the machine's state (ports other programs
hold, a read-only or full disk) is reported in one line instead of a child's traceback later.

Ports: on a loopback `net.host` (with `net.auto_ports`) every socket port still at its default is replaced by a
free one, and so is the metrics block (broker, learner, one per agent) when `net.metrics_port` is at its default
and `net.metrics_host` is loopback: the run's config.yaml, which every child reads, then holds the ports taken,
and a second run on the same machine takes others. Every port the run will bind is then probed: one in use
(a port the user set, or any port on another host) stops the run, naming the process that holds it when psutil
can tell.

Disk: the run directory is made and a small probe file written, fsync'ed and removed in it (a read-only or
full file system fails here, not at the first checkpoint), and its disk must have `run.min_free_mb` free.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

from magicmask.protocol import config as C
from magicmask.protocol.security import is_loopback
from magicmask.protocol.transport import free_run_ports


class CannotStart(RuntimeError):
    """This machine cannot start the run as configured (a port in use, a run directory it cannot write or that
    lacks room); nothing was started."""


def take_ports(cfg: C.Config) -> list[str]:
    """Replace the ports net.auto_ports may choose (above) by free ones, in cfg; returns the `--set` items made."""
    net, default = cfg.net, C.NetConfig()
    if not net.auto_ports:
        return []
    sockets = [f for f in C.PORT_FIELDS if is_loopback(net.host) and getattr(net, f) == getattr(default, f)]
    metrics = bool(net.metrics_port) and net.metrics_port == default.metrics_port and is_loopback(net.metrics_host)
    if not sockets and not metrics:
        return []
    block = 2 + cfg.run.agents
    kept = {getattr(net, f) for f in C.PORT_FIELDS if f not in sockets}
    if net.metrics_port and not metrics:
        kept |= {port for _, port, _ in metrics_ports(cfg)}
    for _ in range(20):   # the kernel's picks avoid ports in use, not the ones kept: retry on a clash
        ports, base = free_run_ports(len(sockets), block, net.host)
        taken = set(ports) | (set(range(base, base + block)) if metrics else set())
        if not taken & kept:
            break
    else:
        raise CannotStart(f"no free ports on {net.host} apart from the configured {sorted(kept)}")
    items = [f"net.{f}={p}" for f, p in zip(sockets, ports)] + ([f"net.metrics_port={base}"] if metrics else [])
    for item in items:
        C.set_value(cfg, *C.parse_override(item))
    C.validate(cfg)
    return items


def metrics_ports(cfg: C.Config) -> list[tuple[str, int, str]]:
    """(how the config names it, port, host) of every metrics endpoint of the run ([] with metrics off)."""
    if not cfg.net.metrics_port:
        return []
    out = {cfg.metrics_port_of("broker"): "net.metrics_port (the broker's metrics)",
           cfg.metrics_port_of("learner"): "net.metrics_port+1 (the learner's metrics)"}
    for i in range(cfg.run.agents):   # with net.actor_metrics_port every actor names one port: probe it once
        out.setdefault(cfg.metrics_port_of("actor", i),
                       "net.actor_metrics_port (every actor's metrics)" if cfg.net.actor_metrics_port
                       else f"net.metrics_port+{2 + i} (actor {i}'s metrics)")
    return [(what, port, cfg.net.metrics_host) for port, what in out.items()]


def check_ports(cfg: C.Config) -> None:
    """CannotStart naming the first port of the run that cannot be bound, and what holds it."""
    wanted = [(f"net.{f}", getattr(cfg.net, f), cfg.net.host) for f in C.PORT_FIELDS] + metrics_ports(cfg)
    for what, port, host in wanted:
        err = bind_error(host, port)
        if err is None:
            continue
        where = f"port {port} on {host} ({what})"
        if err.errno != errno.EADDRINUSE:
            raise CannotStart(f"{where} cannot be bound: {err.strerror or err}")
        hint = ("choose another port, or leave the net ports at their defaults so that `magicmask run` takes "
                "free ones (net.auto_ports)" if is_loopback(host) else "stop it or choose another port")
        raise CannotStart(f"{where} is in use by {holder(port)}: {hint}")


def bind_error(host: str, port: int) -> OSError | None:
    """Why a listening socket could not bind host:port now (None: it could). SO_REUSEADDR as ZeroMQ and the
    metrics server set it, so a port left in TIME_WAIT by an earlier run counts as free, as it is for them."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as e:
        return e
    return None


def holder(port: int) -> str:
    """Who listens on a TCP port: 'pid N (command line)' when psutil is installed and may see it, else a phrase."""
    try:
        import psutil
    except ImportError:
        return "another process (install psutil to name it)"
    try:
        pids = {c.pid for c in psutil.net_connections("inet") if c.laddr and c.laddr.port == port
                and c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        pids = set()
    for pid in sorted(p for p in pids if p):
        try:
            cmd = " ".join(psutil.Process(pid).cmdline()) or psutil.Process(pid).name()
        except psutil.Error:
            continue
        return f"pid {pid} ({' '.join(cmd.split())[:160]})"
    return "another process (not visible to this user)"


def check_run_dir(run_dir: Path, min_free_mb: int) -> None:
    """Make the run directory and prove that it takes a durable write and that its disk has room; CannotStart
    names the folder and what failed."""
    probe = run_dir / ".write-probe"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as e:
        raise CannotStart(f"run directory {run_dir} cannot be written: {e.strerror or e}") from e
    free_mb = shutil.disk_usage(run_dir).free / 2**20
    if free_mb < min_free_mb:
        raise CannotStart(f"run directory {run_dir}: its disk has {free_mb:.1f} MiB free, less than "
                          f"run.min_free_mb={min_free_mb}: free some space, choose another --run-dir, or lower "
                          f"run.min_free_mb")
