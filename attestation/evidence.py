"""The evidence format an agent sends and the verifier reads.

Version 1 is canonical JSON (see ``canonical``): an object with exactly these keys

    format      1
    mode        "tpm2" | "soft"
    device_id   string, 1..128 chars of [A-Za-z0-9._:-]
    ak_name     lower-case hex of the AK Name (nameAlg || digest)
    quote       base64 of the raw TPMS_ATTEST bytes
    signature   base64: TPMT_SIGNATURE (tpm2) or the 64-byte Ed25519 signature (soft)
    pcrs        {bank: {"<pcr index>": hex value}}, e.g. {"sha256": {"0": "..."}}
    event_log   base64 of the TCG crypto-agile event log

Unknown keys, missing keys, non-canonical encodings and oversized fields are
refused with EvidenceError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import canonical
from .errors import EvidenceError
from .eventlog import MAX_EVENT_LOG
from .tpm_structs import BANK_IDS, HASH_SIZES, MAX_ATTEST, MAX_SIGNATURE

FORMAT_VERSION = 1
MODES = ("tpm2", "soft")
MAX_EVIDENCE = 4 * MAX_EVENT_LOG // 3 + 64 * 1024
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
_FIELDS = frozenset(
    {"format", "mode", "device_id", "ak_name", "quote", "signature", "pcrs", "event_log"}
)


@dataclass(frozen=True)
class Evidence:
    mode: str
    device_id: str
    ak_name: bytes
    quote: bytes
    signature: bytes
    pcrs: dict[str, dict[int, bytes]]
    event_log: bytes
    format: int = FORMAT_VERSION


def check_device_id(value: object) -> str:
    if not isinstance(value, str) or not _DEVICE_ID.match(value):
        raise EvidenceError("device_id: expected 1-128 characters of [A-Za-z0-9._:-]")
    return value


def encode(ev: Evidence) -> bytes:
    obj = {
        "format": ev.format,
        "mode": ev.mode,
        "device_id": ev.device_id,
        "ak_name": ev.ak_name.hex(),
        "quote": canonical.b64e(ev.quote),
        "signature": canonical.b64e(ev.signature),
        "pcrs": {
            bank: {str(i): v.hex() for i, v in values.items()} for bank, values in ev.pcrs.items()
        },
        "event_log": canonical.b64e(ev.event_log),
    }
    return canonical.dumps(obj)


def decode(data: bytes) -> Evidence:
    """Parse evidence bytes strictly (canonical JSON, known fields, sizes capped)."""
    obj = canonical.loads(data, require_canonical=True, limit=MAX_EVIDENCE)
    obj = canonical.require_keys(obj, "evidence", _FIELDS)
    fmt = obj["format"]
    if type(fmt) is not int or fmt != FORMAT_VERSION:
        raise EvidenceError(f"evidence: unsupported format {fmt!r}")
    mode = obj["mode"]
    if mode not in MODES:
        raise EvidenceError(f"evidence: unknown mode {mode!r}")
    device_id = check_device_id(obj["device_id"])
    ak_name = canonical.hexd(obj["ak_name"], "ak_name", limit=66)
    quote = canonical.b64d(obj["quote"], "quote", MAX_ATTEST)
    sig = canonical.b64d(obj["signature"], "signature", MAX_SIGNATURE)
    log = canonical.b64d(obj["event_log"], "event_log", MAX_EVENT_LOG)
    raw_pcrs = obj["pcrs"]
    if not isinstance(raw_pcrs, dict) or len(raw_pcrs) > 4:
        raise EvidenceError("pcrs: expected an object of at most 4 banks")
    pcrs: dict[str, dict[int, bytes]] = {}
    for bank, values in raw_pcrs.items():
        alg = BANK_IDS.get(bank)
        if alg is None:
            raise EvidenceError(f"pcrs: unknown bank {bank!r}")
        if not isinstance(values, dict) or len(values) > 24:
            raise EvidenceError(f"pcrs.{bank}: expected an object of at most 24 PCRs")
        out: dict[int, bytes] = {}
        for key, value in values.items():
            if not key.isascii() or not key.isdigit() or str(int(key)) != key or int(key) > 23:
                raise EvidenceError(f"pcrs.{bank}: bad PCR index {key!r}")
            out[int(key)] = canonical.hexd(value, f"pcrs.{bank}.{key}", HASH_SIZES[alg])
        pcrs[bank] = out
    return Evidence(mode, device_id, ak_name, quote, sig, pcrs, log, fmt)
