"""`connect4`: PettingZoo's connect_four_v3 (AEC) as one agent's decision stream in a shared world.

Per episode the agent's seat (first or second player) is drawn from the episode seed, and the other
seat is played by the peer the actor picked with `set_episode_opponent` (through the opponent callback)
or, for -1, by a uniform random player inside the env. Observations are PettingZoo's (6, 7, 2) planes
from the acting player's perspective (plane 0: the player to move, plane 1: the other), flattened to
84 float32, or with env.kwargs `features: threats` / `tactics` five / eight planes (`feature_planes`); the legal
set is the action mask. Reward: +1 win, -1 loss, 0 draw, at the end.

Also here: two evaluation opponents working on the observation's first two planes alone (`random_player`,
`lookahead_player`), and `evaluate_vs`, which plays games between a policy and such an opponent.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Callable

import numpy as np
from gymnasium import spaces
from pettingzoo.classic.connect_four.connect_four import raw_env as _ConnectFourRaw

from magicmask.actors.envs.base import RANDOM_OPPONENT, Opponent, random_legal
from magicmask.actors.envs.connect4_search import BOTTOM_ROW, CELL_BITS, H1, SearchPlayer, from_observation, winning_cells
from magicmask.actors.envs.pettingzoo_env import AECAdapter, split_obs

ROWS, COLS = 6, 7
SEATS = ("player_0", "player_1")


def _all_windows() -> np.ndarray:
    """Every line of 4 cells on the board, as flat indices r * 7 + c (69 lines)."""
    out = []
    for r in range(ROWS):
        for c in range(COLS):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (-1, 1)):
                cells = [(r + i * dr, c + i * dc) for i in range(4)]
                if all(0 <= rr < ROWS and 0 <= cc < COLS for rr, cc in cells):
                    out.append([rr * COLS + cc for rr, cc in cells])
    return np.array(out, np.int64)


WINDOWS = _all_windows()
CELL_WINDOWS = [WINDOWS[(WINDOWS == k).any(1)] for k in range(ROWS * COLS)]   # the lines through each cell
CELL_LINES = [[tuple(int(x) for x in w) for w in ws] for ws in CELL_WINDOWS]    # the same as tuples of ints
FEATURES = {"board": 2, "threats": 5, "tactics": 8}   # observation planes per `features` choice


def features_of(cfg) -> str:
    """The observation planes a run's config asks for: env.kwargs `features`, "board" when not given."""
    return cfg.env.kwargs.get("features", "board")


def threat_maps(mine: int, theirs: int) -> tuple[int, int, int]:
    """(playable, my_threats, their_threats) as bitboards: the cells a disc can be dropped into now, and the empty
    cells where one more disc of each side completes a line of four (connect4_search's layout; `>> 1` of a map is
    the cell below each of its cells)."""
    occupied = mine | theirs
    playable = occupied + BOTTOM_ROW   # a column's lowest empty cell: the carry out of its discs (a full one's
                                       # lands on the sentinel row, which no cell reads)
    return playable, winning_cells(mine) & ~occupied, winning_cells(theirs) & ~occupied


def feature_planes(mine: int, theirs: int, planes: int = 5) -> np.ndarray:
    """The observation planes of features="threats" (5) or "tactics" (8) from the two sides' bitboards
    (connect4_search's layout), as int8[6, 7, planes]: the discs of the player to move and of the other player
    (PettingZoo's two planes), the cells a disc can be dropped into now, and the empty cells where one more disc of
    the player to move / of the other player would complete a line of four (threats anywhere, playable now or
    later); "tactics" adds the playable ones among those (win now, block now) and the playable cells right under
    one of the other player's threats (a disc there hands them the cell above). What the one-step lookahead
    player computes, given as input so the networks need not learn to compute it at every place of the board
    (docs/RESULTS.md, "Connect Four: threat planes")."""
    playable, my_threats, their_threats = threat_maps(mine, theirs)
    rows = [mine, theirs, playable, my_threats, their_threats]
    if planes == 8:   # >> 1: the bit of the cell above
        rows += [playable & my_threats, playable & their_threats, playable & (their_threats >> 1)]
    bits = np.array(rows, np.int64)
    return ((bits[:, None] >> CELL_BITS) & 1).T.astype(np.int8).reshape(ROWS, COLS, planes)


class FastConnectFour(_ConnectFourRaw):
    """PettingZoo's raw connect_four_v3 with the same rules, rewards and observations, but `step`,
    `observe` and the winner check rewritten without the original's Python loops over the board (most
    of its time; tests compare it move by move with the original). The illegal-move and order wrappers
    are left off: the adapter checks legality itself.

    `features`: "board" (PettingZoo's two planes), "threats" or "tactics" (`feature_planes`: those two and three or
    six derived ones)."""

    def __init__(self, features: str = "board", **kwargs):
        if features not in FEATURES:
            raise ValueError(f"connect4: features={features!r}; allowed: {', '.join(FEATURES)}")
        super().__init__(**kwargs)
        self.features = features
        if features != "board":
            planes = (ROWS, COLS, FEATURES[features])
            self.observation_spaces = {a: spaces.Dict({"observation": spaces.Box(0, 1, planes, np.int8),
                                                       "action_mask": sp["action_mask"]})
                                       for a, sp in self.observation_spaces.items()}

    def reset(self, seed=None, options=None):
        super().reset(seed, options)
        self.bits = [0, 0, 0]   # per piece (1, 2): its discs as a bitboard, kept up to date by `step`

    def wins_at(self, cell: int, piece: int) -> bool:
        """Does the piece just placed at `cell` complete a line? Only the lines through that cell can (a sixth
        of the time of testing all 69 lines of the board)."""
        board = self.board
        return any(board[a] == piece and board[b] == piece and board[c] == piece and board[d] == piece
                   for a, b, c, d in CELL_LINES[cell])

    def observe(self, agent):
        cur = self.possible_agents.index(agent) + 1
        if self.features != "board":
            obs = feature_planes(self.bits[cur], self.bits[3 - cur], FEATURES[self.features])
        else:
            b = np.fromiter(self.board, np.int8, ROWS * COLS).reshape(ROWS, COLS)
            obs = np.empty((ROWS, COLS, 2), np.int8)
            obs[..., 0] = b == cur
            obs[..., 1] = b == 3 - cur
        mask = np.zeros(COLS, np.int8)
        if agent == self.agent_selection:
            mask[:] = [cell == 0 for cell in self.board[:COLS]]   # the top row's empty cells: the open columns
        return {"observation": obs, "action_mask": mask}

    def step(self, action):
        if self.truncations[self.agent_selection] or self.terminations[self.agent_selection]:
            return self._was_dead_step(action)
        assert self.board[action] == 0, "played illegal move."
        piece = self.agents.index(self.agent_selection) + 1
        for i in range((ROWS - 1) * COLS + action, -1, -COLS):   # the lowest empty cell of the column
            if self.board[i] == 0:
                self.board[i] = piece
                break
        self.bits[piece] |= 1 << int(CELL_BITS[i])
        next_agent = self._agent_selector.next()
        if self.wins_at(i, piece):
            self.rewards[self.agent_selection] += 1
            self.rewards[next_agent] -= 1
            self.terminations = dict.fromkeys(self.agents, True)
        elif 0 not in self.board:   # a full board: draw
            self.terminations = dict.fromkeys(self.agents, True)
        self.agent_selection = next_agent
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()


# ---------------- built-in players on the observation ----------------
def random_player(obs: np.ndarray, legal: np.ndarray, rng: np.random.Generator) -> int:
    """Uniform random legal column."""
    return random_legal(rng, legal)


def lookahead_player(obs: np.ndarray, legal: np.ndarray, rng: np.random.Generator) -> int:
    """One-step lookahead: win now if possible, else block the opponent's immediate win, else random (each choice
    uniform among its columns, in column order). On bitboards: a column wins for a side when its landing cell is
    one of that side's threat cells (`winning_cells`); it is a training opponent, so it runs for a large share of
    the env steps (65 against the numpy version's 90 us of CPU a move, the same moves; tests/envs/test_envs.py
    spells the rule out and compares)."""
    mine, theirs, heights = from_observation(obs)
    cols = [int(c) for c in np.flatnonzero(legal)]
    for threats in (winning_cells(mine), winning_cells(theirs)):   # first our winning moves, then theirs (to block)
        winning = [c for c in cols if threats >> (c * H1 + heights[c]) & 1]
        if winning:
            return winning[rng.integers(len(winning))]
    return random_legal(rng, legal)


def builtin_player(name: str):
    """'random', 'lookahead' or 'search:<depth>' -> fn(obs, legal, rng) -> column."""
    if name == "random":
        return random_player
    if name == "lookahead":
        return lookahead_player
    head, _, depth = name.partition(":")
    if head == "search" and depth.isdigit() and int(depth) >= 1:
        return SearchPlayer(int(depth))
    raise ValueError(f"connect4: no built-in player {name!r}; allowed: random, lookahead, search:<depth>")


LOSS_REASONS = ("missed a win", "did not block", "played under a threat", "faced a double threat",
                "faced a stacked threat")


def loss_reason(mine: int, theirs: int, column: int) -> str:
    """Why a game was lost, read off the position before the loser's last move (the two sides' bitboards, the
    loser's first) and the column it played. The winner's next disc lands on one of its threat cells that is
    playable after that move: either one that was playable before (two of them: "faced a double threat", lost
    already; one with another of theirs right above it: "faced a stacked threat", lost already, since the block
    hands them the cell above; one, not taken: "did not block"), or the cell just above the loser's disc ("played
    under a threat"). A playable threat of the loser's own comes first ("missed a win"). These five cover every
    loss; `magicmask strength` counts them (docs/RESULTS.md, "Connect Four: the default job from a fresh clone")."""
    playable, my_threats, their_threats = threat_maps(mine, theirs)
    if playable & my_threats:
        return "missed a win"
    blocks = playable & their_threats
    if blocks & (blocks - 1):
        return "faced a double threat"
    if blocks & (their_threats >> 1):   # >> 1: the bit of the cell above
        return "faced a stacked threat"
    landing = playable & (((1 << H1) - 1) << (column * H1))
    return "did not block" if blocks and not blocks & landing else "played under a threat"


def evaluate_vs(policy_fn: Callable[[np.ndarray, np.ndarray], int],
                opponent_fn: Callable[[np.ndarray, np.ndarray, np.random.Generator], int],
                episodes: int, seed: int, features: str = "board", losses: dict[str, int] | None = None
                ) -> dict[str, float]:
    """Play `episodes` games, the policy first in even games and second in odd ones; shares of win/loss/draw
    from the policy's side (they sum to 1). Both players see the observation planes of `features`. `losses`,
    when given, counts the policy's lost games by `loss_reason`."""
    rng = np.random.default_rng(seed)
    env = FastConnectFour(features)
    counts = {"win": 0, "loss": 0, "draw": 0}
    for g in range(episodes):
        env.reset(seed=seed + g)
        me = SEATS[g % 2]
        piece = g % 2 + 1
        while not any(env.terminations.values()):
            sel = env.agent_selection
            obs, legal = split_obs(env.observe(sel), COLS)
            a = int(policy_fn(obs, legal) if sel == me else opponent_fn(obs, legal, rng))
            if not legal[a]:
                who = "policy" if sel == me else "opponent"
                raise ValueError(f"evaluate_vs: {who} chose illegal column {a}; legal: {np.flatnonzero(legal).tolist()}")
            if sel == me and losses is not None:
                last = (env.bits[piece], env.bits[3 - piece], a)   # the position before our move, for `loss_reason`
            env.step(a)
        r = env.rewards[me]
        counts["win" if r > 0 else "loss" if r < 0 else "draw"] += 1
        if r < 0 and losses is not None:
            reason = loss_reason(*last)
            losses[reason] = losses.get(reason, 0) + 1
    n = max(episodes, 1)
    return {k: v / n for k, v in counts.items()}


# ---------------- the adapter ----------------
class Connect4Env(AECAdapter):
    """Connect Four for one agent: its seat drawn per episode, the other seat played by a chosen peer."""

    per_episode_opponent = True

    def __init__(self, agent_id: int = 0, n_agents: int = 1, seat: int = -1, max_episode_steps: int = 0,
                 features: str = "board"):
        if seat not in (-1, 0, 1):
            raise ValueError(f"connect4: seat={seat!r} must be -1 (drawn per episode), 0 (first) or 1 (second)")
        super().__init__(FastConnectFour(features), agent_id, n_agents, name="connect4",
                         max_episode_steps=max_episode_steps, seat=SEATS[0])
        self.seat_mode = seat
        self.spec = replace(self.spec, mirror_actions=tuple(range(COLS - 1, -1, -1)))   # the game mirrored: c -> 6 - c
        self.episode_opponent: Opponent = RANDOM_OPPONENT
        self._players: dict[str, object] = {}   # built-in players by name, made once
        self._final_reward = 0.0

    builtin_players = ("random", "lookahead", "search")

    def set_episode_opponent(self, opponent: Opponent) -> None:
        """Who plays the other seat from the next reset on: a peer's agent id (through the opponent
        callback), RANDOM_OPPONENT, or a built-in player: 'random', 'lookahead' or 'search:<depth>'."""
        if isinstance(opponent, str):
            if opponent not in self._players:
                self._players[opponent] = builtin_player(opponent)
            self.episode_opponent = opponent
        else:
            self.episode_opponent = int(opponent)

    def from_native(self, obs: np.ndarray) -> np.ndarray:
        """PettingZoo's two planes -> this env's observation (the derived planes of env.kwargs `features` added);
        an observation that has them already is returned as it is."""
        obs = np.asarray(obs, np.float32).reshape(-1)
        if obs.size == self.spec.obs_dim:
            return obs
        if obs.size != ROWS * COLS * FEATURES["board"]:
            raise ValueError(f"connect4: an observation of {obs.size} values; expected PettingZoo's 6 x 7 x 2 planes "
                             f"(84) or this env's {self.spec.obs_dim}")
        mine, theirs, _ = from_observation(obs)
        return feature_planes(mine, theirs, FEATURES[self.env.features]).reshape(-1).astype(np.float32)

    def _reset(self, seed: int):
        if self.seat_mode < 0:
            self.seat = SEATS[int(np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xC4]).integers(2))]
        else:
            self.seat = SEATS[self.seat_mode]
        self._final_reward = 0.0
        obs, legal, info = super()._reset(seed)
        info.update(seat=SEATS.index(self.seat), opponent=self.episode_opponent)
        return obs, legal, info

    def _step(self, action: int):
        out = super()._step(action)
        self._final_reward = out[2]
        return out

    # the game's state (PettingZoo's raw env and our bitboards): the rest of the raw env is fixed at construction
    GAME_STATE = ("board", "bits", "agents", "rewards", "_cumulative_rewards", "terminations", "truncations", "infos",
                  "_agent_selector", "agent_selection")

    def _snapshot(self):
        game = {k: copy.deepcopy(getattr(self.env, k)) for k in self.GAME_STATE}
        return game, self.seat, self.episode_opponent, self._final_reward

    def _restore(self, game) -> None:
        state, self.seat, self.episode_opponent, self._final_reward = game
        for k, v in state.items():
            setattr(self.env, k, copy.deepcopy(v))

    def _other_action(self, seat, obs, legal):
        if isinstance(self.episode_opponent, str):
            return int(self._players[self.episode_opponent](obs, legal, self._opp_rng))
        if self.episode_opponent < 0:
            return random_legal(self._opp_rng, legal)
        return self._play_other(self.episode_opponent, obs, legal)

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        r = self._final_reward if terminated else None
        return {"win": float(r is not None and r > 0), "loss": float(r is not None and r < 0),
                "draw": float(r is not None and r == 0), "truncated": float(r is None)}

    EVAL_PLAYERS = ("lookahead", "search:2")

    def evaluate_extra(self, policy_fn, episodes: int, rng: np.random.Generator) -> dict[str, float]:
        """Extra evaluation numbers the actor logs: the policy against the one-step lookahead player and the
        depth-2 alpha-beta player (keys vs_lookahead_win, vs_search2_win, ...)."""
        out = {}
        for name in self.EVAL_PLAYERS:
            res = evaluate_vs(policy_fn, builtin_player(name), episodes, int(rng.integers(2**31)), self.env.features)
            out.update({f"vs_{name.replace(':', '')}_{k}": v for k, v in res.items()})
        return out

    def render(self) -> np.ndarray:
        """The board: blue frame, red discs for the first player, yellow for the second; a strip on top in
        the colour of this agent's seat."""
        cell, rad = 28, 11
        yy, xx = np.mgrid[:cell, :cell]
        disc = (yy - cell / 2 + 0.5) ** 2 + (xx - cell / 2 + 0.5) ** 2 <= rad ** 2
        colours = {0: (240, 240, 240), 1: (220, 40, 40), 2: (240, 200, 30)}
        strip = 8
        img = np.zeros((strip + ROWS * cell, COLS * cell, 3), np.uint8)
        img[:] = (30, 70, 200)
        img[:strip] = colours[SEATS.index(self.seat) + 1]
        board = self.env.board
        for k in range(ROWS * COLS):
            r, c = divmod(k, COLS)
            y0, x0 = strip + r * cell, c * cell
            img[y0:y0 + cell, x0:x0 + cell][disc] = colours[board[k]]
        return img
