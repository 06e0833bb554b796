"""Environment adapters: spaces and spec, legality, gates' exact rewards and ground truth, seeding,
Connect Four's rewards, seats, opponent perspective and evaluation players, truncation, rendering,
clear config errors, and the generic PettingZoo adapter (AEC and Parallel, by import path; image observations
channels first for the CNN). The toy PettingZoo envs are in tests/envs/toy_envs.py."""
import numpy as np
import pytest
import torch

from magicmask.actors.envs import env_spec, make_env
from magicmask.actors.envs.connect4 import (CELL_WINDOWS, COLS, LOSS_REASONS, ROWS, SEATS, FastConnectFour, builtin_player,
                                            evaluate_vs, loss_reason, lookahead_player, random_player)
from magicmask.actors.envs.gates import GatesEnv
from magicmask.actors.envs.pettingzoo_env import split_obs
from magicmask.actors.evaluation import evaluate
from magicmask.models.networks import build_nets
from magicmask.protocol.config import Config, ConfigError


def drop_cell(occupied: np.ndarray, col: int) -> int | None:
    """Flat index where a piece dropped in `col` lands (row 0 is the top), or None if the column is full."""
    for r in range(ROWS - 1, -1, -1):
        k = r * COLS + col
        if not occupied[k]:
            return k
    return None


def wins_with(pieces: np.ndarray, k: int) -> bool:
    """Would a piece at cell k complete a line of 4 with `pieces` (bool[42])? The rule, cell by cell."""
    p = pieces.copy()
    p[k] = True
    return bool(p[CELL_WINDOWS[k]].all(1).any())


def cfg_for(name, agents=2, max_steps=0, **kwargs):
    cfg = Config()
    cfg.env.name, cfg.run.agents, cfg.env.max_episode_steps, cfg.env.kwargs = name, agents, max_steps, kwargs
    return cfg


def play_random(env, seed, rng, max_steps=10_000):
    """One episode with uniform random legal actions; checks every legal set on the way."""
    obs, legal, info = env.reset(seed=seed)
    steps = []
    for _ in range(max_steps):
        assert legal.dtype == bool and legal.shape == (env.spec.n_actions,) and legal.any()
        assert obs.shape == env.spec.obs_shape and obs.dtype == np.dtype(env.spec.obs_dtype)
        a = int(rng.choice(np.flatnonzero(legal)))
        obs, legal, r, term, trunc, info = env.step(a)
        steps.append((a, r, term, trunc, info))
        if term or trunc:
            return steps
    raise AssertionError("episode did not end")


# ================= gates =================
def test_gates_spec_spaces_and_ground_truth():
    env = make_env(cfg_for("gates", agents=3), 1)
    s = env.spec
    assert (s.obs_shape, s.obs_dtype, s.n_actions, s.n_agents, s.shared_world) == ((20,), "float32", 4, 3, False)
    obs, legal, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (20,) and legal.dtype == bool and legal.all()
    assert obs[0] == 1 and obs.sum() == 1      # step 0 is no gate: no cue
    assert info["critical_steps"] == sorted({3, 10, env.private_gate})
    assert env.agent_id == 1
    with pytest.raises(AttributeError):
        env.agent_id = 2
    privates = [GatesEnv(i).private_gate for i in range(8)]
    assert all(p not in (3, 10) and 0 <= p < 16 for p in privates) and len(set(privates)) > 2
    assert env_spec(cfg_for("gates", agents=3)) == s


def test_gates_rewards_exactly_as_specified():
    L, A = 16, 4
    for agent in (0, 2):
        env = GatesEnv(agent)
        gates = set(env.critical_steps)
        for seed in (0, 1, 7):
            runs = []
            for a in range(A):   # the dynamics do not depend on actions: every step can be tried with every action
                obs, _, _ = env.reset(seed=seed)
                rows = []
                for t in range(L):
                    nobs, legal, r, term, trunc, info = env.step(a)
                    rows.append((obs, r, info["critical"], term, trunc))
                    obs = nobs
                runs.append(rows)
            for t in range(L):
                obs = runs[0][t][0]
                assert all(np.array_equal(runs[a][t][0], obs) for a in range(A))
                assert obs[t] == 1 and obs[:L].sum() == 1
                cue = obs[L:]
                for a in range(A):
                    _, r, crit, term, trunc = runs[a][t]
                    assert crit == (t in gates)
                    assert term == (t == L - 1) and not trunc
                    if t in gates:
                        assert cue.sum() == 1
                        assert r == (1.0 if a == int(cue.argmax()) else 0.0)
                    else:
                        assert cue.sum() == 0 and r == 0.0


def test_gates_correct_policy_gets_all_gates_and_stats():
    env = GatesEnv(0)
    obs, legal, info = env.reset(seed=3)
    total = 0.0
    while True:
        a = int(obs[16:].argmax()) if obs[16:].any() else 0
        obs, legal, r, term, trunc, info = env.step(a)
        total += r
        if term:
            break
    assert total == len(env.critical_steps) == 3
    assert info["episode_stats"] == {"gate_accuracy": 1.0, "shared_gate_accuracy": 1.0, "private_gate_accuracy": 1.0}


def test_gates_shared_gates_give_identical_observations_to_two_agents():
    e0, e1 = make_env(cfg_for("gates"), 0), make_env(cfg_for("gates"), 1)
    assert e0.private_gate != e1.private_gate
    o0, _, _ = e0.reset(seed=42)
    o1, _, _ = e1.reset(seed=42)
    for t in range(16):
        if t in (3, 10):
            assert np.array_equal(o0, o1) and o0[16:].sum() == 1
        if t == e0.private_gate:
            assert o0[16:].sum() == 1 and o1[16:].sum() == 0
        o0, *_ = e0.step(0)
        o1, *_ = e1.step(0)


def test_gates_seeding_and_noise():
    env = make_env(cfg_for("gates", length=12, n_actions=3, shared_gates=[2, 7], noise=5), 0)
    assert env.spec.obs_shape == (12 + 3 + 5,) and env.spec.n_actions == 3
    assert env.critical_steps == sorted({2, 7, env.private_gate})

    def trace(seed):
        out = [env.reset(seed=seed)[0]]
        for t in range(12):
            o, _, r, *_ = env.step(t % 3)
            out += [o, np.array([r])]
        return np.concatenate(out)
    a, b = trace(5), trace(5)
    assert np.array_equal(a, b)
    assert not np.array_equal(trace(5), trace(6))
    first = env.reset(seed=5)[0]
    assert np.all((first[15:] >= 0) & (first[15:] < 1)) and first[15:].std() > 0


def test_illegal_actions_raise_and_step_after_end():
    env = make_env(cfg_for("gates"), 0)
    env.reset(seed=0)
    for bad in (4, -1):
        with pytest.raises(ValueError, match=rf"illegal action {bad}.*legal actions: \[0, 1, 2, 3\]"):
            env.step(bad)
    for _ in range(16):
        env.step(0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_truncation_via_max_episode_steps():
    env = make_env(cfg_for("gates", max_steps=5), 0)
    steps = play_random(env, 0, np.random.default_rng(0))
    assert len(steps) == 5 and steps[-1][3] and not steps[-1][2]
    assert "episode_stats" in steps[-1][4]
    c4 = make_env(cfg_for("connect4", max_steps=3), 0)
    steps = play_random(c4, 0, np.random.default_rng(0))
    assert len(steps) == 3 and steps[-1][3] and not steps[-1][2]
    assert steps[-1][4]["episode_stats"]["truncated"] == 1.0
    # a new episode after truncation starts from an empty board
    obs, legal, _ = c4.reset(seed=1)
    assert obs.sum() <= 1 and legal.all()


def test_render_returns_rgb_frames():
    g = make_env(cfg_for("gates"), 0)
    g.reset(seed=0)
    f0 = g.render()
    g.step(0)
    f1 = g.render()
    for f in (f0, f1):
        assert f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3
    assert not np.array_equal(f0, f1)   # the position marker moved
    c = make_env(cfg_for("connect4"), 0)
    c.reset(seed=0)
    b0 = c.render()
    c.step(3)
    b1 = c.render()
    assert b0.dtype == np.uint8 and b0.ndim == 3 and b0.shape[2] == 3 and not np.array_equal(b0, b1)


# ================= connect4 =================
def scripted(moves, log=None):
    """An opponent callback playing the given columns in order (recording its calls)."""
    it = iter(moves)

    def fn(agent, obs, legal):
        if log is not None:
            log.append((agent, obs.copy(), legal.copy()))
        return next(it)
    return fn


@pytest.mark.parametrize("seat,ours,theirs,want", [
    (0, [0, 0, 0, 0], [1, 1, 1], 1.0),      # first player, vertical four in column 0
    (0, [0, 2, 4, 6], [1, 1, 1, 1], -1.0),  # first player, the opponent stacks column 1
    (1, [1, 1, 1, 1], [0, 2, 4, 6], 1.0),   # second player wins
    (1, [0, 2, 4], [1, 1, 1, 1], -1.0),     # second player loses
])
def test_connect4_win_loss_signs_from_both_seats(seat, ours, theirs, want):
    env = make_env(cfg_for("connect4", seat=seat), 0)
    env.set_episode_opponent(1)
    env.set_opponent(scripted(theirs))
    obs, legal, info = env.reset(seed=0)
    assert info["seat"] == seat
    for i, a in enumerate(ours):
        obs, legal, r, term, trunc, info = env.step(a)
        if i < len(ours) - 1:
            assert r == 0.0 and not term
    assert term and not trunc and r == want
    stats = info["episode_stats"]
    assert stats["win"] == float(want > 0) and stats["loss"] == float(want < 0) and stats["draw"] == 0.0


DRAW_GAME = [1, 2, 6, 3, 3, 5, 4, 2, 4, 3, 2, 0, 5, 6, 0, 2, 3, 4, 6, 4, 2,
             4, 4, 1, 0, 5, 3, 5, 5, 6, 6, 6, 0, 0, 2, 5, 3, 0, 1, 1, 1, 1]   # 42 moves, no four in a row


@pytest.mark.parametrize("seat", [0, 1])
def test_connect4_draw(seat):
    from pettingzoo.classic.connect_four.connect_four import raw_env
    ref = raw_env()
    ref.reset()
    for a in DRAW_GAME:
        ref.step(a)
    assert all(ref.terminations.values()) and ref.rewards == {"player_0": 0, "player_1": 0}
    env = make_env(cfg_for("connect4", seat=seat), 0)
    env.set_episode_opponent(1)
    env.set_opponent(scripted(DRAW_GAME[1 - seat::2]))
    env.reset(seed=0)
    for a in DRAW_GAME[seat::2]:
        obs, legal, r, term, trunc, info = env.step(a)
    assert term and r == 0.0 and info["episode_stats"] == {"win": 0.0, "loss": 0.0, "draw": 1.0, "truncated": 0.0}
    assert obs.sum() == 42


def test_connect4_opponent_sees_its_own_perspective():
    log = []
    env = make_env(cfg_for("connect4", seat=0), 0)
    env.set_episode_opponent(3)
    env.set_opponent(scripted([0, 0], log))
    obs, legal, _ = env.reset(seed=0)
    assert obs.shape == (84,) and obs.dtype == np.float32 and obs.sum() == 0 and legal.all()
    obs, legal, r, *_ = env.step(3)
    agent, o, lg = log[0]
    b = o.reshape(ROWS, COLS, 2)
    assert agent == 3 and lg.all()
    assert b[..., 0].sum() == 0 and b[5, 3, 1] == 1 and b[..., 1].sum() == 1   # our piece is "the other's"
    mine = obs.reshape(ROWS, COLS, 2)
    assert mine[5, 3, 0] == 1 and mine[5, 0, 1] == 1 and obs.sum() == 2       # back to our perspective
    # -1: the built-in random player, the callback is not used
    env.set_episode_opponent(-1)
    env.set_opponent(lambda *a: pytest.fail("callback called for the random opponent"))
    play_random(env, 1, np.random.default_rng(0))


def test_connect4_seat_from_seed_and_seeding():
    env = make_env(cfg_for("connect4"), 0)
    seats = {s: env.reset(seed=s)[2]["seat"] for s in range(20)}
    assert set(seats.values()) == {0, 1}
    assert all(env.reset(seed=s)[2]["seat"] == seats[s] for s in range(20))

    def trace(seed):
        rng = np.random.default_rng(0)
        return [(a, r) for a, r, *_ in play_random(env, seed, rng)]
    assert trace(4) == trace(4)
    # second seat: the random first player has moved before our first observation
    s = next(k for k, v in seats.items() if v == 1)
    assert env.reset(seed=s)[0].reshape(ROWS, COLS, 2)[..., 1].sum() == 1


def test_connect4_legal_respected_and_illegal_raise():
    env = make_env(cfg_for("connect4", seat=0), 0)
    env.set_episode_opponent(1)
    env.set_opponent(scripted([0, 0, 0, 1, 1, 1]))
    env.reset(seed=0)
    for _ in range(3):
        obs, legal, *_ = env.step(0)
    assert not legal[0] and legal[1:].all()
    with pytest.raises(ValueError, match=r"illegal action 0.*legal actions: \[1, 2, 3, 4, 5, 6\]"):
        env.step(0)
    env.set_opponent(None)   # uniform random from here on
    rng = np.random.default_rng(1)
    outcomes = set()
    for seed in range(30):   # play_random asserts every legal set; the board's full columns are never legal
        steps = play_random(env, seed, rng)
        outcomes.add(steps[-1][1])
    assert outcomes <= {-1.0, 0.0, 1.0} and {-1.0, 1.0} <= outcomes


def test_fast_winner_check_matches_pettingzoo_and_board_logic():
    from pettingzoo.classic.connect_four.connect_four import raw_env
    rng = np.random.default_rng(0)
    for g in range(60):
        fast, ref = FastConnectFour(), raw_env()
        fast.reset(seed=g)
        ref.reset(seed=g)
        while not any(ref.terminations.values()):
            d = ref.observe(ref.agent_selection)
            legal = d["action_mask"].astype(bool)
            a = int(rng.choice(np.flatnonzero(legal)))
            planes = d["observation"].reshape(-1, 2)
            mine, occ = planes[:, 0] > 0, planes.any(1)
            k = max(r * COLS + a for r in range(ROWS) if not occ[r * COLS + a])
            predicted_win = wins_with(mine, k)
            mover = ref.agent_selection
            fast.step(a)
            ref.step(a)
            assert fast.board == ref.board and fast.rewards == ref.rewards and fast.terminations == ref.terminations
            assert fast.agent_selection == ref.agent_selection
            assert fast._cumulative_rewards == ref._cumulative_rewards
            for ag in ref.agents:
                fo, ro = fast.observe(ag), ref.observe(ag)
                for key in ("observation", "action_mask"):
                    assert fo[key].dtype == ro[key].dtype and np.array_equal(fo[key], ro[key])
            assert (ref.rewards[mover] == 1) == predicted_win


def test_lookahead_takes_wins_and_blocks():
    rng = np.random.default_rng(0)
    b = np.zeros((ROWS, COLS, 2), np.float32)
    b[5, 0:3, 0] = 1            # we have three in the bottom row: column 3 wins
    b[5, 4:6, 1] = 1
    b[4, 4, 1] = 1
    legal = np.ones(COLS, bool)
    assert all(lookahead_player(b.reshape(-1), legal, rng) == 3 for _ in range(10))
    b = np.zeros((ROWS, COLS, 2), np.float32)
    b[3:6, 6, 1] = 1            # the opponent has three stacked in column 6: block it
    b[5, 0, 0] = b[5, 2, 0] = 1
    assert all(lookahead_player(b.reshape(-1), legal, rng) == 6 for _ in range(10))


def test_lookahead_moves_are_the_rule_on_every_position_of_random_games():
    """The bitboard lookahead against the rule spelled out with drop_cell and wins_with, on ~2,000 positions:
    a winning column when there is one, else a blocking one, else any legal column; every winning (blocking)
    column gets drawn."""
    rng, env, drawn = np.random.default_rng(1), FastConnectFour(), {}
    for g in range(100):
        env.reset(seed=g)
        while not any(env.terminations.values()):
            obs, legal = split_obs(env.observe(env.agent_selection), COLS)
            mine, theirs = (obs.reshape(ROWS, COLS, 2)[..., k].reshape(-1) > 0.5 for k in (0, 1))
            occupied = mine | theirs
            want = None
            for pieces in (mine, theirs):
                want = want or {c for c in np.flatnonzero(legal) if wins_with(pieces, drop_cell(occupied, int(c)))}
            got = lookahead_player(obs, legal, rng)
            assert legal[got] and (got in want if want else True)
            if want and len(want) > 1:
                drawn.setdefault(frozenset(want), set()).add(got)
            env.step(int(random_player(obs, legal, rng)))
    assert drawn and any(len(v) > 1 for v in drawn.values())


def test_lookahead_beats_random_and_evaluate_vs_sums_to_one():
    rng = np.random.default_rng(0)
    res = evaluate_vs(lambda o, lg: lookahead_player(o, lg, rng), random_player, 200, seed=1)
    assert set(res) == {"win", "loss", "draw"} and abs(sum(res.values()) - 1) < 1e-9
    assert res["win"] > 0.7
    res = evaluate_vs(lambda o, lg: random_player(o, lg, rng), lookahead_player, 40, seed=2)
    assert abs(sum(res.values()) - 1) < 1e-9 and res["loss"] > 0.5
    env = make_env(cfg_for("connect4"), 0)
    extra = env.evaluate_extra(lambda o, lg: int(np.flatnonzero(lg)[0]), 4, rng)
    assert set(extra) == {f"vs_{p}_{r}" for p in ("lookahead", "search2") for r in ("win", "loss", "draw")}


def test_threat_planes_are_the_rule_on_every_position_of_random_games():
    """features=threats: planes 0-1 are the board's two planes, plane 2 each column's lowest empty cell, planes 3-4
    the empty cells (playable or not) where a disc of the player to move / of the other would complete four;
    features=tactics adds the playable cells among those (win now, block now) and the playable cells right under
    one of the other's threats (playing there hands them the win). Spelled out with wins_with on ~2,000
    positions; threats of both sides, ones not yet playable, and every tactical plane occur."""
    rng, seen = np.random.default_rng(2), {"mine": 0, "theirs": 0, "hanging": 0, 5: 0, 6: 0, 7: 0}
    board, threats, tactics = FastConnectFour(), FastConnectFour("threats"), FastConnectFour("tactics")
    for g in range(100):
        for env in (board, threats, tactics):
            env.reset(seed=g)
        while not any(board.terminations.values()):
            sel = board.agent_selection
            two = board.observe(sel)["observation"]
            five = threats.observe(sel)["observation"]
            eight = tactics.observe(sel)["observation"]
            assert five.shape == (ROWS, COLS, 5) and five.dtype == np.int8 and np.array_equal(five[..., :2], two)
            assert eight.shape == (ROWS, COLS, 8) and np.array_equal(eight[..., :5], five)
            mine, theirs = (two[..., k].reshape(-1) > 0 for k in (0, 1))
            occupied = mine | theirs
            lowest = {drop_cell(occupied, c) for c in range(COLS)} - {None}
            assert {int(k) for k in np.flatnonzero(five[..., 2].reshape(-1))} == lowest
            want = {}
            for plane, pieces, name in ((3, mine, "mine"), (4, theirs, "theirs")):
                want[plane] = {k for k in range(ROWS * COLS) if not occupied[k] and wins_with(pieces, k)}
                assert {int(k) for k in np.flatnonzero(five[..., plane].reshape(-1))} == want[plane]
                seen[name] += bool(want[plane])
                seen["hanging"] += bool(want[plane] - lowest)
            want[5], want[6] = lowest & want[3], lowest & want[4]
            want[7] = {k for k in lowest if k - COLS in want[4]}   # the cell above k is one of their threats
            for plane in (5, 6, 7):
                assert {int(k) for k in np.flatnonzero(eight[..., plane].reshape(-1))} == want[plane]
                seen[plane] += bool(want[plane])
            a = int(rng.choice(np.flatnonzero(board.observe(sel)["action_mask"])))
            for env in (board, threats, tactics):
                env.step(a)
    assert min(seen.values()) > 20, seen


def test_loss_reason_is_the_rule_on_every_lost_game():
    """loss_reason on the position before the loser's last move, against the rule spelled out with wins_with: the
    loser could have won at once -> missed a win; else the winner could win in two columns -> faced a double
    threat; in one with another winning cell of theirs right above it -> faced a stacked threat; in one that the
    loser did not play -> did not block; else the winner's last disc landed right on the loser's. Every reason
    occurs; evaluate_vs's counts add up to its losses."""
    rng, env, seen = np.random.default_rng(3), FastConnectFour(), dict.fromkeys(LOSS_REASONS, 0)
    for g in range(300):
        env.reset(seed=g)
        plies = []
        while not any(env.terminations.values()):
            sel = env.agent_selection
            obs, legal = split_obs(env.observe(sel), COLS)
            player = lookahead_player if rng.random() < 0.6 else random_player
            a = int(player(obs, legal, rng))
            piece = SEATS.index(sel) + 1
            plies.append((env.bits[piece], env.bits[3 - piece], a, obs, legal))
            env.step(a)
        if not any(env.rewards.values()):
            continue   # a draw
        mine_bits, theirs_bits, a, obs, legal = plies[-2]   # the loser's last move
        mine, theirs = (obs.reshape(ROWS, COLS, 2)[..., k].reshape(-1) > 0.5 for k in (0, 1))
        occupied = mine | theirs
        can_win = [c for c in np.flatnonzero(legal) if wins_with(mine, drop_cell(occupied, int(c)))]
        must_block = [c for c in np.flatnonzero(legal) if wins_with(theirs, drop_cell(occupied, int(c)))]
        above = [drop_cell(occupied, int(c)) - COLS for c in must_block]   # the cell above each block (row 0 on top)
        stacked = len(must_block) == 1 and above[0] >= 0 and wins_with(theirs, above[0])
        want = ("missed a win" if can_win else "faced a double threat" if len(must_block) > 1
                else "faced a stacked threat" if stacked
                else "did not block" if must_block and a not in must_block else "played under a threat")
        if want == "played under a threat":
            assert plies[-1][2] == a   # the winner played on top of the loser's disc
        assert loss_reason(mine_bits, theirs_bits, a) == want
        seen[want] += 1
    assert min(seen.values()) >= 5, seen
    losses = {}
    res = evaluate_vs(lambda o, lg: random_player(o, lg, rng), lookahead_player, 60, seed=4, losses=losses)
    assert sum(losses.values()) == round(res["loss"] * 60) > 30 and set(losses) <= set(LOSS_REASONS)


def test_threat_features_through_the_config():
    """env.kwargs features: the spec grows to 5 planes (mirror and board convolution still apply), the built-in
    players read the first two planes and play the same moves, evaluation plays on the same planes, and a
    wrong value fails before anything runs, naming the allowed ones."""
    env = make_env(cfg_for("connect4", features="threats"), 0)
    assert env.spec.obs_shape == (210,) and env.spec.board_shape == (ROWS, COLS, 5)
    cfg = cfg_for("connect4", features="threats")
    cfg.ppo.board_filters, cfg.ppo.mirror = 8, True
    nets = build_nets(env.spec, cfg.ppo, cfg.mask, 2, seed=0)
    obs, legal, _ = env.reset(seed=3)
    assert nets(torch.as_tensor(obs)[None, None].expand(2, 1, -1))[0].shape == (2, 1, COLS)
    rng, game = np.random.default_rng(0), FastConnectFour("threats")
    game.reset(seed=0)
    for a in (0, 0, 1, 1, 2):     # the first player holds three of the bottom row: column 3 wins or blocks
        game.step(a)
    five = game.observe(game.agent_selection)["observation"].astype(np.float32)
    legal = np.ones(COLS, bool)
    assert lookahead_player(five.reshape(-1), legal, rng) == 3
    assert builtin_player("search:2")(five.reshape(-1), legal, rng) == 3
    shapes = set()
    res = evaluate_vs(lambda o, lg: shapes.add(o.size) or int(np.flatnonzero(lg)[0]), lookahead_player, 4, 0, "threats")
    assert shapes == {210} and abs(sum(res.values()) - 1) < 1e-9
    with pytest.raises(ConfigError, match=r"features='planes'.*board, threats, tactics"):
        make_env(cfg_for("connect4", features="planes"), 0)


def test_a_threats_policy_plays_from_pettingzoo_observations():
    """An outside harness hands a trained agent PettingZoo's 84 values: AgentPolicy adds the derived planes
    (the env's from_native) and plays as it does on the env's own 210; other sizes are refused by name."""
    from magicmask.explain.episodes import AgentPolicy
    cfg = cfg_for("connect4", agents=1, features="threats")
    env = make_env(cfg, 0)
    policy = AgentPolicy(build_nets(env.spec, cfg.ppo, cfg.mask, 1, seed=4), cfg.mask.tau, env.from_native)
    game, plain = FastConnectFour("threats"), FastConnectFour()
    rng = np.random.default_rng(0)
    for g in range(5):
        game.reset(seed=g)
        plain.reset(seed=g)
        while not any(game.terminations.values()):
            sel = game.agent_selection
            five, two = (e.observe(sel)["observation"].astype(np.float32).reshape(-1) for e in (game, plain))
            legal = game.observe(sel)["action_mask"].astype(bool)
            assert np.array_equal(env.from_native(two), five)
            assert policy.greedy(two, legal) == policy.greedy(five, legal)
            a = int(rng.choice(np.flatnonzero(legal)))
            game.step(a)
            plain.step(a)
    with pytest.raises(ValueError, match="an observation of 3 values"):
        env.from_native(np.zeros(3))


# ================= the declared hooks, and evaluation calling them without probing =================
class FirstLegalPeers:
    """Stands in for the actor's PeerPolicies: uniform logits, m = 0.5, every peer plays its first legal action."""

    def __init__(self, n_actions):
        self.n_actions, self.calls = n_actions, 0

    def forward(self, agent, obs):
        b = len(obs)
        return np.zeros((b, self.n_actions)), np.zeros(b), np.full(b, 0.5), np.zeros(b)

    def opponent(self, agent, obs, legal):
        self.calls += 1
        return int(np.flatnonzero(legal)[0])


@pytest.mark.parametrize("name, per_episode, extra", [
    ("gates", False, set()),
    ("connect4", True, {f"vs_{p}_{r}" for p in ("lookahead", "search2") for r in ("win", "loss", "draw")}),
])
def test_hooks_have_declared_defaults_and_evaluation_uses_them(name, per_episode, extra):
    cfg = cfg_for(name)
    cfg.env.eval_episodes = 2
    env = make_env(cfg, 0, copy_index=3)
    assert env.copy_index == 3 and make_env(cfg, 0).copy_index == 0
    assert env.per_episode_opponent is per_episode
    env.set_episode_opponent(1)          # accepted by every env; ignored where there is no per-episode opponent
    assert env.reset(seed=0)[2].get("opponent") == (1 if per_episode else None)
    peers = FirstLegalPeers(env.spec.n_actions)
    out = evaluate(cfg, 0, peers, np.random.default_rng(0))
    base = {"return_plain", "return_masked", "perturbed_share"}
    assert base <= set(out) and {k for k in out if k.startswith(("vs_lookahead", "vs_search"))} == extra
    assert ("precision_at_k" in out) == (name == "gates")      # gates reports its true critical steps
    assert peers.calls == 0   # evaluation: connect4 against its own random player; gates has no other seat


# ================= registry errors =================
def test_make_env_errors_are_clear():
    with pytest.raises(ConfigError, match=r"nosuch\.module.*No module named 'nosuch'"):
        env_spec(cfg_for("nosuch.module:env"))
    with pytest.raises(ConfigError, match=r"pettingzoo\.classic\.tictactoe_v3.*no attribute 'nope'"):
        make_env(cfg_for("pettingzoo.classic.tictactoe_v3:nope"), 0)
    with pytest.raises(ConfigError, match=r"unknown 'bogus'.*allowed: length"):
        make_env(cfg_for("gates", bogus=1), 0)
    with pytest.raises(ConfigError, match="shared_gates"):
        env_spec(cfg_for("gates", shared_gates=[20]))
    with pytest.raises(ConfigError, match="Discrete"):
        env_spec(cfg_for("tests.envs.toy_envs:make_box_actions"))
    with pytest.raises(ConfigError, match="does not accept"):
        env_spec(cfg_for("tests.envs.toy_envs:make_parallel", colour="red"))
    with pytest.raises(ConfigError, match="env.name"):
        make_env(cfg_for("not a name"), 0)


# ================= generic PettingZoo adapter =================
def test_pettingzoo_aec_by_import_path_tictactoe():
    cfg = cfg_for("pettingzoo.classic.tictactoe_v3:env")
    spec = env_spec(cfg)
    assert spec.obs_shape == (18,) and spec.n_actions == 9 and spec.shared_world
    for agent in (0, 1):
        env = make_env(cfg, agent)
        assert env.seat == env.seats[agent] == ("player_2" if agent else "player_1")
        calls = []
        env.set_opponent(lambda a, o, lg: calls.append(a) or int(np.flatnonzero(lg)[0]))
        obs, legal, _ = env.reset(seed=0)
        assert obs.sum() == agent   # the second player sees the first player's move
        rng = np.random.default_rng(agent)
        rewards = [r for _, r, *_ in play_random(env, 0, rng)]
        assert set(calls) == {1 - agent}
        assert all(r == 0 for r in rewards[:-1]) and rewards[-1] in (-1.0, 0.0, 1.0)
    # the outcome sign matches a direct replay of the same moves in PettingZoo
    from pettingzoo.classic import tictactoe_v3
    env = make_env(cfg, 0)
    env.set_opponent(lambda a, o, lg: int(np.flatnonzero(lg)[-1]))
    env.reset(seed=0)
    moves, r, term = [], 0.0, False
    while not term:
        a = int(np.flatnonzero(env._legal)[0])
        moves.append(a)
        _, _, r, term, _, _ = env.step(a)
    ref = tictactoe_v3.env()
    ref.reset(seed=0)
    it = iter(moves)
    total = 0.0
    for ag in ref.agent_iter():
        o, rew, t, tr, _ = ref.last()
        if ag == "player_1":
            total += rew
        if t or tr:
            ref.step(None)
            continue
        ref.step(next(it) if ag == "player_1" else int(np.flatnonzero(o["action_mask"])[-1]))
    assert r == total != 0


def test_pettingzoo_parallel_by_import_path():
    cfg = cfg_for("tests.envs.toy_envs:make_parallel", agents=4, n_steps=4)
    spec = env_spec(cfg)
    assert spec.obs_shape == (6,) and spec.n_actions == 3 and spec.n_agents == 4
    env = make_env(cfg, 3)                # agent 3 -> seat 3 % 3 = 0
    assert env.seat == "a"
    calls = []
    env.set_opponent(lambda a, o, lg: calls.append(a) or 0)
    obs, legal, _ = env.reset(seed=0)
    assert legal.all() and obs.dtype == np.float32
    rewards = []
    for t in range(4):
        want = int(obs[:3].argmax())
        a = want if t % 2 == 0 else (want + 1) % 3
        obs, legal, r, term, trunc, _ = env.step(a)
        rewards.append(r)
        assert term == (t == 3) and not trunc
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    assert sorted(set(calls)) == [1, 2] and len(calls) == 8
    assert [c["b"] for c in env.env.calls] == [0, 0, 0, 0]
    assert env.render() is None


def test_pettingzoo_images_come_channels_first_and_get_the_cnn():
    """A Parallel env with uint8 (H, W, C) images: every seat's observation arrives as (C, H, W) uint8 (ours
    and what the opponent callback is shown), the spec says so, and the networks read it with the CNN."""
    cfg = cfg_for("tests.envs.toy_envs:make_images", agents=3, n_steps=3)
    spec = env_spec(cfg)
    assert (spec.obs_shape, spec.obs_dtype) == ((3, 36, 36), "uint8")
    env = make_env(cfg, 1)                # seat "b": its band is in channel 1
    shown = {}

    def opponent(seat_agent, o, legal):   # keeps the first observation each other seat is shown
        shown.setdefault(seat_agent, o.copy())
        return 0
    env.set_opponent(opponent)
    steps = play_random(env, 0, np.random.default_rng(0))   # checks every obs against the spec's shape and dtype
    assert len(steps) == 3
    obs, _, _ = env.reset(seed=0)
    lit = np.zeros((3, 36, 36), np.uint8)
    lit[1, :, :12] = 255                 # step 0: band 0 of seat b's channel
    assert np.array_equal(obs, lit)
    assert sorted(shown) == [0, 2] and shown[2].shape == (3, 36, 36) and shown[2][2, :, :12].all()
    assert not shown[2][:2].any()
    nets = build_nets(spec, cfg.ppo, cfg.mask, 3)
    assert nets.image_shape == (3, 36, 36) and nets.torso is not None
    logits, value, *_ = nets(torch.as_tensor(np.stack([obs] * 3))[:, None])
    assert logits.shape == (3, 1, 3) and value.shape == (3, 1)


def test_pettingzoo_images_too_small_for_the_cnn_are_read_flattened():
    cfg = cfg_for("tests.envs.toy_envs:make_images", agents=2, side=12)
    spec = env_spec(cfg)
    assert (spec.obs_shape, spec.obs_dtype) == ((3, 12, 12), "uint8")
    nets = build_nets(spec, cfg.ppo, cfg.mask, 2)
    assert nets.image_shape is None and nets.torso is None and nets.obs_dim == 3 * 12 * 12
    obs, _, _ = make_env(cfg, 0).reset(seed=0)
    assert nets(torch.as_tensor(np.stack([obs] * 2))[:, None])[0].shape == (2, 1, 3)
