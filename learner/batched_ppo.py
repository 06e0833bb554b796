"""Decoupled PPO for the policy and for the mask, every agent of a group in one forward/backward pass.

Read top to bottom: the small pure loss pieces, the optimizer (Adam with per-agent state, so an agent that
sits out an update keeps its parameters and moments exactly), then `BatchedPPO.update`:

  prepare():  GAE for the policy (env reward) and the mask (r + alpha * perturbed), and the proximal
              policy pi_prox / mask prox = the nets at the start of the update, recomputed on the batch
  loop:       epochs x minibatches; one forward over all agents' slices (baddbmm), the per-agent losses
              summed (each agent's gradient is that of its own loss), per-agent grad-norm clip, Adam step
              on the agents in the update only

Batch arrays have a leading agent axis n = len(agents): [n, T, E, ...] (docs/ARCHITECTURE.md, "Batches"),
`boot_values` and `boot_mask_values` are [n, E].

`masked[T,E]` (optional in the batch) says the mask's coin was part of the behaviour distribution of the
step: a masked copy, after the warm-up, not guided (epsilon may still have fired on top). When it is
absent it is taken as (mask_applied | eps_random) & ~guided, which is exact when every copy is masked and
otherwise counts epsilon-random steps of unmasked copies as masked. It only enters KL(pi || mu).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from magicmask.models.gae import gae
from magicmask.models.networks import StackedNets, masked_logits
from magicmask.models.ppo_loss import (action_columns, bernoulli_entropy, bernoulli_logp, clipped_policy_loss, clipped_value_loss, kl_pi_mu,
                              legal_entropy, masked_mean, normalize)

REQUIRED = ("obs", "actions", "legal", "logp_mu", "values", "mask_values", "rewards", "terminated", "truncated",
            "final_values", "final_mask_values", "boot_values", "boot_mask_values", "m", "perturbed",
            "mask_applied", "eps_random", "guided", "eps")


# ---------------------------------------------------------------- optimizer
class StackedAdam(torch.optim.Optimizer):
    """Adam (torch.optim.Adam's arithmetic) over stacked parameters [N, ...] with per-agent state: the
    step count is a vector over agents, and `step(sel)` updates only the selected agents' slices of the
    parameters and moments. Other agents keep parameters, moments and step counts bit for bit."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-5):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, sel=slice(None)):
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["agent_step"] = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                shape = (-1,) + (1,) * (p.dim() - 1)
                if isinstance(sel, slice):   # every agent (the usual update): in place, no gathered copies
                    g, t, m, v = p.grad, st["agent_step"].add_(1), st["exp_avg"], st["exp_avg_sq"]
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                else:
                    g, t = p.grad[sel], st["agent_step"][sel] + 1
                    m = st["exp_avg"][sel] * b1 + (1 - b1) * g
                    v = st["exp_avg_sq"][sel] * b2 + (1 - b2) * g * g
                bias_c1 = (1 - b1 ** t).view(shape)
                bias_c2_sqrt = (1 - b2 ** t).sqrt().view(shape)
                step = (m * (lr / bias_c1)).div_(v.sqrt().div_(bias_c2_sqrt).add_(eps))   # two temporaries
                if isinstance(sel, slice):
                    p.sub_(step)
                else:
                    p[sel] = p[sel] - step
                    st["agent_step"][sel], st["exp_avg"][sel], st["exp_avg_sq"][sel] = t, m, v


# ---------------------------------------------------------------- the learner's update
class BatchedPPO:
    STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "mask_loss", "mask_value_loss",
             "keep_rate", "perturb_share", "kl_pi_mu", "explained_variance", "is_weight_mean")

    def __init__(self, nets: StackedNets, ppo_cfg, mask_cfg, device="cpu", seed: int = 0):
        self.device = torch.device(device)
        self.nets = nets.to(self.device)
        self.ppo, self.mask = ppo_cfg, mask_cfg
        # One Adam over the stacked parameters, eps 1e-5 (CleanRL); two groups with their own learning rates
        self.optimizer = StackedAdam([
            {"params": nets.policy_parameters(), "lr": ppo_cfg.lr, "base_lr": ppo_cfg.lr, "name": "policy"},
            {"params": nets.mask_parameters(), "lr": mask_cfg.lr, "base_lr": mask_cfg.lr, "name": "mask"},
        ], eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)  # minibatch permutations (CPU, reproducible)

    def selection(self, agents: list[int]):
        """slice(None) when the update covers every agent in order (no gather), else an index tensor."""
        agents = [int(a) for a in agents]
        n_all = self.nets.n_agents
        if not agents or len(set(agents)) != len(agents) or not all(0 <= a < n_all for a in agents):
            raise ValueError(f"agents={agents}: expected distinct agent ids in 0..{n_all - 1}")
        if agents == list(range(n_all)):
            return slice(None)
        return torch.tensor(agents, device=self.device)

    def run_nets(self, obs, legal, actions, sel):
        """One forward of every network, the policy over the actions legal somewhere in the (mini)batch
        (`action_columns`). Returns the legal-masked log pi over those columns [n, B, K], the legal mask over
        them, log pi of `actions` [n, B], the value, the mask's keep logit and the mask's value."""
        cols = action_columns(legal)
        logits, value, mask_logit, mask_value = self.nets(obs, sel, cols)
        if cols is not None:
            legal, actions = legal[..., cols], torch.searchsorted(cols, actions)
        logp_all = F.log_softmax(masked_logits(logits, legal), -1)
        logp = logp_all.gather(-1, actions[..., None]).squeeze(-1)
        return logp_all, legal, logp, value, mask_logit, mask_value

    # ---- before the epochs: advantages, returns, the proximal policies, batch statistics
    @torch.no_grad()
    def prepare(self, batch: dict[str, torch.Tensor], sel):
        """Returns (data, stats): data holds flat per-agent samples [n, S=T*E, ...], stats [n] tensors."""
        missing = [k for k in REQUIRED if k not in batch]
        if missing:
            raise ValueError(f"batch is missing arrays {missing}")
        n, T, E = batch["actions"].shape
        for k in REQUIRED:
            want = (n, E) if k.startswith("boot_") else (n, T, E)
            if tuple(batch[k].shape[:len(want)]) != want:
                raise ValueError(f"batch array {k!r} has shape {tuple(batch[k].shape)}, expected {want}+...")
        dt = self.nets.dtype
        b = {k: v.to(self.device) for k, v in batch.items()}
        f = {k: b[k].to(dt) for k in ("rewards", "values", "mask_values", "final_values", "final_mask_values",
                                      "boot_values", "boot_mask_values", "logp_mu", "m", "eps")}
        ppo, mcfg = self.ppo, self.mask

        # GAE on the env reward with the policy critic (the values recorded with the fragment, so values,
        # final values and the bootstrap come from one set of weights); truncation bootstraps (learner/gae.py)
        adv, ret = gae(f["rewards"], f["values"], b["terminated"], b["truncated"], f["final_values"],
                       f["boot_values"], ppo.gamma, ppo.gae_lambda, time_dim=1)
        # The mask's MDP: reward r_t + alpha * perturb_t, its own critic (the value of the masked behaviour) and
        # GAE; with mask.critic=policy the advantages use the policy's critic instead (a perturbation is scored
        # by what it costs the policy)
        mask_rewards = f["rewards"] + mcfg.alpha * b["perturbed"].to(dt)
        madv, mret = gae(mask_rewards, f["mask_values"], b["terminated"], b["truncated"], f["final_mask_values"],
                         f["boot_mask_values"], ppo.gamma, mcfg.gae_lambda, time_dim=1)
        if mcfg.critic == "policy":
            madv, _ = gae(mask_rewards, f["values"], b["terminated"], b["truncated"], f["final_values"],
                          f["boot_values"], ppo.gamma, mcfg.gae_lambda, time_dim=1)
        masked = b["masked"] if "masked" in b else (b["mask_applied"] | b["eps_random"]) & ~b["guided"]

        def flat(x):  # [n, T, E, ...] -> [n, T*E, ...]
            return x.reshape(n, T * E, *x.shape[3:])
        d = {"obs": flat(b["obs"]), "legal": flat(b["legal"].bool()), "actions": flat(b["actions"].long()),
             "logp_mu": flat(f["logp_mu"]), "values": flat(f["values"]), "mask_values": flat(f["mask_values"]),
             "adv": flat(adv), "ret": flat(ret), "mask_adv": flat(madv), "mask_ret": flat(mret), "m": flat(f["m"]),
             "eps": flat(f["eps"]), "perturbed": flat(b["perturbed"].bool()),
             "mask_applied": flat(b["mask_applied"].bool()), "masked": flat(masked.bool()),
             "guided": flat(b["guided"].bool())}
        # Steps the mask learns from: where its coin decided the action, and (mask.learn_from_guided) guided
        # steps as forced "keep" decisions whose behaviour probability of keeping is 1 (docs/ALGORITHM.md)
        d["mask_trains"] = d["mask_applied"] | (d["guided"] & bool(mcfg.learn_from_guided))

        # pi_prox and the mask's prox: the nets at the start of the update, recomputed on the batch
        logp_all, legal, d["logp_prox"], _, mask_logit, _ = self.run_nets(d["obs"], d["legal"], d["actions"], sel)
        d["mask_logp_prox"] = bernoulli_logp(mask_logit, d["perturbed"])
        # The mask's behaviour: the recorded m (perturb with 1 - m); logs floored so no -inf enters a product
        d["mask_logp_mu"] = torch.where(d["perturbed"], torch.log1p(-d["m"]), torch.log(d["m"])).clamp_min(-40.0)
        d["mask_logp_mu"] = torch.where(d["guided"], torch.zeros_like(d["m"]), d["mask_logp_mu"])  # forced keep

        var_ret = d["ret"].var(-1)
        ev = 1 - (d["ret"] - d["values"]).var(-1) / var_ret
        stats = {
            "keep_rate": d["m"].mean(-1),                                        # mean recorded m
            "perturb_share": (d["m"] <= mcfg.tau).to(dt).mean(-1),               # share of steps with m <= tau
            "kl_pi_mu": kl_pi_mu(logp_all, legal, d["m"], d["eps"], d["masked"], d["guided"]).mean(-1),
            "explained_variance": torch.where(var_ret > 0, ev, torch.zeros_like(ev)),  # 0 when returns are constant
            "is_weight_mean": torch.exp(d["logp_prox"] - d["logp_mu"]).clamp(max=ppo.is_clip).mean(-1),
        }
        return d, stats

    # ---- one minibatch: the per-agent losses, summed over agents
    def loss(self, mb: dict[str, torch.Tensor], sel):
        """Returns (scalar loss = sum over agents, per-agent stats [n] detached)."""
        ppo, mcfg = self.ppo, self.mask
        # one forward, every agent; the policy: illegal actions masked in every distribution
        logp_all, legal, logp, value, mask_logit, mask_value = self.run_nets(mb["obs"], mb["legal"], mb["actions"], sel)
        adv = normalize(mb["adv"]) if ppo.norm_adv else mb["adv"]          # per minibatch, per agent
        pg_loss = clipped_policy_loss(logp, mb["logp_prox"], mb["logp_mu"], adv, ppo.clip, ppo.is_clip,
                                      ppo.is_floor).mean(-1)
        v_loss = clipped_value_loss(value, mb["values"], mb["ret"], ppo.vf_clip).mean(-1)  # clipped around recorded V
        entropy = legal_entropy(logp_all, legal).mean(-1)                  # entropy bonus, legal-masked
        policy_total = pg_loss - ppo.ent_coef * entropy + ppo.vf_coef * v_loss

        # -- mask: the same decoupled objective on its Bernoulli action, only where its coin decided (and on
        #    guided steps as forced keeps, see prepare)
        applied = mb["mask_trains"]
        mask_logp = bernoulli_logp(mask_logit, mb["perturbed"])
        mask_adv = normalize(mb["mask_adv"], applied) if ppo.norm_adv else mb["mask_adv"]
        mask_pg = masked_mean(clipped_policy_loss(mask_logp, mb["mask_logp_prox"], mb["mask_logp_mu"], mask_adv,
                                                  ppo.clip, ppo.is_clip), applied)
        m = torch.sigmoid(mask_logit)
        # lambda_1 (mean m - tau)^2 over the minibatch's mask-training steps (the paper's surrogate, a regulariser)
        has_applied = applied.any(-1).to(m.dtype)
        mask_reg = mcfg.lambda1 * has_applied * (masked_mean(m, applied) - mcfg.tau) ** 2
        # an entropy bonus keeps the mask's coin from saturating: without it m drifted to 0 or 1 (to 1e-5) in most
        # states, and the order of the saturated ones, which the explanation ranks, said nothing
        mask_entropy = masked_mean(bernoulli_entropy(mask_logit), applied)
        mask_loss = mask_pg + mask_reg - mcfg.ent_coef * mask_entropy
        if mcfg.lambda2 > 0:  # lambda_2 KL(pi || mu) with mu built from the current m; pi is held fixed here
            mask_loss = mask_loss + mcfg.lambda2 * kl_pi_mu(
                logp_all.detach(), legal, m, mb["eps"], mb["masked"], mb["guided"]).mean(-1)
        mask_v_loss = clipped_value_loss(mask_value, mb["mask_values"], mb["mask_ret"], ppo.vf_clip).mean(-1)  # all steps
        mask_total = mask_loss + ppo.vf_coef * mask_v_loss

        # Summed over agents: agent i's parameters receive exactly the gradient of agent i's loss
        loss = (policy_total + mask_total).sum()
        with torch.no_grad():
            logratio = logp - mb["logp_prox"]
            ratio = logratio.exp()
            stats = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy,
                     "approx_kl": ((ratio - 1) - logratio).mean(-1),                 # k3 estimator vs pi_prox
                     "clipfrac": ((ratio - 1).abs() > ppo.clip).to(ratio.dtype).mean(-1),
                     "mask_loss": mask_loss, "mask_value_loss": mask_v_loss}
        return loss, {k: v.detach() for k, v in stats.items()}

    @torch.no_grad()
    def clip_grad_norm(self, sel) -> torch.Tensor:
        """Global grad-norm clip per agent: the norm over all of an agent's slices (every network), each
        agent's slices scaled by its own min(1, max_norm / (norm + 1e-6)) (clip_grad_norm_'s rule)."""
        params = [p for p in self.nets.parameters() if p.grad is not None]
        norm = torch.stack([p.grad[sel].pow(2).flatten(1).sum(1) for p in params]).sum(0).sqrt()
        coef = (self.ppo.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad[sel] = p.grad[sel] * coef.view(-1, *([1] * (p.dim() - 1)))
        return norm

    def update(self, batch: dict[str, torch.Tensor], agents: list[int], lr_frac: float = 1.0,
               tick=None) -> dict[str, np.ndarray]:
        """One PPO + mask update of the agents `agents` (batch arrays [len(agents), T, E, ...]).
        Returns per-agent statistics (arrays of length len(agents), in the order of `agents`).
        `tick()`, if given, is called after every minibatch (the learner keeps its heartbeats going)."""
        sel = self.selection(agents)
        if batch["actions"].shape[0] != len(agents):
            raise ValueError(f"batch has {batch['actions'].shape[0]} agents on its first axis, agents={list(agents)}")
        for group in self.optimizer.param_groups:  # linear annealing: the caller passes the remaining fraction
            group["lr"] = group["base_lr"] * lr_frac
        data, stats = self.prepare(batch, sel)
        n_samples = data["actions"].shape[1]
        per_mb = defaultdict(list)
        for _epoch in range(self.ppo.epochs):
            perm = torch.randperm(n_samples, generator=self.generator, device="cpu").to(self.device)  # all agents; CPU generator
            for idx in perm.tensor_split(self.ppo.minibatches):
                mb = {k: v[:, idx] for k, v in data.items()}
                loss, st = self.loss(mb, sel)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()                       # one backward, every agent
                self.clip_grad_norm(sel)
                self.optimizer.step(sel)              # agents outside the update are not touched
                for k, v in st.items():
                    per_mb[k].append(v)
                if tick is not None:
                    tick()
        stats.update({k: torch.stack(v).mean(0) for k, v in per_mb.items()})  # mean over all minibatches
        return {k: stats[k].detach().to("cpu", torch.float64).numpy() for k in self.STATS}
