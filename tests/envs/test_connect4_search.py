"""The alpha-beta Connect Four player: it wins when it can, blocks, gets stronger with depth, and its noise
makes games differ; the env seats it (and the other built-in players) by name."""
import numpy as np
import pytest

from magicmask.actors.envs import make_env
from magicmask.actors.envs.connect4 import FastConnectFour, builtin_player, evaluate_vs, lookahead_player
from magicmask.actors.envs.pettingzoo_env import split_obs
from magicmask.actors.envs.connect4_search import SearchPlayer, from_observation, has_four
from magicmask.protocol.config import Config


def board(mine_cells, theirs_cells):
    """The (6, 7, 2) planes (row 0 on top) of a position, as the env's flat observation."""
    obs = np.zeros((6, 7, 2), np.float32)
    for r, c in mine_cells:
        obs[r, c, 0] = 1
    for r, c in theirs_cells:
        obs[r, c, 1] = 1
    legal = obs.sum(2)[0] == 0
    return obs.reshape(-1), legal


def test_bitboards_read_the_observation_and_find_fours():
    obs, _ = board([(5, 0), (5, 1), (5, 2), (5, 3)], [(4, 0)])
    mine, theirs, heights = from_observation(obs)
    assert has_four(mine) and not has_four(theirs)
    assert heights == [2, 1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_it_wins_now_and_blocks(depth):
    rng = np.random.default_rng(0)
    player = SearchPlayer(depth, noise=2.0)
    win, legal = board([(5, 1), (5, 2), (5, 3)], [(4, 1), (4, 2), (4, 3)])   # columns 0 and 4 both win
    assert {player(win, legal, rng) for _ in range(20)} <= {0, 4}
    block, legal = board([(5, 1), (4, 1)], [(5, 2), (5, 3), (5, 4)])          # they threaten column 5 only
    if depth >= 2:
        assert {player(block, legal, rng) for _ in range(20)} == {5}


def test_depth_makes_it_stronger_and_noise_makes_games_differ():
    rng = np.random.default_rng(1)
    d2, d4 = SearchPlayer(2, 1.0), SearchPlayer(4, 1.0)
    vs_lookahead = evaluate_vs(lambda o, lg: d2(o, lg, rng), lookahead_player, 40, seed=3)
    assert vs_lookahead["win"] >= 0.8
    deep = evaluate_vs(lambda o, lg: d4(o, lg, rng), d2, 40, seed=4)
    assert deep["win"] > deep["loss"] + 0.3
    games = set()
    for g in range(8):   # depth 2 against itself: only the noise can tell the games apart
        env, r, moves = FastConnectFour(), np.random.default_rng(g), []
        env.reset(seed=0)
        while not any(env.terminations.values()):
            obs, legal = split_obs(env.observe(env.agent_selection), 7)
            moves.append(d2(obs, legal, r))
            env.step(moves[-1])
        games.add(tuple(moves))
    assert len(games) >= 4
    with pytest.raises(ValueError):
        SearchPlayer(0)


def test_the_env_seats_built_in_players_by_name():
    cfg = Config()
    cfg.env.name = "connect4"
    env = make_env(cfg, 0)
    assert env.builtin_players == ("random", "lookahead", "search")
    called = []
    env.set_opponent(lambda j, obs, legal: called.append(j) or int(np.flatnonzero(legal)[0]))
    env.set_episode_opponent("search:2")
    obs, legal, info = env.reset(seed=5)
    assert info["opponent"] == "search:2"
    while True:
        obs, legal, _, term, trunc, _ = env.step(int(np.flatnonzero(legal)[0]))
        if term or trunc:
            break
    assert called == []   # the search player, not the callback, played the other seat
    with pytest.raises(ValueError, match="no built-in player"):
        builtin_player("search:x")
