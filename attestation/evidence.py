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


_PCR_INDEX = {str(i): i for i in range(24)}


def _pcr_values(bank: str, values: dict[str, object], size: int) -> dict[int, bytes]:
    """{"<index>": hex} -> {index: bytes}; all values checked as one hex string (fast)."""
    for key in values:
        if key not in _PCR_INDEX:
            raise EvidenceError(f"pcrs.{bank}: bad PCR index {key!r}")
    texts = list(values.values())
    if all(type(t) is str and len(t) == 2 * size for t in texts):
        raw = canonical.hexd("".join(texts), f"pcrs.{bank}", limit=24 * size)  # type: ignore[arg-type]
        return {_PCR_INDEX[k]: raw[size * i:size * (i + 1)] for i, k in enumerate(values)}
    return {_PCR_INDEX[k]: canonical.hexd(v, f"pcrs.{bank}.{k}", size) for k, v in values.items()}


def decode(data: bytes) -> Evidence:
    """Parse evidence bytes strictly (canonical JSON, known fields, sizes capped)."""
    ev, log_text = decode_deferred(data)
    return Evidence(ev.mode, ev.device_id, ev.ak_name, ev.quote, ev.signature, ev.pcrs,
                    decode_log(log_text), ev.format)


def decode_log(text: str) -> bytes:
    """The event log from its base64 text (strict, canonical base64, size capped)."""
    return canonical.b64d(text, "event_log", MAX_EVENT_LOG)


def decode_deferred(data: bytes) -> tuple[Evidence, str]:
    """``decode`` except the event log: (evidence with ``event_log`` empty, the log's base64
    text). The text is checked for size and alphabet only; ``decode_log`` decodes it when
    (and if) the verifier gets that far, so junk never pays for it."""
    obj = canonical.loads_canonical(data, limit=MAX_EVIDENCE, verbatim="event_log")
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
    log_text = obj["event_log"]
    if not isinstance(log_text, str) or len(log_text) > (MAX_EVENT_LOG + 2) // 3 * 4:
        raise EvidenceError("event_log: expected a base64 string of at most "
                            f"{MAX_EVENT_LOG} bytes")
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
        pcrs[bank] = _pcr_values(bank, values, HASH_SIZES[alg])
    return Evidence(mode, device_id, ak_name, quote, sig, pcrs, b"", fmt), log_text
