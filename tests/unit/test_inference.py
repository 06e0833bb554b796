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


def test_board_convolution_is_a_convolution_and_numpy_matches_it():
    """ppo.board_filters: each network reads the (H, W, C) board with one k x k convolution (no padding, ReLU)
    before its MLP: the same numbers as torch's conv2d on the board's planes, and the numpy path agrees."""
    board = (6, 7, 2)
    nets = AgentNets(2, 84, 7, 16, seed=3, board=(board, 8, 4))
    obs = np.random.default_rng(4).integers(0, 2, size=(5, 84)).astype(np.float32)
    conv = nets.policy[0]
    x = torch.as_tensor(obs)
    w = conv.linear.weight[1].T.reshape(8, 4, 4, 2).permute(0, 3, 1, 2)          # [F, C, k, k]
    planes = x.reshape(5, *board).permute(0, 3, 1, 2)                            # [B, C, H, W]
    want = torch.relu(torch.nn.functional.conv2d(planes, w, conv.linear.bias[1, 0]))  # [B, F, 3, 4]
    with torch.no_grad():
        got = conv(x[None].expand(2, 5, 84), torch.tensor([0, 1]))[1]
    np.testing.assert_allclose(got.numpy(), want.detach().permute(0, 2, 3, 1).reshape(5, -1).numpy(), atol=1e-5)
    fast = inference(nets, 1)
    assert isinstance(fast, NumpyNets)
    for got, want in zip(fast.forward(obs), _torch_outputs(nets, 1, obs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.logits(obs), _torch_outputs(nets, 1, obs)[0], rtol=1e-4, atol=1e-5)


def test_board_convolution_needs_a_board():
    from types import SimpleNamespace

    from magicmask.models.networks import nets_for
    flat = SimpleNamespace(obs_shape=(12,), obs_dim=12, n_actions=3, board_shape=(), name="gates", action_features="")
    with pytest.raises(ValueError, match=r"ppo.board_filters=8 needs an env whose observation is a board.*'gates'"):
        nets_for(flat, 16, 1, board_filters=8)
    small = SimpleNamespace(**{**vars(flat), "obs_shape": (12,), "board_shape": (2, 3, 2), "name": "tiny"})
    with pytest.raises(ValueError, match=r"ppo.board_kernel=4: a k x k window must fit the 2 x 3 board"):
        nets_for(small, 16, 1, board_filters=8, board_kernel=4)
    assert nets_for(small, 16, 1, board_filters=8, board_kernel=2).policy[0].out_features == 2 * 8


@pytest.mark.parametrize("board_filters", [0, 8])
def test_mirror_symmetric_nets_are_symmetric_and_numpy_matches_torch(board_filters):
    """ppo.mirror on connect4: the mirrored board gets the mirrored policy (column c's logit becomes 6 - c's) and
    the same value and mask; plain nets do not; the numpy path gives the same numbers, with and without `cols`."""
    from magicmask.actors.envs.connect4 import Connect4Env
    from magicmask.models.networks import nets_for
    spec = Connect4Env().spec
    assert spec.mirror_actions == (6, 5, 4, 3, 2, 1, 0)
    obs = np.random.default_rng(7).integers(0, 2, size=(6, 6, 7, 2)).astype(np.float32)
    mirrored = obs[:, :, ::-1, :].reshape(6, -1).copy()
    obs = obs.reshape(6, -1)
    plain = nets_for(spec, 16, 2, seed=3, board_filters=board_filters)
    nets = nets_for(spec, 16, 2, seed=3, board_filters=board_filters, mirror=True)
    lo, v, m, mv = _torch_outputs(nets, 1, obs)
    lo2, v2, m2, mv2 = _torch_outputs(nets, 1, mirrored)
    np.testing.assert_allclose(lo2, lo[:, ::-1], rtol=1e-5, atol=1e-6)
    for a, b in ((v, v2), (m, m2), (mv, mv2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    p_lo, p_v = _torch_outputs(plain, 1, obs)[:2]
    p_lo2, p_v2 = _torch_outputs(plain, 1, mirrored)[:2]
    assert np.abs(p_lo2 - p_lo[:, ::-1]).max() > 1e-4 and np.abs(p_v2 - p_v).max() > 1e-4   # not by accident
    fast = inference(nets, 1)
    assert isinstance(fast, NumpyNets)
    cols = np.array([1, 4, 6])
    for c in (None, cols):
        for got, want in zip(fast.forward(obs, c), _torch_outputs(nets, 1, obs, c)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fast.logits(obs, c), _torch_outputs(nets, 1, obs, c)[0], rtol=1e-4, atol=1e-5)


def test_mirror_needs_an_env_that_declares_its_mirror():
    from types import SimpleNamespace

    from magicmask.models.networks import nets_for
    board = SimpleNamespace(obs_shape=(12,), obs_dim=12, n_actions=3, board_shape=(2, 3, 2), mirror_actions=(),
                            name="tiny", action_features="")
    with pytest.raises(ValueError, match=r"ppo.mirror=true needs a board env that declares its mirror.*'tiny'"):
        nets_for(board, 16, 1, mirror=True)
    assert nets_for(SimpleNamespace(**{**vars(board), "mirror_actions": (2, 1, 0)}), 16, 1, mirror=True).mirror_obs is not None


def test_a_spec_keeps_its_mirror_through_the_wire_and_refuses_a_bad_one():
    import msgpack

    from magicmask.actors.envs.connect4 import Connect4Env
    from magicmask.protocol.envspec import EnvSpec
    spec = Connect4Env().spec
    assert EnvSpec.from_dict(msgpack.unpackb(msgpack.packb(spec.to_dict()))) == spec
    assert "mirror_actions" not in EnvSpec((12,), "float32", 3, 1, True).to_dict()   # absent where none
    with pytest.raises(ValueError, match=r"mirror_actions=\(0, 0, 1\): a permutation of the 3 action ids"):
        EnvSpec((12,), "float32", 3, 1, True, board_shape=(2, 3, 2), mirror_actions=(0, 0, 1))


@pytest.mark.parametrize("mirror,board_filters", [(False, 0), (True, 0), (False, 8)])
def test_columns_head_scores_a_column_by_its_planes_and_numpy_matches_torch(mirror, board_filters):
    """ppo.action_head=columns on connect4 with features=tactics: with the dense part's last layer zeroed, column
    c's logit is w . (c's planes summed over its rows) + b, the same w for every column (so a one-hot w on the
    win-now plane gives each column its win-now count); the numpy path agrees with and without `cols`, mirror
    and board convolution included; it is trained as part of the policy, and refused where actions are not columns."""
    from types import SimpleNamespace

    from magicmask.actors.envs.connect4 import Connect4Env
    from magicmask.models.networks import nets_for
    spec = Connect4Env(features="tactics").spec
    nets = nets_for(spec, 16, 2, seed=3, action_head="columns", mirror=mirror, board_filters=board_filters)
    assert any(p is nets.column_head.weight for p in nets.policy_parameters())
    obs = np.random.default_rng(8).integers(0, 2, size=(5, 6 * 7 * 8)).astype(np.float32)
    cols = np.array([0, 3, 6])
    fast = inference(nets, 1)
    assert isinstance(fast, NumpyNets)
    for c in (None, cols):
        for got, want in zip(fast.forward(obs, c), _torch_outputs(nets, 1, obs, c)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fast.logits(obs, c), _torch_outputs(nets, 1, obs, c)[0], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        nets.policy[-1].weight.zero_()
        nets.policy[-1].bias.zero_()
        nets.column_head.weight.zero_()
        nets.column_head.weight[1, 5, 0] = 2.0   # plane 5: the playable cells where a disc of the mover wins
        nets.column_head.bias.fill_(0.5)
    want = 2.0 * obs.reshape(5, 6, 7, 8)[..., 5].sum(1) + 0.5
    np.testing.assert_allclose(_torch_outputs(nets, 1, obs)[0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inference(nets, 1).logits(obs), want, rtol=1e-5, atol=1e-5)
    flat = SimpleNamespace(obs_shape=(12,), obs_dim=12, n_actions=3, board_shape=(), name="gates", action_features="")
    with pytest.raises(ValueError, match=r"ppo.action_head='columns' needs a board env whose actions are its columns.*'gates'"):
        nets_for(flat, 16, 1, action_head="columns")
