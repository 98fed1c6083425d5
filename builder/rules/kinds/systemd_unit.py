"""systemd_unit: unit files, drop-ins, enable and mask; checked as links and live state."""

from __future__ import annotations

import shlex
from typing import Any

from builder.plan import BuildPlan
from builder.rules.check import Check, enabled_links, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import file_checks
from builder.unitlinks import is_unit_link

UNIT_DIR = "/etc/systemd/system"
SUFFIXES = (".service", ".target", ".socket", ".timer", ".path", ".mount", ".automount")


def dropin_path(ctx: RuleContext, unit: str) -> str:
    return f"{UNIT_DIR}/{unit}.d/auditbox-{ctx.slug}.conf"


def validate(params: Params) -> None:
    names = [*params["units"], *params["dropins"], *params["enable"], *params["mask"],
             *params["active"]]
    bad = [n for n in names if "/" in str(n) or not str(n).endswith(SUFFIXES)]
    if bad:
        raise ValueError(f"not unit names: {bad}")
    both = set(params["enable"]) & set(params["mask"])
    if both:
        raise ValueError(f"units both enabled and masked: {sorted(both)}")


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    for name, text in params["units"].items():
        plan.add_file(f"{UNIT_DIR}/{name}", str(text), 0o644, source=ctx.rule_id)
    for unit, text in params["dropins"].items():
        plan.add_file(dropin_path(ctx, unit), str(text), 0o644, source=ctx.rule_id)
    for u in params["enable"]:
        if u not in plan.units_enable:
            plan.units_enable.append(str(u))
    for u in params["mask"]:
        if u not in plan.units_mask:
            plan.units_mask.append(str(u))


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    out: list[Check] = []
    for name, text in params["units"].items():
        out += file_checks(ctx, f"unit:{name}", f"{UNIT_DIR}/{name}", str(text), 0o644)
    for unit, text in params["dropins"].items():
        out += file_checks(ctx, f"dropin:{unit}", dropin_path(ctx, unit), str(text), 0o644)
    enable = [str(u) for u in params["enable"]]
    mask = [str(u) for u in params["mask"]]
    active = [str(u) for u in params["active"]]

    def static(target: Any) -> None:
        tree = tree_of(target)
        bad = [f"{u} not enabled (no link in any .wants/)" for u in enable
               if not enabled_links(tree, u)]
        links = [(p, tree.readlink(p) or "") for p in tree.walk(UNIT_DIR) if tree.is_symlink(p)]
        for u in mask:
            link = tree.readlink(f"{UNIT_DIR}/{u}")
            if link != "/dev/null":
                bad.append(f"{u} not masked ({UNIT_DIR}/{u} -> {link})")
            left = [p for p, target in links
                    if is_unit_link(p[len(UNIT_DIR) + 1:], target, u)]
            if left:
                bad.append(f"{u} masked but still wanted or aliased by {left}")
        if bad:
            raise AssertionError("; ".join(bad))

    def vm(host: Any) -> None:
        bad = []
        for u in enable:
            _, state = vm_run(host, f"systemctl is-enabled {shlex.quote(u)}")
            if state.strip() not in ("enabled", "enabled-runtime", "static", "alias"):
                bad.append(f"{u} is-enabled={state.strip()!r}")
        for u in mask:
            _, state = vm_run(host, f"systemctl is-enabled {shlex.quote(u)}")
            if state.strip() != "masked":
                bad.append(f"{u} is-enabled={state.strip()!r}, want masked")
        for u in active:
            _, state = vm_run(host, f"systemctl is-active {shlex.quote(u)}")
            if state.strip() != "active":
                bad.append(f"{u} is-active={state.strip()!r}")
        for u in params["dropins"]:
            _, paths = vm_run(host, f"systemctl show -P DropInPaths {shlex.quote(str(u))}")
            if dropin_path(ctx, str(u)) not in paths.split():
                bad.append(f"{u}: drop-in not loaded ({paths.strip()})")
        if bad:
            raise AssertionError("; ".join(bad))

    if enable or mask:
        out.append(ctx.check("unit-state", "static", static,
                             f"enabled: {enable or '-'}; masked: {mask or '-'}"))
    if enable or mask or active or params["dropins"]:
        out.append(ctx.check("unit-state", "vm", vm,
                             f"enabled: {enable or '-'}; masked: {mask or '-'}; "
                             f"active: {active or '-'}"))
    return out


def describe(ctx: RuleContext, params: Params) -> str:
    lines = [f"unit {UNIT_DIR}/{n}:\n{t}" for n, t in params["units"].items()]
    lines += [f"drop-in {dropin_path(ctx, u)}:\n{t}" for u, t in params["dropins"].items()]
    if params["enable"]:
        lines.append("enable: " + ", ".join(params["enable"]))
    if params["mask"]:
        lines.append("mask: " + ", ".join(params["mask"]))
    return "\n".join(lines)


KIND = Kind(
    name="systemd_unit",
    params={
        "units": Param("map", default={}, help="unit name -> unit file content"),
        "dropins": Param("map", default={}, help="unit name -> drop-in content"),
        "enable": Param("list", default=[], help="units to enable (systemctl --root)"),
        "mask": Param("list", default=[], help="units to mask"),
        "active": Param("list", default=[], help="units that must be active on the VM"),
    },
    apply=apply, checks=checks, describe=describe, validate=validate,
)
