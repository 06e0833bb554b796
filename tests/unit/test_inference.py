"""models/inference.py: the numpy inference path computes what the torch networks compute."""
import numpy as np
import pytest
import torch

from magicmask.models.inference import NumpyNets, TorchNets, inference
from magicmask.models.networks import AgentNets


def _torch_outputs(nets, agent, obs, cols=None):
    with torch.no_grad():
        x = torch.as_tensor(obs)[None].expand(nets.n_agents, *obs.shape)
        c = None if cols is None else torch.as_tensor(cols)
        lo, v, ml, mv = nets(x, actions=c)
    return lo[agent].numpy(), v[agent].numpy(), torch.sigmoid(ml[agent]).numpy(), mv[agent].numpy()


@pytest.mark.parametrize("agent", [0, 2])
def test_numpy_matches_torch_dense_head(agent):
    nets = AgentNets(3, 12, 7, 32, mask_init_bias=0.3, seed=1)
    obs = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    fast = inference(nets, agent)
    assert isinstance(fast, NumpyNets)
    for got, want in zip(fast.forward(obs), _torch_outputs(nets, agent, obs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    cols = np.array([1, 4, 6])
    np.testing.assert_allclose(fast.logits(obs, cols), _torch_outputs(nets, agent, obs, cols)[0], rtol=1e-4, atol=1e-5)


def test_numpy_matches_torch_features_head():
    table = np.random.default_rng(1).integers(0, 2, size=(30, 8)).astype(np.float32)
    nets = AgentNets(2, 10, 30, 16, seed=0, action_features=table)
    obs = np.random.default_rng(2).normal(size=(4, 10)).astype(np.float32)
    fast = inference(nets, 1)
    cols = np.array([0, 5, 29])
    np.testing.assert_allclose(fast.logits(obs), _torch_outputs(nets, 1, obs)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.logits(obs, cols), _torch_outputs(nets, 1, obs, cols)[0], rtol=1e-4, atol=1e-5)


def test_weights_are_copied_at_build():
    """A NumpyNets holds the weights of its load: later changes to the torch nets do not leak in."""
    nets = AgentNets(1, 6, 3, 8, seed=0)
    obs = np.ones((1, 6), np.float32)
    fast = inference(nets)
    before = fast.logits(obs).copy()
    with torch.no_grad():
        for p in nets.policy.parameters():
            p.add_(1.0)
    np.testing.assert_array_equal(fast.logits(obs), before)
    assert not np.allclose(inference(nets).logits(obs), before)


def test_images_and_wrong_shapes():
    cnn = AgentNets(1, 4 * 36 * 36, 3, 8, seed=0, image_shape=(4, 36, 36))
    fast = inference(cnn)
    assert isinstance(fast, TorchNets)
    obs = np.zeros((2, 4, 36, 36), np.uint8)
    for got, want in zip(fast.forward(obs), _torch_outputs(cnn, 0, obs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="torch nets of 2 agents"):
        inference(AgentNets(2, 4 * 36 * 36, 3, 8, image_shape=(4, 36, 36)))
    with pytest.raises(ValueError, match="5 features once flattened, the nets expect 6"):
        inference(AgentNets(1, 6, 3, 8)).forward(np.zeros((1, 5), np.float32))
