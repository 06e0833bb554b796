"""Several hosts on one machine, for runs that cross a real network stack: N network namespaces ("hosts"), each
with a veth pair to a bridge in one more namespace (the switch), host i at <net>.(i+1)/24 with lo up; plus the
CURVE keys such a run needs (the only safe way to bind beyond loopback). Used by tests/system/test_multihost.py
and deploy/commstudy_hosts.py.

    from deploy.netns import Hosts, generate_keys
    with Hosts(3) as hosts:                       # NetnsUnavailable (the reason) where namespaces cannot be made
        hosts.popen(1, [sys.executable, ...])     # a process in host 1's namespace
        hosts.address(0)                          # '10.77.0.1'
    # every namespace is deleted here, also on an exception (and what was made before a failed setup)

Needs root and `ip` (iproute2) with `ip netns`. Namespace names carry the pid, so parallel users do not
collide; the addresses live in the namespaces, so two sets with the same addresses do not either.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

NET = "10.77.0"
ROOT = Path(__file__).resolve().parents[1]


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here; the message says why (tests skip with it)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ip ARGS`; RuntimeError with ip's message when it fails and `check`."""
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def check_available() -> None:
    """NetnsUnavailable unless this process may make namespaces: root, `ip` installed, `ip netns` working."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("`ip` (iproute2) is not installed")
    res = ip("netns", "list", check=False)
    if res.returncode:
        raise NetnsUnavailable(f"`ip netns` is unavailable: {res.stderr.strip()}")


class Hosts:
    """N hosts on one bridge (a context manager: made on enter, deleted on exit). `names[i]` is host i's
    namespace, `address(i)` its address."""

    def __init__(self, n: int = 3, net: str = NET, tag: str | None = None):
        if not 1 <= n <= 250:
            raise ValueError(f"Hosts: n={n}: allowed 1..250")
        self.net, self.tag = net, tag or f"mm{os.getpid()}"
        self.switch = f"{self.tag}sw"
        self.names = [f"{self.tag}h{i}" for i in range(n)]
        self.made: list[str] = []

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> str:
        return self.names[i]

    def address(self, i: int) -> str:
        return f"{self.net}.{i + 1}"

    def create(self) -> Hosts:
        """Make the switch and the hosts; on any failure delete what was made and raise (NetnsUnavailable when
        the environment allows no namespace at all, RuntimeError otherwise)."""
        check_available()
        try:
            res = ip("netns", "add", self.switch, check=False)
            if res.returncode:
                raise NetnsUnavailable(f"`ip netns add` fails here: {res.stderr.strip()}")
            self.made.append(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
            for i, ns in enumerate(self.names):
                ip("netns", "add", ns)
                self.made.append(ns)
                ip("-n", self.switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
                ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        """Delete every namespace this object made (their veths and the bridge go with them)."""
        for ns in reversed(self.made):
            ip("netns", "del", ns, check=False)
        self.made.clear()

    def __enter__(self) -> Hosts:
        return self.create()

    def __exit__(self, *exc) -> None:
        self.delete()

    def command(self, i: int, argv: list[str]) -> list[str]:
        """argv run in host i's namespace (`ip netns exec` execs: a Popen's pid is argv's process)."""
        return ["ip", "netns", "exec", self.names[i], *argv]

    def run(self, i: int, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(i, argv), **kw)

    def popen(self, i: int, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.command(i, argv), **kw)

    def netem(self) -> tuple[bool, str]:
        """Whether the kernel has the netem qdisc, tried in host 0 (`tc qdisc add dev eth0 root netem delay
        1ms`, removed again): (found, what was seen)."""
        if shutil.which("tc") is None:
            return False, "`tc` (iproute2) is not installed"
        res = self.run(0, ["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms"],
                       capture_output=True, text=True)
        if res.returncode:
            return False, f"`tc qdisc add dev eth0 root netem delay 1ms` says {res.stderr.strip()!r}"
        self.run(0, ["tc", "qdisc", "del", "dev", "eth0", "root"], capture_output=True, text=True)
        return True, "`tc qdisc add dev eth0 root netem delay 1ms` works"


def generate_keys(keys_dir: str | Path, agents: int, names=(), timeout: float = 60) -> Path:
    """CURVE key pairs for the broker, the learner, actors 0..agents-1 and every extra client in `names`, made by
    `magicmask keys generate` (existing pairs are kept); RuntimeError with its message when it fails."""
    d = Path(keys_dir)
    extra = [a for n in names for a in ("--name", n)]
    res = subprocess.run([sys.executable, "-m", "magicmask.cli", "keys", "generate", str(d), "--agents",
                          str(agents), *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise RuntimeError(f"magicmask keys generate {d}: {res.stderr.strip() or res.stdout.strip()}")
    return d
