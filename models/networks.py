"""Stacked per-agent networks: every parameter has a leading agent dimension N, and one `torch.baddbmm`
runs a layer for every agent at once (docs/BENCHMARKS.md).

`AgentNets` holds four 2-hidden-layer tanh MLPs per agent:
  policy      obs -> logits[A]    (head gain 0.01: a near-uniform initial policy, CleanRL)
  value       obs -> V(s)         (head gain 1.0)
  mask        obs -> mask logit   (m = sigmoid(logit) is the KEEP probability; head gain 0.01 and bias
                                   `mask_init_bias`, so m ~ sigmoid(mask_init_bias) everywhere at start)
  mask_value  obs -> V_mask(s)    (the mask's own critic, head gain 1.0)

The policy head comes in three kinds (`ppo.action_head`):
  dense       the last layer maps the hidden layer to one logit per action id (A outputs)
  columns     dense, plus for board games whose actions are the board's columns (connect4): each column's
              planes summed over its rows, times one weight per plane shared by every column (`column_head`,
              gain 0.01). What a plane says about a column ("a disc here wins now") is then learnt once for all
              columns instead of once per cell (docs/RESULTS.md, "Connect Four: the default job from a fresh clone").
  features    the env gives a fixed feature table E[A, F] (learner/action_features.py); `policy` maps obs to
              an embedding f(s)[H] (gain 0.01: near-uniform start), `action_encoder` maps E[a] to g(a)[H],
              and logit(s, a) = <f(s), g(a)>. Actions that share cards share parameters, so what is learned
              about one action carries over to the actions like it (docs/ALGORITHM.md has the measurement).

Every role builds its networks with `build_nets` (or `group_nets`): your own by import path when
`ppo.network` is set (models/custom_network.py loads and checks them), else `nets_for`'s built-in ones. Both
keep the `StackedNets` contract. Agents whose observations differ in shape cannot share a stack:
`group_nets` builds one per group of `EnvSpec.groups()`.

Weights travel as one agent's slice (`StackedNets`): `agent_state(i)` gives {name: float32 array without the
agent dimension} and `load_agent_state(i, arrays)` validates and loads such a dict; the actor builds its
networks with n_agents=1 and loads slice 0.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

from magicmask.models.custom_network import custom_nets

HEADS = ("policy", "value", "mask", "mask_value")


def masked_logits(logits: torch.Tensor, legal: torch.Tensor | None) -> torch.Tensor:
    """Illegal actions get the dtype's most negative finite value: probability 0 after softmax, never NaN
    (a row with no legal action at all becomes uniform instead of NaN)."""
    if legal is None:
        return logits
    return torch.where(legal.bool(), logits, torch.finfo(logits.dtype).min)


class StackedLinear(nn.Module):
    """N independent linear layers: weight [N, in, out], bias [N, 1, out]; x[N, B, in] -> [N, B, out]."""

    def __init__(self, n_agents: int, in_features: int, out_features: int, gain: float = math.sqrt(2),
                 bias_init: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_agents, in_features, out_features))
        self.bias = nn.Parameter(torch.full((n_agents, 1, out_features), float(bias_init)))
        with torch.no_grad():
            for i in range(n_agents):
                # Orthogonal init per agent slice, drawn as nn.Linear's [out, in] weight (CleanRL's layer_init)
                w = torch.empty(out_features, in_features)
                nn.init.orthogonal_(w, gain, generator=generator)
                self.weight[i].copy_(w.T)

    def forward(self, x: torch.Tensor, sel=slice(None), cols: torch.Tensor | None = None) -> torch.Tensor:
        """`sel` picks the agents (a slice or an index tensor) whose slices x belongs to; `cols` (sorted output
        ids) computes only those outputs: [N, B, len(cols)]."""
        w, b = self.weight[sel], self.bias[sel]
        if cols is not None:
            w, b = w[..., cols], b[..., cols]
        return torch.baddbmm(b, x, w)


class StackedBoardConv(nn.Module):
    """One k x k convolution without padding over a board observation, ReLU, flattened, stacked over agents:
    x[N, B, H*W*C] (flattened in (H, W, C) order, `EnvSpec.board_shape`) -> [N, B, P*F], P = (H-k+1)(W-k+1)
    positions, F filters. Why: a Connect Four line of four fits in a 4 x 4 square, so one such filter sees a
    whole threat wherever it is on the board, where an MLP must learn each place separately
    (docs/RESULTS.md, "Connect Four: a board convolution"). Run as a gather of every position's k*k*C cells
    and one batched matrix product, which numpy repeats for acting (models/inference.py)."""

    def __init__(self, n_agents: int, board: tuple[int, int, int], filters: int, kernel: int, generator=None):
        super().__init__()
        h, w, c = board
        if not 1 <= kernel <= min(h, w):
            raise ValueError(f"ppo.board_kernel={kernel}: a k x k window must fit the {h} x {w} board (1..{min(h, w)})")
        idx = [[((r + dr) * w + (q + dq)) * c + ch for dr in range(kernel) for dq in range(kernel) for ch in range(c)]
               for r in range(h - kernel + 1) for q in range(w - kernel + 1)]
        self.register_buffer("index", torch.tensor(idx), persistent=False)   # [P, k*k*C], rebuilt from the spec
        self.linear = StackedLinear(n_agents, kernel * kernel * c, filters, math.sqrt(2), generator=generator)
        self.out_features = len(idx) * filters

    def forward(self, x: torch.Tensor, sel=slice(None)) -> torch.Tensor:
        n, b = x.shape[:2]
        patches = x.index_select(-1, self.index.flatten()).reshape(n, b * self.index.shape[0], -1)  # [N, B*P, k*k*C]
        return torch.relu(self.linear(patches, sel)).reshape(n, b, -1)


class StackedMLP(nn.Sequential):
    """Linear-tanh-linear-tanh-linear, stacked over agents (parameter names like `policy.0.weight`); with
    `board` = (board_shape, filters, kernel) a StackedBoardConv reads the observation first."""

    def __init__(self, n_agents, in_features, hidden, out_features, head_gain, head_bias=0.0, generator=None,
                 board=None):
        g = math.sqrt(2)
        first = []
        if board is not None:
            first = [StackedBoardConv(n_agents, *board, generator=generator)]
            in_features = first[0].out_features
        super().__init__(
            *first,
            StackedLinear(n_agents, in_features, hidden, g, generator=generator), nn.Tanh(),
            StackedLinear(n_agents, hidden, hidden, g, generator=generator), nn.Tanh(),
            StackedLinear(n_agents, hidden, out_features, head_gain, head_bias, generator=generator))

    def forward(self, x: torch.Tensor, sel=slice(None), cols: torch.Tensor | None = None) -> torch.Tensor:
        """`cols` restricts the last layer's outputs (see StackedLinear)."""
        last = len(self) - 1
        for i, layer in enumerate(self):
            if isinstance(layer, StackedLinear):
                x = layer(x, sel, cols if i == last else None)
            else:
                x = layer(x, sel) if isinstance(layer, StackedBoardConv) else layer(x)
        return x


class StackedConv2d(nn.Module):
    """N independent conv layers run as one grouped convolution: weight [N, out, in, k, k]; the agents'
    channels are laid side by side, x[B, N*in, H, W] -> [B, N*out, H', W'] with groups = N."""

    def __init__(self, n_agents: int, in_ch: int, out_ch: int, kernel: int, stride: int, generator=None):
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(n_agents, out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(n_agents, out_ch))
        with torch.no_grad():
            for i in range(n_agents):
                nn.init.orthogonal_(self.weight[i], math.sqrt(2), generator=generator)

    def forward(self, x: torch.Tensor, sel=slice(None)) -> torch.Tensor:
        w, b = self.weight[sel], self.bias[sel]
        return nn.functional.conv2d(x, w.reshape(-1, *w.shape[2:]), b.reshape(-1), self.stride, groups=w.shape[0])


CNN_TORSOS = {
    # name: ((out_channels, kernel, stride) per convolution, features of the fully connected layer)
    "nature": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),   # Mnih et al. 2015 (Nature), CleanRL's ppo_atari
    "small": (((16, 8, 4), (32, 4, 2)), 256),                  # Mnih et al. 2013 (NIPS workshop): 42x42 frames on a CPU
}


def cnn_min_side(torso: str) -> int:
    """The smallest square image whose side survives every convolution of `torso` with one pixel left."""
    side = 1
    for _, k, s_ in reversed(CNN_TORSOS[torso][0]):
        side = (side - 1) * s_ + k
    return side


class StackedCNN(nn.Module):
    """A DQN-style torso (`CNN_TORSOS`: the Nature CNN, or the 2013 DQN's smaller one): convolutions, then one
    fully connected layer, ReLU after each; stacked over agents. x[N, B, C, H, W] -> [N, B, out_features].
    Pixels enter scaled by 1/255 (`standardize` False, the DQN's) or standardised per observation (minus the
    mean of its pixels, over their standard deviation): small bright objects on a constant background, such as
    Pong's ball in 42x42 frames, then move the features ~3x more at initialisation (docs/RESULTS.md)."""

    def __init__(self, n_agents: int, in_ch: int, hw: tuple[int, int], generator=None, torso: str = "nature",
                 standardize: bool = False):
        super().__init__()
        self.standardize = standardize
        layers, self.out_features = CNN_TORSOS[torso]
        self.convs = nn.ModuleList()
        h, w = hw
        for out_ch, k, s_ in layers:
            self.convs.append(StackedConv2d(n_agents, in_ch, out_ch, k, s_, generator))
            in_ch, h, w = out_ch, (h - k) // s_ + 1, (w - k) // s_ + 1
        self.fc = StackedLinear(n_agents, in_ch * h * w, self.out_features, math.sqrt(2), generator=generator)

    def forward(self, x: torch.Tensor, sel=slice(None)) -> torch.Tensor:
        n, b = x.shape[:2]
        if self.standardize:   # per observation: over its channels and pixels
            x = (x - x.mean((2, 3, 4), keepdim=True)) / (x.std((2, 3, 4), keepdim=True) + 1e-3)
        else:
            x = x / 255.0
        y = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:])   # agents' channels side by side
        for conv in self.convs:
            y = torch.relu(conv(y, sel))
        y = y.reshape(b, n, -1).transpose(0, 1)                                   # back to [N, B, features]
        return torch.relu(self.fc(y, sel))


class StackedNets(nn.Module, ABC):
    """What every role needs of a group's networks, the built-in `AgentNets` or yours (`ppo.network`,
    models/custom_network.py checks the contract): every parameter stacked with a leading agent dimension,
    `forward(obs[N, B, *obs], sel=slice(None), actions=None) -> logits[N, B, A or len(actions)], value[N, B],
    mask_logit[N, B], mask_value[N, B]`, and the parameters the policy and the mask losses train. Subclasses
    set `n_agents` and `n_actions`; how one agent's weights travel is here."""

    n_agents: int
    n_actions: int
    image_shape: tuple | None = None   # (C, H, W) where a CNN reads image observations (the report's saliency)
    cnn_torso: str = "nature"          # which of CNN_TORSOS reads them
    cnn_input: str = "scale"           # and how their pixels enter it (CNN_INPUTS)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @abstractmethod
    def policy_parameters(self) -> list[nn.Parameter]:
        """What the policy loss trains (the policy, its critic and whatever feeds only them)."""

    @abstractmethod
    def mask_parameters(self) -> list[nn.Parameter]:
        """What the mask loss trains; disjoint from `policy_parameters`, together every parameter."""

    # ---------------- one agent's slice: how weights travel ----------------
    def agent_state(self, i: int) -> dict[str, np.ndarray]:
        """Agent i's slice of every parameter, float32, contiguous, without the agent dimension."""
        if not 0 <= i < self.n_agents:
            raise IndexError(f"agent {i} not in 0..{self.n_agents - 1}")
        return {name: np.ascontiguousarray(p.detach()[i].to("cpu", torch.float32).numpy())
                for name, p in self.named_parameters()}

    def load_agent_state(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        """Validate (names, shapes, dtype float32, finite values) and load one agent's slice; nothing is
        changed when any entry is wrong."""
        if not 0 <= i < self.n_agents:
            raise IndexError(f"agent {i} not in 0..{self.n_agents - 1}")
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(arrays)), sorted(set(arrays) - set(params))
        if missing or unexpected:
            raise ValueError(f"agent weights: missing entries {missing}, unexpected entries {unexpected}")
        for name, p in params.items():
            a = arrays[name]
            if not isinstance(a, np.ndarray):
                raise ValueError(f"agent weights: entry {name!r} is a {type(a).__name__}, expected a numpy array")
            if a.dtype != np.float32:
                raise ValueError(f"agent weights: entry {name!r} has dtype {a.dtype}, expected float32")
            if tuple(a.shape) != tuple(p.shape[1:]):
                raise ValueError(f"agent weights: entry {name!r} has shape {tuple(a.shape)}, expected {tuple(p.shape[1:])}")
            if not np.isfinite(a).all():
                raise ValueError(f"agent weights: entry {name!r} holds non-finite values")
        with torch.no_grad():
            for name, p in params.items():
                p[i].copy_(torch.from_numpy(np.array(arrays[name])))  # a copy: received buffers are read-only


class AgentNets(StackedNets):
    """Per agent: policy, value, mask and mask value. Flat observations use four separate MLPs (each with its
    own StackedBoardConv first when `board` = (board_shape, filters, kernel) is given); image
    observations (`image_shape` = (C, H, W)) use a CNN torso (`cnn_torso`, a `CNN_TORSOS` name) shared by the
    policy and its critic (as in CleanRL's ppo_atari) and linear heads; the mask and its critic have a second
    torso of their own, or with `mask_torso="policy"` read the policy torso's features with the gradient
    stopped (half the convolutions; the mask's loss never moves the policy's features).
    `action_features` (a table [n_actions, F], flat observations only) selects the features policy head.
    `mirror` = (observation permutation, action permutation) of a board's left-right mirror (flat observations,
    dense head) makes every network symmetric: each reads the board and its mirror image, the policy's logits
    average with the mirror's (permuted back), the scalar heads average. What is learnt about a threat on one
    side then holds on the other, at twice the forward's rows."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, hidden: int = 64,
                 mask_init_bias: float = 0.0, seed: int | None = None, image_shape: tuple | None = None,
                 action_features: np.ndarray | None = None, board: tuple | None = None, cnn_torso: str = "nature",
                 mask_torso: str = "own", cnn_input: str = "scale", mirror: tuple | None = None,
                 columns: tuple | None = None):
        super().__init__()
        self.n_agents, self.obs_dim, self.n_actions, self.hidden = n_agents, obs_dim, n_actions, hidden
        self.image_shape = tuple(image_shape) if image_shape else None
        self.cnn_torso, self.cnn_input = cnn_torso, cnn_input
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.action_encoder = self.torso = self.mask_torso = None   # the CNN torsos: image observations only
        self.columns, self.column_head = (tuple(columns) if columns else None), None
        self._embedding_cache = None
        if action_features is not None:
            table = torch.tensor(np.asarray(action_features, np.float32))
            if self.image_shape or table.ndim != 2 or table.shape[0] != n_actions:
                image = " and image observations" if self.image_shape else ""
                raise ValueError(f"action features: a table [n_actions={n_actions}, F] with flat observations, "
                                 f"got shape {tuple(table.shape)}{image}")
            # not saved with the weights: every process rebuilds the same table from the env's name
            self.register_buffer("action_table", table, persistent=False)
            self.action_encoder = StackedMLP(n_agents, table.shape[1], hidden, hidden, 1.0, generator=gen)
        if self.image_shape:
            c, h, w = self.image_shape
            std = cnn_input == "standardize"
            self.torso = StackedCNN(n_agents, c, (h, w), gen, cnn_torso, std)
            if mask_torso == "own":
                self.mask_torso = StackedCNN(n_agents, c, (h, w), gen, cnn_torso, std)
            f = self.torso.out_features
            self.policy = StackedLinear(n_agents, f, n_actions, 0.01, generator=gen)
            self.value = StackedLinear(n_agents, f, 1, 1.0, generator=gen)
            self.mask = StackedLinear(n_agents, f, 1, 0.01, mask_init_bias, generator=gen)
            self.mask_value = StackedLinear(n_agents, f, 1, 1.0, generator=gen)
            return
        obs_perm = act_perm = None
        if mirror is not None:
            if action_features is not None:
                raise ValueError("mirror-symmetric networks need the dense policy head (ppo.action_head=dense)")
            obs_perm, act_perm = (torch.as_tensor(np.asarray(p, np.int64)) for p in mirror)
            if sorted(obs_perm.tolist()) != list(range(obs_dim)) or sorted(act_perm.tolist()) != list(range(n_actions)):
                raise ValueError(f"mirror: permutations of the {obs_dim} observation values and the {n_actions} actions")
        self.register_buffer("mirror_obs", obs_perm, persistent=False)   # rebuilt from the spec, never saved
        self.register_buffer("mirror_act", act_perm, persistent=False)
        policy_out = hidden if self.action_encoder is not None else n_actions
        self.policy = StackedMLP(n_agents, obs_dim, hidden, policy_out, 0.01, generator=gen, board=board)
        self.value = StackedMLP(n_agents, obs_dim, hidden, 1, 1.0, generator=gen, board=board)
        self.mask = StackedMLP(n_agents, obs_dim, hidden, 1, 0.01, mask_init_bias, generator=gen, board=board)
        self.mask_value = StackedMLP(n_agents, obs_dim, hidden, 1, 1.0, generator=gen, board=board)
        if self.columns:
            h, w, c = self.columns
            if h * w * c != obs_dim or w != n_actions or action_features is not None:
                raise ValueError(f"the columns head: a board (H, W, C) of obs_dim={obs_dim} values with one action per "
                                 f"column (W = n_actions = {n_actions}) and no action features; got {self.columns}")
            self.column_head = StackedLinear(n_agents, c, 1, 0.01, generator=gen)

    def policy_parameters(self) -> list[nn.Parameter]:
        """What the policy loss trains: the policy and its critic, their shared torso, the action encoder, the
        column head."""
        mods = [self.policy, self.value, self.torso, self.action_encoder, self.column_head]
        return [p for m in mods if m is not None for p in m.parameters()]

    def mask_parameters(self) -> list[nn.Parameter]:
        """What the mask loss trains: the mask and its critic, and their shared torso."""
        mods = [self.mask, self.mask_value, self.mask_torso]
        return [p for m in mods if m is not None for p in m.parameters()]

    def action_embeddings(self, sel=slice(None), actions: torch.Tensor | None = None) -> torch.Tensor:
        """g(E[actions]) for the selected agents: [n, len(actions) or A, H]. The full table's embeddings are
        cached while gradients are off (acting, evaluating) and the encoder's weights are unchanged: every
        in-place change to a parameter (loading weights, an optimizer step) bumps its version counter, which
        is part of the cache key."""
        key = None
        if actions is None and not torch.is_grad_enabled() and isinstance(sel, slice) and sel == slice(None):
            key = tuple((p.data_ptr(), p._version) for p in self.action_encoder.parameters())
            if self._embedding_cache is not None and self._embedding_cache[0] == key:
                return self._embedding_cache[1]
        n = self.n_agents if isinstance(sel, slice) else len(sel)
        table = self.action_table if actions is None else self.action_table[actions]
        emb = self.action_encoder(table.to(self.dtype).expand(n, -1, -1), sel)
        if key is not None:
            self._embedding_cache = (key, emb)
        return emb

    def policy_logits(self, x: torch.Tensor, sel=slice(None), actions: torch.Tensor | None = None) -> torch.Tensor:
        """x[n, B, obs_dim] -> logits[n, B, A] (or only the columns `actions`) with the dense or the features head;
        mirror-symmetric nets average each action's logit with its mirror action's on the mirrored board (the
        column head's term is mirror-symmetric as it is)."""
        if self.mirror_obs is not None:
            b = x.shape[1]
            both = self.policy(torch.cat([x, x[..., self.mirror_obs]], 1), sel)
            logits = 0.5 * (both[:, :b] + both[:, b:][..., self.mirror_act])
            logits = logits if actions is None else logits[..., actions]
        elif self.action_encoder is None:
            logits = self.policy(x, sel, actions)
        else:
            logits = torch.bmm(self.policy(x, sel), self.action_embeddings(sel, actions).transpose(1, 2))
        if self.column_head is not None:
            logits = logits + self.column_logits(x, sel, actions)
        return logits

    def column_logits(self, x: torch.Tensor, sel=slice(None), actions: torch.Tensor | None = None) -> torch.Tensor:
        """The columns head's term, x[n, B, H*W*C] -> [n, B, W]: each column's C planes summed over its H rows,
        through one linear map C -> 1 shared by the columns."""
        h, w, c = self.columns
        n, b = x.shape[:2]
        sums = x.reshape(n, b, h, w, c).sum(2).reshape(n, b * w, c)
        out = self.column_head(sums, sel).reshape(n, b, w)
        return out if actions is None else out[..., actions]

    def scalar(self, net: StackedMLP, x: torch.Tensor, sel=slice(None)) -> torch.Tensor:
        """A one-output MLP (value, mask, mask value) on x[n, B, obs_dim] -> [n, B]; mirror-symmetric nets average
        it over the board and its mirror."""
        if self.mirror_obs is None:
            return net(x, sel).squeeze(-1)
        b = x.shape[1]
        both = net(torch.cat([x, x[..., self.mirror_obs]], 1), sel).squeeze(-1)
        return 0.5 * (both[:, :b] + both[:, b:])

    def forward(self, obs: torch.Tensor, sel=slice(None), actions: torch.Tensor | None = None):
        """obs[N, B, *obs] of any numeric dtype -> logits[N,B,A], value[N,B], mask_logit[N,B], mask_value[N,B].

        `sel` (a slice or an index tensor of agent ids) runs only those agents' slices; obs then has
        len(sel) on its first axis. Gradients reach only the selected slices. `actions` (sorted action ids)
        computes only those logits, [N, B, len(actions)]: the learner passes the actions legal anywhere in
        its batch, which for Dou Dizhu is a few hundred of 27,472 (see BatchedPPO)."""
        if self.image_shape:
            if tuple(obs.shape[2:]) != self.image_shape:
                raise ValueError(f"observation shape {tuple(obs.shape[2:])}, the nets expect {self.image_shape}")
            x = obs.to(self.dtype)
            h = self.torso(x, sel)
            if self.mask_torso is not None:
                hm = self.mask_torso(x, sel)
            else:   # the mask's loss stops at the policy's features; an input that asks for gradients (the
                hm = h if obs.requires_grad else h.detach()   # saliency, dm/dobs) gets them through the torso
            return (self.policy(h, sel, actions), self.value(h, sel).squeeze(-1),
                    self.mask(hm, sel).squeeze(-1), self.mask_value(hm, sel).squeeze(-1))
        x = obs.reshape(*obs.shape[:2], -1).to(self.dtype)
        if x.shape[-1] != self.obs_dim:
            raise ValueError(f"observation has {x.shape[-1]} features once flattened, the nets expect {self.obs_dim}")
        return (self.policy_logits(x, sel, actions), self.scalar(self.value, x, sel),
                self.scalar(self.mask, x, sel), self.scalar(self.mask_value, x, sel))

ACTION_HEADS = ("dense", "features", "columns")
MASK_TORSOS = ("own", "policy")
CNN_INPUTS = ("scale", "standardize")
def image_shape(spec, torso: str = "nature") -> tuple[int, int, int] | None:
    """(C, H, W) when the built-in networks read the spec's observations with the CNN: a 3-d obs_shape is an
    image, channels first (pong's frame stacks; a PettingZoo env's uint8 images, transposed by its adapter),
    and the CNN `torso` takes it from `cnn_min_side(torso)` up (36 for the Nature CNN). None otherwise: flat
    observations, and smaller images, which the MLPs read flattened (give `ppo.network` for a torso of your own)."""
    if len(spec.obs_shape) != 3 or min(spec.obs_shape[1:]) < cnn_min_side(torso):
        return None
    return tuple(spec.obs_shape)


def nets_for(spec, hidden: int, n_agents: int, mask_init_bias: float = 0.0, seed: int | None = None,
             action_head: str = "dense", board_filters: int = 0, board_kernel: int = 4,
             cnn_torso: str = "nature", mask_torso: str = "own", cnn_input: str = "scale",
             mirror: bool = False) -> AgentNets:
    """The built-in networks for agents with `spec.obs_shape`: the CNN `cnn_torso` for images (`image_shape`), MLPs
    otherwise, after a board convolution of `board_filters` filters when that is > 0 (the spec must have a
    `board_shape`); the "features" action head scores actions with the table the spec names (`spec.action_features`).
    `mirror`: symmetric under the board's left-right mirror (the spec must have `mirror_actions`)."""
    if action_head not in ACTION_HEADS:
        raise ValueError(f"ppo.action_head={action_head!r}: allowed values are {', '.join(ACTION_HEADS)}")
    if cnn_torso not in CNN_TORSOS:
        raise ValueError(f"ppo.cnn_torso={cnn_torso!r}: allowed values are {', '.join(CNN_TORSOS)}")
    if cnn_input not in CNN_INPUTS:
        raise ValueError(f"ppo.cnn_input={cnn_input!r}: allowed values are {', '.join(CNN_INPUTS)}")
    if mask_torso not in MASK_TORSOS or (mask_torso != "own" and not image_shape(spec, cnn_torso)):
        raise ValueError(f"ppo.mask_torso={mask_torso!r}: allowed values are {', '.join(MASK_TORSOS)}; 'policy' "
                         f"needs image observations (env {spec.name or '?'!r} has {spec.obs_shape}: use 'own')")
    board = None
    if board_filters > 0:
        if not spec.board_shape or image_shape(spec, cnn_torso):
            raise ValueError(f"ppo.board_filters={board_filters} needs an env whose observation is a board (H, W, C);"
                             f" env {spec.name or '?'!r} has observations of shape {spec.obs_shape} (use 0)")
        board = (spec.board_shape, board_filters, board_kernel)
    symmetry = None
    if mirror:
        if not spec.board_shape or not spec.mirror_actions or image_shape(spec, cnn_torso) or action_head == "features":
            raise ValueError(f"ppo.mirror=true needs a board env that declares its mirror (EnvSpec.mirror_actions: "
                             f"connect4) and ppo.action_head=dense or columns; env {spec.name or '?'!r} has none (use false)")
        symmetry = (np.arange(spec.obs_dim).reshape(spec.board_shape)[:, ::-1, :].reshape(-1), spec.mirror_actions)
    table = None
    if action_head == "features":
        if not spec.action_features:
            raise ValueError(f"ppo.action_head='features' needs an env with action features; env "
                             f"{spec.name or '?'!r} has none (use ppo.action_head=dense)")
        from magicmask.models.action_features import action_feature_table
        table = action_feature_table(spec.action_features)
    columns = None
    if action_head == "columns":
        if not spec.board_shape or image_shape(spec, cnn_torso) or spec.board_shape[1] != spec.n_actions:
            raise ValueError(f"ppo.action_head='columns' needs a board env whose actions are its columns (connect4); env "
                             f"{spec.name or '?'!r} has board {spec.board_shape or 'none'} and {spec.n_actions} actions "
                             f"(use ppo.action_head=dense)")
        columns = spec.board_shape
    return AgentNets(n_agents, spec.obs_dim, spec.n_actions, hidden, mask_init_bias, seed,
                     image_shape=image_shape(spec, cnn_torso), action_features=table, board=board, cnn_torso=cnn_torso,
                     mask_torso=mask_torso, cnn_input=cnn_input, mirror=symmetry, columns=columns)


def build_nets(spec, ppo, mask, n_agents: int, seed: int | None = None) -> StackedNets:
    """The one place every role builds networks (learner, actor, explain): for `n_agents` agents with
    `spec.obs_shape`, your factory `ppo.network` when set (its output checked, models/custom_network.py),
    else the built-in ones (`nets_for` with ppo.hidden, mask.init_bias, ppo.action_head, ppo.board_*, ppo.cnn_torso,
    ppo.mask_torso, ppo.cnn_input and ppo.mirror)."""
    if ppo.network:
        if ppo.mirror:
            raise ValueError("ppo.mirror=true applies to the built-in networks; make your ppo.network symmetric itself")
        return custom_nets(spec, ppo, mask, n_agents, seed)
    return nets_for(spec, ppo.hidden, n_agents, mask.init_bias, seed, ppo.action_head, ppo.board_filters,
                    ppo.board_kernel, ppo.cnn_torso, ppo.mask_torso, ppo.cnn_input, ppo.mirror)


def group_nets(spec, ppo, mask, seed: int | None = None) -> list[tuple[list[int], StackedNets]]:
    """One stacked network per group of agents sharing an observation shape (`spec.groups()`), as
    [(agent ids, nets)], each from `build_nets`. Group k is seeded with seed + k, so a single group is
    exactly build_nets(spec, ppo, mask, n_agents, seed)."""
    return [(agents, build_nets(spec.for_agent(agents[0]), ppo, mask, len(agents), None if seed is None else seed + k))
            for k, (_, agents) in enumerate(spec.groups())]
