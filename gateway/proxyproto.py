"""PROXY protocol v2 in front of the SSH endpoint: the terminal's own address behind HAProxy.

Behind a TCP load balancer every connection comes from the balancer's address, so the
per-address rate limit (``auth.source_max_failures``) would count every terminal's
failures together: one address guessing passwords would lock every terminal out, and
the audit log would name the balancer as everyone's source. HAProxy's
``send-proxy-v2`` puts the client's address in a binary header before the SSH bytes.

``listen.proxy_protocol_from`` lists the balancers' addresses. A connection from one
of them may start with a PROXY v2 header (``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, version 2,
``PROXY`` with a TCP over IPv4/IPv6 address block, or ``LOCAL``); its source address
then stands for the peer everywhere (rate limits, audit, sessions). A connection from
one of them that starts with ``SSH-`` is served as it is (the balancer's host
itself). A header that is malformed, truncated, over ``MAX_BLOCK`` bytes, of another
version, command or address family, or not complete within ``HEADER_TIMEOUT``
closes the connection. Connections from any other address are never inspected: a
header from them is not a valid SSH banner and asyncssh drops the connection.

``ProxyListener`` is handed to ``asyncssh.create_server(tunnel=...)``: asyncssh asks
it to listen and gets, per accepted connection, the source it should report.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER = struct.Struct("!12sBBH")            # signature, version|command, family, length
MAX_BLOCK = 512
HEADER_TIMEOUT = 5.0
TCP4, TCP6 = 0x11, 0x21
log = logging.getLogger("auditbox.gateway")


class ProxyHeaderError(ValueError):
    """A PROXY v2 header this gateway does not accept."""


@dataclass(frozen=True)
class Parsed:
    source: tuple[str, int] | None     # None: LOCAL (the balancer speaking for itself)
    length: int                        # bytes of header consumed


def parse(data: bytes) -> Parsed | None:
    """Parse a PROXY v2 header at the start of ``data``: None if more bytes are needed."""
    if len(data) < HEADER.size:
        if not SIGNATURE.startswith(data[:len(SIGNATURE)]):
            raise ProxyHeaderError("not a PROXY v2 header")
        return None
    sig, ver_cmd, family, length = HEADER.unpack_from(data)
    if sig != SIGNATURE:
        raise ProxyHeaderError("not a PROXY v2 header")
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY protocol version {ver_cmd >> 4} (allowed: 2)")
    if length > MAX_BLOCK:
        raise ProxyHeaderError(f"address block of {length} bytes (allowed: <= {MAX_BLOCK})")
    if len(data) < HEADER.size + length:
        return None
    block = data[HEADER.size:HEADER.size + length]
    command = ver_cmd & 0x0F
    if command == 0x0:                     # LOCAL: health checks and the like
        return Parsed(None, HEADER.size + length)
    if command != 0x1:
        raise ProxyHeaderError(f"PROXY command {command} (allowed: LOCAL, PROXY)")
    if family == TCP4 and length >= 12:
        src = str(ipaddress.IPv4Address(block[0:4]))
        port = struct.unpack_from("!H", block, 8)[0]
    elif family == TCP6 and length >= 36:
        src = str(ipaddress.IPv6Address(block[0:16]))
        port = struct.unpack_from("!H", block, 32)[0]
    else:
        raise ProxyHeaderError(f"address family 0x{family:02x} with {length} bytes "
                               "(allowed: TCP over IPv4 or IPv6)")
    return Parsed((src, port), HEADER.size + length)


def encode(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """A PROXY v2 header (for tests and the bench)."""
    s, d = ipaddress.ip_address(source[0]), ipaddress.ip_address(dest[0])
    family = TCP4 if s.version == 4 else TCP6
    block = s.packed + d.packed + struct.pack("!HH", source[1], dest[1])
    return HEADER.pack(SIGNATURE, 0x21, family, len(block)) + block


class _PeerTransport:
    """The accepted transport, reporting the PROXY header's source as its peer."""

    def __init__(self, transport: asyncio.Transport, peer: tuple[str, int]) -> None:
        self._transport = transport
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


SessionFactory = Callable[[str, int], asyncio.BaseProtocol]


class _Shim(asyncio.Protocol):
    """Reads the header (from a trusted balancer), then hands the socket to asyncssh."""

    def __init__(self, factory: SessionFactory, trusted: frozenset[str]) -> None:
        self.factory, self.trusted = factory, trusted
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.timer: asyncio.TimerHandle | None = None
        self.peer: tuple[str, int] = ("?", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        if _normal(self.peer[0]) not in self.trusted:
            self._hand_over(self.peer, b"")
            return
        self.timer = asyncio.get_running_loop().call_later(HEADER_TIMEOUT, self._timeout)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) < 4 and b"SSH-".startswith(self.buf):
            return                               # too early to tell
        if self.buf.startswith(b"SSH-"):         # the balancer's own host, no header
            self._hand_over(self.peer, self.buf)
            return
        try:
            parsed = parse(self.buf)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if parsed is not None:
            self._hand_over(parsed.source or self.peer, self.buf[parsed.length:])

    def _timeout(self) -> None:
        self._refuse("no PROXY header in time")

    def _refuse(self, why: str) -> None:
        log.warning("PROXY protocol from %s refused: %s", self.peer, why)
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _hand_over(self, peer: tuple[str, int], rest: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
        assert self.transport is not None
        conn = self.factory(peer[0], peer[1])
        self.transport.set_protocol(conn)
        conn.connection_made(_PeerTransport(self.transport, peer))  # type: ignore[arg-type]
        if rest:
            assert isinstance(conn, asyncio.Protocol)
            conn.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


def _normal(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class ProxyListener:
    """asyncssh's ``tunnel`` for ``create_server``: it listens, asyncssh serves."""

    def __init__(self, trusted: tuple[str, ...], backlog: int = 1024) -> None:
        self.trusted = frozenset(_normal(a) for a in trusted)
        self.backlog = backlog

    async def create_server(self, session_factory: SessionFactory, host: str,
                            port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Shim(session_factory, self.trusted), host,
                                        port, backlog=self.backlog, reuse_address=True)
