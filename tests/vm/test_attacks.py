"""Attacks on the booted test image: what an auditor at the keyboard (or a gadget in the USB
port) would try. Fixtures from tests/conftest.py: `machine` (a booted test
image with a qemu-xhci controller id "xhci", a parallel port, virtio-gpu max_outputs=2 and
user-mode networking), `gateway_port` (a host listener the profile allows, reached at
10.0.2.2) and `other_port` (a host listener that must stay unreachable)."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.machine import retry

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
    vm.qmp("device_add", driver=driver, id=dev_id, bus="xhci.0", **props)   # raises on error

    def appeared(_last_try: bool) -> dict[str, tuple[str, str, str]] | None:
        return {k: v for k, v in usb_devices(vm).items() if (k, v) not in before} or None

    new = retry(appeared, 30, what=f"{driver} on the guest's USB bus")
    time.sleep(settle)       # let usbguard apply policy and drivers (not) bind
    # a device is new by name and ids (a port name is reused after an unplug)
    return {k: v for k, v in usb_devices(vm).items() if k in new or (k, v) not in before} or new


def unplug(vm: Any, dev_id: str) -> None:
    """device_del, then wait until QEMU no longer lists the device."""
    vm.qmp("device_del", id=dev_id)

    def gone(_last_try: bool) -> bool | None:
        listed = vm.qmp("qom-list", path="/machine/peripheral")
        return True if all(p["name"] != dev_id for p in listed) else None

    retry(gone, 30, interval=0.5, what=f"QEMU removes {dev_id}")
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
    vm.qmp("blockdev-add", **{"driver": "raw", "node-name": "stick",      # raises on error
                              "file": {"driver": "file", "filename": str(stick_image)}})
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
    # the machine has the port (-parallel null: an ISA LPT, ACPI id PNP0400)...
    assert "PNP0400" in vm.succeed("cat /sys/bus/pnp/devices/*/id"), "no parallel port hardware"
    # ...and nothing in the image drives it: no device nodes, no driver loaded or built in,
    # no module file (modprobe alone proves nothing: module loading is locked anyway)
    for pattern in ("/dev/lp*", "/dev/parport*"):
        vm.fail(f"ls -d {pattern}")
    for mod in ("parport", "parport_pc", "lp", "ppdev"):
        vm.fail(f"test -e /sys/module/{mod}")
        vm.fail(f"modinfo -n {mod}")


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


# Linux key codes (input-event-codes.h) of the QMP qcodes the tests press
KEY_CODES = {"ctrl": 29, "alt": 56, "delete": 111, "sysrq": 99, "right": 106, "f2": 60,
             "f3": 61, "f4": 62, "f5": 63, "f6": 64, "s": 31, "e": 18, "b": 48}
INPUT_EVENT = struct.Struct("qqHHi")          # struct input_event on x86_64 (24 bytes)
EV_KEY = 1


def keyboard_event_device(vm: Any) -> str:
    """The evdev node of the guest's PS/2 keyboard, where QMP send-key lands."""
    for block in vm.succeed("cat /proc/bus/input/devices").split("\n\n"):
        if "AT Translated Set 2 keyboard" in block:
            handlers = next(line for line in block.splitlines() if line.startswith("H: "))
            event = next(h for h in handlers.split("=", 1)[1].split() if h.startswith("event"))
            return f"/dev/input/{event}"
    raise AssertionError("the guest has no PS/2 keyboard input device")


def press(vm: Any, keys: str, times: int = 1, settle: float = 2.0) -> list[int]:
    """Press keys together `times` times through QMP while the guest records its keyboard's
    input events; the key codes the guest kernel saw pressed, in order. Proves delivery."""
    dev = keyboard_event_device(vm)
    window = int(settle + times + 10)
    # the shell opens the device before the marker appears: no event can be missed
    vm.succeed(f"rm -f /tmp/keys.bin /tmp/keys.ready; ( exec 3<{dev}; touch /tmp/keys.ready; "
               f"timeout {window} cat <&3 >/tmp/keys.bin 2>/dev/null ) &")
    vm.wait_until_succeeds("test -e /tmp/keys.ready", timeout=30)
    for _ in range(times):
        vm.send_key(keys)
        time.sleep(0.1)
    time.sleep(settle)
    raw = base64.b64decode(vm.succeed("base64 -w0 /tmp/keys.bin"))
    usable = len(raw) - len(raw) % INPUT_EVENT.size
    return [code for _sec, _usec, kind, code, value in INPUT_EVENT.iter_unpack(raw[:usable])
            if kind == EV_KEY and value == 1]


def assert_delivered(pressed: list[int], keys: str, times: int = 1) -> None:
    for key in keys.split("-"):
        assert pressed.count(KEY_CODES[key]) >= times, (
            f"{key} (code {KEY_CODES[key]}) reached the guest {pressed.count(KEY_CODES[key])} "
            f"of {times} times: {pressed}")


@pytest.mark.parametrize("keys", ["ctrl-alt-f2", "ctrl-alt-f3", "ctrl-alt-f4", "ctrl-alt-f5",
                                  "ctrl-alt-f6", "alt-f2", "alt-right"])
def test_vt_switch_keys_do_nothing(vm: Any, keys: str) -> None:
    before = state(vm)
    assert_delivered(press(vm, keys), keys)
    assert state(vm) == before


@pytest.mark.parametrize("keys", ["alt-sysrq-s", "alt-sysrq-e", "alt-sysrq-b"])
def test_sysrq_does_nothing(vm: Any, keys: str) -> None:
    before = state(vm)
    assert_delivered(press(vm, keys, settle=5), keys)
    assert state(vm) == before
    vm.succeed("systemctl is-active getty.target multi-user.target")


def test_ctrl_alt_del_does_nothing(vm: Any) -> None:
    before = state(vm)
    # more than the 7-in-2s burst
    assert_delivered(press(vm, "ctrl-alt-delete", times=8, settle=10), "ctrl-alt-delete", 8)
    assert state(vm) == before
    assert vm.succeed("systemctl is-system-running || true").strip() in ("running", "degraded")
    vm.fail("systemctl list-jobs --no-legend | grep -E 'reboot|poweroff|halt'")


def test_module_loading_is_locked(vm: Any) -> None:
    assert vm.succeed("cat /proc/sys/kernel/modules_disabled").strip() == "1"
    # a module the image ships and has not loaded: the lock, not its absence, must stop it
    ko = vm.succeed("for f in $(find /lib/modules/$(uname -r) -name '*.ko*'); do "
                    "n=$(basename ${f%%.ko*} | tr - _); "
                    "grep -qw ^$n /proc/modules || { echo $f; break; }; done").strip()
    assert ko, "no unloaded module file in the image to try"
    name = ko.rsplit("/", 1)[1].split(".ko")[0].replace("-", "_")
    out = vm.fail(f"insmod {ko}")
    assert "Operation not permitted" in out, out
    out = vm.fail(f"modprobe {name}")
    assert "Operation not permitted" in out, out
    vm.fail(f"test -e /sys/module/{name}")


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
