"""Length-prefixed canonical JSON frames over a stream socket.

A frame is a 4-byte big-endian length n (1..limit) and n bytes of one canonical JSON
object. Used between the kiosk and the local attestation agent service.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from . import canonical
from .errors import EvidenceError


class FrameError(Exception):
    """A frame was malformed, oversized or cut short."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise FrameError("connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, limit: int) -> Any:
    """Read one frame; the length is checked before the body is read."""
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    if n == 0 or n > limit:
        raise FrameError(f"frame length {n} outside 1..{limit}")
    try:
        return canonical.loads(recv_exact(sock, n), require_canonical=True, limit=limit)
    except EvidenceError as exc:
        raise FrameError(str(exc)) from None


def send_frame(sock: socket.socket, obj: object) -> None:
    body = canonical.dumps(obj)
    sock.sendall(struct.pack(">I", len(body)) + body)
