"""package_absent: packages the build must not contain (the pipeline fails if installed)."""

from __future__ import annotations

import shlex
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, dpkg_installed, dpkg_status, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    for p in params["packages"]:
        if p not in plan.packages_absent:
            plan.packages_absent.append(str(p))


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    pkgs = [str(p) for p in params["packages"]]
    paths = [str(p) for p in params["paths"]]

    def static(target: Any) -> None:
        tree = tree_of(target)
        if dpkg_status(tree) is None:
            raise AssertionError("no dpkg status file in the tree")
        present = sorted(set(pkgs) & dpkg_installed(tree))
        files = [p for p in paths if tree.exists(p)]
        if present or files:
            raise AssertionError(f"installed: {present}; present: {files}")

    def vm(host: Any) -> None:
        bad = []
        for p in pkgs:
            rc, out = vm_run(host, f"dpkg-query -W -f='${{Status}}' {shlex.quote(p)} 2>/dev/null")
            if rc == 0 and out.strip().endswith(" installed"):
                bad.append(f"{p} installed")
        bad += [f"{p} exists" for p in paths if vm_run(host, f"test -e {shlex.quote(p)}")[0] == 0]
        if bad:
            raise AssertionError("; ".join(bad))

    return [ctx.check("packages-absent", "static", static, "not installed: " + ", ".join(pkgs)),
            ctx.check("packages-absent", "vm", vm, "not installed: " + ", ".join(pkgs))]


def describe(ctx: RuleContext, params: Params) -> str:
    out = "packages must not be installed: " + ", ".join(params["packages"])
    return out + (f"; paths absent: {', '.join(params['paths'])}" if params["paths"] else "")


KIND = Kind(
    name="package_absent",
    params={"packages": Param("list", required=True, help="Debian package names"),
            "paths": Param("list", default=[], help="files that must not exist either")},
    apply=apply, checks=checks, describe=describe,
)
