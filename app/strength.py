"""`magicmask strength RUN_DIR`: how well a trained run's agents play: against the env's built-in players
(connect4), or as a team, against the networks they started from (cooperative shared worlds: grf-3v1, highway).

Each agent's greedy policy (the run's latest checkpoint, or --checkpoint) plays `games` games against each
opponent, first in even games and second in odd ones (`evaluate_vs`); the win share comes with its 95% Wilson
score interval (binomial: it stays inside [0, 1] where a normal interval would not), per agent and pooled over
the agents, and the lost games counted by what the agent's last move got wrong (missed a win, did not block,
played under a threat, or it faced a double or a stacked threat already: connect4's `loss_reason`). Written to
RUN_DIR/strength.json and printed as tables. The numbers the actors log during training
(vs_lookahead_win, vs_search2_win) use 50 games at a time and only those two players; this is the measurement
for a finished run, e.g. the search:4 goal of deploy/configs/connect4-strong.yaml.

Team worlds (`TeamWorld`): `games` team episodes, every seat played by its agent's greedy policy, once with the
run's checkpoint and once with the untrained networks it started from (version 0, as the learner seeds them),
on the same seeds. Per side the team return with its 95% t interval and each of the env's end statistics
(grf-3v1: goal, out_of_play, lost_ball; highway: crashed) with its Wilson interval where it is a 0/1 share;
then trained minus untrained per seed (paired), with its 95% bootstrap interval over the seeds. Written to
RUN_DIR/strength.json under "team". This is how docs/RESULTS.md measures whether grf-3v1 learned.

Other envs get a clear error.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from magicmask.protocol.errors import ConfigError

Z95 = 1.959963984540054


def wilson(wins: int, n: int, z: float = Z95) -> list[float]:
    """The Wilson score interval of a binomial share wins / n; [0, 1] for n = 0."""
    if n <= 0:
        return [0.0, 1.0]
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def measure(run_dir: str | Path, opponents: list[str], games: int, seed: int = 0,
            checkpoint: str | Path | None = None) -> dict:
    """{"version", "games", "opponents": {name: {"agents": [{win, loss, draw, win_ci}], "pooled": {...}}}}."""
    from magicmask.explain.baselines.base import one_thread
    from magicmask.explain.episodes import load_run
    with one_thread():   # one game at a time: single-row products, where a second BLAS thread only costs
        return _measure(load_run(run_dir, checkpoint), run_dir, opponents, games, seed)


def _measure(run, run_dir, opponents: list[str], games: int, seed: int) -> dict:
    from magicmask.explain.team import is_team_world
    if games < 1:
        raise ConfigError(f"--games {games}: at least 1")
    if is_team_world(run):
        return _measure_team(run, run_dir, games, seed)
    if run.cfg.env.name != "connect4":
        raise ConfigError(f"env {run.cfg.env.name!r} has no built-in players to play against and is not a "
                          f"cooperative team world (connect4 has: lookahead, search:<depth>, random; grf-3v1 "
                          f"and highway are measured as a team)")
    from magicmask.actors.envs.connect4 import LOSS_REASONS, builtin_player, evaluate_vs, features_of
    features = features_of(run.cfg)   # the observation planes the agents were trained on
    players = {}
    for name in opponents:
        try:
            players[name] = builtin_player(name)
        except ValueError as e:
            raise ConfigError(f"--opponents: {e}") from e
    out = {"version": run.version, "games": games, "seed": seed, "opponents": {}}
    for k, (name, player) in enumerate(players.items()):
        rows = []
        for agent, policy in enumerate(run.policies):
            losses = dict.fromkeys(LOSS_REASONS, 0)
            res = evaluate_vs(policy.greedy, player, games, seed + 1_000_003 * k + 7919 * agent, features, losses)
            wins = round(res["win"] * games)
            rows.append({**res, "win_ci": wilson(wins, games), "losses": losses})
        total = games * len(rows)
        wins = sum(round(r["win"] * games) for r in rows)
        pooled = {key: sum(r[key] for r in rows) / len(rows) for key in ("win", "loss", "draw")}
        pooled["losses"] = {why: sum(r["losses"][why] for r in rows) for why in LOSS_REASONS}
        out["opponents"][name] = {"agents": rows, "pooled": {**pooled, "win_ci": wilson(wins, total)}}
    Path(run_dir, "strength.json").write_text(json.dumps(out, indent=1))
    return out


def _measure_team(run, run_dir, games: int, seed: int) -> dict:
    """The team with the checkpoint's networks against the team with the untrained ones, on the same seeds."""
    from magicmask.explain.episodes import load_run
    from magicmask.explain.stats import bootstrap_ci, paired_differences, t_interval
    from magicmask.explain.team import record_team_episodes
    sides = {"trained": run, "untrained": load_run(run_dir, untrained=True)}
    played = {name: record_team_episodes(r, games, seed) for name, r in sides.items()}
    per_seed = {name: {"return": [ep.ret for ep in eps],
                       **{k: [ep.stats.get(k, float("nan")) for ep in eps] for k in eps[0].stats}}
                for name, eps in played.items()}
    out = {"version": run.version, "games": games, "seed": seed, "team": {}}
    for name, figures in per_seed.items():
        side = {}
        for key, values in figures.items():
            mean = float(sum(values) / len(values))
            share = all(v in (0.0, 1.0) for v in values)
            side[key] = {"mean": mean, "ci": wilson(round(sum(values)), len(values)) if share else t_interval(values),
                         "interval": "wilson" if share else "t"}
        out["team"][name] = side
    out["team"]["trained_minus_untrained"] = {
        key: {"mean": float(d.mean()), "ci": bootstrap_ci(d), "interval": "bootstrap, paired by seed"}
        for key in per_seed["trained"]
        for d in [paired_differences(per_seed["trained"][key], per_seed["untrained"][key])]}
    Path(run_dir, "strength.json").write_text(json.dumps(out, indent=1))
    return out


def table(result: dict) -> str:
    """A markdown table: one row per opponent, the pooled win share with its interval, then each agent's (team
    worlds: `_team_table`)."""
    if "team" in result:
        return _team_table(result)
    n_agents = len(next(iter(result["opponents"].values()))["agents"]) if result["opponents"] else 0
    head = "| opponent | all agents: win [95% CI] | " + " | ".join(f"agent {i}" for i in range(n_agents)) + " |"
    lines = [f"checkpoint version {result['version']}, {result['games']} games per agent and opponent "
             f"(half of them as the first player)", "", head, "|" + "---|" * (n_agents + 2)]
    for name, r in result["opponents"].items():
        lo, hi = r["pooled"]["win_ci"]
        cells = [f"{a['win']:.2f}" for a in r["agents"]]
        lines.append(f"| {name} | {r['pooled']['win']:.3f} [{lo:.3f}, {hi:.3f}] | " + " | ".join(cells) + " |")
    lines += ["", "Lost games, by the agent's last move before the loss (connect4's `loss_reason`):"]
    for name, r in result["opponents"].items():
        counts = r["pooled"]["losses"]
        lines.append(f"- {name}: {sum(counts.values())} lost: " + ", ".join(f"{why} {n}" for why, n in counts.items()))
    return "\n".join(lines)


def _team_table(result: dict) -> str:
    """A markdown table: one row per figure, trained, untrained and their paired difference with intervals."""
    team = result["team"]
    lines = [f"checkpoint version {result['version']} against the untrained networks (version 0), "
             f"{result['games']} team episodes each, seeds {result['seed']}..{result['seed'] + result['games'] - 1}, "
             f"every seat greedy", "",
             "| figure | trained [95% CI] | untrained [95% CI] | trained - untrained [95% CI] |", "|---|---|---|---|"]
    for key in team["trained"]:
        cells = [f"{c['mean']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]"
                 for c in (team["trained"][key], team["untrained"][key], team["trained_minus_untrained"][key])]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
