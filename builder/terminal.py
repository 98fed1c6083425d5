"""What every terminal image needs for its kiosk, beside the rules: the kiosk's
configuration, the attestation agent service and its socket, and the persistent state
partition systemd-repart creates on first boot. The kiosk's own service on the console
is the kiosk-service rule's (profiles/rules/kiosk-service.yaml).
"""

from __future__ import annotations

from builder.plan import KIOSK_USER, BuildPlan
from kiosk.config import Injection, KioskConfig, to_json

KIOSK_RULE = "kiosk-service"
KIOSK_CONFIG = "/etc/auditbox/kiosk.json"
UNIT_DIR = "/etc/systemd/system"
AGENT_UNITS = ("auditbox-attest-agent.socket", "auditbox-attest-agent.service")
REPART_DEF = "/usr/lib/repart.d/50-auditbox-state.conf"
STATE_SIZE = 64 * 1024 * 1024
# systemd-repart is its own package in trixie; it formats the partition with mkfs.ext4
PACKAGES = ("systemd-repart", "e2fsprogs")


def kiosk_tty(plan: BuildPlan) -> str:
    """The console the kiosk owns: the test profile's serial port, else kiosk.tty."""
    return plan.profile.test_access.kiosk_tty or plan.profile.kiosk.tty


def kiosk_config(plan: BuildPlan) -> KioskConfig:
    k = plan.profile.kiosk
    return KioskConfig(
        tty=kiosk_tty(plan), gateway_host=k.gateway_host, gateway_port=k.gateway_port,
        host_key=k.host_key, banner=k.banner, notice=k.notice, idle_timeout=k.idle_timeout,
        injection=Injection(k.injection.action, k.injection.burst_keys, k.injection.burst_ms))


def add_terminal(plan: BuildPlan) -> None:
    """The kiosk's supporting pieces, in every image whose profile selects the kiosk."""
    if KIOSK_RULE not in plan.profile.rules:
        return                  # e.g. the stock Debian baseline of the benchmarks
    plan.add_file(KIOSK_CONFIG, to_json(kiosk_config(plan)), 0o644, source="builder/terminal")
    for unit in AGENT_UNITS:
        plan.add_overlay(f"{UNIT_DIR}/{unit}", f"terminal/{unit}.j2", user=KIOSK_USER)
    plan.add_overlay(REPART_DEF, "terminal/repart-state.conf.j2", size=STATE_SIZE)
    plan.add_file("/usr/lib/tmpfiles.d/auditbox-state.conf",
                  "# auditbox: mount point of the state partition (see /etc/fstab)\n"
                  "d /var/lib/auditbox-state 0700 root root -\n", source="builder/terminal")
    for unit in AGENT_UNITS:
        if unit not in plan.units_enable:
            plan.units_enable.append(unit)
    plan.packages = [*plan.packages, *(p for p in PACKAGES if p not in plan.packages)]
