"""logind: a logind.conf.d drop-in; VM check reads the merged config via systemd-analyze."""

from __future__ import annotations

from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import file_checks, render_overlay


def path(ctx: RuleContext) -> str:
    return f"/etc/systemd/logind.conf.d/auditbox-{ctx.slug}.conf"


def settings(params: Params) -> dict[str, str]:
    return {str(k): ("yes" if v is True else "no" if v is False else str(v))
            for k, v in params["settings"].items()}


def content(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, "rules/logind.conf.j2", settings=settings(params))


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    plan.add_file(path(ctx), content(ctx, params), 0o644, source=ctx.rule_id)


def last_values(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    want = settings(params)

    def vm(host: Any) -> None:
        rc, out = vm_run(host, "systemd-analyze cat-config systemd/logind.conf")
        have = last_values(out)
        bad = [f"{k}={have.get(k)!r}, want {v!r}" for k, v in want.items() if have.get(k) != v]
        if rc != 0 or bad:
            raise AssertionError("effective logind.conf: " + "; ".join(bad or [out[-300:]]))
        if vm_run(host, "systemctl is-active systemd-logind.service")[0] != 0:
            raise AssertionError("systemd-logind.service is not active")

    return [*file_checks(ctx, "logind.conf.d", path(ctx), content(ctx, params), 0o644),
            ctx.check("logind-effective", "vm", vm,
                      "merged logind config has " + ", ".join(f"{k}={v}" for k, v in want.items()))]


def describe(ctx: RuleContext, params: Params) -> str:
    return f"{path(ctx)}: " + ", ".join(f"{k}={v}" for k, v in settings(params).items())


KIND = Kind(
    name="logind",
    params={"settings": Param("map", required=True, help="[Login] key -> value")},
    apply=apply, checks=checks, describe=describe,
)
