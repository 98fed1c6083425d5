"""Helpers shared by kinds: planned files with their static/VM checks, overlay rendering."""

from __future__ import annotations

import hashlib
import ipaddress
import shlex
from typing import Any

from builder.overlay import render
from builder.plan import BuildPlan, PlannedFile
from builder.rules.check import Check, tree_of, vm_run
from builder.rules.kinds.base import RuleContext


def template_context(ctx: RuleContext, **extra: Any) -> dict[str, Any]:
    return {**ctx.vars, "profile": ctx.profile, "rule_id": ctx.rule_id, "is_ip": is_ip,
            "fail": fail, **extra}


def fail(message: str) -> str:
    """Templates call fail("...") when the profile's values cannot work; -> InputError."""
    raise ValueError(message)


def render_overlay(ctx: RuleContext, template: str, **extra: Any) -> str:
    return render(template, **template_context(ctx, **extra))


def is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def parse_mode(value: int | str) -> int:
    return int(value, 8) if isinstance(value, str) else value


def add_file(plan: BuildPlan, path: str, content: str, mode: int, source: str,
             owner: str = "root", group: str = "root") -> None:
    plan.add_file(path, content, mode, source=source)
    if (owner, group) != ("root", "root"):
        f = plan.files[-1]
        plan.files[-1] = PlannedFile(f.path, f.content, f.mode, owner, group, f.source)


def file_checks(ctx: RuleContext, label: str, path: str, content: str,
                mode: int) -> list[Check]:
    """Static: the tree holds exactly this file with this mode. VM: same bytes on the VM."""
    digest = hashlib.sha256(content.encode()).hexdigest()

    def static(target: Any) -> None:
        tree = tree_of(target)
        got = tree.read(path)
        if got is None:
            raise AssertionError(f"{path} missing (or not a regular file) in the tree")
        if got != content:
            raise AssertionError(f"{path} differs from what rule {ctx.rule_id} planned:\n"
                                 f"--- expected\n{content}\n--- found\n{got}")
        got_mode = tree.mode(path)
        if got_mode != mode:
            raise AssertionError(f"{path} mode {got_mode:o} != {mode:o}" if got_mode is not None
                                 else f"{path}: cannot stat")

    def vm(host: Any) -> None:
        rc, out = vm_run(host, f"sha256sum {shlex.quote(path)}")
        if rc != 0 or out.split()[:1] != [digest]:
            raise AssertionError(f"{path} on the VM is missing or differs: {out.strip()}")

    return [ctx.check(label, "static", static, f"{path} present, mode {mode:o}"),
            ctx.check(label, "vm", vm, f"{path} present on the running system")]
