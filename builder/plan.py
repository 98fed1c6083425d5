"""BuildPlan: everything the pipeline will put into the image, derived from a Profile.

make_plan() is the only place that turns a profile into concrete image content: the
pipeline's own needs, the base overlays, the test channel (test profiles only) and the
hardening rules (builder.rules) all add to one BuildPlan; the pipeline only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from builder.overlay import render
from builder.profile.model import Profile
from builder.profile.required import check_required

# What the pipeline itself needs in every image: kernel, init, initrd tooling for
# dm-verity, and what the terminal package (kiosk + attestation agent) depends on.
PIPELINE_PACKAGES = (
    "linux-image-amd64", "systemd", "systemd-sysv", "udev", "dbus", "libpam-systemd",
    "dracut", "systemd-cryptsetup", "kmod", "login", "passwd", "iproute2",
    "python3", "python3-cryptography", "python3-paramiko", "tpm2-tools",
)
KIOSK_USER = "kiosk"


@dataclass
class PlannedFile:
    path: PurePosixPath               # absolute path inside the image
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    source: str = ""                  # overlay template or rule id that produced it


@dataclass
class BuildPlan:
    profile: Profile
    packages: list[str] = field(default_factory=list)          # to install (sorted, unique)
    packages_absent: list[str] = field(default_factory=list)   # must not be in the image
    cmdline: list[str] = field(default_factory=list)           # kernel command line tokens
    files: list[PlannedFile] = field(default_factory=list)
    modules_remove: list[str] = field(default_factory=list)    # module names / globs to delete
    modules_keep: list[str] = field(default_factory=list)      # exceptions
    units_enable: list[str] = field(default_factory=list)
    units_mask: list[str] = field(default_factory=list)
    rule_ids: list[str] = field(default_factory=list)          # rules applied, in order

    def add_file(self, path: str, content: str | bytes, mode: int = 0o644,
                 source: str = "") -> None:
        data = content.encode() if isinstance(content, str) else content
        p = PurePosixPath(path)
        self.files = [f for f in self.files if f.path != p]
        self.files.append(PlannedFile(p, data, mode, source=source))

    def add_overlay(self, path: str, template: str, mode: int = 0o644, **context: object) -> None:
        self.add_file(path, render(template, profile=self.profile, **context), mode,
                      source=f"overlays/{template}")


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
    if access.kiosk_tty:
        tty = access.kiosk_tty
        unit = f"serial-getty@{tty}.service" if tty.startswith("ttyS") else f"getty@{tty}.service"
        plan.add_overlay(f"/etc/systemd/system/{unit}.d/50-auditbox-test-kiosk.conf",
                         "test/kiosk-getty.conf.j2", tty=tty, user=KIOSK_USER)
        plan.units_enable.append(unit)


def make_plan(profile: Profile) -> BuildPlan:
    check_required(profile)
    plan = BuildPlan(profile=profile)
    plan.modules_remove = list(profile.kernel.modules.deny)
    plan.modules_keep = list(profile.kernel.modules.allow)
    _add_base(plan)
    _add_test_access(plan)
    from builder import rules  # rules build on the plan; imported late to keep layering clear

    rules.apply_rules(profile, plan)
    # the profile's own tokens come after the rules': the kernel takes the last of repeated
    # parameters, so what the admin wrote wins (e.g. a test profile's loglevel)
    plan.cmdline = [*plan.cmdline, *(t for t in profile.kernel.cmdline if t not in plan.cmdline)]
    wanted = set(PIPELINE_PACKAGES) | set(profile.packages.include) | set(plan.packages)
    plan.packages = sorted(wanted - set(profile.packages.exclude))
    plan.packages_absent = sorted(set(plan.packages_absent) | set(profile.packages.exclude))
    return plan
