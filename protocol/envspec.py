"""What every process must agree on about an environment, so receivers can validate array shapes."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from magicmask.protocol.errors import ConfigError
from magicmask.protocol.import_path import IMPORT_PATH

# The one list of built-in environments: name -> its adapter class as 'module:Class'. A string, imported by the
# registry in actors/envs on first use (protocol imports no role, and an env's heavy dependencies load only when
# it is asked for). Every adapter takes (agent_id, n_agents, max_episode_steps=..., **env.kwargs).
BUILTIN_ENVS = {
    "gates": "magicmask.actors.envs.gates:GatesEnv",
    "connect4": "magicmask.actors.envs.connect4:Connect4Env",
    "highway": "magicmask.actors.envs.highway:HighwayAgentEnv",
    "pong": "magicmask.actors.envs.pong:PongEnv",
    "pong2": "magicmask.actors.envs.pong2:Pong2Env",
    "doudizhu": "magicmask.actors.envs.doudizhu:DouDizhuEnv",
    "grf-3v1": "magicmask.actors.envs.football:FootballEnv",
}


def check_env_name(name: str) -> None:
    if name in BUILTIN_ENVS or IMPORT_PATH.match(name):
        return
    raise ConfigError(f"env.name={name!r}: allowed are {', '.join(BUILTIN_ENVS)} or a PettingZoo env "
                      f"factory given as 'package.module:factory'")


@dataclass(frozen=True)
class EnvSpec:
    """One agent's view of the run's environment, plus what every agent's networks need.

    `obs_shape` is the observation shape of the agent whose env reports the spec (agent 0 for the run's spec
    from `env_spec(cfg)`). When agents see differently shaped observations (Dou Dizhu: the landlord 790
    values, the peasants 901) `agent_obs_shapes` lists every agent's, and agents of one shape form a network
    group (`groups()`): the learner stacks the networks of a group and updates each group in one pass. It is
    None when every agent shares `obs_shape`, so such specs (and their checkpoints) read as they always did.
    A 3-d `obs_shape` is an image, channels first (C, H, W), uint8: networks give it a CNN torso (the only
    reader of this convention is `models.networks.image_shape`).
    `action_features` names a fixed per-action feature table (learner/action_features.py) that the
    "features" policy head scores actions with; "" when the env has none.
    `board_shape` (H, W, C) says that the flat observation is a board of H x W cells with C planes, flattened
    in that order (PettingZoo's board games, e.g. Connect Four's (6, 7, 2)); `ppo.board_filters` reads it with
    a convolution. () when the observation is not a board.
    `mirror_actions` is the permutation of action ids under the board's left-right mirror (Connect Four's columns:
    c -> 6 - c), for envs whose game is the same mirrored; `ppo.mirror` reads it. () when the env declares none.
    """
    obs_shape: tuple[int, ...]
    obs_dtype: str          # numpy dtype name, e.g. "float32" or "uint8"; the same for every agent
    n_actions: int
    n_agents: int           # agents the run trains
    shared_world: bool      # True: the agents act in one world (other seats played by peers)
    name: str = ""
    agent_obs_shapes: tuple[tuple[int, ...], ...] | None = None
    action_features: str = ""
    board_shape: tuple[int, ...] = ()
    mirror_actions: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "obs_shape", tuple(int(d) for d in self.obs_shape))
        object.__setattr__(self, "board_shape", tuple(int(d) for d in self.board_shape))
        object.__setattr__(self, "mirror_actions", tuple(int(a) for a in self.mirror_actions))
        if self.mirror_actions and (not self.board_shape or sorted(self.mirror_actions) != list(range(self.n_actions))):
            raise ValueError(f"EnvSpec.mirror_actions={self.mirror_actions}: a permutation of the {self.n_actions} "
                             f"action ids, for an env with a board_shape (it has {self.board_shape or 'none'})")
        if self.board_shape and (len(self.board_shape) != 3 or math.prod(self.board_shape) != self.obs_dim):
            raise ValueError(f"EnvSpec.board_shape={self.board_shape}: (H, W, C) with H*W*C = the observation's "
                             f"{self.obs_dim} values")
        shapes = self.agent_obs_shapes
        if shapes is None:
            return
        shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        if len(shapes) != self.n_agents:
            raise ValueError(f"EnvSpec.agent_obs_shapes has {len(shapes)} shapes for n_agents={self.n_agents}")
        if self.obs_shape not in shapes:
            raise ValueError(f"EnvSpec.obs_shape={self.obs_shape} is none of agent_obs_shapes={shapes}")
        # one shape for all: the plain single-group spec, equal (and serialised) as if none were given
        object.__setattr__(self, "agent_obs_shapes", None if len(set(shapes)) == 1 else shapes)

    @property
    def obs_dim(self) -> int:
        n = 1
        for d in self.obs_shape:
            n *= d
        return n

    def for_agent(self, agent: int) -> "EnvSpec":
        """Agent `agent`'s own spec: the same, with its observation shape (what its env reports)."""
        if not 0 <= agent < self.n_agents:
            raise IndexError(f"agent {agent} not in 0..{self.n_agents - 1}")
        if self.agent_obs_shapes is None:
            return self
        return replace(self, obs_shape=self.agent_obs_shapes[agent])

    def groups(self) -> list[tuple[tuple[int, ...], list[int]]]:
        """[(obs_shape, agent ids)]: agents that share an observation shape, groups ordered by their first
        agent, ids ascending. One group [(obs_shape, [0 .. n-1])] when all agents share it."""
        shapes = self.agent_obs_shapes or (self.obs_shape,) * self.n_agents
        out: dict[tuple[int, ...], list[int]] = {}
        for agent, shape in enumerate(shapes):
            out.setdefault(shape, []).append(agent)
        return list(out.items())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["obs_shape"] = list(self.obs_shape)
        if self.agent_obs_shapes is None:
            del d["agent_obs_shapes"]   # absent, not null: single-group specs serialise as before
        else:
            d["agent_obs_shapes"] = [list(s) for s in self.agent_obs_shapes]
        if not self.action_features:
            del d["action_features"]
        if self.board_shape:
            d["board_shape"] = list(self.board_shape)
        else:
            del d["board_shape"]   # absent when not a board: such specs serialise as before
        if self.mirror_actions:
            d["mirror_actions"] = list(self.mirror_actions)
        else:
            del d["mirror_actions"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EnvSpec":
        shapes = d.get("agent_obs_shapes")
        return cls(**{**d, "obs_shape": tuple(d["obs_shape"]), "board_shape": tuple(d.get("board_shape", ())),
                      "mirror_actions": tuple(d.get("mirror_actions", ())),
                      "agent_obs_shapes": None if shapes is None else tuple(tuple(s) for s in shapes)})
