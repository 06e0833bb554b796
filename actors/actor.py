"""The actor process of one agent: E env copies, masked action selection, fragments to the learner,
critical reports to the broker, peer guidance from the broker's latest snapshot.

The pieces: the sockets and the peers' health (actors/links.py), the fragments' way to the learner within
credit (actors/outbox.py, protocol/credit.py), the peers' policies (actors/peers.py), the fragment arrays
(actors/fragment.py), the critical-state exchange with the broker (actors/critical.py). Here: the main loop
(wait for weights, then collect a fragment whenever there is credit) and the rollout loop itself.

When a peer is silent (links.py): with the broker silent the last snapshot stays in use; with the learner
silent the actor keeps acting on its last weights and its fragments queue (outbox.py). A new learner
incarnation counts fragments and versions anew: credit restarts from zero and its weights are taken.
No wait blocks for ever: every loop polls at most 200 ms and checks stop.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
from prometheus_client import Counter, Gauge

from magicmask.actors.critical import Guidance, ReportWindow
from magicmask.actors.envs import make_env
from magicmask.actors.envs.base import Opponent
from magicmask.actors.evaluation import evaluate
from magicmask.actors.fragment import FragmentBuffer
from magicmask.actors.league import League, draw_opponent, play_seat
from magicmask.actors.links import Delivery, Links
from magicmask.actors.outbox import Outbox
from magicmask.actors.peers import PeerPolicies
from magicmask.actors.state_keys import StateKeys
from magicmask.models.action_selection import epsilon, select_training, softmax_legal
from magicmask.protocol import messages as M
from magicmask.protocol.codec import Sender
from magicmask.protocol.config import Config
from magicmask.protocol.opponents import opponent_mix
from magicmask.protocol.credit import ActorCredit
from magicmask.protocol.drops import DropLog
from magicmask.protocol.transport import serve_metrics

log = logging.getLogger("actor")

STEPS = Counter("magicmask_actor_env_steps", "Env steps taken by this actor", ["agent"])
REPORTS = Counter("magicmask_actor_reports", "Critical reports sent to the broker", ["agent"])
POLICY_VERSION = Gauge("magicmask_actor_policy_version", "Policy version in use", ["agent"])


class Actor:
    def __init__(self, cfg: Config, agent: int, run_dir: Path, stop_event=None):
        self.cfg, self.agent, self.run_dir = cfg, agent, Path(run_dir)
        self.stop_event = stop_event
        self.stopped = False
        self.sender = Sender(agent)
        # Reproducible from run.seed; a restarted actor (the supervisor counts restarts) plays new episodes
        restart = int(os.environ.get("MAGICMASK_RESTART", "0"))
        self.seed = int(np.random.SeedSequence([cfg.run.seed, agent, restart]).generate_state(1)[0])
        self.rng = np.random.default_rng(self.seed)
        self.envs = [make_env(cfg, agent, c) for c in range(cfg.env.copies)]
        self.spec = self.envs[0].spec.for_agent(agent)  # this agent's own observation shape
        self.peers = PeerPolicies(self.spec, cfg, self.seed)
        self.league = League(self.spec, cfg)
        self.opponent_mix = opponent_mix(cfg.env.opponents)
        # snapshots are kept only where an episode can draw one (each costs a copy of the networks)
        self.league_plays = self.envs[0].per_episode_opponent and self.opponent_mix.get("league", 0) > 0
        for env in self.envs:
            env.set_opponent(self.play_other_seat)
        self.keys = StateKeys(self.spec.obs_dim, cfg.actor.key_dim, cfg.actor.key_seed)
        self.masked_copy = np.arange(cfg.env.copies) < int(round(cfg.mask.masked_copies * cfg.env.copies))
        self.drops = DropLog(log)
        self.links = Links(cfg, agent, self.sender, self.drops)
        self.credit = ActorCredit(cfg.actor.max_inflight, self.sender.incarnation)
        self.outbox = Outbox(cfg.actor.offline_queue, agent, self.credit, self.links)
        self.guidance = Guidance(cfg, agent)
        self.window = ReportWindow(cfg)
        self.version = -1          # of this agent's own weights in use
        self.t = 0                 # this agent's env steps (all copies)
        self.fragments = 0         # collected by this incarnation (evaluation runs every env.eval_every)
        self.episodes: list[dict] = []  # finished since the last fragment was sent
        self.ep_return = [0.0] * cfg.env.copies  # of each copy's episode so far (Python numbers: updated per step)
        self.ep_len = [0] * cfg.env.copies
        self.episode_seed = self.seed * 1000
        self.env_steps = STEPS.labels(agent)  # bound once: the step loop increments it
        self.reports = REPORTS.labels(agent)
        self.policy_version = POLICY_VERSION.labels(agent)

    # ---------------- the main loop ----------------
    def run(self) -> None:
        self.links.connect()
        try:
            self.wait_for_weights()
            obs, legal = self.reset_all()
            pos = np.zeros(self.cfg.env.copies, np.int64)  # each copy's step in its episode
            while not self.should_stop():
                self.wait_for_credit()
                if self.should_stop():
                    break
                arrays = self.collect(obs, legal, pos)
                if arrays is None:   # told to stop in the middle of the fragment
                    break
                self.fragments += 1
                self.send_fragment(arrays, self.maybe_evaluate())
        finally:
            self.links.close()

    def should_stop(self) -> bool:
        return self.stopped or (self.stop_event is not None and self.stop_event.is_set())

    def wait_for_weights(self) -> None:
        """Late joiner: ask the learner and the broker for their current state until the weights arrive."""
        start, timeout = time.monotonic(), self.cfg.actor.weights_timeout_s
        self.links.ask_state()
        while self.version < 0 and not self.should_stop():
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"no weights from the learner at {self.cfg.learner_addr()}:"
                                   f"{self.cfg.net.learner_router_port} within {timeout}s")
            self.poll(200)
            self.links.ask_state(again_after=2.0)  # the learner may have started after us
        log.info("agent %d: weights version %d received, acting", self.agent, self.version)

    def wait_for_credit(self) -> None:
        """With the learner alive, wait for credit and an empty queue; while it is silent go on (and queue)."""
        self.poll(0)
        self.outbox.flush()
        while self.outbox.must_wait() and not self.should_stop():
            self.poll(200)
            self.outbox.flush()

    def maybe_evaluate(self) -> dict:
        """Evaluation figures every env.eval_every fragments (and after the first: the baseline), else {}."""
        every = self.cfg.env.eval_every
        if every and (self.fragments == 1 or self.fragments % every == 0):
            return evaluate(self.cfg, self.agent, self.peers, self.rng)
        return {}

    # ---------------- messages from the peers ----------------
    def poll(self, timeout_ms: int = 0) -> None:
        """Apply every pending weights, snapshot and stop message; never blocks longer than timeout_ms."""
        for d in self.links.poll(timeout_ms):
            self.deliver(d)

    def deliver(self, d: Delivery) -> None:
        """Apply one message from a peer: weights, a snapshot or the learner's stop."""
        if d.restarted and d.peer == "learner":
            self.credit.on_learner_restart()
            self.peers.forget_versions()
            self.league.forget()
        if d.msg.kind == M.WEIGHTS:
            self.on_weights(d.msg)
        elif d.msg.kind == M.SNAPSHOT:
            self.guidance.on_snapshot(d.msg, d.stream)
        elif d.msg.kind == M.STOP:
            log.info("stop received from the learner: %s", d.msg.body.get("reason"))
            self.stopped = True

    def on_weights(self, msg: M.Message) -> None:
        target = msg.body["target"]
        if not isinstance(target, int) or not 0 <= target < self.cfg.run.agents:
            self.drops.drop("weights", "schema", f"target {target!r} out of range")
            return
        if target == self.agent:
            self.credit.on_weights(msg.body)  # even from a repeated version (protocol/credit.py, rule 2)
        if not self.peers.is_newer(target, msg.policy_version):
            return
        try:
            self.peers.load(target, msg.arrays, msg.policy_version)
        except ValueError as e:
            self.drops.drop("weights", "shape", str(e))
            return
        if self.league_plays:
            self.league.offer(target, msg.arrays, msg.policy_version)
        if target == self.agent:
            self.version = msg.policy_version
            self.t = max(self.t, int(msg.body.get("env_steps", 0)))  # resume keeps the epsilon schedule
            self.policy_version.set(self.version)

    # ---------------- acting ----------------
    def reset_copy(self, c: int):
        self.episode_seed += 1
        env = self.envs[c]
        if env.per_episode_opponent:
            env.set_episode_opponent(self.draw_opponent())
        obs, legal, _ = env.reset(seed=self.episode_seed)
        return obs, legal

    def draw_opponent(self) -> Opponent:
        """Who plays the other seats of the next episode (actors.league.draw_opponent)."""
        return draw_opponent(self.opponent_mix, self.league, self.agent, self.cfg.run.agents, self.rng)

    def play_other_seat(self, who: int, obs: np.ndarray, legal: np.ndarray) -> int:
        """The env's callback for another seat (actors.league.play_seat)."""
        return play_seat(self.league, self.peers, who, obs, legal)

    def reset_all(self) -> tuple[list, list]:
        state = [self.reset_copy(c) for c in range(self.cfg.env.copies)]
        return [s[0] for s in state], [s[1] for s in state]

    def collect(self, obs: list, legal: list, pos: np.ndarray) -> dict | None:
        """One fragment: T steps of every copy (CleanRL's rollout loop). obs, legal and pos carry over to the
        next fragment: they are updated in place. Each step's observations and legal sets go straight into
        the fragment's row, which the policy then acts on (no stacking per step). None when told to stop
        before the fragment was full (a long fragment would otherwise outlast the supervisor's 4 s grace);
        the partial fragment is not sent."""
        E = self.cfg.env.copies
        buf = FragmentBuffer(self.spec, self.cfg.actor.fragment_len, E)
        rows_obs, rows_legal = buf.arrays["obs"], buf.arrays["legal"]
        for t in range(buf.T):
            if self.should_stop():
                return None
            rows_obs[t], rows_legal[t] = obs, legal
            keys, m, actions = self.act(buf, t)
            self.window.add(keys, m, self.t, pos)
            self.step_copies(buf, t, actions, obs, legal, pos)
            self.t += E
            self.env_steps.inc(E)  # 0.4 us: per step, so rate() is current even when a fragment takes seconds
            if self.t % self.cfg.actor.report_every < E:
                self.send_report()
            for d in self.links.poll_snapshots():   # a snapshot is used from the next step on
                self.deliver(d)
        return buf.bootstrap(*self.peers.values(self.agent, np.stack(obs)))

    def act(self, buf: FragmentBuffer, t: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """The behaviour policy on step t of every copy, read from the fragment's row t (observations, legal
        sets), whose other entries it fills. Returns (the state keys, m, the actions)."""
        cfg, a = self.cfg, buf.arrays
        obs, legal = a["obs"][t], a["legal"][t]
        # the policy over the actions legal in some copy, in those columns only (Dou Dizhu: a few of its
        # 27,472 ids; the same distribution and the same random draws as over every column)
        seen = legal.any(0)
        cols = None if seen.all() else np.flatnonzero(seen)
        legal_c = legal if cols is None else legal[:, cols]
        logits, a["values"][t], m, a["mask_values"][t] = self.peers.forward(self.agent, obs, cols)
        pi = softmax_legal(logits, legal_c)
        eps = epsilon(self.t, cfg.actor.eps0, cfg.actor.eps_min, cfg.actor.eps_decay, cfg.actor.eps_fixed)
        keys = self.keys(obs)
        guided = self.guidance.guide(keys, self.links.broker.alive, self.rng)
        masked = self.masked_copy & (self.t >= cfg.mask.start_step) & ~guided
        picks, a["logp_mu"][t], a["perturbed"][t], a["eps_random"][t], a["mask_applied"][t] = select_training(
            self.rng, pi, legal_c, m, eps, masked, guided)
        actions = picks if cols is None else cols[picks]
        a["actions"][t], a["logp_pi"][t] = actions, np.log(pi[np.arange(len(picks)), picks])
        a["m"][t], a["eps"][t], a["masked"][t], a["guided"][t] = m, eps, masked, guided
        return keys, m, actions.tolist()

    def step_copies(self, buf: FragmentBuffer, t: int, actions: list[int], obs: list, legal: list,
                    pos: np.ndarray) -> None:
        """Step every copy with its action and record the outcomes in row t; obs, legal and pos become the
        copies' next (in place). A copy whose episode ended records the episode and starts the next before
        the next copy steps: a reset may play the opponent's first move, which draws from the same
        generators as the other copies' steps."""
        rewards, terminated, truncated = [], [], []
        pos += 1
        overlap = self.envs[0].overlaps_steps   # start every copy's step first: they run at the same time
        if overlap:
            for env, action in zip(self.envs, actions):
                env.step_async(action)
        for c, action in enumerate(actions):
            o, lg, reward, term, trunc, info = self.envs[c].step_wait() if overlap else self.envs[c].step(action)
            rewards.append(reward)
            terminated.append(term)
            truncated.append(trunc)
            self.ep_return[c] += reward
            self.ep_len[c] += 1
            if term or trunc:
                if trunc and not term:  # bootstrap from the real final observation's value
                    value, mask_value = self.peers.values(self.agent, o[None])
                    buf.record_final_values(t, c, value[0], mask_value[0])
                self.episodes.append({"return": self.ep_return[c], "length": self.ep_len[c],
                                      **{k: float(v) for k, v in info.get("episode_stats", {}).items()}})
                self.ep_return[c], self.ep_len[c], pos[c] = 0.0, 0, 0
                o, lg = self.reset_copy(c)
            obs[c], legal[c] = o, lg
        buf.record_outcomes(t, rewards, terminated, truncated)

    # ---------------- sending ----------------
    def send_report(self) -> None:
        """A CriticalReport of the window's highest-m states."""
        arrays = self.window.take()
        if arrays is not None and self.links.send_report(self.sender.pack(M.REPORT, {"env_steps": self.t}, arrays)):
            self.reports.inc()

    def send_fragment(self, arrays: dict, eval_stats: dict) -> None:
        """Pack the fragment with the episodes it finished and the channel figures; the outbox sends it."""
        comm = {**self.guidance.comm, "at": time.time()}  # "at": to match them with the broker's snapshot log
        body = {"episodes": self.episodes, "env_steps": self.t, "eval": eval_stats, "comm": comm}
        wire = {name: arrays[name] for name in M.SCHEMAS[M.FRAGMENT].arrays}   # the blocks, not their column views
        self.outbox.put(self.sender.pack(M.FRAGMENT, body, wire, policy_version=self.version))
        self.episodes = []


def main(cfg: Config, agent: int, run_dir: Path, stop_event=None) -> int:
    torch.set_num_threads(1)  # one core per actor: more threads thrash on small machines
    if not stop_event:
        serve_metrics(cfg.metrics_port_of("actor", agent), cfg.net.metrics_host)
    actor = Actor(cfg, agent, run_dir, stop_event)
    if stop_event is None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(actor, "stopped", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(actor, "stopped", True))
    actor.run()
    return 0
