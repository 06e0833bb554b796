"""The LazyMDP gap (Jacq et al. 2022, as StateMask uses it as a baseline):
importance(s) = max_a Q(s, a) - mean_a Q(s, a), both over the LEGAL actions of s.

With a uniform default policy this is also Huang et al.'s criticality. Our policies are PPO agents without a
Q head, so Q is approximated post hoc on the frozen policy's data, exactly as follows:

  1. Data: COLLECT_STEPS env steps (run.make_env(agent): the other seats as explain.opponent says),
     acting with the frozen policy's greedy action, replaced with probability EPSILON by a uniform random
     legal action so that every action is tried in the states the policy visits. Stored per step:
     (s, legal, a, r, s', legal', terminated, truncated). Episode seeds come from the fit seed.
  2. Q head: a network of the agent's own architecture (`build_nets`: the same MLP, or the Nature CNN torso for
     images), whose policy head gives Q(s, .) over the actions.
  3. Fitted Q evaluation of the GREEDY target policy pi (the policy the recorded episodes show), for
     max(cfg.explain.lazymdp_epochs, the longest episode seen) iterations: value travels one step back per
     iteration, so fewer than an episode's length would leave the early steps blind to its outcome. Each
     iteration freezes a copy Q_tgt of the head and regresses, over the
     whole data set in shuffled minibatches (Adam, Huber loss),
         Q(s, a) <- r + gamma * (1 - terminated) * Q_tgt(s', pi(s'))
     (gamma = cfg.ppo.gamma; a truncated step bootstraps from its real final observation). Before the first
     epoch the targets use Q_tgt = 0 for every action (so epoch 1 fits the immediate reward) - k epochs
     propagate k steps of the policy's return, the standard FQE iteration.
  4. importance = the gap of the fitted head on the recorded observations.

Every pass computes only the Q columns it needs (the actions taken, the target policy's actions, the actions
legal somewhere in the episode): Dou Dizhu's features head scores each of its 27,472 actions through an encoder,
and all of them per minibatch made the fit take hours; on dense heads the values are the same.

The gap is non-negative by construction, so StateMask's absolute value is a no-op here.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from magicmask.explain.baselines.base import Explainer, greedy_actions, seeded
from magicmask.models.networks import build_nets


def legal_gap(q: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """max_a Q - mean_a Q over the legal actions of each row ([B, A] -> [B]); 0 where no action is legal."""
    legal = legal.astype(bool)
    n = legal.sum(-1)
    qmax = np.where(legal, q, -np.inf).max(-1)
    qmean = np.where(legal, q, 0.0).sum(-1) / np.maximum(n, 1)
    return np.where(n > 0, qmax - qmean, 0.0)


class LazyMDPExplainer(Explainer):
    name = "lazymdp"
    COLLECT_STEPS = 4000
    EPSILON = 0.3
    BATCH = 256
    LR = 1e-3

    def _fit(self, run, agent, episodes, seed):
        cfg = self.cfg
        policy = run.policies[agent]
        env = run.make_env(agent)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, agent, 0x1A2D])
        S, L, A, R, S2, L2, TERM = [], [], [], [], [], [], []
        ep_seed = int(rng.integers(2**31))
        o, lg, _ = env.reset(seed=ep_seed)
        longest = max((ep.length for ep in episodes), default=1)
        ep_len = 0
        for _ in range(self.COLLECT_STEPS):
            own = int(greedy_actions(policy.forward(o[None])[0], lg[None])[0])
            a = int(np.flatnonzero(lg)[rng.integers(lg.sum())]) if rng.random() < self.EPSILON else own
            o2, lg2, r, term, trunc, _ = env.step(a)
            S.append(np.asarray(o)); L.append(lg); A.append(a); R.append(r)
            S2.append(np.asarray(o2)); L2.append(lg2); TERM.append(term)
            ep_len += 1
            if term or trunc:
                longest, ep_len = max(longest, ep_len), 0
                ep_seed += 1
                o2, lg2, _ = env.reset(seed=ep_seed)
            o, lg = o2, lg2
        env.close()
        self.env_steps, self.iterations = self.COLLECT_STEPS, max(cfg.explain.lazymdp_epochs, longest)
        s, a, r = torch.from_numpy(np.stack(S)), torch.tensor(A), torch.tensor(R, dtype=torch.float32)
        s2 = np.stack(S2)
        not_term = 1.0 - torch.tensor(TERM, dtype=torch.float32)
        # the target policy's greedy action in s' (fixed: the policy is frozen)
        next_a = torch.from_numpy(greedy_actions(policy.forward(s2)[0], np.stack(L2)))
        s2 = torch.from_numpy(s2)
        gamma, n = cfg.ppo.gamma, len(A)
        with seeded(seed * 1000003 + agent + 17):
            gen = torch.Generator().manual_seed(int(seed) * 7919 + agent + 17)
            self.q = build_nets(env.spec, cfg.ppo, cfg.mask, 1, seed=int(gen.initial_seed()) & 0x7FFFFFFF)
            params = self.q.policy_parameters()
            self.n_params = sum(p.numel() for p in params)
            opt = torch.optim.Adam(params, lr=self.LR)
            self.losses = []
            for epoch in range(self.iterations):
                with torch.no_grad():
                    if epoch == 0:
                        target = r.clone()
                    else:
                        q_tgt = copy.deepcopy(self.q)
                        q_next = self._q_taken(q_tgt, s2, next_a)
                        target = r + gamma * not_term * q_next
                total = 0.0
                for idx in torch.randperm(n, generator=gen).split(self.BATCH):
                    pred = self._q_taken(self.q, s[idx], a[idx])
                    loss = F.smooth_l1_loss(pred, target[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                self.losses.append(total / n)
        self.q.requires_grad_(False)

    @staticmethod
    def _q(nets, obs: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Q(s, .) [B, A], or only the columns `actions` (sorted ids) [B, len(actions)]: the policy head of a
        network of the agent's architecture."""
        return nets(obs[None], actions=actions)[0][0]

    @classmethod
    def _q_taken(cls, nets, obs: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Q(s_i, a_i) [B], computing only the distinct actions in `acts`."""
        ids, column = torch.unique(acts, return_inverse=True)   # sorted ids; column of each a_i among them
        return cls._q(nets, obs, ids).gather(1, column[:, None])[:, 0]

    def q_values(self, obs: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """The fitted Q(s, .) for observations obs[B, ...] -> [B, A], or [B, len(actions)] for sorted ids."""
        cols = None if actions is None else torch.as_tensor(np.asarray(actions, np.int64))
        with torch.no_grad():
            return self._q(self.q, torch.as_tensor(np.asarray(obs)), cols).double().numpy()

    def _importance(self, ep):
        cols = np.flatnonzero(ep.legal.any(0))   # the actions legal anywhere in the episode
        return legal_gap(self.q_values(ep.obs, cols), ep.legal[:, cols])


EXPLAINER = LazyMDPExplainer   # what make_explainer('lazymdp') builds
