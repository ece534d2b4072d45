"""The Jinja2 environment of the HTML pages: templates/ (package data), autoescape always on.

Every value a template prints is escaped, whatever the dataset, group or target is
called; the only markup passed in is trusted on purpose -- the inline SVG plots
this package draws -- and it is wrapped in Markup where it is made (``svg_markup``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from . import plots


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("faceaudit.audit.report", "templates"),
        autoescape=True,  # every template is HTML
        undefined=StrictUndefined,  # a misspelt name fails the render, never prints ""
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def svg_markup(svg: plots.Svg) -> Markup:
    """A plot's SVG, drawn by plots.py (its text escaped there), to be inserted as is."""
    return Markup(svg.text)  # deliberately not escaped: SVG this package drew


class Figures:
    """Numbers figures within one page, so that SVG ids never clash."""

    def __init__(self, prefix: str = "fig"):
        self.prefix, self.count = prefix, 0

    def next_id(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"
