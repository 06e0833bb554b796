"""The mask's observation saliency (explain/saliency.py) against central finite differences of m = sigmoid(mask
logit), on a gates run with random weights: the numbers, the critical-step subset, and the step subsampling."""
import copy

import numpy as np
import torch

from magicmask.actors.envs.gates import GatesEnv
from magicmask.explain.episodes import load_run, record_episodes
from magicmask.explain.saliency import saliency
from magicmask.learner import checkpoint
from magicmask.models.networks import AgentNets
from magicmask.protocol import config as C


def _gates_run(run_dir):
    cfg = C.load(None, ["env.name=gates", "run.agents=2", "run.name=sal"])
    run_dir.mkdir()
    C.save(cfg, run_dir / "config.yaml")
    spec = GatesEnv(0, 2).spec
    nets = AgentNets(2, spec.obs_dim, spec.n_actions, cfg.ppo.hidden, seed=3)
    checkpoint.save({"nets": nets.state_dict(), "version": 1}, run_dir / "checkpoints", 1)
    return load_run(run_dir)


def _numeric_abs_grad(nets, obs: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """|d m / d obs| per step and feature by central differences, in float64."""
    nets = copy.deepcopy(nets).double()
    x = torch.as_tensor(obs, dtype=torch.float64)

    def m(z):
        with torch.no_grad():
            return torch.sigmoid(nets(z[None])[2][0]).numpy()
    out = np.zeros(obs.shape)
    for i in range(obs.shape[1]):
        step = torch.zeros_like(x)
        step[:, i] = h
        out[:, i] = np.abs((m(x + step) - m(x - step)) / (2 * h))
    return out


def test_saliency_is_the_mean_absolute_gradient_of_the_keep_probability(tmp_path):
    run = _gates_run(tmp_path / "run")
    s = saliency(run, agent=1, episodes=2, first_seed=5)
    eps = record_episodes(run, 1, 2, first_seed=5, masked=False)
    np.testing.assert_array_equal(s.obs, np.concatenate([e.obs for e in eps]))
    np.testing.assert_allclose(s.m, np.concatenate([e.m for e in eps]), atol=1e-6)
    g = _numeric_abs_grad(run.policies[1].nets, s.obs.astype(np.float64))
    assert s.all_steps.shape == s.obs.shape[1:] and g.mean(0).max() > 1e-4   # not trivially zero
    np.testing.assert_allclose(s.all_steps, g.mean(0), rtol=1e-3, atol=1e-7)
    crit = np.concatenate([e.true_critical for e in eps])
    assert crit.any() and not crit.all()
    np.testing.assert_allclose(s.critical, g[crit].mean(0), rtol=1e-3, atol=1e-7)


def test_saliency_subsamples_long_recordings_evenly(tmp_path):
    run = _gates_run(tmp_path / "run")
    full = saliency(run, agent=0, episodes=2)
    few = saliency(run, agent=0, episodes=2, max_steps=5, chunk=2)
    idx = np.linspace(0, len(full.obs) - 1, 5).astype(np.int64)
    assert len(full.obs) > 5 and len(few.obs) == 5
    np.testing.assert_array_equal(few.obs, full.obs[idx])
    np.testing.assert_allclose(few.m, full.m[idx], atol=1e-6)
