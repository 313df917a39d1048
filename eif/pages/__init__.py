"""eif's HTML pages from jinja2 templates (``eif/pages/templates``), autoescaped: a class name, path or
title that holds markup is shown as text. The per-run report and review page (:mod:`eif.report`) and
the sweep index (:mod:`eif.tables.mislabel`) render through :func:`render`; this module sits below
both and imports no other eif module.

Numbers are formatted in Python before they reach a template (:func:`cells`), so a template only
lays out strings."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("eif.pages", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
# ``tojson`` in a <script type="application/json"> element: compact, in the data's own key order
# (jinja escapes <, >, & and ' as \u00XX, so no string of the data can end the element).
ENV.policies["json.dumps_kwargs"] = {"sort_keys": False, "separators": (",", ":")}


def anchor(title: str) -> str:
    """The id of a section titled ``title``: lower case, every character but letters and digits a ``-``."""
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower())


ENV.filters["anchor"] = anchor


def asset(name: str) -> Markup:
    """The text of ``name`` (a CSS or JavaScript file beside the templates) as it is: never parsed as a
    template nor escaped, so its braces and ``<`` stay code."""
    loader = ENV.loader
    assert loader is not None
    return Markup(loader.get_source(ENV, name)[0])


ENV.globals["asset"] = asset


def render(template: str, **context: Any) -> str:
    """The page ``template`` (a file in ``eif/pages/templates``) filled with ``context``."""
    return ENV.get_template(template).render(**context)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data`` inline as a ``data:`` URI (base64), so the page needs no other file."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Table:
    """A table ready for the ``table`` macro: header and rows of display strings."""

    head: list[str]
    rows: list[list[str]]


def cells(frame: pd.DataFrame, floatfmt: str = "{:.4f}") -> Table:
    """``frame`` as strings: floats formatted with ``floatfmt`` (NaN: an empty cell), the rest by str."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if v != v else floatfmt.format(v)
        return str(v)

    return Table(
        [str(c) for c in frame.columns], [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    )
