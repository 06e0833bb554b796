"""`magicmask commstudy` (app/commstudy/): the one-factor-at-a-time grid and its validation, the per-run
quantities and their aggregation on hand-made run directories (the formats the learner, the broker and
`magicmask explain` write), the 95% intervals per cell and the paired effects relative to the baseline, the
comm.seed design each run gets, and one real tiny study (2 cells, real processes) whose csv and HTML page are
checked: the channel figures must show the loss model's drops, and every embedded image must load."""
import base64
import csv
import io
import json
import math
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import yaml

from magicmask.cli import main as cli_main
from magicmask.cli import parser
from magicmask.commstudy.grid import Cell, StudyError
from magicmask.commstudy.options import DEFAULT_CONFIG, study_from_args
from magicmask.commstudy.plan import Study
from magicmask.commstudy.runs import METRIC_NAMES, aggregate, best_return, read_run, run_metrics
from magicmask.commstudy.study import run_study, write_outputs
from magicmask.commstudy.tables import EFFECT_COLUMNS
from magicmask.sweep import run_sweep
from magicmask.config_file import resolve_config
from magicmask.protocol import config as C
from tests.helpers import CHROMIUM, chromium


def study(*argv):
    args = parser().parse_args(["commstudy", "--out", "/tmp/unused", *argv])
    return study_from_args(args, ["commstudy", *argv])[0]


# ---------------- the grid ----------------
def test_default_grid_is_one_factor_at_a_time_from_the_baseline():
    s = study()
    assert [c.label for c in s.cells] == [
        "baseline", "nocomm", "latency=100ms", "latency=1000ms", "loss=0.5", "loss=0.9", "burst=0.5",
        "bandwidth=10000B/s", "topology=ring", "topology=star", "topology=random-1"]
    assert s.seeds == [0, 1, 2] and s.config == str(resolve_config(DEFAULT_CONFIG)) and s.target is None
    base = C.load(s.config, list(s.cells[0].overrides))
    for cell in s.cells[2:]:
        cfg = C.load(s.config, list(cell.overrides))
        changed = {f"comm.{k}" for k, v in vars(cfg.comm).items() if getattr(base.comm, k) != v}
        family = {"latency": {"comm.latency_ms", "comm.jitter_ms"}, "loss": {"comm.loss"},
                  "burst": {"comm.loss", "comm.loss_model"}, "bandwidth": {"comm.bandwidth_bps"},
                  "topology": {"comm.topology", "comm.random_k"}}[cell.axis]
        assert changed and changed <= family, (cell.label, changed)   # one factor only
    assert C.load(s.config, list(s.cells[1].overrides)).comm.enabled is False
    assert s.cells[3].overrides == ("comm.latency_ms=1000", "comm.jitter_ms=200")   # jitter 0.2 x latency
    assert s.cells[6].overrides == ("comm.loss=0.5", "comm.loss_model=bursty")


def test_full_grid_and_explicit_values():
    full = study("--full", "--seeds", "3,4,5")
    labels = [c.label for c in full.cells]
    assert full.seeds == [3, 4, 5] and len(labels) == 2 + 3 + 4 + 4 + 3 + 3
    assert {"latency=10ms", "loss=0.1", "burst=0.3", "burst=0.9", "bandwidth=100000B/s", "bandwidth=30000B/s"} <= set(labels)
    # a baseline value is the baseline cell, not a second one; values are normalised; --no-nocomm drops NoComm
    s = study("--axes", "latency", "--latency", "0,50.0,50", "--jitter", "0", "--no-nocomm")
    assert [(c.label, c.overrides) for c in s.cells] == [
        ("baseline", ()), ("latency=50ms", ("comm.latency_ms=50", "comm.jitter_ms=0"))]
    s = study("--axes", "topology,burst", "--topology", "random-k", "--random-k", "2", "--burst", "0.3")
    assert [c.label for c in s.cells] == ["baseline", "nocomm", "topology=random-2", "burst=0.3"]
    assert s.cells[2].overrides == ("comm.topology=random-k", "comm.random_k=2")


@pytest.mark.parametrize("argv, words", [
    (["--loss", "1.2"], ["--loss", "comm.loss", "'1.2'", "[0, 1)"]),
    (["--loss", "0.1,x"], ["--loss", "comm.loss", "'x'", "not a number", "[0, 1)"]),
    (["--latency", "-5"], ["--latency", "comm.latency_ms", "'-5'", "milliseconds >= 0"]),
    (["--bandwidth", "nan"], ["--bandwidth", "comm.bandwidth_bps", "'nan'", "bytes per second"]),
    (["--topology", "mesh"], ["--topology", "comm.topology", "'mesh'", "full, ring, star, random-k"]),
    (["--axes", "latency,delay"], ["--axes", "delay", "latency, loss, burst, bandwidth, topology"]),
    (["--burst", "0.95,-0.1"], ["--burst", "comm.loss", "'-0.1'", "[0, 1)"]),
    (["--seeds", "0,a"], ["--seeds", "'0,a'", "integers >= 0"]),
    (["--jitter", "-1"], ["--jitter", "comm.jitter_ms", "-1", "0 to 10"]),
    (["--random-k", "0"], ["--random-k", "comm.random_k", "0", ">= 1"]),
    (["--axes", "loss", "--latency", "10"], ["--latency 10", "'latency' is not in --axes='loss'", "add it"]),
    (["--target-return", "high"], ["--target-return", "'high'", "auto or a number"]),
    (["--target-fraction", "1.5"], ["--target-fraction", "1.5", "(0, 1]"]),
    (["--set", "comm.seed=3"], ["--set comm.seed=3", "--comm-seed per-seed", "--comm-seed fixed"]),
])
def test_bad_option_names_the_field_value_and_allowed(argv, words):
    with pytest.raises(StudyError) as e:
        study(*argv)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_every_cell_config_is_validated_before_anything_runs(tmp_path, capsys):
    with pytest.raises(C.ConfigError, match=r"comm\.burst_len=0\.5: must be >= 1\.0"):
        study("--set", "comm.burst_len=0.5")
    # through the command line: a clear one-line error, exit code 2, and no study folder
    out = tmp_path / "never"
    assert cli_main(["commstudy", "--out", str(out), "--loss", "0.9,1"]) == 2
    err = capsys.readouterr().err
    assert "comm.loss" in err and "'1'" in err and "[0, 1)" in err and not out.exists()


def test_dry_run_prints_plan_and_estimate(tmp_path, capsys):
    out = tmp_path / "dry"
    assert cli_main(["commstudy", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "11 cells x 3 seeds = 33 runs" in text and "comm.loss=0.5 comm.loss_model=bursty" in text
    assert "comm.seed (per-seed): comm.seed = run.seed" in text
    est = float(re.search(r"idle 2-core machine: (\d+) min", text).group(1))
    assert 0 < est <= 30   # the default grid's budget (docs/COMMUNICATION.md has the basis)
    assert not out.exists()


def test_dry_run_from_another_directory_resolves_config_and_folder(tmp_path):
    """The runs start in subprocesses: a relative config, a preset name and a relative --out reach the plan as
    absolute paths, from a directory outside the repository."""
    tmp_path = tmp_path.resolve()
    (tmp_path / "mine.yaml").write_text(resolve_config(DEFAULT_CONFIG).read_text())
    preset = Path(str(files("magicmask.presets") / "commstudy-gates.yaml")).resolve()
    cases = ((["--config", "mine.yaml"], tmp_path / "mine.yaml"), (["--config", "commstudy-gates"], preset),
             ([], preset))
    for argv, expected in cases:
        res = subprocess.run([sys.executable, "-m", "magicmask.cli", "commstudy", "--dry-run", "--out", "study",
                              "--seeds", "0", "--axes", "loss", *argv], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        assert f"4 cells x 1 seeds = 4 runs of {expected} (gates" in res.stdout
        assert f"study folder: {tmp_path / 'study'}" in res.stdout
    assert not (tmp_path / "study").exists()


# ---------------- per-run quantities and aggregation ----------------
T0 = 1_000_000.0


def fake_run(run_dir: Path, *, agents=2, comm=True, evals=None, comm_figs=None, rounds=(), explain=None,
             train=None):
    """A run directory with the files commstudy reads. evals: {agent: [(steps, plain, masked)]}; train: {agent:
    [mean training return per learner row]};
    comm_figs: {agent: cumulative figures}; rounds: [(time, dropped receivers)]; explain: metrics of magicmask."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"run": {"agents": agents}, "comm": {"enabled": comm}}))
    rows, version = [], 0
    for a, curve in (evals or {}).items():
        for steps, plain, masked in curve:
            version += 1
            d = {"env_steps": steps, "eval": {"return_plain": plain, "return_masked": masked}}
            rows.append({"time": steps / 100, "version": version, "agents": {str(a): d}})   # 100 steps/s
    for a, returns in (train or {}).items():
        for r in returns:
            version += 1
            rows.append({"time": 5.0, "version": version, "agents": {str(a): {"env_steps": 100, "mean_return": r}}})
    for a, figs in (comm_figs or {}).items():
        rows.append({"time": 9.99, "version": version + 1, "agents": {str(a): {"env_steps": 999, "comm": figs}}})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    (run_dir / "critical").mkdir()
    (run_dir / "critical" / "snapshots.jsonl").write_text(
        "".join(json.dumps({"seq": i + 1, "time": t, "dropped": d}) + "\n" for i, (t, d) in enumerate(rounds)))
    if explain is not None:
        (run_dir / "report").mkdir()
        (run_dir / "report" / "metrics.json").write_text(json.dumps({"magicmask": explain}))
    return run_dir


def figs(received, applied, gaps, delay, steps, use, age, stale, guided, at):
    return {"snapshots_received": received, "snapshots_applied": applied, "snapshot_gaps": gaps,
            "delay_s_sum": delay, "steps": steps, "use_steps": use, "age_at_use_s_sum": age,
            "stale_steps": stale, "guided_steps": guided, "at": at}


EXPLAIN = {"final_average_reward": 3.0, "fidelity_score_k10": 1.6, "reward_drop_pct_k10": 33.3,
           "inter_agent_fidelity": 0.5, "precision_at_k": 1.0}


def test_run_quantities_and_cell_aggregation(tmp_path):
    rounds = [(T0 + i, [1] if i in (2, 5) else ([0, 1] if i == 8 else [])) for i in range(10)]
    a = fake_run(tmp_path / "a", evals={0: [(256, 1.0, 0.5), (512, 3.0, 2.0), (768, 3.0, 3.0)],
                                        1: [(256, 2.8, 1.0), (512, 3.0, 3.0)]},
                 comm_figs={0: figs(6, 7, 1, 1.4, 800, 700, 350.0, 70, 80, T0 + 6.5),    # sees rounds 0..6
                            1: figs(5, 6, 0, 0.6, 800, 600, 120.0, 0, 40, T0 + 9.5)},    # sees rounds 0..9
                 rounds=rounds, explain=EXPLAIN, train={0: [1.0, 2.0, 3.0], 1: [2.0]})
    b = fake_run(tmp_path / "b", evals={0: [(256, 3.0, 3.0)], 1: [(256, 1.0, 1.0), (512, 2.0, 2.0)]},
                 comm_figs={0: figs(3, 3, 0, 0.3, 800, 800, 80.0, 0, 0, T0 + 2.5),
                            1: figs(3, 3, 0, 0.3, 800, 800, 240.0, 0, 0, T0 + 2.5)},
                 rounds=rounds, explain={**EXPLAIN, "fidelity_score_k10": 1.2, "inter_agent_fidelity": None})
    nocomm = fake_run(tmp_path / "n", comm=False, evals={0: [(256, 3.0, 3.0)], 1: [(256, 3.0, 3.0)]},
                      comm_figs={0: figs(0, 1, 0, 0.01, 800, 0, 0.0, 0, 0, T0 + 9),
                                 1: figs(0, 1, 0, 0.01, 800, 0, 0.0, 0, 0, T0 + 9)})
    failed = tmp_path / "never-trained"
    runs = [read_run("base", 0, a), read_run("base", 1, b), read_run("nocomm", 0, nocomm),
            read_run("broken", 0, failed, error="RuntimeError: sweep: training failed")]
    assert best_return(runs) == 3.0
    target = 0.9 * 3.0
    m = [run_metrics(r, target) for r in runs]
    ra = m[0]
    assert ra["steps_to_target"] == (512 + 256) / 2          # agent 0 first >= 2.7 at 512, agent 1 at 256
    assert ra["steps_to_target_masked"] == (768 + 512) / 2
    assert ra["target_reached"] == 1.0
    assert ra["train_return"] == pytest.approx((2.0 + 2.0) / 2)   # per agent over its rows, then over agents
    assert ra["fidelity_k10"] == 1.6 and ra["final_return"] == 3.0 and ra["precision_at_k"] == 1.0
    # agent 0's figures cover rounds 0..6 (its one drop, round 8, comes later), agent 1's rounds 0..9 (drops 2, 5, 8)
    assert ra["snapshots_sent"] == 7 + 10 and ra["snapshots_dropped"] == 0 + 3
    assert ra["snapshots_delivered"] == 11 and ra["delivered_share"] == pytest.approx(11 / 17)
    assert ra["snapshots_undelivered"] == 17 - 3 - 11
    assert ra["snapshot_gaps"] == 1
    assert ra["delay_s"] == pytest.approx(2.0 / 13)
    assert ra["age_at_use_s"] == pytest.approx(470 / 1300)
    assert ra["age_at_use_steps"] == pytest.approx(470 / 1300 * 100)   # in steps at the run's 100 steps/s
    assert ra["stale_share"] == pytest.approx(70 / 1300) and ra["guided_share"] == pytest.approx(120 / 1600)
    rb = m[1]
    assert rb["steps_to_target"] is None and rb["target_reached"] == 0.5   # agent 1 never reached 2.7
    assert rb["steps_to_target_masked"] is None and rb["inter_agent_fidelity"] is None
    assert rb["train_return"] is None   # no training returns logged: unavailable, not 0
    rn = m[2]   # NoComm: nothing sent, no snapshot in use: age, delay and shares are unavailable, not 0
    assert rn["snapshots_sent"] == 0 and rn["snapshots_delivered"] == 0 and rn["guided_share"] == 0
    assert rn["delivered_share"] is None and rn["age_at_use_s"] is None and rn["delay_s"] is None
    assert rn["fidelity_k10"] is None and rn["steps_to_target"] == 256
    assert all(v is None for v in m[3].values())   # the failed run has nothing

    cells = [Cell("base", "baseline", "", ()), Cell("nocomm", "nocomm", "", ("comm.enabled=false",)),
             Cell("broken", "latency", "100", ("comm.latency_ms=100",))]
    rows = {r["cell"]: r for r in aggregate(cells, list(zip(runs, m)))}
    base = rows["base"]
    assert base["runs"] == 2 and base["complete"] == 2
    assert base["fidelity_k10"] == pytest.approx(1.4) and base["fidelity_k10_std"] == pytest.approx(np.std([1.6, 1.2], ddof=1))
    assert base["steps_to_target"] == 384 and base["steps_to_target_n"] == 1 and base["steps_to_target_std"] == 0.0
    assert base["inter_agent_fidelity_n"] == 1 and base["target_reached"] == pytest.approx(0.75)
    assert rows["nocomm"]["complete"] == 0 and rows["nocomm"]["age_at_use_s"] is None
    assert rows["broken"]["runs"] == 1 and rows["broken"]["complete"] == 0
    assert all(rows["broken"][f"{k}_n"] == 0 for k in METRIC_NAMES)

    # the files: empty where unavailable (never a number made up), tables with the n of partial cells
    s = Study(DEFAULT_CONFIG, [0, 1], cells, tmp_path / "study", command="magicmask commstudy (test)")
    meta = {"command": s.command, "runs": 4, "wall_s": 61.0, "machine": "test", "load_start": 0.5, "load_end": 1.5}
    write_outputs(s, runs, meta)
    table = {r["cell"]: r for r in csv.DictReader((s.out / "commstudy.csv").open())}
    assert table["base"]["steps_to_target"] == "384" and table["base"]["steps_to_target_n"] == "1"
    assert table["nocomm"]["age_at_use_s"] == "" and table["broken"]["final_return"] == ""
    assert table["base"]["steps_to_target_ci_lo"] == "" and table["base"]["fidelity_k10_ci_hi"] != ""   # n=1 / 2
    runs_csv = list(csv.DictReader((s.out / "commstudy_runs.csv").open()))
    assert [r["error"] for r in runs_csv][3].startswith("RuntimeError") and runs_csv[1]["steps_to_target"] == ""
    md = (s.out / "commstudy.md").read_text()
    assert "| base | 2/2 | 384 (n=1) |" in md and "Target return 2.7 (0.9 x the highest" in md
    assert "| broken | 0/1 | – |" in md
    study_json = json.loads((s.out / "study.json").read_text())
    assert study_json["target"] == pytest.approx(2.7) and study_json["wall_s"] == 61.0
    check_page(s.out / "index.html", n_images=4)
    for stem in ("learning", "channel", "curves", "effects"):
        assert (s.out / "img" / f"commstudy-{stem}.png").read_bytes()[:4] == b"\x89PNG"


def test_given_target_is_used_as_is(tmp_path):
    run = read_run("c", 0, fake_run(tmp_path / "r", evals={0: [(256, 1.0, 1.0), (512, 2.0, 2.0)],
                                                                1: [(256, 2.0, 2.0)]}))
    assert run_metrics(run, 2.0)["steps_to_target"] == 384
    assert run_metrics(run, None)["steps_to_target"] is None   # no target (no evaluations anywhere): empty
    assert run_metrics(run, 5.0)["target_reached"] == 0.0


def check_page(page: Path, n_images: int) -> None:
    """Every <img> is an embedded PNG that decodes (the page needs no other file); in headless Chromium (when
    installed) the page's own check counts no broken image."""
    from PIL import Image
    html = page.read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) == n_images
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.size[0] > 300 and im.size[1] > 150
            assert len(np.unique(np.asarray(im.convert("L")))) > 10   # drawn, not blank
    if CHROMIUM is None:
        return
    res = chromium(["--dump-dom", "--virtual-time-budget=10000", page.resolve().as_uri()])
    broken = re.search(r'<body[^>]*data-broken-images="(\d+)"', res.stdout)
    assert broken, res.stderr[-1500:]
    assert broken.group(1) == "0" and re.search(r'data-images="(\d+)"', res.stdout).group(1) == str(n_images)


# ---------------- intervals and effects relative to the baseline ----------------
T975 = {1: 12.7062, 2: 4.30265}   # Student t quantile 0.975 by degrees of freedom (printed tables)


def hand_interval(values):
    a = np.asarray(values, float)
    half = T975[len(a) - 1] * a.std(ddof=1) / math.sqrt(len(a))
    return a.mean() - half, a.mean() + half


def test_cell_intervals_and_paired_effects(tmp_path):
    """Per cell the t interval of the mean; per cell and quantity the effect cell - baseline paired by seed: a
    NoComm that is worse by 0.5 ± 0.1 on every seed excludes 0 (though the seeds' own spread is larger), a cell
    that is not worse contains 0; the csv columns, the tables and the effects figure."""
    base_fid = {0: 1.0, 1: 1.2, 2: 1.4}
    shifts = {"nocomm": {0: -0.5, 1: -0.6, 2: -0.4}, "latency=100ms": {0: 0.3, 1: -0.2, 2: -0.1},
              "latency=1000ms": {0: 0.1, 1: -0.1, 2: 0.0}, "loss=0.5": {0: -0.2, 1: 0.2, 2: 0.0},
              "burst=0.5": {0: 0.05, 1: 0.0, 2: -0.05}}
    cells = [Cell("baseline", "baseline", "", ()), Cell("nocomm", "nocomm", "", ("comm.enabled=false",)),
             Cell("latency=100ms", "latency", "100", ()), Cell("latency=1000ms", "latency", "1000", ()),
             Cell("loss=0.5", "loss", "0.5", ()), Cell("burst=0.5", "burst", "0.5", ()),
             Cell("loss=0.9", "loss", "0.9", ())]
    runs = []
    for seed in (2, 0, 1):   # not in seed order: the pairs are made by seed, not by position
        runs.append(read_run("baseline", seed, fake_run(tmp_path / f"b{seed}", explain={
            **EXPLAIN, "fidelity_score_k10": base_fid[seed]})))
        for label, d in shifts.items():
            runs.append(read_run(label, seed, fake_run(tmp_path / f"{label}-{seed}", explain={
                **EXPLAIN, "fidelity_score_k10": base_fid[seed] + d[seed]})))
    # loss=0.9: seed 1 failed, so its effect is paired over seeds 0 and 2 only
    runs += [read_run("loss=0.9", seed, fake_run(tmp_path / f"l9-{seed}", explain={
        **EXPLAIN, "fidelity_score_k10": base_fid[seed] - 1.0 - 0.1 * seed})) for seed in (0, 2)]
    runs.append(read_run("loss=0.9", 1, tmp_path / "never", error="RuntimeError: failed"))
    s = Study(DEFAULT_CONFIG, [0, 1, 2], cells, tmp_path / "study", command="magicmask commstudy (test)")
    meta = {"command": s.command, "runs": len(runs), "wall_s": 60.0, "machine": "test", "load_start": 0.0,
            "load_end": 0.0}
    write_outputs(s, runs, meta)

    table = {r["cell"]: r for r in csv.DictReader((s.out / "commstudy.csv").open())}
    lo, hi = hand_interval([1.0, 1.2, 1.4])   # 1.2 ± 4.303 x 0.2 / sqrt(3)
    assert float(table["baseline"]["fidelity_k10_ci_lo"]) == pytest.approx(lo, abs=1e-4)
    assert float(table["baseline"]["fidelity_k10_ci_hi"]) == pytest.approx(hi, abs=1e-4)
    assert table["baseline"]["final_return_ci_lo"] == table["baseline"]["final_return_ci_hi"] == "3"   # no spread

    reader = csv.DictReader((s.out / "commstudy_effects.csv").open())
    assert tuple(reader.fieldnames) == EFFECT_COLUMNS
    assert EFFECT_COLUMNS == ("cell", "axis", "value", "metric", "n", "diff", "lo", "hi", "significant")
    eff = list(reader)
    assert len(eff) == (len(cells) - 1) * len(METRIC_NAMES) and "baseline" not in {e["cell"] for e in eff}
    fid = {e["cell"]: e for e in eff if e["metric"] == "fidelity_k10"}
    nocomm = fid["nocomm"]
    lo, hi = hand_interval([-0.5, -0.6, -0.4])   # paired: -0.5 ± 4.303 x 0.1 / sqrt(3), below 0
    assert (nocomm["axis"], nocomm["n"], float(nocomm["diff"])) == ("nocomm", "3", pytest.approx(-0.5))
    assert float(nocomm["lo"]) == pytest.approx(lo, abs=1e-4) and float(nocomm["hi"]) == pytest.approx(hi, abs=1e-4)
    assert hi < 0 and nocomm["significant"] == "-"
    # unpaired, the seeds' spread (sd 0.2 in both cells) would hide it: the interval would contain 0
    unpaired_half = T975[2] * math.sqrt(0.2 ** 2 / 3 + 0.2 ** 2 / 3)
    assert -0.5 + unpaired_half > 0
    lat = fid["latency=100ms"]
    lo, hi = hand_interval([0.3, -0.2, -0.1])
    assert float(lat["lo"]) == pytest.approx(lo, abs=1e-4) and float(lat["hi"]) == pytest.approx(hi, abs=1e-4)
    assert lo < 0 < hi and lat["significant"] == "" and (lat["axis"], lat["value"]) == ("latency", "100")
    l9 = fid["loss=0.9"]
    lo, hi = hand_interval([-1.0, -1.2])   # seeds 0 and 2
    assert l9["n"] == "2" and float(l9["lo"]) == pytest.approx(lo, abs=1e-3) and l9["significant"] == ""
    assert {e["cell"]: e["diff"] for e in eff if e["metric"] == "final_return"}["nocomm"] == "0"
    assert all(e["lo"] == "" for e in eff if e["metric"] == "steps_to_target")   # no run has it: empty

    md = (s.out / "commstudy.md").read_text()
    effects_md = md.split("## Effects relative to the baseline", 1)[1].split("##", 1)[0]
    assert "| nocomm | " in effects_md and "-0.5 [-0.748, -0.252] -" in effects_md
    assert "| loss=0.9 | " in effects_md and "(n=2)" in effects_md
    assert "| baseline | 3/3 | – | – | – | – | 3 [3, 3] | 1.2 [0.703, 1.7] |" in md   # mean [interval] per cell
    assert "paired" in md and "comm.seed per-seed" in md
    check_page(s.out / "index.html", n_images=4)
    html = (s.out / "index.html").read_text()
    assert "Effects relative to the baseline" in html and "-0.5 [-0.748, -0.252] -" in html
    from PIL import Image
    with Image.open(s.out / "img" / "commstudy-effects.png") as im:
        assert im.size[0] > 1000 and len(np.unique(np.asarray(im.convert("L")))) > 10


def test_effects_figure_is_drawn_from_the_effects(tmp_path):
    """The effects figure plots the latency and loss cells' effects: without them it differs."""
    from magicmask.commstudy.figures import effects_figure
    rows = [{"cell": "latency=100ms", "axis": "latency", "value": "100", "metric": "steps_to_target", "n": 3,
             "diff": 200.0, "lo": 50.0, "hi": 350.0, "significant": "+"},
            {"cell": "loss=0.5", "axis": "loss", "value": "0.5", "metric": "final_return", "n": 3,
             "diff": -1.0, "lo": -1.5, "hi": -0.5, "significant": "-"}]
    assert effects_figure(rows)[:4] == b"\x89PNG" and effects_figure(rows) != effects_figure([])


@pytest.mark.parametrize("design, same", [("per-seed", False), ("fixed", True)])
def test_comm_seed_of_each_run_follows_the_design(tmp_path, monkeypatch, design, same):
    """The study's runs (the commands run_sweep would start, without training): per-seed gives each seed its
    own comm.seed, the same in every cell; fixed gives every run the config's."""
    s = study("--seeds", "0,1", "--axes", "loss", "--loss", "0.5", "--no-nocomm", "--comm-seed", design,
              "--out", str(tmp_path / "s"))
    commands: list[str] = []
    monkeypatch.setattr("magicmask.commstudy.study.run_sweep",
                        lambda *a, **k: run_sweep(*a, **{**k, "dry_run": True, "log": commands.append}))
    run_study(s, log=lambda line: None)
    seeds = {}   # (cell folder, run.seed) -> the comm.seed the run's config gets
    for cmd in commands:
        cfg = C.load(s.config, re.findall(r"--set (\S+)", cmd))
        seeds[(re.search(r"cells/([^/]+)/", cmd).group(1), cfg.run.seed)] = cfg.comm.seed
    assert sorted(seeds) == [("baseline", 0), ("baseline", 1), ("loss=0.5", 0), ("loss=0.5", 1)]
    for cell in ("baseline", "loss=0.5"):
        assert (seeds[(cell, 0)] == seeds[(cell, 1)]) is same
    assert seeds[("baseline", 0)] == seeds[("loss=0.5", 0)] and seeds[("baseline", 1)] == seeds[("loss=0.5", 1)]
    assert json.loads((s.out / "study.json").read_text())["comm_seed"] == design
    assert f"comm.seed {design}:" in (s.out / "commstudy.md").read_text()


def test_reuse_checks_every_cells_kept_runs_before_the_first_cell_runs(tmp_path, monkeypatch):
    """A study of the per-seed design given --reuse, with a run of the second cell kept from a fixed-seed study:
    it stops before the first cell runs, naming the run and comm.seed (the designs' runs differ in it)."""
    s = study("--seeds", "0", "--axes", "loss", "--loss", "0.5", "--no-nocomm", "--reuse", "--out", str(tmp_path / "s"))
    kept = s.out / "cells" / "loss=0.5" / "runs" / "default" / "seed0"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints" / "latest").write_text("v1")
    C.save(C.load(s.config, [*s.overrides, *s.cells[1].overrides, "run.seed=0", "explain.seed=0", "comm.seed=123"]),
           kept / "config.yaml")
    started = []
    monkeypatch.setattr("magicmask.commstudy.study.run_sweep", lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match=r"loss=0.5/runs/default/seed0: comm.seed: the run has 123"):
        run_study(s, log=lambda line: None)
    assert started == []


# ---------------- a real tiny study ----------------
def test_real_tiny_study_two_cells(tmp_path, capsys):
    """Baseline and loss=0.5, one seed, 2 agents x 1024 env steps, real processes on free ports."""
    out = tmp_path / "study"
    code = cli_main(["commstudy", "--out", str(out), "--seeds", "0", "--axes", "loss", "--loss", "0.5",
                     "--no-nocomm", "--set", "run.agents=2", "--set", "run.total_steps=1024",
                     "--set", "explain.episodes=4", "--set", "env.eval_episodes=2"])
    assert code == 0, capsys.readouterr().err[-3000:]
    rows = {r["cell"]: r for r in csv.DictReader((out / "commstudy.csv").open())}
    assert list(rows) == ["baseline", "loss=0.5"]
    base, lossy = rows["baseline"], rows["loss=0.5"]
    assert base["complete"] == lossy["complete"] == "1"
    for r in (base, lossy):   # trained, explained, and the actors' snapshot figures reached metrics.jsonl
        assert math.isfinite(float(r["final_return"])) and math.isfinite(float(r["fidelity_k10"]))
        assert float(r["snapshots_sent"]) > 10 and float(r["snapshots_delivered"]) > 0
        assert float(r["age_at_use_s"]) > 0
    assert float(base["snapshots_dropped"]) == 0
    sent, dropped = float(lossy["snapshots_sent"]), float(lossy["snapshots_dropped"])
    assert 0.2 * sent < dropped < 0.8 * sent          # loss 0.5, seeded: about half
    assert float(lossy["delivered_share"]) < float(base["delivered_share"])
    assert (out / "cells" / "loss=0.5" / "runs" / "default" / "seed0" / "checkpoints" / "latest").is_file()
    md = (out / "commstudy.md").read_text()
    assert "magicmask commstudy --out" in md and "| loss=0.5 | 1/1 |" in md
    assert "comm.seed per-seed" in md and "## Effects relative to the baseline" in md
    effects = [r for r in csv.DictReader((out / "commstudy_effects.csv").open()) if r["metric"] == "final_return"]
    assert [(r["cell"], r["n"], r["lo"]) for r in effects] == [("loss=0.5", "1", "")]   # one seed: no interval
    check_page(out / "index.html", n_images=4)
