"""The run config: one typed tree, a default and a help text for every field, validated before any
process starts (Sample Factory's rule: every option documented, nothing implicit).

Sources of values, later ones win: the dataclass defaults, a YAML file, `--set section.field=value`
overrides, and for addresses the environment variables named in `ENV_OVERRIDES` (pods get them from
their manifest).
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from magicmask.protocol.envspec import BUILTIN_ENVS, check_env_name
from magicmask.protocol.errors import ConfigError
from magicmask.protocol.opponents import check_opponent, opponent_mix
from magicmask.protocol.security import check_config as check_security

# The explainers `magicmask explain` can run (explain/baselines registers one class per name).
EXPLAINERS = ("magicmask", "statemask", "edge", "lazymdp", "valuemax", "random")


def opt(default, help: str, *, choices=None, ge=None, gt=None, le=None, lt=None):
    """A config field: default, help text and the allowed values, kept together."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    name: str = opt("", "Run name; the run directory is <out_dir>/<name>. Empty: <env>-<timestamp>.")
    out_dir: str = opt("runs", "Folder that holds the run directories.")
    agents: int = opt(4, "Number of agents (one actor process each).", ge=1, le=256)
    seed: int = opt(0, "Master seed; every process derives its own from it.", ge=0)
    total_steps: int = opt(200_000, "Env steps per agent after which the learner stops the run.", ge=1)
    log_level: str = opt("INFO", "Log level of every process.", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    progress: bool = opt(True, "Show the live progress view in `magicmask run`.")
    max_restarts: int = opt(
        5, "Restarts of one process (the broker, the learner or an actor) by `magicmask run`'s supervisor before "
        "the run stops. Each restart of a process waits twice as long as its last (0.5 s, 1 s, 2 s, ... at most "
        "30 s; 0.5 s again after a life of 60 s or more), so a process that cannot start does not spin.", ge=0)
    max_actor_restarts: int = opt(
        -1, "The old name of run.max_restarts, for actors only: kept so that config files that set it still "
        "load and mean what they meant. -1: run.max_restarts applies to actors too.", ge=-1)
    min_free_mb: int = opt(
        100, "`magicmask run` refuses to start when the run directory's disk has less free space than this many "
        "MiB (checkpoints, metrics, TensorBoard files and logs need room; a gates checkpoint of 3 agents is "
        "0.8 MiB, three are kept).", ge=0)


@dataclass
class EnvConfig:
    name: str = opt("connect4", f"Environment: {', '.join(BUILTIN_ENVS)}, or a PettingZoo env as "
                    "'package.module:factory'.")
    copies: int = opt(4, "Env copies per actor (E).", ge=1, le=256)
    max_episode_steps: int = opt(0, "Truncate episodes after this many of the agent's steps (0: the env's own limit).", ge=0)
    kwargs: dict = opt({}, "Keyword arguments for the environment's constructor.")
    opponents: str = opt(
        "peers=0.75,random=0.25", "Envs that seat an opponent per episode (connect4, doudizhu): who plays the other "
        "seats of a training episode, as kind=weight pairs. Kinds: peers (another agent's latest policy), self "
        "(this agent's own latest policy), league (a past snapshot of any agent's policy, see env.league_size), "
        "random (uniform random legal moves), or one of the env's built-in players (connect4: lookahead, "
        "search:<depth>; doudizhu: rule). Random opponents keep a population from drifting into a private "
        "meta; stronger ones give it something to beat (docs/ALGORITHM.md).")
    league_size: int = opt(8, "Past policy snapshots an actor keeps for 'league' opponents; when full the oldest "
                           "is replaced.", ge=1, le=1024)
    league_every: int = opt(10, "Policy versions between two snapshots of one agent kept for the league.", ge=1)
    eval_every: int = opt(20, "Actor: run evaluation episodes every this many fragments (0: never).", ge=0)
    eval_episodes: int = opt(20, "Actor: episodes per evaluation (each mode and opponent).", ge=1)


@dataclass
class ActorConfig:
    fragment_len: int = opt(128, "Steps per env copy in one fragment (T).", ge=1, le=100_000)
    report_every: int = opt(50, "Send a CriticalReport every this many of the agent's steps (k).", ge=1)
    report_top: int = opt(8, "States per CriticalReport: the most important since the last report.", ge=1, le=1024)
    eps0: float = opt(0.2, "Initial epsilon of the adaptive epsilon-greedy exploration.", ge=0.0, le=1.0)
    eps_min: float = opt(0.01, "Floor of epsilon.", ge=0.0, le=1.0)
    eps_decay: float = opt(2e-5, "lambda in eps_t = max(eps_min, eps0 * exp(-lambda * t)), t = agent env steps.", ge=0.0)
    eps_fixed: bool = opt(False, "Ablation: keep epsilon at eps0 (no decay).")
    report_min_m: float = opt(
        0.75, "Report only states with keep-probability m at least this (confidently critical): an early, "
        "untrained m near 0.5 would otherwise fill the shared buffer with states peers then never perturb.",
        gt=0.0, le=1.0)
    key_dim: int = opt(32, "Dimension of the state keys (seeded random projection of observations).", ge=2, le=4096)
    key_seed: int = opt(12345, "Seed of the state-key projection; the same for every agent.", ge=0)
    guidance_prob: float = opt(
        0.75, "Probability that a step whose state a peer marked critical is guided (left unperturbed), times the "
        "broker entry's score (its aged keep-probability, so stale or doubtful entries guide less). Below 1 "
        "so that the remaining visits still show the mask what perturbing that state costs: with 1, states "
        "shared early stay 'critical' forever and shared gates are forgotten (measured on gates).", ge=0.0, le=1.0)
    guidance_rho: float = opt(0.98, "Cosine similarity at which a state counts as one a peer marked critical.", gt=0.0, le=1.0)
    max_inflight: int = opt(
        2, "Credit-based flow control: fragments an actor may have sent that the learner has not yet trained "
        "on. At the limit the actor waits for new weights, so a fast actor never runs ahead of a slow team.", ge=1)
    weights_timeout_s: float = opt(60.0, "Give up when no weights arrive from the learner within this time at start.", gt=0.0)
    offline_queue: int = opt(
        8, "Fragments an actor keeps while the learner is silent (no traffic for 3 x net.heartbeat_s) or it is out "
        "of credit with the learner silent: it keeps acting and queues them; when the queue is full the OLDEST is "
        "dropped and counted (magicmask_actor_fragments_dropped_total{cause=\"offline_queue\"}). When the learner is "
        "heard again the queue is sent oldest first, within credit.", ge=1)
    sample_policy_in_eval: bool = opt(False, "Evaluation episodes sample the policy instead of taking its argmax.")


@dataclass
class MaskConfig:
    tau: float = opt(0.5, "Threshold: when explaining, a step is perturbed iff m <= tau.", gt=0.0, lt=1.0)
    alpha: float = opt(0.05, "Mask reward bonus per perturbed step (must stay well below a critical step's reward).", ge=0.0)
    lambda1: float = opt(0.1, "Weight of MSE(mean m, tau), the paper's surrogate, as a regulariser.", ge=0.0)
    lambda2: float = opt(0.0, "Weight of KL(policy || masked behaviour) in the mask loss (0: logged only).", ge=0.0)
    lr: float = opt(3e-4, "Mask (and mask critic) learning rate.", gt=0.0)
    ent_coef: float = opt(
        0.0, "Entropy bonus of the mask's keep/perturb coin. Keeps m graded (its logit follows what a perturbation "
        "costs) instead of saturating at 0 or 1, where the explanation's ranking of steps carries no information.",
        ge=0.0)
    gae_lambda: float = opt(
        0.95, "GAE lambda of the mask's advantages and critic targets. Lower credits a perturbation with the "
        "change of value it causes at once rather than with the noise of every later step.", ge=0.0, le=1.0)
    critic: str = opt(
        "own", "The critic of the mask's advantages: own (the mask critic, the value of the masked behaviour: the "
        "paper's) or policy (the policy's critic: with gae_lambda 0 a perturbation is scored by what one random "
        "action costs the policy, the quantity the fidelity test measures). The mask critic trains either way.",
        choices=["own", "policy"])
    start_step: int = opt(0, "Agent env steps before the mask starts perturbing (warm-up).", ge=0)
    masked_copies: float = opt(1.0, "Share of each actor's env copies that run masked.", ge=0.0, le=1.0)
    init_bias: float = opt(0.0, "Initial mask logit bias (0 gives m ~ 0.5).")
    learn_from_guided: bool = opt(
        True, "Train the mask on guided steps as forced 'keep' decisions (behaviour probability 1). Without it "
        "the mask never sees the shared critical states it is told not to perturb and can forget them.")


@dataclass
class PPOConfig:
    lr: float = opt(2.5e-4, "Policy and value learning rate (Adam, eps 1e-5).", gt=0.0)
    anneal_lr: bool = opt(True, "Anneal learning rates linearly to 0 over run.total_steps.")
    gamma: float = opt(0.99, "Discount.", ge=0.0, le=1.0)
    gae_lambda: float = opt(0.95, "GAE lambda.", ge=0.0, le=1.0)
    clip: float = opt(0.2, "Clip range of the ratio pi_theta / pi_prox.", gt=0.0)
    vf_clip: float = opt(0.2, "Value clipping range (0: off).", ge=0.0)
    ent_coef: float = opt(0.01, "Entropy bonus weight.", ge=0.0)
    vf_coef: float = opt(0.5, "Value loss weight.", ge=0.0)
    max_grad_norm: float = opt(0.5, "Global gradient-norm clip, per agent.", gt=0.0)
    epochs: int = opt(4, "Passes over each batch.", ge=1)
    minibatches: int = opt(4, "Minibatches per pass.", ge=1)
    is_clip: float = opt(2.0, "Truncation bound of the importance weight pi_prox / mu (decoupled objective).", gt=0.0)
    is_floor: float = opt(
        0.0, "Lower bound of the policy's importance weight pi_prox / mu on samples with a positive advantage (0: "
        "the exact weight). Above 0, an action that epsilon or the mask drew, that the policy gives ~0 and that "
        "turned out well still moves the policy, by at least this weight (biased; docs/ALGORITHM.md, 'Learning').",
        ge=0.0)
    hidden: int = opt(64, "Hidden units of every MLP (two layers).", ge=1, le=8192)
    board_filters: int = opt(
        0, "Envs whose observation is a board (connect4, PettingZoo board games): filters of one "
        "board_kernel x board_kernel convolution (no padding, ReLU) that reads the board before each MLP "
        "(docs/RESULTS.md, 'Connect Four: a board convolution'). 0: the MLPs read the flat observation.", ge=0, le=1024)
    board_kernel: int = opt(4, "Side of the board convolution's square window (ppo.board_filters > 0).", ge=1, le=19)
    mirror: bool = opt(
        False, "Board envs that declare their left-right mirror (connect4): every network reads the board and its "
        "mirror image and averages (the policy's logits with the mirror action's), so the policy is symmetric and "
        "what is learnt on one side of the board holds on the other; twice the rows per forward "
        "(docs/RESULTS.md, 'Connect Four: a symmetric policy').")
    cnn_torso: str = opt(
        "nature", "Torso of the built-in networks for image observations (pong, image PettingZoo envs): nature (the "
        "Nature DQN's three convolutions and 512 features, for 84x84 frames and a GPU) or small (the 2013 DQN's two "
        "convolutions and 256 features on 42x42 frames, for a CPU: docs/BENCHMARKS.md, 'Pong on a CPU'; pong-cpu.yaml).",
        choices=["nature", "small"])
    mask_torso: str = opt(
        "own", "Image observations: own (the mask and its critic have a CNN torso of their own) or policy (they read "
        "the policy torso's features with the gradient stopped: half the convolutions in the actor and the learner, "
        "and the mask's loss never moves the policy's features; pong-cpu.yaml). Flat observations: own only.",
        choices=["own", "policy"])
    cnn_input: str = opt(
        "scale", "How image pixels enter the CNN torso: scale (divided by 255, the DQN's) or standardize (each "
        "observation minus the mean of its pixels, over their standard deviation: small objects on a constant "
        "background, such as Pong's ball in 42x42 frames, stand out; pong-cpu.yaml).", choices=["scale", "standardize"])
    action_head: str = opt(
        "dense", "Policy head: dense (one logit per action id from the last hidden layer), features (logit = "
        "<f(s), g(E[a])>, scoring each action by the env's fixed action-feature table E; only for envs that have "
        "one, e.g. doudizhu; docs/ALGORITHM.md compares them) or columns (dense plus each board column's planes "
        "summed over its rows, times one weight per plane shared by the columns; board envs whose actions are "
        "columns, e.g. connect4; docs/RESULTS.md, 'Connect Four: the default job from a fresh clone').", choices=["dense", "features", "columns"])
    norm_adv: bool = opt(True, "Normalise advantages per minibatch.")
    network: str = opt(
        "", "Your own networks, as 'package.module:factory' (the same contract as an env given by import path): "
        "factory(spec, ppo_cfg, mask_cfg, n_agents) returns an AgentNets-compatible module (docs/ARCHITECTURE.md, "
        "'Networks'). Empty: the built-in MLP, or the CNN for image observations.")


@dataclass
class LearnerConfig:
    fragments_per_batch: int = opt(1, "Fragments from one agent that make its batch.", ge=1)
    max_policy_lag: int = opt(4, "Drop fragments whose policy version lags by more than this many updates.", ge=0)
    batch_deadline_s: float = opt(10.0, "Update with the agents that have a batch once this much time passed since the first did.", gt=0.0)
    liveness_s: float = opt(15.0, "An agent with no traffic for this long is not waited for.", gt=0.0)
    checkpoint_every: int = opt(20, "Write an atomic checkpoint every this many updates.", ge=1)
    checkpoint_seconds: float = opt(
        60.0, "Also write a checkpoint when this many seconds passed since the last one (0: only "
        "learner.checkpoint_every counts): bounds the training a restarted learner loses.", ge=0.0)
    device: str = opt("auto", "auto (CUDA when present), cpu, cuda or cuda:N.")
    torch_threads: int = opt(1, "torch threads in the learner.", ge=1, le=256)
    resume: bool = opt(False, "Continue from the run directory's last checkpoint.")
    resume_if_checkpoint: bool = opt(
        False, "Continue from the run directory's last checkpoint when there is one, else start fresh (for a "
        "supervisor or pod that restarts the learner with the same command).")
    fragment_queue: int = opt(64, "High-water mark (messages) of the learner's fragment socket; a full pipe blocks actors.", ge=1)


@dataclass
class BrokerConfig:
    top_k: int = opt(64, "Size of the shared critical-state buffer (K).", ge=1, le=100_000)
    merge_rho: float = opt(0.98, "Cosine similarity at which a reported state merges with a buffered one.", gt=0.0, le=1.0)
    age_decay: float = opt(0.98, "Factor applied to every buffered score at each snapshot, so stale entries sink.", gt=0.0, le=1.0)
    min_score: float = opt(
        0.5, "Entries whose aged score falls below this are forgotten (0: never; they then leave only when a full "
        "buffer needs the room). With age_decay 0.98, a state reported once at m = 1 leaves after 35 snapshots "
        "unless someone reports it again. The default is mask.tau's default: below it the state is no longer "
        "'confidently critical' for anyone.", ge=0.0, le=1.0)
    snapshot_every: int = opt(50, "Broadcast a full snapshot every this many steps of the report step clock.", ge=1)
    save_snapshots: bool = opt(True, "Append every snapshot to <run>/critical/snapshots.jsonl.")


@dataclass
class CommConfig:
    enabled: bool = opt(True, "Share critical states between agents (False: the NoComm ablation).")
    latency_ms: float = opt(0.0, "Fixed latency added on every broker->actor link.", ge=0.0)
    jitter_ms: float = opt(0.0, "Uniform extra delay in [0, jitter] per message.", ge=0.0)
    loss: float = opt(0.0, "Loss probability per message (stationary rate for the bursty model).", ge=0.0, lt=1.0)
    loss_model: str = opt("iid", "iid or bursty (Gilbert-Elliott).", choices=["iid", "bursty"])
    burst_len: float = opt(4.0, "Mean length of a loss burst in the bursty model (messages).", ge=1.0)
    reorder: float = opt(0.0, "Probability that a message is held back by reorder_ms so later ones overtake it.", ge=0.0, le=1.0)
    reorder_ms: float = opt(20.0, "Extra delay of a reordered message.", ge=0.0)
    bandwidth_bps: float = opt(0.0, "Bandwidth cap per link in bytes/s (0: none).", ge=0.0)
    topology: str = opt("full", "Who sees whose critical states.", choices=["full", "ring", "star", "random-k", "explicit"])
    random_k: int = opt(2, "Neighbours per agent in the random-k topology.", ge=1)
    adjacency: dict = opt({}, "Explicit topology: {receiver: [sources]}.")
    impair_reports: bool = opt(False, "Apply the impairment model to the actor->broker report path too.")
    seed: int = opt(0, "Seed of the impairment model and random topologies.", ge=0)


@dataclass
class NetConfig:
    host: str = opt("127.0.0.1", "Address where the broker and the learner bind, and actors connect.")
    broker_host: str = opt("", "Host actors use to reach the broker (empty: net.host).")
    learner_host: str = opt("", "Host actors use to reach the learner (empty: net.host).")
    learner_fragments_port: int = opt(5555, "Learner PULL port for fragments.", ge=1, le=65535)
    learner_weights_port: int = opt(5556, "Learner PUB port for weights and stop.", ge=1, le=65535)
    learner_router_port: int = opt(5557, "Learner ROUTER port: current weights on request.", ge=1, le=65535)
    broker_reports_port: int = opt(5558, "Broker PULL port for critical reports.", ge=1, le=65535)
    broker_snapshots_port: int = opt(5559, "Broker PUB port for critical snapshots.", ge=1, le=65535)
    broker_router_port: int = opt(5560, "Broker ROUTER port: current snapshot on request.", ge=1, le=65535)
    auto_ports: bool = opt(
        True, "`magicmask run` on a loopback net.host takes a free port for every socket port still at its "
        "default, and a free block for net.metrics_port when it is at its default and net.metrics_host is "
        "loopback, and writes them to the run's config.yaml: several runs then share one machine. Ports set to "
        "other values, every port with false here or a non-loopback host: used as configured, and one that is "
        "in use stops the run before any process starts, naming what holds it.")
    metrics_host: str = opt("127.0.0.1", "Address of every Prometheus metrics endpoint.")
    metrics_port: int = opt(9400, "Broker metrics port; the learner uses +1 and actor i uses +2+i (0: off).", ge=0, le=65535)
    actor_metrics_port: int = opt(
        0, "Metrics port of every actor, whatever its agent id (pods: each actor is alone in its pod, so all use "
        "one port); 0: net.metrics_port + 2 + agent id.", ge=0, le=65535)
    max_message_mb: float = opt(64.0, "Messages larger than this are refused by every receiver.", gt=0.0)
    heartbeat_s: float = opt(
        1.0, "Heartbeat interval: the learner and the broker publish a Heartbeat (topic 'hb') this often; an actor "
        "counts any traffic from a peer as a heartbeat and deems it silent after 3 intervals without any (the "
        "ZeroMQ guide's Paranoid Pirate rule).", gt=0.0)
    insecure: bool = opt(
        False, "Allow binding to a non-loopback net.host without CURVE keys (security.keys_dir empty): traffic is "
        "then neither authenticated nor encrypted. Without it such a config is refused.")


@dataclass
class SecurityConfig:
    keys_dir: str = opt(
        "", "CURVE keys folder made by `magicmask keys generate DIR` (public_keys/ = the allow-list of clients, "
        "private_keys/<name>.key_secret = each process's key pair). Empty: no authentication or encryption.")
    key_name: str = opt(
        "", "This process's key pair in private_keys/ (empty: broker, learner or actor-<agent id>). Set per "
        "process with --set when one config is shared.")


@dataclass
class ExplainConfig:
    episodes: int = opt(100, "Evaluation episodes per agent that `magicmask explain` records and explains (M).", ge=1)
    first_seed: int = opt(1_000_000, "Seed of the first evaluation episode (episode i uses first_seed + i).", ge=0)
    methods: str = opt(",".join(EXPLAINERS), f"Comma-separated explainers to run: {', '.join(EXPLAINERS)}.")
    k_fractions: str = opt("0.1,0.2,0.3,0.4", "Comma-separated K of the fidelity test, as fractions of the episode.")
    fidelity_mode: str = opt(
        "both", "Which steps the fidelity test perturbs: window (the longest contiguous run of the top-K steps), "
        "topk (all top-K steps, the paper's variant) or both; metrics.json names the topk numbers with a "
        "'topk_' prefix (docs/metrics.md).", choices=["window", "topk", "both"])
    replays: int = opt(1, "Fidelity test: replays per episode, K and mode, each with its own random actions (and "
                       "random control steps), averaged; more replays narrow the intervals for the same episodes.", ge=1)
    workers: int = opt(0, "Processes that fit the explainers and run the fidelity test, one agent at a time each "
                       "(agents are independent; 0: one per CPU, at most one per agent; 1: all in the explaining "
                       "process).", ge=0)
    opponent: str = opt(
        "peers", "Who plays the other seats in explanation episodes of shared-world envs: random (uniform random "
        "legal), lookahead (connect4: win now, else block, else random), search:<depth> (connect4: alpha-beta "
        "to that depth, with a little noise), peers (the run's other trained policies: sampled in competitive "
        "envs, greedy in cooperative ones) or self (the explained agent's own policy in every seat). In a "
        "cooperative env a random teammate makes joint critical steps meaningless, so envs given by import path "
        "use the peers.")
    statemask_steps: int = opt(20_000, "StateMask baseline: env steps of PPO training of its post-hoc mask per agent.", ge=0)
    edge_epochs: int = opt(30, "EDGE baseline: training epochs of its GRU + sparse GP model.", ge=1)
    lazymdp_epochs: int = opt(30, "LazyMDP baseline: fitted-Q iterations of its post-hoc Q head, at least (it runs "
                              "as many as the longest episode when that is more).", ge=1)
    team_episodes: int = opt(20, "Team episodes of the fidelity test's team window in cooperative shared worlds "
                             "(highway, grf-3v1; every agent greedy, seeds from first_seed); 0: no team window.", ge=0)
    top_states: int = opt(10, "Critical states per agent written to critical_states.jsonl and shown in the report.", ge=1)
    seed: int = opt(0, "Seed of the explainers' own randomness (baseline training, perturbations, random windows).", ge=0)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    comm: CommConfig = field(default_factory=CommConfig)
    net: NetConfig = field(default_factory=NetConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)

    # ---- derived values, computed here once so every process agrees ----
    def broker_addr(self) -> str:
        return self.net.broker_host or self.net.host

    def learner_addr(self) -> str:
        return self.net.learner_host or self.net.host

    def metrics_port_of(self, role: str, agent: int = 0) -> int:
        """Port of a process's metrics endpoint (0: metrics off)."""
        if self.net.metrics_port == 0:
            return 0
        if role == "actor" and self.net.actor_metrics_port:
            return self.net.actor_metrics_port
        return self.net.metrics_port + {"broker": 0, "learner": 1, "actor": 2 + agent}[role]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Environment variables that override addresses (set by Kubernetes manifests or by hand).
ENV_OVERRIDES = {
    "MAGICMASK_HOST": "net.host",
    "MAGICMASK_BROKER_HOST": "net.broker_host",
    "MAGICMASK_LEARNER_HOST": "net.learner_host",
    "MAGICMASK_METRICS_HOST": "net.metrics_host",
}


# The six socket ports of a run (net.<field>); metrics ports are derived from net.metrics_port.
PORT_FIELDS = ("learner_fragments_port", "learner_weights_port", "learner_router_port",
               "broker_reports_port", "broker_snapshots_port", "broker_router_port")


def port_overrides(ports: list[int], metrics_port: int | None = None) -> list[str]:
    """`--set` items that put a run's six sockets on `ports` (e.g. free ones) and its metrics on metrics_port
    (None: leave net.metrics_port as configured; 0: metrics off)."""
    if len(ports) != len(PORT_FIELDS):
        raise ValueError(f"port_overrides: {len(PORT_FIELDS)} ports needed, got {len(ports)}")
    items = [f"net.{name}={port}" for name, port in zip(PORT_FIELDS, ports)]
    return items + ([] if metrics_port is None else [f"net.metrics_port={metrics_port}"])


def parse_override(item: str) -> tuple[str, Any]:
    """One `--set section.field=value` item as (path, value); the value is read as YAML (3e-4, true, [1, 2])."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.field=value")
    key, value = item.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else ""


def _sections() -> dict[str, type]:
    return {f.name: f.type if isinstance(f.type, type) else globals()[f.type] for f in dataclasses.fields(Config)}


def _field(section: str, name: str) -> dataclasses.Field:
    sections = _sections()
    if section not in sections:
        raise ConfigError(f"unknown config section '{section}'; allowed: {', '.join(sections)}")
    fields = {f.name: f for f in dataclasses.fields(sections[section])}
    if name not in fields:
        raise ConfigError(f"unknown config field '{section}.{name}'; allowed in '{section}': {', '.join(fields)}")
    return fields[name]


def _field_type(section: str, f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(_sections()[section])
    t = hints[f.name]
    return typing.get_origin(t) or t if not isinstance(t, types.UnionType) else str


def _coerce(path: str, t: type, value: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or say clearly why not."""
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{path}={value!r}: expected true or false")
    if t is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected an integer")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}={value!r}: expected an integer") from None
        if f != int(f):
            raise ConfigError(f"{path}={value!r}: expected an integer")
        return int(f)
    if t is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}={value!r}: expected a number") from None
    if t is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={value!r}: expected a mapping")
        return value
    if t is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected a string")
        return str(value)
    raise ConfigError(f"{path}: unsupported field type {t}")


def set_value(cfg: Config, path: str, value: Any) -> None:
    """Set `section.field` from a YAML or command-line value, type-checked."""
    if path.count(".") != 1:
        raise ConfigError(f"config path '{path}' must be 'section.field', e.g. ppo.lr")
    section, name = path.split(".")
    f = _field(section, name)
    setattr(getattr(cfg, section), name, _coerce(path, _field_type(section, f), value))


def validate(cfg: Config) -> Config:
    """Check every field against its declared range or choices, then the cross-field rules."""
    for section_name, section_type in _sections().items():
        section = getattr(cfg, section_name)
        for f in dataclasses.fields(section_type):
            v = getattr(section, f.name)
            m = f.metadata
            path = f"{section_name}.{f.name}"
            t = _field_type(section_name, f)
            _coerce(path, t, v)  # type check
            if m.get("choices") is not None and v not in m["choices"]:
                raise ConfigError(f"{path}={v!r}: allowed values are {', '.join(map(str, m['choices']))}")
            for key, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                  ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
                if m.get(key) is not None and not ok(v, m[key]):
                    raise ConfigError(f"{path}={v!r}: must be {word} {m[key]}")
    if cfg.ppo.is_floor > cfg.ppo.is_clip:
        raise ConfigError(f"ppo.is_floor={cfg.ppo.is_floor} must be <= ppo.is_clip={cfg.ppo.is_clip}")
    if cfg.actor.eps_min > cfg.actor.eps0:
        raise ConfigError(f"actor.eps_min={cfg.actor.eps_min} must be <= actor.eps0={cfg.actor.eps0}")
    if (cfg.actor.fragment_len * cfg.env.copies) % cfg.ppo.minibatches:
        raise ConfigError(
            f"ppo.minibatches={cfg.ppo.minibatches} must divide actor.fragment_len*env.copies="
            f"{cfg.actor.fragment_len * cfg.env.copies}")
    ports = {k: getattr(cfg.net, k) for k in PORT_FIELDS}
    if len(set(ports.values())) != len(ports):
        raise ConfigError(f"net ports must differ, got {ports}")
    if cfg.net.metrics_port:
        used = range(cfg.net.metrics_port, cfg.net.metrics_port + 2 + cfg.run.agents)
        clash = [k for k, v in ports.items() if v in used]
        if clash or used.stop - 1 > 65535:
            raise ConfigError(f"net.metrics_port={cfg.net.metrics_port}: its range {used.start}-{used.stop - 1} "
                              f"(broker, learner, one per agent) overlaps {clash or 'the port limit 65535'}")
    if cfg.net.metrics_port and cfg.net.actor_metrics_port in {*ports.values(), *used[:2]}:  # 0 is never in
        raise ConfigError(f"net.actor_metrics_port={cfg.net.actor_metrics_port}: clashes with another net port")
    check_security(cfg)
    if cfg.comm.topology == "explicit":
        for r, srcs in cfg.comm.adjacency.items():
            ids = [r, *srcs] if isinstance(srcs, list) else None
            if ids is None or not all(isinstance(i, int) and 0 <= i < cfg.run.agents for i in ids):
                raise ConfigError(f"comm.adjacency={cfg.comm.adjacency!r}: expected {{receiver: [sources]}} "
                                  f"with agent ids in 0..{cfg.run.agents - 1}")
    methods = [x.strip() for x in cfg.explain.methods.split(",") if x.strip()]
    if not methods or any(x not in EXPLAINERS for x in methods):
        raise ConfigError(f"explain.methods={cfg.explain.methods!r}: a comma-separated subset of {', '.join(EXPLAINERS)}")
    check_opponent(cfg.explain.opponent, "explain.opponent")
    opponent_mix(cfg.env.opponents)
    try:
        ks = [float(x) for x in cfg.explain.k_fractions.split(",")]
    except ValueError:
        ks = []
    if not ks or any(not 0 < k <= 1 for k in ks):
        raise ConfigError(f"explain.k_fractions={cfg.explain.k_fractions!r}: comma-separated fractions in (0, 1]")
    check_env_name(cfg.env.name)
    return cfg


def load(path: str | Path | None = None, overrides: list[str] | None = None, environ=None) -> Config:
    """Defaults <- YAML file <- `--set` overrides <- address environment variables, then validate."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r}: expected a mapping of sections at the top level")
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"config file {str(p)!r}: section '{section}' must be a mapping")
            for name, value in values.items():
                set_value(cfg, f"{section}.{name}", value)
    for item in overrides or []:
        set_value(cfg, *parse_override(item))
    environ = os.environ if environ is None else environ
    for var, key in ENV_OVERRIDES.items():
        if environ.get(var):
            set_value(cfg, key, environ[var])
    return validate(cfg)


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def describe() -> str:
    """Every field with its default and help text (the config reference in docs/ is made from this)."""
    lines = []
    for section_name, section_type in _sections().items():
        lines.append(f"\n## {section_name}\n\n| field | default | help |\n|---|---|---|")
        for f in dataclasses.fields(section_type):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            allowed = ""
            if f.metadata.get("choices"):
                allowed = f" Allowed: {', '.join(map(str, f.metadata['choices']))}."
            lines.append(f"| `{section_name}.{f.name}` | `{default!r}` | {f.metadata['help']}{allowed} |")
    return "\n".join(lines) + "\n"
