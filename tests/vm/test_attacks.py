"""Attacks on the booted test image: what an auditor at the keyboard (or a gadget in the USB
port) would try. Fixtures from the lead's tests/vm/conftest.py: `machine` (a booted test
image with a qemu-xhci controller id "xhci", a parallel port, virtio-gpu max_outputs=2 and
user-mode networking), `gateway_port` (a host listener the profile allows, reached at
10.0.2.2) and `other_port` (a host listener that must stay unreachable)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.vm

HOST = "10.0.2.2"
# one line per USB device: "<sysfs name> <vendor>:<product> <authorized> <product name>"
USB_LIST = ("for d in /sys/bus/usb/devices/*; do [ -f \"$d/idVendor\" ] || continue; "
            "echo \"${d##*/} $(cat $d/idVendor):$(cat $d/idProduct) "
            "$(cat $d/authorized) $(cat $d/product 2>/dev/null)\"; done")


@pytest.fixture(scope="module")
def vm(machine: Any) -> Any:
    machine.wait_for_unit("multi-user.target")
    return machine


def usb_devices(vm: Any) -> dict[str, tuple[str, str, str]]:
    out: dict[str, tuple[str, str, str]] = {}
    for line in vm.succeed(USB_LIST).splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) >= 3:
            out[parts[0]] = (parts[1], parts[2], parts[3] if len(parts) > 3 else "")
    return out


def plug(vm: Any, driver: str, dev_id: str, settle: float = 6.0,
         **props: Any) -> dict[str, tuple[str, str, str]]:
    """device_add a USB device on the xhci bus; returns the devices that appeared."""
    before = set(usb_devices(vm).items())
    reply = vm.qmp("device_add", driver=driver, id=dev_id, bus="xhci.0", **props)
    if "error" in reply:
        raise RuntimeError(f"device_add {driver}: {reply['error']}")
    deadline = time.monotonic() + 30
    new: dict[str, tuple[str, str, str]] = {}
    while time.monotonic() < deadline:
        new = {k: v for k, v in usb_devices(vm).items() if (k, v) not in before}
        if new:
            break
        time.sleep(1)
    time.sleep(settle)       # let usbguard apply policy and drivers (not) bind
    # a device is new by name and ids (a port name is reused after an unplug)
    new = {k: v for k, v in usb_devices(vm).items()
           if k in new or (k, v) not in before} or new
    assert new, f"{driver} never appeared on the guest's USB bus"
    return new


def unplug(vm: Any, dev_id: str) -> None:
    """device_del, then wait until QEMU no longer lists the device."""
    vm.qmp("device_del", id=dev_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if dev_id not in str(vm.qmp("qom-list", path="/machine/peripheral")):
            break
        time.sleep(0.5)
    time.sleep(2)           # and the guest has processed the disconnect


def assert_blocked(vm: Any, new: dict[str, tuple[str, str, str]], what: str) -> None:
    for name, (ids, authorized, product) in new.items():
        assert authorized == "0", f"{what} {name} {ids} {product!r} is authorized"
    listed = vm.succeed("usbguard list-devices")
    assert " allow " not in " ".join(
        line for line in listed.splitlines() if any(v[0] in line for v in new.values())), listed


@pytest.fixture
def stick_image(tmp_path: Path) -> Iterator[Path]:
    img = tmp_path / "stick.img"
    with open(img, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    yield img


def test_usb_storage_stick_gets_no_block_device(vm: Any, stick_image: Path) -> None:
    disks_before = vm.succeed("ls /sys/block").split()
    reply = vm.qmp("blockdev-add", **{"driver": "raw", "node-name": "stick",
                                      "file": {"driver": "file", "filename": str(stick_image)}})
    assert "error" not in reply, reply
    try:
        new = plug(vm, "usb-storage", "stick", drive="stick")
        assert_blocked(vm, new, "usb-storage")
        assert vm.succeed("ls /sys/block").split() == disks_before
        vm.fail("ls /dev/sd*")
        vm.fail("grep -qw usb_storage /proc/modules")
    finally:
        unplug(vm, "stick")
        vm.qmp("blockdev-del", **{"node-name": "stick"})


def test_usb_keyboard_is_authorized_after_the_stick(vm: Any) -> None:
    try:
        new = plug(vm, "usb-kbd", "kbd")
        assert any(authorized == "1" for _, authorized, _ in new.values()), new
        assert " allow " in " ".join(
            line for line in vm.succeed("usbguard list-devices").splitlines()
            if any(v[0] in line for v in new.values()))
    finally:
        unplug(vm, "kbd")


def test_usb_network_adapter_blocked(vm: Any) -> None:
    ifaces = vm.succeed("ls /sys/class/net").split()
    vm.qmp("netdev_add", type="user", id="usbnetdev")
    try:
        new = plug(vm, "usb-net", "usbnet", netdev="usbnetdev")
        assert_blocked(vm, new, "usb-net")
        assert vm.succeed("ls /sys/class/net").split() == ifaces
    finally:
        unplug(vm, "usbnet")
        vm.qmp("netdev_del", id="usbnetdev")


def test_usb_serial_adapter_blocked(vm: Any) -> None:
    # a backend that reports "open" at once: QEMU attaches usb-serial only then (null never does)
    vm.qmp("chardev-add", id="usbserialdev", backend={"type": "ringbuf", "data": {"size": 4096}})
    try:
        new = plug(vm, "usb-serial", "usbserial", chardev="usbserialdev")
        assert_blocked(vm, new, "usb-serial")
        vm.fail("ls /dev/ttyUSB* /dev/ttyACM*")
    finally:
        unplug(vm, "usbserial")
        vm.qmp("chardev-remove", id="usbserialdev")


def test_usb_audio_blocked(vm: Any) -> None:
    new = plug(vm, "usb-audio", "usbaudio")
    try:
        assert_blocked(vm, new, "usb-audio")
        vm.fail("ls /dev/snd/pcm*")
    finally:
        unplug(vm, "usbaudio")


def test_no_parallel_port(vm: Any) -> None:
    vm.fail("ls /dev/lp* /dev/parport*")
    for mod in ("parport", "parport_pc", "lp", "ppdev"):
        vm.fail(f"modprobe {mod}")
        vm.fail(f"grep -qw {mod} /proc/modules")


def test_second_display_connector_is_off(vm: Any) -> None:
    connectors = vm.succeed("ls /sys/class/drm").split()
    assert any(c.endswith("-Virtual-1") for c in connectors), connectors
    second = [c for c in connectors if c.endswith("-Virtual-2")]
    assert second, f"virtio-gpu max_outputs=2 should show Virtual-2: {connectors}"
    for c in second:
        assert vm.succeed(f"cat /sys/class/drm/{c}/status").strip() != "connected"


def state(vm: Any) -> tuple[str, str]:
    return (vm.succeed("cat /proc/sys/kernel/random/boot_id").strip(),
            vm.succeed("cat /sys/class/tty/tty0/active").strip())


@pytest.mark.parametrize("keys", ["ctrl-alt-f2", "ctrl-alt-f3", "ctrl-alt-f4", "ctrl-alt-f5",
                                  "ctrl-alt-f6", "alt-f2", "alt-right"])
def test_vt_switch_keys_do_nothing(vm: Any, keys: str) -> None:
    before = state(vm)
    vm.send_key(keys)
    time.sleep(2)
    assert state(vm) == before


@pytest.mark.parametrize("keys", ["alt-sysrq-s", "alt-sysrq-e", "alt-sysrq-b"])
def test_sysrq_does_nothing(vm: Any, keys: str) -> None:
    before = state(vm)
    vm.send_key(keys)
    time.sleep(5)
    assert state(vm) == before
    vm.succeed("systemctl is-active getty.target multi-user.target")


def test_ctrl_alt_del_does_nothing(vm: Any) -> None:
    before = state(vm)
    for _ in range(8):                     # more than the 7-in-2s burst
        vm.send_key("ctrl-alt-delete")
        time.sleep(0.1)
    time.sleep(10)
    assert state(vm) == before
    assert vm.succeed("systemctl is-system-running || true").strip() in ("running", "degraded")
    vm.fail("systemctl list-jobs --no-legend | grep -E 'reboot|poweroff|halt'")


def test_module_loading_is_locked(vm: Any) -> None:
    assert vm.succeed("cat /proc/sys/kernel/modules_disabled").strip() == "1"
    ko = vm.succeed("find /lib/modules/$(uname -r) -name 'dummy.ko*' | head -n1").strip()
    vm.fail("modprobe dummy")
    if ko:
        vm.fail(f"insmod {ko}")
    vm.fail("grep -qw dummy /proc/modules")


def tcp(vm: Any, port: int) -> tuple[int, str]:
    rc, out = vm.execute(f"timeout 8 bash -c 'exec 3<>/dev/tcp/{HOST}/{port}' 2>&1")
    return int(rc), str(out)


def test_egress_only_to_the_gateway(vm: Any, gateway_listener: Any, other_listener: Any) -> None:
    # both listeners are relayed to the guest's 10.0.2.2: only the filter keeps one closed
    before = gateway_listener.accepted, other_listener.accepted
    rc, out = tcp(vm, gateway_listener.guest_port)
    assert rc == 0, f"gateway {HOST}:{gateway_listener.guest_port} unreachable: {out}"
    assert gateway_listener.accepted > before[0], "the gateway listener saw no connection"
    rc, out = tcp(vm, other_listener.guest_port)
    assert rc != 0, f"{HOST}:{other_listener.guest_port} reachable: the egress filter leaks"
    assert other_listener.accepted == before[1]
    # another address: an unassigned one inside QEMU's user-net subnet, so that even a
    # leaking filter sends nothing off this machine
    rc, _ = vm.execute("timeout 8 bash -c 'exec 3<>/dev/tcp/10.0.2.44/443'")
    assert rc != 0, "an address other than the gateway is reachable"
    out = vm.succeed("nft list ruleset")
    assert "10.0.2.44" not in out
