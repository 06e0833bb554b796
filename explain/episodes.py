"""Recorded evaluation episodes and the trained agents that play them: the common input of every explainer
(MAGIC-MASK's own mask and the baselines) and of the fidelity test, so that all of them are judged on the
same episodes with the same seeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from magicmask.models.action_selection import sample_rows, softmax_legal
from magicmask.models.inference import inference
from magicmask.actors.envs import make_env
from magicmask.actors.envs.base import RANDOM_OPPONENT, TeamWorld, random_legal
from magicmask.actors.evaluation import play_episode
from magicmask.learner import checkpoint
from magicmask.models.networks import StackedNets, build_nets, group_nets
from magicmask.protocol import config as C


@dataclass
class Episode:
    """One recorded episode of one agent, played with the mask in its explaining mode (m <= tau perturbs)
    or unmasked (`masked=False`). Arrays are per step of the agent, length L."""
    agent: int
    seed: int
    obs: np.ndarray            # [L, *obs_shape]
    legal: np.ndarray          # [L, A] bool
    actions: np.ndarray        # [L] int64, the actions taken
    own_actions: np.ndarray    # [L] int64, the policy's greedy choice at each step
    rewards: np.ndarray        # [L] float32
    m: np.ndarray              # [L] float32, the mask's keep-probability (MAGIC-MASK's importance)
    values: np.ndarray         # [L] float32, the policy critic's V(s)
    perturbed: np.ndarray      # [L] bool
    true_critical: np.ndarray | None = None  # [L] bool where the env reports info["critical"]
    masked: bool = True
    stats: dict = field(default_factory=dict)  # the env's episode_stats

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())


class AgentPolicy:
    """One trained agent (policy, value, mask), inference only (models/inference.py). `greedy` and `sample` also
    take the game's own observations (`native`: the env's `from_native`, e.g. connect4's derived planes added to
    PettingZoo's), so an outside harness can play the agent without knowing its input features."""

    def __init__(self, nets: StackedNets, tau: float, native=None):
        self.nets, self.tau = nets, tau
        self.nets.requires_grad_(False)
        self.fast = inference(nets)
        self.native = native or (lambda obs: obs)

    def forward(self, obs: np.ndarray):
        """obs[B, ...] -> (logits[B, A], value[B], m[B], mask_value[B]) as numpy."""
        return self.fast.forward(obs)

    def greedy(self, obs: np.ndarray, legal: np.ndarray) -> int:
        return int(softmax_legal(self.fast.logits(self.native(obs)[None]), legal[None])[0].argmax())

    def sample(self, obs: np.ndarray, legal: np.ndarray, rng: np.random.Generator) -> int:
        """An action drawn from the policy over the legal actions."""
        return int(sample_rows(rng, softmax_legal(self.fast.logits(self.native(obs)[None]), legal[None]))[0])


@dataclass
class TrainedRun:
    cfg: C.Config
    run_dir: Path
    policies: list[AgentPolicy]
    version: int

    def make_env(self, agent: int, copy_index: int = 0):
        """The env an agent is explained in, with the other seats played as `explain.opponent` says."""
        env = make_env(self.cfg, agent, copy_index, replayable=True)
        seat_opponents(env, self, agent, self.cfg.explain.opponent)
        return env


def seat_opponents(env, run: TrainedRun, agent: int, opponent: str) -> None:
    """Who plays the other seats of a shared world in explanation episodes (explain.opponent):
      peers      the run's other trained policies; in envs that seat one opponent per episode, the peer is
                 chosen by the episode seed
      self       the explained agent's own policy in every other seat
      random     uniform random legal moves
      <name>     one of the env's built-in players (connect4: lookahead, search:<depth>)
    Peers and self play greedily in cooperative worlds (TeamWorld: the team as it plays) and sample their policy
    in competitive ones, where greedy players on both sides would replay the same few games; the samples come
    from a generator seeded by the episode seed, so a replay from that seed meets the same moves until its
    perturbation changes the game. Per-agent worlds (gates, pong) have no other seat and ignore all this."""
    if opponent == "random":
        env.set_opponent(None)
        env.set_opponent_schedule(lambda seed: RANDOM_OPPONENT)
        return
    if opponent in ("peers", "self"):
        others = [agent] if opponent == "self" else [j for j in range(len(run.policies)) if j != agent] or [agent]
        players = {j: run.policies[agent if opponent == "self" else j] for j in range(len(run.policies))}
        greedy = isinstance(env, TeamWorld)
        env.seat_rng = np.random.default_rng(0)   # on the env, so that its snapshots hold it (explain/fidelity.py)

        def schedule(seed: int):
            env.seat_rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x0990])
            return others[seed % len(others)]

        def play(j, obs, legal):
            if j not in players:   # a seat no agent of the run holds (a PettingZoo env with more seats)
                return random_legal(env.seat_rng, legal)
            return players[j].greedy(obs, legal) if greedy else players[j].sample(obs, legal, env.seat_rng)
        env.set_opponent(play)
        env.set_opponent_schedule(schedule)
        return
    if opponent.partition(":")[0] not in env.builtin_players:
        allowed = ", ".join(["random", "peers", "self", *env.builtin_players])
        raise C.ConfigError(f"explain.opponent={opponent!r}: env {env.spec.name!r} has no such player; allowed: {allowed}")
    env.set_opponent_schedule(lambda seed: opponent)


def load_run(run_dir: str | Path, ckpt: str | Path | None = None, untrained: bool = False) -> TrainedRun:
    """The run's config and its final (or the given) checkpoint, one AgentPolicy per agent, each built from
    its own network group (agents with differently shaped observations, e.g. Dou Dizhu's roles, are stacked
    in separate groups: learner/checkpoint.py). untrained: the networks the run started from instead (version
    0, seeded with run.seed exactly as the learner builds them), for before-and-after measurements."""
    run_dir = Path(run_dir)
    cfg = C.load(run_dir / "config.yaml", environ={})
    env = make_env(cfg, 0)
    spec = env.spec
    source = "the untrained networks" if untrained else None
    if untrained:
        st = {"version": 0, "groups": [{"nets": nets.state_dict()}
                                       for _, nets in group_nets(spec, cfg.ppo, cfg.mask, cfg.run.seed)]}
    else:
        path = Path(ckpt) if ckpt else checkpoint.latest(run_dir / "checkpoints")
        if path is None or not path.is_file():
            env.close()
            raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'} (train first: magicmask run)")
        st, source = checkpoint.load(path), f"checkpoint {path}"
    groups, states = group_nets(spec, cfg.ppo, cfg.mask), checkpoint.group_states(st)
    if len(states) != len(groups):
        raise ValueError(f"{source} holds {len(states)} network group(s), env {cfg.env.name!r} with "
                         f"{cfg.run.agents} agents has {len(groups)}")
    policies: list[AgentPolicy] = [None] * cfg.run.agents  # type: ignore[list-item]
    for (agents, nets), gs in zip(groups, states):
        nets.load_state_dict(gs["nets"])
        for j, a in enumerate(agents):
            one = build_nets(spec.for_agent(a), cfg.ppo, cfg.mask, 1)
            one.load_agent_state(0, nets.agent_state(j))
            policies[a] = AgentPolicy(one, cfg.mask.tau, env.from_native)
    env.close()
    return TrainedRun(cfg, run_dir, policies, int(st["version"]))


def record_episode(env, policy: AgentPolicy, agent: int, seed: int, masked: bool = True,
                   rng: np.random.Generator | None = None, perturb_prob: float = 0.0) -> Episode:
    """Play one episode greedily; with `masked`, steps with m <= tau take a random legal action; with
    perturb_prob > 0, each step instead takes a random legal action with that probability (episodes whose
    returns vary, for explainers that learn from outcomes)."""
    rng = rng or np.random.default_rng(seed)
    forward = policy.forward
    if perturb_prob > 0:
        def forward(obs):
            logits, value, _, mask_value = policy.forward(obs)
            return logits, value, (rng.random(len(value)) >= perturb_prob).astype(np.float32), mask_value
    steps = play_episode(env, forward, seed, rng, policy.tau if (masked or perturb_prob > 0) else None)
    crit = [s["critical"] for s in steps]

    def col(key, dtype):
        return np.array([s[key] for s in steps], dtype)
    return Episode(agent=agent, seed=seed, obs=np.stack([s["obs"] for s in steps]),
                   legal=np.stack([s["legal"] for s in steps]), actions=col("action", np.int64),
                   own_actions=col("own_action", np.int64), rewards=col("reward", np.float32),
                   m=col("m", np.float32), values=col("value", np.float32), perturbed=col("perturbed", bool),
                   true_critical=None if any(c is None for c in crit) else np.array(crit, bool),
                   masked=masked, stats=dict(steps[-1]["episode_stats"]))


def record_episodes(run: TrainedRun, agent: int, n: int, first_seed: int = 0, masked: bool = True) -> list[Episode]:
    """n episodes of one agent with seeds first_seed .. first_seed + n - 1 (recorded in each Episode)."""
    env = run.make_env(agent)
    return [record_episode(env, run.policies[agent], agent, first_seed + i, masked) for i in range(n)]
