"""Jinja2 templates: `templates/` at the top of the repository, installed as `bridge/templates` in a wheel."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2


def templates_dir() -> Path:
    """The folder holding the templates: inside the installed package, else the checkout's top-level folder."""
    packaged = Path(__file__).resolve().parents[1] / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared Jinja2 environment: strict about undefined names, autoescape for .html templates only."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True,
                              lstrip_blocks=True)


def render(name: str, **context: Any) -> str:
    """Render the template `name` (e.g. "report.md.j2") with `context`."""
    return environment().get_template(name).render(**context)
