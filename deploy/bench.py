"""Benchmarks (not tests): run by deploy/bench.sh, results go to docs/BENCHMARKS.md by hand with the machine.

1. Collection: one real actor process (4 and 16 env copies, masked action selection, reports, fragments)
   against a learner that only receives (and returns the flow-control credit at once), vs. the same env
   copies stepped with random legal actions and nothing around them (the ceiling); their ratio by wall
   clock and by CPU time per vector step (one step of every copy). Then the learner's decode + validate of
   the actor's last real fragment, in-process (`protocol.transport.receive` minus the socket). And the
   actor's collect against the ceiling in this process, alternating fragment by fragment (on a shared
   machine the separate wall-clock figures above see different contention; these two see the same).
2. Learner: updates/s of N agents in one batched update vs. a Python loop of N single-agent updates, on the
   CPU or a GPU (`--device cuda`, which deploy/bench.sh --gpu passes): connect4's MLPs, then Pong's Nature
   CNN (the paper-faithful pong.yaml) with its samples/s.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zmq

from magicmask.actors.actor import Actor
from magicmask.actors.envs import env_spec, make_env
from magicmask.learner.batched_ppo import BatchedPPO
from magicmask.machine import machine_line
from magicmask.models.networks import nets_for
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode
from magicmask.protocol.envspec import EnvSpec
from magicmask.protocol.messages import validate
from magicmask.protocol.transport import free_ports, make_socket, tcp

ROOT = Path(__file__).resolve().parents[1]


class RandomPlay:
    """The ceiling: the same env copies stepped with random legal actions and nothing around them."""

    def __init__(self, cfg: C.Config):
        self.envs = [make_env(cfg, 0, c) for c in range(cfg.env.copies)]
        self.rng = np.random.default_rng(0)
        self.legal = [e.reset(seed=i)[1] for i, e in enumerate(self.envs)]
        self.seed = 100

    def vector_step(self) -> None:
        for c, e in enumerate(self.envs):
            _, lg, _, term, trunc, _ = e.step(int(self.rng.choice(np.flatnonzero(self.legal[c]))))
            if term or trunc:
                self.seed += 1
                lg = e.reset(seed=self.seed)[1]
            self.legal[c] = lg


def ceiling(cfg: C.Config, seconds: float) -> tuple[float, float]:
    """The ceiling's (steps/s, CPU seconds per step) over `seconds`."""
    play, n = RandomPlay(cfg), 0
    t0, cpu0 = time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        play.vector_step()
        n += cfg.env.copies
    return n / (time.perf_counter() - t0), (time.thread_time() - cpu0) / n


def interleaved(preset: str, copies: int, seconds: float) -> tuple[float, float]:
    """CPU microseconds per vector step of (an actor's collect, the ceiling), in this process, alternating one
    fragment of each until `seconds` have passed, so that both see the same contention on a shared machine.
    The actor's sockets are connected to nobody: the fragments are not sent (encoding and sending one costs
    about 1 us per vector step), reports are dropped at once."""
    overrides = C.port_overrides(free_ports(len(C.PORT_FIELDS)), metrics_port=0) + [
        "run.agents=1", "env.opponents=random=1", "env.eval_every=0", f"env.copies={copies}"]
    cfg = C.load(ROOT / "deploy/configs" / preset, overrides, environ={})
    with tempfile.TemporaryDirectory() as d:
        actor = Actor(cfg, 0, Path(d))
        actor.links.connect()
        try:
            actor.peers.load(0, nets_for(actor.spec, cfg.ppo.hidden, 1, seed=0).agent_state(0), 0)
            obs, legal = actor.reset_all()
            pos = np.zeros(copies, np.int64)
            play = RandomPlay(cfg)
            actor.collect(obs, legal, pos)  # warm-up
            cpu_actor = cpu_ceiling = 0.0
            t0, vector_steps = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                c0 = time.thread_time()
                actor.collect(obs, legal, pos)
                c1 = time.thread_time()
                for _ in range(cfg.actor.fragment_len):
                    play.vector_step()
                cpu_actor, cpu_ceiling = cpu_actor + c1 - c0, cpu_ceiling + time.thread_time() - c1
                vector_steps += cfg.actor.fragment_len
        finally:
            actor.links.close()
    return cpu_actor / vector_steps * 1e6, cpu_ceiling / vector_steps * 1e6


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collection(preset: str, copies: int, seconds: float) -> dict:
    """With `copies` env copies: the actor's and the ceiling's steps/s and CPU seconds per step, and the frames
    of the last fragment received. CPU time is the figure to trust on a shared machine: wall-clock rates
    measured one after the other see different contention."""
    overrides = C.port_overrides(free_ports(len(C.PORT_FIELDS)), metrics_port=0) + [
        "run.agents=1", "env.opponents=random=1", "env.eval_every=0", f"env.copies={copies}"]
    cfg = C.load(ROOT / "deploy/configs" / preset, overrides, environ={})
    spec = make_env(cfg, 0).spec
    nets = nets_for(spec, cfg.ppo.hidden, 1, seed=0)
    ctx = zmq.Context.instance()
    pull = make_socket(ctx, zmq.PULL, hwm=4)
    pull.bind(tcp("127.0.0.1", cfg.net.learner_fragments_port))
    pub = make_socket(ctx, zmq.PUB)
    pub.bind(tcp("127.0.0.1", cfg.net.learner_weights_port))
    router = make_socket(ctx, zmq.ROUTER)
    router.bind(tcp("127.0.0.1", cfg.net.learner_router_port))
    sender = Sender(-1)
    state = nets.agent_state(0)
    weights = sender.pack(M.WEIGHTS, {"target": 0}, state, policy_version=0)
    received, frames = 0, []
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "magicmask.cli", "actor", "--agent", "0", "--config", str(ROOT / "deploy/configs" / preset),
               "--run-dir", d, *sum([["--set", o] for o in overrides], [])]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            steps_per_fragment = cfg.actor.fragment_len * cfg.env.copies
            poller = zmq.Poller()
            poller.register(pull, zmq.POLLIN)
            poller.register(router, zmq.POLLIN)
            got, t_first, deadline = 0, None, time.time() + 60 + seconds
            while time.time() < deadline:
                ev = dict(poller.poll(200))
                if router in ev:
                    ident = router.recv_multipart()[0]
                    router.send_multipart([ident, *weights])
                if pull in ev:
                    frames = pull.recv_multipart(copy=False)
                    frag = decode(frames, 1 << 30)
                    received += 1  # give the credit back at once, as a learner that trains instantly would
                    pub.send_multipart([b"w/0", *sender.pack(
                        M.WEIGHTS, {"target": 0, "incarnation": frag.incarnation, "fragments": received},
                        state, policy_version=received)])
                    if t_first is None:
                        t_first = time.perf_counter()  # measure from the first fragment: start-up excluded
                        cpu_first = cpu_seconds(proc.pid)
                    else:
                        got += 1
                    if t_first is not None and time.perf_counter() - t_first >= seconds:
                        break
            steps = got * steps_per_fragment
            rate = steps / (time.perf_counter() - t_first) if t_first else 0.0
            cpu = (cpu_seconds(proc.pid) - cpu_first) / steps if steps else float("nan")
        finally:
            proc.terminate()
            proc.wait(10)
            for s in (pull, pub, router):
                s.close(linger=0)
    ceil_rate, ceil_cpu = ceiling(cfg, min(seconds, 10))
    return {"rate": rate, "cpu": cpu, "ceiling_rate": ceil_rate, "ceiling_cpu": ceil_cpu, "frames": frames}


def decode_validate_us(preset: str, copies: int, frames: list, rounds: int = 5, number: int = 200) -> float:
    """CPU microseconds per fragment for the learner's decode + validate of `frames` (its context: the
    observation shape is checked later, per agent), the best of `rounds` rounds of `number`."""
    cfg = C.load(ROOT / "deploy/configs" / preset, [f"env.copies={copies}"], environ={})
    spec = env_spec(cfg)
    context = {"T": cfg.actor.fragment_len, "E": cfg.env.copies, "A": spec.n_actions, "obs_dtype": spec.obs_dtype}
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()  # CPU time of this thread: what a busy machine's scheduling does not add to
        for _ in range(number):
            validate(decode(frames, 1 << 30), context, (M.FRAGMENT,))
        best = min(best, (time.thread_time() - t0) / number)
    return best * 1e6


def update_batch(k: int, T: int, E: int, obs_shape: tuple, obs_dtype: str, A: int, g, device) -> dict:
    """A synthetic batch of k agents' fragments with the shapes the learner trains on (the update's cost does
    not depend on the values)."""
    obs = (torch.randint(0, 256, (k, T, E, *obs_shape), generator=g, dtype=torch.uint8) if obs_dtype == "uint8"
           else torch.rand(k, T, E, *obs_shape, generator=g))
    b = {"obs": obs, "actions": torch.randint(0, A, (k, T, E), generator=g),
         "legal": torch.ones(k, T, E, A, dtype=torch.bool), "rewards": torch.randn(k, T, E, generator=g)}
    for name in ("logp_mu", "logp_pi"):
        b[name] = torch.full((k, T, E), -np.log(A))
    for name in ("values", "mask_values", "final_values", "final_mask_values"):
        b[name] = torch.zeros(k, T, E)
    b["boot_values"], b["boot_mask_values"] = torch.zeros(k, E), torch.zeros(k, E)
    b["m"], b["eps"] = torch.full((k, T, E), 0.5), torch.full((k, T, E), 0.05)
    for name in ("terminated", "truncated", "eps_random", "guided"):
        b[name] = torch.zeros(k, T, E, dtype=torch.bool)
    for name in ("perturbed", "masked", "mask_applied"):
        b[name] = torch.rand(k, T, E, generator=g) < (0.5 if name == "perturbed" else 1.1)
    return {name: v.to(device) for name, v in b.items()}


def learner_rates(ns, updates: int, device: str = "cpu", preset: str = "connect4.yaml",
                  obs_shape: tuple = (84,), obs_dtype: str = "float32", A: int = 7) -> list[tuple[int, float, float]]:
    """(N, batched updates/s, per-agent loop updates/s) of full PPO + mask updates of N agents on `device`,
    with `preset`'s update settings and networks for `obs_shape` (an image gets the CNN, docs/ARCHITECTURE.md)."""
    cfg = C.load(ROOT / "deploy/configs" / preset, environ={})
    T, E = cfg.actor.fragment_len, cfg.env.copies
    out = []
    for n in ns:
        g = torch.Generator().manual_seed(n)
        spec = EnvSpec(obs_shape, obs_dtype, A, n, False)
        batched = BatchedPPO(nets_for(spec, cfg.ppo.hidden, n, seed=0), cfg.ppo, cfg.mask, device)
        singles = [BatchedPPO(nets_for(spec, cfg.ppo.hidden, 1, seed=i), cfg.ppo, cfg.mask, device) for i in range(n)]
        bb = update_batch(n, T, E, obs_shape, obs_dtype, A, g, device)
        sb = [update_batch(1, T, E, obs_shape, obs_dtype, A, g, device) for _ in range(n)]
        batched.update(bb, list(range(n)))  # warm-up (CUDA: kernels, allocator)
        for s, b in zip(singles, sb):
            s.update(b, [0])
        sync(device)
        t0 = time.perf_counter()
        for _ in range(updates):
            batched.update(bb, list(range(n)))
        sync(device)
        r_batched = updates / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(updates):
            for s, b in zip(singles, sb):
                s.update(b, [0])
        sync(device)
        r_loop = updates / (time.perf_counter() - t0)
        out.append((n, r_batched, r_loop))
    return out


def sync(device: str) -> None:
    """Wait for the GPU's queued kernels, so wall clock measures the work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per collection figure")
    ap.add_argument("--copies", default="4,16", help="env copies of the collection figures, comma-separated")
    ap.add_argument("--only", choices=("collection", "learner"), help="one part only (default: both)")
    ap.add_argument("--updates", type=int, default=5, help="timed updates per learner figure")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the learner figures (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="device of the learner figures: cpu, cuda or cuda:N")
    ap.add_argument("--agents", default="1,2,4,8", help="N of the learner figures, comma-separated")
    args = ap.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available on this machine (torch {torch.__version__})")
    if args.threads:
        torch.set_num_threads(args.threads)
    versions = (f"torch {torch.__version__}", f"Python {platform.python_version()}")
    print(f"# MAGIC-MASK benchmarks\nmachine: {machine_line(*versions)}\n")
    if args.only != "learner":
        print("## Collection (1 actor process, learner only receives; vector step = one step of every copy)\n")
        print("| env | copies | actor steps/s | random-action ceiling steps/s | ratio | actor CPU us per vector step "
              "| ceiling CPU us per vector step | CPU ratio | decode + validate CPU us per fragment (bytes) "
              "| load (1 min) |\n|---|---|---|---|---|---|---|---|---|---|")
        for env, preset in (("gates", "gates.yaml"), ("connect4", "connect4.yaml")):
            for copies in map(int, args.copies.split(",")):
                r = collection(preset, copies, args.seconds)
                size = sum(len(memoryview(f)) for f in r["frames"])
                dv = decode_validate_us(preset, copies, r["frames"]) if r["frames"] else float("nan")
                print(f"| {env} | {copies} | {r['rate']:,.0f} | {r['ceiling_rate']:,.0f} | "
                      f"{r['rate'] / r['ceiling_rate']:.3f} | {r['cpu'] * copies * 1e6:.0f} | "
                      f"{r['ceiling_cpu'] * copies * 1e6:.0f} | {r['ceiling_cpu'] / r['cpu']:.3f} | {dv:.0f} ({size:,}) | "
                      f"{os.getloadavg()[0]:.2f} |", flush=True)
        print("\n## Collection in-process, interleaved (one fragment of the actor's collect, then as many vector "
              "steps of the ceiling; CPU time of each)\n")
        print("| env | copies | actor CPU us per vector step | ceiling CPU us per vector step | CPU ratio | load (1 min) |\n"
              "|---|---|---|---|---|---|")
        for env, preset in (("gates", "gates.yaml"), ("connect4", "connect4.yaml")):
            for copies in map(int, args.copies.split(",")):
                actor_us, ceiling_us = interleaved(preset, copies, args.seconds)
                print(f"| {env} | {copies} | {actor_us:.0f} | {ceiling_us:.0f} | {ceiling_us / actor_us:.3f} | "
                      f"{os.getloadavg()[0]:.2f} |", flush=True)
    if args.only != "collection":
        ns = tuple(map(int, args.agents.split(",")))
        where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
            f"CPU, torch threads {torch.get_num_threads()}"
        print(f"\n## Learner: full PPO + mask updates/s on {where} (connect4 shapes, batch 128x4 per agent)\n")
        print("| agents N | batched updates/s | per-agent loop updates/s | speed-up |\n|---|---|---|---|")
        for n, rb, rl in learner_rates(ns, args.updates, args.device):
            print(f"| {n} | {rb:.2f} | {rl:.2f} | {rb / rl:.2f}x |", flush=True)
        cfg = C.load(ROOT / "deploy/configs/pong.yaml", environ={})
        samples = cfg.actor.fragment_len * cfg.env.copies * cfg.ppo.epochs  # samples through forward+backward
        print(f"\n## Learner: Pong (pong.yaml: Nature CNN on 4x84x84 frames, batch {cfg.actor.fragment_len}x"
              f"{cfg.env.copies} per agent, {cfg.ppo.epochs} epochs) on {where}\n")
        print("| agents N | batched updates/s | samples/s (x epochs) | per-agent loop updates/s | speed-up |\n"
              "|---|---|---|---|---|")
        for n, rb, rl in learner_rates(ns[:2], max(1, args.updates // 2), args.device, "pong.yaml",
                                       (4, 84, 84), "uint8", 6):
            print(f"| {n} | {rb:.2f} | {rb * n * samples:,.0f} | {rl:.2f} | {rb / rl:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
