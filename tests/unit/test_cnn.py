"""The stacked Nature-CNN: one grouped convolution over all agents equals each agent's own network; which
observations the built-in networks read with it (images from 36 x 36 up)."""
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
