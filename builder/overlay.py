"""Render jinja2 templates from overlays/ (StrictUndefined) and write planned files into a tree."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import jinja2

from builder.errors import BuildError

if TYPE_CHECKING:
    from builder.plan import PlannedFile

OVERLAYS_DIR = Path(__file__).resolve().parent.parent / "overlays"


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


def target_path(root: Path, path: PurePosixPath) -> Path:
    """Map an absolute in-image path onto root, refusing anything that escapes it."""
    if not path.is_absolute() or ".." in path.parts:
        raise BuildError(f"refusing to write outside the image: {path}")
    dest = root.joinpath(*path.parts[1:])
    # refuse symlinked parents that point outside the tree
    parent = dest.parent
    while parent != root and not parent.exists():
        parent = parent.parent
    if not parent.resolve().is_relative_to(root.resolve()):
        raise BuildError(f"refusing to write through a symlink leaving the image: {path}")
    return dest


def write_files(root: Path, files: list[PlannedFile]) -> None:
    for f in files:
        dest = target_path(root, f.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        tmp = dest.with_name(f".{dest.name}.auditbox-tmp")
        tmp.write_bytes(f.content)
        os.chmod(tmp, f.mode)
        os.replace(tmp, dest)
