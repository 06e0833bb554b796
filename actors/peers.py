"""The latest weights of every agent, own and peers', for inference only: the actor acts with its own, and
peers play the other seats of a shared world (Connect Four, Dou Dizhu, highway, football)."""
from __future__ import annotations

import numpy as np

from magicmask.models.action_selection import sample_rows, softmax_legal
from magicmask.models.inference import NumpyNets, TorchNets, inference
from magicmask.models.networks import StackedNets, build_nets
from magicmask.protocol.config import Config
from magicmask.protocol.envspec import EnvSpec


class PeerPolicies:
    """Each agent's networks are built from its own spec (`spec.for_agent`): in Dou Dizhu the landlord's and
    the peasants' observations differ in size."""

    def __init__(self, spec: EnvSpec, cfg: Config, seed: int | None = None):
        """seed: of the peers' move samples (an actor passes one derived from run.seed, so that a run repeats)."""
        self.spec, self.cfg = spec, cfg
        self.nets: dict[int, StackedNets] = {}           # the loaded weights (torch)
        self.fast: dict[int, NumpyNets | TorchNets] = {}  # what acting runs (models/inference.py)
        self.versions: dict[int, int] = {}  # agent -> policy version of the weights loaded
        self.rng = np.random.default_rng(None if seed is None else [seed, 0x0FF])

    def load(self, agent: int, arrays: dict, version: int) -> None:
        """Raises ValueError on a wrong name or shape (the caller counts the drop)."""
        net = self.nets.get(agent)
        if net is None:
            net = build_nets(self.spec.for_agent(agent), self.cfg.ppo, self.cfg.mask, 1)
            net.requires_grad_(False)
        net.load_agent_state(0, arrays)
        self.nets[agent] = net
        self.fast[agent] = inference(net)
        self.versions[agent] = version

    def is_newer(self, agent: int, version: int) -> bool:
        """Last-value semantics: an older or repeated version is ignored."""
        return version > self.versions.get(agent, -1)

    def forget_versions(self) -> None:
        """A restarted learner numbers its versions anew: take whatever it sends next."""
        self.versions.clear()

    def forward(self, agent: int, obs: np.ndarray, actions: np.ndarray | None = None):
        """obs[B, ...] -> logits[B, A] (only the columns `actions` when given), value, m, mask value."""
        return self.fast[agent].forward(obs, actions)

    def values(self, agent: int, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """obs[B, ...] -> (value[B], mask value[B]): what bootstraps a cut-off fragment or episode."""
        _, value, _, mask_value = self.forward(agent, obs)
        return value, mask_value

    def opponent(self, agent: int, obs: np.ndarray, legal: np.ndarray) -> int:
        """A peer's move in a shared world: sampled from its policy; uniform random until its weights arrive."""
        if agent not in self.nets:
            return int(self.rng.choice(np.flatnonzero(legal)))
        cols = np.flatnonzero(legal)  # logits of the legal actions only (Dou Dizhu: a handful of 27,472)
        p = softmax_legal(self.fast[agent].logits(obs[None], cols), np.ones((1, len(cols)), bool))
        return int(cols[sample_rows(self.rng, p)[0]])
