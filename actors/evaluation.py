"""Evaluation episodes, played inside the actor at intervals: the same seeds once with the plain greedy
policy and once with the mask in its explaining mode (perturb iff m <= tau). Their ratio is the reward
preservation the learner logs; where the env reports true critical steps, precision at k of the mask's
ranking is measured too (k = the number of true critical steps in the episode)."""
from __future__ import annotations

import numpy as np

from magicmask.models.critical_scores import precision_at_k
from magicmask.models.action_selection import select_explaining, softmax_legal
from magicmask.actors.envs import make_env
from magicmask.actors.envs.base import RANDOM_OPPONENT


def play_episode(env, forward, seed: int, rng, tau: float | None, greedy: bool = True, max_steps: int = 100_000):
    """One episode. `forward(obs[1,...]) -> (logits, value, m, mask_value)`; tau None plays unmasked.
    Returns a list of per-step dicts: obs, legal, value, m, action, own_action, perturbed, reward, critical,
    and episode_stats (on the last step)."""
    obs, legal, info = env.reset(seed=seed)
    steps = []
    for _ in range(max_steps):
        logits, value, m, _ = forward(obs[None])
        pi = softmax_legal(logits, legal[None])
        a, own, pert = select_explaining(rng, pi, legal[None], m if tau is not None else np.ones(1),
                                         tau if tau is not None else -1.0, greedy=greedy)
        step = {"obs": obs, "legal": legal, "value": float(value[0]), "m": float(m[0]), "action": int(a[0]),
                "own_action": int(own[0]), "perturbed": bool(pert[0])}
        obs, legal, r, term, trunc, info = env.step(int(a[0]))
        step.update(reward=float(r), critical=info.get("critical"),
                    episode_stats=info.get("episode_stats", {}) if (term or trunc) else {})
        steps.append(step)
        if term or trunc:
            break
    return steps


def evaluate(cfg, agent: int, peers, rng) -> dict:
    env = make_env(cfg, agent, copy_index=cfg.env.copies, replayable=True)  # its own copy; both modes replay the seeds
    env.set_episode_opponent(RANDOM_OPPONENT)  # envs that pick opponents per episode: the uniform random player
    env.set_opponent(peers.opponent)
    fwd = lambda o: peers.forward(agent, o)  # noqa: E731
    greedy = not cfg.actor.sample_policy_in_eval
    plain, masked, perturbed, precisions, stats = [], [], [], [], {}
    for e in range(cfg.env.eval_episodes):
        seed = 10_000_000 + e
        p = play_episode(env, fwd, seed, rng, None, greedy)
        q = play_episode(env, fwd, seed, rng, cfg.mask.tau, greedy)
        plain.append(sum(s["reward"] for s in p))
        masked.append(sum(s["reward"] for s in q))
        perturbed.append(np.mean([s["perturbed"] for s in q]))
        for k, v in p[-1]["episode_stats"].items():
            stats.setdefault(k, []).append(v)
        if p[0]["critical"] is not None:
            pk = precision_at_k(np.array([s["m"] for s in p]), np.array([bool(s["critical"]) for s in p]))
            if pk is not None:
                precisions.append(pk)
    out = {"return_plain": float(np.mean(plain)), "return_masked": float(np.mean(masked)),
           "perturbed_share": float(np.mean(perturbed))}
    out.update({f"vs_random_{k}": float(np.mean(v)) for k, v in stats.items()})
    if precisions:
        out["precision_at_k"] = float(np.mean(precisions))
    out.update(env.evaluate_extra(lambda o, lg: int(softmax_legal(fwd(o[None])[0], lg[None])[0].argmax()),
                                  cfg.env.eval_episodes, rng))
    return out
