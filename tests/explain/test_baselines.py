"""The explainers behind one interface (explain/baselines): every method gives a finite importance for every
step of a recorded episode, deterministically given its seed; and on `gates` (whose critical steps are known)
the methods that should find the gates do: StateMask's P(keep) and the LazyMDP gap are higher at the gates.

One short gates run is trained per module (about 35-60 s on 2 CPU cores). MAGICMASK_TEST_GATES_RUN=DIR
reuses an existing trained gates run directory instead (for quick iterations).
"""
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from magicmask.explain.baselines import make_explainer
from magicmask.protocol.config import EXPLAINERS as NAMES
from magicmask.explain.baselines.base import Explainer
from magicmask.explain.episodes import load_run, record_episodes

ROOT = Path(__file__).resolve().parents[2]
N_EPISODES = 10
SMALL = {"statemask_steps": 4096, "edge_epochs": 5, "lazymdp_epochs": 30}


@pytest.fixture(scope="module")
def gates_run(trained_gates_run):
    return load_run(trained_gates_run)


@pytest.fixture(scope="module")
def episodes(gates_run):
    return record_episodes(gates_run, 0, N_EPISODES, first_seed=500, masked=False)


def small_cfg(run, **extra):
    return dataclasses.replace(run.cfg, explain=dataclasses.replace(run.cfg.explain, **{**SMALL, **extra}))


def fitted(name, run, episodes, seed=0, agent=0, **extra):
    ex = make_explainer(name, small_cfg(run, **extra))
    ex.fit(run, agent, episodes, seed)
    return ex


def truncated(ep, n):
    """The first n steps of an episode (a shorter episode for the padding tests)."""
    arrays = {f.name: getattr(ep, f.name)[:n] for f in dataclasses.fields(ep)
              if isinstance(getattr(ep, f.name), np.ndarray)}
    return dataclasses.replace(ep, **arrays)


def gate_contrast(imp_by_ep, episodes):
    imp, crit = np.concatenate(imp_by_ep), np.concatenate([e.true_critical for e in episodes])
    return imp[crit].mean(), imp[~crit].mean()


# ---------------------------------------------------------------- the registry and the interface
def test_make_explainer_names_and_errors(gates_run):
    for name in NAMES:
        ex = make_explainer(name, gates_run.cfg)
        assert isinstance(ex, Explainer) and ex.name == name
        assert ex.fit_seconds == 0.0 and ex.score_seconds == 0.0
    with pytest.raises(ValueError) as e:
        make_explainer("shap", gates_run.cfg)
    assert all(n in str(e.value) for n in NAMES)


def test_importance_before_fit_and_bad_agent_fail(gates_run, episodes):
    with pytest.raises(RuntimeError, match="fit"):
        make_explainer("valuemax", gates_run.cfg).importance(episodes[0])
    with pytest.raises(ValueError, match="agent"):
        make_explainer("random", gates_run.cfg).fit(gates_run, len(gates_run.policies), episodes, 0)


@pytest.mark.parametrize("name", NAMES)
def test_every_method_scores_every_step(name, gates_run, episodes):
    rng_before = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    ex = fitted(name, gates_run, episodes)
    assert torch.equal(torch.random.get_rng_state(), rng_before)   # the caller's torch RNG is untouched
    assert torch.get_num_threads() == threads
    assert ex.fit_seconds > 0
    for ep in episodes + [truncated(episodes[0], 7)]:
        imp = ex.importance(ep)
        assert imp.dtype == np.float64 and imp.shape == (ep.length,) and np.isfinite(imp).all()
    assert ex.score_seconds > 0


@pytest.mark.parametrize("name", ["statemask", "edge", "lazymdp", "random"])
def test_same_seed_same_importance(name, gates_run, episodes):
    short = {"lazymdp_epochs": 5, "statemask_steps": 1024}
    a, b = (fitted(name, gates_run, episodes, seed=3, **short), fitted(name, gates_run, episodes, seed=3, **short))
    for ep in episodes[:3]:
        np.testing.assert_array_equal(a.importance(ep), b.importance(ep))
    if name in ("random", "edge"):  # another seed gives other scores
        c = fitted(name, gates_run, episodes, seed=4, **short)
        assert not np.array_equal(a.importance(episodes[0]), c.importance(episodes[0]))


# ---------------------------------------------------------------- what each method means
def test_magicmask_is_the_recorded_keep_probability(gates_run, episodes):
    ex = fitted("magicmask", gates_run, episodes)
    for ep in episodes:
        np.testing.assert_array_equal(ex.importance(ep), ep.m.astype(np.float64))


def test_valuemax_is_abs_value_of_the_policy_critic(gates_run, episodes):
    ex = fitted("valuemax", gates_run, episodes)
    for ep in episodes:
        v = gates_run.policies[0].forward(ep.obs)[1]
        np.testing.assert_allclose(ex.importance(ep), np.abs(v), rtol=1e-5, atol=1e-6)


def test_random_is_uniform_and_seeded(gates_run, episodes):
    ex = fitted("random", gates_run, episodes, seed=1)
    imp = np.concatenate([ex.importance(ep) for ep in episodes])
    assert ((imp >= 0) & (imp < 1)).all() and 0.3 < imp.mean() < 0.7
    assert not np.array_equal(ex.importance(episodes[0]), ex.importance(episodes[1]))  # per-episode streams
    np.testing.assert_array_equal(ex.importance(episodes[0]), ex.importance(episodes[0]))


def test_statemask_keeps_the_gates(gates_run, episodes):
    """The post-hoc mask, trained on r + alpha * blind with a few thousand steps, learns to keep (high P(keep))
    exactly where blinding costs reward: the gates."""
    ex = fitted("statemask", gates_run, episodes)
    at_gates, elsewhere = gate_contrast([ex.importance(ep) for ep in episodes], episodes)
    assert at_gates > elsewhere + 0.2, (at_gates, elsewhere)


def test_lazymdp_gap_is_larger_at_gates(gates_run, episodes):
    ex = fitted("lazymdp", gates_run, episodes)
    at_gates, elsewhere = gate_contrast([ex.importance(ep) for ep in episodes], episodes)
    assert at_gates > 2 * elsewhere, (at_gates, elsewhere)
    q = ex.q_values(episodes[0].obs)
    gate = int(np.flatnonzero(episodes[0].true_critical)[0])
    assert q[gate].argmax() == episodes[0].own_actions[gate]   # the fitted Q prefers the cue's action
    # only the needed columns: the same values as the full head's (the fit and the gap compute no others)
    cols = np.array([0, 2])
    assert np.allclose(ex.q_values(episodes[0].obs, cols), q[:, cols], atol=1e-6)
    obs = torch.as_tensor(episodes[0].obs)
    acts = torch.as_tensor(np.resize([2, 0, 2, 1], len(obs)))
    taken = ex._q_taken(ex.q, obs, acts).numpy()
    assert np.allclose(taken, q[np.arange(len(obs)), acts.numpy()], atol=1e-6)


def test_edge_trains_and_its_weights_sum_to_one(gates_run, episodes):
    # episodes of different lengths (padded and masked inside), and returns that differ
    eps = [truncated(ep, n) for ep, n in zip(episodes, [16, 12, 9, 16, 5, 14, 16, 11, 7, 16])]
    ex = fitted("edge", gates_run, eps, edge_epochs=15)
    assert ex.losses[-1] < ex.losses[0]
    for ep in eps:
        w = ex.importance(ep)
        assert (w >= 0).all() and abs(w.sum() - 1) < 1e-9
    # padding never changes a real step's weight: scoring alone or in a batch gives the same weights
    _, w_batch, _ = ex._forward(eps)
    for i, ep in enumerate(eps):
        np.testing.assert_allclose(w_batch[i, :ep.length].numpy(), ex.importance(ep), atol=1e-12)
    assert np.isfinite(ex.predict_return(eps)).all()


# ---------------------------------------------------------------- cost with the default budgets
@pytest.mark.slow
def test_fit_times_with_default_budgets(gates_run, episodes, capsys):
    """Wall clock of each method's fit on 10 gates episodes with the config's default budgets; StateMask with
    its full budget ranks every gate on top."""
    times = {}
    for name in NAMES:
        ex = make_explainer(name, gates_run.cfg)
        t0 = time.perf_counter()
        ex.fit(gates_run, 0, episodes, 0)
        imps = [ex.importance(ep) for ep in episodes]
        times[name] = (ex.fit_seconds, ex.score_seconds, time.perf_counter() - t0)
        if name == "statemask":
            at_gates, elsewhere = gate_contrast(imps, episodes)
            assert at_gates > 0.9 and elsewhere < 0.2, (at_gates, elsewhere)
    with capsys.disabled():
        print("\nfit / score seconds (10 gates episodes, default budgets):",
              {k: (round(f, 2), round(s, 3)) for k, (f, s, _) in times.items()})


def test_explaining_runs_torch_and_numpys_blas_on_one_thread():
    """one_thread (around every explanation, fit and `magicmask strength`): torch and OpenBLAS on one thread inside,
    both restored after; numpy's small products with a second BLAS thread were ~12x slower on the busy machine."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from magicmask.explain.baselines.base import one_thread

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    torch_before = torch.get_num_threads()
    try:
        with threadpool_limits(limits=2, user_api="blas"):
            torch.set_num_threads(2)
            assert blas_threads() and set(blas_threads()) == {2}
            with one_thread():
                assert set(blas_threads()) == {1} and torch.get_num_threads() == 1
                with one_thread():   # nested: still one, and the outer block's limit holds after it
                    assert set(blas_threads()) == {1}
                assert set(blas_threads()) == {1} and torch.get_num_threads() == 1
            assert set(blas_threads()) == {2} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(torch_before)
