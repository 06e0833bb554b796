"""The learner's math: GAE, the decoupled PPO loss pieces, the stacked networks, the batched update
(equal to separate per-agent updates, agents outside an update untouched) and two small learning tests."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magicmask.models.action_selection import behaviour_probs as np_behaviour_probs
from magicmask.models.action_selection import select_training, softmax_legal
from magicmask.learner.batched_ppo import BatchedPPO, StackedAdam
from magicmask.models.ppo_loss import (behaviour_probs, bernoulli_entropy, clipped_policy_loss, clipped_value_loss, kl_pi_mu, legal_entropy,
                                       normalize)
from magicmask.models.gae import gae
from magicmask.models.networks import AgentNets, StackedLinear, masked_logits
from magicmask.protocol.config import MaskConfig, PPOConfig

torch.set_num_threads(1)


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------- GAE
def _gae1(r, v, term, trunc, fv, boot, gamma=0.9, lam=0.8):
    adv, ret = gae(t(r), t(v), t(term, torch.bool), t(trunc, torch.bool), t(fv), t(boot), gamma, lam)
    return adv.numpy(), ret.numpy()


R, V = [1.0, 0.0, 2.0], [0.5, 0.2, 0.1]


def test_gae_no_end_bootstraps_from_boot_value():
    adv, ret = _gae1(R, V, [0, 0, 0], [0, 0, 0], [0, 0, 0], 0.3)
    # delta2 = 2 + .9*.3 - .1 = 2.17; delta1 = .9*.1 - .2 = -.11; delta0 = 1 + .9*.2 - .5 = .68; gamma*lam = .72
    a2 = 2.17
    a1 = -0.11 + 0.72 * a2
    a0 = 0.68 + 0.72 * a1
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-12)
    np.testing.assert_allclose(ret, np.array([a0, a1, a2]) + V, rtol=1e-12)


def test_gae_terminated_step_has_no_next_value_and_resets_the_chain():
    adv, _ = _gae1(R, V, [0, 1, 0], [0, 0, 0], [0, 9.0, 0], 0.3)  # final value ignored when terminated
    np.testing.assert_allclose(adv, [0.68 + 0.72 * -0.2, -0.2, 2.17], rtol=1e-12)


def test_gae_truncated_step_bootstraps_from_final_value_and_resets_the_chain():
    adv, _ = _gae1(R, V, [0, 0, 0], [0, 1, 0], [0, 5.0, 0], 0.3)
    a1 = 0.0 + 0.9 * 5.0 - 0.2                                       # next value: the real final observation
    np.testing.assert_allclose(adv, [0.68 + 0.72 * a1, a1, 2.17], rtol=1e-12)
    # terminated wins over truncated
    adv2, _ = _gae1(R, V, [0, 1, 0], [0, 1, 0], [0, 5.0, 0], 0.3)
    np.testing.assert_allclose(adv2[1], -0.2)
    # truncation on the fragment's last step uses the final value, not the boot value
    adv3, _ = _gae1(R, V, [0, 0, 0], [0, 0, 1], [0, 0, 7.0], 100.0)
    np.testing.assert_allclose(adv3[2], 2 + 0.9 * 7.0 - 0.1)


def test_gae_monte_carlo_and_batched_time_dim():
    g = torch.Generator().manual_seed(0)
    r, v = torch.rand(2, 5, 3, generator=g, dtype=torch.float64), torch.rand(2, 5, 3, generator=g, dtype=torch.float64)
    term = torch.rand(2, 5, 3, generator=g) < 0.2
    trunc = torch.rand(2, 5, 3, generator=g) < 0.2
    fv, boot = torch.rand(2, 5, 3, generator=g, dtype=torch.float64), torch.rand(2, 3, generator=g, dtype=torch.float64)
    adv, ret = gae(r, v, term, trunc, fv, boot, 0.97, 0.9, time_dim=1)
    for i in range(2):  # [N, T, E] with time_dim=1 equals each [T, E] slice
        a_i, r_i = gae(r[i], v[i], term[i], trunc[i], fv[i], boot[i], 0.97, 0.9)
        torch.testing.assert_close(adv[i], a_i)
        torch.testing.assert_close(ret[i], r_i)
    # lambda = gamma = 1 and no ends: the return is the sum of the rewards plus the bootstrap
    _, ret1 = gae(r[0], v[0], torch.zeros_like(term[0]), torch.zeros_like(term[0]), fv[0], boot[0], 1.0, 1.0)
    torch.testing.assert_close(ret1[0], r[0].sum(0) + boot[0])


# ---------------------------------------------------------------- loss pieces
def test_clipped_policy_loss_hand_computed():
    ln = math.log
    # ratio 1.5 > 1 + clip with A > 0: clipped to 1.2; weight pi_prox/mu = 4 truncated to 2
    assert clipped_policy_loss(t(ln(1.5)), t(0.0), t(ln(0.25)), t(1.0), 0.2, 2.0).item() == pytest.approx(-2.4)
    # ratio 1.5 with A < 0: the pessimistic (unclipped) term -1.5; weight 1/0.8 = 1.25
    assert clipped_policy_loss(t(ln(1.5)), t(0.0), t(ln(0.8)), t(-1.0), 0.2, 2.0).item() == pytest.approx(1.875)
    # ratio 0.5 with A > 0: unclipped 0.5; with A < 0: clipped 0.8 (pi_prox = mu: weight 1)
    logp_new = t([ln(0.5), ln(0.5)]).requires_grad_()
    loss = clipped_policy_loss(logp_new, t([0.0, 0.0]), t([0.0, 0.0]), t([1.0, -1.0]), 0.2, 2.0)
    np.testing.assert_allclose(loss.detach().numpy(), [-0.5, 0.8])
    loss.sum().backward()
    np.testing.assert_allclose(logp_new.grad.numpy(), [-0.5, 0.0])  # the clipped branch carries no gradient
    # gradients: clipped (ratio 1.5, A > 0) -> 0; unclipped (A < 0) -> -w r A = 1.25 * 1.5
    lp = t([ln(1.5), ln(1.5)]).requires_grad_()
    clipped_policy_loss(lp, t([0.0, 0.0]), t([ln(0.25), ln(0.8)]), t([1.0, -1.0]), 0.2, 2.0).sum().backward()
    np.testing.assert_allclose(lp.grad.numpy(), [0.0, 1.875])


def test_importance_weight_floor_lets_an_unlikely_exploratory_action_teach():
    # epsilon (0.01, 6 legal columns) drew a column the policy gives 1e-4: the exact weight is 0.06, so a good
    # outcome barely moves the policy; a floor of 0.5 gives it half the push of an on-policy step. A bad outcome
    # keeps the exact weight.
    ln = math.log
    logp_prox, logp_mu = t(ln(1e-4)), t(ln(0.01 / 6))
    grads = []
    for floor, adv in ((0.0, 1.0), (0.5, 1.0), (0.5, -1.0)):
        lp = t(ln(1e-4)).requires_grad_()
        clipped_policy_loss(lp, logp_prox, logp_mu, t(adv), 0.2, 2.0, floor).backward()
        grads.append(-lp.grad.item())
    assert grads == pytest.approx([0.06, 0.5, -0.06])
    # the floor never lowers a weight, nor lifts one past is_clip
    assert clipped_policy_loss(t(0.0), t(0.0), t(ln(0.25)), t(1.0), 0.2, 2.0, 0.5).item() == pytest.approx(-2.0)


def _bandit(is_floor: float, seed: int, updates: int = 30, eps: float = 0.05, n: int = 256) -> float:
    """Decoupled PPO on a 7-armed bandit whose policy starts sure of a fair arm (0: reward 0.5, p ~ 1) and gives the
    best arm (3: reward 1) p ~ 1e-4; epsilon-greedy behaviour. Returns the best arm's probability at the end."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.zeros(7)
    logits[0] = 9.0
    logits.requires_grad_()
    opt = torch.optim.Adam([logits], lr=0.05)
    reward = t([0.5, -1, -1, 1.0, -1, -1, -1])
    for _ in range(updates):
        with torch.no_grad():
            pi = logits.softmax(0)
            mu = (1 - eps) * pi + eps / 7
            a = torch.multinomial(mu, n, replacement=True, generator=g)
            adv = normalize(reward[a])
            logp_prox, logp_mu = pi.log()[a], mu.log()[a]
        for _ in range(4):
            loss = clipped_policy_loss(logits.log_softmax(0)[a], logp_prox, logp_mu, adv, 0.2, 2.0, is_floor).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return logits.softmax(0)[3].item()


def test_importance_weight_floor_unlearns_a_habit_faster():
    # measured: exact weight 0.38, 0.53, 0.06 after 30 updates; floor 0.5 (on A > 0) 0.93, 0.94, 0.84; a floor on
    # every sample would keep the best arm at ~0 (the bad arms' floored pushes raise the favourite)
    exact = [_bandit(0.0, s) for s in range(3)]
    floored = [_bandit(0.5, s) for s in range(3)]
    assert np.mean(floored) > 0.8 > 0.5 > np.mean(exact), (exact, floored)


def test_clipped_value_loss_hand_computed():
    new, old, ret = t([1.0, 1.0, 0.0]), t([0.5, 0.9, 1.0]), t([2.0, 1.2, 0.1])
    # 1: clipped value 0.7 is further from 2 -> 0.5 * 1.3^2; 2: inside the clip -> 0.5 * 0.2^2; 3: clipped 0.8 -> 0.5 * 0.7^2
    np.testing.assert_allclose(clipped_value_loss(new, old, ret, 0.2).numpy(), [0.845, 0.02, 0.245], rtol=1e-12)
    np.testing.assert_allclose(clipped_value_loss(new, old, ret, 0.0).numpy(), [0.5, 0.02, 0.005], rtol=1e-12)


def test_normalize_per_agent_and_on_valid_entries():
    x = t([[1.0, 2.0, 3.0, 100.0], [10.0, 10.0, 30.0, 30.0]])
    valid = t([[1, 1, 1, 0], [1, 1, 1, 1]], torch.bool)
    y = normalize(x, valid)
    np.testing.assert_allclose(y[0, :3].numpy(), [-1.0, 0.0, 1.0], atol=1e-7)  # the invalid 100 does not count
    torch.testing.assert_close(normalize(x[1:]), (x[1:] - 20) / (x[1:].std() + 1e-8))


def test_masked_logits_never_nan():
    for dtype in (torch.float32, torch.float64):
        logits = torch.tensor([[3.0, 1e30, -2.0, 0.5], [1.0, 2.0, 3.0, 4.0], [5.0, -5.0, 0.0, 1.0]], dtype=dtype,
                              requires_grad=True)
        legal = torch.tensor([[True, False, True, True], [False, False, False, False], [False, True, False, False]])
        z = masked_logits(logits, legal)
        logp = F.log_softmax(z, -1)
        ent = legal_entropy(logp, legal)
        assert torch.isfinite(logp).all() and torch.isfinite(ent).all()
        p = logp.exp()
        assert (p[0, 1] == 0) and (p[2] == torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=dtype)).all()
        torch.testing.assert_close(p[1], torch.full((4,), 0.25, dtype=dtype))  # no legal action: uniform, not NaN
        (ent.sum() + logp[legal].sum()).backward()
        assert torch.isfinite(logits.grad).all()


def test_behaviour_distribution_matches_the_actor_and_kl():
    rng = np.random.default_rng(0)
    B, A = 64, 5
    legal = rng.random((B, A)) < 0.7
    legal[:, 0] = True
    pi = softmax_legal(rng.normal(size=(B, A)), legal)
    m, eps = rng.random(B), 0.15
    masked, guided = rng.random(B) < 0.6, rng.random(B) < 0.2
    want = np_behaviour_probs(pi, legal, m, eps, masked, guided)
    got = behaviour_probs(torch.tensor(pi), torch.tensor(legal), torch.tensor(m), torch.full((B,), eps, dtype=torch.float64),
                          torch.tensor(masked), torch.tensor(guided))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    logp = torch.tensor(np.log(np.where(legal, pi, 1.0)))
    kl = kl_pi_mu(logp, torch.tensor(legal), torch.tensor(m), torch.full((B,), eps, dtype=torch.float64),
                  torch.tensor(masked), torch.tensor(guided)).numpy()
    ref = np.where(legal, pi * (np.log(np.where(legal, pi, 1)) - np.log(np.where(legal, want, 1))), 0).sum(-1)
    np.testing.assert_allclose(kl, ref, atol=1e-12)
    assert np.all(kl[guided] == 0) and np.all(kl > -1e-12)


# ---------------------------------------------------------------- networks
def test_stacked_linear_is_per_agent_linear():
    layer = StackedLinear(3, 5, 4, gain=1.0, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 7, 5)
    y = layer(x)
    for i in range(3):
        torch.testing.assert_close(y[i], x[i] @ layer.weight[i] + layer.bias[i])
        w = layer.weight[i].detach()
        torch.testing.assert_close(w.T @ w, torch.eye(4), atol=1e-5, rtol=0)  # orthogonal columns (gain 1)
    assert (layer.bias == 0).all()
    torch.testing.assert_close(layer(x[[2, 0]], torch.tensor([2, 0])), y[[2, 0]])


def test_agent_nets_seeded_init_shapes_and_mask_bias():
    a, b = AgentNets(3, 42, 7, 16, seed=5), AgentNets(3, 42, 7, 16, seed=5)
    c = AgentNets(3, 42, 7, 16, seed=6)
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), name
        if name.endswith("weight"):  # biases start at zero (or the mask's bias) whatever the seed
            assert not torch.equal(p, r), name
    assert not torch.equal(a.policy[0].weight[0], a.policy[0].weight[1])  # agents start different
    obs = torch.randint(-1, 2, (3, 10, 6, 7), dtype=torch.int8)  # any dtype, any observation shape
    logits, value, mlogit, mvalue = AgentNets(3, 42, 7, 16, mask_init_bias=2.0, seed=0)(obs)
    assert logits.shape == (3, 10, 7) and value.shape == mlogit.shape == mvalue.shape == (3, 10)
    m = torch.sigmoid(mlogit)
    assert (m - torch.sigmoid(torch.tensor(2.0))).abs().max() < 0.05
    assert logits.abs().max() < 0.5  # head gain 0.01: near-uniform policy


def test_agent_state_round_trip_and_validation():
    nets = AgentNets(3, 8, 4, 16, seed=1)
    one = AgentNets(1, 8, 4, 16, seed=99)
    st = nets.agent_state(2)
    assert "policy.0.weight" in st and all(a.dtype == np.float32 and a.flags.c_contiguous for a in st.values())
    assert st["policy.0.weight"].shape == (8, 16) and st["policy.0.bias"].shape == (1, 16)
    one.load_agent_state(0, st)
    obs = torch.randn(1, 5, 8)
    for x, y in zip(one(obs), nets(obs.expand(3, 5, 8))):
        torch.testing.assert_close(x[0], y[2])
    before = {k: v.copy() for k, v in one.agent_state(0).items()}
    bad_cases = {
        "mask.2.bias": lambda d: d.pop("mask.2.bias"),
        "extra.weight": lambda d: d.__setitem__("extra.weight", np.zeros(3, np.float32)),
        "value.0.weight": lambda d: d.__setitem__("value.0.weight", np.zeros((8, 15), np.float32)),
        "policy.4.bias": lambda d: d.__setitem__("policy.4.bias", d["policy.4.bias"].astype(np.float64)),
        "mask_value.2.weight": lambda d: d["mask_value.2.weight"].__setitem__((0, 0), np.nan),
    }
    for name, spoil in bad_cases.items():
        d = {k: v.copy() for k, v in st.items()}
        spoil(d)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            one.load_agent_state(0, d)
    for k, v in one.agent_state(0).items():  # nothing changed by the refused loads
        np.testing.assert_array_equal(v, before[k])


# ---------------------------------------------------------------- the batched update
def random_batch(n, T, E, A, obs_dim, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype)
    legal = rnd(n, T, E, A) < 0.7
    legal[..., 0] = True
    actions = torch.multinomial(legal.reshape(-1, A).to(dtype), 1, generator=g).reshape(n, T, E)
    mask_applied = rnd(n, T, E) < 0.6
    return {
        "obs": torch.randint(-2, 3, (n, T, E, obs_dim), generator=g, dtype=torch.int8), "actions": actions, "legal": legal,
        "logp_mu": -1.5 * rnd(n, T, E) - 0.2, "logp_pi": -rnd(n, T, E), "values": rnd(n, T, E), "mask_values": rnd(n, T, E),
        "rewards": rnd(n, T, E), "terminated": rnd(n, T, E) < 0.1, "truncated": rnd(n, T, E) < 0.1,
        "final_values": rnd(n, T, E), "final_mask_values": rnd(n, T, E), "boot_values": rnd(n, E),
        "boot_mask_values": rnd(n, E), "m": 0.05 + 0.9 * rnd(n, T, E), "perturbed": mask_applied & (rnd(n, T, E) < 0.5),
        "masked": mask_applied | (rnd(n, T, E) < 0.3), "mask_applied": mask_applied,
        "eps_random": ~mask_applied & (rnd(n, T, E) < 0.3), "guided": rnd(n, T, E) < 0.1, "eps": 0.1 * rnd(n, T, E),
    }


CFG = dict(ppo=PPOConfig(lr=1e-3, epochs=2, minibatches=2), mask=MaskConfig(lr=2e-3, lambda2=0.1))


def _nets64(n, seed):
    # float32 initial values widened to float64: the float32 slices that travel are exact copies
    return AgentNets(n, 6, 5, 16, seed=seed).double()


def _single(nets3, i):
    one = AgentNets(1, 6, 5, 16).double()
    one.load_agent_state(0, nets3.agent_state(i))
    return one


def test_batched_gradients_equal_separate_agents():
    nets = _nets64(3, 0)
    batch = random_batch(3, 8, 4, 5, 6, seed=1)
    ppo = BatchedPPO(nets, CFG["ppo"], CFG["mask"])
    sel = ppo.selection([0, 1, 2])
    data, _ = ppo.prepare(batch, sel)
    loss, stats = ppo.loss(data, sel)
    loss.backward()
    for i in range(3):
        one = _single(nets, i)
        p1 = BatchedPPO(one, CFG["ppo"], CFG["mask"])
        d1, _ = p1.prepare({k: v[i:i + 1] for k, v in batch.items()}, p1.selection([0]))
        l1, s1 = p1.loss(d1, p1.selection([0]))
        l1.backward()
        for (name, p), q in zip(nets.named_parameters(), one.parameters()):
            torch.testing.assert_close(p.grad[i], q.grad[0], rtol=1e-9, atol=1e-12, msg=name)
        for k in stats:
            torch.testing.assert_close(stats[k][i], s1[k][0], msg=k)


@pytest.mark.parametrize("agents", [[0, 1, 2], [2, 0]])
def test_batched_update_equals_separate_updates(agents):
    nets = _nets64(3, 3)
    singles = {i: _single(nets, i) for i in range(3)}
    ppo = BatchedPPO(nets, CFG["ppo"], CFG["mask"], seed=7)
    ppos = {i: BatchedPPO(singles[i], CFG["ppo"], CFG["mask"], seed=7) for i in range(3)}
    for rep in range(2):  # twice: Adam's moments and step counts carry over
        batch = random_batch(len(agents), 8, 4, 5, 6, seed=10 + rep)
        stats = ppo.update(batch, agents, lr_frac=0.7)
        for j, a in enumerate(agents):
            s1 = ppos[a].update({k: v[j:j + 1] for k, v in batch.items()}, [0], lr_frac=0.7)
            for k in stats:
                np.testing.assert_allclose(stats[k][j], s1[k][0], rtol=1e-7, atol=1e-10, err_msg=k)
    for a in range(3):
        for (name, p), q in zip(nets.named_parameters(), singles[a].parameters()):
            if a in agents:
                torch.testing.assert_close(p[a], q[0], rtol=1e-7, atol=1e-10, msg=f"agent {a} {name}")
            else:
                assert torch.equal(p[a], q[0]), f"agent {a} {name} changed without being in the update"


def test_subset_update_leaves_other_agents_and_their_adam_state_alone():
    nets = AgentNets(3, 6, 5, 16, seed=0)
    ppo = BatchedPPO(nets, CFG["ppo"], CFG["mask"])
    ppo.update(random_batch(3, 8, 4, 5, 6, seed=0, dtype=torch.float32), [0, 1, 2])
    params = {n: p.detach().clone() for n, p in nets.named_parameters()}
    opt = {(n, k): v.clone() for n, p in nets.named_parameters() for k, v in ppo.optimizer.state[p].items()}
    ppo.update(random_batch(2, 8, 4, 5, 6, seed=1, dtype=torch.float32), [2, 0])
    for n, p in nets.named_parameters():
        assert torch.equal(p[1], params[n][1]), n
        assert not torch.equal(p[0], params[n][0]) and not torch.equal(p[2], params[n][2]), n
        st = ppo.optimizer.state[p]
        for k in ("exp_avg", "exp_avg_sq", "agent_step"):
            assert torch.equal(st[k][1], opt[(n, k)][1]), (n, k)
        assert st["agent_step"].tolist() == [8, 4, 8]  # 2 epochs x 2 minibatches = 4 Adam steps per update
    with pytest.raises(ValueError):
        ppo.update(random_batch(2, 8, 4, 5, 6, seed=1, dtype=torch.float32), [0, 0])


def test_stacked_adam_equals_torch_adam_per_agent():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    stacked = torch.nn.Parameter(w.clone())
    opt = StackedAdam([{"params": [stacked], "lr": 0.01}], eps=1e-5)
    singles = [torch.nn.Parameter(w[i].clone()) for i in range(3)]
    refs = [torch.optim.Adam([s], lr=0.01, eps=1e-5) for s in singles]
    for step, agents in enumerate([[0, 1, 2], [1], [2, 0], [0, 1, 2]]):
        grad = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
        stacked.grad = grad.clone()
        opt.step(torch.tensor(agents) if agents != [0, 1, 2] else slice(None))
        for i in agents:
            singles[i].grad = grad[i].clone()
            refs[i].step()
        for i in range(3):
            torch.testing.assert_close(stacked[i].detach(), singles[i].detach(), rtol=1e-12, atol=1e-14)


def test_per_agent_grad_norm_clip():
    nets = AgentNets(2, 6, 5, 16, seed=0)
    ppo = BatchedPPO(nets, PPOConfig(max_grad_norm=0.5), MaskConfig())
    for p in nets.parameters():
        p.grad = torch.randn_like(p)
        p.grad[1] *= 1e-4  # agent 1: a tiny gradient, left as it is
    small = [p.grad[1].clone() for p in nets.parameters()]
    ref = [torch.nn.Parameter(p[0].detach().clone()) for p in nets.parameters()]
    for r, p in zip(ref, nets.parameters()):
        r.grad = p.grad[0].clone()
    assert torch.nn.utils.clip_grad_norm_(ref, 0.5) > 1.0  # agent 0's gradient is large: clipped
    ref = [r.grad for r in ref]
    ppo.clip_grad_norm(slice(None))
    for p, s, r in zip(nets.parameters(), small, ref):
        torch.testing.assert_close(p.grad[1], s)
        torch.testing.assert_close(p.grad[0], r)


# ---------------------------------------------------------------- learning
K = A = 4  # one-hot observations, 4 actions; the correct action of observation k is k


def bandit_batch(nets, rng, T, E, critical, masked, eps):
    """One-step episodes collected with the actor's own action selection (mask, epsilon, log mu).
    reward: on a critical observation 1 iff the action is the correct one, elsewhere always 1."""
    n = nets.n_agents
    idx = rng.integers(0, K, (n, T, E))
    obs = np.eye(K, dtype=np.float32)[idx]
    with torch.no_grad():
        logits, v, mlogit, mv = nets(torch.as_tensor(obs.reshape(n, T * E, K)))
    legal = np.ones((T * E, A), bool)
    cols = {k: [] for k in ("actions", "logp_mu", "perturbed", "eps_random", "mask_applied", "m")}
    for i in range(n):  # the actors' side: numpy, one agent at a time
        pi, m = softmax_legal(logits[i].numpy(), legal), torch.sigmoid(mlogit[i]).numpy()
        a, logp_mu, perturbed, eps_random, applied = select_training(
            rng, pi, legal, m, eps, np.full(T * E, masked), np.zeros(T * E, bool))
        for k, x in zip(cols, (a, logp_mu, perturbed, eps_random, applied, m)):
            cols[k].append(x)
    b = {k: torch.as_tensor(np.stack(x).reshape(n, T, E)) for k, x in cols.items()}
    b["logp_mu"], b["m"] = b["logp_mu"].float(), b["m"].float()
    rewards = np.where(critical[idx], b["actions"].numpy() == idx, 1.0).astype(np.float32)
    zeros, false = torch.zeros(n, T, E), torch.zeros(n, T, E, dtype=torch.bool)
    b.update(obs=torch.as_tensor(obs), legal=torch.ones(n, T, E, A, dtype=torch.bool), rewards=torch.as_tensor(rewards),
             values=v.reshape(n, T, E), mask_values=mv.reshape(n, T, E), terminated=~false, truncated=false,
             final_values=zeros, final_mask_values=zeros, boot_values=torch.zeros(n, E), boot_mask_values=torch.zeros(n, E),
             guided=false, masked=torch.full((n, T, E), masked), eps=torch.full((n, T, E), eps))
    return b


def probe(nets):
    """P(correct action) and m for every observation, per agent: [n, K] each."""
    with torch.no_grad():
        logits, _, mlogit, _ = nets(torch.eye(K).expand(nets.n_agents, K, K))
    return torch.softmax(logits, -1).diagonal(dim1=-2, dim2=-1).numpy(), torch.sigmoid(mlogit).numpy()


def test_learns_a_contextual_bandit():
    rng = np.random.default_rng(0)
    nets = AgentNets(2, K, A, 32, seed=0)
    ppo = BatchedPPO(nets, PPOConfig(lr=1e-3), MaskConfig(), seed=0)
    critical = np.ones(K, bool)
    p0, _ = probe(nets)
    assert p0.max() < 0.35
    for _ in range(15):
        stats = ppo.update(bandit_batch(nets, rng, 8, 16, critical, masked=False, eps=0.05), [0, 1])
    p, _ = probe(nets)
    assert p.min() > 0.9, p
    assert np.all(stats["kl_pi_mu"] >= 0) and np.all(stats["is_weight_mean"] > 0.5)


def _unlearn_a_fair_habit(is_floor: float, seed: int, updates: int = 40) -> float:
    """The contextual bandit above, with a policy that starts sure of action 0 (p ~ 1 - 1e-3 everywhere) and a
    reward of 0.5 for it where it is not the correct action (1 for the correct one): a habit that is fair, not
    wrong, as a Connect Four column that is usually good. Returns P(correct action) on the observations 1..3."""
    rng = np.random.default_rng(seed)
    nets = AgentNets(2, K, A, 32, seed=seed)
    with torch.no_grad():
        nets.policy[4].bias[..., 0] += 8.0
    ppo = BatchedPPO(nets, PPOConfig(lr=1e-3, is_floor=is_floor), MaskConfig(), seed=seed)
    for _ in range(updates):
        b = bandit_batch(nets, rng, 8, 16, np.ones(K, bool), masked=False, eps=0.05)
        idx = b["obs"].argmax(-1)
        b["rewards"] = torch.where(b["actions"] == idx, 1.0, torch.where(b["actions"] == 0, 0.5, 0.0)).float()
        ppo.update(b, [0, 1])
    p, _ = probe(nets)
    return float(p[:, 1:].mean())


def test_importance_weight_floor_reaches_the_learner():
    # measured (seeds 0, 1; 40 updates): exact weight 0.34, 0.17; ppo.is_floor=1 0.96, 0.99. Where the habit is
    # wrong everywhere (reward 0) the exact weight unlearns it as fast or faster: its own negative advantages do
    exact = np.mean([_unlearn_a_fair_habit(0.0, s) for s in range(2)])
    floored = np.mean([_unlearn_a_fair_habit(1.0, s) for s in range(2)])
    assert floored > 0.8 > 0.5 > exact, (exact, floored)


@pytest.mark.parametrize("critic", ["own", "policy"])
def test_mask_keeps_critical_steps_and_perturbs_the_others(critic):
    rng = np.random.default_rng(1)
    nets = AgentNets(2, K, A, 32, seed=1)
    mcfg = MaskConfig(lr=3e-3, alpha=0.05, lambda1=0.1, tau=0.5, critic=critic, gae_lambda=0.0)
    ppo = BatchedPPO(nets, PPOConfig(lr=3e-3), mcfg, seed=1)
    critical = np.array([True, True, False, False])
    _, m0 = probe(nets)
    assert np.allclose(m0, 0.5, atol=0.05)
    for _ in range(20):
        stats = ppo.update(bandit_batch(nets, rng, 8, 16, critical, masked=True, eps=0.05), [0, 1])
    p, m = probe(nets)
    assert m[:, critical].min() > 0.8, m        # perturbing a critical observation loses reward: keep it
    assert m[:, ~critical].max() < mcfg.tau, m  # perturbing the others costs nothing and earns alpha
    assert p[:, critical].min() > 0.9, p        # the policy learned its critical actions beside the mask
    assert np.all((stats["perturb_share"] > 0.3) & (stats["perturb_share"] < 0.7)), stats["perturb_share"]


def test_mask_entropy_keeps_the_coin_graded():
    """Without mask.ent_coef the bandit's mask saturates (m to 1e-4 where perturbing is free); with it m stays
    graded and still orders the observations: critical ones above the others."""
    critical = np.array([True, True, False, False])
    ms = {}
    for ent in (0.0, 1.0):
        rng = np.random.default_rng(2)
        nets = AgentNets(1, K, A, 32, seed=2)
        ppo = BatchedPPO(nets, PPOConfig(lr=3e-3), MaskConfig(lr=3e-3, alpha=0.05, lambda1=0.0, ent_coef=ent), seed=2)
        for _ in range(40):
            ppo.update(bandit_batch(nets, rng, 8, 16, critical, masked=True, eps=0.05), [0])
        ms[ent] = probe(nets)[1][0]
    assert ms[0.0][~critical].max() < 1e-3 and ms[0.0][critical].min() > 0.999, ms[0.0]
    assert 0.2 < ms[1.0].min() and ms[1.0].max() < 0.99, ms[1.0]
    assert ms[1.0][critical].min() > ms[1.0][~critical].max() + 0.2, ms[1.0]


def test_bernoulli_entropy_from_the_logit():
    logit = t([0.0, 2.0, -3.0, 40.0])
    m = torch.sigmoid(logit)
    torch.testing.assert_close(bernoulli_entropy(logit)[:3], (-(m * m.log() + (1 - m) * (1 - m).log()))[:3])
    assert 0 <= bernoulli_entropy(logit)[3] < 1e-12   # saturated: finite, no log(0)


def test_mask_advantages_come_from_the_chosen_critic():
    """mask.critic=policy: the mask's advantages are GAE of r + alpha * perturbed over the POLICY's values (what
    a perturbation costs the policy); own: over the mask critic's. The mask critic's targets are its own either way."""
    batch = random_batch(2, 8, 4, 5, 6, seed=4)
    mask_rewards = batch["rewards"] + 0.05 * batch["perturbed"].double()
    ends = (batch["terminated"], batch["truncated"])
    out = {}
    for critic in ("own", "policy"):
        ppo = BatchedPPO(_nets64(2, 0), PPOConfig(), MaskConfig(alpha=0.05, gae_lambda=0.5, critic=critic))
        data, _ = ppo.prepare(batch, ppo.selection([0, 1]))
        out[critic] = data
    for critic, (v, fv, boot) in {"own": ("mask_values", "final_mask_values", "boot_mask_values"),
                                  "policy": ("values", "final_values", "boot_values")}.items():
        adv, _ = gae(mask_rewards, batch[v], *ends, batch[fv], batch[boot], 0.99, 0.5, time_dim=1)
        torch.testing.assert_close(out[critic]["mask_adv"], adv.reshape(2, -1))
    torch.testing.assert_close(out["own"]["mask_ret"], out["policy"]["mask_ret"])


def test_batch_without_masked_uses_the_documented_fallback_and_missing_arrays_are_named():
    nets = AgentNets(2, 6, 5, 16, seed=0)
    ppo = BatchedPPO(nets, CFG["ppo"], CFG["mask"])
    batch = random_batch(2, 8, 4, 5, 6, seed=2, dtype=torch.float32)
    fallback = (batch["mask_applied"] | batch["eps_random"]) & ~batch["guided"]
    _, with_fallback = ppo.prepare({**batch, "masked": fallback}, slice(None))
    _, without = ppo.prepare({k: v for k, v in batch.items() if k != "masked"}, slice(None))
    torch.testing.assert_close(without["kl_pi_mu"], with_fallback["kl_pi_mu"])
    with pytest.raises(ValueError, match="boot_mask_values"):
        ppo.update({k: v for k, v in batch.items() if k != "boot_mask_values"}, [0, 1])
