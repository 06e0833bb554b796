"""Chaos run: one `magicmask run` (gates) during which its processes are killed with SIGKILL at seeded random
moments, one is frozen with SIGSTOP for longer than the liveness timeouts, and one actor's network is cut; then
the run's end state is checked. tests/system/test_chaos.py runs it with a few faults; `--kills 20` is the
benchmark in docs/BENCHMARKS.md ("Chaos").

    python deploy/chaos.py [--kills 20] [--seed 0] [--agents 3] [--steps N] [--run-dir DIR] [--json FILE]

Faults come in a seeded random order, each after a seeded random pause, once training has passed a seeded
random fraction of run.total_steps (at most --last-fault-at: they spread over the run however fast the machine is),
and once the last fault of the same process is over (it works again); faults of different processes overlap:
- kill: SIGKILL to the learner, the broker or a random actor, in equal shares. The supervisor restarts it
  (app/supervisor.py); it counts as recovered when its new process shows work on its metrics endpoint (the
  learner an update, the broker a broadcast round, an actor a fragment).
- stop: SIGSTOP to one process (--stop) for --stop-s seconds, then SIGCONT. Recovered: it shows new work.
- cut: every packet of one random actor's TCP connections to the learner and the broker dropped for --cut-s
  seconds (NetCut below: an eBPF program on the loopback interface; root and Linux >= 6.6). Recovered: the
  actor hears both peers again.

Checks after the run (any failure makes the exit status 1): the supervisor exited with 0; every fault was
done; every agent reached run.total_steps; metrics.jsonl holds versions 1..N, each once, N the final
checkpoint's version (a restarted learner drops the rows after the checkpoint it resumes from and writes those
versions again); the final checkpoint loads (explain.episodes.load_run) and each agent plays an episode with
it; no process of the run is left.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from magicmask.protocol import config as C
from magicmask.supervisor import scrape

# a process's sign of work on its own metrics endpoint: the counter that grows
WORK = {"learner": "magicmask_learner_updates_total", "broker": "magicmask_broker_snapshot_rounds_total",
        "actor": "magicmask_actor_fragments_total"}


class NetCut:
    """Drops every IPv4 TCP packet on the loopback interface from or to any of `ports` while open: an eBPF
    program on lo's tcx egress hook, where every loopback packet passes once. It is attached through a BPF link
    held by this process, so the kernel removes it when the link is closed or this process ends, however it
    ends. The cut connections stall as behind a pulled cable: TCP retransmits with backoff and nothing is reset,
    so they carry on once it is lifted. A connection opened during the cut is not cut (its port is new).
    Needs root (CAP_BPF, CAP_NET_ADMIN) and Linux >= 6.6 (tcx); no tc or iptables binary."""

    BPF_PROG_LOAD, BPF_LINK_CREATE = 5, 28
    SCHED_CLS, TCX_EGRESS = 3, 47
    SYSCALL = {"x86_64": 321, "aarch64": 280}

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.fds: list[int] = []

    def __enter__(self) -> "NetCut":
        prog = self._program()
        log = ctypes.create_string_buffer(1 << 16)
        lic = ctypes.create_string_buffer(b"GPL")
        attr = struct.pack("<IIQQIIQII16sII", self.SCHED_CLS, len(prog) // 8, ctypes.addressof(prog),
                           ctypes.addressof(lic), 1, len(log), ctypes.addressof(log), 0, 0, b"netcut", 0,
                           self.TCX_EGRESS)
        self.fds.append(self._bpf(self.BPF_PROG_LOAD, attr, log))
        self.fds.append(self._bpf(self.BPF_LINK_CREATE,
                                  struct.pack("<IIII", self.fds[0], socket.if_nametoindex("lo"), self.TCX_EGRESS, 0)))
        return self

    def __exit__(self, *_) -> None:
        for fd in reversed(self.fds):   # closing the link detaches the program
            os.close(fd)
        self.fds.clear()

    def _program(self):
        """eBPF: pass unless the packet is Ethernet + IPv4 (no options) + TCP with a source or destination port
        in self.ports, then drop. Ports are compared as they lie in the packet (network byte order)."""
        ins = []

        def op(code, dst=0, src=0, off=0, imm=0):
            ins.append([code, dst | src << 4, off, imm])
        PASS, DROP = "pass", "drop"
        op(0x61, 2, 1, 76)                 # r2 = skb->data
        op(0x61, 3, 1, 80)                 # r3 = skb->data_end
        op(0xbf, 4, 2)                     # r4 = r2
        op(0x07, 4, imm=38)                # r4 += 14 (Ethernet) + 20 (IPv4) + 4 (the two ports)
        op(0x2d, 4, 3, PASS)               # if r4 > r3: pass
        op(0x69, 5, 2, 12)                 # r5 = ethertype
        op(0x55, 5, off=PASS, imm=socket.htons(0x0800))
        op(0x71, 5, 2, 14)                 # r5 = IPv4 version and header length
        op(0x55, 5, off=PASS, imm=0x45)
        op(0x71, 5, 2, 23)                 # r5 = IP protocol
        op(0x55, 5, off=PASS, imm=6)       # TCP
        op(0x69, 5, 2, 34)                 # r5 = source port
        op(0x69, 6, 2, 36)                 # r6 = destination port
        for port in self.ports:
            op(0x15, 5, off=DROP, imm=socket.htons(port))
            op(0x15, 6, off=DROP, imm=socket.htons(port))
        labels = {PASS: len(ins)}
        op(0xb7, 0, imm=-1)                # r0 = TCX_NEXT: the packet goes on
        op(0x95)                           # exit
        labels[DROP] = len(ins)
        op(0xb7, 0, imm=2)                 # r0 = TCX_DROP
        op(0x95)
        code = b"".join(struct.pack("<BBhi", c, regs, labels[off] - pc - 1 if isinstance(off, str) else off, imm)
                        for pc, (c, regs, off, imm) in enumerate(ins))
        return ctypes.create_string_buffer(code, len(code))

    def _bpf(self, cmd: int, attr: bytes, log=None) -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        number = self.SYSCALL.get(platform.machine())
        if number is None:
            raise OSError(f"NetCut: no bpf syscall number for {platform.machine()}")
        buf = ctypes.create_string_buffer(attr, 128)
        fd = libc.syscall(number, cmd, buf, ctypes.c_uint(len(buf)))
        if fd < 0:
            err = ctypes.get_errno()
            why = log.value.decode(errors="replace").strip() if log is not None else ""
            raise OSError(err, f"bpf({'prog load' if cmd == self.BPF_PROG_LOAD else 'tcx link on lo'}): "
                               f"{os.strerror(err)}{': ' + why if why else ''}")
        return fd


def processes(run_dir: Path) -> dict[str, int]:
    """{name: pid} of the run's processes from /proc: "run" (the supervisor), "broker", "learner", "actor<i>"
    (each is `python -m magicmask.cli <role> ... --run-dir <run_dir>`; zombies have no command line)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if "magicmask.cli" not in args or str(run_dir) not in args:
            continue
        role = args[args.index("magicmask.cli") + 1]
        out[role + (args[args.index("--agent") + 1] if role == "actor" else "")] = int(d.name)
    return out


def tcp_links(pid: int, remote_ports: set[int]) -> dict[int, int]:
    """{remote port: local port} of the process's established TCP connections to `remote_ports`.

    Both tables: the transport sets ZMQ_IPV6, so its IPv4 connections are dual-stack sockets listed in tcp6
    (as IPv4-mapped addresses); on the wire they are IPv4 all the same."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = {}
    lines = [ln for table in ("tcp", "tcp6") for ln in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]]
    for line in lines:
        f = line.split()
        local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
        if f[3] == "01" and f[9] in inodes and remote in remote_ports:
            out[remote] = local
    return out


class Chaos:
    def __init__(self, args):
        self.args, self.run_dir = args, args.run_dir
        self.rng = random.Random(args.seed)
        self.cfg: C.Config | None = None   # the run's config.yaml, once the supervisor wrote it
        self.proc: subprocess.Popen | None = None
        self.faults: list[dict] = []
        self.pending: list[tuple[dict, object, float]] = []   # (fault, recovered(), since) not yet recovered
        self.t0 = time.monotonic()

    def plan(self) -> list[dict]:
        """The faults in order, each with its pause (s) and the progress (fraction of run.total_steps) it waits for."""
        a, rng = self.args, self.rng
        kinds = [("kill", ("learner", "broker", "actor")[i % 3]) for i in range(a.kills)]
        rng.shuffle(kinds)
        for extra in (("stop", a.stop), ("cut", "actor")) if a.cut_s else (("stop", a.stop),):
            kinds.insert(rng.randint(0, len(kinds)), extra)
        at = sorted(rng.uniform(0.05, a.last_fault_at) for _ in kinds)
        return [{"kind": kind, "role": role if role != "actor" else f"actor{rng.randrange(a.agents)}",
                 "pause_s": round(rng.uniform(a.pause_min, a.pause_max), 2), "at_progress": round(p, 3)}
                for (kind, role), p in zip(kinds, at)]

    # ---------------- what the run's processes show ----------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def metrics(self, name: str) -> dict:
        role, agent = (name[:5], int(name[5:])) if name.startswith("actor") else (name, 0)
        return scrape(self.cfg.metrics_port_of(role, agent))

    def work(self, name: str) -> float | None:
        """The process's work counter (WORK), None while its endpoint does not answer."""
        series = WORK[name[:5] if name.startswith("actor") else name]
        m = self.metrics(name)
        return next((v for k, v in m.items() if k[0] == series), 0.0 if m else None)

    def silence(self, actor: str, peer: str) -> float | None:
        """Seconds since the actor last heard the peer, from its own gauge (None: its endpoint did not answer)."""
        m = self.metrics(actor)
        return next((v for k, v in m.items()
                     if k[0] == "magicmask_actor_peer_silence_seconds" and ("peer", peer) in k), None)

    def measured_silence(self, actor: str, peer: str, within_s: float = 10.0) -> float | None:
        """The silence gauge read while a fault holds: asked again until the actor's endpoint answers, since on a
        loaded machine one scrape can miss its 0.5 s timeout (CI saw it); the gauge only grows meanwhile."""
        end = time.monotonic() + within_s
        while (s := self.silence(actor, peer)) is None and time.monotonic() < end:
            time.sleep(0.2)
        return s

    def progress(self) -> float | None:
        """The least env steps any agent was trained on, as a fraction of run.total_steps (None: the learner is
        not up or has not updated yet)."""
        m = scrape(self.cfg.metrics_port_of("learner"))
        steps = [v for k, v in m.items() if k[0] == "magicmask_learner_agent_env_steps"]
        return min(steps) / self.cfg.run.total_steps if len(steps) == self.cfg.run.agents else None

    def until(self, cond, timeout: float) -> float | None:
        """Seconds until cond() held, noting recoveries meanwhile (polled every 0.2 s); None after `timeout` or
        when the run ended."""
        t = time.monotonic()
        while time.monotonic() - t < timeout and self.proc.poll() is None:
            for item in list(self.pending):
                fault, recovered, since = item
                if recovered():
                    fault["recovered_s"] = round(time.monotonic() - since, 2)
                    self.pending.remove(item)
                    print(f"[{self.now():6.1f}s] {describe(fault)}", flush=True)
            if cond():
                return round(time.monotonic() - t, 2)
            time.sleep(0.2)
        return None

    def pid_of(self, name: str) -> int | None:
        pid = None

        def found():
            nonlocal pid
            pid = processes(self.run_dir).get(name)
            return pid is not None
        self.until(found, 60)
        return pid

    # ---------------- the faults ----------------
    def do(self, fault: dict) -> None:
        """Make the fault; its recovery is watched from then on (`pending`) while the next faults go ahead."""
        name, a = fault["role"], self.args
        pid = self.pid_of(name)
        if pid is None:
            fault["error"] = f"no {name} process within 60 s"
            return
        fault.update(t=round(self.now(), 1), pid=pid)
        if fault["kind"] == "kill":
            os.kill(pid, signal.SIGKILL)
            self.pending.append((fault, lambda: processes(self.run_dir).get(name, pid) != pid
                                 and (self.work(name) or 0) >= 1, time.monotonic()))
        elif fault["kind"] == "stop":
            before = self.work(name) or 0
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(a.stop_s)
                if name in ("learner", "broker"):   # what the actors saw
                    fault["silence_s"] = max(self.measured_silence(f"actor{i}", name) or 0.0 for i in range(a.agents))
            finally:
                os.kill(pid, signal.SIGCONT)
            self.pending.append((fault, lambda: (self.work(name) or 0) > before, time.monotonic()))
        else:
            ports = {getattr(self.cfg.net, f) for f in C.PORT_FIELDS}
            links: dict[int, int] = {}

            def connected():   # all six: one connection to each socket of the learner and the broker
                nonlocal links
                links = tcp_links(pid, ports)
                return len(links) == len(ports)
            if self.until(connected, 30) is None:
                fault["error"] = f"{name} had {len(links)} of {len(ports)} connections after 30 s"
                return
            try:
                with NetCut(sorted(links.values())):
                    time.sleep(a.cut_s)
                    fault["silence_s"] = {p: self.measured_silence(name, p) for p in ("learner", "broker")}
            except OSError as e:
                fault["error"] = str(e)
                return
            heard = 3 * self.cfg.net.heartbeat_s

            def heard_both():
                quiet = [self.silence(name, p) for p in ("learner", "broker")]
                return None not in quiet and max(quiet) < heard
            self.pending.append((fault, heard_both, time.monotonic()))

    def run(self) -> dict:
        a = self.args
        a.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "magicmask.cli", "run", "--config", "gates", "--run-dir", str(a.run_dir),
               "--agents", str(a.agents), "--steps", str(a.steps)]
        for item in ("env.eval_every=0", "run.progress=false", f"net.heartbeat_s={a.heartbeat_s}",
                     "learner.liveness_s=3", "learner.batch_deadline_s=2", "learner.checkpoint_every=2",
                     f"run.max_restarts={a.kills}", f"run.seed={a.seed}", *a.set):
            cmd += ["--set", item]
        plan = self.plan()
        out_path = a.run_dir / "supervisor.log"
        with open(out_path, "w") as out:
            self.proc = proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            # config.yaml (with the ports the supervisor took) is whole once the first child runs
            if self.until(lambda: "learner" in processes(a.run_dir), 60) is not None:
                self.cfg = C.load(a.run_dir / "config.yaml", environ={})
                for fault in plan:
                    made = time.monotonic()

                    def due():   # after its pause, at its progress, and once its target's last fault is over
                        p = self.progress()
                        return time.monotonic() - made >= fault["pause_s"] and p is not None and \
                            p >= fault["at_progress"] and not any(f["role"] == fault["role"] for f, *_ in self.pending)
                    if self.until(due, a.timeout) is None:
                        break
                    self.do(fault)
                    self.faults.append(fault)
                    print(f"[{fault['t']:6.1f}s] {fault['kind']} {fault['role']} (pid {fault['pid']})"
                          if "error" not in fault else f"{fault['kind']} {fault['role']}: {fault['error']}", flush=True)
                    if "error" in fault:
                        break
                self.until(lambda: not self.pending, a.timeout)
            rc = proc.wait(max(1.0, a.timeout - self.now()))
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            if proc.poll() is None:   # out of time, or this script failed: the supervisor stops every child
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        wall = self.now()
        return self.summary(plan, rc, wall, out_path.read_text())

    def summary(self, plan, rc, wall, out) -> dict:
        killed = [f["role"] for f in self.faults if f["kind"] == "kill" and "pid" in f]
        names = ["broker", "learner", *[f"actor{i}" for i in range(self.args.agents)]]
        # the exit status of every death the supervisor saw, per process: only the kills' -9 is expected
        deaths = {n: [int(c) for c in re.findall(rf"^{n} exited with (-?\d+); restarting", out, re.M)] for n in names}
        checks = check(self.run_dir, self.cfg) if self.cfg else {"config.yaml": "never written"}
        expected = {n: [-9] * killed.count(n) for n in names}
        checks["restarts"] = "ok" if deaths == expected else f"deaths seen {deaths}, kills {expected}"
        return {
            "seed": self.args.seed, "agents": self.args.agents, "total_steps": self.args.steps,
            "planned": len(plan), "done": len(self.faults), "faults": self.faults,
            "kills": {role: sum(r.startswith(role) for r in killed) for role in ("learner", "broker", "actor")},
            "restarts": {n: len(d) for n, d in deaths.items()},
            "supervisor_exit": rc, "wall_s": round(wall, 1), "checks": checks,
            # not a check: the half-written files of processes killed while writing (learner/checkpoint.py's
            # temporary files are not removed by a later learner)
            "temporary_files": sorted(str(f.relative_to(self.run_dir)) for f in self.run_dir.rglob(".*tmp*")),
        }


def check(run_dir: Path, cfg: C.Config) -> dict:
    """The run's end state: "ok" or what is wrong, per check."""
    from magicmask.explain.episodes import load_run, record_episode
    from magicmask.learner import checkpoint
    out = {}
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    latest = checkpoint.latest(run_dir / "checkpoints")
    final = checkpoint.load(latest) if latest else None
    versions = [r["version"] for r in rows]
    n = final["version"] if final else None
    out["versions"] = "ok" if versions == list(range(1, (n or 0) + 1)) and n else \
        f"metrics.jsonl versions {compress(versions)}, final checkpoint {latest}"
    reached = {a: max((r["agents"][str(a)]["env_steps"] for r in rows if str(a) in r["agents"]), default=0)
               for a in range(cfg.run.agents)}
    consumed = final["consumed"].tolist() if final else []
    out["total_steps"] = "ok" if min(reached.values()) >= cfg.run.total_steps and consumed and \
        min(consumed) >= cfg.run.total_steps else f"reached {reached}, final checkpoint {consumed}"
    try:
        run = load_run(run_dir)
        lengths = [record_episode(run.make_env(a), run.policies[a], a, seed=0).length for a in range(cfg.run.agents)]
        out["final_checkpoint"] = "ok" if run.version == n and min(lengths) > 0 else \
            f"version {run.version} (metrics say {n}), episode lengths {lengths}"
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        out["final_checkpoint"] = f"{type(e).__name__}: {e}"
    left = processes(run_dir)
    out["processes_left"] = "ok" if not left else f"still running: {left}"
    return out


def compress(xs: list[int]) -> str:
    """[1, 2, 3, 5, 5, 6] -> '1-3, 5, 5-6': runs of consecutive numbers."""
    parts, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            parts.append(str(x) if x == start else f"{start}-{x}")
            start = None
    return ", ".join(parts)


def describe(f: dict) -> str:
    what = f"{f['kind']} {f['role']}" + (f" (pid {f['pid']})" if "pid" in f else "")
    if "error" in f:
        return f"{what}: {f['error']}"
    if "silence_s" in f:
        s = f["silence_s"]
        what += ": heard nothing for " + (", ".join(f"{v:.1f} s from the {p}" for p, v in s.items() if v is not None)
                                          if isinstance(s, dict) else f"{s:.1f} s")
    back = f.get("recovered_s")
    return what + (f"; working again after {back:.1f} s" if back is not None else "; not seen working again")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs, shared equally by learner, broker and actors")
    p.add_argument("--seed", type=int, default=0, help="the fault plan's seed and run.seed")
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--steps", type=int, default=60000, help="run.total_steps")
    p.add_argument("--stop", choices=["learner", "broker", "actor"], default="learner", help="who gets SIGSTOP")
    p.add_argument("--stop-s", type=float, default=5.0, help="SIGSTOP to SIGCONT")
    p.add_argument("--cut-s", type=float, default=5.0, help="how long one actor's network is cut (0: no cut)")
    p.add_argument("--probe-cut", action="store_true", help="only say whether a network cut works here")
    p.add_argument("--heartbeat-s", type=float, default=0.5, help="net.heartbeat_s (silent after 3 of them)")
    p.add_argument("--pause-min", type=float, default=1.0, help="seconds at least between two faults")
    p.add_argument("--pause-max", type=float, default=5.0)
    p.add_argument("--last-fault-at", type=float, default=0.6,
                   help="the last fault waits for at most this share of run.total_steps; the rest of the run leaves "
                   "time for faults that wait on an earlier one's recovery (a fault whose target's run has ended fails)")
    p.add_argument("--timeout", type=float, default=900.0, help="the whole run, seconds; then it is stopped")
    p.add_argument("--run-dir", type=Path, help="default: runs/chaos-<seed>")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="more config")
    p.add_argument("--json", type=Path, help="also write the summary here")
    a = p.parse_args(argv)
    if a.probe_cut or a.cut_s:
        try:
            with NetCut([0]):   # no packet has port 0: attached and removed, nothing dropped
                pass
        except OSError as e:
            print(f"a network cut does not work here: {e}" + ("" if a.probe_cut else " (--cut-s 0: none)"))
            return 1 if a.probe_cut else 2
        if a.probe_cut:
            print("a network cut works here")
            return 0
    if a.stop_s <= 3 * a.heartbeat_s or 0 < a.cut_s <= 3 * a.heartbeat_s:
        p.error("--stop-s and --cut-s must exceed the liveness timeout, 3 x --heartbeat-s")
    a.run_dir = (a.run_dir or Path("runs") / f"chaos-{a.seed}").resolve()
    s = Chaos(a).run()
    if a.json:
        a.json.write_text(json.dumps(s, indent=1))
    from magicmask.machine import machine_line
    print(f"\nchaos: gates, {s['agents']} agents, {s['total_steps']} steps, seed {s['seed']}; "
          f"{s['done']} of {s['planned']} faults done; {machine_line(f'Python {platform.python_version()}')}")
    print(f"kills per role: {s['kills']}")
    print(f"restarts by the supervisor: {s['restarts']}")
    recov = {}
    for f in s["faults"]:
        if f.get("recovered_s") is not None:
            recov.setdefault(f"{f['kind']} {f['role'].rstrip('0123456789')}", []).append(f["recovered_s"])
    for what, xs in sorted(recov.items()):
        print(f"{what}: working again after {min(xs):.1f}-{max(xs):.1f} s (mean {sum(xs) / len(xs):.1f}, n={len(xs)})")
    for f in s["faults"]:
        if f.get("recovered_s") is None:
            print(f"at {f.get('t', '?')} s: {describe(f)}")
    print(f"wall time {s['wall_s']:.0f} s, supervisor exit code {s['supervisor_exit']}")
    print("checks: " + "; ".join(f"{k} {v}" for k, v in s["checks"].items()))
    if s["temporary_files"]:
        print(f"temporary files left by killed writers: {', '.join(s['temporary_files'])}")
    ok = s["supervisor_exit"] == 0 and s["done"] == s["planned"] and all(v == "ok" for v in s["checks"].values()) \
        and all(f.get("recovered_s") is not None for f in s["faults"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
