"""The stacked CNN torsos: one grouped convolution over all agents equals each agent's own network; which
observations the built-in networks read with them (images from 36 x 36 up for the Nature CNN, 20 x 20 for the
small one); the mask reading the policy torso with its gradient stopped."""
import numpy as np
import torch

from magicmask.models.networks import AgentNets, nets_for
from magicmask.protocol.envspec import EnvSpec


def test_stacked_cnn_equals_per_agent_and_gradients_stay_separate():
    torch.manual_seed(0)
    nets = AgentNets(3, 4 * 84 * 84, 6, image_shape=(4, 84, 84), seed=1).double()
    obs = torch.randint(0, 256, (3, 5, 4, 84, 84), dtype=torch.uint8)
    logits, v, ml, mv = nets(obs)
    assert logits.shape == (3, 5, 6) and v.shape == ml.shape == mv.shape == (3, 5)
    loss = (logits.sum(-1) + v + ml + mv).pow(2).sum(-1)            # per-agent losses
    loss.sum().backward()
    for i in range(3):
        one = AgentNets(1, 4 * 84 * 84, 6, image_shape=(4, 84, 84)).double()
        one.load_state_dict({k: p[i:i + 1].detach() for k, p in nets.named_parameters()})
        lo1, v1, ml1, mv1 = one(obs[i:i + 1])
        torch.testing.assert_close(lo1[0], logits[i])
        torch.testing.assert_close(v1[0], v[i])
        (lo1.sum(-1) + v1 + ml1 + mv1).pow(2).sum().backward()
        for (name, p), (_, q) in zip(nets.named_parameters(), one.named_parameters()):
            torch.testing.assert_close(q.grad[0], p.grad[i], rtol=1e-7, atol=1e-9, msg=name)
    # a subset forward only touches the selected slices
    sel = torch.tensor([2, 0])
    lo_s, *_ = nets(obs[[2, 0]], sel)
    torch.testing.assert_close(lo_s, logits[[2, 0]])


def test_agent_slice_roundtrip_and_nets_for_picks_the_encoder():
    spec_img = EnvSpec((4, 84, 84), "uint8", 6, 2, False)
    spec_flat = EnvSpec((20,), "float32", 4, 2, False)
    img, flat = nets_for(spec_img, 64, 2, seed=0), nets_for(spec_flat, 64, 2, seed=0)
    assert img.image_shape == (4, 84, 84) and flat.image_shape is None
    one = nets_for(spec_img, 64, 1)
    one.load_agent_state(0, img.agent_state(1))
    obs = torch.randint(0, 256, (1, 2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(one(obs)[0][0], img(obs.expand(2, -1, -1, -1, -1))[0][1])
    assert np.isclose(torch.sigmoid(one(obs)[2]).mean().item(), 0.5, atol=0.05)


def test_the_cnn_reads_images_from_36_pixels_and_smaller_ones_are_flattened():
    for shape, cnn in (((3, 36, 36), True), ((1, 40, 36), True), ((3, 35, 64), False), ((3, 12, 12), False),
                       ((36, 36), False)):
        spec = EnvSpec(shape, "uint8", 5, 1, False)
        nets = nets_for(spec, 16, 1)
        assert (nets.image_shape == shape) == cnn and (nets.torso is not None) == cnn, shape
        logits, value, *_ = nets(torch.zeros(1, 2, *shape, dtype=torch.uint8))
        assert logits.shape == (1, 2, 5) and value.shape == (1, 2)


def test_the_small_torso_reads_42_pixel_frames_and_is_smaller():
    from magicmask.models.networks import cnn_min_side
    assert cnn_min_side("nature") == 36 and cnn_min_side("small") == 20
    spec = EnvSpec((4, 42, 42), "uint8", 6, 1, False)
    small, nature = nets_for(spec, 16, 1, cnn_torso="small"), nets_for(spec, 16, 1)
    assert small.torso.out_features == 256 and len(small.torso.convs) == 2
    assert small.torso.fc.weight.shape[1:] == (32 * 3 * 3, 256)        # 42 -> 9 -> 3 pixels, 32 channels
    count = lambda n: sum(p.numel() for p in n.parameters())           # noqa: E731
    assert count(small) < count(nature)
    logits, value, m, mv = small(torch.zeros(1, 3, 4, 42, 42, dtype=torch.uint8))
    assert logits.shape == (1, 3, 6) and m.shape == (1, 3)
    assert nets_for(EnvSpec((4, 24, 24), "uint8", 6, 1, False), 16, 1, cnn_torso="small").image_shape == (4, 24, 24)
    assert nets_for(EnvSpec((4, 24, 24), "uint8", 6, 1, False), 16, 1).image_shape is None   # too small for nature


def test_a_mask_on_the_policy_torso_trains_only_its_heads():
    spec = EnvSpec((4, 42, 42), "uint8", 6, 1, False)
    nets = nets_for(spec, 16, 1, seed=0, cnn_torso="small", mask_torso="policy")
    assert nets.mask_torso is None
    mask_ids = {id(p) for p in nets.mask_parameters()}
    assert mask_ids.isdisjoint(id(p) for p in nets.policy_parameters())
    assert len(mask_ids) + len(nets.policy_parameters()) == len(list(nets.parameters()))
    obs = torch.randint(0, 256, (1, 8, 4, 42, 42), dtype=torch.uint8)
    _, _, m, mv = nets(obs)
    (m.sum() + mv.sum()).backward()                       # the mask's loss alone
    assert all(p.grad is None for p in nets.torso.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.mask_parameters())
    # the saliency asks dm/dobs: it flows through the shared torso
    x = obs.float().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.sigmoid(nets(x)[2]).sum(), x)
    assert g.abs().sum() > 0
    own = nets_for(spec, 16, 1, seed=0, cnn_torso="small")
    assert sum(p.numel() for p in own.mask_parameters()) > 10 * len(mask_ids)


def test_torso_options_that_do_not_fit_are_errors_naming_the_field():
    import pytest
    with pytest.raises(ValueError, match="ppo.cnn_torso='tiny'"):
        nets_for(EnvSpec((4, 42, 42), "uint8", 6, 1, False), 16, 1, cnn_torso="tiny")
    with pytest.raises(ValueError, match="ppo.mask_torso='policy'.*use 'own'"):
        nets_for(EnvSpec((20,), "float32", 4, 1, False), 16, 1, mask_torso="policy")


def test_standardised_input_ignores_brightness_and_contrast_of_the_frame():
    spec = EnvSpec((4, 42, 42), "uint8", 6, 1, False)
    std = nets_for(spec, 16, 1, seed=0, cnn_torso="small", cnn_input="standardize")
    scale = nets_for(spec, 16, 1, seed=0, cnn_torso="small")
    x = torch.randint(60, 120, (1, 3, 4, 42, 42)).float()
    brighter = x * 1.5 + 20                                   # the same picture, other brightness and contrast
    torch.testing.assert_close(std(x)[0], std(brighter)[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(scale(x)[0], scale(brighter)[0], atol=1e-4)
    with __import__("pytest").raises(ValueError, match="ppo.cnn_input='zscore'"):
        nets_for(spec, 16, 1, cnn_input="zscore")
