"""The environment registry: `make_env` builds one agent's env copy by `cfg.env.name`, `env_spec` reads the
spec every process must agree on, before any process starts (a bad env fails here, clearly)."""
from __future__ import annotations

import importlib
import inspect

from magicmask.actors.envs.base import AgentEnv, random_legal
from magicmask.protocol.config import Config, ConfigError
from magicmask.protocol.opponents import OPPONENTS, TRAINING_OPPONENTS, opponent_mix
from magicmask.protocol.envspec import BUILTIN_ENVS, EnvSpec, check_env_name


RESERVED_KWARGS = ("agent_id", "n_agents", "max_episode_steps")


def _adapter_class(cls_path: str) -> type[AgentEnv]:
    mod, name = cls_path.split(":")
    return getattr(importlib.import_module(mod), name)


def _allowed_kwargs(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [p for p in sig.parameters if p not in ("self", *RESERVED_KWARGS)]


def make_env(cfg: Config, agent_id: int, copy_index: int = 0, replayable: bool = False) -> AgentEnv:
    """One env copy for `agent_id`: built-in by name, else a PettingZoo factory 'package.module:factory'.
    Honours cfg.env.max_episode_steps (truncation) and cfg.env.kwargs. `copy_index` tells copies apart
    (kept on the env as `copy_index`; episodes are seeded by reset, so copies never share randomness).
    `replayable`: the caller replays episodes from their seed (the explanation); a built-in env that trades
    that for speed in training takes a `replayable` keyword (pong's envpool backend), set True here."""
    name, kwargs = cfg.env.name, dict(cfg.env.kwargs or {})
    check_env_name(name)
    if name in BUILTIN_ENVS:
        cls = _adapter_class(BUILTIN_ENVS[name])
        allowed = _allowed_kwargs(cls)
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ConfigError(f"env.kwargs for {name!r}: unknown {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(allowed)}")
        if replayable and "replayable" in allowed:
            kwargs["replayable"] = True
        try:
            env = cls(agent_id, cfg.run.agents, max_episode_steps=cfg.env.max_episode_steps, **kwargs)
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"env {name!r} with env.kwargs={kwargs!r}: {e}") from e
    else:
        from magicmask.actors.envs.pettingzoo_env import make_pettingzoo
        env = make_pettingzoo(name, agent_id, cfg.run.agents, kwargs, cfg.env.max_episode_steps)
    env.copy_index = copy_index
    return env


def env_spec(cfg: Config) -> EnvSpec:
    """The run's EnvSpec, read from agent 0's env; any failure to build it is a ConfigError naming why."""
    try:
        env = make_env(cfg, 0)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"env.name={cfg.env.name!r}: cannot build the environment: {type(e).__name__}: {e}") from e
    check_players(cfg, env)
    spec = env.spec
    env.close()
    return spec


def check_players(cfg: Config, env: AgentEnv) -> None:
    """The built-in players that env.opponents and explain.opponent name must exist in this env, and league
    opponents need agents that can take each other's seats (one network group)."""
    mix = opponent_mix(cfg.env.opponents) if env.per_episode_opponent else {}   # else the peers always play
    wanted = [("env.opponents", k) for k in mix if k not in TRAINING_OPPONENTS]
    if cfg.explain.opponent not in OPPONENTS:
        wanted.append(("explain.opponent", cfg.explain.opponent))
    for field_name, name in wanted:
        if name.partition(":")[0] not in env.builtin_players:
            raise ConfigError(f"{field_name}: env {env.spec.name!r} has no built-in player {name!r}; its players: "
                              f"{', '.join(env.builtin_players) or 'none'}")
    if "league" in mix and len(env.spec.groups()) > 1:
        raise ConfigError(f"env.opponents={cfg.env.opponents!r}: league opponents need agents of one network "
                          f"group; env {env.spec.name!r} has {len(env.spec.groups())}")


__all__ = ["AgentEnv", "make_env", "env_spec", "random_legal"]
