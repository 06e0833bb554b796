"""Plain helpers shared by several test modules (fixtures live in conftest.py; no test module imports another)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import numpy as np

from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.transport import free_run_ports

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(args, timeout=120):
    """Run headless Chromium with a throw-away profile (the report's browser checks)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HOME": profile})


def free_port_overrides(metrics: bool = False, agents: int = 8) -> list[str]:
    """`--set` items putting a run's six sockets on free loopback ports and, when asked for, its metrics on a
    free block (broker, learner, one per agent; metrics off otherwise)."""
    ports, base = free_run_ports(len(C.PORT_FIELDS), 2 + agents)
    return C.port_overrides(ports, base if metrics else 0)


def fragment_columns(cfg, spec, obs_shape=None):
    """A valid all-zero Fragment's columns by name (M.FRAGMENT_COLUMNS) for cfg's T x E and spec's shapes
    (uniform legal policy, m = 0.5); `fragment_wire` packs them as the actor sends them."""
    T, E, A = cfg.actor.fragment_len, cfg.env.copies, spec.n_actions
    cols = {"obs": np.zeros((T, E, *(obs_shape or spec.obs_shape)), spec.obs_dtype),
            "actions": np.zeros((T, E), np.int64), "legal": np.ones((T, E, A), bool),
            **{n: np.zeros((T, E), np.float32) for n in M.FRAGMENT_FLOATS},
            **{n: np.zeros((T, E), bool) for n in M.FRAGMENT_FLAGS},
            **{n: np.zeros(E, np.float32) for n in M.FRAGMENT_BOOT}}
    cols["logp_mu"][:] = cols["logp_pi"][:] = -np.log(A)
    cols["m"][:] = 0.5
    return cols


def fragment_wire(columns: dict) -> dict:
    """A Fragment's wire arrays (protocol/messages.py: its columns of one dtype stacked as one block)."""
    wire = {k: columns[k] for k in ("obs", "actions", "legal")}
    for block, names in (("floats", M.FRAGMENT_FLOATS), ("flags", M.FRAGMENT_FLAGS), ("boot", M.FRAGMENT_BOOT)):
        wire[block] = np.stack([np.asarray(columns[n]) for n in names])
    return wire


def fragment_arrays(cfg, spec, obs_shape=None):
    """A valid all-zero Fragment's wire arrays (see fragment_columns)."""
    return fragment_wire(fragment_columns(cfg, spec, obs_shape))


def recv(sock, timeout_ms=5000):
    """The next multipart message on `sock`, or None after timeout_ms."""
    if not sock.poll(timeout_ms):
        return None
    return sock.recv_multipart()


def wait_for(cond, timeout=20.0, step=0.02):
    """Wait for a condition rather than a fixed time: True as soon as cond() holds, False after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# How long a test waits for something asynchronous (a message, a subscription, a thread or a process reaching a
# state) before it calls that a failure. A bound for a broken run, never a speed check: it costs nothing when
# things work (every wait returns as soon as its condition holds), and CI runs the suite on 2 cores beside other
# jobs, where what takes 50 ms on an idle machine can take many seconds.
PATIENCE = 120.0


def wait_until(cond, timeout=PATIENCE, what="the condition", step=0.02):
    """Poll cond() every `step` s until it holds and return its value; after `timeout` s fail the test, saying
    what was awaited and for how long. `what`: a string, or a callable giving one (to report the state at the
    time of failure)."""
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        waited = time.monotonic() - t0
        if waited >= timeout:
            raise AssertionError(f"waited {waited:.1f} s for {what() if callable(what) else what}")
        time.sleep(step)


def end_run(proc: subprocess.Popen | None, run_dir, grace=PATIENCE) -> None:
    """Stop a `magicmask run` a test started (its supervisor `proc`, None: already gone), if it still runs, and
    every process of its run: Ctrl-C first (the supervisor stops its children), a kill after `grace` s. A
    supervisor killed outright (a timeout of subprocess.run, a failed test) leaves its children (each in a
    session of its own) training on, which loads the machine for every test after."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout.split()
    for pid in map(int, left):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
