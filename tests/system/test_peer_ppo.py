"""deploy/peer_ppo.py, the single-process PPO loop deploy/bench_peer.py compares our system with: 2 agents
against the random player for 25 rollouts (about 15 s of CPU). Fixed seeds make it deterministic; the margin
is for other platforms' arithmetic. Its rows must read as a run's metrics.jsonl does, evaluations on the actors'
schedule, and the training must make the greedy policy beat the random player more often on the same games."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from magicmask.metrics_log import agent_records

ROOT = Path(__file__).resolve().parents[2]
T, E, ROLLOUTS, EVAL_EVERY = 128, 4, 25, 25

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_peer_loop_learns_and_reports_its_rows_and_target(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    res = subprocess.run(
        [sys.executable, "deploy/peer_ppo.py", "--steps", str(T * E * ROLLOUTS), "--target", "0",
         "--metrics", str(metrics), "--set", "run.agents=2", "--set", "env.opponents=random=1",
         "--set", f"env.eval_every={EVAL_EVERY}", "--set", "env.eval_episodes=50",
         "--set", f"actor.fragment_len={T}", "--set", f"env.copies={E}"],
        cwd=ROOT, capture_output=True, text=True, timeout=560, check=False)
    out = res.stdout[-3000:] + res.stderr[-3000:]
    assert res.returncode == 0, out
    summary = json.loads(res.stdout.split("summary: ", 1)[1])

    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["version"] for r in rows] == list(range(1, ROLLOUTS + 1)), out
    recs = agent_records(tmp_path)   # the reader of a run's metrics.jsonl
    assert {(r.agent, r.env_steps) for r in recs} == {(a, v * T * E) for a in (0, 1) for v in range(1, ROLLOUTS + 1)}
    evals = {(r.agent, r.env_steps): r.eval for r in recs if r.eval}
    assert set(evals) == {(a, s * T * E) for a in (0, 1) for s in (1, EVAL_EVERY)}, sorted(evals)   # first, then every
    assert all(0 <= e["vs_lookahead_win"] <= 1 for e in evals.values())

    # env steps/s: all agents' steps over the wall time; target 0 is reached at the first evaluation
    assert summary["env_steps"] == 2 * T * E * ROLLOUTS
    assert summary["steps_per_s"] == pytest.approx(summary["env_steps"] / summary["wall_s"], rel=0.01)
    assert summary["steps_to_target"] == T * E and 0 < summary["time_to_target_s"] < summary["wall_s"]

    # learning: the same 50 games (the evaluation's seeds) against the random player, before and after
    before = [evals[(a, T * E)]["vs_random_win"] for a in (0, 1)]
    after = [evals[(a, EVAL_EVERY * T * E)]["vs_random_win"] for a in (0, 1)]
    assert sum(after) / 2 >= sum(before) / 2 + 0.06 and all(x > y for x, y in zip(after, before)), (before, after)

