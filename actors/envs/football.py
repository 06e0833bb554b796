"""`grf-3v1`: Google Research Football's `academy_3_vs_1_with_keeper`, three agents, as one agent's stream.

Every actor runs its own copies of the whole match: gfootball with three controlled left players
(`number_of_left_players_agent_controls=3`, as in MAPPO's and EMAI's GRF setups), the `simple115v2`
observation and the `scoring,checkpoints` reward. The actor's agent plays controlled player `agent_id`; the
other two are played by the opponent callback fn(j, obs_j, legal_j) (peer j's policy, inference only), or
uniformly at random when no callback is set, as in `highway`. The defender and the right keeper are
gfootball's built-in AI.

What "controlled player i" is. gfootball controls three *slots*; each step it assigns every slot an active
player (`active` in the raw observation, the one-hot at [97:108] of simple115v2, so the policy sees whom it
moves). Here the left keeper is controllable too (four players for three slots), so gfootball's dynamic
player selection moves slots between players: measured, slot 0 starts on the keeper and takes the ball
carrier on the first step, and 30 random episodes showed 9 different slot-to-player assignments. Agent i is
slot i, whichever player gfootball gives it, exactly as in the published multi-agent GRF benchmarks.

Rewards, per slot, exactly gfootball's (its CheckpointRewardWrapper computes one reward per slot):
- scoring: +1 to every slot when the left team scores (shared; the right team cannot score here: losing
  the ball ends the episode),
- checkpoints: +0.1 for each of 10 distance rings towards the goal, to the slot whose active player has the
  ball when it reaches them, each ring at most once per slot and episode (the ball starts 0.38 from the
  goal, so the first touch of a slot's player collects 7 rings at once); on a goal every slot also gets the
  rings it had not collected, so each slot's episode total is at most 2.
`info["team_reward"]` is the sum of the three slots' rewards this step (base.py's convention) and
`info["score_reward"]` the goal part alone (+1 or 0).

Episodes end (terminated) on a goal, when the ball goes out of play, or when the defending team wins the
ball (random play: ~60-90 steps); gfootball's step limit ends them as truncated (`steps_left` starts at
401, so an episode has at most 401 steps). All 19 actions of
gfootball's default action set are always legal.

Seeding. gfootball's engine draws from `game_engine_random_seed` and orders the teams' processing by
`reverse_team_processing` (gfootball sets it from the first episode's seed parity and keeps it): both are set
from the `reset` seed on every reset, so an episode depends only on its seed and the actions, not on what
ran before in that env or process (tests/test_football.py: same seed and actions give identical
trajectories across instances and after other episodes; different seeds give different ones, though the
first observation is the scenario's fixed kick-off for every seed).

Rendering: a 2-D top view drawn from the engine's own positions (`render()`), not gfootball's 3-D frame.
gfootball does render off-screen here (Mesa, no X server), but: one rendering engine per process (explain
keeps one env per agent, so the second would fail), its first frame took 40-60 s of asset loading on 2
busy cores, and a separate renderer fed with get_state/set_state drew stale frames (measured), so a faithful
frame of a replayed state would need the env's own engine switched to rendering for the rest of its life.

Memory and close(): one engine adds ~57 MB to a process (measured RSS, 4 engines: 65 -> 293 MB). Destroying
an engine returns almost none of it (4 destroyed: -30 MB; 4 new ones then: +200 MB), while gfootball's
own close() parks the engine in a per-process pool that the next env reuses (4 new ones: +0 MB). So close()
hands the engine back to that pool: evaluation and replay envs built later in the same actor or explain
process reuse it instead of growing the process.
Speed: ~240 steps per CPU-second through this adapter with random players (measured; environments.md
has 220-260 for gfootball alone); the C++ engine is single-threaded.
"""
from __future__ import annotations

import warnings

import numpy as np

from magicmask.actors.envs.base import AgentEnv, TeamWorld
from magicmask.protocol.envspec import EnvSpec

SCENARIO = "academy_3_vs_1_with_keeper"
N_PLAYERS = 3          # controlled left players, one per agent
N_ACTIONS = 19         # gfootball's default action set
OBS_DIM = 115          # simple115v2
REWARDS = ("scoring", "scoring,checkpoints")
_SEED_MOD = 2**31 - 1  # the engine's seed is a C int
END_REASONS = ("goal", "out_of_play", "lost_ball")   # the scenario's end events (`_end_reason`)


def _import_gfootball():
    """gfootball, or an ImportError that says how to install it (it is not a pip extra: it compiles)."""
    try:
        import gfootball.env as football_env
    except ImportError as e:
        raise ImportError(f"grf-3v1 needs gfootball, which is not installed ({e}); install it into the "
                          f"project's venv with deploy/install-football.sh (compiles ~5 minutes once)") from e
    return football_env


class FootballEnv(AgentEnv, TeamWorld):
    """academy_3_vs_1_with_keeper for one agent: it plays gfootball's controlled slot `agent_id` of three;
    the other two are played by the opponent callback (peers' policies) or uniformly at random. As a
    TeamWorld it steps the three slots with the given actions (the fidelity test's team window)."""

    def __init__(self, agent_id: int = 0, n_agents: int = N_PLAYERS, rewards: str = "scoring,checkpoints",
                 max_episode_steps: int = 0):
        if int(n_agents) != N_PLAYERS:
            raise ValueError(f"grf-3v1: run.agents={n_agents}, but {SCENARIO} has exactly {N_PLAYERS} "
                             f"controlled players (one per agent): set run.agents={N_PLAYERS}")
        if not 0 <= int(agent_id) < N_PLAYERS:
            raise ValueError(f"grf-3v1: agent_id={agent_id} must be in 0..{N_PLAYERS - 1}")
        if rewards not in REWARDS:
            raise ValueError(f"grf-3v1: rewards={rewards!r}; allowed: {', '.join(map(repr, REWARDS))}")
        super().__init__(agent_id, max_episode_steps)
        football_env = _import_gfootball()
        self.n_agents = N_PLAYERS
        with warnings.catch_warnings():   # gym 0.25's notice that the old step API (used here) will change
            warnings.simplefilter("ignore", DeprecationWarning)
            self._gf = football_env.create_environment(
                env_name=SCENARIO, representation="simple115v2", rewards=rewards, render=False,
                number_of_left_players_agent_controls=N_PLAYERS)
        self.spec = EnvSpec(obs_shape=(OBS_DIM,), obs_dtype="float32", n_actions=N_ACTIONS, n_agents=N_PLAYERS,
                            shared_world=True, name="grf-3v1")
        self._all_legal = np.ones(N_ACTIONS, bool)
        self._obs = np.zeros((N_PLAYERS, OBS_DIM), np.float32)
        self._stats: dict[str, float] = {}
        self._team_end = dict.fromkeys(END_REASONS, 0.0)

    def _raw(self) -> dict:
        """gfootball's raw observation of this step (slot 0's view; positions are the same for all)."""
        return self._gf.unwrapped.observation()[0]

    def _reset(self, seed: int):
        if self._gf is None:
            raise RuntimeError("grf-3v1: reset() after close()")
        self._reset_match(seed)
        self._stats = {"team_return": 0.0, **dict.fromkeys(END_REASONS, 0.0)}
        return self._obs[self.agent_id].copy(), self._all_legal.copy(), {}

    def _step(self, action: int):
        me = self.agent_id
        actions = [action if j == me else self._play_other(j, self._obs[j].copy(), self._all_legal.copy())
                   for j in range(N_PLAYERS)]
        obs, rewards, done, info = self._gf.step(actions)
        self._obs = np.asarray(obs, np.float32)
        rewards = np.asarray(rewards, np.float64)   # gfootball's float32 values, exactly
        team = float(rewards.sum())
        st = self._stats
        st["team_return"] += team
        term = trunc = False
        if done:
            reason = self._end_reason(info)
            if reason is None:
                trunc = True   # none of the scenario's end events: gfootball's step limit
            else:
                term, st[reason] = True, 1.0
        out = {"team_reward": team, "score_reward": float(info["score_reward"])}
        return self._obs[me].copy(), self._all_legal.copy(), float(rewards[me]), term, trunc, out

    def _end_reason(self, info: dict) -> str | None:
        """Why the episode just ended, the first that applies: "goal", "out_of_play" (a throw-in or goal kick
        may also hand the ball to the defenders), "lost_ball" (the defenders' ball); None: none of the
        scenario's end events, so gfootball's step limit."""
        raw = self._raw()
        return ("goal" if info["score_reward"] > 0 else "out_of_play" if raw["game_mode"] != 0
                else "lost_ball" if raw["ball_owned_team"] == 1 else None)

    def _reset_match(self, seed: int) -> None:
        """Reseed the engine (both settings, every time: gfootball reads the side only at its first reset)."""
        engine_seed = int(seed) % _SEED_MOD
        cfg = self._gf.unwrapped._config
        cfg["game_engine_random_seed"] = engine_seed
        cfg["reverse_team_processing"] = bool(engine_seed % 2)
        self._obs = np.asarray(self._gf.reset(), np.float32)

    # -------- TeamWorld: the three slots' actions given, every slot's reward --------
    def team_reset(self, seed: int):
        if self._gf is None:
            raise RuntimeError("grf-3v1: team_reset() after close()")
        self._done = True                  # the agent's own stream must be reset before it steps again
        self._reset_match(seed)
        self._team_t = 0
        self._team_end = dict.fromkeys(END_REASONS, 0.0)
        return [o.copy() for o in self._obs], [self._all_legal.copy() for _ in range(N_PLAYERS)]

    def team_step(self, actions):
        if len(actions) != N_PLAYERS:
            raise ValueError(f"grf-3v1.team_step: {len(actions)} actions for {N_PLAYERS} players")
        obs, rewards, done, info = self._gf.step([int(a) for a in actions])
        self._obs = np.asarray(obs, np.float32)
        self._team_t += 1
        if done:
            reason = self._end_reason(info)
            self._team_end = {k: float(k == reason) for k in END_REASONS}
        done = bool(done) or bool(self.max_episode_steps and self._team_t >= self.max_episode_steps)
        return ([o.copy() for o in self._obs], [self._all_legal.copy() for _ in range(N_PLAYERS)],
                np.asarray(rewards, np.float32), np.full(N_PLAYERS, not done), done)

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        return dict(self._stats)

    def team_stats(self) -> dict[str, float]:
        """How the last team episode ended: goal, out_of_play, lost_ball (each 0 or 1; all 0: the step limit)."""
        return dict(self._team_end)

    def render(self) -> np.ndarray:
        """A 2-D top view of the pitch (uint8, H x W x 3), from the engine's positions: left team blue, right
        team red, the controlled players numbered by agent (this agent's in yellow), the ball white (its
        shadow grows with its height), the player on the ball ringed. Why not gfootball's 3-D frame: see the
        module docstring."""
        if self._gf is None:
            raise RuntimeError("grf-3v1: render() after close()")
        return draw_pitch(self._gf.unwrapped.observation(), self.agent_id)

    def close(self) -> None:
        """Hand the engine back to gfootball's per-process pool (see the module docstring: destroying it
        would not return its memory, reusing it does). Idempotent."""
        if self._gf is not None:
            self._gf.close()
            self._gf = None


# ---------------------------------------------------------------------------------------------------------
# The picture: gfootball's pitch is x in [-1, 1] (left goal to right goal, 105 m), y in [-0.42, 0.42]
# (top to bottom, 68 m), so 1 unit = 52.5 m.
# ---------------------------------------------------------------------------------------------------------
_SCALE, _MARGIN = 300, 24                  # pixels per unit, border around the pitch
_W, _H = 2 * _SCALE + 2 * _MARGIN, int(0.84 * _SCALE) + 2 * _MARGIN + 22   # + a caption line
_M = 1 / 52.5                              # one metre in pitch units
_GRASS, _LINE = (40, 120, 50), (235, 235, 235)
_LEFT, _RIGHT, _ME = (60, 110, 230), (215, 50, 45), (250, 215, 40)


def _px(x: float, y: float) -> tuple[int, int]:
    return int(round(_MARGIN + (x + 1) * _SCALE)), int(round(_MARGIN + (y + 0.42) * _SCALE))


def draw_pitch(raw: list[dict], agent_id: int) -> np.ndarray:
    """The picture of one step from gfootball's raw observation (one dict per controlled slot)."""
    import cv2   # gfootball's own dependency (it imports cv2), so present wherever this env runs

    o = raw[0]
    img = np.empty((_H, _W, 3), np.uint8)
    img[:] = _GRASS
    aa = cv2.LINE_AA
    cv2.rectangle(img, _px(-1, -0.42), _px(1, 0.42), _LINE, 2, aa)
    cv2.line(img, _px(0, -0.42), _px(0, 0.42), _LINE, 2, aa)
    cv2.circle(img, _px(0, 0), int(9.15 * _M * _SCALE), _LINE, 2, aa)
    for side in (-1, 1):
        box, area, goal = 16.5 * _M, 5.5 * _M, 7.32 / 2 * _M
        cv2.rectangle(img, _px(side, -20.16 * _M), _px(side - side * box, 20.16 * _M), _LINE, 2, aa)
        cv2.rectangle(img, _px(side, -9.16 * _M), _px(side - side * area, 9.16 * _M), _LINE, 2, aa)
        cv2.rectangle(img, _px(side, -goal), _px(side + side * 2 * _M, goal), _LINE, -1, aa)
    r = 7
    owner = (o["ball_owned_team"], o["ball_owned_player"])
    for team, colour, pos in ((0, _LEFT, o["left_team"]), (1, _RIGHT, o["right_team"])):
        for k, (x, y) in enumerate(pos):
            c = _px(x, y)
            cv2.circle(img, c, r, colour, -1, aa)
            if owner == (team, k):
                cv2.circle(img, c, r + 4, _LINE, 2, aa)
    for slot, view in enumerate(raw):   # controlled players: the agent's number beside them
        if view["active"] < 0:
            continue
        x, y = o["left_team"][view["active"]]
        c = _px(x, y)
        colour = _ME if slot == agent_id else _LINE
        if slot == agent_id:
            cv2.circle(img, c, r, _ME, -1, aa)
        cv2.putText(img, str(slot), (c[0] + r + 2, c[1] - r), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, aa)
    bx, by, bz = (float(v) for v in o["ball"])
    cv2.circle(img, _px(bx, by), 4 + int(min(bz, 3.0) * 2), (25, 70, 30), -1, aa)   # shadow
    cv2.circle(img, _px(bx, by - bz * 0.01), 4, (255, 255, 255), -1, aa)
    cv2.circle(img, _px(bx, by - bz * 0.01), 4, (0, 0, 0), 1, aa)
    caption = (f"agent {agent_id}   score {o['score'][0]}-{o['score'][1]}   steps left {o['steps_left']}")
    cv2.putText(img, caption, (_MARGIN, _H - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _LINE, 1, aa)
    return img
