"""file: one file with content (or an overlay template), mode and owner."""

from __future__ import annotations

from pathlib import PurePosixPath

from builder.plan import BuildPlan
from builder.rules.check import Check
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import add_file, file_checks, parse_mode, render_overlay


def content(ctx: RuleContext, params: Params) -> str:
    if params["template"]:
        return render_overlay(ctx, str(params["template"]))
    return str(params["content"])


def validate(params: Params) -> None:
    p = PurePosixPath(str(params["path"]))
    if not p.is_absolute() or ".." in p.parts:
        raise ValueError(f"path {p} must be absolute and normalised")
    if (params["content"] is None) == (params["template"] is None):
        raise ValueError("give exactly one of content and template")
    parse_mode(params["mode"])


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    add_file(plan, str(params["path"]), content(ctx, params), parse_mode(params["mode"]),
             ctx.rule_id, str(params["owner"]), str(params["group"]))


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    p = str(params["path"])
    return file_checks(ctx, f"file:{p}", p, content(ctx, params), parse_mode(params["mode"]))


def describe(ctx: RuleContext, params: Params) -> str:
    return (f"{params['path']} (mode {parse_mode(params['mode']):04o}, "
            f"{params['owner']}:{params['group']}):\n{content(ctx, params)}")


KIND = Kind(
    name="file",
    params={
        "path": Param("str", required=True, help="absolute path in the image"),
        "content": Param("str", help="file content (or give template)"),
        "template": Param("str", help="overlay template under overlays/"),
        "mode": Param("any", default="0644", help="octal string or int"),
        "owner": Param("str", default="root"),
        "group": Param("str", default="root"),
    },
    apply=apply, checks=checks, describe=describe, validate=validate,
)
