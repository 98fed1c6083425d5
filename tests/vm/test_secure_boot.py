"""UEFI Secure Boot with our own db key (QEMU, TCG, OVMF secboot build, swtpm).

The test profile is built with --secure-boot-key/--secure-boot-cert (production-like: a
signed UKI); an OVMF varstore with that certificate enrolled as PK, KEK and db (Secure Boot
on, user mode) must boot it, and its attestation must pass the default policy (Secure Boot
required); the firmware must refuse both the same image with one byte of the UKI's
.cmdline changed after signing and the unsigned test image. And the same signed UKI
started by a boot loader with a command line of its own (QEMU ``-kernel UKI -append``,
Secure Boot off) boots, but its attestation is refused at ``policy`` naming PCR 12.
The refused boots are cut short once the firmware has said no and Linux has had time to
show up and did not.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation import eventlog, uefi
from attestation.evidence import decode
from tests.attest_guest import enroll, new_verifier, quote, refusal, trusted_reference
from tests.images import REPO, BuiltImage, build_image
from tests.machine import Machine, MachineError
from tests.rundir import images_dir
from tests.secureboot import (
    TOOLS,
    KeyPair,
    make_changed_uki_image,
    make_enrolled_varstore,
    make_key_pair,
    pe_section,
    read_esp_file,
)
from tests.tools import BUILD_TOOLS, VM_TOOLS, require

pytestmark = pytest.mark.vm

EVENTLOG_OUT = REPO / "tests" / "attestation" / "data" / "ovmf-secureboot-on.bin"
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFIVARS = "/sys/firmware/efi/efivars"

# OVMF's BdsDxe: 'failed to load Boot0001 "UEFI Misc Device" from PciRoot(...): Access Denied'
REFUSED = r"failed to load (Boot[0-9A-F]{4})[^\r\n]*: (Access Denied|Security Violation)"
# anything the kernel, the stub, systemd or the kiosk getty print (the cmdline has quiet
# loglevel=0, so a normal boot shows the os-release banner and the login lines)
LINUX_STARTED = (r"EFI stub|Linux version|Linux auditbox|Debian GNU/Linux|login:|"
                 r"systemd\[1\]|Welcome to|Run /init")
REFUSAL_TIMEOUT = 300.0   # firmware start to refusal is ~20-40 s under TCG
OBSERVE_AFTER = 30.0      # then Linux must stay silent this long
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
SHA256_ALG = 0x000B


@pytest.fixture(scope="module")
def sb_keys() -> KeyPair:
    require(("openssl", *TOOLS))
    return make_key_pair(images_dir() / "secureboot-keys")


@pytest.fixture(scope="module")
def sb_vars(sb_keys: KeyPair) -> Path:
    """OVMF_VARS_4M.fd with our certificate as PK, KEK and db and Secure Boot enabled."""
    return make_enrolled_varstore(sb_keys.cert,
                                  images_dir() / "secureboot-work" / "OVMF_VARS_4M.auditbox-db.fd")


@pytest.fixture(scope="module")
def signed_image(sb_keys: KeyPair) -> BuiltImage:
    require(BUILD_TOOLS)
    return build_image("audit-laptop-test.yaml", "secureboot",
                       "--secure-boot-key", str(sb_keys.key),
                       "--secure-boot-cert", str(sb_keys.cert))


@pytest.fixture(scope="module")
def changed_uki_image(signed_image: BuiltImage) -> Iterator[Path]:
    """The signed image with one byte of the UKI's .cmdline changed after signing."""
    out = make_changed_uki_image(signed_image.image, signed_image.manifest,
                                 images_dir() / "secureboot-work" / "changed-uki.raw")
    yield out
    out.unlink(missing_ok=True)


def _efivar(machine: Machine, name: str) -> int:
    """Last byte of an EFI global variable (the first four bytes are its attributes)."""
    out = machine.succeed(f"od -An -tu1 {EFIVARS}/{name}-{EFI_GLOBAL}").split()
    assert out, f"{name} is empty"
    return int(out[-1])


def _variable_events(log: eventlog.EventLog) -> dict[str, bytes]:
    """PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG events: variable name -> measured value."""
    found: dict[str, bytes] = {}
    for e in log.events:
        if e.pcr != 7 or e.type != EV_EFI_VARIABLE_DRIVER_CONFIG or len(e.data) < 32:
            continue
        chars = int.from_bytes(e.data[16:24], "little")
        size = int.from_bytes(e.data[24:32], "little")
        name = e.data[32:32 + 2 * chars].decode("utf-16-le", "replace")
        found[name] = e.data[32 + 2 * chars:32 + 2 * chars + size]
    return found


def _boot_refused(image: Path, varstore: Path, name: str) -> str:
    """Boot image under varstore; assert OVMF refuses it and no Linux starts. The refusal."""
    require(VM_TOOLS)
    m = Machine(image, name=name, secure_boot=True, vars_file=varstore)
    m.start()
    try:
        refusal = m.wait_for_console_text(REFUSED, timeout=REFUSAL_TIMEOUT)
        try:
            hit: str | None = m.wait_for_console_text(LINUX_STARTED, timeout=OBSERVE_AFTER)
        except MachineError:
            hit = None
        try:
            m.wait_for_shell(timeout=10)
            shell = True
        except (MachineError, OSError):
            shell = False
        console = m.console_text()
    finally:
        m.stop()
    assert hit is None, f"Linux started after the refusal ({hit!r}):\n{console[-2000:]}"
    assert not shell, "the test shell on ttyS1 answered"
    option = re.search(REFUSED, refusal)
    assert option is not None
    assert f"starting {option.group(1)}" not in console, console[-2000:]
    return refusal


def test_signed_uki_verifies_against_our_cert_and_the_changed_one_does_not(
        signed_image: BuiltImage, changed_uki_image: Path, sb_keys: KeyPair,
        tmp_path: Path) -> None:
    """Host-side premise of the boots below (sbverify): only the signature is at stake."""
    require(("sbverify",), need_root=False)
    signed = read_esp_file(signed_image.image, signed_image.manifest)
    changed = read_esp_file(changed_uki_image, signed_image.manifest)
    offset, size = pe_section(signed, ".cmdline")
    diff = [i for i, (a, b) in enumerate(zip(signed, changed, strict=True)) if a != b]
    assert len(diff) == 1 and offset <= diff[0] < offset + size
    for data, ok in ((signed, True), (changed, False)):
        path = tmp_path / ("signed.efi" if ok else "changed.efi")
        path.write_bytes(data)
        res = subprocess.run(["sbverify", "--cert", str(sb_keys.cert), str(path)],
                             capture_output=True, text=True)
        assert (res.returncode == 0) is ok, res.stdout + res.stderr


def test_signed_image_boots_with_secure_boot_enforced(signed_image: BuiltImage,
                                                      sb_vars: Path, sb_keys: KeyPair) -> None:
    """Acceptance: the signed production-like image boots with Secure Boot on and its
    attestation is accepted by the default policy (Secure Boot required)."""
    require(VM_TOOLS)
    reference = trusted_reference(signed_image)
    m = Machine(signed_image.image, name="secureboot-on", secure_boot=True,
                vars_file=sb_vars)
    m.start()
    try:
        m.wait_for_shell()
        assert _efivar(m, "SecureBoot") == 1
        assert _efivar(m, "SetupMode") == 0          # PK enrolled: user mode, enforcing
        raw = base64.b64decode(
            m.succeed("base64 -w0 /sys/kernel/security/tpm0/binary_bios_measurements"))
        pcr7 = m.succeed("tpm2_pcrread sha256:7").strip().splitlines()[-1]
        record = enroll(m, reference["image_id"])
        verifier = new_verifier(reference, require_secure_boot=True)
        nonce, session = verifier.nonces.issue(), os.urandom(32)
        result = verifier.verify(quote(m, nonce, session), record, nonce, session)
        console = m.console_text()
    finally:
        m.stop()
    assert not re.search(REFUSED, console)
    assert result.secure_boot is True and result.image_id == reference["image_id"]
    assert result.pcrs[12] == result.pcrs[13] == b"\0" * 32
    # the build's predictions are what this boot measured: the UKI alone in PCR 4, and PCR
    # 7's authority event names the db certificate the reference names
    log = eventlog.parse(raw)
    apps = [e.digests[SHA256_ALG].hex() for e in log.events
            if e.pcr == 4 and e.type == eventlog.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert apps == reference["boot_applications"]["secure_boot"]
    authority = [uefi.signature_certificate(uefi.parse_variable(e.data)) for e in log.events
                 if e.type == eventlog.EV_EFI_VARIABLE_AUTHORITY]
    der = subprocess.run(["openssl", "x509", "-in", str(sb_keys.cert), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    assert authority == [der]
    assert hashlib.sha256(der).hexdigest() == reference["db_certificate_sha256"]
    # the firmware measured Secure Boot on into PCR 7, and the log replays to the TPM's PCR 7
    log = eventlog.parse(raw)
    assert _variable_events(log).get("SecureBoot") == b"\x01"
    tpm_pcr7 = pcr7.split(":")[-1].strip().lower().removeprefix("0x")
    assert eventlog.replay(log, SHA256_ALG)[7].hex() == tpm_pcr7
    if not EVENTLOG_OUT.exists():
        EVENTLOG_OUT.parent.mkdir(parents=True, exist_ok=True)
        partial = EVENTLOG_OUT.with_suffix(".partial")
        partial.write_bytes(raw)
        os.replace(partial, EVENTLOG_OUT)


def test_changed_uki_is_refused_by_the_firmware(changed_uki_image: Path, sb_vars: Path) -> None:
    _boot_refused(changed_uki_image, sb_vars, "secureboot-changed")


def test_unsigned_image_is_refused_by_the_firmware(test_image: BuiltImage,
                                                   sb_vars: Path) -> None:
    _boot_refused(test_image.image, sb_vars, "secureboot-unsigned")


def test_boot_loader_command_line_is_refused_at_pcr12(signed_image: BuiltImage,
                                                      tmp_path: Path) -> None:
    """Acceptance: the signed image's UKI started by a boot loader with its own command line
    (QEMU -kernel UKI -append, Secure Boot off: systemd-stub takes and measures it) is
    refused at policy naming PCR 12, with the default policy and with Secure Boot not
    required. The command line keeps the image bootable (and adds one marker token), as an
    attacker's "rd.shell=1 SYSTEMD_SULOGIN_FORCE=1" would."""
    require(VM_TOOLS)
    reference = trusted_reference(signed_image)
    uki = tmp_path / "BOOTX64.EFI"
    uki.write_bytes(read_esp_file(signed_image.image, signed_image.manifest))
    given = f"{reference['cmdline']} auditbox.injected=1"
    m = Machine(signed_image.image, name="bootloader-cmdline",
                extra_args=["-kernel", str(uki), "-append", given])
    m.start()
    try:
        m.wait_for_shell()
        proc_cmdline = m.succeed("cat /proc/cmdline").strip()
        record = enroll(m, reference["image_id"])
        strict = new_verifier(reference, require_secure_boot=True)
        lenient = new_verifier(reference, require_secure_boot=False)
        nonce, session = strict.nonces.issue(), os.urandom(32)
        evidence = quote(m, nonce, session)
    finally:
        m.stop()
    assert "auditbox.injected=1" in proc_cmdline      # the stub used the boot loader's line
    # the genuine UKI ran (PCR 4 is the reference's Secure-Boot-off path): only PCR 12 tells
    log = eventlog.parse(decode(evidence).event_log)
    apps = [e.digests[SHA256_ALG].hex() for e in log.events
            if e.pcr == 4 and e.type == eventlog.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert apps == reference["boot_applications"]["no_secure_boot"]
    err = refusal(strict, evidence, record, nonce, session)
    assert err.step == "policy" and err.reason.startswith("PCR 12 "), err
    assert "boot-loader command line" in err.reason
    lenient.nonces.add(nonce)
    err = refusal(lenient, evidence, record, nonce, session)
    assert err.step == "policy" and err.reason.startswith("PCR 12 "), err
