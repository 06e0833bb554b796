"""The visual report of an explained run: RUN_DIR/report/index.html, one self-contained page readable offline
(`magicmask report RUN_DIR`, and the last step of `magicmask explain` and `magicmask compare`).

It reads what `magicmask explain` / `compare` left in RUN_DIR/report/ (importance.csv, fidelity.csv,
critical_states.jsonl, metrics.json, compare.md / compare.csv, frames/; read.py), draws PNG files under
report/img/ that the page links relatively (figures.py, pictures.py) and renders the page from Jinja2 templates
(templates/, html.py). No script, font or stylesheet comes from outside; the only script is a small inline one
that counts images which failed to load (body[data-broken-images], read by the tests through headless Chromium).

Sections (element ids are stable, tests look them up; sections.py): importance, critical-states, fidelity,
comparison, precision, saliency. A missing input file makes its section say so instead of failing; the saliency
section needs the run's checkpoint and says why when it cannot load it. Only a few episodes per agent are plotted
step by step; all the others enter aggregates, so the page stays quick to build for 100s of episodes.
"""
from magicmask.report.page import write_report
from magicmask.report.sections import SECTION_IDS

__all__ = ["SECTION_IDS", "write_report"]
