"""Canonical JSON used by evidence, enrollment records and reference.json.

Canonical form: ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)`` encoded as ASCII. Only dict, list, str, int,
bool and None are allowed (no floats). Parsing refuses duplicate keys, floats, NaN,
nesting deeper than ``MAX_DEPTH`` (checked on the bytes before the JSON parser runs, so
no input reaches its recursion limit) and, with ``require_canonical``, any input that is
not byte-identical to the canonical re-encoding of what it decodes to.

Hex fields are lower-case hex of even length and nothing else (no whitespace, no
``0x``); base64 fields are standard base64 with padding, re-encoding to the same text.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from typing import Any

from .errors import EvidenceError

MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_HEX = re.compile(r"[0-9a-f]*\Z")


def dumps(obj: Any) -> bytes:
    """Return the canonical encoding of ``obj``."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise EvidenceError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise EvidenceError("floating point numbers are not allowed")


def _no_constant(text: str) -> Any:
    raise EvidenceError(f"JSON constant {text} is not allowed")


def nesting_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects in JSON text, brackets inside strings aside.

    Runs at C speed for any input: the cheap bound (all opening brackets) answers for
    ordinary documents; otherwise strings are blanked out by one regular expression and
    the brackets left are summed up.
    """
    bound = data.count(b"[") + data.count(b"{")
    if bound <= MAX_DEPTH:
        return bound
    brackets = _STRING.sub(b'""', data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def loads(data: bytes, *, require_canonical: bool = False, limit: int = MAX_JSON_BYTES,
          duplicates_checked_by_caller: bool = False) -> Any:
    """Parse JSON strictly; raise EvidenceError on anything unexpected.

    Duplicate keys are refused by a hook, or (canonical input, or a caller that compares
    the input with a re-encoding itself) by the re-encoding differing from the input."""
    if not isinstance(data, bytes | bytearray):
        raise EvidenceError("JSON input must be bytes")
    if len(data) > limit:
        raise EvidenceError(f"JSON input too large ({len(data)} > {limit} bytes)")
    data = bytes(data)
    if nesting_depth(data) > MAX_DEPTH:
        raise EvidenceError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        text = data.decode("ascii")
        # canonical input needs no duplicate-key hook: a duplicate makes the re-encoding
        # below differ from the input (and the C decoder builds plain dicts much faster)
        obj = json.loads(
            text,
            object_pairs_hook=None if require_canonical or duplicates_checked_by_caller
            else _no_dupes,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except EvidenceError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EvidenceError(f"invalid JSON: {exc}") from None
    if require_canonical and dumps(obj) != data:
        raise EvidenceError("JSON is not in canonical form")
    return obj


def loads_canonical(data: bytes, *, limit: int, verbatim: str) -> Any:
    """``loads(data, require_canonical=True)`` for an object whose top-level ``verbatim`` key
    holds a large string (base64): that value is compared as bytes instead of re-encoded,
    so the canonical check costs what the rest of the document costs. The input is
    canonical exactly when it is the canonical encoding of the rest with the value's ASCII
    bytes in place: a value JSON would escape (quote, backslash, control or non-ASCII
    characters) cannot match that way and is refused. The value is not decoded here (see
    ``b64d``)."""
    obj = loads(data, limit=limit, duplicates_checked_by_caller=True)
    if not isinstance(obj, dict) or not isinstance(obj.get(verbatim), str):
        return loads(data, require_canonical=True, limit=limit)
    try:
        value = obj[verbatim].encode("ascii")
    except UnicodeEncodeError:
        raise EvidenceError(f"{verbatim}: expected a base64 string") from None
    rest = dumps({**obj, verbatim: ""})
    marker = b'"' + verbatim.encode("ascii") + b'":"'
    at = rest.find(marker) + len(marker)
    data = bytes(data)
    if not (len(data) == len(rest) + len(value) and data.startswith(rest[:at])
            and data.startswith(value, at) and data.endswith(rest[at:])):
        raise EvidenceError("JSON is not in canonical form")
    return obj


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, what: str, limit: int) -> bytes:
    """Strict standard base64 (with padding) to bytes, at most ``limit`` bytes."""
    if not isinstance(text, str):
        raise EvidenceError(f"{what}: expected a base64 string")
    if len(text) > (limit + 2) // 3 * 4:
        raise EvidenceError(f"{what}: too large")
    try:
        encoded = text.encode("ascii")
        # the lenient C decoder skips what is not base64; the round trip below then differs
        # from the input, so this is as strict as validate=True, and faster
        raw = binascii.a2b_base64(encoded)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EvidenceError(f"{what}: invalid base64") from None
    if binascii.b2a_base64(raw, newline=False) != encoded:
        raise EvidenceError(f"{what}: non-canonical base64")
    return raw


def hexd(text: object, what: str, size: int | None = None, limit: int = 4096) -> bytes:
    """Lower-case hex to bytes; exact ``size`` when given."""
    if not isinstance(text, str) or len(text) > 2 * limit:
        raise EvidenceError(f"{what}: expected a hex string")
    if len(text) % 2 or not _HEX.match(text):
        raise EvidenceError(f"{what}: expected lower-case hex of even length, nothing else")
    raw = bytes.fromhex(text)
    if size is not None and len(raw) != size:
        raise EvidenceError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def require_keys(
    obj: object,
    what: str,
    required: set[str] | frozenset[str],
    optional: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Check ``obj`` is a dict with exactly the required keys plus optional ones."""
    if not isinstance(obj, dict):
        raise EvidenceError(f"{what}: expected an object")
    keys = set(obj)
    missing = required - keys
    if missing:
        raise EvidenceError(f"{what}: missing field(s) {sorted(missing)}")
    unknown = keys - required - optional
    if unknown:
        raise EvidenceError(f"{what}: unknown field(s) {sorted(unknown)}")
    return obj
