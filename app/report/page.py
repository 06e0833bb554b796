"""`write_report`: the report page of one run, RUN_DIR/report/index.html, from the files in RUN_DIR/report/."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from magicmask.report import sections
from magicmask.report.figures import ImageDir
from magicmask.report.html import render_page
from magicmask.report.read import checkpoint_version, method_key, read_config, read_inputs

FOOTER = ("Written by magicmask.report (magicmask report RUN_DIR); the pictures are in img/ and frames/ beside "
          "this page.")


def write_report(run_dir: str | Path, run=None, *, episodes_shown: int = 3, saliency_episodes: int = 4,
                 top_states: int | None = None) -> Path:
    """Write RUN_DIR/report/index.html (and its pictures under report/img/) from the files in RUN_DIR/report/.
    `run`: an already loaded TrainedRun (explain.episodes.load_run) for the saliency section; loaded from the
    run's checkpoint when None. `episodes_shown`: episodes per agent plotted step by step (all of them enter the
    aggregates); `saliency_episodes`: unmasked episodes per agent played for the saliency; `top_states`: critical
    states per agent shown (default: the config's explain.top_states, else 10). Returns the page's path."""
    run_dir = Path(run_dir)
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    images = ImageDir(report_dir)
    cfg = read_config(run_dir, run)
    inp = read_inputs(run_dir)
    if top_states is None:
        top_states = int(getattr(getattr(cfg, "explain", None), "top_states", 10) or 10)
    miss = inp.missing
    page_sections = [
        sections.importance(inp.traces, inp.fidelity, images, episodes_shown, miss["importance.csv"]),
        sections.critical_states(inp.states, report_dir, cfg, images, top_states, miss["critical_states.jsonl"]),
        sections.fidelity(inp.fidelity, images, miss["fidelity.csv"]),
        sections.comparison(inp.metrics, inp.compare_md, inp.compare_csv, miss["metrics.json"],
                            inp.summary.get("errors") or {}),
        sections.precision(inp.traces, images),
        sections.saliency(run_dir, run, images, saliency_episodes),
    ]
    name = cfg.run.name if cfg is not None and cfg.run.name else run_dir.name
    traces = inp.traces or []
    agents = str(cfg.run.agents) if cfg is not None else str(len({t.agent for t in traces}) or "unknown")
    info = [("run", name), ("env", cfg.env.name if cfg is not None else "unknown"), ("agents", agents),
            ("checkpoint version", str(inp.summary.get("checkpoint_version", checkpoint_version(run_dir, run)))),
            ("methods", ", ".join(sorted({t.method for t in traces}, key=method_key)) or "none"),
            ("episodes (agent x episode)", str(len({(t.agent, t.episode) for t in traces}))),
            ("date", _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))]
    html = render_page(f"MAGIC-MASK report: {name}", info, page_sections, FOOTER, nav=True)
    out = report_dir / "index.html"
    tmp = report_dir / ".index.html.tmp"   # written whole, then renamed: a reader never sees half a page
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
