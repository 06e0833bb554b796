"""Steps/s of highway-env with N controlled vehicles: (a) plain highway-fast-v0 through gymnasium
(MultiAgentObservation of Kinematics, MultiAgentAction of DiscreteMetaAction, uniform random actions) and
(b) our `highway` adapter (actors/envs/highway.py) for agent 0 with random actions for every vehicle.
Same episode seeds (episode k: seed k) and one process, so both run on the same core; the two are
measured in alternating rounds so that load from other processes falls on both alike.

    python deploy/bench_highway.py [--agents 4] [--seconds 20] [--rounds 3] [--env-id highway-fast-v0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402


def _timed(step, reset):
    """A measuring function: step(rng) -> done; episodes restart with seeds 1, 2, ... (the same for both)."""
    rng = np.random.default_rng(0)
    state = {"ep": 0}
    reset(0)

    def run(seconds: float) -> tuple[int, float]:
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            steps += 1
            if step(rng):
                state["ep"] += 1
                reset(state["ep"])
        return steps, time.perf_counter() - t0
    return run


def plain(env_id: str, n: int):
    import gymnasium as gym
    import highway_env
    from magicmask.actors.envs.highway_world import multiagent_config
    gym.register_envs(highway_env)
    env = gym.make(env_id, config=multiagent_config(n))

    def step(rng):
        _, _, term, trunc, _ = env.step(tuple(int(a) for a in rng.integers(5, size=n)))
        return term or trunc
    return _timed(step, lambda seed: env.reset(seed=seed))


def ours(env_id: str, n: int):
    from magicmask.actors.envs.highway import HighwayAgentEnv
    env = HighwayAgentEnv(0, n, env_id=env_id)      # other vehicles: uniform random (no opponent callback)

    def step(rng):
        _, _, _, term, trunc, _ = env.step(int(rng.integers(5)))
        return term or trunc
    return _timed(step, lambda seed: env.reset(seed=seed))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=4, help="controlled vehicles")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per measurement, split over the rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--env-id", default="highway-fast-v0", choices=["highway-fast-v0", "highway-v0"])
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    a = ap.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    runners = {"plain": plain(a.env_id, a.agents), "ours": ours(a.env_id, a.agents)}
    tot = {k: [0, 0.0] for k in runners}
    per = a.seconds / max(a.rounds, 1)
    for _ in range(max(a.rounds, 1)):
        for k, run in runners.items():
            s, dt = run(per)
            tot[k][0] += s
            tot[k][1] += dt
    sps = {k: s / dt for k, (s, dt) in tot.items()}
    ratio = sps["ours"] / sps["plain"]
    if a.json:
        print(json.dumps({"env_id": a.env_id, "agents": a.agents, "plain_steps_per_s": round(sps["plain"], 2),
                          "ours_steps_per_s": round(sps["ours"], 2), "ratio": round(ratio, 2)}))
    else:
        print(f"highway bench: {a.env_id}, {a.agents} controlled vehicles, one process (one core)")
        print(f"  (a) plain highway-env (MultiAgent Kinematics/DiscreteMetaAction): {sps['plain']:8.1f} steps/s "
              f"({tot['plain'][0]} steps)")
        print(f"  (b) our adapter (agent 0, random peers):                          {sps['ours']:8.1f} steps/s "
              f"({tot['ours'][0]} steps)")
        print(f"  ratio (b)/(a): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
