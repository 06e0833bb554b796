"""The behaviour distribution the actor records is the one that really produced its actions."""
import numpy as np

from magicmask.models.action_selection import (behaviour_probs, epsilon, sample_rows, select_explaining, select_training,
                                               softmax_legal, uniform_legal)
from magicmask.actors.state_keys import StateKeys, max_cosine


def _setup(n, seed=0):
    rng = np.random.default_rng(seed)
    legal = np.array([[True, False, True, True, False]] * n)
    pi = softmax_legal(np.tile(np.array([2.0, 9.0, 0.5, -1.0, 3.0]), (n, 1)), legal)
    return rng, legal, pi


def test_recorded_logp_matches_empirical_frequencies():
    n = 200_000
    rng, legal, pi = _setup(n)
    m = np.full(n, 0.3)
    masked = np.ones(n, bool)
    guided = np.zeros(n, bool)
    a, logp, perturbed, eps_random, applied = select_training(rng, pi, legal, m, 0.2, masked, guided)
    freq = np.bincount(a, minlength=5) / n
    mu = np.exp([logp[a == k][0] if (a == k).any() else -np.inf for k in range(5)])
    assert np.all(legal[np.arange(n), a]), "an illegal action was taken"
    np.testing.assert_allclose(freq, mu, atol=4 * np.sqrt(0.25 / n))
    np.testing.assert_allclose(mu, behaviour_probs(pi[:1], legal[:1], m[:1], 0.2, masked[:1], guided[:1])[0], rtol=1e-9)
    # the coins: epsilon fires ~20%, the mask perturbs ~70% of the rest
    assert abs(eps_random.mean() - 0.2) < 0.01
    assert abs(perturbed[~eps_random].mean() - 0.7) < 0.01
    assert np.array_equal(applied, ~eps_random)


def test_guided_steps_are_never_perturbed_and_follow_pi():
    n = 50_000
    rng, legal, pi = _setup(n, 1)
    guided = np.ones(n, bool)
    a, logp, perturbed, eps_random, applied = select_training(rng, pi, legal, np.zeros(n), 0.9, np.ones(n, bool), guided)
    assert not perturbed.any() and not eps_random.any() and not applied.any()
    np.testing.assert_allclose(np.exp(logp), pi[np.arange(n), a])
    np.testing.assert_allclose(np.bincount(a, minlength=5) / n, pi[0], atol=0.01)


def test_unmasked_copy_is_policy_plus_epsilon():
    n = 10
    rng, legal, pi = _setup(n)
    mu = behaviour_probs(pi, legal, np.zeros(n), 0.1, np.zeros(n, bool), np.zeros(n, bool))
    u = legal / legal.sum(1, keepdims=True)
    np.testing.assert_allclose(mu, 0.1 * u + 0.9 * pi)


def _plain_sample(rng, probs):
    """The inverse CDF as first written: one draw per row."""
    c = probs.cumsum(axis=-1)
    r = rng.random((probs.shape[0], 1)) * c[:, -1:]
    return np.minimum((c < r).sum(axis=-1), probs.shape[-1] - 1)


def _plain_select(rng, pi, legal, m, eps, masked, guided):
    """select_training's definition, step by step: the coins, a sample of U and one of pi for every row, the
    full behaviour distribution, its log at the action taken."""
    b = len(pi)
    eps_random = (rng.random(b) < eps) & ~guided
    perturbed = masked & ~guided & ~eps_random & (rng.random(b) >= m)
    actions = np.where(eps_random | perturbed, _plain_sample(rng, uniform_legal(legal)), _plain_sample(rng, pi))
    mu = behaviour_probs(pi, legal, m, eps, masked, guided)
    return actions, np.log(mu[np.arange(b), actions]), perturbed, eps_random, masked & ~guided & ~eps_random


def test_the_actors_fast_selection_is_its_definition_bit_for_bit():
    """select_training (fewer numpy calls, mu only at the action) gives the same actions, coins and log mu
    as its plain definition from the same generator state, and leaves the generator in the same state."""
    for seed in range(400):
        g = np.random.default_rng(seed)
        b, a = int(g.integers(1, 20)), int(g.integers(1, 10))
        legal = g.random((b, a)) < 0.5
        legal[np.arange(b), g.integers(0, a, b)] = True
        logits = g.normal(size=(b, a)).astype(np.float32) * float(g.choice([0.1, 3.0, 60.0]))
        pi = softmax_legal(logits, legal)
        z = np.where(legal, logits.astype(np.float64), -np.inf)
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        assert np.array_equal(pi, p / p.sum(axis=-1, keepdims=True))
        m, eps = g.random(b).astype(np.float32), float(g.choice([0.0, 0.1, 0.7, 1.0]))
        masked, guided = g.random(b) < 0.6, g.random(b) < 0.2
        fast, plain = np.random.default_rng(seed), np.random.default_rng(seed)
        for x, y in zip(select_training(fast, pi, legal, m, eps, masked, guided),
                        _plain_select(plain, pi, legal, m, eps, masked, guided)):
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert np.array_equal(sample_rows(fast, pi), _plain_sample(plain, pi))
        assert fast.random() == plain.random()


def test_explaining_rule_perturbs_iff_m_le_tau_with_another_legal_action():
    n = 1000
    rng, legal, pi = _setup(n)
    m = np.linspace(0, 1, n)
    a, own, perturbed = select_explaining(rng, pi, legal, m, 0.5, greedy=True, exclude_own=True)
    assert np.array_equal(perturbed, m <= 0.5)
    assert np.all(legal[np.arange(n), a])
    assert np.all(a[perturbed] != own[perturbed]) and np.all(a[~perturbed] == own[~perturbed])


def test_epsilon_schedule():
    assert epsilon(0, 0.2, 0.01, 1e-3, False) == 0.2
    assert abs(epsilon(1000, 0.2, 0.01, 1e-3, False) - 0.2 * np.exp(-1)) < 1e-12
    assert epsilon(10**7, 0.2, 0.01, 1e-3, False) == 0.01
    assert epsilon(10**7, 0.2, 0.01, 1e-3, True) == 0.2


def test_state_keys_are_shared_across_instances_and_unit_norm():
    obs = np.random.default_rng(0).random((6, 20)).astype(np.float32)
    k1, k2 = StateKeys(20, 16, 7)(obs), StateKeys(20, 16, 7)(obs)
    assert np.array_equal(k1, k2) and k1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(k1, axis=1), 1, rtol=1e-5)
    assert np.allclose(max_cosine(k1, k1), 1, atol=1e-5)
    assert not np.array_equal(StateKeys(20, 16, 8)(obs), k1)
