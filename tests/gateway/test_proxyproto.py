"""PROXY protocol v2 headers (gateway/proxyproto.py): what is accepted and what is not."""

from __future__ import annotations

import struct

import pytest

from gateway.proxyproto import HEADER, SIGNATURE, ProxyHeaderError, encode, parse


def test_tcp4_and_tcp6_headers_give_the_source() -> None:
    h = encode(("192.0.2.7", 40001), ("10.0.0.1", 22))
    assert parse(h + b"SSH-2.0-x\r\n") == parse(h)
    got = parse(h)
    assert got is not None and got.source == ("192.0.2.7", 40001) and got.length == len(h)
    h6 = encode(("2001:db8::7", 5), ("2001:db8::1", 22))
    got6 = parse(h6)
    assert got6 is not None and got6.source == ("2001:db8::7", 5) and got6.length == len(h6)


def test_a_header_in_pieces_waits_for_the_rest() -> None:
    h = encode(("192.0.2.7", 40001), ("10.0.0.1", 22))
    for n in range(len(h)):
        assert parse(h[:n]) is None


def test_local_is_the_balancer_itself() -> None:
    got = parse(HEADER.pack(SIGNATURE, 0x20, 0x00, 0))
    assert got is not None and got.source is None and got.length == HEADER.size


@pytest.mark.parametrize(("data", "why"), [
    (b"GET / HTTP/1.0\r\n\r\n", "not a PROXY v2 header"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 1 22\r\n", "not a PROXY v2 header"),
    (HEADER.pack(SIGNATURE, 0x11, 0x11, 12) + bytes(12), "version 1"),
    (HEADER.pack(SIGNATURE, 0x22, 0x11, 12) + bytes(12), "command 2"),
    (HEADER.pack(SIGNATURE, 0x21, 0x31, 216) + bytes(216), "address family 0x31"),
    (HEADER.pack(SIGNATURE, 0x21, 0x12, 12) + bytes(12), "address family 0x12"),
    (HEADER.pack(SIGNATURE, 0x21, 0x11, 8) + bytes(8), "with 8 bytes"),
    (HEADER.pack(SIGNATURE, 0x21, 0x11, 513), "513 bytes"),
])
def test_anything_else_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        parse(data)


def test_a_tlv_after_the_addresses_is_skipped() -> None:
    block = bytes([192, 0, 2, 9, 10, 0, 0, 1]) + struct.pack("!HH", 7, 22) + b"\x04\x00\x01x"
    got = parse(HEADER.pack(SIGNATURE, 0x21, 0x11, len(block)) + block + b"SSH-")
    assert got is not None and got.source == ("192.0.2.9", 7)
    assert got.length == HEADER.size + len(block)
