"""ZeroMQ CURVE security: authentication and encryption of every socket, with an allow-list of client keys
(the "Ironhouse" model of the ZeroMQ guide and pyzmq's examples/security/ironhouse.py).

Keys folder (made by `magicmask keys generate DIR [--agents N]`):

    DIR/public_keys/broker.key             public keys only (ZeroMQ certificate files). This folder is the
    DIR/public_keys/learner.key            allow-list: a server accepts a client only when the client's
    DIR/public_keys/actor-0.key ...        public key is in a *.key file here. Safe to copy anywhere.
    DIR/private_keys/broker.key_secret     one key pair per process (public + secret key). Give each host
    DIR/private_keys/learner.key_secret    or pod only the private key(s) of the processes it runs.
    DIR/private_keys/actor-0.key_secret ...

Roles: the broker and the learner bind (PULL, PUB, ROUTER) and are CURVE servers: their sockets carry the
server's secret key, and one ZAP authenticator thread per ZeroMQ context (one per process in normal runs)
admits only the public keys found in public_keys/. Actors connect (PUSH, SUB, DEALER) and are CURVE clients:
their sockets carry the actor's own key pair and the server's public key (public_keys/broker.key or
learner.key), so an actor also knows it talks to the real server. A client whose key is not in the
allow-list, or that speaks plain (NULL) ZeroMQ, fails the handshake: nothing it pushes arrives, and a PUB
sends it nothing. The allow-list is read when a process starts: restart the servers after adding keys.

Without keys (`security.keys_dir` empty) nothing is authenticated or encrypted, so binding to a
non-loopback `net.host` is refused at config validation unless `net.insecure=true`.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from magicmask.protocol.errors import ConfigError

log = logging.getLogger("security")
SERVERS = ("broker", "learner")
PUBLIC, PRIVATE = "public_keys", "private_keys"


# ---------------------------------------------------------------- key files
def key_name(role: str, agent: int | None = None) -> str:
    """The default key name of a process: broker, learner or actor-<agent id>."""
    if role == "actor":
        if agent is None:
            raise ValueError("an actor's key name needs its agent id")
        return f"actor-{agent}"
    if role not in SERVERS:
        raise ValueError(f"unknown role {role!r}: broker, learner or actor")
    return role


def default_names(agents: int) -> list[str]:
    return [*SERVERS, *(key_name("actor", i) for i in range(agents))]


def generate_keys(keys_dir: str | Path, names: list[str] | tuple[str, ...], force: bool = False) -> dict[str, Path]:
    """Make one CURVE key pair per name: DIR/public_keys/NAME.key and DIR/private_keys/NAME.key_secret.

    Existing pairs are kept (so `--agents 8` after `--agents 4` only adds actor-4..7) unless `force`.
    Returns {name: path of its secret file} for every name, new or kept. Private files are mode 0600.
    """
    keys_dir = Path(keys_dir)
    pub, priv = keys_dir / PUBLIC, keys_dir / PRIVATE
    pub.mkdir(parents=True, exist_ok=True)
    priv.mkdir(parents=True, exist_ok=True)
    os.chmod(priv, 0o700)
    out = {}
    for name in names:
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            raise ValueError(f"bad key name {name!r}")
        secret = priv / f"{name}.key_secret"
        if secret.is_file() and (pub / f"{name}.key").is_file() and not force:
            out[name] = secret
            continue
        with tempfile.TemporaryDirectory(dir=keys_dir) as tmp:
            public_file, secret_file = zmq.auth.create_certificates(tmp, name)
            os.chmod(secret_file, 0o600)
            shutil.move(public_file, pub / f"{name}.key")
            shutil.move(secret_file, secret)
        out[name] = secret
    return out


def load_public(keys_dir: str | Path, name: str) -> bytes:
    path = Path(keys_dir) / PUBLIC / f"{name}.key"
    if not path.is_file():
        raise ConfigError(f"security.keys_dir={str(keys_dir)!r}: no public key {str(path)!r} "
                          f"(make it with `magicmask keys generate {keys_dir}`)")
    public, _ = zmq.auth.load_certificate(path)
    return public


def load_pair(keys_dir: str | Path, name: str) -> tuple[bytes, bytes]:
    path = Path(keys_dir) / PRIVATE / f"{name}.key_secret"
    if not path.is_file():
        raise ConfigError(f"security.keys_dir={str(keys_dir)!r}: no key pair {str(path)!r} for this process "
                          f"(security.key_name or its role's default name; make it with "
                          f"`magicmask keys generate {keys_dir}` or copy it to this host)")
    public, secret = zmq.auth.load_certificate(path)
    if not secret:
        raise ConfigError(f"{str(path)!r} holds no secret key")
    return public, secret


# ---------------------------------------------------------------- config rule
def is_loopback(host: str) -> bool:
    h = host.strip().strip("[]").lower()
    if h in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # 0.0.0.0, *, an interface name or a DNS name: reachable from elsewhere


def check_config(cfg) -> None:
    """Config validation rule: no unauthenticated bind beyond loopback unless asked for explicitly."""
    if not cfg.security.keys_dir and not cfg.net.insecure and not is_loopback(cfg.net.host):
        raise ConfigError(
            f"net.host={cfg.net.host!r} is not a loopback address and security.keys_dir is empty: the broker and "
            f"the learner would accept anyone's traffic unencrypted. Make CURVE keys with `magicmask keys "
            f"generate DIR` and set security.keys_dir=DIR, or set net.insecure=true to run without security")


# ---------------------------------------------------------------- sockets
class AllowList:
    """The ZAP credentials check: a client is admitted iff its public key is in a *.key file of the folder.
    Refusals are logged as warnings (once a minute per key) with the key, and counted in `denied`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.keys: dict[bytes, str] = {}
        for f in sorted(folder.glob("*.key")):
            public, _ = zmq.auth.load_certificate(f)
            if public:
                self.keys[public] = f.stem
        self.denied = 0
        self._last_warned: dict[bytes, float] = {}

    def callback(self, domain: str, z85_key: bytes) -> bool:
        if z85_key in self.keys:
            return True
        self.denied += 1
        now = time.monotonic()
        if now - self._last_warned.get(z85_key, -1e9) > 60:
            self._last_warned[z85_key] = now
            log.warning("refused a connection: CURVE client key %s is not in the allow-list %s (%d keys); "
                        "add its public key file there and restart to admit it",
                        z85_key.decode(errors="replace"), self.folder, len(self.keys))
        return False


_auth_lock = threading.Lock()
_authenticators: dict[int, tuple[zmq.Context, ThreadAuthenticator, str]] = {}


def _ensure_authenticator(ctx: zmq.Context, allow_dir: Path) -> None:
    """One ZAP authenticator per context, admitting the CURVE public keys in allow_dir (and nothing else)."""
    with _auth_lock:
        have = _authenticators.get(id(ctx))
        if have is not None and have[0] is ctx and not ctx.closed:
            if have[2] != str(allow_dir):
                raise RuntimeError(f"one ZeroMQ context cannot use two allow-lists: {have[2]} and {allow_dir}")
            return
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=AllowList(allow_dir))
        _authenticators[id(ctx)] = (ctx, auth, str(allow_dir))


def release(ctx: zmq.Context | None) -> None:
    """Stop the context's authenticator, if any (call before ctx.term(): its thread holds sockets)."""
    if ctx is None:
        return
    with _auth_lock:
        have = _authenticators.pop(id(ctx), None)
    if have is not None and have[0] is ctx:
        have[1].stop()


@dataclass(frozen=True)
class SocketSecurity:
    """CURVE settings of one socket: a server (server_key None) or a client of the server with server_key."""
    public: bytes
    secret: bytes
    allow_dir: Path
    server_key: bytes | None = None

    def apply(self, sock: zmq.Socket) -> None:
        """Set before bind/connect (make_socket does it at creation)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        if self.server_key is None:
            # the authenticator runs before the socket can bind: with no ZAP handler libzmq would admit anyone
            _ensure_authenticator(sock.context, self.allow_dir)
            sock.curve_server = True
        else:
            sock.curve_serverkey = self.server_key


class ProcessSecurity:
    """The CURVE keys of one process, from `security.keys_dir` (disabled when it is empty)."""

    def __init__(self, cfg, role: str, agent: int | None = None):
        self.keys_dir = cfg.security.keys_dir
        self.enabled = bool(self.keys_dir)
        self.name = cfg.security.key_name or key_name(role, agent)
        if not self.enabled:
            return
        allow = Path(self.keys_dir) / PUBLIC
        if not allow.is_dir():
            raise ConfigError(f"security.keys_dir={self.keys_dir!r}: no {PUBLIC}/ folder (the allow-list); "
                              f"make the keys with `magicmask keys generate {self.keys_dir}`")
        self.allow_dir = allow.resolve()
        self.public, self.secret = load_pair(self.keys_dir, self.name)

    def server(self) -> SocketSecurity | None:
        """For a binding socket of the broker or the learner."""
        if not self.enabled:
            return None
        return SocketSecurity(self.public, self.secret, self.allow_dir)

    def client(self, server: str) -> SocketSecurity | None:
        """For a socket that connects to `server` (broker or learner)."""
        if not self.enabled:
            return None
        return SocketSecurity(self.public, self.secret, self.allow_dir, load_public(self.keys_dir, server))


def for_process(cfg, role: str, agent: int | None = None) -> ProcessSecurity:
    return ProcessSecurity(cfg, role, agent)
