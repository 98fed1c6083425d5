"""udev_rule: a rules file under /etc/udev/rules.d rendered from an overlay template."""

from __future__ import annotations

import shlex
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, tree_of
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import file_checks, render_overlay


def path(params: Params) -> str:
    return f"/etc/udev/rules.d/{params['name']}"


def content(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, str(params["template"]))


def validate(params: Params) -> None:
    name = str(params["name"])
    if "/" in name or not name.endswith(".rules"):
        raise ValueError(f"name {name!r} must be a plain file name ending in .rules")


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    plan.add_file(path(params), content(ctx, params), 0o644, source=ctx.rule_id)


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    p = path(params)

    def verify(target: Any) -> None:
        res = tree_of(target).run(f"command -v udevadm >/dev/null || exit 0; "
                                  f"udevadm verify --no-style {shlex.quote(p)}")
        if res is not None and res[0] != 0:
            raise AssertionError(f"udevadm verify {p} failed: {res[1].strip()}")

    return [*file_checks(ctx, "udev", p, content(ctx, params), 0o644),
            ctx.check("udevadm-verify", "static", verify,
                      "udevadm verify accepts the rule (when the tree can run it)")]


def describe(ctx: RuleContext, params: Params) -> str:
    return f"{path(params)}:\n{content(ctx, params)}"


KIND = Kind(
    name="udev_rule",
    params={"name": Param("str", required=True, help="file name, e.g. 70-auditbox-drm.rules"),
            "template": Param("str", required=True, help="overlay template under overlays/")},
    apply=apply, checks=checks, describe=describe, validate=validate,
)
