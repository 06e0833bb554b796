"""`doudizhu`: RLCard's Dou Dizhu (`rlcard.make('doudizhu')`, rlcard >= 1.2) as one agent's decision stream.

Roles are fixed by seat, as in RLCard: seat 0 is the landlord (20 cards, plays first), seats 1 and 2 are the
peasants (17 cards each, a team that wins together). Agent i plays seat i in every copy, so with 3 agents the
run trains the landlord and both peasants (with fewer, the seats without an agent are always played by the
episode's opponent kind, or uniformly at random in peers mode).

- Observations: RLCard's int8 encoding, 790 values for the landlord and 901 for a peasant. The shapes differ,
  so the spec lists every agent's (`EnvSpec.agent_obs_shapes`) and the learner trains the landlord and the
  peasants as two network groups.
- Actions: RLCard's 27,472 action ids (every card combination, 27471 = 'pass'); the legal mask marks the
  ids of `state['actions']`. The spec names the fixed action-feature table "doudizhu" (each action's 54-value
  card counts, learner/action_features.py) for the `features` policy head.
- Other seats, per episode (`set_episode_opponent`): a peer agent id (>= 0): every other seat that an agent
  of the run holds is played by that agent's latest policy through the opponent callback (the seat's own
  observation and legal mask), the rest uniformly at random; RANDOM (-1): uniform random legal moves;
  RULE (-2): RLCard's `DouDizhuRuleAgentV1`, the rule-based baseline.
- Reward: +1 for a win, -1 for a loss, at the end only. RLCard pays 1 / 0; we use +-1 as DouZero's WP
  objective does (Zha et al. 2021, douzero/env/env.py): the game is zero-sum between the sides, the critic's
  value reads as 2 P(win) - 1, and the gap between winning and losing is 2, which keeps the mask's per-step
  bonus alpha (0.05 x ~20 decisions) well below what a wrong critical decision loses
  (docs/ALGORITHM.md, "The mask's measured defaults").
- Seeding: `reset(seed)` reseeds RLCard's game generator, so the deal (and RLCard's own randomness) is a
  function of the seed; other seats draw from the base class's per-episode generator. RLCard builds a
  leader's legal moves from a Python set, whose order changes with PYTHONHASHSEED from process to process,
  so the random and rule players see the moves sorted by action id: an episode is the same in every
  process. In the rare deal where the game ends before this agent's first turn (the landlord plays its
  whole hand at once), the deal is redrawn from a seed derived from the same one.
- `episode_stats`: win, landlord (1 for the landlord's stream, 0 for a peasant's), truncated.
- `evaluate_extra`: the win rate against the rule agent (`vs_rule_win`); the actor's evaluation already
  plays against the random agent (`vs_random_win`).
"""
from __future__ import annotations

import numpy as np
import rlcard
from rlcard.games.doudizhu.utils import ACTION_2_ID, ID_2_ACTION
from rlcard.models.doudizhu_rule_models import DouDizhuRuleAgentV1

from magicmask.actors.envs.base import RANDOM_OPPONENT, AgentEnv
from magicmask.protocol.envspec import EnvSpec

N_SEATS = 3
OBS_SIZES = (790, 901, 901)          # landlord, peasant (down), peasant (up)
N_ACTIONS = len(ID_2_ACTION)         # 27,472
RANDOM, RULE = RANDOM_OPPONENT, -2   # opponent kinds besides a peer agent id


class DouDizhuEnv(AgentEnv):
    """Dou Dizhu for one agent: seat = agent id (0 the landlord, 1 and 2 the peasants)."""

    per_episode_opponent = True

    def __init__(self, agent_id: int = 0, n_agents: int = 3, max_episode_steps: int = 0):
        if not 1 <= n_agents <= N_SEATS:
            raise ValueError(f"doudizhu: run.agents={n_agents}: allowed 1..3 (agent i plays seat i: 0 the landlord, "
                             f"1 and 2 the peasants)")
        if not 0 <= agent_id < n_agents:
            raise ValueError(f"doudizhu: agent_id={agent_id} not in 0..{n_agents - 1}")
        super().__init__(agent_id, max_episode_steps)
        self.env = rlcard.make("doudizhu", config={"seed": 0})
        self.game = self.env.game
        self.seat, self.n_agents = agent_id, n_agents
        shapes = tuple((OBS_SIZES[i],) for i in range(n_agents))
        self.spec = EnvSpec(obs_shape=shapes[agent_id], obs_dtype="int8", n_actions=N_ACTIONS, n_agents=n_agents,
                            shared_world=True, name="doudizhu", agent_obs_shapes=shapes, action_features="doudizhu")
        self.episode_opponent = RANDOM
        self._rule = DouDizhuRuleAgentV1()
        self._win = 0.0

    builtin_players = ("random", "rule")

    def set_episode_opponent(self, kind: int | str) -> None:
        """Who plays the other seats from the next reset on: a peer agent id (>= 0: every seat held by an agent
        of the run plays its own latest policy), RANDOM (-1) or RULE (-2, RLCard's rule agent); the built-in
        players also by name, 'random' or 'rule'."""
        if isinstance(kind, str):
            if kind not in self.builtin_players:
                raise ValueError(f"doudizhu: no built-in player {kind!r}; allowed: {', '.join(self.builtin_players)}")
            kind = RULE if kind == "rule" else RANDOM
        kind = int(kind)
        if kind < RULE:
            raise ValueError(f"doudizhu: opponent kind {kind}: a peer agent id (>= 0), -1 (random) or -2 (rule)")
        self.episode_opponent = kind

    # ---------------- the game ----------------
    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        """The player to move: RLCard's observation of its seat and its legal mask. `_extract_state` encodes
        the game's current state (the public `get_state(seat)` gives the same but recomputes the legal moves,
        twice the cost); a test checks they agree."""
        state = self.game.state
        obs = self.env._extract_state(state)["obs"]
        legal = np.zeros(N_ACTIONS, bool)
        legal[[ACTION_2_ID[a] for a in state["actions"]]] = True
        return obs, legal

    def _legal_moves(self) -> list[str]:
        """The legal moves of the player to move, sorted by action id (RLCard's order varies by process)."""
        return sorted(self.game.state["actions"], key=ACTION_2_ID.__getitem__)

    def _other_move(self, seat: int) -> str:
        kind = self.episode_opponent
        if kind == RULE:
            return self._rule_move()
        if kind >= 0 and seat < self.n_agents:
            obs, legal = self._observe()
            return ID_2_ACTION[self._play_other(seat, obs, legal)]
        actions = self._legal_moves()
        return actions[int(self._opp_rng.integers(len(actions)))]

    def _rule_move(self) -> str:
        """RLCard's rule agent, shown the legal moves in id order (it breaks ties by order); its one random
        choice uses numpy's global generator, which is seeded here from the episode's generator (and
        restored), so that a seed fixes the whole episode."""
        actions = self._legal_moves()
        saved = np.random.get_state()
        np.random.seed(int(self._opp_rng.integers(2**31)))
        try:
            action = str(self._rule.step({"raw_obs": {**self.game.state, "actions": actions}}))
        finally:
            np.random.set_state(saved)
        if action not in actions:
            raise ValueError(f"doudizhu: the rule agent chose {action!r}, not legal ({actions})")
        return action

    def _advance(self) -> None:
        """Other seats move until it is this agent's turn or the game is over."""
        while not self.game.is_over() and self.game.get_player_id() != self.seat:
            self.game.step(self._other_move(self.game.get_player_id()))

    def _reset(self, seed: int):
        for attempt in range(100):
            deal_seed = seed if attempt == 0 else int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])
            self.env.seed(deal_seed)
            self.game.init_game()
            self._advance()
            if not self.game.is_over():
                break
        else:  # practically unreachable: one-move wins are rare deals
            raise RuntimeError(f"doudizhu: 100 deals from seed {seed} all ended before seat {self.seat} played")
        self._win = 0.0
        obs, legal = self._observe()
        return obs, legal, {"seat": self.seat, "landlord": self.seat == 0, "opponent": self.episode_opponent}

    def _step(self, action: int):
        self.game.step(ID_2_ACTION[action])
        self._advance()
        if not self.game.is_over():
            obs, legal = self._observe()
            return obs, legal, 0.0, False, False, {}
        self._win = float(self.env.get_payoffs()[self.seat] > 0)
        obs = self.env.get_state(self.seat)["obs"]   # the final position from this seat
        legal = np.ones(N_ACTIONS, bool)               # no move left: all marked legal so softmaxes stay finite
        return obs, legal, 2.0 * self._win - 1.0, True, False, {}

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        return {"win": self._win if terminated else 0.0, "landlord": float(self.seat == 0),
                "truncated": float(truncated and not terminated)}

    def evaluate_extra(self, policy_fn, episodes: int, rng: np.random.Generator) -> dict[str, float]:
        """Extra evaluation numbers the actor logs: this seat's win rate against RLCard's rule agent in the two
        other seats (a separate env, so the caller's episode is untouched)."""
        env = DouDizhuEnv(self.seat, self.n_agents, self.max_episode_steps)
        env.set_episode_opponent(RULE)
        first = int(rng.integers(2**31))
        wins = 0.0
        for e in range(episodes):
            obs, legal, _ = env.reset(seed=first + e)
            while True:
                obs, legal, _, term, trunc, info = env.step(int(policy_fn(obs, legal)))
                if term or trunc:
                    break
            wins += info["episode_stats"]["win"]
        return {"vs_rule_win": wins / max(episodes, 1)}

    # ---------------- pictures ----------------
    def render(self) -> np.ndarray:
        """Every seat's hand (white cards) and its latest move below it (blue cards, a grey bar for 'pass'),
        landlord first. Left strip: red for the landlord, green for a peasant; a yellow frame marks this
        agent's seat; once the game is over the winners' rows are tinted green. Drawn at 2x (332 x 640)."""
        info = self.env.get_perfect_information()
        hands, trace = info["hand_cards"], info["trace"]
        last = {}
        for seat, move in trace:
            last[seat] = move
        over = self.game.is_over()
        payoffs = self.env.get_payoffs() if over else [0] * N_SEATS
        card_w, card_h, pad, row_h = 15, 21, 4, 2 * 21 + 3 * 4
        img = np.full((N_SEATS * row_h + pad, 20 * card_w + 20, 3), 235, np.uint8)
        for seat in range(N_SEATS):
            y = pad + seat * row_h
            if over and payoffs[seat] > 0:
                img[y - pad // 2:y + row_h - pad // 2, :] = (205, 235, 200)
            img[y:y + 2 * card_h + pad, 2:8] = (200, 50, 50) if seat == 0 else (50, 150, 60)
            if seat == self.seat:
                _frame(img, y - 2, 0, 2 * card_h + pad + 4, img.shape[1], (240, 200, 0))
            for k, card in enumerate(hands[seat]):
                _card(img, y, 12 + k * card_w, card, (255, 255, 255))
            move = last.get(seat)
            if move == "pass":
                img[y + card_h + pad + 8:y + card_h + pad + 13, 12:12 + 2 * card_w] = (150, 150, 150)
            elif move:
                for k, card in enumerate(move):
                    _card(img, y + card_h + pad, 12 + k * card_w, card, (200, 220, 250))
        return img.repeat(2, 0).repeat(2, 1)


# A 3 x 5 pixel font for the ranks (T = 10, B / R = black / red joker), drawn 3x enlarged on each card
_GLYPHS = {
    "2": "111001111100111", "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111", "9": "111101111001111",
    "T": "111010010010010", "J": "001001001101111", "Q": "111101101111001", "K": "101110100110101",
    "A": "010101111101101", "B": "110101110101110", "R": "110101110101101",
}
_GLYPH_PIXELS = {c: np.kron(np.array([int(b) for b in bits], bool).reshape(5, 3), np.ones((3, 3), bool))
                 for c, bits in _GLYPHS.items()}


def _card(img: np.ndarray, y: int, x: int, rank: str, colour) -> None:
    """A 14 x 21 card at (y, x): a dark outline, the fill colour, the rank (red for the red joker)."""
    img[y:y + 21, x:x + 14] = (40, 40, 40)
    img[y + 1:y + 20, x + 1:x + 13] = colour
    img[y + 3:y + 18, x + 2:x + 11][_GLYPH_PIXELS[rank]] = (200, 0, 0) if rank == "R" else (0, 0, 0)


def _frame(img: np.ndarray, y: int, x: int, h: int, w: int, colour, t: int = 2) -> None:
    y0, y1, x1 = max(y, 0), min(y + h, img.shape[0]), min(x + w, img.shape[1])
    img[y0:y0 + t, x:x1] = colour
    img[y1 - t:y1, x:x1] = colour
    img[y0:y1, x:x + t] = colour
    img[y0:y1, x1 - t:x1] = colour
