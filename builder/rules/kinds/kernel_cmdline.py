"""kernel_cmdline: tokens for the UKI command line; checked in /proc/cmdline."""

from __future__ import annotations

from typing import Any

from builder.plan import CMDLINE_FILE, BuildPlan
from builder.rules.check import Check, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext


def tokens(params: Params) -> list[str]:
    raw = params["tokens"]
    return str(raw).split() if isinstance(raw, str) else [str(t) for t in raw]


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    for tok in tokens(params):
        if tok not in plan.cmdline:
            plan.cmdline.append(tok)


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    want = tokens(params)

    def static(target: Any) -> None:
        text = tree_of(target).read(CMDLINE_FILE)
        if text is None:
            raise AssertionError(f"{CMDLINE_FILE} missing in the tree")
        missing = [t for t in want if t not in text.split()]
        if missing:
            raise AssertionError(f"{CMDLINE_FILE} lacks {missing}: {text.strip()}")

    def vm(host: Any) -> None:
        rc, out = vm_run(host, "cat /proc/cmdline")
        have = out.split()
        missing = [t for t in want if t not in have]
        if rc != 0 or missing:
            raise AssertionError(f"/proc/cmdline lacks {missing}: {out.strip()}")

    return [ctx.check("cmdline", "static", static,
                      f"tokens present in {CMDLINE_FILE}: " + " ".join(want)),
            ctx.check("cmdline", "vm", vm, "tokens present in /proc/cmdline: " + " ".join(want))]


def describe(ctx: RuleContext, params: Params) -> str:
    return "kernel command line: " + " ".join(tokens(params))


KIND = Kind(
    name="kernel_cmdline",
    params={"tokens": Param("any", required=True,
                            help="a whitespace-separated string or a list of tokens")},
    apply=apply, checks=checks, describe=describe,
)
