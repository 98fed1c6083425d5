"""Render jinja2 templates from overlays/ (StrictUndefined)."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from builder import paths
from builder.errors import BuildError

OVERLAYS_DIR = paths.OVERLAYS


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(OVERLAYS_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, **context: Any) -> str:
    """Render overlays/<template> with the given context; undefined names are errors."""
    try:
        return environment().get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        raise BuildError(f"overlay {template}: {exc}") from exc
