"""One agent's networks for inference only (acting, evaluation, explanation episodes and replays).

Why numpy: an actor or a replay asks for one to sixteen observations at a time, where torch spends more on
dispatching its ~15 small ops (three layers for each of four MLPs, tanh, the sigmoid) than on the
arithmetic; the same float32 matrix products in numpy take a fraction of it (docs/BENCHMARKS.md, "Actor
cost"). `NumpyNets` copies the weights of the built-in MLP networks (models/networks.AgentNets with flat
observations, either policy head) once per load; everything else (the Nature CNN, `ppo.network`) runs
through `TorchNets`, with the same interface:

  forward(obs[B, ...], cols=None) -> (logits[B, A or len(cols)], value[B], m[B], mask_value[B]) as numpy
  logits(obs[B, ...], cols=None)  -> logits only (an opponent's or a replay's move: no critics, no mask)
"""
from __future__ import annotations

import numpy as np
import torch

from magicmask.models.networks import AgentNets, StackedNets


def _mlp(module, agent: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W[in, out], b[out]) per linear layer] of one agent's slice of a StackedMLP."""
    layers = [m for m in module if hasattr(m, "weight")]
    return [(lay.weight[agent].detach().cpu().numpy().astype(np.float32, copy=True),
             lay.bias[agent, 0].detach().cpu().numpy().astype(np.float32, copy=True)) for lay in layers]


def _run(layers, x: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """Linear-tanh-...-linear; `cols` restricts the last layer's outputs."""
    for w, b in layers[:-1]:
        x = np.tanh(x @ w + b)
    w, b = layers[-1]
    if cols is not None:
        w, b = w[:, cols], b[cols]
    return x @ w + b


class NumpyNets:
    """One agent's slice of AgentNets with flat observations, as numpy arrays."""

    def __init__(self, nets: AgentNets, agent: int = 0):
        self.obs_dim = nets.obs_dim
        self.policy, self.value = _mlp(nets.policy, agent), _mlp(nets.value, agent)
        self.mask, self.mask_value = _mlp(nets.mask, agent), _mlp(nets.mask_value, agent)
        self.embeddings = None   # the features head's g(E[a]) for every action, [A, H]
        if nets.action_encoder is not None:
            with torch.no_grad():
                emb = nets.action_encoder(nets.action_table[None].to(nets.dtype), slice(agent, agent + 1))[0]
            self.embeddings = emb.cpu().numpy().astype(np.float32)

    @staticmethod
    def supports(nets: StackedNets) -> bool:
        return isinstance(nets, AgentNets) and not nets.image_shape

    def _flat(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, np.float32).reshape(len(obs), -1)
        if x.shape[1] != self.obs_dim:
            raise ValueError(f"observation has {x.shape[1]} features once flattened, the nets expect {self.obs_dim}")
        return x

    def _logits(self, x: np.ndarray, cols) -> np.ndarray:
        if self.embeddings is None:
            return _run(self.policy, x, cols)
        emb = self.embeddings if cols is None else self.embeddings[cols]
        return _run(self.policy, x) @ emb.T

    def logits(self, obs: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        return self._logits(self._flat(obs), cols)

    def forward(self, obs: np.ndarray, cols: np.ndarray | None = None):
        x = self._flat(obs)
        m = 1.0 / (1.0 + np.exp(-_run(self.mask, x)[:, 0]))
        return self._logits(x, cols), _run(self.value, x)[:, 0], m.astype(np.float32), _run(self.mask_value, x)[:, 0]


class TorchNets:
    """Any StackedNets of one agent (the CNN, a custom network) behind NumpyNets' interface."""

    def __init__(self, nets: StackedNets):
        self.nets = nets

    @torch.no_grad()
    def forward(self, obs: np.ndarray, cols: np.ndarray | None = None):
        c = None if cols is None else torch.as_tensor(np.asarray(cols, np.int64))
        lo, v, ml, mv = self.nets(torch.as_tensor(np.asarray(obs))[None], actions=c)
        return lo[0].numpy(), v[0].numpy(), torch.sigmoid(ml[0]).numpy(), mv[0].numpy()

    def logits(self, obs: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        return self.forward(obs, cols)[0]


def inference(nets: StackedNets, agent: int = 0) -> NumpyNets | TorchNets:
    """The fastest inference path for one agent of `nets` (for TorchNets, `nets` must hold that agent alone)."""
    if NumpyNets.supports(nets):
        return NumpyNets(nets, agent)
    if nets.n_agents != 1:
        raise ValueError(f"inference: torch nets of {nets.n_agents} agents; build them for the one agent")
    return TorchNets(nets)
