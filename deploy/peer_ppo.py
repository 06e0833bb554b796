"""A single-process, CleanRL-style PPO loop: the peer `deploy/bench_peer.py` measures our system against
(issue 12 item 4). One process, no sockets, no mask: what our system's processes and the mask cost shows as
the gap between the two.

The same as `magicmask run --config connect4`: the env copies (`make_env`, env.copies per agent), who plays the
other seat (env.opponents: the peers' latest policies, the league of past snapshots, the lookahead and search
players), the networks and their initial weights (`build_nets`, seeded as the learner seeds them), the acting
networks (models/inference.py, as the actors), the update (`BatchedPPO`, all agents in one vectorised update
of actor.fragment_len x env.copies steps each, the learning rate annealed over run.total_steps) and the
evaluation (`actors.evaluation.evaluate` after the first rollout and every env.eval_every, which gives the
`vs_lookahead_win` figure).

Actions are drawn as the actors draw them (`select_training`) with the mask keeping every action: the policy
with the actors' epsilon-greedy exploration (actor.eps0, decaying with the agent's steps; `--set actor.eps0=0
--set actor.eps_min=0` gives CleanRL's plain samples of the policy). Not the same, on purpose: no mask
(`PolicyOnlyNets`), no policy lag (every rollout uses the newest weights); critical states and their sharing do
not exist here.

Its rows in --metrics have the shape of a run's metrics.jsonl (magicmask.metrics_log reads both).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from magicmask.actors.envs import env_spec, make_env
from magicmask.actors.evaluation import evaluate
from magicmask.actors.league import League, draw_opponent, play_seat
from magicmask.actors.peers import PeerPolicies
from magicmask.learner.batched_ppo import BatchedPPO
from magicmask.models.action_selection import epsilon, select_training, softmax_legal
from magicmask.models.inference import NumpyNets
from magicmask.models.networks import AgentNets, StackedNets, build_nets
from magicmask.protocol import config as C
from magicmask.protocol.opponents import opponent_mix

ROOT = Path(__file__).resolve().parents[1]


class PolicyOnlyNets(StackedNets):
    """The project's networks with the mask left out: the policy and value MLPs of `nets` run, the mask and its
    critic never do (their outputs are zeros without a gradient). BatchedPPO's mask terms then cost a few
    element-wise operations on [agents, minibatch] tensors and no network pass: its mask loss is a mean over
    no step (0), its regulariser is multiplied by 0, and the mask critic's loss has no gradient. The mask's
    parameters get no gradient, so the optimizer and the grad-norm clip skip them."""

    def __init__(self, nets: StackedNets):
        super().__init__()
        if not NumpyNets.supports(nets):
            raise ValueError("peer_ppo: needs the built-in MLP networks (flat observations, no ppo.network)")
        self.agent_nets: AgentNets = nets
        self.n_agents, self.n_actions = nets.n_agents, nets.n_actions

    def policy_parameters(self):
        return self.agent_nets.policy_parameters()

    def mask_parameters(self):
        return self.agent_nets.mask_parameters()

    def forward(self, obs: torch.Tensor, sel=slice(None), actions: torch.Tensor | None = None):
        x = obs.reshape(*obs.shape[:2], -1).to(self.dtype)
        zeros = x.new_zeros(x.shape[:2])
        return self.agent_nets.policy_logits(x, sel, actions), self.values(x, sel), zeros, zeros

    def values(self, obs: torch.Tensor, sel=slice(None)) -> torch.Tensor:
        """V(obs[N, B, ...]) -> [N, B]: the critic alone, for a whole rollout at once."""
        nets = self.agent_nets
        return nets.scalar(nets.value, obs.reshape(*obs.shape[:2], -1).to(self.dtype), sel)


class Opponents:
    """Who plays the other seat, as the actors decide it (actors/actor.py, `draw_opponent` and
    `play_other_seat`), with every agent's latest weights at hand in this process: `peers` (PeerPolicies, also
    what evaluation plays with) and the `league` of past snapshots."""

    def __init__(self, cfg: C.Config, spec, seed: int):
        self.cfg = cfg
        self.mix = opponent_mix(cfg.env.opponents)
        self.peers = PeerPolicies(spec, cfg, seed)   # its rng draws the peers' and the league's moves
        self.league = League(spec, cfg)

    def publish(self, nets: AgentNets, version: int) -> None:
        """Every agent's new weights, as an actor takes a weights message: to the peers and to the league."""
        for i in range(nets.n_agents):
            arrays = nets.agent_state(i)
            self.peers.load(i, arrays, version)
            self.league.offer(i, arrays, version)

    def draw(self, agent: int, rng: np.random.Generator):
        """The next episode's opponent of `agent`, as an actor draws it (actors.league.draw_opponent)."""
        return draw_opponent(self.mix, self.league, agent, self.cfg.run.agents, rng)

    def play(self, who: int, obs: np.ndarray, legal: np.ndarray) -> int:
        """The env's callback for the other seat, as an actor's (actors.league.play_seat)."""
        return play_seat(self.league, self.peers, who, obs, legal)


def no_mask_arrays(N: int, T: int, E: int) -> dict[str, torch.Tensor]:
    """The batch arrays that describe the mask, saying it never acted: keep-probability 1, nothing perturbed,
    no copy masked, no guidance."""
    false = torch.zeros(N, T, E, dtype=torch.bool)
    zero = torch.zeros(N, T, E)
    return {"m": torch.ones(N, T, E), "mask_values": zero, "final_mask_values": zero,
            "boot_mask_values": torch.zeros(N, E), "perturbed": false, "mask_applied": false, "masked": false,
            "guided": false}


def lookahead_mean(latest: dict[int, dict], n_agents: int) -> float | None:
    """Mean over agents of their latest `vs_lookahead_win`; None until every agent has one."""
    wins = [latest[a]["vs_lookahead_win"] for a in range(n_agents) if "vs_lookahead_win" in latest.get(a, {})]
    return float(np.mean(wins)) if len(wins) == n_agents else None


def metrics_row(t: float, version: int, steps: int, steps_per_s: float, stats: dict, returns: list[list[float]],
                evaluated: dict[int, dict]) -> dict:
    """One row as the learner writes it to metrics.jsonl (per agent: env steps, losses, mean return, evaluation)."""
    row = {"time": t, "version": version, "steps_per_s": steps_per_s, "agents": {}}
    for i, rets in enumerate(returns):
        d = {k: float(stats[k][i]) for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance")}
        d["env_steps"] = steps
        if rets:
            d["mean_return"] = float(np.mean(rets))
        if i in evaluated:
            d["eval"] = evaluated[i]
        row["agents"][str(i)] = d
    return row


def train(cfg: C.Config, target: float, metrics: Path | None = None, log=print) -> dict:
    """Train cfg.run.agents agents for cfg.run.total_steps env steps each. Returns the summary: env steps/s
    (all agents, set-up included), the wall time and steps per agent at which the mean win rate against the
    lookahead player first reached `target` (None if never), the best mean reached."""
    t0 = time.time()
    N, E, T = cfg.run.agents, cfg.env.copies, cfg.actor.fragment_len
    if cfg.env.max_episode_steps:
        raise C.ConfigError("peer_ppo: env.max_episode_steps must be 0 (a truncated episode needs a bootstrap "
                            "this loop does not compute; connect4 ends every game by itself)")
    spec = env_spec(cfg)
    if len(spec.groups()) != 1:
        raise C.ConfigError(f"peer_ppo: env {cfg.env.name!r} has agents of several observation shapes")
    torch.manual_seed(cfg.run.seed)   # as the learner: the same initial weights
    nets = PolicyOnlyNets(build_nets(spec, cfg.ppo, cfg.mask, N, cfg.run.seed))
    ppo = BatchedPPO(nets, cfg.ppo, cfg.mask)
    rngs = [np.random.default_rng(np.random.SeedSequence([cfg.run.seed, i])) for i in range(N)]   # per agent
    act_rng = np.random.default_rng(np.random.SeedSequence([cfg.run.seed, N]))   # the loop's own action samples
    opponents = Opponents(cfg, spec, cfg.run.seed)
    opponents.publish(nets.agent_nets, 0)
    envs = [[make_env(cfg, i, c) for c in range(E)] for i in range(N)]
    episode_seed = [int(r.integers(2**31)) * 1000 for r in rngs]

    def reset(i: int, c: int):
        """Agent i's copy c starts an episode against a newly drawn opponent."""
        episode_seed[i] += 1
        envs[i][c].set_episode_opponent(opponents.draw(i, rngs[i]))
        obs, legal, _ = envs[i][c].reset(seed=episode_seed[i])
        return obs, legal

    next_obs = np.zeros((N, E, *spec.obs_shape), spec.obs_dtype)
    next_legal = np.zeros((N, E, spec.n_actions), bool)
    for i in range(N):
        for c in range(E):
            envs[i][c].set_opponent(opponents.play)
            next_obs[i, c], next_legal[i, c] = reset(i, c)
    ep_return = np.zeros((N, E))   # of each copy's episode so far

    # the rollout's storage, [agents, T, copies, ...], overwritten by every rollout
    obs = np.zeros((N, T, E, *spec.obs_shape), spec.obs_dtype)
    legal = np.zeros((N, T, E, spec.n_actions), bool)
    actions = np.zeros((N, T, E), np.int64)
    logp = np.zeros((N, T, E), np.float32)             # log mu(a): the policy mixed with epsilon
    eps = np.zeros((N, T, E), np.float32)
    eps_random = np.zeros((N, T, E), bool)
    rewards = np.zeros((N, T, E), np.float32)
    terminated = np.zeros((N, T, E), bool)
    fixed = {"truncated": torch.zeros(N, T, E, dtype=torch.bool), "final_values": torch.zeros(N, T, E),
             **no_mask_arrays(N, T, E)}
    keep, no = np.ones(N * E), np.zeros(N * E, bool)   # select_training: the mask keeps all, none masked or guided
    schedule = (cfg.actor.eps0, cfg.actor.eps_min, cfg.actor.eps_decay, cfg.actor.eps_fixed)

    steps, version, latest = 0, 0, {}
    summary = {"agents": N, "target": target, "time_to_target_s": None, "steps_to_target": None,
               "best_mean": None, "best_at_steps": None}
    with open(metrics or os.devnull, "a") as out:
        while steps < cfg.run.total_steps:
            policies = [opponents.peers.fast[i] for i in range(N)]   # the newest weights, as numpy (inference.py)
            returns = [[] for _ in range(N)]
            for t in range(T):
                obs[:, t], legal[:, t] = next_obs, next_legal
                logits = np.stack([policies[i].logits(next_obs[i]) for i in range(N)])      # [N, E, A]
                pi = softmax_legal(logits, next_legal).reshape(N * E, -1)
                eps[:, t] = epsilon(steps + t * E, *schedule)                           # as the actors explore
                picks, mu, _, fired, _ = select_training(act_rng, pi, legal[:, t].reshape(N * E, -1), keep,
                                                         eps[0, t, 0], no, no)
                actions[:, t], logp[:, t], eps_random[:, t] = (x.reshape(N, E) for x in (picks, mu, fired))
                for i in range(N):
                    for c in range(E):
                        o, lg, r, term, trunc, _ = envs[i][c].step(int(actions[i, t, c]))
                        rewards[i, t, c], terminated[i, t, c] = r, term
                        ep_return[i, c] += r
                        if term or trunc:
                            returns[i].append(float(ep_return[i, c]))
                            ep_return[i, c] = 0.0
                            o, lg = reset(i, c)
                        next_obs[i, c], next_legal[i, c] = o, lg
            version += 1
            evaluated = {}
            if cfg.env.eval_every and (version == 1 or version % cfg.env.eval_every == 0):   # the actors' schedule
                evaluated = {i: evaluate(cfg, i, opponents.peers, rngs[i]) for i in range(N)}
                latest.update(evaluated)

            with torch.no_grad():   # every value of the rollout and the bootstrap in one pass
                flat = np.concatenate([obs.reshape(N, T * E, -1), next_obs.reshape(N, E, -1)], 1)
                values = nets.values(torch.as_tensor(flat))
            batch = {"obs": torch.as_tensor(obs), "legal": torch.as_tensor(legal),
                     "actions": torch.as_tensor(actions), "logp_mu": torch.as_tensor(logp),
                     "rewards": torch.as_tensor(rewards), "terminated": torch.as_tensor(terminated),
                     "eps": torch.as_tensor(eps), "eps_random": torch.as_tensor(eps_random),
                     "values": values[:, :T * E].reshape(N, T, E), "boot_values": values[:, T * E:], **fixed}
            lr_frac = max(0.0, 1.0 - steps / cfg.run.total_steps) if cfg.ppo.anneal_lr else 1.0
            stats = ppo.update(batch, list(range(N)), lr_frac)
            steps += T * E
            opponents.publish(nets.agent_nets, version)

            now = time.time()
            out.write(json.dumps(metrics_row(now, version, steps, N * steps / (now - t0), stats, returns, evaluated)))
            out.write("\n")
            out.flush()
            mean = lookahead_mean(latest, N) if evaluated else None
            if mean is None:
                continue
            if summary["best_mean"] is None or mean > summary["best_mean"]:
                summary["best_mean"], summary["best_at_steps"] = mean, steps
            if mean >= target and summary["time_to_target_s"] is None:
                summary["time_to_target_s"], summary["steps_to_target"] = now - t0, steps
            vs_random = np.mean([latest[i]["vs_random_win"] for i in range(N)])
            log(f"{now - t0:7.1f} s  {steps:>8,} steps/agent  {N * steps / (now - t0):7,.0f} env steps/s  "
                f"mean win vs lookahead {mean:.3f}, vs random {vs_random:.3f}")
    wall = time.time() - t0
    summary.update(env_steps=N * steps, wall_s=wall, steps_per_s=N * steps / wall)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "deploy/configs/connect4.yaml"),
                    help="YAML config (default: the connect4 preset)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    ap.add_argument("--steps", type=int, help="env steps per agent (run.total_steps)")
    ap.add_argument("--target", type=float, default=0.3, help="mean win rate against the lookahead player to time")
    ap.add_argument("--metrics", type=Path, help="append one row per update here (metrics.jsonl's shape)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see below)")
    args = ap.parse_args(argv)
    overrides = args.set + ([f"run.total_steps={args.steps}"] if args.steps else [])
    try:
        cfg = C.load(args.config, overrides, environ={})
    except C.ConfigError as e:
        print(f"peer_ppo: {e}", file=sys.stderr)
        return 2
    # One thread by default: the update's matrices are small (minibatches of 128 rows per agent, 128 hidden
    # units), where a second intra-op thread costs more in hand-offs than it saves, and on a 2-core machine
    # it would take the core the env steps need. The learner runs with 1 thread too (learner.torch_threads).
    # numpy's BLAS (the acting networks) gets the same count, as the actors' OPENBLAS_NUM_THREADS=1.
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads, user_api="blas"):
        s = train(cfg, args.target, args.metrics)
    reached = (f"first >= {args.target} at {s['time_to_target_s']:.1f} s ({s['steps_to_target']:,} steps per "
               f"agent)" if s["time_to_target_s"] is not None else f"never >= {args.target} (best {s['best_mean']})")
    print(f"peer_ppo: {s['agents']} agents, {s['env_steps']:,} env steps in {s['wall_s']:.1f} s: "
          f"{s['steps_per_s']:,.0f} env steps/s; mean win vs lookahead {reached}")
    print("summary: " + json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
