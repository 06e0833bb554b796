"""Your own networks by import path (`ppo.network = 'package.module:factory'`): load the factory, call it, and
check what it returns against the contract every role relies on, so a wrong network fails when the run
starts with a ConfigError that names `ppo.network`, the value and what is wrong, never later inside an
update or on an actor.

The contract (what `models.networks.StackedNets` declares; subclass it to inherit the weight travel):
  factory(spec, ppo_cfg, mask_cfg, n_agents) -> an nn.Module with
    n_agents, n_actions                       every parameter has a leading agent dimension n_agents
    forward(obs[N, B, *spec.obs_shape], sel=slice(None), actions=None)
        -> logits[N, B, A] (only the columns `actions` when given), value[N, B], mask_logit[N, B], mask_value[N, B]
        (`sel`: the agents whose slices run, a slice or an index tensor; obs then has len(sel) on axis 0)
    policy_parameters(), mask_parameters()    disjoint, together every parameter
    agent_state(i), load_agent_state(i, arrays), dtype
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from magicmask.protocol.errors import ConfigError
from magicmask.protocol.import_path import load_callable

FIELD = "ppo.network"
_METHODS = ("forward", "policy_parameters", "mask_parameters", "agent_state", "load_agent_state")
_ATTRIBUTES = ("n_agents", "n_actions", "dtype")
_PROBE_BATCH = 2


def custom_nets(spec, ppo, mask, n_agents: int, seed: int | None = None) -> nn.Module:
    """The networks of `n_agents` agents with `spec.obs_shape` from the factory `ppo.network`, checked. The
    factory runs with torch's global generator seeded with `seed` (then restored), so its initial weights
    are reproducible as the built-in ones are."""
    factory = load_callable(ppo.network, FIELD)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            nets = factory(spec, ppo, mask, n_agents)
        except Exception as e:
            raise ConfigError(f"{FIELD}={ppo.network!r}: factory(spec, ppo_cfg, mask_cfg, n_agents={n_agents}) "
                              f"raised {type(e).__name__}: {e}") from e
    check_nets(nets, spec, n_agents, f"{FIELD}={ppo.network!r}")
    return nets


def check_nets(nets, spec, n_agents: int, where: str) -> None:
    """Raise a ConfigError starting with `where` unless `nets` keeps the contract (module docstring)."""
    if not isinstance(nets, nn.Module):
        raise ConfigError(f"{where}: the factory returned a {type(nets).__name__}, not a torch.nn.Module")
    missing = [m for m in _METHODS if not callable(getattr(nets, m, None))]
    missing += [a for a in _ATTRIBUTES if not hasattr(nets, a)]
    if missing:
        raise ConfigError(f"{where}: the networks lack {', '.join(missing)} (subclass "
                          f"magicmask.models.networks.StackedNets, or see docs/ARCHITECTURE.md 'Networks')")
    if (nets.n_agents, nets.n_actions) != (n_agents, spec.n_actions):
        raise ConfigError(f"{where}: the networks have n_agents={nets.n_agents}, n_actions={nets.n_actions}; "
                          f"expected {n_agents} and {spec.n_actions}")
    _check_parameters(nets, n_agents, where)
    _check_forward(nets, spec, n_agents, where)


def _check_parameters(nets: nn.Module, n_agents: int, where: str) -> None:
    """Every parameter stacked over the agents; policy and mask parameters disjoint and covering all."""
    names = {id(p): name for name, p in nets.named_parameters()}
    if not names:
        raise ConfigError(f"{where}: the networks have no parameters")
    unstacked = [n for n, p in nets.named_parameters() if p.dim() == 0 or p.shape[0] != n_agents]
    if unstacked:
        raise ConfigError(f"{where}: parameters {unstacked} lack the leading agent dimension {n_agents}")
    policy, mask = {id(p) for p in nets.policy_parameters()}, {id(p) for p in nets.mask_parameters()}
    both = sorted(names.get(i, "?") for i in policy & mask)
    neither = sorted(n for i, n in names.items() if i not in policy | mask)
    if both or neither:
        raise ConfigError(f"{where}: policy_parameters() and mask_parameters() must split the parameters; in "
                          f"both: {both}, in neither: {neither}")


def _check_forward(nets: nn.Module, spec, n_agents: int, where: str) -> None:
    """One forward of every agent, and one of the last agent over the last action column only."""
    obs = torch.from_numpy(np.zeros((n_agents, _PROBE_BATCH, *spec.obs_shape), spec.obs_dtype))
    last = torch.tensor([n_agents - 1])
    probes = ((f"forward(obs[{n_agents}, {_PROBE_BATCH}, *{tuple(spec.obs_shape)}])", (obs,),
               (n_agents, _PROBE_BATCH, spec.n_actions)),
              (f"forward(obs[1, {_PROBE_BATCH}, ...], sel=tensor([{n_agents - 1}]), "
               f"actions=tensor([{spec.n_actions - 1}]))", (obs[-1:], last, torch.tensor([spec.n_actions - 1])),
               (1, _PROBE_BATCH, 1)))
    for call, args, logits_shape in probes:
        try:
            with torch.no_grad():
                out = nets(*args)
        except Exception as e:
            raise ConfigError(f"{where}: {call} raised {type(e).__name__}: {e}") from e
        want = [logits_shape] + [logits_shape[:2]] * 3
        got = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out] \
            if isinstance(out, (tuple, list)) else type(out).__name__
        if got != want:
            raise ConfigError(f"{where}: {call} must return (logits, value, mask_logit, mask_value) of shapes "
                              f"{want}; got {got}")
