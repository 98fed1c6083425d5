"""The attestation agent in a booted test image, driven from the host (VM tests).

Evidence and challenges cross the test shell on ttyS1, base64 encoded. Used by
tests/vm/test_attest_vm.py and tests/vm/test_secure_boot.py.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from attestation import canonical
from attestation.enroll import EnrollmentPolicy, begin_enrollment, finish_enrollment
from attestation.errors import VerificationError
from attestation.nonces import NonceStore
from attestation.policy import Policy
from attestation.reference import load_public_key, load_reference
from attestation.verifier import Verifier
from tests.images import BuiltImage
from tests.machine import Machine

EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
STATE = "/run/auditbox-attest-test"
AGENT = f"auditbox-attest --backend tpm2 --state-dir {STATE}"
# The agent is a cold python3 start plus tpm2_quote and tpm2_pcrread under TCG, on two
# cores shared with other VMs: allow more than the production 30 s between issuing the
# nonce and verifying the quote.
NONCE_TTL = 300.0
CHUNK = 2000  # base64 characters per command line (the guest tty reads lines of <4096)


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
    assert request["ek_cert"] is None           # QEMU's swtpm was manufactured without one
    record, challenge = begin_enrollment(
        request, image_id=image_id, policy=EnrollmentPolicy(allow_ek_without_cert=True),
        tokens=None)
    assert record["ek_cert"] == "allowed-without"
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


def new_verifier(*refs: dict[str, Any], require_secure_boot: bool = False) -> Verifier:
    """A verifier for these images; Secure Boot NOT required unless asked (unsigned test
    images booted with Secure Boot off)."""
    return Verifier(Policy(require_secure_boot=require_secure_boot),
                    NonceStore(ttl=NONCE_TTL), {r["image_id"]: r for r in refs})


def refusal(verifier: Verifier, evidence: bytes, record: dict[str, Any], nonce: bytes,
            session: bytes) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        verifier.verify(evidence, record, nonce, session)
    err = info.value
    print(f"refused: step={err.step!r} reason={err.reason!r}")
    return err
