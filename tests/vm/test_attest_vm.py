"""Remote attestation end to end: the in-image agent on a booted image, the verifier here.

The agent (``auditbox-attest``, tpm2 backend) runs in the guest against its swtpm; the
enrollment (MakeCredential / ActivateCredential) and the verification run on the host
with the build's signed reference.json. Evidence and challenges cross the serial shell
base64 encoded.

The test image is unsigned and boots with Secure Boot off: the default policy refuses it
at PCR 7 (shown here); the other tests verify with ``require_secure_boot=False``, as a
test set-up with unsigned images must say explicitly. QEMU's swtpm has no EK certificate,
so enrollment allows EKs without one (tests/attestation/test_attest_swtpm.py checks EK
certificates against a CA made with swtpm_setup). Signed images with Secure Boot on:
tests/vm/test_secure_boot.py.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from attestation import eventlog
from attestation.evidence import decode as decode_evidence
from attestation.evidence import encode as encode_evidence
from attestation.tpm_structs import TPM_ALG_SHA256
from tests.attest_guest import (
    EVENT_LOG,
    SECURE_BOOT_VAR,
    enroll,
    fetch_file,
    new_verifier,
    quote,
    refusal,
    trusted_reference,
)
from tests.images import BuiltImage
from tests.machine import Machine

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "attestation" / "data"
REAL_LOG = DATA / "ovmf-secureboot-off.bin"


def edit_log(evidence: bytes, index: int, *, data: bool) -> bytes:
    """The same evidence with one byte of event `index` (its data or sha256 digest) flipped."""
    ev = decode_evidence(evidence)
    log = eventlog.parse(ev.event_log)
    assert eventlog.encode(log) == ev.event_log, "the event log does not re-encode exactly"
    e = log.events[index]
    if data:
        changed = dataclasses.replace(e, data=bytes([e.data[0] ^ 0x01]) + e.data[1:])
    else:
        d = e.digests[TPM_ALG_SHA256]
        changed = dataclasses.replace(
            e, digests={**e.digests, TPM_ALG_SHA256: bytes([d[0] ^ 0x01]) + d[1:]})
    events = (*log.events[:index], changed, *log.events[index + 1:])
    new_log = eventlog.encode(dataclasses.replace(log, events=events))
    assert len(new_log) == len(ev.event_log) and new_log != ev.event_log
    return encode_evidence(dataclasses.replace(ev, event_log=new_log))


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reference(test_image: BuiltImage) -> dict[str, Any]:
    return trusted_reference(test_image)


@pytest.fixture(scope="module")
def record(machine: Machine, reference: dict[str, Any]) -> dict[str, Any]:
    """The test machine, enrolled by the admin for the test image (once per module)."""
    return enroll(machine, reference["image_id"])


# ------------------------------------------------------------------------- tests


def test_unsigned_image_with_secure_boot_off_is_refused_at_pcr7(
        machine: Machine, reference: dict[str, Any], record: dict[str, Any]) -> None:
    """Acceptance: the default policy (Secure Boot required) refuses the unsigned test image
    booted with Secure Boot off, at policy, naming PCR 7."""
    assert reference["db_certificate_sha256"] is None
    assert fetch_file(machine, SECURE_BOOT_VAR)[-1:] == b"\x00"
    strict = new_verifier(reference, require_secure_boot=True)
    nonce, session = strict.nonces.issue(), os.urandom(32)
    evidence = quote(machine, nonce, session)
    err = refusal(strict, evidence, record, nonce, session)
    assert err.step == "policy" and err.reason.startswith("PCR 7: Secure Boot is off"), err
    # control: the same evidence passes a verifier told not to require Secure Boot
    lenient = new_verifier(reference)
    lenient.nonces.add(nonce)
    assert lenient.verify(evidence, record, nonce, session).secure_boot is False


def test_enroll_quote_verify_accepted(machine: Machine, reference: dict[str, Any],
                                      record: dict[str, Any]) -> None:
    verifier = new_verifier(reference)
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    evidence = quote(machine, nonce, session)
    result = verifier.verify(evidence, record, nonce, session)
    assert result.mode == "tpm2" and result.secure_boot is False
    assert result.pcrs[12] == result.pcrs[13] == b"\0" * 32
    assert result.device_id == record["device_id"]
    assert result.image_id == reference["image_id"]
    assert result.pcrs[11].hex() == reference["pcrs"]["11"]
    assert result.clock.safe == 1
    # the firmware PCRs were recorded on first use (not PCR 5: the first boot's systemd-repart
    # changes the GPT after the firmware measured it), and the clock
    assert set(result.record["firmware_pcrs"]) == {"0", "1", "2", "3", "6", "7"}
    assert result.record["last_clock"] is not None
    # a second quote in the same boot verifies against the updated record; a replay does not
    nonce2 = verifier.nonces.issue()
    again = verifier.verify(quote(machine, nonce2, session), result.record, nonce2, session)
    assert again.pcrs == result.pcrs
    err = refusal(verifier, evidence, result.record, nonce, session)
    assert err.step == "qualifying_data"


def _event_index(evidence: bytes, pcr: int, typ: int) -> int:
    log = eventlog.parse(decode_evidence(evidence).event_log)
    return next(e.index for e in log.events if e.pcr == pcr and e.type == typ)


@pytest.mark.parametrize("what", ["uki-digest", "action-data", "separator-data"])
def test_event_log_edited_in_transit_refused(machine: Machine, reference: dict[str, Any],
                                             record: dict[str, Any], what: str) -> None:
    verifier = new_verifier(reference)
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    genuine = quote(machine, nonce, session)
    if what == "uki-digest":
        # the UKI's Authenticode digest in PCR 4: replay no longer gives the quoted PCR 4
        index = _event_index(genuine, 4, eventlog.EV_EFI_BOOT_SERVICES_APPLICATION)
        tampered = edit_log(genuine, index, data=False)
        expected = "replay does not reproduce PCR 4"
    elif what == "action-data":
        index = _event_index(genuine, 4, eventlog.EV_EFI_ACTION)
        tampered = edit_log(genuine, index, data=True)
        expected = f"event {index}: digest does not match its data"
    else:
        index = _event_index(genuine, 7, eventlog.EV_SEPARATOR)
        tampered = edit_log(genuine, index, data=True)
        expected = f"event {index}: bad EV_SEPARATOR data"
    err = refusal(verifier, tampered, record, nonce, session)
    assert (err.step, err.reason) == ("event_log", expected)
    # control: the untouched evidence is accepted (by a verifier that has not seen this
    # nonce: nonces are single use for the life of a store)
    fresh = new_verifier(reference)
    fresh.nonces.add(nonce)
    assert fresh.verify(genuine, record, nonce, session).image_id == reference["image_id"]


def test_real_event_log_saved_and_replays(machine: Machine, reference: dict[str, Any],
                                          record: dict[str, Any]) -> None:
    """Keep the real OVMF (Secure Boot off) + systemd-stub log as test data."""
    secure_boot = fetch_file(machine, SECURE_BOOT_VAR)
    assert secure_boot[-1:] == b"\x00", "Secure Boot is on in the test machine"
    raw = fetch_file(machine, EVENT_LOG)
    if not REAL_LOG.exists():
        REAL_LOG.write_bytes(raw)
    log = eventlog.parse(raw)
    assert eventlog.encode(log) == raw
    # our replay reproduces the TPM's PCRs 0-9, 12 and 13 (PCR 11 also has systemd-pcrphase
    # words); and the boot applications are exactly the reference's for Secure Boot off
    verifier = new_verifier(reference)
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    result = verifier.verify(quote(machine, nonce, session), record, nonce, session)
    replayed = eventlog.replay(log, TPM_ALG_SHA256)
    for i in (*range(10), 12, 13):
        assert replayed[i] == result.pcrs[i], f"PCR {i}"
    apps = [e.digests[TPM_ALG_SHA256].hex() for e in log.events
            if e.pcr == 4 and e.type == eventlog.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert apps == reference["boot_applications"]["no_secure_boot"]


def test_changed_cmdline_image_refused(variant_machine: Machine, variant_image: BuiltImage,
                                       reference: dict[str, Any]) -> None:
    variant_ref = trusted_reference(variant_image)
    assert variant_ref["image_id"] != reference["image_id"]
    assert variant_ref["cmdline"] != reference["cmdline"]
    assert variant_ref["pcrs"]["11"] != reference["pcrs"]["11"]
    assert variant_machine.succeed("cat /proc/cmdline").strip() == variant_ref["cmdline"]
    verifier = new_verifier(reference, variant_ref)
    # the admin enrolled the test image; the terminal booted the rebuilt UKI
    record = enroll(variant_machine, reference["image_id"])
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    err = refusal(verifier, quote(variant_machine, nonce, session), record, nonce, session)
    assert err.step == "policy"
    assert err.reason.startswith("PCR 4:"), err.reason      # another UKI ran
    # control: the same terminal enrolled for the image it really runs is accepted
    own = enroll(variant_machine, variant_ref["image_id"])
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    result = verifier.verify(quote(variant_machine, nonce, session), own, nonce, session)
    assert result.image_id == variant_ref["image_id"]
    assert result.pcrs[11].hex() == variant_ref["pcrs"]["11"]
