"""`gates`: the built-in ground truth, a per-agent world whose critical steps are known by construction.

An episode is L steps long. The observation is a one-hot of the step index plus a one-hot "cue" of A
values that is all zero except at a gate, where it shows the one correct action. At a gate the correct
action gives +1 and any other 0; at every other step all actions give 0. So exactly the gate steps are
critical, and explanations can be scored with precision and recall against `info["critical_steps"]`.

Some gates are shared (the same steps for every agent, and with the same episode seed the same
observations: shared critical states); each agent also has one private gate at a step derived from its
id. The correct actions are drawn from the episode's seeded RNG, independent of the agent, so the policy
must read the cue (a linear map: PPO learns it in seconds).
"""
from __future__ import annotations

import numpy as np

from magicmask.actors.envs.base import AgentEnv
from magicmask.protocol.envspec import EnvSpec

SHARED_COLOUR = np.array([230, 150, 30], np.uint8)    # orange: gates every agent has
PRIVATE_COLOUR = np.array([60, 120, 230], np.uint8)   # blue: this agent's own gate
PLAIN_COLOUR = np.array([200, 200, 200], np.uint8)
DONE_COLOUR = np.array([120, 120, 120], np.uint8)
CURSOR_COLOUR = np.array([220, 30, 30], np.uint8)


def private_gate_step(agent_id: int, length: int, shared: tuple[int, ...]) -> int | None:
    """The private gate's step: 5 + (3 * agent_id) % (L - 7), moved forward past shared gates."""
    if length < 8:
        cand = [s for s in range(length) if s not in shared]
        return cand[agent_id % len(cand)] if cand else None
    s = 5 + (3 * agent_id) % (length - 7)
    for k in range(length):
        c = (s + k) % length
        if c not in shared:
            return c
    return None


class GatesEnv(AgentEnv):
    """Fixed-length episodes; a few gate steps where exactly one action (shown by the cue) earns +1."""

    def __init__(self, agent_id: int = 0, n_agents: int = 1, length: int = 16, n_actions: int = 4,
                 shared_gates=(3, 10), private_gate: bool = True, noise: int = 0, max_episode_steps: int = 0):
        super().__init__(agent_id, max_episode_steps)
        length, n_actions, noise = int(length), int(n_actions), int(noise)
        if length < 1:
            raise ValueError(f"gates: length={length} must be >= 1")
        if n_actions < 2:
            raise ValueError(f"gates: n_actions={n_actions} must be >= 2 (a gate needs a wrong action)")
        if noise < 0:
            raise ValueError(f"gates: noise={noise} must be >= 0")
        shared = tuple(sorted({int(s) for s in shared_gates}))
        bad = [s for s in shared if not 0 <= s < length]
        if bad:
            raise ValueError(f"gates: shared_gates {bad} are outside the episode's steps 0..{length - 1}")
        self.length, self.n_actions, self.noise = length, n_actions, noise
        self.shared_gates = shared
        self.private_gate = private_gate_step(agent_id, length, shared) if private_gate else None
        gates = set(shared) | ({self.private_gate} if self.private_gate is not None else set())
        self.critical_steps = sorted(gates)
        self._is_gate = np.zeros(length, bool)
        self._is_gate[self.critical_steps] = True
        self.spec = EnvSpec(obs_shape=(length + n_actions + noise,), obs_dtype="float32", n_actions=n_actions,
                            n_agents=int(n_agents), shared_world=False, name="gates")
        self._all_legal = np.ones(n_actions, bool)
        self._pos = 0
        self._correct = np.zeros(length, np.int64)
        self._noise = np.zeros((length + 1, noise), np.float32)
        self._hits: list[tuple[int, bool]] = []   # (gate step, answered correctly) this episode

    def _obs(self) -> np.ndarray:
        L, A = self.length, self.n_actions
        o = np.zeros(L + A + self.noise, np.float32)
        if self._pos < L:
            o[self._pos] = 1.0
            if self._is_gate[self._pos]:
                o[L + self._correct[self._pos]] = 1.0
        if self.noise:
            o[L + A:] = self._noise[self._pos]
        return o

    def _reset(self, seed: int):
        rng = np.random.default_rng(seed)
        # one draw per step, whatever this agent's gate set: two agents with the same seed get the same
        # correct action (and the same observation) at every shared gate
        self._correct = rng.integers(self.n_actions, size=self.length)
        if self.noise:
            self._noise = rng.random((self.length + 1, self.noise), dtype=np.float32)
        self._pos = 0
        self._hits = []
        return self._obs(), self._all_legal.copy(), {"critical_steps": list(self.critical_steps)}

    def _step(self, action: int):
        p = self._pos
        critical = bool(self._is_gate[p])
        reward = 0.0
        if critical:
            ok = action == self._correct[p]
            reward = 1.0 if ok else 0.0
            self._hits.append((p, bool(ok)))
        self._pos = p + 1
        term = self._pos >= self.length
        return self._obs(), self._all_legal.copy(), reward, term, False, {"critical": critical}

    def _episode_stats(self, terminated: bool, truncated: bool) -> dict[str, float]:
        stats = {}
        for key, keep in (("gate_accuracy", lambda s: True), ("shared_gate_accuracy", lambda s: s in self.shared_gates),
                          ("private_gate_accuracy", lambda s: s == self.private_gate)):
            hits = [ok for s, ok in self._hits if keep(s)]
            if hits:
                stats[key] = float(np.mean(hits))
        return stats

    def render(self) -> np.ndarray:
        """A row of L cells (orange: shared gates, blue: this agent's private gate, grey: plain; darker once
        passed) with the current position marked by a red bar underneath; the cue's action is drawn as
        a white dot at the position A slots across the gate cell."""
        cell, pad = 20, 2
        L = self.length
        img = np.full((cell + 12, L * cell, 3), 255, np.uint8)
        for s in range(L):
            colour = SHARED_COLOUR if s in self.shared_gates else PRIVATE_COLOUR if s == self.private_gate else PLAIN_COLOUR
            if s < self._pos:
                colour = (colour.astype(np.int32) * 6 // 10).astype(np.uint8)
            x0 = s * cell
            img[pad:cell - pad, x0 + pad:x0 + cell - pad] = colour
            if self._is_gate[s] and s == self._pos:   # the cue: which action is correct here
                a = int(self._correct[s])
                w = (cell - 2 * pad) // self.n_actions
                xa = x0 + pad + a * w
                img[cell // 2 - 2:cell // 2 + 2, xa:xa + max(w, 1)] = 255
        if self._pos < L:
            x0 = self._pos * cell
            img[cell + 3:cell + 9, x0 + pad:x0 + cell - pad] = CURSOR_COLOUR
        return img
