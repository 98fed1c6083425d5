"""The control channel's wire format (docs/protocol.md section 3), both directions.

Shared by the gateway (``gateway/control.py``) and the terminal
(``kiosk/gateway_link.py``); standard library and ``attestation.canonical`` only, so
that it runs on Debian 13's python3 inside the image.

A frame is a 4-byte big-endian length n, then n bytes of one canonical JSON object
with a ``type`` key. ``FrameReader`` refuses a length of 0 or above its current
limit before it reads the body; ``parse`` refuses non-canonical JSON, unknown types
and missing, unknown or ill-typed keys. Every refusal is a ``ProtocolError``.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Callable
from typing import Any

from attestation import canonical
from attestation.errors import EvidenceError

VERSION = 1
SUBSYSTEM = "auditbox-control@auditbox"
ENROLL_USER = "auditbox-enroll"
SMALL_LIMIT = 64 * 1024            # every message but evidence/enroll
LARGE_LIMIT = 1024 * 1024          # evidence, enroll (gateway: attestation.max_evidence_bytes)
HEADER = struct.Struct(">I")
NONCE_BYTES = 32
ERROR_PREFIX = "auditbox-error "
ATTESTATION_REFUSAL = ("auditbox: refused at attestation: this gateway admits only attested "
                       "auditbox terminals")
ERROR_CODES = ("bad-password", "bad-code", "locked-out", "rate-limited", "locked",
               "unavailable", "bad-token")
REFUSAL_STEPS = ("parse", "signature", "magic", "qualifying_data", "hash_algorithm",
                 "pcr_selection", "pcr_digest", "event_log", "policy", "clock", "revocation",
                 "protocol", "enrollment", "timeout", "store")
ALERT_KINDS = ("keystroke-burst", "usb-keyboard", "local")
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
_CODE = re.compile(r"[a-z0-9-]{1,64}\Z")
_IMAGE_ID = re.compile(r"[A-Za-z0-9._:+-]{1,200}\Z")


class ProtocolError(Exception):
    """A frame or message that docs/protocol.md does not allow."""


# -- field checks ---------------------------------------------------------------------
Check = Callable[[str, object], object]


def _int(lo: int, hi: int) -> Check:
    def check(key: str, v: object) -> object:
        if type(v) is not int or not lo <= v <= hi:
            raise ProtocolError(f"{key}: expected an integer in {lo}..{hi}")
        return v
    return check


def _text(limit: int, pattern: re.Pattern[str] | None = None) -> Check:
    def check(key: str, v: object) -> object:
        if not isinstance(v, str) or len(v) > limit or (pattern and not pattern.match(v)):
            raise ProtocolError(f"{key}: expected a string of at most {limit} characters"
                                + (f" matching {pattern.pattern}" if pattern else ""))
        return v
    return check


def _choice(*allowed: str) -> Check:
    def check(key: str, v: object) -> object:
        if v not in allowed:
            raise ProtocolError(f"{key}: {v!r} is not allowed (allowed: {', '.join(allowed)})")
        return v
    return check


def _b64(limit: int) -> Check:
    def check(key: str, v: object) -> object:
        if not isinstance(v, str) or not v or len(v) > (limit + 2) // 3 * 4:
            raise ProtocolError(f"{key}: expected standard base64 of at most {limit} bytes")
        try:
            raw = base64.b64decode(v.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ProtocolError(f"{key}: invalid base64") from None
        if base64.b64encode(raw).decode("ascii") != v:
            raise ProtocolError(f"{key}: non-canonical base64")
        return raw
    return check


def _nonce(key: str, v: object) -> object:
    if not isinstance(v, str) or len(v) != 2 * NONCE_BYTES or v != v.lower():
        raise ProtocolError(f"{key}: expected {NONCE_BYTES} bytes of lower-case hex")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise ProtocolError(f"{key}: invalid hex") from None


def _object(key: str, v: object) -> object:
    if not isinstance(v, dict):
        raise ProtocolError(f"{key}: expected an object")
    return v


_VERSION = _int(VERSION, VERSION)
_DEVICE = _text(128, _DEVICE_ID)
_MODE = _choice("tpm2", "soft")
_MESSAGE = _text(2048)

# direction -> type -> {key: check}; the checks return the decoded value
CLIENT_MESSAGES: dict[str, dict[str, Check]] = {
    "hello": {"version": _VERSION, "device_id": _DEVICE, "mode": _MODE},
    "evidence": {"nonce": _nonce, "evidence": _b64(LARGE_LIMIT)},
    "enroll": {"version": _VERSION, "request": _object},
    "activate": {"secret": _b64(1024)},
    "alert": {"kind": _choice(*ALERT_KINDS), "detail": _text(512)},
}
GATEWAY_MESSAGES: dict[str, dict[str, Check]] = {
    "challenge": {"nonce": _nonce, "deadline": _int(1, 3600)},
    "accepted": {"device_id": _DEVICE, "next": _int(0, 86400 * 365)},
    "refused": {"step": _choice(*REFUSAL_STEPS), "message": _MESSAGE},
    "credential": {"credential": _b64(8192)},
    "enrolled": {"device_id": _DEVICE, "mode": _MODE, "image_id": _text(200, _IMAGE_ID)},
    "locked": {"message": _MESSAGE, "target": _choice("device", "user")},
    "notice": {"code": _text(64, _CODE), "message": _MESSAGE},
}
LARGE_TYPES = frozenset({"evidence", "enroll"})


def parse(body: bytes, schema: dict[str, dict[str, Check]],
          small_limit: int = SMALL_LIMIT) -> dict[str, Any]:
    """Decode and check one message body; values come back decoded (bytes for
    base64/hex fields). Raises ProtocolError."""
    try:
        obj = canonical.loads(body, require_canonical=True, limit=LARGE_LIMIT * 2)
    except EvidenceError as exc:
        raise ProtocolError(f"message: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message: expected a JSON object")
    typ = obj.get("type")
    if not isinstance(typ, str) or typ not in schema:
        raise ProtocolError(f"message: unknown type {typ!r} "
                            f"(allowed: {', '.join(sorted(schema))})")
    if typ not in LARGE_TYPES and len(body) > small_limit:
        raise ProtocolError(f"{typ}: message larger than {small_limit} bytes")
    fields = schema[typ]
    keys = set(obj) - {"type"}
    if keys != set(fields):
        missing, unknown = set(fields) - keys, keys - set(fields)
        raise ProtocolError(f"{typ}: " + "; ".join(
            ([f"missing key(s) {sorted(missing)}"] if missing else [])
            + ([f"unknown key(s) {sorted(unknown)}"] if unknown else [])))
    out: dict[str, Any] = {"type": typ}
    for key, check in fields.items():
        out[key] = check(f"{typ}.{key}", obj[key])
    return out


def encode(msg: dict[str, Any], schema: dict[str, dict[str, Check]]) -> bytes:
    """Frame one message (values as they go on the wire: hex/base64 strings).

    The message is checked against ``schema`` first, so a sender never emits what
    its peer must refuse."""
    body = canonical.dumps(msg)
    if len(body) > (LARGE_LIMIT if msg.get("type") in LARGE_TYPES else SMALL_LIMIT):
        raise ProtocolError(f"{msg.get('type')}: message too large ({len(body)} bytes)")
    parse(body, schema)
    return HEADER.pack(len(body)) + body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class FrameReader:
    """Incremental frame splitter with a limit that the caller may change per state."""

    def __init__(self, limit: int = SMALL_LIMIT) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._need: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frame bodies, in order."""
        self._buf += data
        bodies: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buf) < HEADER.size:
                    break
                (n,) = HEADER.unpack_from(self._buf)
                if n == 0 or n > self.limit:
                    raise ProtocolError(f"frame length {n} outside 1..{self.limit}")
                self._need = n
                del self._buf[:HEADER.size]
            if len(self._buf) < self._need:
                break
            bodies.append(bytes(self._buf[:self._need]))
            del self._buf[:self._need]
            self._need = None
        return bodies

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (0 at a frame boundary)."""
        return len(self._buf) + (HEADER.size if self._need is not None else 0)


def auth_error(instruction: str) -> tuple[str, str] | None:
    """Split a keyboard-interactive instruction ``auditbox-error CODE: TEXT``."""
    line = instruction.strip()
    if not line.startswith(ERROR_PREFIX):
        return None
    code, sep, text = line[len(ERROR_PREFIX):].partition(": ")
    if not sep or not _CODE.match(code):
        return None
    return code, text
