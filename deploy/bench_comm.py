"""Communication benchmarks (not tests): run by deploy/bench.sh, results go to docs/BENCHMARKS.md by hand.

1. Snapshot delivery latency, loopback, no impairment, K = 64, 16 agents: the real Broker in its own process
   (its own run loop), 16 synthetic agents in this process, each with a PUSH for reports and a SUB on
   b"snap/<r>/" made as Actor.connect makes them. Every round, agent 0 sends the report whose env_steps
   crosses the next multiple of broker.snapshot_every (the trigger) and the other agents report just below
   it, so one round = 16 reports + one broadcast of 16 snapshots. Two intervals per snapshot received:
   - broker stamp -> receipt: the SUB's receive time minus the message's body["created_at"] (time.time()
     when the broker packed that receiver's snapshot; a round's 16 messages are packed, then published);
   - trigger -> receipt: the receive time minus the time this process sent the triggering report (report
     transport, decode, validate, buffer insert, then the broadcast).
   Receive times are taken right after recv, before any decoding, for every socket that is ready.
2. Broker CPU per broadcast as agents grow (2 to 1,024 by default, full topology): the same set-up run round
   after round (the next round when every agent has the last snapshot), time.process_time() of the broker
   process (all its threads, libzmq's I/O thread included) over the window divided by the broadcasts in it.
   A round's CPU includes its N reports (decode, validate, buffer insert) and its N snapshot messages
   (filter, pack, publish). Its parts are timed inside the broker (time.thread_time() of its main thread):
   the reports (Broker.on_pull: receive, decode, validate, apply; CriticalBuffer.add among them) and
   Broker.broadcast (build, pack, impair and hand the N snapshots to PUB); the rest is the poll loop and
   libzmq's I/O thread. run.agents is capped at 256 by the config's validation; the bench sets it past the
   cap on the loaded config, to measure the broker alone.
3. CURVE on the fragment path: a Fragment as the actor sends it (codec Sender.pack, connect4 shapes,
   T = 128, E = 4) PUSH -> PULL from another process, sockets from protocol.transport.make_socket with and
   without CURVE keys (protocol.security), the PULL like the learner's (high-water mark
   learner.fragment_queue). Received raw, or through protocol.transport.receive (decode + validate, as the
   learner does). CPU per message from both processes (receiver: time.process_time; sender: /proc).
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from magicmask.actors.envs import env_spec
from magicmask.broker.server import Broker
from magicmask.machine import machine_line
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol import security as S
from magicmask.protocol.codec import Sender, decode
from magicmask.protocol.drops import DropLog
from magicmask.protocol.transport import free_ports, make_socket, receive, tcp

SPAWN = mp.get_context("spawn")  # children make their own ZeroMQ contexts: never fork one


def machine() -> str:
    return machine_line(f"Python {platform.python_version()}", f"pyzmq {zmq.pyzmq_version()}",
                        f"libzmq {zmq.zmq_version()}")


def load() -> str:
    return "load average %.2f %.2f %.2f (1, 5, 15 min)" % os.getloadavg()


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files_for(agents: int) -> None:
    """Raise this process's soft limit on open files (the broker child inherits it) to what `agents`
    synthetic agents take: two sockets each, a connection and a mailbox per socket; or say why not."""
    need = 4 * agents + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"{agents} agents need about {need} open files; the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def pct(xs, q) -> float:
    return float(np.percentile(xs, q)) * 1e3


# ---------------------------------------------------------------- broker side
def timed(spent: dict, name: str, fn):
    """fn, adding the calling thread's CPU time in it to spent[name]."""
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - t0
    return wrapper


def serve_broker(cfg: C.Config, run_dir: str, conn) -> None:
    """Child process: the real Broker through its own run loop. A side thread answers each request on
    `conn` with (process CPU seconds, broadcast rounds, reports applied, {"on_pull", "broadcast", "add": broker
    thread CPU seconds in them}) and stops the broker on "stop"."""
    stop = threading.Event()
    broker = Broker(cfg, Path(run_dir), stop)
    spent = {"on_pull": 0.0, "broadcast": 0.0, "add": 0.0}
    broker.on_pull = timed(spent, "on_pull", broker.on_pull)
    broker.broadcast = timed(spent, "broadcast", broker.broadcast)
    broker.buffer.add = timed(spent, "add", broker.buffer.add)

    def control():
        while conn.recv() != "stop":
            conn.send((time.process_time(), broker.seq, broker.reports, dict(spent)))
        stop.set()
    threading.Thread(target=control, daemon=True).start()
    broker.run()


class Team:
    """N synthetic agents facing a broker process: a report PUSH and a snapshot SUB each, as Actor.connect
    makes them (CURVE client keys when the config has security.keys_dir)."""

    def __init__(self, cfg: C.Config, ctx: zmq.Context, seed: int = 0):
        self.cfg, self.n = cfg, cfg.run.agents
        self.max_bytes = int(cfg.net.max_message_mb * 2**20)
        self.rng = np.random.default_rng(seed)
        self.senders = [Sender(r) for r in range(self.n)]
        self.push, self.subs = [], []
        self.poller = zmq.Poller()
        for r in range(self.n):
            curve = S.for_process(cfg, "actor", r).client("broker")
            push = make_socket(ctx, zmq.PUSH, hwm=100, curve=curve)
            push.connect(tcp("127.0.0.1", cfg.net.broker_reports_port))
            sub = make_socket(ctx, zmq.SUB, max_bytes=self.max_bytes, curve=curve)
            sub.setsockopt(zmq.SUBSCRIBE, M.snapshot_topic(r))
            sub.connect(tcp("127.0.0.1", cfg.net.broker_snapshots_port))
            self.poller.register(sub, zmq.POLLIN)
            self.push.append(push)
            self.subs.append(sub)
        self.index = {s: r for r, s in enumerate(self.subs)}
        self.k = 0  # rounds sent = the broker's broadcast seq (each round crosses the clock exactly once)

    def close(self) -> None:
        for s in (*self.push, *self.subs):
            s.close(linger=0)

    def _report(self, r: int, env_steps: int) -> None:
        """A CriticalReport of actor.report_top random unit keys, scores as a confident mask gives them."""
        n, d = self.cfg.actor.report_top, self.cfg.actor.key_dim
        keys = self.rng.standard_normal((n, d)).astype(np.float32)
        keys /= np.linalg.norm(keys, axis=1, keepdims=True)
        arrays = {"keys": keys, "scores": self.rng.uniform(0.75, 1.0, n).astype(np.float32),
                  "steps": np.full(n, env_steps, np.int64), "positions": np.zeros(n, np.int32)}
        self.push[r].send_multipart(self.senders[r].pack(M.REPORT, {"env_steps": env_steps}, arrays))

    def round(self) -> float:
        """Send one round of reports; returns the send time of the trigger (agent 0's)."""
        self.k += 1
        every = self.cfg.broker.snapshot_every
        t = time.time()
        self._report(0, every * self.k)
        for r in range(1, self.n):
            self._report(r, every * self.k - 1)
        return t

    def collect(self, timeout_s: float) -> dict[int, tuple[float, M.Message, int]]:
        """{receiver: (receive time, snapshot, bytes without the topic)} of this round's snapshots that arrive
        within timeout_s."""
        got: dict[int, tuple[float, M.Message, int]] = {}
        end = time.monotonic() + timeout_s
        while len(got) < self.n and time.monotonic() < end:
            raw = []
            for sock, _ in self.poller.poll(max(1, int((end - time.monotonic()) * 1000))):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    raw.append((self.index[sock], time.time(), frames))
            for r, t, frames in raw:  # decode after every ready socket was read: timestamps stay clean
                msg = decode(frames[1:], self.max_bytes)
                if msg.seq == self.k:
                    got[r] = (t, msg, sum(len(f.buffer) for f in frames[1:]))
        return got

    def warm_up(self) -> None:
        """Rounds until the buffer is full and one round reached every subscriber (slow joiners)."""
        fill = -(-self.cfg.broker.top_k // (self.n * self.cfg.actor.report_top)) + 1
        for _ in range(50):
            self.round()
            if len(self.collect(1.0)) == self.n and self.k >= max(3, fill):
                return
        raise RuntimeError(f"warm-up: after {self.k} rounds not every one of {self.n} subscribers gets snapshots")


class BrokerProcess:
    """The real broker in a child process, with a Team of synthetic agents connected to it."""

    def __init__(self, agents: int, keys_dir: str = ""):
        overrides = C.port_overrides(free_ports(len(C.PORT_FIELDS)), metrics_port=0) + [
            "broker.save_snapshots=false", f"security.keys_dir={keys_dir}"]
        self.cfg = C.load(overrides=overrides, environ={})
        self.cfg.run.agents = agents  # past the config's cap on purpose: the broker alone is measured
        self.tmp = tempfile.TemporaryDirectory()
        self.conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=serve_broker, args=(self.cfg, self.tmp.name, child), daemon=True)

    def __enter__(self):
        self.proc.start()
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 2 * self.cfg.run.agents + 64)  # a PUSH and a SUB per agent
        self.team = Team(self.cfg, self.ctx)
        try:
            self.team.warm_up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def stats(self) -> tuple[float, int, int, dict]:
        self.conn.send("stats")
        return self.conn.recv()

    def __exit__(self, *exc):
        self.team.close()
        self.ctx.term()
        self.conn.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
        self.tmp.cleanup()


def snapshot_latency(agents: int, rounds: int, rate_hz: float, keys_dir: str = "") -> dict:
    """Paced rounds (one every 1/rate_hz s); both intervals of every snapshot received, in ms."""
    stamp, trigger, entries, missing = [], [], set(), 0
    with BrokerProcess(agents, keys_dir) as b:
        nxt = time.monotonic()
        for _ in range(rounds):
            nxt += 1.0 / rate_hz
            t0 = b.team.round()
            got = b.team.collect(1.0)
            missing += agents - len(got)
            for t, msg, _ in got.values():
                stamp.append(t - msg.body["created_at"])
                trigger.append(t - t0)
                entries.add(len(msg.arrays["scores"]))
            time.sleep(max(0.0, nxt - time.monotonic()))
    return {"n": len(stamp), "missing": missing, "entries": sorted(entries),
            "stamp": (pct(stamp, 50), pct(stamp, 99)), "trigger": (pct(trigger, 50), pct(trigger, 99))}


def broker_cpu(agents: int, seconds: float) -> dict:
    """Back-to-back rounds for `seconds` (at least 5); per broadcast: the broker process's CPU time, the
    broker thread's time in the reports, in CriticalBuffer.add and in broadcast() (ms), and the bytes of one
    snapshot."""
    with BrokerProcess(agents) as b:
        cpu0, seq0, rep0, spent0 = b.stats()
        t0, k0 = time.perf_counter(), b.team.k
        while time.perf_counter() - t0 < seconds or b.team.k - k0 < 5:
            b.team.round()
            got = b.team.collect(5.0)
            if len(got) != agents:
                raise RuntimeError(f"{agents} agents: round {b.team.k} did not reach every subscriber")
        cpu1, seq1, rep1, spent1 = b.stats()
        wall = time.perf_counter() - t0
    rounds = seq1 - seq0
    per_round = {k: (spent1[k] - spent0[k]) / rounds * 1e3 for k in spent1}
    _, msg, size = got[0]
    return {"rounds": rounds, "reports": rep1 - rep0, "rate": rounds / wall, "cpu_ms": (cpu1 - cpu0) / rounds * 1e3,
            "reports_ms": per_round["on_pull"] - per_round["broadcast"],  # a round's last report broadcasts
            "broadcast_ms": per_round["broadcast"], "add_ms": per_round["add"], "entries": len(msg.arrays["scores"]),
            "bytes": size}


# ---------------------------------------------------------------- fragment path
def fragment_frames(cfg: C.Config, sender: Sender) -> list:
    """The frames of one Fragment with connect4's shapes, as Actor.send_fragment packs it."""
    spec = env_spec(cfg)
    T, E, A = cfg.actor.fragment_len, cfg.env.copies, spec.n_actions
    rng = np.random.default_rng(0)
    arrays = {}
    for name, (dtype, shape) in M.SCHEMAS[M.FRAGMENT].arrays.items():
        dims = [d for s in shape for d in (spec.obs_shape if s == "*obs" else
                                           [s if type(s) is int else {"T": T, "E": E, "A": A}[s]])]
        dtype = spec.obs_dtype if dtype == "obs_dtype" else dtype
        arrays[name] = rng.random(dims).astype(dtype) if dtype.startswith("float") else np.zeros(dims, dtype)
    arrays["legal"][:] = True
    body = {"episodes": [{"return": 1.0, "length": 42}], "env_steps": T * E, "eval": {}}
    return sender.pack(M.FRAGMENT, body, arrays, policy_version=0)


def push_fragments(overrides: list[str]) -> None:
    """Child process: an actor's fragment PUSH (hwm 2, as Actor.connect) sending until it is killed."""
    cfg = C.load(overrides=overrides, environ={})
    sender = Sender(0)
    ctx = zmq.Context()
    push = make_socket(ctx, zmq.PUSH, hwm=2, curve=S.for_process(cfg, "actor", 0).client("learner"))
    push.connect(tcp("127.0.0.1", cfg.net.learner_fragments_port))
    frames = fragment_frames(cfg, sender)
    while True:
        push.send_multipart(frames, copy=False)


def fragment_path(keys_dir: str, validate: bool, seconds: float) -> dict:
    port = free_ports(1)[0]
    overrides = ["env.name=connect4", "actor.fragment_len=128", "env.copies=4", f"net.learner_fragments_port={port}",
                 "net.metrics_port=0", f"security.keys_dir={keys_dir}"]
    cfg = C.load(overrides=overrides, environ={})
    spec = env_spec(cfg)
    max_bytes = int(cfg.net.max_message_mb * 2**20)
    context = {"T": cfg.actor.fragment_len, "E": cfg.env.copies, "A": spec.n_actions, "obs": spec.obs_shape,
               "obs_dtype": spec.obs_dtype}
    size = sum(memoryview(f).nbytes for f in fragment_frames(cfg, Sender(0)))
    ctx = zmq.Context()
    pull = make_socket(ctx, zmq.PULL, hwm=cfg.learner.fragment_queue, max_bytes=max_bytes,
                       curve=S.for_process(cfg, "learner").server())
    pull.bind(tcp("127.0.0.1", port))
    drops = DropLog(logging.getLogger("bench_comm"))
    proc = SPAWN.Process(target=push_fragments, args=(overrides,), daemon=True)
    proc.start()

    def take() -> None:
        if not validate:
            pull.recv_multipart(copy=False)
            return
        while pull.poll() and receive(pull, "fragments", drops, max_bytes, context, kinds=(M.FRAGMENT,)) is None:
            if drops.total():  # None without a drop: a CURVE message not whole yet, poll again
                raise RuntimeError(f"fragment refused: {drops.counts}")
    try:
        deadline = time.monotonic() + 30
        while not pull.poll(200):
            if not proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"no fragment from the sender process within 30 s (exit code {proc.exitcode})")
        for _ in range(50):  # warm-up
            take()
        n, cpu0, send0, t0 = 0, time.process_time(), proc_cpu(proc.pid), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            take()
            n += 1
        wall = time.perf_counter() - t0
        cpu, send_cpu = time.process_time() - cpu0, proc_cpu(proc.pid) - send0
    finally:
        proc.kill()
        proc.join(10)
        pull.close(linger=0)
        S.release(ctx)
        ctx.term()
    return {"size": size, "rate": n / wall, "mbps": n * size / wall / 1e6,
            "recv_us": cpu / n * 1e6, "send_us": send_cpu / n * 1e6}


# ---------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring window of each CPU and fragment figure")
    ap.add_argument("--rounds", type=int, default=150, help="snapshot rounds of each latency figure")
    ap.add_argument("--rate", type=float, default=20.0, help="snapshot rounds per second in the latency figures")
    ap.add_argument("--agents", type=int, nargs="+", default=[2, 16, 64, 256, 1024],
                    help="agent counts of the broker CPU table")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each broker CPU row; the one with the least CPU per round is printed (CPU time "
                    "inflates when other processes share the cores)")
    ap.add_argument("--only", choices=["latency", "cpu", "fragments"], help="run one part only")
    args = ap.parse_args()
    print(f"machine: {machine()}\nbefore: {load()}\n")
    with tempfile.TemporaryDirectory() as keys:
        S.generate_keys(keys, S.default_names(16))
        if args.only in (None, "latency"):
            print(f"### Snapshot delivery latency (loopback, no impairment, K = 64, 16 agents, {args.rounds} rounds "
                  f"at {args.rate:g}/s)\n")
            print("| sockets | snapshots received | entries per snapshot | broker stamp -> receipt p50 / p99 ms "
                  "| trigger report sent -> receipt p50 / p99 ms |\n|---|---|---|---|---|")
            for name, keys_dir in (("plain", ""), ("CURVE", keys)):
                r = snapshot_latency(16, args.rounds, args.rate, keys_dir)
                print(f"| {name} | {r['n']} (missing {r['missing']}) | {', '.join(map(str, r['entries']))} "
                      f"| {r['stamp'][0]:.2f} / {r['stamp'][1]:.2f} | {r['trigger'][0]:.2f} / {r['trigger'][1]:.2f} |",
                      flush=True)
        if args.only in (None, "cpu"):
            open_files_for(max(args.agents))
            print(f"\n### Broker CPU per broadcast (K = 64, full topology, {args.seconds:g} s and at least 5 "
                  f"back-to-back rounds per run, least CPU of {args.repeat} run(s) per row)\n")
            print("| agents | rounds | broadcasts/s | snapshot bytes (entries) | broker CPU ms per round | N reports ms "
                  "(of which CriticalBuffer.add) | broadcast() ms | rest ms | per agent us |\n"
                  "|---|---|---|---|---|---|---|---|---|")
            for n in args.agents:
                r = min((broker_cpu(n, args.seconds) for _ in range(args.repeat)), key=lambda x: x["cpu_ms"])
                rest = r["cpu_ms"] - r["reports_ms"] - r["broadcast_ms"]
                print(f"| {n} | {r['rounds']} | {r['rate']:.1f} | {r['bytes']:,} ({r['entries']}) | {r['cpu_ms']:.2f} "
                      f"| {r['reports_ms']:.2f} ({r['add_ms']:.2f}) | {r['broadcast_ms']:.2f} | {rest:.2f} "
                      f"| {r['cpu_ms'] / n * 1e3:.0f} |", flush=True)
        if args.only in (None, "fragments"):
            print(f"\n### Fragment path, plain vs. CURVE (connect4 Fragment T = 128, E = 4, PUSH -> PULL over "
                  f"loopback, {args.seconds:g} s per row)\n")
            print("| receiver | sockets | fragment KB | fragments/s | MB/s | receiver CPU us/msg | sender CPU us/msg |"
                  "\n|---|---|---|---|---|---|---|")
            for validate in (False, True):
                res = {}
                for name, keys_dir in (("plain", ""), ("CURVE", keys)):
                    r = res[name] = fragment_path(keys_dir, validate, args.seconds)
                    how = "receive() (decode + validate)" if validate else "raw recv"
                    print(f"| {how} | {name} | {r['size'] / 1e3:.0f} | {r['rate']:,.0f} | {r['mbps']:,.0f} "
                          f"| {r['recv_us']:.0f} | {r['send_us']:.0f} |", flush=True)
                c, p = res["CURVE"], res["plain"]
                print(f"| | CURVE / plain | | {c['rate'] / p['rate']:.2f}x | | {c['recv_us'] / p['recv_us']:.2f}x "
                      f"| {c['send_us'] / p['send_us']:.2f}x |", flush=True)
    print(f"\nafter: {load()}")


if __name__ == "__main__":
    main()
