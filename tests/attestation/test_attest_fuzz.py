"""Hypothesis fuzzing: parsers, enrollment and the verifier raise only the package's own
errors, for any bytes, any nesting depth and any EK parameters.

AUDITBOX_FUZZ_EXAMPLES=N raises the number of examples per test (default 300).
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from attest_helpers import (
    Clock,
    FakeTpm,
    encode_log,
    enroll_fake,
    make_ek_ca,
    make_ek_cert,
    make_reference,
    new_verifier,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from attestation import canonical, eventlog, evidence, tpm_structs
from attestation.ekcert import check_ek_certificate
from attestation.enroll import EnrollmentPolicy, begin_enrollment, validate_record
from attestation.errors import EnrollmentError, EvidenceError, VerificationError
from attestation.logcheck import analyse
from attestation.reference import check_reference
from attestation.verifier import STEPS, booted_uki, qualifying_data

EXAMPLES = int(os.environ.get("AUDITBOX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

TPM = FakeTpm()
TPM.device_id = "tpm-fuzz"
GOOD_EVIDENCE = TPM.quote(b"\x01" * 32)
GOOD_ATTEST = canonical.b64d(canonical.loads(GOOD_EVIDENCE)["quote"], "q", 4096)
GOOD_SIG = canonical.b64d(canonical.loads(GOOD_EVIDENCE)["signature"], "s", 4096)
GOOD_LOG = encode_log(TPM.events)


_CA = make_ek_ca(name="fuzz EK CA")
CA_BUNDLE, EK_CERT_DER = (_CA[1],), make_ek_cert(_CA, TPM.ek.public_key())
RECORD_FIELDS_SAMPLE = {"format": 1, "mode": "tpm2"}


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
        assert exc.step in STEPS


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


# deep nesting ---------------------------------------------------------------------------


@st.composite
def nested_json(draw: st.DrawFn) -> bytes:
    """JSON text nested 0..5000 deep in arrays/objects, optionally inside an evidence field,
    optionally cut short, with brackets inside strings too."""
    depth = draw(st.integers(0, 5000))
    pattern = draw(st.lists(st.sampled_from(["[", '{"k":', '{"[":']), min_size=1, max_size=4))
    opens = (pattern * (depth // len(pattern) + 1))[:depth]
    inner = draw(st.sampled_from(['"[[[{{{"', "1", "null", '"x"', "[]", "{}"]))
    text = "".join(opens) + inner + "".join("]" if o == "[" else "}" for o in reversed(opens))
    if draw(st.booleans()):        # a wrapped record: the nested value under a known key
        text = canonical.dumps(RECORD_FIELDS_SAMPLE)[:-1].decode() + ',"x":' + text + "}"
    if draw(st.booleans()):
        obj = canonical.loads(GOOD_EVIDENCE)
        key = draw(st.sampled_from(sorted(obj)))
        head = canonical.dumps({**obj, key: 0}).decode()
        text = head.replace(f'"{key}":0', f'"{key}":{text}', 1)
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode()


@FUZZ
@given(nested_json())
def test_fuzz_deep_nesting_parsers(data: bytes) -> None:
    _only_own(lambda d: canonical.loads(d, require_canonical=True), data)
    _only_own(evidence.decode, data)
    _only_own(booted_uki, data)
    with contextlib.suppress(EvidenceError):
        validate_record(canonical.loads(data))


@FUZZ
@given(data=nested_json())
def test_fuzz_deep_nesting_verifier(fuzz_world: dict[str, Any], data: bytes) -> None:
    v = fuzz_world["verifier"]
    nonce = v.nonces.issue()
    try:
        v.verify(data, fuzz_world["record"], nonce, b"z" * 32)
    except VerificationError as exc:
        # deep: "parse"; shallow enough to parse (a field replaced by a plain value): a later
        # step (e.g. "signature": another device id)
        assert exc.step in STEPS
        if canonical.nesting_depth(data) > canonical.MAX_DEPTH:
            assert exc.step == "parse" and "nested deeper" in exc.reason
    else:
        raise AssertionError("nested junk accepted")


@FUZZ
@given(data=nested_json())
def test_fuzz_deep_nesting_records(fuzz_world: dict[str, Any], data: bytes) -> None:
    """A record (the gateway's own data) nested deep: refused at parse, never a crash."""
    v = fuzz_world["verifier"]
    nonce = v.nonces.issue()
    good = fuzz_world["tpm"].quote(qualifying_data(nonce, b"z" * 32))
    try:
        record = canonical.loads(data)
    except EvidenceError:
        record = [data.decode()]
    with contextlib.suppress(VerificationError):
        v.verify(good, record, nonce, b"z" * 32)


# EK parameters ---------------------------------------------------------------------------


@st.composite
def ek_public(draw: st.DrawFn) -> bytes:
    """TPM2B_PUBLIC of an RSA EK with fuzzed attributes, symmetric scheme, key size,
    exponent and modulus (any length, any bytes), or a mutation of the genuine one."""
    if draw(st.booleans()):
        return draw(mutations(TPM.ek_public))
    attrs = draw(st.sampled_from([0x000300B2, draw(st.integers(0, 2**32 - 1))]))
    sym = draw(st.sampled_from([(0x0006, 128, 0x0043), (0x0006, 256, 0x0043),
                                (0x0010, 0, 0), (draw(st.integers(0, 0xFFFF)), 128, 0x0043)]))
    bits = draw(st.sampled_from([2048, 1024, 4096, draw(st.integers(0, 0xFFFF))]))
    exponent = draw(st.sampled_from([0, 1, 2, 3, 65537, 65536, 2**32 - 1,
                                     draw(st.integers(0, 2**32 - 1))]))
    modulus = draw(st.sampled_from([
        TPM.ek.public_key().public_numbers().n.to_bytes(256, "big"),
        b"\x00" * 256, b"\xff" * 256, b"\xc0" + b"\x00" * 254 + b"\x02",
        draw(st.binary(min_size=0, max_size=300)),
    ]))
    sym_def = struct.pack(">H", sym[0]) + (struct.pack(">HH", sym[1], sym[2])
                                            if sym[0] != 0x0010 else b"")
    area = (struct.pack(">HHI", 0x0001, 0x000B, attrs) + struct.pack(">H", 32) + b"\x83" * 32
            + sym_def + struct.pack(">H", 0x0010) + struct.pack(">HI", bits, exponent)
            + struct.pack(">H", len(modulus)) + modulus)
    return struct.pack(">H", len(area)) + area


@FUZZ
@given(ek=ek_public(), cert=st.none() | st.binary(max_size=600), allow=st.booleans())
def test_fuzz_ek_parameters(ek: bytes, cert: bytes | None, allow: bool) -> None:
    from attestation.tpm2 import tpm_device_id

    request = TPM.enrollment_request()
    request["ek_public"] = canonical.b64e(ek)
    request["ek_cert"] = None if cert is None else canonical.b64e(cert)
    with contextlib.suppress(EvidenceError):
        request["device_id"] = tpm_device_id(ek)
    policy = EnrollmentPolicy(allow_ek_without_cert=allow, ek_ca_bundle=CA_BUNDLE)
    try:
        record, challenge = begin_enrollment(request, image_id="img-A", policy=policy)
    except EnrollmentError:
        return
    assert challenge is not None and record["status"] == "pending"


@FUZZ
@given(mutations(EK_CERT_DER))
def test_fuzz_ek_certificate(der: bytes) -> None:
    with contextlib.suppress(EnrollmentError):
        check_ek_certificate(der, TPM.ek.public_key(), CA_BUNDLE)


@FUZZ
@given(mutations(GOOD_LOG), st.sampled_from(["tpm2", "soft"]))
def test_fuzz_logcheck(data: bytes, mode: str) -> None:
    try:
        analyse(data, mode, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13))
    except VerificationError as exc:
        assert exc.step == "event_log"
