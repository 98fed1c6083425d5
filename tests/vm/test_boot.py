"""The test image booted in QEMU (TCG, OVMF, swtpm): the builder's and the image's contracts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from attestation import eventlog
from tests.images import BuiltImage
from tests.machine import Machine

SHA256_ALG = 0x000B  # TPM_ALG_SHA256

pytestmark = pytest.mark.vm


def test_reached_default_target_with_no_failed_units(machine: Machine) -> None:
    state = machine.execute("systemctl is-system-running")[1].strip()
    failed = machine.succeed("systemctl --failed --no-legend --plain")
    assert state == "running", f"{state}: {failed}"
    assert failed.strip() == ""
    assert machine.succeed("systemctl get-default").strip() == "multi-user.target"


def test_tpm_device(vm_host: Any) -> None:
    # testinfra has no character-device predicate: ask test(1)
    assert vm_host.run("test -c /dev/tpmrm0").rc == 0
    assert vm_host.file("/dev/tpmrm0").exists
    assert vm_host.file("/sys/kernel/security/tpm0/binary_bios_measurements").exists


def test_cmdline_equals_manifest(machine: Machine, test_image: BuiltImage) -> None:
    assert machine.succeed("cat /proc/cmdline").strip() == test_image.manifest["kernel_cmdline"]


def test_every_manifest_package_installed_at_its_version(vm_host: Any,
                                                         test_image: BuiltImage) -> None:
    out = vm_host.check_output("dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'")
    installed = {}
    for line in out.splitlines():
        name, version, status = line.split(" ", 2)
        if status.startswith("ii"):
            installed[name] = version
    assert installed == test_image.manifest["packages"]


def test_root_is_readonly_dm_verity(machine: Machine, vm_host: Any) -> None:
    mount = json.loads(machine.succeed("findmnt --json -o SOURCE,FSTYPE,OPTIONS /"))
    fs = mount["filesystems"][0]
    assert fs["source"] == "/dev/mapper/root"
    assert fs["fstype"] == "erofs"
    assert "ro" in fs["options"].split(",")
    assert "verity" in machine.succeed("dmsetup table root 2>/dev/null || "
                                       "cat /sys/block/dm-0/dm/uuid")
    machine.fail("touch /usr/auditbox-write-test")
    machine.fail("touch /etc/auditbox-write-test")


@pytest.mark.parametrize("path", ["/home", "/tmp", "/var"])
def test_writable_paths_are_tmpfs(vm_host: Any, path: str) -> None:
    mp = vm_host.mount_point(path)
    assert mp.exists and mp.filesystem == "tmpfs"
    assert "nodev" in mp.options and "nosuid" in mp.options


def test_pcr11_matches_the_build_prediction(machine: Machine, test_image: BuiltImage) -> None:
    reference = json.loads((test_image.out / "reference.json").read_text())
    out = machine.succeed("tpm2_pcrread sha256:11")
    value = out.strip().splitlines()[-1].split(":")[-1].strip().lower().removeprefix("0x")
    assert value == reference["pcrs"]["11"]


def test_pcr4_holds_the_uki_authenticode_digest(machine: Machine, test_image: BuiltImage) -> None:
    reference = json.loads((test_image.out / "reference.json").read_text())
    log = machine.succeed("base64 -w0 /sys/kernel/security/tpm0/binary_bios_measurements")
    events = eventlog.parse(base64.b64decode(log))
    digests = [e.digests.get(SHA256_ALG, b"").hex() for e in events.events if e.pcr == 4]
    assert reference["uki_authenticode_sha256"] in digests
