"""`magicmask curves`: the learning curves read from metrics.jsonl (training returns and every evaluation,
at the agent's env steps), their summary lines and the PNG."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from magicmask.curves import read_curves, summary

ROOT = Path(__file__).resolve().parents[2]


def _write(run_dir: Path) -> None:
    rows = [{"version": 1, "agents": {"0": {"env_steps": 512, "mean_return": 1.0, "eval": {"return_plain": 0.5}},
                                      "1": {"env_steps": 512, "mean_return": float("nan")}}},
            {"version": 2, "agents": {"0": {"env_steps": 1024, "mean_return": 2.0}}},
            {"version": 3, "agents": {"0": {"env_steps": 1536, "mean_return": 2.5, "eval": {"return_plain": 2.0}},
                                      "1": {"env_steps": 1024, "mean_return": 3.0, "eval": {"return_plain": 1.0}}}}]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_read_curves_and_summary(tmp_path):
    _write(tmp_path)
    c = read_curves(tmp_path)
    assert c["0"]["mean_return"] == [(512, 1.0), (1024, 2.0), (1536, 2.5)]
    assert c["0"]["eval.return_plain"] == [(512, 0.5), (1536, 2.0)]
    assert c["1"]["mean_return"] == [(1024, 3.0)]             # NaN (no episode ended) is left out
    assert summary(c) == ["agent 0 eval.return_plain: 0.5 at 512 steps -> 2 at 1536 steps",
                          "agent 1 eval.return_plain: 1 at 1024 steps -> 1 at 1024 steps"]
    with open(tmp_path / "metrics.jsonl", "a") as f:   # a learner killed mid-write leaves a torn last line
        f.write('{"version": 4, "agents": {"0": {"env_st')
    assert read_curves(tmp_path) == c
    with pytest.raises(FileNotFoundError, match="no learner metrics"):
        read_curves(tmp_path / "missing")


def test_curves_command_writes_a_png(tmp_path):
    _write(tmp_path / "run")
    res = subprocess.run([sys.executable, "-m", "magicmask.cli", "curves", str(tmp_path / "run")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    png = tmp_path / "run" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "agent 0 eval.return_plain" in res.stdout
