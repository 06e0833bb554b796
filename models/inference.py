"""One agent's networks for inference only (acting, evaluation, explanation episodes and replays).

Why numpy: an actor or a replay asks for one to sixteen observations at a time, where torch spends more on
dispatching its ~15 small ops (three layers for each of four MLPs, tanh, the sigmoid) than on the
arithmetic; the same float32 matrix products in numpy take a fraction of it (docs/BENCHMARKS.md, "Actor
cost"). `NumpyNets` copies the weights of the built-in MLP networks (models/networks.AgentNets with flat
observations, any policy head, with or without the board convolution and the mirror symmetry) once per load; everything else (the Nature CNN, `ppo.network`) runs
through `TorchNets`, with the same interface:

  forward(obs[B, ...], cols=None) -> (logits[B, A or len(cols)], value[B], m[B], mask_value[B]) as numpy
  logits(obs[B, ...], cols=None)  -> logits only (an opponent's or a replay's move: no critics, no mask)
"""
from __future__ import annotations

import numpy as np
import torch

from magicmask.models.networks import AgentNets, StackedBoardConv, StackedLinear, StackedNets


def _linear(lay, agent: int) -> tuple[np.ndarray, np.ndarray]:
    """(W[in, out], b[out]) of one agent's slice of a StackedLinear."""
    return (lay.weight[agent].detach().cpu().numpy().astype(np.float32, copy=True),
            lay.bias[agent, 0].detach().cpu().numpy().astype(np.float32, copy=True))


def _mlp(module, agent: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W, b) per linear layer] of one agent's slice of a StackedMLP (its board convolution, if any, apart)."""
    return [_linear(m, agent) for m in module if isinstance(m, StackedLinear)]


def _run(layers, x: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """Linear-tanh-...-linear; `cols` restricts the last layer's outputs."""
    for w, b in layers[:-1]:
        x = np.tanh(x @ w + b)
    w, b = layers[-1]
    if cols is not None:
        w, b = w[:, cols], b[cols]
    return x @ w + b


class NumpyNets:
    """One agent's slice of AgentNets with flat observations, as numpy arrays. With the board convolution
    (ppo.board_filters), the four networks' convolutions read the same patches of the board: they run as one
    gather and one matrix product with the four filter banks side by side (policy's first, so the policy
    alone, for `logits`, is a prefix)."""

    NETS = ("policy", "value", "mask", "mask_value")

    def __init__(self, nets: AgentNets, agent: int = 0):
        self.obs_dim = nets.obs_dim
        self.policy, self.value, self.mask, self.mask_value = (_mlp(getattr(nets, n), agent) for n in self.NETS)
        self.board = None   # (index[P, k*k*C], W[k*k*C, 4F], b[4F], F)
        if isinstance(nets.policy[0], StackedBoardConv):
            convs = [_linear(getattr(nets, n)[0].linear, agent) for n in self.NETS]
            self.board = (nets.policy[0].index.cpu().numpy(), np.concatenate([w for w, _ in convs], 1),
                          np.concatenate([b for _, b in convs]), convs[0][0].shape[1])
        self.embeddings = None   # the features head's g(E[a]) for every action, [A, H]
        if nets.action_encoder is not None:
            with torch.no_grad():
                emb = nets.action_encoder(nets.action_table[None].to(nets.dtype), slice(agent, agent + 1))[0]
            self.embeddings = emb.cpu().numpy().astype(np.float32)
        self.fused = None if self.board is not None else self._fuse()
        self.columns = None   # ((H, W, C), W[C, 1], b[1]): the columns head
        if nets.column_head is not None:
            self.columns = (nets.columns, *_linear(nets.column_head, agent))
        self.mirror = None   # (observation permutation, action permutation): AgentNets' mirror symmetry
        if nets.mirror_obs is not None:
            self.mirror = (nets.mirror_obs.cpu().numpy(), nets.mirror_act.cpu().numpy())

    def _fuse(self) -> tuple:
        """The four MLPs (three layers each, one hidden size) as one network for `forward`: their first layers
        side by side (one product), their second layers stacked (one batched product), the three one-output
        heads of value, mask and mask value stacked; the policy's head stays apart (its width differs). About
        a third of the numpy calls of four separate networks (docs/BENCHMARKS.md, "Actor cost")."""
        nets = (self.policy, self.value, self.mask, self.mask_value)
        w1 = np.ascontiguousarray(np.concatenate([n[0][0] for n in nets], 1))
        b1 = np.concatenate([n[0][1] for n in nets])
        w2, b2 = np.stack([n[1][0] for n in nets]), np.stack([n[1][1] for n in nets])[:, None, :]
        w3, b3 = np.stack([n[2][0] for n in nets[1:]]), np.stack([n[2][1] for n in nets[1:]])[:, None, :]
        return w1, b1, w2, b2, w3, b3

    @staticmethod
    def supports(nets: StackedNets) -> bool:
        return isinstance(nets, AgentNets) and not nets.image_shape

    def _flat(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, np.float32).reshape(len(obs), -1)
        if x.shape[1] != self.obs_dim:
            raise ValueError(f"observation has {x.shape[1]} features once flattened, the nets expect {self.obs_dim}")
        return x

    def _inputs(self, x: np.ndarray, k: int) -> list[np.ndarray]:
        """What the first k of NETS read: the observation, or their board convolutions' outputs."""
        if self.board is None:
            return [x] * k
        index, w, b, f = self.board
        h = np.maximum(x[:, index] @ w[:, :k * f] + b[:k * f], 0.0)   # [B, P, k*F]
        return [h[:, :, j * f:(j + 1) * f].reshape(len(x), -1) for j in range(k)]

    def _logits(self, x: np.ndarray, cols) -> np.ndarray:
        if self.embeddings is None:
            return _run(self.policy, x, cols)
        emb = self.embeddings if cols is None else self.embeddings[cols]
        return _run(self.policy, x) @ emb.T

    def logits(self, obs: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        x = self._flat(obs)
        if self.mirror is None:
            logits = self._logits(self._inputs(x, 1)[0], cols)
        else:
            both = self._logits(self._inputs(self._with_mirror(x), 1)[0], None)
            logits = self._symmetric_logits(both, len(x), cols)
        return logits if self.columns is None else logits + self._column_logits(x, cols)

    def forward(self, obs: np.ndarray, cols: np.ndarray | None = None):
        x = self._flat(obs)
        if self.mirror is None:
            logits, value, mask_logit, mask_value = self._forward(x, cols)
        else:   # one pass over the boards and their mirror images, then the averages AgentNets takes
            n = len(x)
            logits, *scalars = self._forward(self._with_mirror(x), None)
            logits = self._symmetric_logits(logits, n, cols)
            value, mask_logit, mask_value = (0.5 * (s[:n] + s[n:]) for s in scalars)
        if self.columns is not None:
            logits = logits + self._column_logits(x, cols)
        return logits, value, (1.0 / (1.0 + np.exp(-mask_logit))).astype(np.float32), mask_value

    def _column_logits(self, x: np.ndarray, cols) -> np.ndarray:
        """AgentNets.column_logits: each column's planes summed over its rows, times the shared weights."""
        (h, w, c), wt, b = self.columns
        out = x.reshape(len(x), h, w, c).sum(1) @ wt[:, 0] + b[0]
        return out if cols is None else out[:, cols]

    def _with_mirror(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, x[:, self.mirror[0]]])

    def _symmetric_logits(self, both: np.ndarray, n: int, cols) -> np.ndarray:
        logits = 0.5 * (both[:n] + both[n:][:, self.mirror[1]])
        return logits if cols is None else logits[:, cols]

    def _forward(self, x: np.ndarray, cols):
        """(logits, value, mask logit, mask value) of the networks as they are (no mirror)."""
        if self.fused is None:
            xp, xv, xm, xmv = self._inputs(x, 4)
            return (self._logits(xp, cols), _run(self.value, xv)[:, 0], _run(self.mask, xm)[:, 0],
                    _run(self.mask_value, xmv)[:, 0])
        w1, b1, w2, b2, w3, b3 = self.fused
        h = np.tanh(x @ w1 + b1).reshape(len(x), 4, -1).transpose(1, 0, 2)   # [4 nets, B, H]
        h = np.tanh(np.matmul(h, w2) + b2)
        s = (np.matmul(h[1:], w3) + b3)[:, :, 0]                              # value, mask logit, mask value
        wp, bp = self.policy[-1]
        if self.embeddings is None and cols is not None:
            wp, bp = wp[:, cols], bp[cols]
        logits = h[0] @ wp + bp
        if self.embeddings is not None:
            logits = logits @ (self.embeddings if cols is None else self.embeddings[cols]).T
        return logits, s[0], s[1], s[2]


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
