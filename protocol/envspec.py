"""What every process must agree on about an environment, so receivers can validate array shapes."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from protocol.config import ConfigError

# Built-in environment names; the adapters live in actors/envs (protocol imports no other role).
BUILTIN_ENVS = ("gates", "connect4", "highway", "pong", "pong2")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def check_env_name(name: str) -> None:
    if name in BUILTIN_ENVS or _IMPORT_PATH.match(name):
        return
    raise ConfigError(f"env.name={name!r}: allowed are {', '.join(BUILTIN_ENVS)} or a PettingZoo env "
                      f"factory given as 'package.module:factory'")


@dataclass(frozen=True)
class EnvSpec:
    obs_shape: tuple[int, ...]
    obs_dtype: str          # numpy dtype name, e.g. "float32" or "uint8"
    n_actions: int
    n_agents: int           # agents the run trains
    shared_world: bool      # True: the agents act in one world (other seats played by peers)
    name: str = ""

    @property
    def obs_dim(self) -> int:
        n = 1
        for d in self.obs_shape:
            n *= d
        return n

    def to_dict(self) -> dict:
        d = asdict(self)
        d["obs_shape"] = list(self.obs_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EnvSpec":
        return cls(**{**d, "obs_shape": tuple(d["obs_shape"])})
