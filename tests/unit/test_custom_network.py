"""Your own networks by import path (`ppo.network`): built through the one builder every role uses
(`build_nets` / `group_nets`), seeded reproducibly, trained by a real BatchedPPO update, sliced for the actor
like the built-in ones; and every way a factory can be wrong is a ConfigError naming ppo.network, the value
and what is wrong. The factories live here and are loaded by this module's import path."""
import numpy as np
import pytest
import torch

from magicmask.learner.batched_ppo import BatchedPPO
from magicmask.models.networks import AgentNets, StackedLinear, StackedNets, build_nets, group_nets
from magicmask.protocol.config import Config, ConfigError
from magicmask.protocol.envspec import EnvSpec

HERE = "tests.unit.test_custom_network"
SPEC = EnvSpec((6,), "float32", 4, 2, False, "toy")


class TinyNets(StackedNets):
    """One stacked linear layer per head over the flattened observation."""

    def __init__(self, n_agents, obs_dim, n_actions):
        super().__init__()
        self.n_agents, self.n_actions = n_agents, n_actions
        self.policy = StackedLinear(n_agents, obs_dim, n_actions, 0.01)
        self.value = StackedLinear(n_agents, obs_dim, 1, 1.0)
        self.mask = StackedLinear(n_agents, obs_dim, 1, 0.01)
        self.mask_value = StackedLinear(n_agents, obs_dim, 1, 1.0)

    def policy_parameters(self):
        return [*self.policy.parameters(), *self.value.parameters()]

    def mask_parameters(self):
        return [*self.mask.parameters(), *self.mask_value.parameters()]

    def forward(self, obs, sel=slice(None), actions=None):
        x = obs.reshape(*obs.shape[:2], -1).to(self.dtype)
        return (self.policy(x, sel, actions), self.value(x, sel).squeeze(-1), self.mask(x, sel).squeeze(-1),
                self.mask_value(x, sel).squeeze(-1))


def make_tiny(spec, ppo, mask, n_agents):
    return TinyNets(n_agents, spec.obs_dim, spec.n_actions)


# ---------------- factories that break the contract, one way each ----------------
class IgnoresActions(TinyNets):
    def forward(self, obs, sel=slice(None), actions=None):
        return super().forward(obs, sel)


class UnsqueezedValue(TinyNets):
    def forward(self, obs, sel=slice(None), actions=None):
        logits, _, ml, mv = super().forward(obs, sel, actions)
        return logits, self.value(obs.reshape(*obs.shape[:2], -1).to(self.dtype), sel), ml, mv


class SharedParameters(TinyNets):
    def mask_parameters(self):
        return [*super().mask_parameters(), *self.value.parameters()]


class Unstacked(TinyNets):
    def __init__(self, *args):
        super().__init__(*args)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def policy_parameters(self):
        return [*super().policy_parameters(), self.scale]


class NoSlices(torch.nn.Module):
    """A plain module without the StackedNets methods."""

    def __init__(self):
        super().__init__()
        self.n_agents, self.n_actions = 2, 4
        self.lin = torch.nn.Linear(6, 4)


def make_not_a_module(spec, ppo, mask, n):
    return {"policy": None}


def make_no_slices(spec, ppo, mask, n):
    return NoSlices()


def make_wrong_actions(spec, ppo, mask, n):
    return TinyNets(n, spec.obs_dim, spec.n_actions + 1)


def make_ignores_actions(spec, ppo, mask, n):
    return IgnoresActions(n, spec.obs_dim, spec.n_actions)


def make_unsqueezed(spec, ppo, mask, n):
    return UnsqueezedValue(n, spec.obs_dim, spec.n_actions)


def make_shared(spec, ppo, mask, n):
    return SharedParameters(n, spec.obs_dim, spec.n_actions)


def make_unstacked(spec, ppo, mask, n):
    return Unstacked(n, spec.obs_dim, spec.n_actions)


def make_wrong_obs(spec, ppo, mask, n):
    return TinyNets(n, spec.obs_dim + 1, spec.n_actions)


def make_raises(spec, ppo, mask, n):
    raise ZeroDivisionError("division by zero")


not_callable = 42


def cfg_with(network):
    cfg = Config()
    cfg.ppo.network = network
    return cfg


def random_batch(n, T, E, spec, seed):
    """A valid random batch [n, T, E, ...] for BatchedPPO.update."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.rand(*shape, generator=g)
    A = spec.n_actions
    legal = torch.ones(n, T, E, A, dtype=torch.bool)
    applied = rnd(n, T, E) < 0.6
    return {"obs": torch.randn(n, T, E, *spec.obs_shape, generator=g), "legal": legal,
            "actions": torch.randint(0, A, (n, T, E), generator=g), "logp_mu": torch.full((n, T, E), -float(np.log(A))),
            "values": rnd(n, T, E), "mask_values": rnd(n, T, E), "rewards": rnd(n, T, E),
            "terminated": rnd(n, T, E) < 0.1, "truncated": torch.zeros(n, T, E, dtype=torch.bool),
            "final_values": torch.zeros(n, T, E), "final_mask_values": torch.zeros(n, T, E),
            "boot_values": rnd(n, E), "boot_mask_values": rnd(n, E), "m": 0.1 + 0.8 * rnd(n, T, E),
            "perturbed": applied & (rnd(n, T, E) < 0.5), "mask_applied": applied, "masked": applied,
            "eps_random": torch.zeros(n, T, E, dtype=torch.bool), "guided": torch.zeros(n, T, E, dtype=torch.bool),
            "eps": torch.zeros(n, T, E)}


def test_group_nets_builds_your_networks_and_a_real_update_trains_them():
    cfg = cfg_with(f"{HERE}:make_tiny")
    [(agents, nets)] = group_nets(SPEC, cfg.ppo, cfg.mask, seed=0)
    assert agents == [0, 1] and type(nets) is TinyNets and nets.n_agents == 2
    before = {k: v.clone() for k, v in nets.state_dict().items()}
    stats = BatchedPPO(nets, cfg.ppo, cfg.mask).update(random_batch(2, 8, 4, SPEC, seed=1), [0, 1])
    assert all(np.isfinite(v).all() for v in stats.values())
    for name, p in nets.state_dict().items():   # the policy and the mask losses both reached their parameters
        assert not torch.equal(p, before[name]), name
    one = build_nets(SPEC, cfg.ppo, cfg.mask, 1)   # the actor's copy of agent 1, as weights travel
    one.load_agent_state(0, nets.agent_state(1))
    obs = torch.randn(1, 3, 6)
    torch.testing.assert_close(one(obs)[0][0], nets(obs.expand(2, -1, -1))[0][1])


def test_each_group_gets_its_own_spec_and_the_seed_fixes_the_weights_without_touching_torch_rng():
    cfg = cfg_with(f"{HERE}:make_tiny")
    spec = EnvSpec((6,), "float32", 4, 3, True, "toy", agent_obs_shapes=((6,), (9,), (9,)))
    groups = group_nets(spec, cfg.ppo, cfg.mask, seed=5)
    assert [(agents, nets.policy.weight.shape) for agents, nets in groups] == [([0], (1, 6, 4)), ([1, 2], (2, 9, 4))]
    state = torch.get_rng_state()
    a, b, c = (build_nets(SPEC, cfg.ppo, cfg.mask, 2, seed=s) for s in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.policy.weight, b.policy.weight) and not torch.equal(a.policy.weight, c.policy.weight)


def test_empty_network_builds_the_built_in_ones_from_the_config():
    cfg = cfg_with("")
    cfg.ppo.hidden, cfg.mask.init_bias = 24, 2.0
    nets = build_nets(SPEC, cfg.ppo, cfg.mask, 2)
    assert type(nets) is AgentNets and nets.hidden == 24
    assert torch.allclose(nets(torch.zeros(2, 1, 6))[2], torch.tensor(2.0))   # the mask's initial logit bias


@pytest.mark.parametrize("path, why", [
    ("nosuch_pkg.nets:make", r"cannot import module 'nosuch_pkg.nets': ModuleNotFoundError"),
    (f"{HERE}:nope", r"module 'tests.unit.test_custom_network' has no attribute 'nope'"),
    (f"{HERE}:not_callable", r"'not_callable' .* is not callable"),
    ("no_colon", r"expected 'package.module:factory'"),
    (f"{HERE}:make_raises", r"factory\(spec, ppo_cfg, mask_cfg, n_agents=2\) raised ZeroDivisionError"),
    (f"{HERE}:make_not_a_module", r"returned a dict, not a torch.nn.Module"),
    (f"{HERE}:make_no_slices", r"lack policy_parameters, mask_parameters, agent_state, load_agent_state, dtype \(subclass"),
    (f"{HERE}:make_wrong_actions", r"n_actions=5; expected 2 and 4"),
    (f"{HERE}:make_shared", r"in both: \['value.bias', 'value.weight'\], in neither: \[\]"),
    (f"{HERE}:make_unstacked", r"parameters \['scale'\] lack the leading agent dimension 2"),
    (f"{HERE}:make_wrong_obs", r"forward\(obs\[2, 2, \*\(6,\)\]\) raised RuntimeError"),
    (f"{HERE}:make_unsqueezed", r"of shapes \[\(2, 2, 4\), \(2, 2\), \(2, 2\), \(2, 2\)\]; got \[\(2, 2, 4\), \(2, 2, 1\)"),
    (f"{HERE}:make_ignores_actions", r"actions=tensor\(\[3\]\)\) must return .* got \[\(1, 2, 4\)"),
])
def test_a_wrong_factory_is_a_config_error_naming_the_field_the_value_and_what_is_wrong(path, why):
    cfg = cfg_with(path)
    with pytest.raises(ConfigError, match=rf"^ppo\.network='{path}': .*{why}"):
        group_nets(SPEC, cfg.ppo, cfg.mask)
