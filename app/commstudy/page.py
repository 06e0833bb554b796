"""index.html of a study: one self-contained page (every figure embedded as a PNG data URI) with the figures,
the failed runs, the tables and the definitions, in the report's page skeleton (magicmask.report.html)."""
from __future__ import annotations

import base64
import datetime as _dt

from markupsafe import Markup

from magicmask.commstudy.plan import Study
from magicmask.commstudy.tables import cell_tables, definitions, summary_line, target_text
from magicmask.report.html import Section, img, note, render_page, table

FIGURES = (  # (section id, title, what it shows, figure stem)
    ("learning", "Learning and explanation",
     "Per cell: small dots = the seeds, diamond = their mean, bar = sample standard deviation; dashed line = "
     "baseline, dotted = NoComm. n/a: no run of the cell has the quantity.", "commstudy-learning"),
    ("channel", "The channel", "The same layout for what the broker sent and the actors received and used.",
     "commstudy-channel"),
    ("curves", "Evaluation curves",
     "The team's mean evaluation return with the mask in its explaining mode (the return it keeps while "
     "perturbing every step with m <= tau), mean over seeds; grey dashed: the target ({basis}).", "commstudy-curves"),
    ("effects", "Effects relative to the baseline",
     "Each impairment's effect against its latency (top) and loss rate (bottom; red: iid loss, orange: bursty "
     "loss at the same stationary rate): cell - baseline, the mean of the paired differences over the seeds both "
     "cells have; bar = their 95% t interval (none below 2 pairs). Dashed: no effect (the baseline); dotted line "
     "and grey band: NoComm's effect and its interval, for reference.", "commstudy-effects"),
)


def _tables(study: Study, rows: list[dict], effects: list[dict], meta: dict) -> Markup:
    """The command, the cell tables, the effects and the definitions."""
    parts = [Markup('<p class="what">Command: <code>{}</code></p>').format(meta["command"])]
    for title, (header, body) in [*cell_tables(study, rows, effects), ("Definitions", definitions())]:
        parts.append(Markup("<h3>{}</h3>{}").format(title, table(header, body)))
    return Markup("").join(parts)


def html_page(study: Study, rows: list[dict], effects: list[dict], runs, meta: dict, pngs: dict[str, bytes]) -> str:
    """The page of `pngs` (figure stem -> PNG bytes), the failed runs among `runs` and the tables of `rows` and
    `effects`."""
    info = [("config", study.config), ("seeds", ",".join(map(str, study.seeds))), ("comm.seed", study.comm_seed),
            ("cells", str(len(study.cells))), ("runs", str(meta["runs"])),
            ("wall time", f"{meta['wall_s'] / 60:.1f} min"), ("target return", target_text(meta)),
            ("date", _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))]
    sections = [Section(sid, title, what.format(basis=meta["target_basis"]),
                        img("data:image/png;base64," + base64.b64encode(pngs[stem]).decode(), stem))
                for sid, title, what, stem in FIGURES]
    failed = [f"{r.cell} seed {r.seed}: {r.error}" for r in runs if r.error]
    if failed:
        sections.append(Section("failures", "Failed runs", "", Markup("").join(note(f) for f in failed)))
    sections.append(Section("tables", "Tables", summary_line(study, meta), _tables(study, rows, effects, meta)))
    return render_page("MAGIC-MASK communication study", info, sections,
                       "Written by magicmask commstudy; every picture is embedded (also in img/ beside this page).")
