"""The rule catalogue: loader strictness, selection and variables, what each kind adds to the
plan, and the generated checks (static ones run against a tree laid out from the plan; VM ones
against a scripted fake host)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from builder.errors import InputError
from builder.paths import DEFAULT_PROFILE
from builder.plan import BuildPlan
from builder.planner import make_plan
from builder.profile import load_profile
from builder.profile.model import Kiosk, Network, Origin, Profile
from builder.profile.model import TestAccess as Access
from builder.rules import Check, apply_rules, checks, describe, load_catalogue
from builder.rules.catalogue import parse_rule
from builder.rules.check import DirTree, HostTree, tree_of
from builder.rules.engine import selection
from builder.rules.kinds import KINDS
from builder.rules.results import load, record, run_and_record
from tests.clirun import run_main
from tests.plantree import materialize, run_static

# the default selection: the shipped base profile's `rules:` (its one source)
DEFAULT_SELECTION = tuple(load_profile(DEFAULT_PROFILE).rules)
GATEWAY = "10.0.2.2"
PORT = 2222


def profile(**kw: Any) -> Profile:
    base: dict[str, Any] = {
        "name": "t", "source": Path("/p/audit-laptop.yaml"), "rules": list(DEFAULT_SELECTION),
        "kiosk": Kiosk(gateway_host=GATEWAY, gateway_port=PORT),
    }
    base.update(kw)
    return Profile(**base)


def plan_for(p: Profile) -> BuildPlan:
    plan = BuildPlan(profile=p)
    apply_rules(p, plan)
    return plan


def file_text(plan: BuildPlan, path: str) -> str:
    for f in plan.files:
        if str(f.path) == path:
            return f.content.decode()
    raise AssertionError(f"{path} not planned; have {[str(f.path) for f in plan.files]}")


# ---------------------------------------------------------------- catalogue


def test_every_rule_file_loads_and_default_selects_all() -> None:
    cat = load_catalogue()
    assert len(cat) == len(DEFAULT_SELECTION) >= 52
    assert len(set(DEFAULT_SELECTION)) == len(DEFAULT_SELECTION)
    assert set(DEFAULT_SELECTION) == set(cat)
    for r in cat.values():
        assert r.source.stem == r.id
        assert r.severity in ("low", "medium", "high")
        assert r.title and r.rationale


def test_every_kind_is_used_by_some_rule() -> None:
    used: set[str] = set()
    for r in load_catalogue().values():
        used.add(r.kind)
        for part in r.params.get("parts", []) if r.kind == "composite" else []:
            used.add(part["kind"])
    assert used == set(KINDS)


def write_rule(tmp_path: Path, rid: str, body: str) -> Path:
    path = tmp_path / f"{rid}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """\
id: demo
title: Demo
rationale: because
severity: low
kind: sysctl
settings:
  kernel.sysrq: 0
"""


def test_minimal_rule_parses(tmp_path: Path) -> None:
    r = parse_rule(write_rule(tmp_path, "demo", GOOD))
    assert r.kind == "sysctl" and r.params == {"settings": {"kernel.sysrq": 0}}


@pytest.mark.parametrize("body, line, fragment", [
    (GOOD + "bogus: 1\n", 8, "demo.yaml:8: bogus: unknown key 'bogus' for kind sysctl (allowed:"),
    (GOOD.replace("kind: sysctl", "kind: magic"), 5, "kind: unknown kind 'magic' (allowed:"),
    (GOOD.replace("severity: low", "severity: urgent"), 4, "severity: unknown severity"),
    (GOOD.replace("id: demo", "id: other"), 1, "must match the file name"),
    (GOOD.replace("title: Demo\n", ""), 1, "required text field title"),
    (GOOD + "references:\n  nist: [x]\n", 9, "references.nist: unknown reference source"),
    (GOOD + "references:\n  cis: x\n", 9, "references.cis: must be a list"),
    (GOOD + "vars:\n  v:\n    type: str\n    default: a\n    color: red\n", 12,
     "vars.v.color: unknown key 'color'"),
    (GOOD + "vars:\n  v:\n    type: float\n    default: 1\n", 10, "unknown var type 'float'"),
    (GOOD + "vars:\n  v:\n    type: int\n    default: seven\n", 11, "expected int, got str"),
    (GOOD + "vars:\n  v:\n    type: int\n", 9, "a var needs a default"),
    (GOOD.replace("settings:\n  kernel.sysrq: 0\n", "settings: [a]\n"), 6,
     "settings: expected map, got list"),
    (GOOD.replace("settings:\n  kernel.sysrq: 0\n", ""), 1, "kind sysctl needs settings"),
    (GOOD + "settings:\n  x: 1\n", 8, "duplicate key"),
    ("id: demo\ntitle: t\nrationale: r\nseverity: low\nkind: composite\nparts:\n"
     "  - kind: sysctl\n    settings: {a: 1}\n    colour: 1\n", 9,
     "parts.0.colour: unknown key"),
    ("id: demo\ntitle: t\nrationale: r\nseverity: low\nkind: composite\nparts:\n"
     "  - kind: warp\n", 7, "parts.0.kind: unknown kind"),
    ("id: demo\ntitle: [\n", 3, "invalid YAML"),
], ids=lambda v: None if not isinstance(v, str) or len(v) > 40 else v[:30])
def test_loader_is_strict(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    path = write_rule(tmp_path, "demo", body)
    with pytest.raises(InputError) as exc:
        parse_rule(path)
    text = str(exc.value)
    assert fragment in text, text
    assert text.startswith(f"{path}:{line}:"), text
    assert exc.value.exit_code == 2


def test_load_catalogue_from_directory(tmp_path: Path) -> None:
    write_rule(tmp_path, "demo", GOOD)
    assert list(load_catalogue(tmp_path)) == ["demo"]


# ---------------------------------------------------------------- selection and vars


def test_unknown_rule_id_is_an_error_at_its_line() -> None:
    p = profile(rules=["sysctl-kptr", "no-such-rule"],
                origins={"rules": Origin(Path("/p/a.yaml"), 30)})
    with pytest.raises(InputError) as exc:
        apply_rules(p, BuildPlan(profile=p))
    assert str(exc.value).startswith("/p/a.yaml:30: rules.1: unknown rule 'no-such-rule'")


def test_bang_drops_and_duplicates_collapse() -> None:
    p = profile(rules=["sysctl-kptr", "no-sshd", "sysctl-kptr", "!no-sshd", "sysctl-ptrace"])
    assert selection(p) == ["sysctl-kptr", "sysctl-ptrace"]
    plan = plan_for(p)
    assert plan.rule_ids == ["sysctl-kptr", "sysctl-ptrace"]
    with pytest.raises(InputError, match="unknown rule 'nope'"):
        selection(profile(rules=["!nope"]))


def test_unknown_var_and_bad_type_point_at_the_profile() -> None:
    origins = {"rule_vars.console-quiet.volume": Origin(Path("/p/a.yaml"), 41),
               "rule_vars.console-quiet.loglevel": Origin(Path("/p/a.yaml"), 42)}
    p = profile(rule_vars={"console-quiet": {"volume": 3}}, origins=origins)
    with pytest.raises(InputError) as exc:
        plan_for(p)
    assert str(exc.value) == ("/p/a.yaml:41: rule_vars.console-quiet.volume: rule console-quiet"
                              " has no variable 'volume' (allowed: loglevel)")
    p = profile(rule_vars={"console-quiet": {"loglevel": "loud"}}, origins=origins)
    with pytest.raises(InputError) as exc:
        plan_for(p)
    assert str(exc.value).startswith("/p/a.yaml:42: rule_vars.console-quiet.loglevel: "
                                     "expected int, got str")
    with pytest.raises(InputError, match=r"rule_vars\.bogus: unknown rule 'bogus'"):
        plan_for(profile(rule_vars={"bogus": {}}))


def test_rule_vars_override_defaults() -> None:
    p = profile(rule_vars={"console-quiet": {"loglevel": 7},
                           "display-external-off": {"connectors": ["HDMI-A-9"]}})
    plan = plan_for(p)
    assert "loglevel=7" in plan.cmdline and "loglevel=0" not in plan.cmdline
    assert [t for t in plan.cmdline if t.startswith("video=")] == ["video=HDMI-A-9:d"]


# ---------------------------------------------------------------- what apply_rules adds


def test_default_plan_content() -> None:
    plan = plan_for(profile())
    assert plan.rule_ids == list(DEFAULT_SELECTION)
    for tok in ("slab_nomerge", "init_on_free=1", "vsyscall=none", "ia32_emulation=0",
                "debugfs=off", "iommu.strict=1", "lockdown=confidentiality",
                "module.sig_enforce=1", "rd.shell=0", "rd.emergency=halt",
                "usbcore.authorized_default=0", "video=HDMI-A-1:d", "video=VGA-1:d",
                "video=DVI-I-1:d", "quiet", "loglevel=0"):
        assert tok in plan.cmdline, tok
    assert "ipv6.disable=1" not in plan.cmdline
    assert len(plan.cmdline) == len(set(plan.cmdline))
    # module removal + modprobe fences
    assert {"usb_storage", "uas", "drivers/usb/storage/*", "thunderbolt", "sound/*", "snd_*",
            "cdrom", "parport_pc", "ksmbd", "btusb", "cfg80211"} <= set(plan.modules_remove)
    assert {"drivers/*virtio*", "erofs", "dm_verity", "nf_tables", "net/netfilter/nft_*",
            "tpm*"} <= set(plan.modules_keep)
    # the allow-list: its groups, and the pipeline's keep list
    assert plan.modules_allow is not None
    assert {"i915", "drivers/hid", "drivers/net/ethernet", "nvme", "drivers/char/tpm",
            "nf_tables", "drivers/*virtio*"} <= set(plan.modules_allow)
    assert "drivers/net/wireless" not in plan.modules_allow
    wifi = plan_for(profile(rule_vars={"radio-off": {"wifi": True}}))
    assert wifi.modules_allow and "drivers/net/wireless" in wifi.modules_allow
    modprobe = file_text(plan, "/etc/modprobe.d/auditbox-usb-storage-absent.conf")
    assert "install usb_storage /bin/false\nblacklist usb_storage\n" in modprobe
    assert "install uas /bin/false" in modprobe
    # packages
    assert {"usbguard", "nftables"} <= set(plan.packages)
    assert plan.packages == sorted(set(plan.packages))
    assert "lynis" not in plan.packages
    assert {"openssh-server", "sudo", "cups"} <= set(plan.packages_absent)
    # units
    assert {"usbguard.service", "nftables.service", "auditbox-modules-lock.service",
            "auditbox-kiosk.service", "auditbox-vt-lock.service"} <= set(plan.units_enable)
    assert {"getty@.service", "serial-getty@.service", "autovt@.service"} <= set(
        plan.units_mask)
    assert not any(u.startswith(("getty@", "serial-getty@")) for u in plan.units_enable)
    assert {"ctrl-alt-del.target", "debug-shell.service", "suspend.target"} <= set(
        plan.units_mask)
    # sysctl, logind, usbguard, udev
    assert "kernel.sysrq = 0" in file_text(plan, "/etc/sysctl.d/60-auditbox-sysctl-sysrq-off.conf")
    assert "kernel.printk = 3 3 3 3" in file_text(plan,
                                                 "/etc/sysctl.d/60-auditbox-sysctl-kptr.conf")
    assert "-net.ipv6.conf.all.accept_ra = 0" in file_text(
        plan, "/etc/sysctl.d/60-auditbox-sysctl-net.conf")
    logind = file_text(plan, "/etc/systemd/logind.conf.d/auditbox-no-other-vts.conf")
    assert "NAutoVTs=0\nReserveVT=0\n" in logind
    daemon = file_text(plan, "/etc/usbguard/usbguard-daemon.conf")
    for line in ("ImplicitPolicyTarget=block", "PresentDevicePolicy=apply-policy",
                 "InsertedDevicePolicy=apply-policy"):
        assert line in daemon.splitlines()
    rules = file_text(plan, "/etc/usbguard/rules.conf")
    assert "allow with-interface match-all { 03:01:01 03:01:02 }" in rules
    assert rules.rstrip().endswith("reject with-interface one-of { 03:*:* }")
    assert next(f for f in plan.files if str(f.path) == "/etc/usbguard/rules.conf").mode == 0o600
    udev = file_text(plan, "/etc/udev/rules.d/70-auditbox-drm-connectors.rules")
    assert 'KERNEL=="card[0-9]*-eDP-*", GOTO="auditbox_drm_end"' in udev
    assert 'KERNEL=="card[0-9]*-Virtual-1", GOTO="auditbox_drm_end"' in udev
    assert 'ATTR{status}="off"' in udev
    # kiosk: a service on tty1 as the kiosk user, restarted always, no start limit
    unit = file_text(plan, "/etc/systemd/system/auditbox-kiosk.service")
    for line in ("TTYPath=/dev/tty1", "User=kiosk", "Restart=always", "StartLimitIntervalSec=0",
                 "TTYVTDisallocate=yes", "Environment=TERM=linux PYTHONDONTWRITEBYTECODE=1",
                 "IPAddressDeny=any", f"IPAddressAllow={GATEWAY}", "CapabilityBoundingSet="):
        assert line in unit.splitlines(), line
    assert file_text(plan, "/etc/systemd/system-generators/systemd-getty-generator") == ""
    assert "pam_wheel.so use_uid" in file_text(plan, "/etc/pam.d/su")
    assert "CtrlAltDelBurstAction=none" in file_text(
        plan, "/etc/systemd/system.conf.d/auditbox-ctrl-alt-del.conf")
    lock = file_text(plan, "/etc/systemd/system/auditbox-modules-lock.service")
    for unit in ("systemd-udev-settle.service", "usbguard.service", "nftables.service",
                 "systemd-modules-load.service"):
        assert unit in lock
    assert "echo 1 > /proc/sys/kernel/modules_disabled" in lock
    # network
    base = file_text(plan, "/etc/nftables.conf")
    assert base.count("policy drop;") == 3
    egress = file_text(plan, "/etc/nftables.d/50-egress-gateway.nft")
    assert f"ip daddr {GATEWAY} tcp dport {PORT} accept" in egress
    assert "udp sport 68 udp dport 67 accept" in egress
    assert "dport 53" not in egress
    assert "net.ipv6.conf.all.disable_ipv6 = 1" in file_text(
        plan, "/etc/sysctl.d/60-auditbox-ipv6-policy.conf")


def test_every_planned_file_is_from_a_rule_and_unique() -> None:
    plan = plan_for(profile())
    paths = [str(f.path) for f in plan.files]
    assert len(paths) == len(set(paths))
    assert all(f.source in DEFAULT_SELECTION for f in plan.files)


def test_test_profile_differs_only_by_lynis_and_its_ps() -> None:
    prod = plan_for(profile())
    p = profile(test_access=Access(root_shell_tty="ttyS1", kiosk_tty="ttyS0"))
    plan = plan_for(p)
    # the test access (the planner), not the rule engine, brings the test-only packages
    assert set(plan.packages) == set(prod.packages)
    assert set(make_plan(p).packages) - set(make_plan(profile()).packages) == {"lynis", "procps"}
    assert "debug-shell.service" in plan.units_mask
    assert plan.cmdline == prod.cmdline and plan.units_mask == prod.units_mask
    # no getty is allowed in either image; the test image's kiosk moves to ttyS0
    gettys = _check(p, "no-other-vts:check_only1:no-other-gettys:vm")
    gettys.run(FakeVM({"out=": (0, "")}))
    with pytest.raises(AssertionError):
        gettys.run(FakeVM({"out=": (1, "serial-getty@ttyS0.service\n")}))
    assert "TTYPath=/dev/ttyS0" in file_text(plan, "/etc/systemd/system/auditbox-kiosk.service")
    assert "TTYPath=/dev/tty1" in file_text(prod, "/etc/systemd/system/auditbox-kiosk.service")


def test_gateway_name_needs_resolvers() -> None:
    p = profile(kiosk=Kiosk(gateway_host="gw.example.org", gateway_port=22),
                origins={"kiosk": Origin(Path("/p/a.yaml"), 12)})
    with pytest.raises(InputError) as exc:
        plan_for(p)
    assert "network.dns lists no resolver" in str(exc.value)
    p = profile(kiosk=Kiosk(gateway_host="gw.example.org", gateway_port=22),
                network=Network(dns=["192.0.2.53"]))
    plan = plan_for(p)
    egress = file_text(plan, "/etc/nftables.d/50-egress-gateway.nft")
    assert "ip daddr @gateway4 tcp dport 22 accept" in egress
    assert "ip daddr 192.0.2.53 udp dport 53 accept" in egress
    assert "auditbox-gateway-resolve.service" in plan.units_enable
    script = next(f for f in plan.files if str(f.path) == "/usr/lib/auditbox/gateway-resolve")
    assert script.mode == 0o755


def test_no_gateway_means_only_dhcp() -> None:
    plan = plan_for(profile(kiosk=Kiosk(), network=Network(dhcp=False)))
    egress = file_text(plan, "/etc/nftables.d/50-egress-gateway.nft")
    assert "accept" not in egress.split("chain output", 1)[1]


def test_ipv6_enabled_profile() -> None:
    plan = plan_for(profile(network=Network(ipv6=True)))
    assert "nd-neighbor-solicit" in file_text(plan, "/etc/nftables.d/40-ipv6.nft")
    assert not any("ipv6-policy" in str(f.path) and "sysctl" in str(f.path)
                   for f in plan.files)
    with_kernel = plan_for(profile(rule_vars={"ipv6-policy": {"kernel_disable": True}}))
    assert "ipv6.disable=1" in with_kernel.cmdline


def test_radio_wifi_var_keeps_wifi() -> None:
    plan = plan_for(profile(rule_vars={"radio-off": {"wifi": True}}))
    assert "cfg80211" not in plan.modules_remove and "btusb" in plan.modules_remove


def test_profile_allow_overrides_module_removal() -> None:
    p = profile()
    p.kernel.modules.allow.append("cdrom")
    plan = plan_for(p)
    assert "cdrom" not in plan.modules_remove and "cdrom" in plan.modules_keep


def test_protected_modules_cannot_be_removed(tmp_path: Path) -> None:
    from builder.rules.engine import resolve

    path = write_rule(tmp_path, "bad", "id: bad\ntitle: t\nrationale: r\nseverity: low\n"
                      "kind: module_absent\nmodules: [virtio_blk]\n")
    with pytest.raises(InputError, match="needs to boot: virtio_blk"):
        resolve(parse_rule(path), profile())


def test_conflicting_package_is_an_error() -> None:
    p = profile(origins={"packages": Origin(Path("/p/a.yaml"), 5)})
    p.packages.include.append("sudo")
    with pytest.raises(InputError, match=r"/p/a\.yaml:5: packages\.include: .*sudo"):
        plan_for(p)


def test_describe_every_rule() -> None:
    """`auditbox rules show` says what the rule puts into the image: every file, command
    line token, unit, package and module its apply() adds to a plan; a rule that adds
    nothing (the pipeline implements it) names each of its checks."""
    for rid, rule in load_catalogue().items():
        p = profile(rules=[rid])
        plan = plan_for(p)
        items = [*(str(f.path) for f in plan.files), *plan.cmdline, *plan.units_enable,
                 *plan.units_mask, *plan.packages, *plan.packages_absent, *plan.modules_remove,
                 *plan.paths_remove, *([] if plan.setid_allow is None else ["setuid"]),
                 *(plan.modules_allow or [])]
        if not items:
            items = [c.name.split(":")[-2] for c in checks(p) if c.rule_id == rid]
        assert items, f"{rid} adds nothing to the plan and has no checks"
        text = describe(rule, p)
        missing = [i for i in items if i not in text]
        assert not missing, f"{rid}: rules show does not mention {missing}:\n{text}"


# ---------------------------------------------------------------- checks


def test_check_generation() -> None:
    all_checks = checks(profile())
    names = [c.name for c in all_checks]
    assert len(names) == len(set(names))
    static = [c for c in all_checks if c.where == "static"]
    vm = [c for c in all_checks if c.where == "vm"]
    assert len(static) >= 82 and len(vm) >= 123, (len(static), len(vm))
    # the rules of issue 12 are checked on both trees and on the VM
    for rid in ("network-fail-closed", "setid-minimal", "maintenance-units-off", "amnesic",
                "usbguard-policy", "usbguard-dbus-off", "initrd-no-shell", "sysctl-sysrq-off",
                "sysctl-panic", "root-verity"):
        assert {c.where for c in all_checks if c.rule_id == rid} == {"static", "vm"}, rid
    by_rule = {c.rule_id for c in all_checks}
    assert by_rule == set(DEFAULT_SELECTION)        # every rule checks something
    vm_rules = {c.rule_id for c in vm}
    assert vm_rules == set(DEFAULT_SELECTION)       # ... and every rule on the VM
    with pytest.raises(FrozenInstanceError):
        all_checks[0].name = "x"  # type: ignore[misc]


def test_adding_a_rule_file_adds_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.rules import engine

    write_rule(tmp_path, "demo", GOOD)
    monkeypatch.setattr(engine, "load_catalogue", lambda: load_catalogue(tmp_path))
    names = sorted(c.name for c in checks(profile(rules=["demo"])))
    assert names == ["demo:sysctl.d:static", "demo:sysctl.d:vm", "demo:sysctl:vm"]


@pytest.fixture(scope="module")
def default_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Profile, Path]:
    p = profile()
    root = tmp_path_factory.mktemp("tree")
    materialize(make_plan(p), root)     # with the base overlays (fstab)
    return p, root


def test_static_checks_pass_on_a_tree_laid_out_from_the_plan(
        default_tree: tuple[Profile, Path]) -> None:
    p, root = default_tree
    assert run_static(checks(p), root) == {}
    assert run_static(checks(p), DirTree(root)) == {}


def test_static_checks_through_a_testinfra_host(default_tree: tuple[Profile, Path]) -> None:
    testinfra = pytest.importorskip("testinfra")
    p, root = default_tree
    host = testinfra.get_host("local://")
    assert run_static(checks(p), HostTree(host, str(root))) == {}


def test_static_checks_through_a_chroot_host(default_tree: tuple[Profile, Path]) -> None:
    testinfra = pytest.importorskip("testinfra")
    p, root = default_tree
    host = testinfra.get_host(str(root), connection="chroot")
    tree = tree_of(host)
    assert isinstance(tree, DirTree) and tree.root == root
    assert run_static(checks(p), host) == {}


def test_tree_resolves_symlinks_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/db").mkdir(parents=True)
    (tmp_path / "usr/lib/db/status").write_text("inside")
    (tmp_path / "var/lib").mkdir(parents=True)
    os.symlink("/usr/lib/db", tmp_path / "var/lib/dpkg")       # absolute: re-rooted
    os.symlink("../../etc/passwd", tmp_path / "var/escape")     # cannot climb out of root
    tree = DirTree(tmp_path)
    assert tree.read("/var/lib/dpkg/status") == "inside"
    assert tree.readlink("/var/lib/dpkg") == "/usr/lib/db"
    assert tree.read("/var/escape") is None
    assert tree.walk("/var/lib/dpkg") == ["/var/lib/dpkg/status"]


def _mutations() -> list[tuple[str, Callable[[Path], None], str]]:
    def add_module(root: Path) -> None:
        d = root / "usr/lib/modules/6.12.0-test-amd64/kernel/drivers/usb/storage"
        d.mkdir(parents=True, exist_ok=True)
        (d / "usb-storage.ko.zst").write_bytes(b"")

    def install_sudo(root: Path) -> None:
        with open(root / "usr/lib/auditbox/dpkg/status", "a") as f:
            f.write("Package: sudo\nStatus: install ok installed\n\n")

    def edit_sysctl(root: Path) -> None:
        (root / "etc/sysctl.d/60-auditbox-sysctl-sysrq-off.conf").write_text("kernel.sysrq = 1\n")

    def unmask(root: Path) -> None:
        (root / "etc/systemd/system/ctrl-alt-del.target").unlink()

    def widen_usbguard(root: Path) -> None:
        os.chmod(root / "etc/usbguard/rules.conf", 0o644)

    def root_password(root: Path) -> None:
        (root / "etc/shadow").write_text("root:$6$salt$hash:19000:0:99999:7:::\n")

    def disable_nft(root: Path) -> None:
        (root / "etc/systemd/system/sysinit.target.wants/nftables.service").unlink()

    def networkd_without_firewall(root: Path) -> None:
        (root / "etc/systemd/system/systemd-networkd.service.d/"
                "auditbox-network-fail-closed.conf").unlink()

    def setuid_back(root: Path) -> None:
        (root / "usr/bin/chfn").write_bytes(b"\x7fELF")
        os.chmod(root / "usr/bin/chfn", 0o4755)

    def setgid_back(root: Path) -> None:
        (root / "usr/sbin/unix_chkpwd").write_bytes(b"\x7fELF")
        os.chmod(root / "usr/sbin/unix_chkpwd", 0o2755)

    def usbguard_ipc_grant(root: Path) -> None:
        (root / "etc/usbguard/IPCAccessControl.d").mkdir()
        (root / "etc/usbguard/IPCAccessControl.d/:plugdev").write_text(
            "Devices=list,modify,listen\nPolicy=list\nExceptions=listen\n")

    def dangling_dbus_links(root: Path) -> None:
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(exist_ok=True)
        os.symlink("/usr/lib/systemd/system/usbguard-dbus.service",
                   wants / "usbguard-dbus.service")

    def usbguard_dbus_alias(root: Path) -> None:
        os.symlink("/usr/lib/systemd/system/usbguard-dbus.service",
                   root / "etc/systemd/system/dbus-org.usbguard.service")

    def fstrim_timer(root: Path) -> None:
        wants = root / "etc/systemd/system/timers.target.wants"
        wants.mkdir(exist_ok=True)
        os.symlink("/usr/lib/systemd/system/fstrim.timer", wants / "fstrim.timer")

    def initrd_shell(root: Path) -> None:
        with open(root / "usr/lib/auditbox/initrd.list", "a") as f:
            f.write("100755 129736 usr/bin/dash\n120777 4 usr/bin/sh\n")

    def initrd_generic(root: Path) -> None:
        with open(root / "usr/lib/auditbox/initrd.list", "a") as f:
            f.write("100644 9 usr/lib/modules/6.12.0-test-amd64/kernel/fs/9p/9p.ko.xz\n")

    def initrd_without_verity(root: Path) -> None:
        listing = root / "usr/lib/auditbox/initrd.list"
        listing.write_text("".join(line + "\n" for line in listing.read_text().splitlines()
                                   if "verity" not in line))

    def sysrq_forced(root: Path) -> None:
        with open(root / "etc/kernel/cmdline", "a") as f:
            f.write("sysrq_always_enabled\n")

    def cmdline_lost(root: Path) -> None:
        cmdline = root / "etc/kernel/cmdline"
        cmdline.write_text(cmdline.read_text().replace("panic=10", "panic=0"))

    def var_exec(root: Path) -> None:
        fstab = root / "etc/fstab"
        fstab.write_text(fstab.read_text().replace("nodev,nosuid,noexec,mode=0755,size=25%",
                                                   "nodev,nosuid,mode=0755,size=25%"))

    def sshd_binary(root: Path) -> None:
        (root / "usr/sbin/sshd").write_text("")

    def kiosk_shell(root: Path) -> None:
        (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                         "kiosk:x:1000:1000::/h:/bin/bash\n")

    def drop_udev(root: Path) -> None:
        (root / "etc/udev/rules.d/70-auditbox-drm-connectors.rules").unlink()

    return [
        ("module-file", add_module, "usb-storage-absent:modules-absent:static"),
        ("sudo-installed", install_sudo, "root-locked:package_absent:packages-absent:static"),
        ("sysctl-edited", edit_sysctl, "sysctl-sysrq-off:sysctl:sysctl.d:static"),
        ("unmasked", unmask, "ctrl-alt-del-off:systemd_unit:unit-state:static"),
        ("usbguard-mode", widen_usbguard, "usbguard-policy:rules.conf:static"),
        ("root-password", root_password, "root-locked:check_only:root-password-locked:static"),
        ("nft-disabled", disable_nft, "nft-default-drop:nft-check:static"),
        ("sshd-binary", sshd_binary, "no-sshd:packages-absent:static"),
        ("setuid-file", setuid_back, "setid-minimal:setid-files:static"),
        ("masked-but-wanted", dangling_dbus_links, "usbguard-dbus-off:unit-state:static"),
        ("masked-but-aliased", usbguard_dbus_alias, "usbguard-dbus-off:unit-state:static"),
        ("var-exec", var_exec, "amnesic:fstab-tmpfs:static"),
        ("initrd-shell", initrd_shell, "initrd-no-shell:check_only:initrd-no-shell:static"),
        ("initrd-generic", initrd_generic, "initrd-no-shell:check_only:initrd-lean:static"),
        ("initrd-no-verity", initrd_without_verity,
         "initrd-no-shell:check_only:initrd-contents:static"),
        ("sysrq-forced", sysrq_forced,
         "sysctl-sysrq-off:check_only:no-sysrq-always-enabled:static"),
        ("panic-not-on-cmdline", cmdline_lost, "sysctl-panic:kernel_cmdline:cmdline:static"),
        ("timer-enabled", fstrim_timer, "maintenance-units-off:systemd_unit:unit-state:static"),
        ("usbguard-ipc", usbguard_ipc_grant, "usbguard-policy:ipc-access:static"),
        ("setgid-file", setgid_back, "setid-minimal:setid-files:static"),
        ("networkd-unguarded", networkd_without_firewall,
         "network-fail-closed:systemd_unit:dropin:systemd-networkd.service:static"),
        ("kiosk-shell", kiosk_shell, "kiosk-service:check_only:kiosk-account:static"),
        ("udev-missing", drop_udev, "drm-connectors-off:udev_rule:udev:static"),
    ]


@pytest.mark.parametrize("label, mutate, failing", _mutations(), ids=[m[0] for m in _mutations()])
def test_static_checks_catch_a_broken_tree(tmp_path: Path, label: str,
                                           mutate: Callable[[Path], None], failing: str) -> None:
    p = profile()
    materialize(make_plan(p), tmp_path)
    mutate(tmp_path)
    failures = run_static(checks(p), tmp_path)
    assert failing in failures, (label, sorted(failures))
    assert len(failures) <= 2, sorted(failures)


ALLOWLIST = "modules-allowlist:module_allowlist:allowlist:static"
# one driver of each family put back, under a name no rule lists (a kernel that adds or
# renames a driver): the family's check fails by directory or by name glob
FAMILY_DRIVERS = [
    ("sd-card-absent", "sd-mmc", "drivers/mmc/host/sdhci-newvendor.ko.xz"),
    ("sd-card-absent", "sd-mmc", "drivers/misc/newreader/rtsx_pci_v2.ko.xz"),
    ("camera-audio-off", "camera", "drivers/media/pci/intel/ipu7/intel-ipu7.ko.xz"),
    ("camera-audio-off", "camera", "drivers/media/i2c/ov99999.ko.xz"),
    ("camera-audio-off", "usb-camera", "drivers/media/usb/uvc2/uvcvideo2.ko.xz"),
    ("camera-audio-off", "sound", "sound/pci/hda/snd-hda-codec-hdmi.ko.xz"),
    ("camera-audio-off", "pc-speaker", "drivers/input/misc/pcspkr.ko.xz"),
    ("wwan-absent", "modem", "drivers/net/wwan/t9xx/mtk_t9xx.ko.xz"),
    ("wwan-absent", "modem", "drivers/net/foo_wwan.ko.xz"),
    ("nfc-absent", "nfc", "drivers/nfc/pn600/pn600.ko.xz"),
    ("usb-gadget-absent", "usb-gadget", "drivers/usb/gadget/function/usb_f_newfn.ko.xz"),
    ("usb-gadget-absent", "usb-gadget", "drivers/usb/dwc3/dwc3-newsoc.ko.xz"),
    ("usb-gadget-absent", "usbip", "drivers/usb/usbip/usbip-vudc.ko.xz"),
    ("dma-ports-off", "pc-card", "drivers/pcmcia/yenta_socket.ko.xz"),
    ("dma-ports-off", "thunderbolt", "drivers/thunderbolt/thunderbolt-usb4.ko.xz"),
]


@pytest.mark.parametrize("rule, family, driver", FAMILY_DRIVERS,
                         ids=[f"{f}:{d.rsplit('/', 1)[1]}" for _, f, d in FAMILY_DRIVERS])
def test_family_checks_catch_a_driver_put_back(tmp_path: Path, rule: str, family: str,
                                                driver: str) -> None:
    p = profile()
    materialize(make_plan(p), tmp_path)
    assert run_static(checks(p), tmp_path) == {}
    path = tmp_path / "usr/lib/modules/6.12.0-test-amd64/kernel" / driver
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    failures = run_static(checks(p), tmp_path)
    assert f"{rule}:family-{family}:static" in failures, sorted(failures)
    assert driver in failures[f"{rule}:family-{family}:static"]
    assert ALLOWLIST in failures                                    # and outside the list
    assert set(failures) <= {f"{rule}:family-{family}:static", f"{rule}:modules-absent:static",
                             ALLOWLIST}, sorted(failures)


def test_allowlist_catches_a_driver_no_rule_names(tmp_path: Path) -> None:
    p = profile()
    materialize(make_plan(p), tmp_path)
    kernel = tmp_path / "usr/lib/modules/6.12.0-test-amd64/kernel"
    assert not (kernel / "drivers/misc/eeprom/at24.ko.xz").exists()     # deleted by the list
    (kernel / "drivers/misc/newport").mkdir(parents=True)
    (kernel / "drivers/misc/newport/newport.ko.xz").write_bytes(b"")
    assert set(run_static(checks(p), tmp_path)) == {ALLOWLIST}


class FakeResult:
    def __init__(self, rc: int, stdout: str) -> None:
        self.rc, self.stdout, self.stderr = rc, stdout, ""


class FakeVM:
    """Answers the commands VM checks send, from a table of (prefix, rc, stdout). Any other
    command gets exit 127, or with strict=True raises UnexpectedCommand, which is not an
    AssertionError: a check cannot "fail" on a command the test did not foresee."""

    def __init__(self, answers: dict[str, tuple[int, str]], strict: bool = False) -> None:
        self.answers = answers
        self.strict = strict
        self.seen: list[str] = []

    def run(self, cmd: str) -> FakeResult:
        assert cmd.startswith("( ") and cmd.endswith("\n)"), cmd   # always in a subshell
        cmd = cmd[2:-2]
        self.seen.append(cmd)
        for prefix, (rc, out) in self.answers.items():
            if cmd.startswith(prefix):
                return FakeResult(rc, out)
        if self.strict:
            raise UnexpectedCommand(cmd)
        return FakeResult(127, f"unexpected command {cmd}")


class UnexpectedCommand(Exception):
    pass


def _check(p: Profile, name: str) -> Check:
    return next(c for c in checks(p) if c.name == name)


def test_setid_stripped_except_allowed(tmp_path: Path) -> None:
    from builder.setid import setid_files, strip_setid

    (tmp_path / "usr/bin").mkdir(parents=True)
    for name, mode in (("su", 0o4755), ("chage", 0o2755), ("keep", 0o4711), ("ls", 0o755)):
        (tmp_path / "usr/bin" / name).write_bytes(b"")
        os.chmod(tmp_path / "usr/bin" / name, mode)
    os.symlink("usr/bin", tmp_path / "bin")
    assert setid_files(tmp_path) == {"/usr/bin/chage": 0o2755, "/usr/bin/keep": 0o4711,
                                     "/usr/bin/su": 0o4755}
    assert strip_setid(tmp_path, ["/usr/bin/keep"]) == ["/usr/bin/chage 2755",
                                                        "/usr/bin/su 4755"]
    assert setid_files(tmp_path) == {"/usr/bin/keep": 0o4711}
    assert (tmp_path / "usr/bin/su").stat().st_mode & 0o7777 == 0o755
    plan = plan_for(profile(rule_vars={"setid-minimal": {"allow": ["/usr/bin/keep"]}}))
    assert plan.setid_allow == ["/usr/bin/keep"]
    assert plan_for(profile(rules=["no-sshd"])).setid_allow is None     # rule off: untouched
    with pytest.raises(InputError, match="normalised"):
        plan_for(profile(rule_vars={"setid-minimal": {"allow": ["usr/bin/su"]}}))


def test_masked_units_lose_their_enable_and_alias_links(tmp_path: Path) -> None:
    from builder.unitlinks import remove_unit_links

    etc = tmp_path / "etc/systemd/system"
    (etc / "multi-user.target.wants").mkdir(parents=True)
    (etc / "timers.target.wants").mkdir()
    unit = "/usr/lib/systemd/system/usbguard-dbus.service"
    os.symlink(unit, etc / "multi-user.target.wants/usbguard-dbus.service")
    os.symlink(unit, etc / "dbus-org.usbguard.service")
    os.symlink("/usr/lib/systemd/system/fstrim.timer", etc / "timers.target.wants/fstrim.timer")
    os.symlink("/usr/lib/systemd/system/usbguard.service",
               etc / "multi-user.target.wants/usbguard.service")
    removed = remove_unit_links(tmp_path, ["usbguard-dbus.service", "fstrim.timer"])
    assert sorted(removed) == ["/etc/systemd/system/dbus-org.usbguard.service",
                               "/etc/systemd/system/multi-user.target.wants/usbguard-dbus.service",
                               "/etc/systemd/system/timers.target.wants/fstrim.timer"]
    assert (etc / "multi-user.target.wants/usbguard.service").is_symlink()   # others stay


def test_vm_setid_check() -> None:
    check = _check(profile(), "setid-minimal:setid-files:vm")
    check.run(FakeVM({"find / -xdev": (0, "")}))
    with pytest.raises(AssertionError, match=r"/usr/bin/su \(4755\)"):
        check.run(FakeVM({"find / -xdev": (0, "4755 /usr/bin/su\n")}))
    allowed = _check(profile(rule_vars={"setid-minimal": {"allow": ["/usr/bin/su"]}}),
                     check.name)
    allowed.run(FakeVM({"find / -xdev": (0, "4755 /usr/bin/su\n")}))


def test_vm_cmdline_check() -> None:
    p = profile()
    plan = plan_for(p)
    check = _check(p, "kernel-lockdown:cmdline:vm")
    check.run(FakeVM({"cat /proc/cmdline": (0, "BOOT_IMAGE=x " + " ".join(plan.cmdline))}))
    with pytest.raises(AssertionError, match=r"lacks.*lockdown=confidentiality"):
        check.run(FakeVM({"cat /proc/cmdline": (0, "quiet module.sig_enforce=1")}))


def test_vm_sysctl_check() -> None:
    p = profile()
    check = _check(p, "sysctl-kptr:sysctl:vm")
    good = {"cat /proc/sys/kernel/kptr_restrict": (0, "2\n"),
            "cat /proc/sys/kernel/dmesg_restrict": (0, "1\n"),
            "cat /proc/sys/kernel/printk": (0, "3\t3\t3\t3\n")}
    check.run(FakeVM(good))
    with pytest.raises(AssertionError, match=r"kernel\.kptr_restrict = '1'"):
        check.run(FakeVM({**good, "cat /proc/sys/kernel/kptr_restrict": (0, "1\n")}))
    net = _check(p, "sysctl-net:sysctl:vm")   # ipv6 keys are optional
    net.run(FakeVM({"cat /proc/sys/net/ipv6": (1, ""), "cat /proc/sys/net/ipv4/tcp_timestamps":
                    (0, "0\n"), "cat /proc/sys/net/ipv4/conf/all/rp_filter": (0, "1\n"),
                    "cat /proc/sys/net/ipv4/conf/default/rp_filter": (0, "1\n"),
                    "cat /proc/sys/net/ipv4/conf/all/log_martians": (0, "1\n"),
                    "cat /proc/sys/net/ipv4/conf/default/log_martians": (0, "1\n"),
                    "cat /proc/sys/net/ipv4": (0, "0\n")}))


def test_vm_module_check() -> None:
    p = profile()
    check = _check(p, "usb-storage-absent:modules-unloadable:vm")
    check.run(FakeVM({"cat /proc/modules": (0, "virtio_blk 1 0 - Live\n"),
                      "modinfo": (1, ""), "modprobe": (1, "")}))
    with pytest.raises(AssertionError, match="modprobe uas succeeded"):
        check.run(FakeVM({"cat /proc/modules": (0, ""), "modinfo": (1, ""),
                          "modprobe -q uas": (0, ""), "modprobe": (1, "")}))
    with pytest.raises(AssertionError, match="usb_storage is loaded"):
        check.run(FakeVM({"cat /proc/modules": (0, "usb_storage 1 0 - Live\n"),
                          "modinfo": (1, ""), "modprobe": (1, "")}))


def test_vm_usbguard_and_unit_checks() -> None:
    p = profile()
    plan = plan_for(p)
    rules = [line for line in file_text(plan, "/etc/usbguard/rules.conf").splitlines()
             if line and not line.startswith("#")]
    listed = "".join(f"{i}: {r}\n" for i, r in enumerate(rules, 1))
    check = _check(p, "usbguard-policy:policy-loaded:vm")
    check.run(FakeVM({"systemctl is-active": (0, "active\n"), "usbguard list-rules": (0, listed)}))
    with pytest.raises(AssertionError, match="list-rules"):
        check.run(FakeVM({"systemctl is-active": (0, "active\n"),
                          "usbguard list-rules": (0, "1: allow\n")}))
    ipc = _check(p, "usbguard-policy:ipc-access:vm")
    ok = {"grep -rHv": (1, ""), "usbguard list-devices": (0, "1: allow\n"),
          "runuser -u kiosk -- usbguard": (1, "IPC connection failed\n")}
    ipc.run(FakeVM(ok))
    with pytest.raises(AssertionError, match="kiosk can talk"):
        ipc.run(FakeVM({**ok, "runuser -u kiosk -- usbguard": (0, "1: allow\n")}))
    with pytest.raises(AssertionError, match="grant"):
        ipc.run(FakeVM({**ok, "grep -rHv": (0, ":plugdev:Devices=modify\n")}))
    with pytest.raises(AssertionError, match="even for root"):
        ipc.run(FakeVM({**ok, "usbguard list-devices": (1, "")}))
    masked = _check(p, "ctrl-alt-del-off:systemd_unit:unit-state:vm")
    masked.run(FakeVM({"systemctl is-enabled ctrl-alt-del.target": (1, "masked\n")}))
    with pytest.raises(AssertionError, match="want masked"):
        masked.run(FakeVM({"systemctl is-enabled ctrl-alt-del.target": (0, "static\n")}))


def test_vm_check_only_and_nft() -> None:
    p = profile()
    locked = _check(p, "modules-locked:check_only:modules-disabled:vm")
    answers = {"cat /proc/sys/kernel/modules_disabled": (0, "1\n")}
    vm = FakeVM(answers, strict=True)
    locked.run(vm)
    assert vm.seen == ["cat /proc/sys/kernel/modules_disabled"]
    for rc, out, message in ((0, "0\n", "does not match"), (1, "1\n", "exited 1")):
        with pytest.raises(AssertionError, match=message):
            locked.run(FakeVM({"cat /proc/sys/kernel/modules_disabled": (rc, out)}, strict=True))
    nft = _check(p, "nft-egress-gateway:nftables:ruleset:vm")

    def ruleset(port: int) -> str:
        return (f"table inet auditbox {{\n chain output {{\n"
                f" ip daddr {GATEWAY} tcp dport {port} accept\n }}\n}}")

    vm = FakeVM({"nft list ruleset": (0, ruleset(PORT))}, strict=True)
    nft.run(vm)
    assert vm.seen == ["nft list ruleset"]
    for rc, out in ((0, "table inet auditbox { }"), (0, ruleset(PORT + 1)), (1, ruleset(PORT))):
        with pytest.raises(AssertionError, match="nft list ruleset lacks"):
            nft.run(FakeVM({"nft list ruleset": (rc, out)}, strict=True))


# ---------------------------------------------------------------- results, CLI, report


def test_results_file_roundtrip(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    ok = Check("r", "r:a:vm", "vm", lambda h: None)
    bad = Check("r", "r:b:vm", "vm", lambda h: (_ for _ in ()).throw(AssertionError("nope")))
    run_and_record(ok, None, target)
    with pytest.raises(AssertionError):
        run_and_record(bad, None, target)
    record(Check("s", "s:c:static", "static", lambda h: None), True, "", target)
    data = load(target)
    assert data["r:a:vm"] == {"rule": "r", "where": "vm", "passed": True, "detail": ""}
    assert data["r:b:vm"]["passed"] is False and data["r:b:vm"]["detail"] == "nope"
    assert len(json.loads(target.read_text())) == 3


def test_cli_list_and_show() -> None:
    from builder.commands.rules import rules_group

    runner = CliRunner()
    res = runner.invoke(rules_group, ["list"])
    assert res.exit_code == 0, res.output
    for rid in DEFAULT_SELECTION:
        assert rid in res.output
    res = runner.invoke(rules_group, ["show", "usbguard-policy"])
    assert res.exit_code == 0, res.output
    assert "ImplicitPolicyTarget=block" in res.output and "[vm    ]" in res.output
    assert "usbguard_allow_hid_and_hub" in res.output
    failed = run_main("rules", "show", "nope")
    assert failed.exit_code == 2 and "unknown rule 'nope'" in failed.error_line()


def test_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.commands import rules as cli

    p = cli.resolve_profile(None)
    assert p.source == DEFAULT_PROFILE
    results = {
        "sysctl-kptr:sysctl.d:static": {"rule": "sysctl-kptr", "where": "static",
                                             "passed": True, "detail": ""},
        "sysctl-kptr:sysctl:vm": {"rule": "sysctl-kptr", "where": "vm",
                                       "passed": False, "detail": "kernel.kptr_restrict = '0'"},
    }
    (tmp_path / "check-results.json").write_text(json.dumps(results))
    res = CliRunner().invoke(cli.report_cmd, [str(tmp_path)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| sysctl-kptr "))
    assert "pass 1/1" in row and "FAIL 1/2" in row
    assert "| not run |" in next(line for line in md.splitlines()
                                 if line.startswith("| no-sshd "))
    assert md.count("\n| ") == 2 + len(selection(p))
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "http://" not in page and "https://" not in page     # no external links
    assert 'id="sysctl-kptr"' in page


def test_default_profile_file_selects_every_control() -> None:
    root = Path(__file__).resolve().parents[1]
    prod = load_profile(root / "profiles" / "audit-laptop.yaml")
    assert prod.source == DEFAULT_PROFILE and set(prod.rules) == set(load_catalogue())
    test = load_profile(root / "profiles" / "audit-laptop-test.yaml")
    assert tuple(test.rules) == tuple(prod.rules)
    prod_names = {c.name for c in checks(prod)}
    assert prod_names == {c.name for c in checks(test)}   # same checks, test values differ


def test_lynis_report_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    path = Path(__file__).resolve().parent / "bench" / "lynis_bench.py"
    spec = importlib.util.spec_from_file_location("lynis_bench", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "lynis_bench", mod)    # dataclasses look it up
    spec.loader.exec_module(mod)
    res = mod.parse_report("lynis_tests_done=231\nhardening_index=81\nwarning[]=A|b|\n"
                           "suggestion[]=X|y|\nsuggestion[]=Z|w|\n")
    assert (res.hardening_index, res.tests_performed, res.warnings, res.suggestions) == (
        81, 231, 1, 2)
    assert mod.parse_report("  Hardening index : 64 [#####     ]").hardening_index == 64
    with pytest.raises(ValueError):
        mod.parse_report("nothing")
