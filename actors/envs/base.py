"""The one interface every environment adapter offers an actor: a single decision stream for its own agent.

Other seats of a shared world are played inside the adapter by a callback the actor supplies (peer
policies, inference only), so the actor's loop is the same for a per-agent world (gates) and a
shared one (Connect Four, any PettingZoo env).

Subclasses implement `_reset` and `_step`; the public `reset` / `step` here do what every env must
do the same way: reject illegal actions with a clear error, count the agent's steps, truncate at
`max_episode_steps`, and attach `episode_stats` on the last step of an episode.

Every hook a caller may use is declared here with its default, so callers never probe an env with
`hasattr`: `set_episode_opponent` (envs that pick who plays the other seats per episode say so with
`per_episode_opponent`) and `evaluate_extra` (env-specific evaluation numbers).

Cooperative shared worlds (highway, grf-3v1) also implement `TeamWorld`: every seat stepped together,
which the fidelity test's team window needs (all agents perturbed in one window, the team's return).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np

from magicmask.protocol.envspec import EnvSpec

# fn(seat_agent_id, obs_from_that_seat, legal_of_that_seat) -> action
OpponentFn = Callable[[int, np.ndarray, np.ndarray], int]
# fn(obs, legal) -> action: the policy `evaluate_extra` evaluates
PolicyFn = Callable[[np.ndarray, np.ndarray], int]
RANDOM_OPPONENT = -1   # `set_episode_opponent`: uniform random legal moves in the other seats
# Who plays the other seats for one episode: a peer's agent id (through the opponent callback), RANDOM_OPPONENT,
# or the name of one of the env's `builtin_players` (e.g. connect4's "lookahead" or "search:2")
Opponent = int | str


def random_legal(rng: np.random.Generator, legal: np.ndarray) -> int:
    """A uniform random legal action (the default player of every other seat)."""
    idx = np.flatnonzero(legal)
    if len(idx) == 0:
        raise ValueError("no legal action to choose from")
    return int(idx[rng.integers(len(idx))])


class AgentEnv(ABC):
    """One env copy seen from one agent. `spec` is what every process agrees on (shapes, dtypes)."""

    spec: EnvSpec
    # True: the other seats are played by an opponent chosen per episode (`set_episode_opponent`), which the
    # actor draws before every reset; False: always by the opponent callback (`set_opponent`)
    per_episode_opponent: bool = False
    # names of rule or search players the env can seat itself (`set_episode_opponent("search:2")`); "search"
    # stands for "search:<depth>"
    builtin_players: tuple[str, ...] = ()
    # True: `step_async` hands the step to a thread of the env's own (pong's EnvPool backend), so an actor's
    # copies step at the same time; False: the step runs in `step_wait` (`_recv`)
    overlaps_steps: bool = False

    def __init__(self, agent_id: int, max_episode_steps: int = 0):
        self._agent_id = int(agent_id)
        self.max_episode_steps = int(max_episode_steps)   # 0: the env's own limit only
        self.copy_index = 0                                 # which of its agent's env copies this is (make_env)
        self._opponent: OpponentFn | None = None           # None: uniform random legal
        self._schedule: Callable[[int], Opponent] | None = None  # seed -> the episode's opponent
        self._opp_rng = np.random.default_rng(0)           # reseeded per episode, so seeds fix dynamics
        self.seat_rng: np.random.Generator | None = None   # the other seats' players' generator when set from
                                                            # outside (explain's seat_opponents): part of a snapshot
        self._t = 0
        self._pending = 0                                   # the action step_async started
        self._legal: np.ndarray | None = None
        self._done = True

    @property
    def agent_id(self) -> int:
        """The agent this stream belongs to (read-only: an env copy never changes owner)."""
        return self._agent_id

    # ---------------- public API: identical for every env ----------------
    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """Start an episode. The same seed gives the same first observation and the same dynamics."""
        self._t = 0
        self._opp_rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
        if self._schedule is not None:
            self.set_episode_opponent(self._schedule(int(seed)))
        obs, legal, info = self._reset(int(seed))
        self._legal, self._done = legal, False
        return obs, legal, info

    def step(self, action: int) -> tuple[np.ndarray, np.ndarray, float, bool, bool, dict]:
        """Apply the agent's action; other seats move inside. Returns obs, legal, reward, terminated,
        truncated, info. An illegal action raises ValueError (never silently replaced)."""
        self.step_async(action)
        return self.step_wait()

    def step_async(self, action: int) -> None:
        """The first half of `step`: check the action and start the step; `step_wait` returns its outcome.
        Envs with `overlaps_steps` compute it elsewhere meanwhile, so an actor starts every copy's step before
        it waits for the first (the others run it in `step_wait`)."""
        if self._done:
            raise RuntimeError(f"{type(self).__name__}.step() called after the episode ended; call reset() first")
        self._pending = self._check_action(action)
        self._send(self._pending)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, float, bool, bool, dict]:
        """The second half of `step`: the outcome of the step `step_async` started."""
        obs, legal, reward, term, trunc, info = self._recv(self._pending)
        self._t += 1
        if not (term or trunc) and self.max_episode_steps and self._t >= self.max_episode_steps:
            trunc = True
        if term or trunc:
            self._done = True
            if "episode_stats" not in info:
                info["episode_stats"] = self._episode_stats(bool(term), bool(trunc))
        self._legal = legal
        return obs, legal, float(reward), bool(term), bool(trunc), info

    def render(self) -> np.ndarray | None:
        """An RGB uint8 frame (H, W, 3) of the current state, for reports; None if the env cannot draw."""
        return None

    def set_opponent(self, fn: OpponentFn | None) -> None:
        """Who plays the other seats of a shared world: fn(seat_agent_id, obs, legal) -> action.
        None (the default) plays uniform random legal moves. Per-agent worlds ignore it."""
        self._opponent = fn

    def set_episode_opponent(self, opponent: Opponent) -> None:
        """Who plays the other seats from the next reset on, in envs with `per_episode_opponent`: a peer's
        agent id (played through the opponent callback), RANDOM_OPPONENT, or one of `builtin_players`. Other
        envs ignore it (the default): their other seats are always the opponent callback's."""

    def set_opponent_schedule(self, fn: Callable[[int], Opponent] | None) -> None:
        """fn(episode seed) -> the episode's opponent, applied by every reset (in envs with
        `per_episode_opponent`): a replay of an episode from its seed then meets the same opponent, which the
        fidelity test needs. None: opponents are set by hand with `set_episode_opponent`."""
        self._schedule = fn

    def evaluate_extra(self, policy_fn: PolicyFn, episodes: int, rng: np.random.Generator) -> dict[str, float]:
        """Env-specific evaluation numbers the actor logs besides its own (e.g. the win rate against a rule
        player): `policy_fn(obs, legal) -> action` played for `episodes` episodes in a separate env, so this
        env's episode is untouched. None by default (an empty dict)."""
        return {}

    def from_native(self, obs: np.ndarray) -> np.ndarray:
        """An observation as the game itself gives it (e.g. PettingZoo's, from a harness outside this project) ->
        the one this env's agents read. The same by default; envs that add derived input features (connect4's
        `features`) override it, so a trained policy plays from the game's own observations too."""
        return obs

    def close(self) -> None:
        """Release whatever the env holds (nothing by default)."""

    def snapshot(self):
        """The env's state mid-episode, for a replay to go on from (the fidelity test replays an episode's first
        steps hundreds of times); None where the env cannot take one (the default), and replays then start from
        `reset`. The state includes the generators of the other seats, so a restored replay meets the same moves."""
        game = self._snapshot()
        if game is None or self._legal is None:
            return None
        seat_rng = None if self.seat_rng is None else self.seat_rng.bit_generator.state
        return game, self._t, self._legal.copy(), self._done, self._opp_rng.bit_generator.state, seat_rng

    def restore(self, snap) -> None:
        """Put back a state `snapshot` returned (of this env, mid-episode); the next `step` goes on from it."""
        game, self._t, legal, self._done, opp_state, seat_state = snap
        self._legal = legal.copy()
        self._opp_rng.bit_generator.state = opp_state   # into this env's own generators (reset made them)
        if seat_state is not None:
            self.seat_rng = self.seat_rng or np.random.default_rng(0)
            self.seat_rng.bit_generator.state = seat_state
        self._restore(game)

    # ---------------- for subclasses ----------------
    @abstractmethod
    def _reset(self, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
        ...

    def _snapshot(self):
        """The game's own state for `snapshot` (None: not supported, the default)."""
        return None

    def _restore(self, game) -> None:
        """Put back what `_snapshot` returned."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    def _send(self, action: int) -> None:
        """Start a step elsewhere (envs with `overlaps_steps`); by default nothing: `_recv` runs `_step`."""

    def _recv(self, action: int) -> tuple[np.ndarray, np.ndarray, float, bool, bool, dict]:
        """The outcome of the step `_send` started; by default the whole step, `_step(action)`."""
        return self._step(action)

    @abstractmethod
    def _step(self, action: int) -> tuple[np.ndarray, np.ndarray, float, bool, bool, dict]:
        ...

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        """Statistics of the episode just ended (the actor logs them); env-specific."""
        return {}

    def _play_other(self, seat_agent_id: int, obs: np.ndarray, legal: np.ndarray) -> int:
        """An action for another seat: the callback if set, else uniform random; checked for legality."""
        if self._opponent is None:
            return random_legal(self._opp_rng, legal)
        a = int(self._opponent(seat_agent_id, obs, legal))
        if not (0 <= a < len(legal)) or not legal[a]:
            raise ValueError(f"opponent callback chose illegal action {a} for seat agent {seat_agent_id}; "
                             f"legal actions: {np.flatnonzero(legal).tolist()}")
        return a

    def _check_action(self, action) -> int:
        try:
            a = int(action)
        except (TypeError, ValueError):
            raise ValueError(f"action {action!r} is not an integer") from None
        if a != action:
            raise ValueError(f"action {action!r} is not an integer")
        legal = self._legal
        if not (0 <= a < len(legal)) or not legal[a]:
            raise ValueError(f"illegal action {a} for agent {self._agent_id}; "
                             f"legal actions: {np.flatnonzero(legal).tolist()}")
        return a


class TeamWorld(ABC):
    """The whole team's view of a cooperative shared world (a mixin of the AgentEnv adapter): one action per
    seat per step, every seat's reward. The same seed gives the same world as `reset(seed)`, so a team
    episode and the agents' own episodes of that seed start alike. Independent of the AgentEnv stream:
    `reset` starts that stream again."""

    @abstractmethod
    def team_reset(self, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Start a team episode: (obs per seat, legal mask per seat); every seat is active."""

    @abstractmethod
    def team_step(self, actions: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray, bool]:
        """One action per seat (ignored for inactive seats) -> (obs per seat, legal per seat, rewards[N] of
        this step (0 for a seat that was not active), active[N] after the step, done). A seat stops being
        active when its own episode would end (e.g. its vehicle crashed); done when none is active or the
        world truncates."""

    def team_stats(self) -> dict[str, float]:
        """Statistics of the team episode `team_step` just ended (grf-3v1: how it ended, e.g. `goal`; highway:
        the share of vehicles that crashed), for measurements of the whole team (`magicmask strength`). {} by
        default."""
        return {}
