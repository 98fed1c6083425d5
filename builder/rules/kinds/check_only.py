"""check_only: controls the pipeline implements itself (verity, UKI, Secure Boot, tmpfs);
the rule only contributes checks.

Each entry of `checks` is {name, where, help?, and either
  static: file (+ regex | not_regex | absent: true), or
  vm: command (exit 0 passes) + optional regex on its stdout}.
"""

from __future__ import annotations

import re
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext

STATIC_KEYS = {"name", "where", "help", "file", "regex", "not_regex", "absent"}
VM_KEYS = {"name", "where", "help", "command", "regex"}


def validate(params: Params) -> None:
    for spec in params["checks"]:
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"check entry needs a name: {spec!r}")
        where = spec.get("where")
        allowed = STATIC_KEYS if where == "static" else VM_KEYS if where == "vm" else None
        if allowed is None:
            raise ValueError(f"check {spec['name']}: where must be static or vm")
        extra = set(spec) - allowed
        if extra:
            raise ValueError(f"check {spec['name']}: unknown keys {sorted(extra)} "
                             f"(allowed: {', '.join(sorted(allowed))})")
        if where == "static" and "file" not in spec:
            raise ValueError(f"check {spec['name']}: a static check needs file")
        if where == "vm" and "command" not in spec:
            raise ValueError(f"check {spec['name']}: a vm check needs command")


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    return None


def static_run(spec: dict[str, Any]) -> Any:
    def run(target: Any) -> None:
        tree = tree_of(target)
        path = str(spec["file"])
        if spec.get("absent"):
            if tree.exists(path):
                raise AssertionError(f"{path} must not exist")
            return
        text = tree.read(path)
        if text is None:
            raise AssertionError(f"{path} missing")
        if "regex" in spec and not re.search(str(spec["regex"]), text, re.M):
            raise AssertionError(f"{path} does not match /{spec['regex']}/")
        if "not_regex" in spec and re.search(str(spec["not_regex"]), text, re.M):
            raise AssertionError(f"{path} matches forbidden /{spec['not_regex']}/")
    return run


def vm_check(spec: dict[str, Any]) -> Any:
    def run(host: Any) -> None:
        rc, out = vm_run(host, str(spec["command"]))
        if rc != 0:
            raise AssertionError(f"`{spec['command']}` exited {rc}: {out.strip()[:400]}")
        if "regex" in spec and not re.search(str(spec["regex"]), out, re.M):
            raise AssertionError(f"`{spec['command']}` output does not match "
                                 f"/{spec['regex']}/: {out.strip()[:400]}")
    return run


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    out = []
    for spec in params["checks"]:
        run = static_run(spec) if spec["where"] == "static" else vm_check(spec)
        desc = str(spec.get("help") or spec.get("command") or spec.get("file"))
        out.append(ctx.check(str(spec["name"]), str(spec["where"]), run, desc))
    return out


def describe(ctx: RuleContext, params: Params) -> str:
    lines = [f"- {s['name']} ({s['where']}): {s.get('help') or s.get('command') or s.get('file')}"
             for s in params["checks"]]
    return "implemented by the build pipeline; checks only:\n" + "\n".join(lines)


KIND = Kind(
    name="check_only",
    params={"checks": Param("list", required=True, help="check specs (see module doc)")},
    apply=apply, checks=checks, describe=describe, validate=validate,
)
