"""A peer side by side (issue 12 item 4): on the same cores and env (connect4, 4 agents, the connect4 preset),
one after the other,
  ours    `magicmask run --config connect4`: broker, learner and one actor per agent as processes, masks trained;
  loop    deploy/peer_ppo.py: one process, CleanRL-style, the same networks and update without the mask;
  rllib   RLlib's PPO on PettingZoo's connect_four_v3, in its own venv (--rllib-venv; made with
          `pip install "ray[rllib]"` when missing). If it does not install or run, the table says why.
Each writes rows of metrics.jsonl's shape; from them, the same way for all three:
  env steps/s      steps trained on by all agents between the first and the last row over the time between
                   them (the steady rate: start-up, an RLlib cluster's especially, left out)
  time to target   seconds from launching the command to the first row where the mean over agents of each
                   agent's latest `vs_lookahead_win` (greedy games against the one-step lookahead player,
                   env.eval_episodes of them, as the actors evaluate) is >= --target
The 1-minute load average is sampled every 5 s of each run: on a shared machine it says what a figure is worth.

RLlib's set-up (the closest to the preset it offers without writing our own system into it): 4 PPO modules
(two tanh layers of ppo.hidden units, separate critic, action masking: RLlib's ActionMaskingTorchRLModule),
the preset's PPO settings, a batch of fragment_len x copies steps per module, 2 env runners x 8 games.
Who plays: per episode one seat is a built-in player with the preset's weights of lookahead, search:2 and
random, else two different modules play each other (RLlib has no league: its share goes to the peers). The
game is magicmask's FastConnectFour, PettingZoo's connect_four_v3 with its Python loops rewritten (same rules,
observations and rewards), so the env costs what it costs the other two. RLlib runs for --rllib-seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "deploy/configs/connect4.yaml"


# ---------------------------------------------------------------- running and reading
def run_sampled(cmd: list[str], log: Path, timeout: float) -> dict:
    """Run `cmd` with its output in `log`. Returns its launch time, exit code, the 1-minute load average every 5 s
    and the CPU seconds of it and every process under it that was waited for (RUSAGE_CHILDREN: the processes
    of our system, Ray's). Killed, with its process group, after `timeout` seconds."""
    loads = [os.getloadavg()[0]]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as f:
        t_launch = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                if time.time() - t_launch > timeout:
                    os.killpg(proc.pid, 15)
                    proc.wait(30)
                    break
                time.sleep(5)
                loads.append(os.getloadavg()[0])
        except BaseException:
            os.killpg(proc.pid, 9)
            raise
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {"t_launch": t_launch, "code": proc.returncode, "loads": loads, "cpu_s": cpu}


def figures(metrics: Path, n_agents: int, target: float, t_launch: float) -> dict:
    """The table's figures from rows of metrics.jsonl's shape: per row (one update) its time and per agent the
    env steps trained on so far and, when the actor sent one, the evaluation (magicmask.metrics_log)."""
    from magicmask.metrics_log import number, read_jsonl
    steps, latest, first, last = {}, {}, None, None
    out = {"time_to_target_s": None, "steps_to_target": None, "best_mean": None, "best_at_steps": None}
    for row in read_jsonl(metrics):
        for agent, d in row["agents"].items():
            steps[agent] = d["env_steps"]
            win = number((d.get("eval") or {}).get("vs_lookahead_win"))
            if win is not None:
                latest[agent] = win
        if len(steps) < n_agents:
            continue
        total = sum(steps.values())
        first, last = first or (row["time"], total), (row["time"], total)
        if len(latest) < n_agents:
            continue
        mean = sum(latest.values()) / n_agents
        if out["best_mean"] is None or mean > out["best_mean"]:
            out["best_mean"], out["best_at_steps"] = mean, total / n_agents
        if mean >= target and out["time_to_target_s"] is None:
            out["time_to_target_s"], out["steps_to_target"] = row["time"] - t_launch, total / n_agents
    if last is None:
        raise ValueError(f"{metrics}: no row after which every agent had trained")
    out["steps_per_s"] = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else None
    out["steps_per_agent"], out["total_steps"] = last[1] / n_agents, last[1]
    return out


def set_options(args) -> list[str]:
    """--set SECTION.FIELD=VALUE for each of the bench's overrides (the same for every system)."""
    return [x for item in args.set for x in ("--set", item)]


def ours(args, out: Path) -> dict:
    run_dir = out / "ours"
    cmd = [sys.executable, "-m", "magicmask.cli", "run", "--config", str(PRESET), "--run-dir", str(run_dir),
           "--steps", str(args.steps), "--set", "run.progress=false", *set_options(args)]
    run = run_sampled(cmd, out / "ours.log", args.timeout)
    if run["code"]:
        raise RuntimeError(f"magicmask run exited {run['code']}: see {out / 'ours.log'}")
    return {**figures(run_dir / "metrics.jsonl", args.agents, args.target, run["t_launch"]), **run}


def loop(args, out: Path) -> dict:
    metrics = out / "loop.jsonl"
    cmd = [sys.executable, str(ROOT / "deploy/peer_ppo.py"), "--config", str(PRESET), "--steps", str(args.steps),
           "--target", str(args.target), "--metrics", str(metrics), *set_options(args)]
    run = run_sampled(cmd, out / "loop.log", args.timeout)
    if run["code"]:
        raise RuntimeError(f"deploy/peer_ppo.py exited {run['code']}: see {out / 'loop.log'}")
    return {**figures(metrics, args.agents, args.target, run["t_launch"]), **run}


def rllib(args, out: Path) -> dict | str:
    """RLlib's figures, or a string saying why there are none."""
    venv = Path(args.rllib_venv)
    py = venv / "bin/python"
    if not py.exists():
        log = out / "rllib-install.log"
        torch_spec = os.environ.get("MAGICMASK_TORCH_SPEC", "torch==2.13.0").split()
        with open(log, "w") as f:
            try:
                steps = [[sys.executable, "-m", "venv", str(venv)],
                         [str(py), "-m", "pip", "install", *torch_spec, "ray[rllib]", "pettingzoo"]]
                for cmd in steps:
                    if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=args.install_timeout,
                                      check=False).returncode:
                        return f"`{' '.join(cmd[-4:])}` failed: {last_lines(log)}"
            except subprocess.TimeoutExpired:
                return f"`pip install \"ray[rllib]\"` did not finish within {args.install_timeout} s"
    metrics = out / "rllib.jsonl"
    project_site = sysconfig.get_paths()["purelib"]   # this venv's packages, magicmask's import finder among them
    cmd = [str(py), str(Path(__file__).resolve()), "--rllib-child", "--project-site", project_site,
           "--steps", str(args.steps), "--seconds", str(args.rllib_seconds), "--metrics", str(metrics),
           *set_options(args)]
    run = run_sampled(cmd, out / "rllib.log", args.rllib_seconds + 600)
    if run["code"] or not metrics.is_file():
        return f"RLlib's run exited {run['code']}: {last_lines(out / 'rllib.log')}"
    return {**figures(metrics, args.agents, args.target, run["t_launch"]), **run}


def last_lines(path: Path, n: int = 3) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-n:])[-600:]


# ---------------------------------------------------------------- RLlib, in its own venv
def rllib_child(args) -> int:
    """RLlib's PPO (runs under the RLlib venv's Python). magicmask (FastConnectFour, the built-in players,
    `evaluate_vs`, the config) comes from the project's venv, added after this venv's own packages, in this
    process and in every Ray worker."""
    site.addsitedir(args.project_site)

    def setup():   # in every Ray worker, before it builds an env
        import site
        site.addsitedir(args.project_site)

    import gymnasium as gym
    import numpy as np
    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.env.multi_agent_env import MultiAgentEnv
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule

    from magicmask.actors.envs.connect4 import (COLS, FEATURES, ROWS, SEATS, FastConnectFour, builtin_player, evaluate_vs,
                                                features_of)
    from magicmask.protocol import config as C
    from magicmask.protocol.opponents import opponent_mix

    cfg = C.load(PRESET, [*args.set, f"run.total_steps={args.steps}"], environ={})
    n, mix = cfg.run.agents, opponent_mix(cfg.env.opponents)
    builtin = {k: w for k, w in mix.items() if k not in ("peers", "league", "self")}   # the rest: modules play
    features = features_of(cfg)   # the preset's observation planes, as our agents see them
    space = gym.spaces.Dict({"observations": gym.spaces.Box(0.0, 1.0, (ROWS * COLS * FEATURES[features],), np.float32),
                             "action_mask": gym.spaces.Box(0.0, 1.0, (COLS,), np.float32)})

    class Connect4(MultiAgentEnv):
        """connect_four_v3 turn by turn for RLlib; per episode one seat may be a built-in player (inside)."""

        def __init__(self, config=None):
            super().__init__()
            self.game = FastConnectFour(features)
            self.possible_agents = self.agents = list(SEATS)
            self.observation_spaces = {s: space for s in SEATS}
            self.action_spaces = {s: gym.spaces.Discrete(COLS) for s in SEATS}
            self.players = {k: builtin_player(k) for k in builtin}
            index = (getattr(config, "worker_index", 0), getattr(config, "vector_index", 0))
            self.rng = np.random.default_rng([cfg.run.seed, *index])
            self.other = None   # (seat, player) of a built-in player this episode

        def observe(self, seat):
            o = self.game.observe(seat)
            return {"observations": o["observation"].reshape(-1).astype(np.float32),
                    "action_mask": o["action_mask"].astype(np.float32)}

        def done(self):
            return any(self.game.terminations.values())

        def play_other(self):
            if self.other and not self.done() and self.game.agent_selection == self.other[0]:
                o = self.observe(self.other[0])
                self.game.step(int(self.other[1](o["observations"], o["action_mask"] > 0, self.rng)))

        def reset(self, *, seed=None, options=None):
            self.game.reset(seed=int(self.rng.integers(2**31)))
            kinds = [*builtin, None]
            kind = kinds[self.rng.choice(len(kinds), p=[*builtin.values(), 1 - sum(builtin.values())])]
            self.other = (SEATS[self.rng.integers(2)], self.players[kind]) if kind else None
            self.agents = [s for s in SEATS if not self.other or s != self.other[0]]
            self.play_other()
            seat = self.game.agent_selection
            return {seat: self.observe(seat)}, {}

        def step(self, action_dict):
            self.game.step(int(action_dict[self.game.agent_selection]))
            self.play_other()
            if self.done():   # every module seat sees the end and its reward
                seats = self.agents
                return ({s: self.observe(s) for s in seats}, {s: float(self.game.rewards[s]) for s in seats},
                        {**{s: True for s in seats}, "__all__": True}, {"__all__": False}, {})
            seat = self.game.agent_selection
            return {seat: self.observe(seat)}, {seat: 0.0}, {"__all__": False}, {"__all__": False}, {}

    def mapping(agent_id, episode, **_):
        """Two different modules per episode, drawn from the episode's id."""
        h = zlib.crc32(str(episode.id_).encode())
        first = h % n
        return f"p{first}" if agent_id == SEATS[0] or n == 1 else f"p{(first + 1 + (h // n) % (n - 1)) % n}"

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": setup})
    modules = {f"p{i}" for i in range(n)}
    module = RLModuleSpec(module_class=ActionMaskingTorchRLModule, model_config={
        "fcnet_hiddens": [cfg.ppo.hidden] * 2, "fcnet_activation": "tanh", "vf_share_layers": False})
    ppo = cfg.ppo
    algo = (PPOConfig().environment(Connect4).multi_agent(policies=modules, policy_mapping_fn=mapping)
            .env_runners(num_env_runners=2, num_envs_per_env_runner=8)
            .training(train_batch_size_per_learner=n * cfg.actor.fragment_len * cfg.env.copies,
                      minibatch_size=cfg.actor.fragment_len * cfg.env.copies // ppo.minibatches,
                      num_epochs=ppo.epochs, lr=ppo.lr, entropy_coeff=ppo.ent_coef, clip_param=ppo.clip,
                      lambda_=ppo.gae_lambda, gamma=ppo.gamma, grad_clip=ppo.max_grad_norm, vf_loss_coeff=ppo.vf_coef)
            .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={m: module for m in modules}))
            .debugging(seed=cfg.run.seed)).build_algo()

    def greedy(m):
        def act(obs, legal):
            with torch.no_grad():
                o = algo.get_module(m).forward_inference({"obs": {
                    "observations": torch.as_tensor(obs[None], dtype=torch.float32),
                    "action_mask": torch.as_tensor(legal[None], dtype=torch.float32)}})
            return int(np.argmax(np.where(legal, o["action_dist_inputs"][0].numpy(), -np.inf)))
        return act

    eval_rng = np.random.default_rng(cfg.run.seed)
    t0, it = time.time(), 0
    with open(args.metrics, "a") as f:
        while True:
            r = algo.train()
            it += 1
            sampled = r["env_runners"]["num_module_steps_sampled_lifetime"]
            stop = time.time() - t0 >= args.seconds or min(sampled.get(m, 0) for m in modules) >= args.steps
            row = {"time": time.time(), "version": it, "agents": {}}
            for i in range(n):
                d = {"env_steps": int(sampled.get(f"p{i}", 0))}
                if cfg.env.eval_every and (it == 1 or it % cfg.env.eval_every == 0 or stop):
                    d["eval"] = {f"vs_{name.replace(':', '')}_{k}": v for name in ("random", "lookahead", "search:2")
                                 for k, v in evaluate_vs(greedy(f"p{i}"), builtin_player(name), cfg.env.eval_episodes,
                                                         int(eval_rng.integers(2**31)), features).items()}
                row["agents"][str(i)] = d
            f.write(json.dumps(row) + "\n")
            f.flush()
            if stop:
                break
    algo.stop()
    ray.shutdown()
    return 0


# ---------------------------------------------------------------- the table
def table(results: dict, target: float) -> str:
    loop = results.get("loop")
    header = (f"| system | env steps/s | steps/s / loop's | wall time to mean win vs lookahead >= {target} "
              f"| steps per agent to it | best mean win vs lookahead (at steps per agent) | steps per agent "
              f"| env steps per CPU-second | load (1 min) min-mean-max |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if isinstance(r, str):
            lines.append(f"| {name} | {r} |" + " - |" * 7)
            continue
        ratio = f"{r['steps_per_s'] / loop['steps_per_s']:.2f}" if isinstance(loop, dict) else "-"
        to = "-" if r["steps_to_target"] is None else f"{r['steps_to_target']:,.0f}"
        best = "-" if r["best_mean"] is None else f"{r['best_mean']:.3f} ({r['best_at_steps']:,.0f})"
        reached = f"{r['time_to_target_s']:,.0f} s" if r["time_to_target_s"] is not None else "not reached"
        loads = r["loads"]
        lines.append(f"| {name} | {r['steps_per_s']:,.0f} | {ratio} | {reached} | {to} | {best} "
                     f"| {r['steps_per_agent']:,.0f} | {r['total_steps'] / r['cpu_s']:,.0f} "
                     f"| {min(loads):.1f}-{sum(loads) / len(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150_000, help="env steps per agent (run.total_steps) of each system")
    ap.add_argument("--target", type=float, default=0.2, help="mean win rate against the lookahead player to time")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="config override for all three")
    ap.add_argument("--only", default="ours,loop,rllib", help="which systems, comma-separated (default: all)")
    ap.add_argument("--out", help="folder for the runs' files (default: a new folder in /tmp)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds after which ours or the loop is stopped")
    ap.add_argument("--rllib-venv", default="/tmp/rllib-venv", help="RLlib's venv, made when missing")
    ap.add_argument("--rllib-seconds", type=float, default=300, help="RLlib's training time (it is slow: see the docs)")
    ap.add_argument("--install-timeout", type=float, default=1200, help="seconds for `pip install \"ray[rllib]\"`")
    ap.add_argument("--rllib-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--project-site", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--metrics", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rllib_child:
        return rllib_child(args)
    from magicmask.machine import machine_line
    from magicmask.protocol import config as C
    runners = {"ours": ours, "loop": loop, "rllib": rllib}
    unknown = sorted(set(args.only.split(",")) - set(runners))
    if unknown:
        ap.error(f"--only: unknown {', '.join(unknown)}; allowed: {', '.join(runners)}")
    try:
        args.agents = C.load(PRESET, args.set, environ={}).run.agents
    except C.ConfigError as e:
        ap.error(str(e))
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-peer-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"## A peer side by side: ours, a single-process PPO loop, RLlib (connect4, {args.agents} agents, "
          f"{args.steps:,} steps per agent)\n\nmachine: {machine_line()}\nfiles: {out}\n", flush=True)
    results = {}
    for name in args.only.split(","):
        print(f"{name}: running ...", flush=True)
        results[name] = runners[name](args, out)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table(results, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
