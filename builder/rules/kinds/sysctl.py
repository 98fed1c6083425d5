"""sysctl: a sysctl.d file; checked in the tree and with `sysctl -n` on the VM."""

from __future__ import annotations

import shlex
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import file_checks, render_overlay


def path(ctx: RuleContext, params: Params) -> str:
    return str(params["file"] or f"/etc/sysctl.d/60-auditbox-{ctx.slug}.conf")


def settings(params: Params) -> dict[str, str]:
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in params["settings"].items()}


def content(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, "rules/sysctl.conf.j2", settings=settings(params),
                          optional=list(params["optional"]))


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    plan.add_file(path(ctx, params), content(ctx, params), 0o644, source=ctx.rule_id)


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    want = settings(params)
    optional = set(params["optional"])

    def vm(host: Any) -> None:
        bad = []
        for key, value in want.items():
            proc = "/proc/sys/" + key.replace(".", "/")
            rc, out = vm_run(host, f"cat {shlex.quote(proc)}")
            if rc != 0:
                if key not in optional:
                    bad.append(f"{key}: not readable")
                continue
            if out.split() != value.split():
                bad.append(f"{key} = {' '.join(out.split())!r}, want {value!r}")
        if bad:
            raise AssertionError("; ".join(bad))

    return [*file_checks(ctx, "sysctl.d", path(ctx, params), content(ctx, params), 0o644),
            ctx.check("sysctl", "vm", vm, ", ".join(f"{k}={v}" for k, v in want.items()))]


def describe(ctx: RuleContext, params: Params) -> str:
    return f"{path(ctx, params)}: " + ", ".join(f"{k}={v}" for k, v in settings(params).items())


KIND = Kind(
    name="sysctl",
    params={
        "settings": Param("map", required=True, help="key -> value"),
        "optional": Param("list", default=[],
                          help="keys that may be absent on the running kernel ('-' prefix)"),
        "file": Param("str", help="sysctl.d path (default /etc/sysctl.d/60-auditbox-<id>.conf)"),
    },
    apply=apply, checks=checks, describe=describe,
)
