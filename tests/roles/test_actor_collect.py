"""What one fragment records (Actor.collect writes each step's observations straight into the fragment and
acts on that row): the observations and legal sets the policy saw, each next row being what the env
answered (its reset's where an episode ended), the policy's own outputs at those observations, the
outcomes, the episodes, and the step counters."""
import numpy as np
from prometheus_client import REGISTRY

from magicmask.actors.actor import Actor
from magicmask.models.action_selection import softmax_legal
from magicmask.models.networks import nets_for
from magicmask.protocol import config as C
from tests.helpers import free_port_overrides

E, T = 3, 60


def _logged(env, log):
    """Wrap env's step and reset to append what they return to `log`."""
    step, reset = env.step, env.reset

    def logged_step(action):
        out = step(action)
        log.append(("step", *out))
        return out

    def logged_reset(seed):
        out = reset(seed=seed)
        log.append(("reset", *out))
        return out
    env.step, env.reset = logged_step, logged_reset


def test_a_fragment_records_what_the_policy_saw_and_what_the_envs_answered(tmp_path):
    cfg = C.load(overrides=free_port_overrides() + [
        "env.name=connect4", "env.opponents=random=1", "run.agents=1", f"env.copies={E}", f"actor.fragment_len={T}",
        "env.max_episode_steps=10", "ppo.hidden=32", "actor.eps0=0.3", "actor.eps_min=0.3", "mask.start_step=0",
        "actor.report_every=1000000"], environ={})
    actor = Actor(cfg, 0, tmp_path)
    actor.links.connect()   # collect polls the broker's sockets every step; nobody is at the other end
    try:
        actor.peers.load(0, nets_for(actor.spec, cfg.ppo.hidden, 1, seed=3).agent_state(0), 0)
        logs = [[] for _ in range(E)]
        state = [actor.reset_copy(c) for c in range(E)]
        for env, log in zip(actor.envs, logs):
            _logged(env, log)
        obs, legal, pos = [s[0] for s in state], [s[1] for s in state], np.zeros(E, np.int64)
        steps_before = REGISTRY.get_sample_value("magicmask_actor_env_steps_total", {"agent": "0"}) or 0.0
        buf = actor.collect(obs, legal, pos)
        after = REGISTRY.get_sample_value("magicmask_actor_env_steps_total", {"agent": "0"})
        assert actor.t == T * E and after - steps_before == T * E

        ended = []                                   # (step, copy, return, length) of every episode ended
        for c, log in enumerate(logs):
            seen = [(state[c][0], state[c][1])]      # what the policy should have acted on at each step
            steps = [e for e in log if e[0] == "step"]
            assert len(steps) == T
            ret, length = 0.0, 0
            for e in log:
                if e[0] == "reset":
                    seen[-1] = (e[1], e[2])
                    continue
                _, o, lg, reward, term, trunc, _ = e
                seen.append((o, lg))
                ret, length = ret + reward, length + 1
                if term or trunc:
                    ended.append((len(seen) - 2, c, ret, length))
                    ret, length = 0.0, 0
            for t in range(T):
                np.testing.assert_array_equal(buf["obs"][t, c], seen[t][0])
                np.testing.assert_array_equal(buf["legal"][t, c], seen[t][1])
            np.testing.assert_array_equal(obs[c], seen[T][0])   # carried over to the next fragment
            np.testing.assert_array_equal(legal[c], seen[T][1])
            assert pos[c] == length
            np.testing.assert_array_equal(buf["rewards"][:, c], [s[3] for s in steps])
            np.testing.assert_array_equal(buf["terminated"][:, c], [s[4] for s in steps])
            np.testing.assert_array_equal(buf["truncated"][:, c], [s[5] for s in steps])
            cut = [t for t, s in enumerate(steps) if s[5] and not s[4]]
            assert cut, "no episode was cut off: the final values go untested"
            for t in cut:
                value, mask_value = actor.peers.values(0, steps[t][1][None])
                assert buf["final_values"][t, c] == value[0] and buf["final_mask_values"][t, c] == mask_value[0]
        # episodes in the order they ended: by step, then by copy
        assert [(e["return"], e["length"]) for e in actor.episodes] == [(r, n) for _, _, r, n in sorted(ended)]

        for t in range(T):
            logits, value, m, mask_value = actor.peers.forward(0, buf["obs"][t])
            pi = softmax_legal(logits, buf["legal"][t])
            a = buf["actions"][t]
            assert buf["legal"][t, np.arange(E), a].all()
            np.testing.assert_allclose(buf["logp_pi"][t], np.log(pi[np.arange(E), a]), rtol=1e-6)
            np.testing.assert_array_equal(buf["values"][t], value)
            np.testing.assert_array_equal(buf["mask_values"][t], mask_value)
            np.testing.assert_array_equal(buf["m"][t], m)
        assert buf["eps_random"].any() and buf["perturbed"].any() and buf["masked"].any()
    finally:
        actor.links.close()


def test_a_stop_ends_a_fragment_at_the_next_step(tmp_path):
    """SIGTERM (or the in-process stop event) in the middle of a long fragment: collect returns None at the
    next step instead of playing the fragment out, and nothing partial is kept."""
    cfg = C.load(overrides=free_port_overrides() + [
        "env.name=connect4", "env.opponents=random=1", "run.agents=1", f"env.copies={E}",
        "actor.fragment_len=100000", "ppo.hidden=16", "actor.report_every=1000000"], environ={})
    actor = Actor(cfg, 0, tmp_path)
    actor.links.connect()
    try:
        actor.peers.load(0, nets_for(actor.spec, cfg.ppo.hidden, 1, seed=3).agent_state(0), 0)
        state = [actor.reset_copy(c) for c in range(E)]
        step_copies, calls = actor.step_copies, []

        def step_then_stop(*args):
            step_copies(*args)
            calls.append(1)
            if len(calls) == 5:
                actor.stopped = True   # what the SIGTERM handler sets
        actor.step_copies = step_then_stop
        out = actor.collect([s[0] for s in state], [s[1] for s in state], np.zeros(E, np.int64))
        assert out is None and len(calls) == 5 and actor.t == 5 * E
    finally:
        actor.links.close()


def test_copies_that_overlap_steps_start_every_step_before_reading_one(tmp_path):
    """An env with `overlaps_steps` (pong's EnvPool backend: each copy steps in a thread of its own): collect
    starts all copies' steps before it reads the first outcome, and the fragment is the one the plain
    step-by-step loop records."""
    cfg = C.load(overrides=free_port_overrides() + [
        "env.name=gates", "run.agents=1", f"env.copies={E}", "actor.fragment_len=40", "ppo.hidden=16",
        "actor.report_every=1000000"], environ={})
    fragments, orders = [], []
    for overlap in (False, True):
        actor = Actor(cfg, 0, tmp_path / str(overlap))
        actor.links.connect()
        try:
            actor.peers.load(0, nets_for(actor.spec, cfg.ppo.hidden, 1, seed=3).agent_state(0), 0)
            calls = []
            for c, env in enumerate(actor.envs):
                env.overlaps_steps = overlap
                for name in ("step_async", "step_wait"):
                    def logged(*args, _f=getattr(env, name), _name=name, _c=c):
                        calls.append((_name, _c))
                        return _f(*args)
                    setattr(env, name, logged)
            state = [actor.reset_copy(c) for c in range(E)]
            buf = actor.collect([s[0] for s in state], [s[1] for s in state], np.zeros(E, np.int64))
            fragments.append(buf)
            orders.append(calls)
        finally:
            actor.links.close()
    plain, overlapped = fragments
    for name in ("obs", "actions", "rewards", "terminated", "m"):
        np.testing.assert_array_equal(plain[name], overlapped[name], err_msg=name)
    step = [("step_async", c) for c in range(E)] + [("step_wait", c) for c in range(E)]
    assert orders[1] == step * 40                                       # all started, then all read
    assert orders[0][:2 * E] == [(n, c) for c in range(E) for n in ("step_async", "step_wait")]
