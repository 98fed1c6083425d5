"""nftables: the base ruleset (/etc/nftables.conf) or a fragment it includes."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, enabled_links, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import file_checks, render_overlay

BASE = "/etc/nftables.conf"
FRAGMENTS = "/etc/nftables.d"


def path(params: Params) -> str:
    return BASE if params["base"] else f"{FRAGMENTS}/{params['name']}"


def validate(params: Params) -> None:
    if not params["base"]:
        name = str(params["name"] or "")
        if not name.endswith(".nft") or "/" in name:
            raise ValueError("a fragment needs name: <file>.nft (loaded from /etc/nftables.d)")


def content(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, str(params["template"]), fragments=FRAGMENTS)


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    plan.add_file(path(params), content(ctx, params), 0o755 if params["base"] else 0o644,
                  source=ctx.rule_id)
    if params["base"]:
        if "nftables" not in plan.packages:
            plan.packages.append("nftables")
        if "nftables.service" not in plan.units_enable:
            plan.units_enable.append("nftables.service")


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    p = path(params)
    expect = [str(e) for e in params["vm_expect"]]
    out = file_checks(ctx, PurePosixPath(p).name, p, content(ctx, params),
                      0o755 if params["base"] else 0o644)

    def parses(target: Any) -> None:
        tree = tree_of(target)
        if not enabled_links(tree, "nftables.service"):
            raise AssertionError("nftables.service is not enabled in the tree")
        res = tree.run(f"command -v nft >/dev/null || exit 0; nft -c -f {shlex.quote(BASE)}")
        if res is not None and res[0] != 0:
            raise AssertionError(f"nft -c -f {BASE} failed: {res[1].strip()}")

    def live(host: Any) -> None:
        if params["base"] and vm_run(host, "systemctl is-active nftables.service")[0] != 0:
            raise AssertionError("nftables.service is not active")
        rc, ruleset = vm_run(host, "nft list ruleset")
        flat = " ".join(ruleset.split())
        missing = [e for e in expect if not re.search(e, flat)]
        if rc != 0 or missing:
            raise AssertionError(f"nft list ruleset lacks {missing}: {flat[:600]}")

    if params["base"]:
        out.append(ctx.check("nft-check", "static", parses,
                             "nftables.service enabled; `nft -c -f` accepts the ruleset"))
    out.append(ctx.check("ruleset", "vm", live, "live ruleset matches: " + "; ".join(expect)))
    return out


def describe(ctx: RuleContext, params: Params) -> str:
    enable = "nftables.service enabled; " if params["base"] else ""
    return f"{enable}{path(params)}:\n{content(ctx, params)}"


KIND = Kind(
    name="nftables",
    params={
        "template": Param("str", required=True, help="overlay template"),
        "base": Param("bool", default=False, help="the main /etc/nftables.conf (enables nftables)"),
        "name": Param("str", help="fragment file name under /etc/nftables.d"),
        "vm_expect": Param("list", default=[],
                           help="regexes that must match the whitespace-flattened live ruleset"),
    },
    apply=apply, checks=checks, describe=describe, validate=validate,
)
