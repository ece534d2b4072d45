"""The console's Jinja2 environment: its own templates first, then the audit report's.

The console's ``page.html.j2`` (its frame: navigation, who is signed in, sign-out) has the
name of the audit report's page template on purpose. report.html.j2 and comparison.html.j2
extend "page.html.j2", so in this environment they render inside the console's frame, from
the same context their standalone pages get (faceaudit.audit.report.html.report_context,
compare.comparison_context, transparency.transparency_context for transparency.html.j2):
one rendering of a report, two frames.

Autoescape is always on; StrictUndefined makes a misspelt name fail the render.
"""

from __future__ import annotations

from functools import cache

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined


@cache
def environment() -> Environment:
    return Environment(
        loader=ChoiceLoader([PackageLoader("faceaudit.console", "templates"),
                             PackageLoader("faceaudit.audit.report", "templates")]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)
