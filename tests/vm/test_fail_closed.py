"""The firewall fails closed (rule network-fail-closed): in an image whose ruleset nft
refuses, nothing brings the network interface up; in the test image, whose ruleset loads,
the same interface is up with an address (the control that shows the check can see "up").
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.vm

GATEWAY = "10.0.2.2"
# the non-loopback interfaces: "<name> <UP|DOWN|...> <flags>"
LINKS = ("for d in /sys/class/net/*; do n=${d##*/}; [ \"$n\" = lo ] && continue; "
         "echo \"$n $(cat $d/operstate) $(cat $d/flags)\"; done")


def links(vm: Any) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for line in vm.succeed(LINKS).splitlines():
        name, operstate, flags = line.split()
        out[name] = (operstate, int(flags, 16))
    assert out, "the VM has no network interface at all (virtio-net missing?)"
    return out


def test_broken_ruleset_keeps_the_interface_down(firewall_broken_machine: Any) -> None:
    vm = firewall_broken_machine
    # the breakage took: nftables.service failed and the kernel holds no ruleset at all
    assert vm.execute("systemctl is-failed nftables.service")[1].strip() == "failed"
    assert vm.succeed("nft list ruleset").strip() == ""
    # so networkd never ran, and nothing else raised the link
    state = vm.execute("systemctl is-active systemd-networkd.service")[1].strip()
    assert state in ("inactive", "failed"), state
    for name, (operstate, flags) in links(vm).items():
        assert not flags & 0x1, f"{name} is administratively UP (flags {flags:#x})"
        assert operstate == "down", f"{name} operstate {operstate}"
    assert vm.succeed("ip -4 -o addr show scope global").strip() == ""
    rc, out = vm.execute(f"ip route get {GATEWAY}")
    assert rc != 0 and "unreachable" in out, out
    rc, out = vm.execute(f"timeout 8 bash -c 'exec 3<>/dev/tcp/{GATEWAY}/22' 2>&1")
    assert rc != 0 and "unreachable" in out, out


def test_loaded_ruleset_brings_the_interface_up(machine: Any) -> None:
    vm = machine
    vm.wait_until_succeeds("systemctl is-active systemd-networkd.service", timeout=120)
    assert "table inet auditbox" in vm.succeed("nft list ruleset")
    assert any(flags & 0x1 and operstate == "up" for operstate, flags in links(vm).values())
    vm.wait_until_succeeds("ip -4 -o addr show scope global | grep -q inet", timeout=120)
    vm.succeed(f"ip route get {GATEWAY}")
