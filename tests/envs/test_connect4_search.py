"""The alpha-beta Connect Four player: it wins when it can, blocks, gets stronger with depth, and its noise
makes games differ; the env seats it (and the other built-in players) by name."""
import numpy as np
import pytest

from magicmask.actors.envs import make_env
from magicmask.actors.envs.connect4 import FastConnectFour, builtin_player, evaluate_vs, lookahead_player
from magicmask.actors.envs.pettingzoo_env import split_obs
from magicmask.actors.envs.connect4_search import (WIN, SearchPlayer, depth2_scores, from_observation, has_four, heuristic,
                                                   root_scores)
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


def slow_heuristic(obs) -> int:
    """The heuristic as its docstring says it, one line of four at a time on the (6, 7, 2) planes."""
    planes = np.asarray(obs).reshape(6, 7, 2) > 0.5
    score = 3 * int(planes[:, 3, 0].sum() - planes[:, 3, 1].sum())
    for r in range(6):
        for c in range(7):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (-1, 1)):
                cells = [(r + i * dr, c + i * dc) for i in range(4)]
                if not all(0 <= rr < 6 and 0 <= cc < 7 for rr, cc in cells):
                    continue
                a = sum(planes[rr, cc, 0] for rr, cc in cells)
                b = sum(planes[rr, cc, 1] for rr, cc in cells)
                for n, sign in ((a, 1), (b, -1)):
                    if n and not (a and b):
                        score += sign * (5 if n == 3 else 2 if n == 2 else 0)
    return score


def plain_negamax(mine: int, theirs: int, heights: list, depth: int) -> int:
    """The search's values by the plain rule: no pruning, no shortcut two plies from the leaves."""
    moves = [c for c in range(7) if heights[c] < 6]
    if not moves:
        return 0
    if any(has_four(mine | 1 << (c * 7 + heights[c])) for c in moves):
        return WIN + depth
    if depth <= 1:
        return heuristic(mine, theirs)   # the leaves' scores: tested against the plain rule below
    values = []
    for c in moves:
        heights[c] += 1
        values.append(-plain_negamax(theirs, mine | 1 << (c * 7 + heights[c] - 1), heights, depth - 1))
        heights[c] -= 1
    return max(values)


def test_the_fast_heuristic_reader_and_depth_2_scores_agree_with_the_plain_rules():
    rng, player, seen = np.random.default_rng(7), SearchPlayer(2, noise=3.0), set()
    for game in range(80):   # random games, every position of them (wins included)
        env = FastConnectFour()
        env.reset(seed=game)
        while not any(env.terminations.values()):
            obs, legal = split_obs(env.observe(env.agent_selection), 7)
            mine, theirs, heights = from_observation(obs)
            planes = obs.reshape(6, 7, 2)
            assert mine.bit_count() == planes[..., 0].sum() and theirs.bit_count() == planes[..., 1].sum()
            assert heights == [int(planes[:, c].sum()) for c in range(7)]
            assert heuristic(mine, theirs) == slow_heuristic(obs)
            fast, slow = depth2_scores(mine, theirs, heights), root_scores(mine, theirs, heights, 2)
            assert list(fast.items()) == list(slow.items())   # the order too: ties are broken by it
            seen.update(k for k, hit in (("win", WIN + 2 in slow.values()), ("loss", -(WIN + 1) in slow.values()),
                                         ("last cell", sum(heights) == 41)) if hit)
            tactical = game % 2   # half the games long and tactical: played by depth 2
            env.step(player(obs, legal, rng) if tactical else int(rng.choice(np.flatnonzero(legal))))
    assert seen == {"win", "loss", "last cell"}   # every special case of the scores came up


def test_depth_4_scores_are_the_plain_search_values():
    rng, player = np.random.default_rng(8), SearchPlayer(2, noise=3.0)
    for game in range(6):
        env = FastConnectFour()
        env.reset(seed=game)
        while not any(env.terminations.values()):
            obs, legal = split_obs(env.observe(env.agent_selection), 7)
            mine, theirs, heights = from_observation(obs)
            if sum(heights) % 5 == 0:   # every fifth position: the plain search is slow
                plain = {}
                for c in range(7):
                    if heights[c] < 6:
                        bit = 1 << (c * 7 + heights[c])
                        heights[c] += 1
                        plain[c] = WIN + 4 if has_four(mine | bit) else -plain_negamax(theirs, mine | bit, heights, 3)
                        heights[c] -= 1
                assert root_scores(mine, theirs, heights, 4) == plain
            env.step(player(obs, legal, rng) if game % 2 else int(rng.choice(np.flatnonzero(legal))))


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
