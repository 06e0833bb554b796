"""EDGE (Guo et al., NeurIPS 2021): an offline, post-hoc explainer that learns to predict an episode's final
return from its (state, action) sequence with a deep-kernel sparse variational GP whose prediction is a
weighted sum over steps; a step's importance is its mixing weight.

Model, following the structure of the authors' published code:
  - Per-step encoder: the agent's own torso kind for the observation (the Nature CNN for images, as the
    agent's networks read them, `models.networks.image_shape`; else a 2-layer tanh MLP of the flattened
    observation, ENC_HIDDEN units) concatenated with a learned action embedding (ACT_EMB dims), fed into a
    GRU (RNN_HIDDEN units) -> hidden states H_t.
  - Step embedding h_t = Linear(H_t) (FEAT dims); trajectory embedding g = Linear(H at the last real step)
    (FEAT dims). The GP input of step t is [h_t, g].
  - GP: a gpytorch ApproximateGP with N_INDUCING learned inducing points (initialised from the embeddings of
    randomly chosen training steps), a Cholesky variational distribution, a constant mean and EDGE's
    additive kernel ScaleKernel(RBF-ARD on h_t) + ScaleKernel(RBF-ARD on g). One latent f_t per step; the
    episode is one batch element, so q(f_1..f_T) keeps its full within-episode covariance.
  - Mixing weights: input-dependent (EDGE's `weight_x=True`): a small MLP of H_t gives a logit per step,
    w = softmax over the episode's real steps (padded steps get weight 0), so the weights sum to 1.
  - Training episodes: the recorded (greedy) episodes plus, from the same seeds, the mask's explaining
    replays and replays with a random action at each step with probability 0.1 and 0.3 (PERTURB_PROBS):
    the greedy episodes alone often share one return (on gates all equal 3), and a model of the return
    learns nothing from episodes whose returns do not vary. Their extra env steps are the fit's budget.
  - Likelihood: for win/loss games (every return in {-1, 0, 1}) EDGE's classification likelihood, here
    Bernoulli: P(win) = sigmoid(s), s = sum_t w_t f_t, with a draw as the label 1/2; its expected
    log-likelihood under q(f) by Gauss-Hermite quadrature over s ~ N(w'mu, w' Sigma w). Otherwise
    regression: y = s + eps, eps ~ N(0, sigma^2), y = the return standardised over the training episodes,
    in closed form: -0.5 log(2 pi sigma^2) - ((y - w'mu)^2 + w' Sigma w) / (2 sigma^2).
  - Training: gpytorch VariationalELBO (num_data = episodes x padded length, see `WeightedSumLikelihood`)
    with Adam (lr 0.01, EDGE's) for cfg.explain.edge_epochs epochs over shuffled minibatches of BATCH
    episodes. Episodes of different lengths are padded at the end to the longest and masked; the GRU runs
    forward, so padding never changes a real step's embedding.
  - Importance = w_t of the episode (it sums to 1 per episode; EDGE min-max normalises it per episode,
    which does not change the ranking).

Simplifications against the official code: a Bernoulli instead of a softmax over outcome classes; no L1
penalty on the mixing weights (with softmax weights it is constant); no learning-rate decay; smaller default
sizes (the 2-core test machine); float64 throughout for a stable Cholesky.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from magicmask.explain.baselines.base import Explainer, seeded
from magicmask.explain.episodes import record_episode
from magicmask.models.networks import StackedCNN

with warnings.catch_warnings():  # gpytorch's import uses torch.jit.script, deprecated in recent torch
    warnings.simplefilter("ignore", DeprecationWarning)
    import gpytorch


class WeightedSumLikelihood(gpytorch.likelihoods.Likelihood):
    """p(y | f) = N(sum_t w_t f_t, sigma^2) for one episode (f over its steps, w its mixing weights).

    `expected_log_prob` returns a [B, T] tensor whose row b sums to episode b's expected log-likelihood /T.
    VariationalELBO sums it over T and divides by T (its num_batch = the MVN's event size T), so per episode
    it gives ell_b / T; averaged over the batch and with num_data = N x T this is (1/T) x the per-episode
    ELBO (mean ell - KL / N): the correctly scaled bound, divided by the constant padded length."""

    def __init__(self):
        super().__init__()
        self.register_parameter("raw_noise", nn.Parameter(torch.zeros(1)))
        self.register_constraint("raw_noise", gpytorch.constraints.GreaterThan(1e-4))

    @property
    def noise(self) -> torch.Tensor:
        return self.raw_noise_constraint.transform(self.raw_noise)

    def forward(self, function_samples, weights=None, **kwargs):
        return torch.distributions.Normal((function_samples * weights).sum(-1), self.noise.sqrt())

    def expected_log_prob(self, observations, function_dist, weights=None, **kwargs):
        mu = function_dist.mean                                            # [B, T]
        cov = function_dist.covariance_matrix                              # [B, T, T]
        pred = (weights * mu).sum(-1)
        var = (weights[..., None, :] @ cov @ weights[..., :, None])[..., 0, 0]
        s2 = self.noise
        ell = -0.5 * torch.log(2 * math.pi * s2) - ((observations - pred) ** 2 + var) / (2 * s2)
        T = mu.shape[-1]
        return (ell / T)[..., None].expand(*ell.shape, T)


class WeightedSumBernoulliLikelihood(WeightedSumLikelihood):
    """p(win | f) = sigmoid(sum_t w_t f_t) for win/loss games, y in {0, 1/2, 1} (loss, draw, win); the same
    [B, T] scaling of `expected_log_prob` as the regression likelihood."""

    def __init__(self):
        super().__init__()
        self.quadrature = gpytorch.utils.quadrature.GaussHermiteQuadrature1D()

    def forward(self, function_samples, weights=None, **kwargs):
        return torch.distributions.Bernoulli(logits=(function_samples * weights).sum(-1))

    def expected_log_prob(self, observations, function_dist, weights=None, **kwargs):
        mu, cov = function_dist.mean, function_dist.covariance_matrix
        pred = (weights * mu).sum(-1)
        var = (weights[..., None, :] @ cov @ weights[..., :, None])[..., 0, 0].clamp_min(1e-10)
        s_dist = torch.distributions.Normal(pred, var.sqrt())
        y = observations
        ell = self.quadrature(lambda s: y * nn.functional.logsigmoid(s) + (1 - y) * nn.functional.logsigmoid(-s),
                              s_dist)
        T = mu.shape[-1]
        return (ell / T)[..., None].expand(*ell.shape, T)


class EdgeGP(gpytorch.models.ApproximateGP):
    def __init__(self, inducing_points: torch.Tensor, feat: int):
        dist = gpytorch.variational.CholeskyVariationalDistribution(inducing_points.shape[0])
        strategy = gpytorch.variational.VariationalStrategy(self, inducing_points, dist,
                                                            learn_inducing_locations=True)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        step = gpytorch.kernels.RBFKernel(ard_num_dims=feat, active_dims=tuple(range(feat)))
        traj = gpytorch.kernels.RBFKernel(ard_num_dims=feat, active_dims=tuple(range(feat, 2 * feat)))
        self.covar_module = gpytorch.kernels.ScaleKernel(step) + gpytorch.kernels.ScaleKernel(traj)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class ImageTorso(nn.Module):
    """The agent's CNN torso (one slice of `StackedCNN`, the same kind) on [B, T, C, H, W] pixels."""

    def __init__(self, image: tuple[int, int, int], torso: str = "nature", cnn_input: str = "scale"):
        super().__init__()
        self.image = image
        self.cnn = StackedCNN(1, image[0], image[1:], torso=torso, standardize=cnn_input == "standardize")
        self.out_features = self.cnn.out_features

    def forward(self, obs):
        b, t = obs.shape[:2]
        return self.cnn(obs.reshape(1, b * t, *self.image)).reshape(b, t, -1)


class EdgeEncoder(nn.Module):
    """(obs, action) sequences -> GP inputs [B, T, 2*feat] and mixing weights [B, T]."""

    def __init__(self, obs_dim, n_actions, enc_hidden, act_emb, rnn_hidden, feat, image=None, torso=("nature", "scale")):
        super().__init__()
        if image is not None:
            self.obs_encoder = ImageTorso(image, *torso)
            width = self.obs_encoder.out_features
        else:
            self.obs_encoder = nn.Sequential(nn.Linear(obs_dim, enc_hidden), nn.Tanh(),
                                             nn.Linear(enc_hidden, enc_hidden), nn.Tanh())
            width = enc_hidden
        self.act_emb = nn.Embedding(n_actions, act_emb)
        self.gru = nn.GRU(width + act_emb, rnn_hidden, batch_first=True)
        self.step_head = nn.Linear(rnn_hidden, feat)
        self.traj_head = nn.Linear(rnn_hidden, feat)
        self.weight_net = nn.Sequential(nn.Linear(rnn_hidden, rnn_hidden), nn.Tanh(), nn.Linear(rnn_hidden, 1))

    def forward(self, obs, actions, valid):
        h, _ = self.gru(torch.cat([self.obs_encoder(obs), self.act_emb(actions)], -1))   # [B, T, H]
        last = valid.sum(-1).clamp_min(1) - 1
        g = self.traj_head(h[torch.arange(h.shape[0]), last])                           # [B, feat]
        z = torch.cat([self.step_head(h), g[:, None].expand(-1, h.shape[1], -1)], -1)
        logits = self.weight_net(h)[..., 0].masked_fill(~valid, float("-inf"))
        return z, torch.softmax(logits, -1)


def pad(episodes, length: int, image=None):
    """Episodes -> obs [B, T, D] float64 (images: [B, T, C, H, W]), actions [B, T] int64, valid [B, T] bool
    (padded at the end)."""
    B = len(episodes)
    shape = tuple(image) if image is not None else (int(np.prod(episodes[0].obs.shape[1:])),)
    obs = np.zeros((B, length, *shape))
    act = np.zeros((B, length), np.int64)
    valid = np.zeros((B, length), bool)
    for i, ep in enumerate(episodes):
        n = ep.length
        obs[i, :n] = ep.obs.reshape(n, *shape)
        act[i, :n] = ep.actions
        valid[i, :n] = True
    return torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(valid)


class EdgeExplainer(Explainer):
    name = "edge"
    ENC_HIDDEN = 32
    ACT_EMB = 8
    RNN_HIDDEN = 16
    FEAT = 4
    N_INDUCING = 100
    BATCH = 16
    LR = 0.01
    PERTURB_PROBS = (0.1, 0.3)

    def training_episodes(self, run, agent, episodes, seed) -> list:
        """The recorded episodes and, from their seeds, masked and randomly perturbed replays."""
        env, policy = run.make_env(agent), run.policies[agent]
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, agent, 0xED9E])
        extra = [record_episode(env, policy, agent, ep.seed, masked=True, rng=rng) for ep in episodes]
        for p in self.PERTURB_PROBS:
            extra += [record_episode(env, policy, agent, ep.seed, masked=False, rng=rng, perturb_prob=p)
                      for ep in episodes]
        env.close()
        self.env_steps = sum(ep.length for ep in extra)
        return [*episodes, *extra]

    def _fit(self, run, agent, episodes, seed):
        if not episodes:
            raise ValueError("edge: needs recorded episodes to learn from (offline method)")
        episodes = self.training_episodes(run, agent, episodes, seed)
        n_actions = run.policies[agent].nets.n_actions
        obs_dim = int(np.prod(episodes[0].obs.shape[1:]))
        self.image = run.policies[agent].nets.image_shape   # the agent's networks read images with the CNN
        nets = run.policies[agent].nets
        self.torso = (getattr(nets, "cnn_torso", "nature"), getattr(nets, "cnn_input", "scale"))
        T = max(ep.length for ep in episodes)
        obs, act, valid = pad(episodes, T, self.image)
        y = torch.tensor([ep.ret for ep in episodes], dtype=torch.float64)
        self.classify = bool(((y == -1) | (y == 0) | (y == 1)).all())
        if self.classify:    # win/draw/loss -> 1, 1/2, 0
            self.y_mean, self.y_std = 0.0, 1.0
            y = (y + 1) / 2
        else:
            std = float(y.std()) if len(y) > 1 else 0.0
            self.y_mean, self.y_std = float(y.mean()), (std if std > 1e-8 else 1.0)
            y = (y - self.y_mean) / self.y_std
        N = len(episodes)
        with seeded(seed * 1000003 + agent + 29):
            gen = torch.Generator().manual_seed(int(seed) * 7919 + agent + 29)
            self.encoder = EdgeEncoder(obs_dim, n_actions, self.ENC_HIDDEN, self.ACT_EMB, self.RNN_HIDDEN,
                                       self.FEAT, self.image, self.torso).double()
            with torch.no_grad():
                z0, _ = self.encoder(obs, act, valid)
            pts = z0[valid]
            m = min(self.N_INDUCING, len(pts))
            inducing = pts[torch.randperm(len(pts), generator=gen)[:m]].clone()
            inducing += 1e-3 * torch.randn(inducing.shape, generator=gen, dtype=inducing.dtype)  # no duplicates
            self.gp = EdgeGP(inducing, self.FEAT).double()
            self.likelihood = (WeightedSumBernoulliLikelihood() if self.classify else WeightedSumLikelihood()).double()
            mll = gpytorch.mlls.VariationalELBO(self.likelihood, self.gp, num_data=N * T)
            params = [*self.encoder.parameters(), *self.gp.parameters(), *self.likelihood.parameters()]
            opt = torch.optim.Adam(params, lr=self.LR)
            self.encoder.train(); self.gp.train(); self.likelihood.train()
            self.losses = []
            for _ in range(self.cfg.explain.edge_epochs):
                total = 0.0
                for idx in torch.randperm(N, generator=gen).split(self.BATCH):
                    z, w = self.encoder(obs[idx], act[idx], valid[idx])
                    loss = -mll(self.gp(z), y[idx], weights=w).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                self.losses.append(total / N)
        self.encoder.eval(); self.gp.eval(); self.likelihood.eval()
        self.n_params = sum(p.numel() for p in params)
        for p in params:
            p.requires_grad_(False)

    def _forward(self, episodes):
        obs, act, valid = pad(episodes, max(ep.length for ep in episodes), self.image)
        with torch.no_grad():
            z, w = self.encoder(obs, act, valid)
        return z, w, valid

    def weights(self, ep) -> np.ndarray:
        """The mixing weights w_t of one episode ([L], summing to 1)."""
        return self._forward([ep])[1][0].numpy()

    def predict_return(self, episodes) -> np.ndarray:
        """The model's predicted return per episode, in return units: sum_t w_t E[f_t] (regression) or
        2 sigmoid(sum_t w_t E[f_t]) - 1, the expected outcome of a win/loss game at the mean latent."""
        z, w, _ = self._forward(episodes)
        with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
            s = (w * self.gp(z).mean).sum(-1)
        if self.classify:
            return (2 * torch.sigmoid(s) - 1).numpy()
        return (s * self.y_std + self.y_mean).numpy()

    def _importance(self, ep):
        return self.weights(ep)


EXPLAINER = EdgeExplainer   # what make_explainer('edge') builds
