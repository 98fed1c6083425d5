"""Strict parser and replayer for the TCG PC Client crypto-agile event log.

Layout (TCG PC Client Platform Firmware Profile, section 10): a first event in the
SHA1 TCG_PCClientPCREvent format carrying the ``Spec ID Event03`` structure (the
algorithms and digest sizes used by every later event), then TCG_PCR_EVENT2
records. Integers are little-endian. Each TCG_PCR_EVENT2 must carry exactly one
digest for every algorithm of the Spec ID event. No trailing bytes are allowed.

``replay`` extends PCR values per bank: EV_NO_ACTION events are not extended, and
a ``StartupLocality`` EV_NO_ACTION event sets the initial value of PCR 0 only when it
comes before every PCR 0 measurement (anywhere else it is ignored here and refused by
the verifier's event-log checks, ``attestation.logcheck``).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .errors import EvidenceError
from .tpm_structs import HASH_NAMES, HASH_SIZES, TPM_ALG_SHA1

EV_PREBOOT_CERT = 0x0
EV_POST_CODE = 0x1
EV_NO_ACTION = 0x3
EV_SEPARATOR = 0x4
EV_ACTION = 0x5
EV_EVENT_TAG = 0x6
EV_S_CRTM_CONTENTS = 0x7
EV_S_CRTM_VERSION = 0x8
EV_CPU_MICROCODE = 0x9
EV_PLATFORM_CONFIG_FLAGS = 0xA
EV_TABLE_OF_DEVICES = 0xB
EV_COMPACT_HASH = 0xC
EV_IPL = 0xD
EV_IPL_PARTITION_DATA = 0xE
EV_NONHOST_CODE = 0xF
EV_NONHOST_CONFIG = 0x10
EV_NONHOST_INFO = 0x11
EV_OMIT_BOOT_DEVICE_EVENTS = 0x12
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
MAX_EVENT_LOG = 2 * 1024 * 1024
MAX_EVENTS = 20000
MAX_EVENT_DATA = 1024 * 1024
MAX_ALGORITHMS = 8
NUM_PCRS = 24


@dataclass(frozen=True)
class SpecIdEvent:
    platform_class: int
    spec_version: tuple[int, int, int]
    uintn_size: int
    algorithms: tuple[tuple[int, int], ...]  # (algorithmId, digestSize)
    vendor_info: bytes


@dataclass(frozen=True)
class Event:
    """One TCG_PCR_EVENT2. ``digests`` maps TPM_ALG_ID to digest bytes."""

    index: int  # position in the log, 0 = first TCG_PCR_EVENT2
    pcr: int
    type: int
    digests: dict[int, bytes]
    data: bytes


@dataclass(frozen=True)
class EventLog:
    spec: SpecIdEvent
    events: tuple[Event, ...]


def _parse_spec_id(data: bytes) -> SpecIdEvent:
    what = "event log Spec ID event"
    if len(data) < 16 + 4 + 4 + 4 or data[:16] != SPEC_ID_SIGNATURE:
        raise EvidenceError(f"{what}: not a crypto-agile (Spec ID Event03) log")
    pos = 16
    platform_class, minor, major, errata, uintn, count = struct.unpack_from("<IBBBBI", data, pos)
    pos += 12
    if uintn not in (1, 2):
        raise EvidenceError(f"{what}: bad uintnSize {uintn}")
    if count < 1 or count > MAX_ALGORITHMS:
        raise EvidenceError(f"{what}: bad numberOfAlgorithms {count}")
    if len(data) < pos + 4 * count + 1:
        raise EvidenceError(f"{what}: truncated")
    algs: list[tuple[int, int]] = []
    for _ in range(count):
        alg, size = struct.unpack_from("<HH", data, pos)
        pos += 4
        if alg not in HASH_SIZES or HASH_SIZES[alg] != size:
            raise EvidenceError(f"{what}: unsupported algorithm 0x{alg:04x}/{size}")
        if any(a == alg for a, _ in algs):
            raise EvidenceError(f"{what}: algorithm 0x{alg:04x} listed twice")
        algs.append((alg, size))
    vendor_size = data[pos]
    pos += 1
    if len(data) != pos + vendor_size:
        raise EvidenceError(f"{what}: vendorInfoSize does not match the event size")
    return SpecIdEvent(platform_class, (major, minor, errata), uintn, tuple(algs), data[pos:])


def parse(data: bytes) -> EventLog:
    """Parse a crypto-agile event log; raise EvidenceError on any malformation."""
    if not isinstance(data, bytes | bytearray):
        raise EvidenceError("event log: expected bytes")
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise EvidenceError("event log: empty")
    if n > MAX_EVENT_LOG:
        raise EvidenceError(f"event log: {n} bytes exceeds {MAX_EVENT_LOG}")
    # first event: TCG_PCClientPCREvent with a SHA1-sized digest
    if n < 32:
        raise EvidenceError("event log: truncated first event")
    pcr, typ = struct.unpack_from("<II", data, 0)
    (size,) = struct.unpack_from("<I", data, 28)
    if pcr != 0 or typ != EV_NO_ACTION or data[8:28] != b"\x00" * 20:
        raise EvidenceError("event log: first event is not the Spec ID EV_NO_ACTION event")
    if size > MAX_EVENT_DATA or 32 + size > n:
        raise EvidenceError("event log: Spec ID event size out of range")
    spec = _parse_spec_id(data[32 : 32 + size])
    pos = 32 + size
    algs = spec.algorithms
    nalg = len(algs)
    events: list[Event] = []
    unpack = struct.unpack_from
    while pos < n:
        if len(events) >= MAX_EVENTS:
            raise EvidenceError(f"event log: more than {MAX_EVENTS} events")
        if pos + 12 > n:
            raise EvidenceError(f"event log: truncated event header at offset {pos}")
        pcr, typ, count = unpack("<III", data, pos)
        pos += 12
        if pcr >= NUM_PCRS:
            raise EvidenceError(f"event log: PCR index {pcr} out of range at event {len(events)}")
        if count != nalg:
            raise EvidenceError(
                f"event log: event {len(events)} has {count} digests, Spec ID lists {nalg}"
            )
        digests: dict[int, bytes] = {}
        for _ in range(count):
            if pos + 2 > n:
                raise EvidenceError("event log: truncated digest")
            (alg,) = unpack("<H", data, pos)
            pos += 2
            dsize = HASH_SIZES.get(alg)
            if dsize is None or alg in digests or not any(a == alg for a, _ in algs):
                raise EvidenceError(
                    f"event log: unexpected digest algorithm 0x{alg:04x} at event {len(events)}"
                )
            if pos + dsize > n:
                raise EvidenceError("event log: truncated digest")
            digests[alg] = data[pos : pos + dsize]
            pos += dsize
        if pos + 4 > n:
            raise EvidenceError("event log: truncated event size")
        (esize,) = unpack("<I", data, pos)
        pos += 4
        if esize > MAX_EVENT_DATA or pos + esize > n:
            raise EvidenceError(f"event log: event {len(events)} data size {esize} out of range")
        events.append(Event(len(events), pcr, typ, digests, data[pos : pos + esize]))
        pos += esize
    return EventLog(spec, tuple(events))


def is_startup_locality(ev: Event) -> bool:
    """A ``StartupLocality`` EV_NO_ACTION event (PCR 0's initial value is its locality)."""
    return (ev.type == EV_NO_ACTION and ev.pcr == 0 and len(ev.data) == 17
            and ev.data[:16] == STARTUP_LOCALITY_SIGNATURE)


def replay(log: EventLog, hash_alg: int) -> dict[int, bytes]:
    """Replay the log for one bank; returns PCR index -> value for PCRs 0..23."""
    name = HASH_NAMES.get(hash_alg)
    if name is None or not any(a == hash_alg for a, _ in log.spec.algorithms):
        raise EvidenceError(f"event log: no digests for bank 0x{hash_alg:04x}")
    size = HASH_SIZES[hash_alg]
    pcrs = {i: b"\x00" * size for i in range(NUM_PCRS)}
    pcr0_extended = False
    for ev in log.events:
        if ev.type == EV_NO_ACTION:
            if is_startup_locality(ev) and not pcr0_extended:
                pcrs[0] = b"\x00" * (size - 1) + ev.data[16:17]
            continue
        pcr0_extended = pcr0_extended or ev.pcr == 0
        h = hashlib.new(name, pcrs[ev.pcr])
        h.update(ev.digests[hash_alg])
        pcrs[ev.pcr] = h.digest()
    return pcrs


# ------------------------------------------------------------------- encoding


def encode_spec_id(algorithms: tuple[tuple[int, int], ...], vendor_info: bytes = b"") -> bytes:
    body = (
        SPEC_ID_SIGNATURE
        + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algorithms))
        + b"".join(struct.pack("<HH", a, s) for a, s in algorithms)
        + struct.pack("<B", len(vendor_info))
        + vendor_info
    )
    return struct.pack("<II", 0, EV_NO_ACTION) + b"\x00" * 20 + struct.pack("<I", len(body)) + body


def encode_event(pcr: int, typ: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    return (
        struct.pack("<III", pcr, typ, len(digests))
        + b"".join(struct.pack("<H", a) + d for a, d in digests)
        + struct.pack("<I", len(data))
        + data
    )


def encode(log: EventLog) -> bytes:
    out = [encode_spec_id(log.spec.algorithms, log.spec.vendor_info)]
    for ev in log.events:
        out.append(encode_event(ev.pcr, ev.type, list(ev.digests.items()), ev.data))
    return b"".join(out)


__all__ = [
    "TPM_ALG_SHA1",
    "Event",
    "EventLog",
    "SpecIdEvent",
    "encode",
    "encode_event",
    "encode_spec_id",
    "is_startup_locality",
    "parse",
    "replay",
]
