"""Who plays the other seats of a training episode (env.opponents): the mixture, the league of past policies,
and the actor's draw, including built-in players by name."""
from collections import Counter

import numpy as np
import pytest
import torch

from magicmask.actors.actor import Actor
from magicmask.actors.envs import env_spec, make_env
from magicmask.actors.envs.base import RANDOM_OPPONENT
from magicmask.actors.league import LEAGUE_ID0, League
from magicmask.models.networks import build_nets
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import decode
from magicmask.protocol.opponents import opponent_mix


def _cfg(*extra):
    return C.load(overrides=["env.name=connect4", "run.agents=3", "net.metrics_port=0", "ppo.hidden=16", *extra],
                  environ={})


def test_the_mixture_is_parsed_normalised_and_checked_against_the_env():
    assert opponent_mix("peers=3,search:2=1") == {"peers": 0.75, "search:2": 0.25}
    for bad in ("peers", "peers=-1", "peers=1,peers=2", "Search=1", "peers=0"):
        with pytest.raises(C.ConfigError, match="env.opponents"):
            opponent_mix(bad)
    with pytest.raises(C.ConfigError, match="no built-in player 'rule'"):
        env_spec(_cfg("env.opponents=peers=1,rule=1"))         # doudizhu's player, not connect4's
    with pytest.raises(C.ConfigError, match="league opponents need agents of one network group"):
        env_spec(C.load(overrides=["env.name=doudizhu", "run.agents=3", "env.opponents=league=1"], environ={}))


def test_the_league_keeps_spaced_snapshots_and_forgets_the_oldest():
    cfg = _cfg("env.league_size=3", "env.league_every=10")
    spec = env_spec(cfg)
    league = League(spec, cfg)
    weights = build_nets(spec, cfg.ppo, cfg.mask, 1, seed=0).agent_state(0)
    kept = [v for v in range(0, 60, 5) if league.offer(0, weights, v)]
    assert kept == [0, 10, 20, 30, 40, 50] and len(league) == 3
    assert [v for _, v, _ in league.snapshots] == [30, 40, 50]   # bounded: the oldest went
    assert league.offer(1, weights, 3)                           # spacing is per agent
    rng = np.random.default_rng(0)
    obs, legal, _ = make_env(cfg, 0).reset(seed=0)
    legal = legal.copy()
    legal[:6] = False                                            # only column 6 is legal
    assert league.act(league.sample(rng), obs, legal, rng) == 6
    assert League(spec, cfg).sample(rng) is None


def test_league_snapshots_are_copies_and_kept_only_where_a_draw_can_use_them(tmp_path):
    cfg = _cfg("env.league_every=1")
    spec = env_spec(cfg)
    league = League(spec, cfg)
    a, b = (build_nets(spec, cfg.ppo, cfg.mask, 1, seed=s).agent_state(0) for s in (0, 1))
    league.offer(0, a, 0)
    league.offer(0, b, 1)
    obs = np.random.default_rng(0).random((1, *spec.obs_shape)).astype(np.float32)   # not the empty board: logits 0
    first, second = (snap.logits(obs) for _, _, snap in league.snapshots)
    assert not np.allclose(first, second)                       # each holds its own weights, not the last ones
    np.testing.assert_allclose(first, build_nets(spec, cfg.ppo, cfg.mask, 1, seed=0)(
        torch.as_tensor(obs)[None])[0][0].detach().numpy(), rtol=1e-5, atol=1e-6)
    # an actor whose mixture has no league, or whose env seats no opponent per episode, keeps no snapshot
    for extra, plays in ((("env.opponents=peers=1",), False), (("env.opponents=league=1",), True),
                         (("env.name=gates", "env.opponents=league=1"), False)):
        actor = Actor(_cfg(*extra), 0, tmp_path / str(len(extra)) / str(plays))
        assert actor.league_plays is plays
        w = build_nets(actor.spec, actor.cfg.ppo, actor.cfg.mask, 1, seed=0).agent_state(0)
        actor.on_weights(decode(actor.sender.pack(M.WEIGHTS, {"target": 1}, w, policy_version=1), 1 << 30))
        assert len(actor.league) == int(plays)


def test_the_mixture_draws_as_rng_choice_does():
    """OpponentMix.draw is rng.choice(p=...) without its checks: the same kinds from the same stream."""
    mix = opponent_mix("peers=0.4,self=0.1,league=0.2,random=0.1,search:2=0.2")
    ours, numpys = np.random.default_rng(7), np.random.default_rng(7)
    drawn = [mix.draw(ours) for _ in range(3000)]
    assert drawn == [mix.kinds[numpys.choice(len(mix), p=list(mix.values()))] for _ in range(3000)]
    assert set(drawn) == set(mix) and ours.random() == numpys.random()


def test_the_actor_draws_opponents_as_the_mixture_says(tmp_path):
    cfg = _cfg("env.opponents=peers=0.4,self=0.1,league=0.2,random=0.1,search:2=0.2")
    actor = Actor(cfg, 1, tmp_path)
    draws = Counter(actor.draw_opponent() for _ in range(4000))
    # the league is empty: its share goes to the peers (agents 0 and 2)
    assert set(draws) == {0, 2, 1, RANDOM_OPPONENT, "search:2"}
    assert draws[0] + draws[2] == pytest.approx(0.6 * 4000, rel=0.1)
    assert draws[1] == pytest.approx(0.1 * 4000, rel=0.25) and draws["search:2"] == pytest.approx(800, rel=0.15)
    weights = build_nets(actor.spec, cfg.ppo, cfg.mask, 1, seed=0).agent_state(0)
    actor.league.offer(0, weights, 0)
    draws = Counter(actor.draw_opponent() for _ in range(2000))
    assert draws[LEAGUE_ID0] == pytest.approx(0.2 * 2000, rel=0.2)   # league snapshot 0 is id LEAGUE_ID0 + 0
    obs, legal, _ = actor.envs[0].reset(seed=1)
    assert legal[actor.play_other_seat(LEAGUE_ID0, obs, legal)]
    assert legal[actor.play_other_seat(cfg.run.agents + 5, obs, legal)]   # a seat no agent holds: random, not league
