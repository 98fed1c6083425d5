"""make_plan: the only place that turns a profile into concrete image content.

It sits above the plan (data, builder/plan.py) and the rule engine (builder/rules/): the
pipeline's own packages, the base overlays, the test access channel with its test-only
packages (test profiles only), the terminal's kiosk and agent (builder/terminal.py), then
every selected rule, all add to one BuildPlan.
"""

from __future__ import annotations

from builder import rules
from builder.plan import CMDLINE_FILE, BuildPlan
from builder.profile.model import Profile
from builder.profile.required import check_required
from builder.terminal import add_terminal

# What the pipeline itself needs in every image: kernel, init, initrd tooling for
# dm-verity, and what the terminal package (kiosk + attestation agent) depends on.
PIPELINE_PACKAGES = (
    "linux-image-amd64", "systemd", "systemd-sysv", "udev", "dbus", "libpam-systemd",
    "dracut", "systemd-cryptsetup", "kmod", "login", "passwd", "iproute2",
    "python3", "python3-cryptography", "python3-paramiko", "tpm2-tools",
)
# test images only: the lynis yardstick (tests/bench/lynis_bench.py) and procps, whose ps
# it needs to see running daemons (without it Lynis reports none)
TEST_ACCESS_PACKAGES = ("lynis", "procps")


def _add_base(plan: BuildPlan) -> None:
    p = plan.profile
    plan.add_overlay("/etc/hostname", "base/hostname.j2")
    plan.add_overlay("/etc/hosts", "base/hosts.j2")
    plan.add_overlay("/etc/fstab", "base/fstab.j2")
    plan.add_overlay("/usr/lib/tmpfiles.d/auditbox.conf", "base/tmpfiles.conf.j2")
    plan.add_overlay("/etc/systemd/network/50-auditbox.network", "base/network.j2")
    plan.units_enable.append("systemd-networkd.service")
    for entry in p.files:
        plan.add_file(str(entry.path), entry.content, entry.mode, source=str(p.source))


def _add_test_access(plan: BuildPlan) -> None:
    access = plan.profile.test_access
    if access.root_shell_tty:
        tty = access.root_shell_tty
        plan.add_overlay(f"/etc/systemd/system/auditbox-test-shell@{tty}.service",
                         "test/root-shell.service.j2", tty=tty)
        plan.units_enable.append(f"auditbox-test-shell@{tty}.service")
        plan.packages += [p for p in TEST_ACCESS_PACKAGES if p not in plan.packages]
    # access.kiosk_tty moves the kiosk service to that tty (builder.terminal)


def make_plan(profile: Profile) -> BuildPlan:
    check_required(profile)
    plan = BuildPlan(profile=profile)
    plan.modules_remove = list(profile.kernel.modules.deny)
    plan.modules_keep = list(profile.kernel.modules.allow)
    _add_base(plan)
    _add_test_access(plan)
    add_terminal(plan)
    rules.apply_rules(profile, plan)
    # the profile's own tokens come after the rules': the kernel takes the last of repeated
    # parameters, so what the admin wrote wins (e.g. a test profile's loglevel)
    plan.cmdline = [*plan.cmdline, *(t for t in profile.kernel.cmdline if t not in plan.cmdline)]
    # the command line the UKI gets (before roothash=), kept in the tree where the rules'
    # static checks (and an admin on the terminal) read it; kernel-install's file name
    plan.add_file(CMDLINE_FILE, " ".join(plan.cmdline) + "\n", source="pipeline")
    wanted = set(PIPELINE_PACKAGES) | set(profile.packages.include) | set(plan.packages)
    plan.packages = sorted(wanted - set(profile.packages.exclude))
    plan.packages_absent = sorted(set(plan.packages_absent) | set(profile.packages.exclude))
    return plan
