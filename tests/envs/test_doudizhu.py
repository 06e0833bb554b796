"""Dou Dizhu (issue #4): the adapter (roles, spaces, legality, rewards, seeding, opponents, pictures), network
groups (EnvSpec, the learner's per-group update, checkpoints, resume and load_run), the features policy head
and the learner's legal-column computation, and a learning test: the landlord learns to beat random peasants."""
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rlcard
import torch
import zmq
from rlcard.games.doudizhu.utils import ACTION_2_ID, ID_2_ACTION

from magicmask.models.action_selection import behaviour_probs, softmax_legal
from magicmask.actors.actor import Actor
from magicmask.actors.envs import env_spec, make_env
from magicmask.actors.envs.doudizhu import N_ACTIONS, RANDOM, RULE, DouDizhuEnv
from magicmask.explain.episodes import load_run
from magicmask.learner import batched_ppo, checkpoint
from magicmask.models.action_features import action_feature_table
from magicmask.learner.batched_ppo import BatchedPPO
from magicmask.models.networks import AgentNets, nets_for
from magicmask.learner.server import Learner
from magicmask.protocol import config as C
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender, decode
from magicmask.protocol.config import ConfigError
from magicmask.protocol.envspec import EnvSpec
from magicmask.protocol.transport import tcp
from tests.helpers import fragment_columns, fragment_wire

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
PORTS = ["learner_fragments_port", "learner_weights_port", "learner_router_port",
         "broker_reports_port", "broker_snapshots_port", "broker_router_port"]


def ddz_cfg(*overrides, preset=True):
    return C.load(ROOT / "deploy/configs/doudizhu.yaml" if preset else None,
                  overrides=["env.name=doudizhu", "net.metrics_port=0", *overrides], environ={})


def first_legal(obs, legal):
    return int(np.flatnonzero(legal)[0])


def play(env, seed, policy, rng=None):
    """One episode; returns the list of (obs, legal, reward, terminated, truncated, info)."""
    obs, legal, info = env.reset(seed=seed)
    out = [(obs, legal, 0.0, False, False, info)]
    while True:
        a = policy(obs, legal) if rng is None else int(rng.choice(np.flatnonzero(legal)))
        obs, legal, r, term, trunc, info = env.step(a)
        out.append((obs, legal, r, term, trunc, info))
        if term or trunc:
            return out


# ---------------------------------------------------------------- spec and network groups
def test_spec_gives_each_role_its_shape_and_groups_them():
    spec = env_spec(ddz_cfg("run.agents=3"))
    assert (spec.obs_shape, spec.obs_dtype, spec.n_actions, spec.n_agents, spec.shared_world) == \
        ((790,), "int8", 27472, 3, True)
    assert spec.groups() == [((790,), [0]), ((901,), [1, 2])]
    assert spec.action_features == "doudizhu"
    for a in range(3):  # every agent's env reports its own view of the one run spec
        assert make_env(ddz_cfg("run.agents=3"), a).spec == spec.for_agent(a)
    assert spec.for_agent(2).obs_shape == (901,) and spec.for_agent(2).groups() == spec.groups()
    assert EnvSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(IndexError):
        spec.for_agent(3)
    # the landlord alone: one group, and the spec reads like any single-shape spec
    solo = env_spec(ddz_cfg("run.agents=1"))
    assert solo.agent_obs_shapes is None and solo.groups() == [((790,), [0])]
    with pytest.raises(ConfigError, match=r"run.agents=4: allowed 1..3"):
        env_spec(ddz_cfg("run.agents=4"))


def test_single_shape_specs_serialise_as_before_and_bad_shapes_are_named():
    plain = EnvSpec((20,), "float32", 4, 3, False, "gates")
    assert set(plain.to_dict()) == {"obs_shape", "obs_dtype", "n_actions", "n_agents", "shared_world", "name"}
    assert EnvSpec.from_dict(plain.to_dict()) == plain
    assert EnvSpec((5,), "float32", 2, 2, True, agent_obs_shapes=((5,), (5,))) == EnvSpec((5,), "float32", 2, 2, True)
    with pytest.raises(ValueError, match="agent_obs_shapes has 1 shapes for n_agents=2"):
        EnvSpec((5,), "float32", 2, 2, True, agent_obs_shapes=((5,),))
    with pytest.raises(ValueError, match=r"obs_shape=\(4,\) is none of"):
        EnvSpec((4,), "float32", 2, 2, True, agent_obs_shapes=((5,), (6,)))


# ---------------------------------------------------------------- the adapter
@pytest.mark.parametrize("agent", [0, 1, 2])
def test_random_episodes_per_role_spaces_observations_rewards(agent):
    env, rng = DouDizhuEnv(agent, 3), np.random.default_rng(agent)
    size = 790 if agent == 0 else 901
    for seed in range(12):
        obs, legal, info = env.reset(seed=seed)
        assert info["landlord"] == (agent == 0) and info["seat"] == agent
        while True:
            assert obs.shape == (size,) and obs.dtype == np.int8 and legal.shape == (N_ACTIONS,) and legal.dtype == bool
            public = env.env.get_state(agent)   # RLCard's own encoding of this seat, through its public API
            np.testing.assert_array_equal(obs, public["obs"])
            assert set(np.flatnonzero(legal)) == {ACTION_2_ID[a] for a in public["raw_legal_actions"]}
            obs, legal, r, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(legal))))
            assert not trunc
            if term:
                break
            assert r == 0.0 and "episode_stats" not in info
        stats = info["episode_stats"]
        assert r in (-1.0, 1.0) and stats["win"] == float(r > 0) and stats["landlord"] == float(agent == 0)
        assert (r > 0) == (env.env.get_payoffs()[agent] > 0) and env.game.is_over()
        with pytest.raises(RuntimeError, match="after the episode ended"):
            env.step(0)
    obs, legal, _ = env.reset(seed=99)
    with pytest.raises(ValueError, match="illegal action"):
        env.step(int(np.flatnonzero(~legal)[0]))


def test_truncation_after_max_episode_steps():
    env = DouDizhuEnv(0, 3, max_episode_steps=3)
    steps = play(env, 0, first_legal)
    assert len(steps) == 4 and steps[-1][4] and not steps[-1][3]
    assert steps[-1][5]["episode_stats"] == {"win": 0.0, "landlord": 1.0, "truncated": 1.0}


def test_seed_fixes_the_deal_and_the_whole_episode():
    for kind in (RANDOM, RULE):
        a, b = DouDizhuEnv(1, 3), DouDizhuEnv(1, 3)
        a.set_episode_opponent(kind)
        b.set_episode_opponent(kind)
        ea, eb = play(a, 7, first_legal), play(b, 7, first_legal)
        assert len(ea) == len(eb)
        for x, y in zip(ea, eb):
            np.testing.assert_array_equal(x[0], y[0])
            assert x[2] == y[2]
        assert not np.array_equal(play(a, 8, first_legal)[0][0], ea[0][0])  # another seed, another deal
    # the deal is RLCard's own for that seed
    env = DouDizhuEnv(2, 3)
    env.reset(seed=12345)
    ref = rlcard.make("doudizhu", config={"seed": 12345})
    ref.reset()
    assert [p.initial_hand for p in env.game.players] == [p.initial_hand for p in ref.game.players]


EPISODE_DIGEST = """
import hashlib, numpy as np
from magicmask.actors.envs.doudizhu import DouDizhuEnv, RANDOM, RULE
h = hashlib.sha256()
for kind in (RANDOM, RULE):
    env = DouDizhuEnv(1, 3)
    env.set_episode_opponent(kind)
    for seed in range(3):
        obs, legal, _ = env.reset(seed=seed)
        while True:
            h.update(obs.tobytes())
            obs, legal, r, term, trunc, _ = env.step(int(np.flatnonzero(legal)[-1]))
            if term or trunc:
                h.update(bytes([int(r > 0)]))
                break
print(h.hexdigest())
"""


def test_episodes_are_the_same_in_every_process():
    """RLCard lists a leader's moves from a Python set, whose order follows PYTHONHASHSEED; the adapter's random
    and rule players must not depend on it."""
    import os
    import subprocess
    import sys
    digests = {subprocess.run([sys.executable, "-c", EPISODE_DIGEST], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": str(h)}, check=True).stdout for h in (1, 2)}
    assert len(digests) == 1, digests


def test_actor_keeps_every_action_legal_under_epsilon_mask_and_peer_seats(tmp_path):
    """The actor's own loop on a peasant's copies: epsilon-random and mask-perturbed actions are legal, the
    recorded behaviour log-probabilities are those of the mixture over all 27,472 actions (the actor computes
    only the legal columns), and the other seats are played by the peers' policies on their own observations."""
    cfg = ddz_cfg("run.agents=3", "env.copies=2", "actor.fragment_len=40", "actor.eps0=0.4", "actor.eps_min=0.4",
                  "actor.report_every=1000000000", "ppo.hidden=16", "env.opponents=peers=1")
    actor = Actor(cfg, 1, tmp_path)
    for a in range(3):
        actor.peers.load(a, nets_for(actor.spec.for_agent(a), 16, 1, seed=a, action_head="features").agent_state(0), 0)
    seen = []
    for env in actor.envs:
        env.set_opponent(lambda s, o, lg, f=env._opponent: seen.append((s, o.shape)) or f(s, o, lg))
    state = [actor.reset_copy(c) for c in range(2)]
    buf = actor.collect([s[0] for s in state], [s[1] for s in state], np.zeros(2, np.int64))
    assert np.take_along_axis(buf["legal"], buf["actions"][..., None], -1).all()
    assert buf["eps_random"].any() and buf["perturbed"].any() and (~buf["eps_random"] & ~buf["perturbed"]).any()
    assert buf["terminated"].any() and set(np.unique(buf["rewards"])) <= {-1.0, 0.0, 1.0}
    for t in range(len(buf["actions"])):
        logits = actor.peers.forward(1, buf["obs"][t])[0]           # every column
        pi = softmax_legal(logits, buf["legal"][t])
        mu = behaviour_probs(pi, buf["legal"][t], buf["m"][t], float(buf["eps"][t, 0]), buf["masked"][t],
                             buf["guided"][t])
        np.testing.assert_allclose(buf["logp_mu"][t], np.log(mu[np.arange(2), buf["actions"][t]]), atol=1e-4)
    assert {s for s, _ in seen} == {0, 2} and {0: (790,), 2: (901,)} == dict(seen)


def test_rule_opponents_and_evaluation_against_them():
    env = DouDizhuEnv(0, 3)
    env.set_episode_opponent(RULE)
    rng = np.random.default_rng(0)
    wins = [play(env, s, None, rng)[-1][5]["episode_stats"]["win"] for s in range(30)]
    assert np.mean(wins) <= 0.25, wins   # the rule peasants beat a random landlord (measured: 4.5% of 400 games)
    res = env.evaluate_extra(lambda o, lg: int(rng.choice(np.flatnonzero(lg))), 6, rng)
    assert set(res) == {"vs_rule_win"} and 0.0 <= res["vs_rule_win"] <= 1.0
    with pytest.raises(ValueError, match="opponent kind -3"):
        env.set_episode_opponent(-3)


def test_render_draws_hands_moves_own_seat_and_winners():
    env = DouDizhuEnv(1, 3)
    env.reset(seed=3)
    f0 = env.render()
    assert f0.dtype == np.uint8 and f0.shape == (332, 640, 3)
    assert (f0 == (240, 200, 0)).all(-1).any()            # this agent's seat is framed
    assert not (f0 == (205, 235, 200)).all(-1).any()      # nobody has won yet
    steps = play(env, 3, first_legal)
    assert steps[-1][3]
    f1 = env.render()
    assert (f1 == (205, 235, 200)).all(-1).any() and not np.array_equal(f0, f1)


def test_action_feature_table_is_rlcards_card_encoding():
    table = action_feature_table("doudizhu")
    assert table.shape == (N_ACTIONS, 54) and table.dtype == np.float32 and not table.flags.writeable
    env = rlcard.make("doudizhu")
    for i in [*np.random.default_rng(0).choice(N_ACTIONS, 200, replace=False), ACTION_2_ID["pass"]]:
        np.testing.assert_array_equal(table[i], env.get_action_feature(int(i)))
        assert table[i].sum() == (0 if ID_2_ACTION[i] == "pass" else len(ID_2_ACTION[i]))
    with pytest.raises(ValueError, match="unknown; known: doudizhu"):
        action_feature_table("chess")


# ---------------------------------------------------------------- the features head and legal columns
def small_table(a=30, f=6, seed=0):
    return np.random.default_rng(seed).integers(0, 3, (a, f)).astype(np.float32)


def test_features_head_scores_actions_from_their_features():
    table = small_table()
    nets = AgentNets(2, 8, 30, 16, seed=0, action_features=table).double()
    obs = torch.randn(2, 5, 8, dtype=torch.float64)
    logits = nets(obs)[0]
    f = nets.policy(obs)
    g = nets.action_encoder(torch.as_tensor(table, dtype=torch.float64).expand(2, -1, -1))
    torch.testing.assert_close(logits, f @ g.transpose(1, 2))
    assert logits.abs().max() < 0.5                       # f's gain 0.01: a near-uniform policy at start
    cols = torch.tensor([1, 4, 29])
    torch.testing.assert_close(nets(obs, actions=cols)[0], logits[..., cols])
    dense = AgentNets(2, 8, 30, 16, seed=0).double()
    torch.testing.assert_close(dense(obs, actions=cols)[0], dense(obs)[0][..., cols])
    one = AgentNets(1, 8, 30, 16, action_features=table).double()
    one.load_agent_state(0, nets.agent_state(1))
    torch.testing.assert_close(one(obs[1:])[0][0], logits[1])
    with pytest.raises(ValueError, match="action_encoder"):  # a dense agent's weights do not fit
        one.load_agent_state(0, AgentNets(1, 8, 30, 16).agent_state(0))
    with pytest.raises(ValueError, match="needs an env with action features"):
        nets_for(EnvSpec((8,), "float32", 30, 1, False, "gates"), 16, 1, action_head="features")


def test_action_embedding_cache_follows_weight_changes():
    table = small_table()
    nets = AgentNets(1, 8, 30, 16, seed=0, action_features=table)
    obs = torch.randn(1, 4, 8)
    with torch.no_grad():
        first = nets.action_embeddings()
        assert nets.action_embeddings() is first           # cached while the weights stay
        nets.load_agent_state(0, AgentNets(1, 8, 30, 16, seed=1, action_features=table).agent_state(0))
        after_load = nets(obs)[0]
    torch.testing.assert_close(after_load, nets(obs)[0])   # equals a fresh (gradient-enabled) computation
    ppo = BatchedPPO(nets, C.PPOConfig(epochs=1, minibatches=1), C.MaskConfig())
    batch = random_batch(1, 4, 2, 30, 8, legal_per_row=4)
    ppo.update(batch, [0])
    with torch.no_grad():
        cached = nets(obs)[0]
    torch.testing.assert_close(cached, nets(obs)[0])


def random_batch(n, T, E, A, obs_dim, legal_per_row, seed=0):
    """A batch whose samples each allow `legal_per_row` actions (so the batch leaves some columns unused)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)
    legal = torch.zeros(n, T, E, A, dtype=torch.bool)
    for idx in np.ndindex(n, T, E):
        legal[idx][torch.randperm(A - 3, generator=g)[:legal_per_row]] = True  # the last 3 never legal
    actions = torch.multinomial(legal.reshape(-1, A).double(), 1, generator=g).reshape(n, T, E)
    applied = rnd(n, T, E) < 0.6
    return {"obs": torch.randn(n, T, E, obs_dim, generator=g, dtype=torch.float64), "actions": actions, "legal": legal,
            "logp_mu": -1.5 * rnd(n, T, E) - 0.2, "values": rnd(n, T, E), "mask_values": rnd(n, T, E),
            "rewards": rnd(n, T, E), "terminated": rnd(n, T, E) < 0.1, "truncated": rnd(n, T, E) < 0.1,
            "final_values": rnd(n, T, E), "final_mask_values": rnd(n, T, E), "boot_values": rnd(n, E),
            "boot_mask_values": rnd(n, E), "m": 0.05 + 0.9 * rnd(n, T, E), "perturbed": applied & (rnd(n, T, E) < 0.5),
            "masked": applied, "mask_applied": applied, "eps_random": torch.zeros(n, T, E, dtype=torch.bool),
            "guided": rnd(n, T, E) < 0.1, "eps": 0.1 * rnd(n, T, E)}


@pytest.mark.parametrize("head", ["dense", "features"])
def test_update_on_the_legal_columns_equals_the_update_on_every_column(head, monkeypatch):
    """The learner computes only the logits of actions legal somewhere in the (mini)batch; an update that
    computes every column must end with the same parameters and statistics."""
    table = small_table(40, 5) if head == "features" else None
    base = AgentNets(2, 6, 40, 16, seed=3, action_features=table).double()
    twin = AgentNets(2, 6, 40, 16, action_features=table).double()
    twin.load_state_dict(base.state_dict())
    batch = random_batch(2, 8, 4, 40, 6, legal_per_row=3, seed=1)
    assert batched_ppo.action_columns(batch["legal"]) is not None
    cfg = dict(ppo_cfg=C.PPOConfig(lr=1e-3, epochs=2, minibatches=2), mask_cfg=C.MaskConfig(lambda2=0.1))
    stats = BatchedPPO(base, **cfg, seed=5).update(batch, [0, 1])
    monkeypatch.setattr(batched_ppo, "action_columns", lambda legal: None)
    full = BatchedPPO(twin, **cfg, seed=5).update(batch, [0, 1])
    for k in stats:
        np.testing.assert_allclose(stats[k], full[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for (name, p), q in zip(base.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=name)
        assert not torch.equal(p, AgentNets(2, 6, 40, 16, seed=3, action_features=table).double().state_dict()[name])


@pytest.mark.parametrize("kind", ["dense", "features", "image"])
def test_every_parameter_is_trained_by_exactly_one_optimizer_group(kind):
    """(The CNN torsos were once in no group at all, so they never trained.)"""
    if kind == "image":
        nets = AgentNets(2, 4 * 84 * 84, 6, 16, image_shape=(4, 84, 84))
    else:
        nets = AgentNets(2, 8, 30, 16, action_features=small_table() if kind == "features" else None)
    optimizer = BatchedPPO(nets, C.PPOConfig(), C.MaskConfig()).optimizer
    groups = [[id(p) for p in g["params"]] for g in optimizer.param_groups]
    assert sorted(groups[0] + groups[1]) == sorted(id(p) for p in nets.parameters())
    assert not set(groups[0]) & set(groups[1])


# ---------------------------------------------------------------- the learner with two network groups
def fragment(cfg, spec, agent, obs_shape=None, seed=0):
    """A valid fragment of `agent` (observations of `obs_shape`, default its own), 5 legal actions a step."""
    T, E = cfg.actor.fragment_len, cfg.env.copies
    rng = np.random.default_rng(seed)
    shape = obs_shape or spec.for_agent(agent).obs_shape
    legal = np.zeros((T, E, spec.n_actions), bool)
    legal[..., 100:105] = True
    arrays = fragment_columns(cfg, spec)
    arrays.update(obs=rng.integers(0, 2, (T, E, *shape)).astype(np.int8), legal=legal,
                  actions=rng.integers(100, 105, (T, E)),
                  rewards=rng.choice([-1.0, 0.0, 1.0], (T, E)).astype(np.float32),
                  logp_mu=np.full((T, E), -np.log(5), np.float32), logp_pi=np.full((T, E), -np.log(5), np.float32),
                  m=np.full((T, E), 0.5, np.float32), masked=np.ones((T, E), bool), mask_applied=np.ones((T, E), bool),
                  perturbed=rng.random((T, E)) < 0.5)
    return fragment_wire(arrays)


def recv(sock, timeout_ms=5000):
    return sock.recv_multipart() if sock.poll(timeout_ms) else None


def test_learner_updates_each_group_and_drops_a_fragment_shaped_for_another_group(tmp_path, free_ports, caplog):
    ports = free_ports(6)
    cfg = ddz_cfg("run.agents=3", "actor.fragment_len=8", "env.copies=2", "ppo.minibatches=2", "ppo.hidden=16",
                  "env.eval_every=0", *[f"net.{k}={p}" for k, p in zip(PORTS, ports)])
    spec = env_spec(cfg)
    stop = threading.Event()
    learner = Learner(cfg, spec, tmp_path, stop)
    assert [g.agents for g in learner.groups] == [[0], [1, 2]]
    th = threading.Thread(target=learner.run, daemon=True)
    th.start()
    ctx = zmq.Context()
    sub, push, dealer = ctx.socket(zmq.SUB), ctx.socket(zmq.PUSH), ctx.socket(zmq.DEALER)
    sub.setsockopt(zmq.SUBSCRIBE, b"w/")
    sub.connect(tcp("127.0.0.1", cfg.net.learner_weights_port))
    push.connect(tcp("127.0.0.1", cfg.net.learner_fragments_port))
    dealer.connect(tcp("127.0.0.1", cfg.net.learner_router_port))
    try:
        dealer.send_multipart(Sender(0).pack(M.HEARTBEAT, {"role": "actor", "want": "weights"}))
        before = {}
        for _ in range(3):
            w = decode(recv(dealer), 1 << 26)
            before[w.body["target"]] = w.arrays
        assert before[0]["policy.0.weight"].shape == (790, 16)
        assert before[1]["policy.0.weight"].shape == before[2]["policy.0.weight"].shape == (901, 16)
        senders = {a: Sender(a) for a in range(3)}
        body = {"episodes": [{"return": 1.0, "win": 1.0}], "env_steps": 16, "eval": {}}
        wrong = fragment(cfg, spec, 1, obs_shape=(790,))  # a peasant's fragment with the landlord's shape
        push.send_multipart(senders[1].pack(M.FRAGMENT, body, wrong, policy_version=0))
        for a in range(3):
            push.send_multipart(senders[a].pack(M.FRAGMENT, body, fragment(cfg, spec, a, seed=a), policy_version=0))
        after, deadline = {}, time.time() + 60
        while len(after) < 3 and time.time() < deadline:
            frames = recv(sub, 500)
            if frames:
                w = decode(frames[1:], 1 << 26)
                if w.policy_version == 1:
                    after[w.body["target"]] = w.arrays
        assert set(after) == {0, 1, 2}, "no update of every agent"
        for a in range(3):  # every agent of both groups trained: its policy and mask moved, shapes kept
            for name in ("policy.0.weight", "mask.0.weight"):
                assert after[a][name].shape == before[a][name].shape
                assert not np.array_equal(after[a][name], before[a][name]), (a, name)
        assert learner.drops.counts.get(("fragments", "shape")) == 1
        assert "Fragment.obs of agent 1: observation shape [790], expected agent 1's [901]" in caplog.text
    finally:
        stop.set()
        th.join(20)
        ctx.destroy(linger=0)
    assert not th.is_alive()
    # the final checkpoint holds both groups; resume and load_run rebuild every agent from its group
    st = checkpoint.load(checkpoint.latest(tmp_path / "checkpoints"))
    assert "nets" not in st and [g["agents"] for g in st["groups"]] == [[0], [1, 2]]
    resumed = Learner(ddz_cfg("run.agents=3", "ppo.hidden=16", "learner.resume=true"), spec, tmp_path)
    assert resumed.version == st["version"] == 1
    for g, r in zip(learner.groups, resumed.groups):
        for (name, p), q in zip(g.nets.named_parameters(), r.nets.parameters()):
            torch.testing.assert_close(p, q, msg=name)
    C.save(cfg, tmp_path / "config.yaml")
    run = load_run(tmp_path)
    assert [p.nets.obs_dim for p in run.policies] == [790, 901, 901]
    for a in range(3):
        for name, arr in run.policies[a].nets.agent_state(0).items():
            np.testing.assert_array_equal(arr, after[a][name])


def test_single_group_learner_keeps_the_checkpoint_format(tmp_path):
    cfg = C.load(overrides=["env.name=gates", "run.agents=2", "net.metrics_port=0"], environ={})
    learner = Learner(cfg, env_spec(cfg), tmp_path)
    st = learner.state()
    assert {"nets", "optim"} <= set(st) and "groups" not in st
    assert set(st["spec"]) == {"obs_shape", "obs_dtype", "n_actions", "n_agents", "shared_world", "name"}
    assert checkpoint.group_states(st) == [{"nets": st["nets"], "optim": st["optim"]}]


# ---------------------------------------------------------------- learning
def greedy_landlord_win_rate(nets, games=200, first_seed=10**6):
    """The greedy landlord against two uniform random peasants on fixed deals."""
    env, wins = DouDizhuEnv(0, 1), 0.0
    with torch.no_grad():
        for g in range(games):
            obs, legal, _ = env.reset(seed=first_seed + g)
            while True:
                logits = nets(torch.as_tensor(obs)[None, None])[0][0, 0].numpy()
                obs, legal, _, term, trunc, info = env.step(int(np.where(legal, logits, -np.inf).argmax()))
                if term or trunc:
                    break
            wins += info["episode_stats"]["win"]
    return wins / games


def train_landlord(tmp_path, steps, seed, *overrides):
    """The preset's landlord against random peasants with the real acting code (Actor.collect: mask, epsilon,
    behaviour log-probabilities) and the real update (BatchedPPO), in one process. Returns the greedy win
    rate before and after."""
    cfg = ddz_cfg("run.agents=1", "actor.report_every=1000000000", f"run.seed={seed}", f"run.total_steps={steps}",
                  *overrides)
    actor = Actor(cfg, 0, tmp_path)
    nets = nets_for(actor.spec, cfg.ppo.hidden, 1, cfg.mask.init_bias, seed=seed, action_head=cfg.ppo.action_head)
    ppo = BatchedPPO(nets, cfg.ppo, cfg.mask, seed=seed)
    state = [actor.reset_copy(c) for c in range(cfg.env.copies)]
    obs, legal, pos = [s[0] for s in state], [s[1] for s in state], np.zeros(cfg.env.copies, np.int64)
    before = greedy_landlord_win_rate(nets)
    version = 0
    while actor.t < steps:
        actor.peers.load(0, nets.agent_state(0), version)
        buf = actor.collect(obs, legal, pos)
        ppo.update({k: torch.as_tensor(v)[None] for k, v in buf.items()}, [0], 1.0 - actor.t / steps)
        version += 1
    return before, greedy_landlord_win_rate(nets)


def test_landlord_learns_to_beat_random_peasants(tmp_path):
    """8,192 landlord steps (16 updates, about 400 games; about a minute on one core) with the preset
    (features head, mask on): the greedy landlord's win rate against random peasants on 200 fixed deals rises
    by at least 0.3 and ends above 0.5, where a uniform random landlord wins about 0.35. Measured: seed 0
    0.165 -> 0.655 (the test), seed 1 0.305 -> 0.71, seed 2 0.14 -> 0.495."""
    before, after = train_landlord(tmp_path, 8192, 0)
    assert after >= before + 0.3 and after >= 0.5, (before, after)
