"""Tiny PettingZoo envs for the tests, loaded by import path ('tests.envs.toy_envs:make_...') as a user's env
would be. Not a test module: test modules import nothing from each other."""
import numpy as np
from gymnasium import spaces
from pettingzoo.utils.env import ParallelEnv


class TinyParallel(ParallelEnv):
    """3 seats; each step a seat earns 1 if its action equals (step % 3) (shown in its observation); ends
    after n_steps steps."""
    metadata = {"name": "tiny_parallel"}

    def __init__(self, n_steps=5):
        self.possible_agents = ["a", "b", "c"]
        self.n_steps = n_steps
        self.calls = []

    def observation_space(self, agent):
        return spaces.Box(0, 1, (2, 3), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(3)

    def _obs(self):
        o = np.zeros((2, 3), np.float32)
        o[0, self.t % 3] = 1
        return {a: o.copy() for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = self.possible_agents[:], 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents)
        self.calls.append(dict(actions))
        rewards = {a: float(actions[a] == self.t % 3) for a in self.agents}
        self.t += 1
        done = self.t >= self.n_steps
        obs = self._obs()
        terms = {a: done for a in self.agents}
        truncs = {a: False for a in self.agents}
        infos = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def make_parallel(n_steps=5):
    return TinyParallel(n_steps)


class BoxActions(TinyParallel):
    def action_space(self, agent):
        return spaces.Box(-1, 1, (2,), np.float32)


def make_box_actions():
    return BoxActions()


class TinyImages(TinyParallel):
    """TinyParallel seen as channels-last uint8 images (side x side x 3): the target action (step % 3) is a
    bright vertical band in third number (step % 3) of the image, in channel (seat index), so every seat sees
    its own picture."""
    metadata = {"name": "tiny_images"}

    def __init__(self, n_steps=5, side=36):
        super().__init__(n_steps)
        self.side = side

    def observation_space(self, agent):
        return spaces.Box(0, 255, (self.side, self.side, 3), np.uint8)

    def _obs(self):
        out = {}
        third = self.side // 3
        for k, a in enumerate(self.possible_agents):
            if a in self.agents:
                img = np.zeros((self.side, self.side, 3), np.uint8)
                img[:, (self.t % 3) * third:(self.t % 3 + 1) * third, k] = 255
                out[a] = img
        return out


def make_images(n_steps=5, side=36):
    return TinyImages(n_steps, side)


class TeamGates(ParallelEnv):
    """A cooperative Parallel env with known critical steps, for the ground-truth passthrough: 3 seats, episodes
    of `n_steps` steps; the observation is the step as a one-hot. At the shared gate (step `shared`) every seat
    must play action 1, and at its private gate (step private + seat index) a seat must play action 2; every
    satisfied gate earns each seat 1 (a team reward), every other action at every other step is irrelevant.
    info[seat]["critical"] is True exactly at that seat's gates, so the shared step is critical for all."""
    metadata = {"name": "team_gates"}
    render_mode = None

    def __init__(self, n_steps=10, shared=3, private=5):
        self.possible_agents = ["a", "b", "c"]
        self.n_steps, self.shared, self.private = n_steps, shared, private

    def observation_space(self, agent):
        return spaces.Box(0, 1, (self.n_steps + 1,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(3)

    def gates(self, agent) -> dict[int, int]:
        """{step: the action that step needs} for one seat."""
        return {self.shared: 1, self.private + self.possible_agents.index(agent): 2}

    def _obs(self):
        o = np.zeros(self.n_steps + 1, np.float32)
        o[self.t] = 1
        return {a: o.copy() for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = self.possible_agents[:], 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        kept = sum(actions[a] == self.gates(a)[self.t] for a in self.agents if self.t in self.gates(a))
        infos = {a: {"critical": self.t in self.gates(a)} for a in self.agents}
        self.t += 1
        done = self.t >= self.n_steps
        obs = self._obs()
        rewards = {a: float(kept) for a in self.agents}
        terms = {a: done for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, {a: False for a in terms}, infos


def make_team_gates(n_steps=10):
    return TeamGates(n_steps)


def make_team_gates_aec(n_steps=10):
    """The same game as an AEC env (PettingZoo's parallel_to_aec): the transition, with its infos, happens
    when the last seat of a round has moved."""
    from pettingzoo.utils.conversions import parallel_to_aec
    return parallel_to_aec(TeamGates(n_steps))
