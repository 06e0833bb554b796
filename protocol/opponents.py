"""Who plays the other seats of a shared world: the names `explain.opponent` takes and the training mixture
`env.opponents` (kind=weight pairs) and its draw. Whether an env has a built-in player is checked when the env
is built (actors/envs)."""
from __future__ import annotations

import re

import numpy as np

from magicmask.protocol.errors import ConfigError

OPPONENTS = ("peers", "self", "random")   # who plays the other seats in explanation episodes, besides built-ins
_PLAYER_NAME = re.compile(r"^[a-z][a-z0-9_]*(:[1-9])?$")


def check_opponent(text: str, field_name: str) -> None:
    """An opponent: one of OPPONENTS or a name of the form player or player:<depth 1-9> (connect4's lookahead
    and search:<depth>, doudizhu's rule); whether the env has that player is checked when the env is built."""
    if text in OPPONENTS or _PLAYER_NAME.match(text):
        return
    raise ConfigError(f"{field_name}={text!r}: allowed are {', '.join(OPPONENTS)} or one of the env's built-in "
                      f"players (connect4: lookahead, search:<depth 1-9>; doudizhu: rule)")


TRAINING_OPPONENTS = ("peers", "self", "league", "random")


class OpponentMix(dict):
    """{kind: probability}, and `draw`: the same draws as `rng.choice(kinds, p=probabilities)` (one uniform
    against the normalised cumulative probabilities) without its per-call checks and conversions, which made
    it 5x dearer; an actor draws once per episode of every copy."""

    def __init__(self, probabilities: dict[str, float]):
        super().__init__(probabilities)
        self.kinds = list(self)
        self.cdf = np.cumsum(list(self.values()))
        self.cdf /= self.cdf[-1]

    def draw(self, rng: np.random.Generator) -> str:
        return self.kinds[int(self.cdf.searchsorted(rng.random(), side="right"))]


def opponent_mix(text: str, field_name: str = "env.opponents") -> OpponentMix:
    """'peers=0.5,search:2=0.25,random=0.25' -> {kind: probability} (weights normalised to sum 1). Whether a
    built-in player exists in the env is checked when the env is built (actors/envs)."""
    mix: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",")):
        kind, _, weight = item.rpartition("=")
        try:
            w = float(weight)
        except ValueError:
            w = -1.0
        if not kind or not w >= 0 or kind in mix:
            raise ConfigError(f"{field_name}={text!r}: expected kind=weight pairs with weights >= 0, each kind once "
                              f"(e.g. peers=0.75,random=0.25); the bad item is {item!r}")
        if kind not in TRAINING_OPPONENTS:
            check_opponent(kind, field_name)   # a built-in player's name (random, lookahead, search:<depth>)
        mix[kind] = w
    total = sum(mix.values())
    if total <= 0:
        raise ConfigError(f"{field_name}={text!r}: the weights must not all be 0")
    return OpponentMix({k: w / total for k, w in mix.items()})
