"""Remote attestation end to end: the in-image agent on a booted image, the verifier here.

The agent (``auditbox-attest``, tpm2 backend) runs in the guest against its swtpm; the
enrollment (MakeCredential / ActivateCredential) and the verification run on the host
with the build's signed reference.json. Evidence and challenges cross the serial shell
base64 encoded.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from attestation import canonical, eventlog
from attestation.enroll import EnrollmentPolicy, begin_enrollment, finish_enrollment
from attestation.errors import VerificationError
from attestation.evidence import decode as decode_evidence
from attestation.evidence import encode as encode_evidence
from attestation.nonces import NonceStore
from attestation.policy import Policy
from attestation.reference import load_public_key, load_reference
from attestation.tpm_structs import TPM_ALG_SHA256
from attestation.verifier import Verifier
from tests.images import BuiltImage
from tests.machine import Machine

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "attestation" / "data"
REAL_LOG = DATA / "ovmf-secureboot-off.bin"
STATE = "/run/auditbox-attest-test"
AGENT = f"auditbox-attest --backend tpm2 --state-dir {STATE}"
EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# The agent is a cold python3 start plus tpm2_quote and tpm2_pcrread under TCG, on two
# cores shared with other VMs: allow more than the production 30 s between issuing the
# nonce and verifying the quote.
NONCE_TTL = 300.0
CHUNK = 2000  # base64 characters per command line (the guest tty reads lines of <4096)


# ------------------------------------------------------------------------- helpers


def trusted_reference(image: BuiltImage) -> dict[str, Any]:
    """The build's reference.json, checked against its signature and build-key.pub."""
    key = load_public_key(image.out / "build-key.pub")
    return load_reference(image.out / "reference.json", [key])


def send_file(machine: Machine, data: bytes, path: str) -> None:
    """Write data to path in the guest through base64 command lines."""
    text = base64.b64encode(data).decode()
    machine.succeed(f": > {path}.b64")
    for i in range(0, len(text), CHUNK):
        machine.succeed(f"printf %s {text[i:i + CHUNK]} >> {path}.b64")
    machine.succeed(f"base64 -d {path}.b64 > {path} && rm -f {path}.b64")


def fetch_file(machine: Machine, path: str) -> bytes:
    return base64.b64decode(machine.succeed(f"base64 -w0 {path}"))


def agent(machine: Machine, args: str) -> bytes:
    rc, out, err = machine.run(f"{AGENT} {args}", timeout=300)
    assert rc == 0, f"auditbox-attest {args} failed ({rc}): {err.decode(errors='replace')}"
    return out


def enroll(machine: Machine, image_id: str) -> dict[str, Any]:
    """The admin's tpm2 enrollment of this machine's TPM for image_id; the active record."""
    machine.succeed(f"mkdir -p -m 0700 {STATE}")
    request = json.loads(agent(machine, "enroll"))
    assert request["mode"] == "tpm2"
    record, challenge = begin_enrollment(request, image_id=image_id,
                                         policy=EnrollmentPolicy(), tokens=None)
    assert challenge is not None and record["status"] == "pending"
    send_file(machine, canonical.dumps(challenge), f"{STATE}/challenge.json")
    answer = json.loads(agent(machine, f"activate --challenge {STATE}/challenge.json"))
    record = finish_enrollment(record, base64.b64decode(answer["secret"]))
    assert record["status"] == "active"
    assert record["device_id"] == request["device_id"] and record["image_id"] == image_id
    return record


def quote(machine: Machine, nonce: bytes, session: bytes) -> bytes:
    """The agent's evidence bytes for this nonce and session (stdout minus its newline)."""
    start = time.monotonic()
    out = agent(machine, f"quote --nonce {nonce.hex()} --session {session.hex()}")
    print(f"[{machine.name}] quote took {time.monotonic() - start:.1f}s")
    assert out.endswith(b"\n")
    return out[:-1]


def new_verifier(*refs: dict[str, Any]) -> Verifier:
    return Verifier(Policy(), NonceStore(ttl=NONCE_TTL), {r["image_id"]: r for r in refs})


def refusal(verifier: Verifier, evidence: bytes, record: dict[str, Any], nonce: bytes,
            session: bytes) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        verifier.verify(evidence, record, nonce, session)
    err = info.value
    print(f"refused: step={err.step!r} reason={err.reason!r}")
    return err


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


def test_enroll_quote_verify_accepted(machine: Machine, reference: dict[str, Any],
                                      record: dict[str, Any]) -> None:
    verifier = new_verifier(reference)
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    evidence = quote(machine, nonce, session)
    result = verifier.verify(evidence, record, nonce, session)
    assert result.mode == "tpm2"
    assert result.device_id == record["device_id"]
    assert result.image_id == reference["image_id"]
    assert result.pcrs[11].hex() == reference["pcrs"]["11"]
    assert result.clock.safe == 1
    # the firmware PCRs were recorded on first use, and the clock
    assert set(result.record["firmware_pcrs"]) == {"0", "1", "2", "3", "5", "6", "7"}
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
    # control: the untouched evidence for the same (re-registered) nonce is accepted
    verifier.nonces.add(nonce)
    assert verifier.verify(genuine, record, nonce, session).image_id == reference["image_id"]


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
    # our replay reproduces the TPM's PCRs 0-9 (PCR 11 also has systemd-pcrphase words)
    verifier = new_verifier(reference)
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    result = verifier.verify(quote(machine, nonce, session), record, nonce, session)
    replayed = eventlog.replay(log, TPM_ALG_SHA256)
    for i in range(10):
        assert replayed[i] == result.pcrs[i], f"PCR {i}"


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
    assert "PCR 11" in err.reason or "PCR 4" in err.reason, err.reason
    # control: the same terminal enrolled for the image it really runs is accepted
    own = enroll(variant_machine, variant_ref["image_id"])
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    result = verifier.verify(quote(variant_machine, nonce, session), own, nonce, session)
    assert result.image_id == variant_ref["image_id"]
    assert result.pcrs[11].hex() == variant_ref["pcrs"]["11"]
