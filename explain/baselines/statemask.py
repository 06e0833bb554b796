"""StateMask (Cheng et al., NeurIPS 2023) in the simplified form of RICE (Cheng et al., ICML 2024).

What it does, per agent:
  - The target policy (run.policies[agent]) is FROZEN and acts greedily (argmax over legal actions), as the
    target in RICE's mask training does. It is part of the environment of the explanation MDP.
  - A post-hoc mask net with the agent's own architecture (`build_nets`: the same MLP, or the same Nature CNN
    torso for images, so that the baseline is not handicapped by a weaker network) whose mask head outputs one
    logit per state; P(keep | s) = sigmoid(logit). Only its mask head, mask critic and mask torso train.
    The mask action is keep/blind, with the code's convention
    **1 = keep** (the paper writes 1 = blind); on a blinded step the agent takes a uniform random legal
    action other than the target's greedy action (StateMask paper / DouZero; the target's own action when
    it is the only legal one).
  - RICE's simplification replaces StateMask's primal-dual lambda machinery by a reward bonus:
    the mask is rewarded r_t + alpha * 1[blind_t], alpha = cfg.mask.alpha (RICE used 0.01 on Hopper; the
    gates preset uses 0.05).
  - Trained with PPO: its own critic (the net's mask critic), GAE (gamma = cfg.ppo.gamma,
    lambda = cfg.mask.gae_lambda, the same as MAGIC-MASK's mask),
    the clipped objective (learner.batched_ppo.clipped_policy_loss with importance weight 1, i.e. plain PPO),
    value loss, a small entropy bonus (0.01, StateMask's Pong setting) and Adam; N_ENVS env copies made with
    run.make_env(agent, i) (shared worlds play the uniform random opponent), ROLLOUT steps per copy per
    update, EPOCHS passes of MINIBATCHES minibatches. Truncated episodes bootstrap with the mask critic.
  - Budget: cfg.explain.statemask_steps env steps in total (all copies), at least one update; the presets
    set it per environment with the StateMask paper's budgets as the reference (deploy/configs/).
  - Importance = P(keep | s) on the recorded episode's observations.

Not done (simplifications, as in RICE): no lambda step, no lasso / fused-lasso terms beyond the bonus,
no eta(pi_bar) estimate.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from magicmask.explain.baselines.base import Explainer, greedy_actions, random_other_legal, seeded
from magicmask.models.ppo_loss import bernoulli_logp, clipped_policy_loss, clipped_value_loss, normalize
from magicmask.models.gae import gae
from magicmask.models.networks import build_nets


class StateMaskExplainer(Explainer):
    name = "statemask"
    N_ENVS = 4
    ROLLOUT = 128       # steps per env copy per update
    EPOCHS = 4
    MINIBATCHES = 4
    ENT_COEF = 0.01
    CLIP = 0.2
    LR = 1e-3

    def _fit(self, run, agent, episodes, seed):
        cfg = self.cfg
        policy = run.policies[agent]
        envs = [run.make_env(agent, i) for i in range(self.N_ENVS)]
        spec = envs[0].spec
        gamma, lam, alpha = cfg.ppo.gamma, cfg.mask.gae_lambda, cfg.mask.alpha
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, agent, 0x57A7E])
        E, T = self.N_ENVS, self.ROLLOUT
        n_updates = max(1, int(np.ceil(cfg.explain.statemask_steps / (E * T))))
        self.steps_done = 0
        self.returns: list[float] = []          # env returns of the masked behaviour, for diagnostics
        with seeded(seed * 1000003 + agent):
            gen = torch.Generator().manual_seed(int(seed) * 7919 + agent)
            # a torso of its own whatever the agent's ppo.mask_torso: this post-hoc mask has no trained policy torso
            self.nets = build_nets(spec, replace(cfg.ppo, mask_torso="own"), cfg.mask, 1,
                                   seed=int(gen.initial_seed()) & 0x7FFFFFFF)
            params = self.nets.mask_parameters()
            self.n_params = sum(p.numel() for p in params)
            opt = torch.optim.Adam(params, lr=self.LR, eps=1e-5)

            ep_seed = int(rng.integers(2**31))
            obs, legal = [], []
            for env in envs:
                o, lg, _ = env.reset(seed=ep_seed)
                ep_seed += 1
                obs.append(o)
                legal.append(lg)
            ep_ret = np.zeros(E)
            for _ in range(n_updates):
                b_obs = np.zeros((T, E, *spec.obs_shape), spec.obs_dtype)
                b_blind = np.zeros((T, E), bool)
                b_logp = np.zeros((T, E), np.float32)
                b_val = np.zeros((T, E), np.float32)
                b_rew = np.zeros((T, E), np.float32)
                b_term = np.zeros((T, E), bool)
                b_trunc = np.zeros((T, E), bool)
                b_final = np.zeros((T, E), np.float32)
                for t in range(T):
                    o = np.stack(obs)
                    lg = np.stack(legal)
                    own = greedy_actions(policy.forward(o)[0], lg)
                    logit, value = self._mask(o, grad=False)
                    keep = torch.rand(E) < torch.sigmoid(logit)
                    blind = ~keep
                    b_obs[t], b_blind[t], b_val[t] = o, blind.numpy(), value.numpy()
                    b_logp[t] = bernoulli_logp(logit, blind).numpy()
                    for i, env in enumerate(envs):
                        a = random_other_legal(rng, lg[i], int(own[i])) if blind[i] else int(own[i])
                        o2, lg2, r, term, trunc, _ = env.step(a)
                        ep_ret[i] += r
                        b_rew[t, i] = r + alpha * float(blind[i])
                        b_term[t, i], b_trunc[t, i] = term, trunc
                        if term or trunc:
                            if trunc and not term:
                                b_final[t, i] = float(self._mask(np.asarray(o2)[None], grad=False)[1][0])
                            self.returns.append(float(ep_ret[i]))
                            ep_ret[i] = 0.0
                            o2, lg2, _ = env.reset(seed=ep_seed)
                            ep_seed += 1
                        obs[i], legal[i] = o2, lg2
                self.steps_done += E * T
                boot = self._mask(np.stack(obs), grad=False)[1]
                adv, ret = gae(torch.from_numpy(b_rew), torch.from_numpy(b_val), torch.from_numpy(b_term),
                               torch.from_numpy(b_trunc), torch.from_numpy(b_final), boot, gamma, lam)
                self._update(opt, params, b_obs.reshape(T * E, *spec.obs_shape),
                             torch.from_numpy(b_blind).reshape(-1), torch.from_numpy(b_logp).reshape(-1),
                             torch.from_numpy(b_val).reshape(-1), adv.reshape(-1), ret.reshape(-1), gen)
        for env in envs:
            env.close()
        self.nets.requires_grad_(False)
        self.env_steps = self.steps_done

    def _update(self, opt, params, obs, blind, logp_old, val_old, adv, ret, gen):
        n = obs.shape[0]
        for _ in range(self.EPOCHS):
            perm = torch.randperm(n, generator=gen)
            for idx in perm.tensor_split(self.MINIBATCHES):
                logit, value = self._mask(obs[idx.numpy()], grad=True)
                logp = bernoulli_logp(logit, blind[idx])
                a = normalize(adv[idx])
                pg = clipped_policy_loss(logp, logp_old[idx], logp_old[idx], a, self.CLIP, 1.0).mean()
                vl = clipped_value_loss(value, val_old[idx], ret[idx], 0.0).mean()
                p_keep = torch.sigmoid(logit)
                ent = -(p_keep * F.logsigmoid(logit) + (1 - p_keep) * F.logsigmoid(-logit)).mean()
                loss = pg + 0.5 * vl - self.ENT_COEF * ent
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 0.5)
                opt.step()

    def _mask(self, obs: np.ndarray, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask logit[B], mask value[B]) of the post-hoc net on observations obs[B, ...]."""
        with torch.set_grad_enabled(grad):
            _, _, logit, value = self.nets(torch.as_tensor(np.asarray(obs))[None])
        return logit[0], value[0]

    def keep_probability(self, obs: np.ndarray) -> np.ndarray:
        """P(keep | s) for observations obs[B, ...]."""
        return torch.sigmoid(self._mask(obs, grad=False)[0]).double().numpy()

    def _importance(self, ep):
        return self.keep_probability(ep.obs)


EXPLAINER = StateMaskExplainer   # what make_explainer('statemask') builds
