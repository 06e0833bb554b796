"""Past policies to play against: every `league_every` versions of each agent's weights, a snapshot is kept
(at most `league_size`; when full the oldest is replaced: a bounded queue, `collections.deque(maxlen)`).
Playing the population's earlier selves as well as its current members keeps self-play from cycling
(a policy that beats only today's peers forgets how to beat yesterday's)."""
from __future__ import annotations

import copy
from collections import deque

import numpy as np

from magicmask.actors.envs.base import RANDOM_OPPONENT
from magicmask.models.action_selection import sample_rows, softmax_legal
from magicmask.models.inference import NumpyNets, TorchNets, inference
from magicmask.models.networks import build_nets
from magicmask.protocol.config import Config
from magicmask.protocol.envspec import EnvSpec
from magicmask.protocol.opponents import OpponentMix


# Opponent ids of league snapshots: far above any agent or seat id (a PettingZoo env passes its seat index to the
# opponent callback, and may have more seats than the run has agents), so the two can never be confused.
LEAGUE_ID0 = 1 << 20


class League:
    def __init__(self, spec: EnvSpec, cfg: Config):
        self.spec, self.cfg = spec, cfg
        self.every = cfg.env.league_every
        # (agent, version, inference nets): models/inference.py
        self.snapshots: deque[tuple[int, int, NumpyNets | TorchNets]] = deque(maxlen=cfg.env.league_size)
        self.last_kept: dict[int, int] = {}   # agent -> version of its newest snapshot
        self._blank: dict[int, object] = {}    # agent -> networks to copy for a snapshot (built once: their
                                               # orthogonal initialisation costs ~50 ms, a copy ~1 ms)

    def __len__(self) -> int:
        return len(self.snapshots)

    def offer(self, agent: int, arrays: dict, version: int) -> bool:
        """Keep a snapshot of these weights when `every` versions passed since the agent's last one."""
        if version - self.last_kept.get(agent, -self.every) < self.every:
            return False
        if agent not in self._blank:
            self._blank[agent] = build_nets(self.spec.for_agent(agent), self.cfg.ppo, self.cfg.mask, 1)
            self._blank[agent].requires_grad_(False)
        nets = copy.deepcopy(self._blank[agent])
        nets.load_agent_state(0, arrays)
        self.snapshots.append((agent, version, inference(nets)))
        self.last_kept[agent] = version
        return True

    def forget(self) -> None:
        """A restarted learner numbers versions anew: keep the snapshots, restart the spacing."""
        self.last_kept.clear()

    def sample(self, rng: np.random.Generator) -> int | None:
        """A uniformly chosen snapshot's index, or None while the league is empty."""
        return int(rng.integers(len(self.snapshots))) if self.snapshots else None

    def act(self, index: int, obs: np.ndarray, legal: np.ndarray, rng: np.random.Generator) -> int:
        """Snapshot `index`'s move, sampled from its policy over the legal actions."""
        return int(sample_rows(rng, softmax_legal(self.snapshots[index][2].logits(obs[None]), legal[None]))[0])


def draw_opponent(mix: OpponentMix, league: League, agent: int, n_agents: int, rng: np.random.Generator):
    """Who plays the other seats of `agent`'s next episode, drawn from the env.opponents `mix`: a peer's id, the
    agent's own id (self), a league snapshot (LEAGUE_ID0 + its index), RANDOM_OPPONENT or a built-in player's
    name. League draws fall back to the peers while the league is empty."""
    kind = mix.draw(rng)
    if kind == "league" and len(league):
        return LEAGUE_ID0 + league.sample(rng)
    if kind in ("peers", "league"):
        others = [a for a in range(n_agents) if a != agent] or [agent]
        return others[int(rng.integers(len(others)))]   # rng.choice(others)'s draw, without its conversions
    if kind == "self":
        return agent
    return RANDOM_OPPONENT if kind == "random" else kind


def play_seat(league: League, peers, who: int, obs: np.ndarray, legal: np.ndarray) -> int:
    """The move of another seat's player `who`: a league snapshot (ids from LEAGUE_ID0) or a peer's latest
    policy (`peers`: PeerPolicies; uniform random for a seat no agent of the run holds)."""
    if who >= LEAGUE_ID0:
        return league.act(who - LEAGUE_ID0, obs, legal, peers.rng)
    return peers.opponent(who, obs, legal)

