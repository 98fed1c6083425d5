"""Hypothesis fuzzing: parsers and the verifier raise only the package's own errors."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from attest_helpers import Clock, FakeTpm, encode_log, enroll_fake, make_reference, new_verifier
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from attestation import canonical, eventlog, evidence, tpm_structs
from attestation.enroll import validate_record
from attestation.errors import EvidenceError, VerificationError
from attestation.reference import check_reference
from attestation.verifier import qualifying_data

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

TPM = FakeTpm()
TPM.device_id = "tpm-fuzz"
GOOD_EVIDENCE = TPM.quote(b"\x01" * 32)
GOOD_ATTEST = canonical.b64d(canonical.loads(GOOD_EVIDENCE)["quote"], "q", 4096)
GOOD_SIG = canonical.b64d(canonical.loads(GOOD_EVIDENCE)["signature"], "s", 4096)
GOOD_LOG = encode_log(TPM.events)


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, plus the good input with bytes flipped, cut or extended."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
            pos = draw(st.integers(0, max(len(data) - 1, 0)))
            if op == "flip" and data:
                data[pos] ^= draw(st.integers(1, 255))
            elif op == "cut":
                del data[pos : pos + draw(st.integers(1, 8))]
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            else:
                data = data[:pos]
        return bytes(data)

    return st.one_of(st.binary(max_size=512), mutate())


def _only_own(fn: Any, data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        fn(data)


@FUZZ
@given(mutations(GOOD_ATTEST))
def test_fuzz_attest(data: bytes) -> None:
    _only_own(tpm_structs.parse_attest, data)


@FUZZ
@given(mutations(GOOD_SIG))
def test_fuzz_signature(data: bytes) -> None:
    _only_own(tpm_structs.parse_signature, data)


@FUZZ
@given(mutations(TPM.ak_public) | mutations(TPM.ek_public))
def test_fuzz_public(data: bytes) -> None:
    _only_own(tpm_structs.parse_tpm2b_public, data)


@FUZZ
@given(mutations(bytes.fromhex("00000002000b03ff0f00000403010000")))
def test_fuzz_pcr_selection(data: bytes) -> None:
    _only_own(tpm_structs.parse_tpml_pcr_selection, data)


@FUZZ
@given(mutations(GOOD_LOG))
def test_fuzz_eventlog(data: bytes) -> None:
    def parse_and_replay(d: bytes) -> None:
        log = eventlog.parse(d)
        for alg, _ in log.spec.algorithms:
            eventlog.replay(log, alg)

    _only_own(parse_and_replay, data)


@FUZZ
@given(mutations(GOOD_EVIDENCE))
def test_fuzz_evidence(data: bytes) -> None:
    _only_own(evidence.decode, data)


@FUZZ
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20))
def test_fuzz_records_and_references(obj: Any) -> None:
    for fn in (validate_record, check_reference):
        with contextlib.suppress(EvidenceError):
            fn(obj)
    with contextlib.suppress(EvidenceError):
        canonical.loads(repr(obj).encode())


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tpm = FakeTpm()
    record = enroll_fake(tpm)
    ref = make_reference(Ed25519PrivateKey.generate(), Path(tmp_path_factory.mktemp("ref")))
    clock = Clock()
    return {"tpm": tpm, "record": record, "verifier": new_verifier(ref, clock)}


@FUZZ
@given(data=st.data())
def test_fuzz_verifier(fuzz_world: dict[str, Any], data: st.DataObject) -> None:
    v = fuzz_world["verifier"]
    nonce = v.nonces.issue()
    session = b"z" * 32
    good = fuzz_world["tpm"].quote(qualifying_data(nonce, session))
    ev = data.draw(mutations(good))
    try:
        v.verify(ev, fuzz_world["record"], nonce, session)
    except VerificationError as exc:
        assert exc.step in ("parse", "signature", "magic", "qualifying_data",
                            "hash_algorithm", "pcr_selection", "pcr_digest", "event_log",
                            "policy", "clock", "revocation")


@FUZZ
@given(field=st.sampled_from(["quote", "signature", "event_log"]), data=st.data())
def test_fuzz_verifier_inner_fields(fuzz_world: dict[str, Any], field: str,
                                    data: st.DataObject) -> None:
    """Mutate the binary fields inside otherwise well-formed JSON."""
    v = fuzz_world["verifier"]
    nonce = v.nonces.issue()
    session = b"z" * 32
    obj = canonical.loads(fuzz_world["tpm"].quote(qualifying_data(nonce, session)))
    inner = canonical.b64d(obj[field], field, 1 << 22)
    mutated = data.draw(mutations(inner))
    assume(mutated != inner)
    obj[field] = canonical.b64e(mutated)
    try:
        v.verify(canonical.dumps(obj), fuzz_world["record"], nonce, session)
    except VerificationError:
        return
    # only what no digest covers (event data such as a device path, or the type of an
    # event no structural rule constrains) may change unnoticed; measurements may not
    assert field == "event_log"
    a, b = eventlog.parse(inner), eventlog.parse(mutated)
    assert [(e.pcr, e.digests) for e in a.events] == [(e.pcr, e.digests) for e in b.events]
