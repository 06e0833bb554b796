"""`magicmask explain` / `compare` / `sweep` and the metrics.

One short `gates` run is trained once for the module (about a minute on 2 cores) and explained once with
every available explainer plus a stand-in defined here; the tests then read the files it wrote. A connect4
"run" with untrained networks (no training needed) checks the shared-world path and rendered frames.
"""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from magicmask.explain import metrics as MX
from magicmask.cli import main as cli_main
from magicmask.explain.baselines import make_explainer
from magicmask.explain.pipeline import IMPORTANCE_COLUMNS
from magicmask.explain.fidelity import FIDELITY_COLUMNS
from magicmask.protocol import config as C

ROOT = Path(__file__).resolve().parents[2]
EPISODES = 10
K_FRACS = (0.1, 0.2, 0.3, 0.4)
class StandIn:
    """A tiny explainer with the baselines' interface: importance = whether the observation shows a cue
    (gates' one-hot of the correct action after the L step slots): an oracle for gates."""
    name = "standin"

    def __init__(self, cfg):
        self.L = int((cfg.env.kwargs or {}).get("length", 16))
        self.fit_seconds = self.score_seconds = 0.0

    def fit(self, run, agent, episodes, seed):
        self.fit_seconds = 0.001

    def importance(self, ep):
        return ep.obs[:, self.L:].sum(axis=1).astype(np.float64) + 1e-3 * np.arange(ep.length)[::-1]


def factory(name, cfg):
    return StandIn(cfg) if name == "standin" else make_explainer(name, cfg)


@pytest.fixture(scope="module")
def gates_run(trained_gates_run):
    return trained_gates_run


@pytest.fixture(scope="module")
def explained(gates_run):
    from magicmask.api import explain_run as run_explain
    methods = list(C.EXPLAINERS) + ["standin"]
    over = [f"explain.episodes={EPISODES}", "explain.statemask_steps=2000",
            "explain.edge_epochs=3", "explain.lazymdp_epochs=3", "explain.top_states=4",
            f"explain.k_fractions={','.join(map(str, K_FRACS))}"]
    out = run_explain(gates_run, overrides=over, explainer_factory=factory, report=False, methods=methods)
    return gates_run, out, methods


def _csv(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        return header, [dict(zip(header, row)) for row in r]


def test_files_exist_with_exact_columns(explained):
    _, out, _ = explained
    for name in ("importance.csv", "fidelity.csv", "critical_states.jsonl", "metrics.json", "summary.json"):
        assert (out / name).is_file(), name
    assert tuple(_csv(out / "importance.csv")[0]) == IMPORTANCE_COLUMNS
    assert tuple(_csv(out / "fidelity.csv")[0]) == FIDELITY_COLUMNS
    assert IMPORTANCE_COLUMNS == ("method", "episode", "seed", "agent", "step", "importance", "action", "reward",
                                  "true_critical")
    assert FIDELITY_COLUMNS == ("method", "agent", "mode", "k", "episode", "window_start", "window_len", "episode_len",
                                "return_orig", "return_perturbed", "reward_drop_pct", "fidelity_score",
                                "control_reward_drop_pct")


def test_every_method_scores_every_step_and_has_fidelity_rows(explained):
    run_dir, out, methods = explained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == {}, summary["errors"]
    agents = summary["agents"]
    _, imp = _csv(out / "importance.csv")
    _, fid = _csv(out / "fidelity.csv")
    for m in methods:
        rows = [r for r in imp if r["method"] == m]
        for a in range(agents):
            for e in range(EPISODES):
                steps = sorted(int(r["step"]) for r in rows if r["agent"] == str(a) and r["episode"] == str(e))
                assert steps == list(range(16)), (m, a, e)   # gates episodes are 16 steps
        assert all(math.isfinite(float(r["importance"])) for r in rows)
        assert all(r["true_critical"] in ("0", "1") for r in rows)
        f = [r for r in fid if r["method"] == m]
        assert len(f) == agents * EPISODES * len(K_FRACS) * 2, m   # window and topk modes
        assert all(1 <= int(r["window_len"]) <= int(r["episode_len"]) for r in f)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(methods)
    for m in methods:
        for key in ("final_average_reward", "kl_divergence", "precision_at_k", "recall_at_2k", "inter_agent_fidelity",
                    "fidelity_score_k10", "reward_drop_pct_k10", "control_reward_drop_pct_k10", "fit_seconds",
                    "score_seconds"):
            assert key in metrics[m], (m, key)
        # MAGIC-MASK against each other method, paired on the same episodes: the mean of the per-episode
        # differences, i.e. the difference of the two methods' mean drops over the same rows
        if m != "magicmask":
            assert metrics[m]["magicmask_minus_drop_k10"] == pytest.approx(
                metrics["magicmask"]["reward_drop_pct_k10"] - metrics[m]["reward_drop_pct_k10"], abs=1e-9)
            lo, hi = metrics[m]["magicmask_minus_drop_k10_ci"]
            assert lo <= metrics[m]["magicmask_minus_drop_k10"] <= hi
    assert "magicmask_minus_drop_k10" not in metrics["magicmask"]


def test_magicmask_finds_the_gates_and_beats_the_random_window(explained):
    _, out, _ = explained
    mm = json.loads((out / "metrics.json").read_text())["magicmask"]
    assert mm["precision_at_k"] >= 0.8, mm
    assert mm["reward_drop_pct_k10"] > mm["control_reward_drop_pct_k10"], mm
    assert mm["fidelity_score_k10"] > -math.log(1e3) + math.log(1), mm   # its windows change the return
    assert mm["reward_preservation"] is not None and mm["reward_preservation"] >= 0.8, mm
    assert 0.0 <= mm["kl_divergence"]
    # the stand-in oracle agrees: it is precise too
    assert json.loads((out / "metrics.json").read_text())["standin"]["precision_at_k"] >= 0.99


def test_critical_states_have_observations_and_frames(explained):
    _, out, _ = explained
    recs = [json.loads(line) for line in (out / "critical_states.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(recs) == 4 * summary["agents"]
    for r in recs:
        assert {"agent", "episode", "seed", "step", "importance", "action", "observation", "frame"} <= set(r)
        assert len(r["observation"]) == 16 + 4
        assert (out / "frames" / r["frame"]).read_bytes()[:4] == b"\x89PNG"
    # the highest-m states of a trained gates agent are gates
    assert np.mean([r["true_critical"] for r in recs]) >= 0.8


def test_compare_writes_a_row_per_metric(explained, tmp_path, capsys):
    run_dir, out, methods = explained
    assert cli_main(["compare", str(run_dir), "--reuse", "--out", str(tmp_path), "--no-report"]) == 0
    md = (tmp_path / "compare.md").read_text()
    header, rows = _csv(tmp_path / "compare.csv")
    assert header == ["env", "method", "metric", "mean", "std", "n_runs", "ci_lo", "ci_hi", "significant"]
    metrics = json.loads((out / "metrics.json").read_text())
    names = {k for d in metrics.values() for k in d if not k.endswith("_ci")}   # intervals go with their metric
    table = [line for line in md.splitlines() if line.startswith("| gates |")]
    assert sorted(line.split("|")[2].strip() for line in table) == sorted(names)
    # one run: the interval shown is the run's own bootstrap interval, marked when it excludes 0
    lo, hi = metrics["magicmask"]["drop_minus_control_k10_ci"]
    row = next(r for r in rows if r["method"] == "magicmask" and r["metric"] == "drop_minus_control_k10")
    assert float(row["ci_lo"]) == pytest.approx(lo, rel=1e-5) and float(row["ci_hi"]) == pytest.approx(hi, rel=1e-5)
    assert row["significant"] == ("+" if lo > 0 else "-" if hi < 0 else "")
    cols = [c.strip() for c in md.splitlines()[[i for i, l in enumerate(md.splitlines()) if l.startswith("| env")][0]].split("|")]
    assert [c for c in cols if c][2:] == list(C.EXPLAINERS) + ["standin"]
    assert {r["method"] for r in rows} == set(methods)


def test_explain_command_line_on_the_gates_run(explained, capsys):
    run_dir, _, _ = explained
    rc = cli_main(["explain", str(run_dir), "--set", "explain.episodes=3", "--set",
                   "explain.methods=magicmask,random", "--no-report"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "report folder:" in printed and "magicmask" in printed
    assert cli_main(["explain", str(run_dir / "nope")]) == 2


# ---------------- connect4: shared world, rendered frames, no training ----------------
def test_explain_connect4_run_with_untrained_nets(tmp_path):
    from magicmask.actors.envs import make_env
    from magicmask.learner import checkpoint
    from magicmask.models.networks import AgentNets
    from magicmask.protocol import config as C
    from magicmask.api import explain_run as run_explain
    cfg = C.load(ROOT / "deploy/configs/connect4.yaml", ["run.agents=2"], environ={})
    run_dir = tmp_path / "c4"
    run_dir.mkdir()
    C.save(cfg, run_dir / "config.yaml")
    spec = make_env(cfg, 0).spec
    torch.manual_seed(0)
    nets = AgentNets(2, spec.obs_dim, spec.n_actions, cfg.ppo.hidden)
    checkpoint.save({"nets": nets.state_dict(), "version": 0}, run_dir / "checkpoints", 0)
    out = run_explain(run_dir, overrides=["explain.episodes=3", "explain.methods=magicmask,valuemax,random",
                                          "explain.top_states=2", "explain.k_fractions=0.1,0.4"], report=False)
    _, fid = _csv(out / "fidelity.csv")
    assert len(fid) == 3 * 2 * 3 * 2 * 2   # methods x agents x episodes x K x modes
    assert all(r["return_orig"] in ("-1", "0", "1") for r in fid)
    _, imp = _csv(out / "importance.csv")
    assert all(r["true_critical"] == "" for r in imp)     # connect4 reports no ground truth
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["magicmask"]["precision_at_k"] is None   # NaN -> null: not defined without ground truth
    recs = [json.loads(line) for line in (out / "critical_states.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all((out / "frames" / r["frame"]).is_file() for r in recs)
    assert json.loads((out / "summary.json").read_text())["d_max"] == {"0": 2.0, "1": 2.0}


# ---------------- metrics on hand numbers ----------------
def test_rank_correlation_and_precision_on_hand_numbers():
    assert MX.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert MX.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert MX.spearman([1, 1, 1], [1, 2, 3]) is None
    crit = np.array([0, 1, 0, 1, 0, 0], bool)
    p, r = MX.precision_recall(np.array([0.1, 0.9, 0.8, 0.2, 0.0, 0.0]), crit)   # top-2 {1, 2}; top-4 {1,2,3,0}
    assert (p, r) == (0.5, 1.0)
    assert MX.precision_recall(np.zeros(6), None) == (None, None)


def test_kl_of_kept_and_perturbed_steps():
    pi = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    legal = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
    keep = np.array([False, False, True])
    # step 0: log 3; step 1: pi uniform over its 2 legal actions -> 0; step 2 kept -> 0
    assert MX.kl_policy_masked(pi, legal, keep) == pytest.approx(math.log(3) / 3)
    assert MX.kl_policy_masked(pi, legal, np.ones(3, bool)) == 0.0


def test_sweep_dry_run_lists_every_cell_and_seed(capsys, tmp_path):
    rc = cli_main(["sweep", "--config", "deploy/configs/gates.yaml", "--seeds", "0,1", "--grid", "mask.tau=0.3,0.5",
                   "--grid", "comm.enabled=true,false", "--out", str(tmp_path), "--dry-run"])
    assert rc == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "magicmask.cli run" in line]
    assert len(lines) == 2 * 2 * 2
    assert sum("--set mask.tau=0.3" in line and "--set comm.enabled=false" in line and "--set run.seed=1" in line
               for line in lines) == 1


