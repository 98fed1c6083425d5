"""Measured, verity-protected boot: the build's PCR predictions (11, 12, 13, and the PCR 4
boot applications) against a booted image's TPM, and tamper evidence (QEMU)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images import BuiltImage
from tests.machine import Machine, MachineError
from tests.rundir import images_dir

pytestmark = pytest.mark.vm


def _pcr(machine: Machine, index: int) -> str:
    out = machine.succeed(f"tpm2_pcrread sha256:{index}")
    return out.strip().splitlines()[-1].split(":")[-1].strip().lower().removeprefix("0x")


def _pcr11(machine: Machine) -> str:
    return _pcr(machine, 11)


def _reference(image: BuiltImage) -> dict[str, object]:
    ref: dict[str, object] = json.loads((image.out / "reference.json").read_text())
    return ref


def test_changed_cmdline_changes_the_pcr11_prediction(test_image: BuiltImage,
                                                      variant_image: BuiltImage) -> None:
    a, b = _reference(test_image), _reference(variant_image)
    assert a["cmdline"] != b["cmdline"]
    assert "auditbox.variant=1" in str(b["cmdline"])
    assert a["pcrs"] != b["pcrs"]


def test_variant_pcr11_matches_its_prediction(variant_machine: Machine,
                                              variant_image: BuiltImage) -> None:
    pcrs = _reference(variant_image)["pcrs"]
    assert isinstance(pcrs, dict)
    assert _pcr11(variant_machine) == pcrs["11"]
    assert "auditbox.variant=1" in variant_machine.succeed("cat /proc/cmdline")


def test_predicted_pcrs_and_boot_applications_match_the_tpm(machine: Machine,
                                                            test_image: BuiltImage) -> None:
    """PCR 11 (final phase), 12 and 13 (nothing passed in) read from the TPM equal the
    reference; the boot applications the firmware measured into PCR 4 are the reference's
    Secure-Boot-off list (this boot), the UKI then the kernel it carries."""
    import base64

    from attestation import eventlog

    ref = _reference(test_image)
    pcrs = ref["pcrs"]
    assert isinstance(pcrs, dict)
    for i in (11, 12, 13):
        assert _pcr(machine, i) == pcrs[str(i)], f"PCR {i}"
    assert pcrs["12"] == pcrs["13"] == "00" * 32
    raw = base64.b64decode(machine.succeed(
        "base64 -w0 /sys/kernel/security/tpm0/binary_bios_measurements"))
    log = eventlog.parse(raw)
    apps = [e.digests[0x000B].hex() for e in log.events
            if e.pcr == 4 and e.type == eventlog.EV_EFI_BOOT_SERVICES_APPLICATION]
    boot_apps = ref["boot_applications"]
    assert isinstance(boot_apps, dict)
    assert apps == boot_apps["no_secure_boot"]
    assert apps[0] == ref["uki_authenticode_sha256"]
    assert eventlog.replay(log, 0x000B)[4].hex() == _pcr(machine, 4)


@pytest.fixture(scope="module")
def tampered_image(test_image: BuiltImage) -> Iterator[Path]:
    """A copy of the test image with one byte flipped inside the root partition's data."""
    root = next(p for p in test_image.manifest["partitions"] if p["type"] == "root-x86-64")
    copy = images_dir() / "tampered.raw"
    shutil.copyfile(test_image.image, copy)
    offset = int(root["offset"]) + int(root["raw_size"]) // 2
    with copy.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    yield copy
    copy.unlink(missing_ok=True)


def test_flipped_root_byte_is_never_read_silently(tampered_image: Path) -> None:
    m = Machine(tampered_image, name="tampered")
    m.start()
    try:
        try:
            m.wait_for_shell(timeout=420)
        except MachineError:
            # the boot itself needed the block: it must have failed on verity, loudly
            assert "verity" in m.console_text().lower(), "boot failed without a verity error"
            return
        # production's sysctl kernel.printk=3 keeps errors off the console; let them through
        m.succeed("dmesg -n 7")
        mark = m.console_mark()
        # the root is verity with panic-on-corruption (rule root-verity): reading the flipped
        # block stops the kernel, so the command never returns, and panic= reboots the machine
        with pytest.raises(MachineError):
            m.execute("dd if=/dev/mapper/root of=/dev/null bs=1M 2>&1; echo survived", timeout=180)
        m.wait_for_console_text(r"verity.*corrupt|corrupt.*verity", timeout=60, since=mark)
        m.wait_for_console_text(r"Kernel panic - not syncing: dm-verity device corrupted",
                                timeout=60, since=mark)
        m.wait_for_console_text(r"BdsDxe: starting", timeout=120, since=mark)   # rebooted
    finally:
        m.stop()
