"""HTML of the report pages: the Jinja2 templates in templates/ (autoescaped: every value from a file or a run is
escaped by the template engine), the number and Markdown filters they use, and the generic page skeleton that the
report and the communication study both fill with sections."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup

from magicmask.explain.stats import fmt_mean_sd


def num(v, digits: int = 3) -> str:
    """A table cell: numbers with `digits` decimals (significant digits when very large or small), '–' for a
    missing or NaN value; already rendered Markup passes through."""
    if isinstance(v, Markup):
        return v
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)[:120]
    return str(v)


def mean_sd(v: tuple[float, float, int], digits: int | None = None) -> str:
    """A (mean, sd, n) triple (explain.stats.mean_sd) as 'mean ± sd'."""
    return fmt_mean_sd(*v, digits=digits)


_MARKDOWN = MarkdownIt("js-default")   # CommonMark + pipe tables; raw HTML in the source is escaped


def markdown(md: str) -> Markup:
    """Markdown (compare.md, the study's tables) as HTML inside a page section: headings two levels down (the
    page has h1 and h2), tables of class `compare`."""
    tokens = _MARKDOWN.parse(md)
    for t in tokens:
        if t.type in ("heading_open", "heading_close"):
            t.tag = f"h{min(int(t.tag[1:]) + 2, 6)}"
        elif t.type == "table_open":
            t.attrSet("class", "compare")
    return Markup(_MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {}))


@lru_cache(maxsize=None)
def environment() -> Environment:
    """The templates of this package, autoescaped, with the filters `num`, `mean_sd` and `markdown`."""
    env = Environment(loader=PackageLoader("magicmask.report"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, mean_sd=mean_sd, markdown=markdown)
    return env


def render(template: str, **context) -> Markup:
    """One template of templates/ rendered, as Markup to place in a page."""
    return Markup(environment().get_template(template).render(**context))


def _macro(name: str):
    return getattr(environment().get_template("macros.html").module, name)


def note(text: str) -> Markup:
    """A highlighted remark (why something is missing, what failed)."""
    return _macro("note")(text)


def img(src: str, alt: str, cls: str = "plot") -> Markup:
    return _macro("img")(src, alt, cls)


def table(header: list, rows: list[list], cls: str = "") -> Markup:
    """A table of cells through `num` (Markup cells as they are)."""
    return _macro("table")(header, rows, cls)


@dataclass
class Section:
    """One <section> of a page: its stable element id (tests and links look it up), heading, a sentence saying
    what it shows, and its rendered body."""
    id: str
    title: str
    what: str
    body: Markup
    label: str = ""   # its name in the navigation bar; the title when empty


def render_page(title: str, info: list[tuple[str, str]], sections: list[Section], footer: str,
                nav: bool = False) -> str:
    """A whole self-contained page (inline style and the broken-image counter script, which sets
    body[data-broken-images] for headless checks): a header with the `info` pairs, optionally a navigation bar,
    the sections, the footer."""
    return environment().get_template("page.html").render(title=title, info=info, sections=sections,
                                                           footer=footer, nav=nav)
