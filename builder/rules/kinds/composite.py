"""composite: a rule whose mechanism needs several kinds (e.g. a package and modules).

`parts` is a list of {kind: <name>, when?: <bool or template>, <that kind's params>}.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from builder.plan import BuildPlan
from builder.rules.check import Check
from builder.rules.kinds.base import Kind, Param, Params, RuleContext


def _parts(ctx: RuleContext, params: Params) -> list[tuple[RuleContext, Kind, Params]]:
    from builder.rules.kinds import KINDS, prepare

    kinds = [str(p["kind"]) for p in params["parts"]]
    counts = Counter(kinds)
    seen: Counter[str] = Counter()
    out = []
    for part in params["parts"]:
        name = str(part["kind"])
        seen[name] += 1
        if not part.get("when", True):
            continue
        kind = KINDS[name]
        sub = {k: v for k, v in part.items() if k not in ("kind", "when")}
        prefix = name if counts[name] == 1 else f"{name}{seen[name]}"
        instance = "" if counts[name] == 1 else str(seen[name])
        out.append((replace(ctx, prefix=f"{ctx.prefix}{prefix}:", instance=instance), kind,
                    prepare(kind, sub)))
    return out


def validate(params: Params) -> None:
    from builder.rules.kinds import KINDS

    for part in params["parts"]:
        if not isinstance(part, dict) or part.get("kind") not in KINDS:
            raise ValueError(f"each part needs a known kind (allowed: {', '.join(KINDS)})")
        if part["kind"] == "composite":
            raise ValueError("composite parts cannot nest")


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    for sub, kind, p in _parts(ctx, params):
        kind.apply(sub, p, plan)


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    return [c for sub, kind, p in _parts(ctx, params) for c in kind.checks(sub, p)]


def describe(ctx: RuleContext, params: Params) -> str:
    return "\n".join(f"[{kind.name}] {kind.describe(sub, p)}" for sub, kind, p in
                     _parts(ctx, params))


KIND = Kind(
    name="composite",
    params={"parts": Param("list", required=True, help="list of {kind, when?, params...}")},
    apply=apply, checks=checks, describe=describe, validate=validate,
)
