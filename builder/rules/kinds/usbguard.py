"""usbguard: the daemon, its config and a rule file; VM check compares `usbguard list-rules`."""

from __future__ import annotations

import re
from typing import Any

from builder.plan import KIOSK_USER as KIOSK
from builder.plan import BuildPlan
from builder.rules.check import Check, enabled_links, tree_of, vm_run
from builder.rules.kinds.base import Kind, Param, Params, RuleContext
from builder.rules.kinds.common import file_checks, render_overlay

RULES = "/etc/usbguard/rules.conf"
DAEMON = "/etc/usbguard/usbguard-daemon.conf"
TMPFILES = "/etc/tmpfiles.d/auditbox-usbguard.conf"
# IPC access files grant users and groups rights over the daemon (Debian ships ":plugdev",
# which lets group plugdev allow devices); the build deletes every one: root only
IPC_DIR = "/etc/usbguard/IPCAccessControl.d"
TARGETS = ("allow", "block", "reject")
POLICIES = ("allow", "block", "reject", "keep", "apply-policy")


def validate(params: Params) -> None:
    if params["implicit_policy_target"] not in TARGETS:
        raise ValueError(f"implicit_policy_target must be one of {TARGETS}")
    for key in ("present_device_policy", "inserted_device_policy"):
        if params[key] not in POLICIES:
            raise ValueError(f"{key} must be one of {POLICIES}")
    for r in params["extra_rules"]:
        if str(r).split()[:1] == [] or str(r).split()[0] not in TARGETS:
            raise ValueError(f"extra rule {r!r} must start with allow, block or reject")


def rules(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, "rules/usbguard-rules.conf.j2",
                          extra_rules=list(params["extra_rules"]))


def daemon(ctx: RuleContext, params: Params) -> str:
    return render_overlay(ctx, "rules/usbguard-daemon.conf.j2", rules_file=RULES,
                          ipc_dir=IPC_DIR,
                          implicit_policy_target=params["implicit_policy_target"],
                          present_device_policy=params["present_device_policy"],
                          inserted_device_policy=params["inserted_device_policy"])


def rule_lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def apply(ctx: RuleContext, params: Params, plan: BuildPlan) -> None:
    if "usbguard" not in plan.packages:
        plan.packages.append("usbguard")
    plan.add_file(RULES, rules(ctx, params), 0o600, source=ctx.rule_id)
    plan.add_file(DAEMON, daemon(ctx, params), 0o600, source=ctx.rule_id)
    plan.add_file(TMPFILES, "d /var/log/usbguard 0700 root root -\n", 0o644, source=ctx.rule_id)
    if f"{IPC_DIR}/*" not in plan.paths_remove:
        plan.paths_remove.append(f"{IPC_DIR}/*")
    if "usbguard.service" not in plan.units_enable:
        plan.units_enable.append("usbguard.service")


def grants(text: str) -> list[str]:
    """The lines of an IPC access file that grant something (all but blanks and comments)."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def checks(ctx: RuleContext, params: Params) -> list[Check]:
    want = rule_lines(rules(ctx, params))

    def ipc_static(target: Any) -> None:
        tree = tree_of(target)
        bad = {p: grants(tree.read(p) or "") or ["(not a regular file)"]
               for p in tree.walk(IPC_DIR) if tree.is_symlink(p) or grants(tree.read(p) or "")}
        if bad:
            raise AssertionError(f"IPC access files grant rights over usbguard: {bad}")

    def ipc_vm(host: Any) -> None:
        rc, out = vm_run(host, f"grep -rHv -e '^[[:space:]]*#' -e '^[[:space:]]*$' {IPC_DIR}")
        if rc == 0:
            raise AssertionError(f"IPC access files grant rights over usbguard: {out.strip()}")
        if vm_run(host, "usbguard list-devices")[0] != 0:      # the control: root is answered
            raise AssertionError("usbguard list-devices fails even for root")
        rc, out = vm_run(host, f"runuser -u {KIOSK} -- usbguard list-devices 2>&1")
        if rc == 0:
            raise AssertionError(f"user {KIOSK} can talk to the usbguard daemon: {out[:300]}")

    def enabled(target: Any) -> None:
        if not enabled_links(tree_of(target), "usbguard.service"):
            raise AssertionError("usbguard.service is not enabled in the tree")

    def vm(host: Any) -> None:
        if vm_run(host, "systemctl is-active usbguard.service")[0] != 0:
            raise AssertionError("usbguard.service is not active")
        rc, out = vm_run(host, "usbguard list-rules")
        # list-rules prints "N: rule"; compare the rule text in order
        have = [" ".join(re.sub(r"^\s*\d+:\s*", "", line).split())
                for line in out.splitlines() if line.strip()]
        if rc != 0 or have != want:
            raise AssertionError(f"usbguard list-rules (rc {rc}) = {have}, want {want}")

    return [*file_checks(ctx, "rules.conf", RULES, rules(ctx, params), 0o600),
            *file_checks(ctx, "daemon.conf", DAEMON, daemon(ctx, params), 0o600),
            ctx.check("enabled", "static", enabled, "usbguard.service enabled"),
            ctx.check("ipc-access", "static", ipc_static,
                      f"no file in {IPC_DIR} grants anything (root alone talks to the daemon)"),
            ctx.check("ipc-access", "vm", ipc_vm,
                      f"no file in {IPC_DIR} grants anything; {KIOSK} cannot list devices"),
            ctx.check("policy-loaded", "vm", vm, "daemon active, rules loaded as planned")]


def describe(ctx: RuleContext, params: Params) -> str:
    return (f"usbguard (package; usbguard.service enabled; {TMPFILES} makes its log "
            f"directory); {DAEMON}: ImplicitPolicyTarget="
            f"{params['implicit_policy_target']}, PresentDevicePolicy="
            f"{params['present_device_policy']}, InsertedDevicePolicy="
            f"{params['inserted_device_policy']}; deletes every IPC access file ({IPC_DIR}/*): "
            f"only root talks to the daemon\n{RULES}:\n{rules(ctx, params)}")


KIND = Kind(
    name="usbguard",
    params={
        "implicit_policy_target": Param("str", default="block"),
        "present_device_policy": Param("str", default="apply-policy"),
        "inserted_device_policy": Param("str", default="apply-policy"),
        "extra_rules": Param("list", default=[],
                             help="rules placed before the final HID reject (e.g. a badge reader)"),
    },
    apply=apply, checks=checks, describe=describe, validate=validate,
)
