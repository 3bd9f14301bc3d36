"""Jinja2 templates shipped inside the package (`templates/` in the repo, `bridge/templates` when installed)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared Jinja2 environment: strict about undefined names, no autoescape except for .html templates."""
    return jinja2.Environment(loader=jinja2.PackageLoader("bridge", "templates"),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True,
                              lstrip_blocks=True)


def render(name: str, **context: Any) -> str:
    """Render the template `name` (e.g. "report.md.j2") with `context`."""
    return environment().get_template(name).render(**context)
