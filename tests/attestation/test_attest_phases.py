"""PCR 11 must be at the reference's final boot phase, not any phase the build predicted."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from attest_helpers import Clock, FakeTpm, enroll_fake, new_verifier, reference_data
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.errors import VerificationError
from attestation.reference import verify_reference_bytes, write_signed_reference
from attestation.verifier import qualifying_data

READY = "enter-initrd:leave-initrd:sysinit:ready"


def _extend(value: bytes, path: str) -> bytes:
    for word in path.split(":"):
        value = hashlib.sha256(value + hashlib.sha256(word.encode()).digest()).digest()
    return value


def _setup(tmp: Path, **policy: Any) -> tuple[FakeTpm, dict[str, Any], Any]:
    tpm = FakeTpm()
    record = enroll_fake(tpm)
    booted = tpm.pcr_values()[11]          # PCR 11 as the stub left it (no phase yet)
    key = Ed25519PrivateKey.generate()
    data = reference_data(
        pcrs={"11": _extend(booted, READY).hex(), "12": "00" * 32, "13": "00" * 32},
        pcr11_phases={"": booted.hex(), "enter-initrd": _extend(booted, "enter-initrd").hex(),
                      READY: _extend(booted, READY).hex()})
    write_signed_reference(tmp, data, key)
    ref = verify_reference_bytes((tmp / "reference.json").read_bytes(),
                                 (tmp / "reference.json.sig").read_bytes(), [key.public_key()])
    return tpm, record, new_verifier(ref, Clock(), **policy)


def test_quote_from_an_earlier_phase_is_refused(tmp_path: Path) -> None:
    tpm, record, verifier = _setup(tmp_path)
    nonce, session = verifier.nonces.issue(), b"S" * 32
    evidence = tpm.quote(qualifying_data(nonce, session))
    with pytest.raises(VerificationError) as info:
        verifier.verify(evidence, record, nonce, session)
    assert info.value.step == "policy"
    assert "earlier boot phase" in info.value.reason


def test_earlier_phase_accepted_only_when_policy_says_so(tmp_path: Path) -> None:
    tpm, record, verifier = _setup(tmp_path, accept_any_pcr11_phase=True)
    nonce, session = verifier.nonces.issue(), b"S" * 32
    result = verifier.verify(tpm.quote(qualifying_data(nonce, session)), record, nonce, session)
    assert result.image_id == "img-A"
