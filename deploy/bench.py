"""Benchmarks (not tests): run by deploy/bench.sh, results go to docs/BENCHMARKS.md by hand with the machine.

1. Collection: one real actor process (4 env copies, masked action selection, reports, fragments) against
   a learner that only receives (and returns the flow-control credit at once), vs. the same env copies stepped with random legal actions and nothing
   around them (the ceiling); their ratio.
2. Learner: updates/s of N agents in one batched update vs. a Python loop of N single-agent updates.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zmq

from magicmask.actors.envs import make_env
from magicmask.learner.batched_ppo import BatchedPPO
from magicmask.machine import machine_line
from magicmask.models.networks import AgentNets, nets_for
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode
from magicmask.protocol.transport import free_ports, make_socket, tcp

ROOT = Path(__file__).resolve().parents[1]


def ceiling(cfg: C.Config, seconds: float) -> float:
    envs = [make_env(cfg, 0, c) for c in range(cfg.env.copies)]
    rng = np.random.default_rng(0)
    legal = [e.reset(seed=i)[1] for i, e in enumerate(envs)]
    n, t0, seed = 0, time.perf_counter(), 100
    while time.perf_counter() - t0 < seconds:
        for c, e in enumerate(envs):
            _, lg, _, term, trunc, _ = e.step(int(rng.choice(np.flatnonzero(legal[c]))))
            if term or trunc:
                seed += 1
                lg = e.reset(seed=seed)[1]
            legal[c] = lg
            n += 1
    return n / (time.perf_counter() - t0)


def collection(env: str, preset: str, seconds: float) -> tuple[float, float]:
    overrides = C.port_overrides(free_ports(len(C.PORT_FIELDS)), metrics_port=0) + [
        "run.agents=1", "env.opponents=random=1", "env.eval_every=0"]
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
    received = 0
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
                    frag = decode(pull.recv_multipart(copy=False), 1 << 30)
                    received += 1  # give the credit back at once, as a learner that trains instantly would
                    pub.send_multipart([b"w/0", *sender.pack(
                        M.WEIGHTS, {"target": 0, "incarnation": frag.incarnation, "fragments": received},
                        state, policy_version=received)])
                    if t_first is None:
                        t_first = time.perf_counter()  # measure from the first fragment: start-up excluded
                    else:
                        got += 1
                    if t_first is not None and time.perf_counter() - t_first >= seconds:
                        break
            rate = got * steps_per_fragment / (time.perf_counter() - t_first) if t_first else 0.0
        finally:
            proc.terminate()
            proc.wait(10)
            for s in (pull, pub, router):
                s.close(linger=0)
    return rate, ceiling(cfg, min(seconds, 10))


def learner_rates(ns, updates: int) -> list[tuple[int, float, float]]:
    cfg = C.load(ROOT / "deploy/configs/connect4.yaml", environ={})
    T, E, A, D = cfg.actor.fragment_len, cfg.env.copies, 7, 84
    out = []
    for n in ns:
        g = torch.Generator().manual_seed(n)

        def batch(k):
            b = {"obs": torch.rand(k, T, E, D, generator=g), "actions": torch.randint(0, A, (k, T, E), generator=g),
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
            return b
        batched = BatchedPPO(AgentNets(n, D, A, cfg.ppo.hidden, seed=0), cfg.ppo, cfg.mask)
        singles = [BatchedPPO(AgentNets(1, D, A, cfg.ppo.hidden, seed=i), cfg.ppo, cfg.mask) for i in range(n)]
        bb, sb = batch(n), [batch(1) for _ in range(n)]
        batched.update(bb, list(range(n)))  # warm-up
        t0 = time.perf_counter()
        for _ in range(updates):
            batched.update(bb, list(range(n)))
        r_batched = updates / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(updates):
            for s, b in zip(singles, sb):
                s.update(b, [0])
        r_loop = updates / (time.perf_counter() - t0)
        out.append((n, r_batched, r_loop))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per collection figure")
    ap.add_argument("--updates", type=int, default=5, help="timed updates per learner figure")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for the learner figures (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    versions = (f"torch {torch.__version__}", f"Python {platform.python_version()}")
    print(f"# MAGIC-MASK benchmarks\nmachine: {machine_line(*versions)}\n")
    print("## Collection (1 actor process, 4 env copies, learner only receives)\n")
    print("| env | actor steps/s | random-action ceiling steps/s | ratio |\n|---|---|---|---|")
    for env, preset in (("gates", "gates.yaml"), ("connect4", "connect4.yaml")):
        rate, ceil = collection(env, preset, args.seconds)
        print(f"| {env} | {rate:,.0f} | {ceil:,.0f} | {rate / ceil:.3f} |", flush=True)
    print(f"\n## Learner: full PPO + mask updates/s (connect4 shapes, batch 128x4 per agent, torch threads "
          f"{torch.get_num_threads()})\n")
    print("| agents N | batched updates/s | per-agent loop updates/s | speed-up |\n|---|---|---|---|")
    for n, rb, rl in learner_rates((1, 2, 4, 8), args.updates):
        print(f"| {n} | {rb:.2f} | {rl:.2f} | {rb / rl:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
