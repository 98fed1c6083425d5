"""The control channel's wire format (kiosk/protocol.py, docs/protocol.md section 3)."""

from __future__ import annotations

import struct

import pytest

from kiosk import protocol as p


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_round_trip_every_message_type() -> None:
    nonce = "ab" * 32
    client = [
        {"type": "hello", "version": 1, "device_id": "soft-abc", "mode": "soft"},
        {"type": "evidence", "nonce": nonce, "evidence": p.b64(b"x" * 100)},
        {"type": "enroll", "version": 1, "request": {"mode": "soft"}},
        {"type": "activate", "secret": p.b64(b"s" * 32)},
        {"type": "alert", "kind": "local", "detail": "d"},
    ]
    gateway = [
        {"type": "challenge", "nonce": nonce, "deadline": 15},
        {"type": "accepted", "device_id": "tpm-1", "next": 300},
        {"type": "refused", "step": "qualifying_data", "message": "m"},
        {"type": "credential", "credential": p.b64(b"c" * 300)},
        {"type": "enrolled", "device_id": "tpm-1", "mode": "tpm2", "image_id": "img-1"},
        {"type": "locked", "message": "bye", "target": "user"},
        {"type": "notice", "code": "budget-throttled", "message": "slow"},
    ]
    reader = p.FrameReader(limit=p.LARGE_LIMIT)
    for schema, msgs in ((p.CLIENT_MESSAGES, client), (p.GATEWAY_MESSAGES, gateway)):
        wire = b"".join(p.encode(m, schema) for m in msgs)
        # fed one byte at a time: framing must not depend on read sizes
        bodies = [b for i in range(len(wire)) for b in reader.feed(wire[i:i + 1])]
        assert [p.parse(b, schema)["type"] for b in bodies] == [m["type"] for m in msgs]
    assert reader.pending == 0
    ev = p.parse(p.encode(client[1], p.CLIENT_MESSAGES)[4:], p.CLIENT_MESSAGES)
    assert ev["nonce"] == bytes.fromhex(nonce) and ev["evidence"] == b"x" * 100


@pytest.mark.parametrize("n", [0, p.SMALL_LIMIT + 1, 2**32 - 1])
def test_length_refused_before_body(n: int) -> None:
    reader = p.FrameReader(limit=p.SMALL_LIMIT)
    with pytest.raises(p.ProtocolError, match="frame length"):
        reader.feed(struct.pack(">I", n))      # no body sent at all


@pytest.mark.parametrize("body, why", [
    (b'{"device_id":"d","mode":"soft","type":"hello","version":1}', None),
    (b'{"type":"hello","version":1,"device_id":"d","mode":"soft"}', "canonical"),
    (b'{"device_id":"d","mode":"soft","type":"hello"}', "missing"),
    (b'{"device_id":"d","extra":1,"mode":"soft","type":"hello","version":1}', "unknown key"),
    (b'{"device_id":"d","mode":"soft","type":"hullo","version":1}', "unknown type"),
    (b'{"device_id":"d","mode":"sha1","type":"hello","version":1}', "not allowed"),
    (b'{"device_id":"d","mode":"soft","type":"hello","version":2}', "integer"),
    (b'{"device_id":"d d","mode":"soft","type":"hello","version":1}', "matching"),
    (b'{"device_id":"d","mode":"soft","type":"hello","version":1.0}', "floating"),
    (b'["hello"]', "object"),
    (b'{"nonce":"' + b"AB" * 32 + b'","evidence":"eA==","type":"evidence"}', "canonical"),
    (b'{"evidence":"eA==","nonce":"' + b"AB" * 32 + b'","type":"evidence"}', "lower-case"),
    (b'{"evidence":"eA=","nonce":"' + b"ab" * 32 + b'","type":"evidence"}', "base64"),
    (b'{"evidence":"eA==","nonce":"' + b"ab" * 31 + b'","type":"evidence"}', "32 bytes"),
    (b'{"detail":"' + b"x" * 513 + b'","kind":"local","type":"alert"}', "512"),
])
def test_strict_client_messages(body: bytes, why: str | None) -> None:
    if why is None:
        assert p.parse(body, p.CLIENT_MESSAGES)["device_id"] == "d"
        return
    with pytest.raises(p.ProtocolError, match=why):
        p.parse(body, p.CLIENT_MESSAGES)


def test_small_messages_capped_even_under_a_large_frame_limit() -> None:
    body = p.encode({"type": "alert", "kind": "local", "detail": "x"}, p.CLIENT_MESSAGES)[4:]
    padded = body.replace(b'"x"', b'"' + b"x" * 500 + b'"')
    assert p.parse(padded, p.CLIENT_MESSAGES)
    with pytest.raises(p.ProtocolError, match="larger than"):
        p.parse(padded, p.CLIENT_MESSAGES, small_limit=100)


def test_gateway_messages_not_accepted_from_client() -> None:
    body = p.encode({"type": "accepted", "device_id": "d", "next": 0}, p.GATEWAY_MESSAGES)[4:]
    with pytest.raises(p.ProtocolError, match="unknown type"):
        p.parse(body, p.CLIENT_MESSAGES)


def test_encode_refuses_what_the_peer_would_refuse() -> None:
    with pytest.raises(p.ProtocolError):
        p.encode({"type": "refused", "step": "whatever", "message": "m"}, p.GATEWAY_MESSAGES)


@pytest.mark.parametrize("line, want", [
    ("auditbox-error bad-code: wrong, expired or already used code",
     ("bad-code", "wrong, expired or already used code")),
    ("auditbox-error locked: admin says: no", ("locked", "admin says: no")),
    ("auditbox-error nocolon", None),
    ("something else", None),
])
def test_auth_error_instruction(line: str, want: tuple[str, str] | None) -> None:
    assert p.auth_error(line) == want
