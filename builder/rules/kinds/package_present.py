"""package_present: packages a mechanism needs (added to the bootstrap)."""

from __future__ import annotations

import shlex
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, dpkg_installed, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    for p in params["packages"]:
        if p not in plan.packages:
            plan.packages.append(str(p))


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    pkgs = [str(p) for p in params["packages"]]

    def static(target: Any) -> None:
        missing = sorted(set(pkgs) - dpkg_installed(tree_of(target)))
        if missing:
            raise AssertionError(f"not installed in the tree: {missing}")

    def vm(host: Any) -> None:
        missing = []
        for p in pkgs:
            rc, out = vm_run(host, f"dpkg-query -W -f='${{Status}}' {shlex.quote(p)}")
            if rc != 0 or not out.strip().endswith(" installed"):
                missing.append(p)
        if missing:
            raise AssertionError(f"not installed: {missing}")

    return [ctx.check("packages-present", "static", static, "installed: " + ", ".join(pkgs)),
            ctx.check("packages-present", "vm", vm, "installed: " + ", ".join(pkgs))]


def describe(ctx: RuleContext, params: Params) -> str:
    return "install packages: " + ", ".join(params["packages"])


KIND = Kind(
    name="package_present",
    params={"packages": Param("list", required=True, help="Debian package names")},
    apply=apply, checks=checks, describe=describe,
)
