"""The verifier's ``event_log`` step: structural checks of one event log, and the facts the
``policy`` step reads from it. Both depend only on the log bytes, the mode and the quoted
PCR set, so ``LogCache`` computes them once per distinct log (a fleet booting one image
sends the same firmware log again and again) and every quote is still compared with the
replayed values on its own.

tpm2 logs (TCG PC Client PFP):
* every event is for a quoted PCR (an event for a PCR outside the quote could be anything);
* each event type appears only in the PCRs it belongs to (``PCRS_OF_TYPE``), so an event
  whose data is not hashed cannot be relabelled into a type the policy interprets;
* EV_NO_ACTION events carry all-zero digests; a ``StartupLocality`` one only comes before
  every PCR 0 measurement;
* events whose digest covers their data are checked against it (separators, actions, CRTM
  version, GPT, UEFI variables parsed strictly); exactly one EV_SEPARATOR in each quoted
  PCR 0-7; PCR 7 variable configuration only before PCR 7's separator;
* replay of the sha256 bank.
soft logs: every digest must be ``soft_event_digest(type, register, data)``.

The facts: the ordered PCR 4 boot applications (Authenticode digests), the SecureBoot value
and the Secure Boot variables measured into PCR 7, the certificates (sha256) of the
EV_EFI_VARIABLE_AUTHORITY events after PCR 7's separator (what verified the boot path), and
for soft logs the measurements themselves.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

from . import eventlog as el
from .errors import EvidenceError, VerificationError
from .evidence import decode_log
from .soft import soft_event_digest
from .tpm_structs import TPM_ALG_SHA256
from .uefi import EFI_GLOBAL_VARIABLE, parse_variable, signature_certificate

STEP = "event_log"
_FIRMWARE = frozenset(range(8))
_OS = frozenset(range(8, 16))
PCRS_OF_TYPE: dict[int, frozenset[int]] = {
    el.EV_POST_CODE: frozenset({0}),
    el.EV_SEPARATOR: _FIRMWARE,
    el.EV_ACTION: frozenset(range(1, 7)),
    el.EV_EVENT_TAG: _OS,
    el.EV_S_CRTM_CONTENTS: frozenset({0}),
    el.EV_S_CRTM_VERSION: frozenset({0}),
    el.EV_CPU_MICROCODE: frozenset({1}),
    el.EV_PLATFORM_CONFIG_FLAGS: frozenset({1}),
    el.EV_TABLE_OF_DEVICES: frozenset({1}),
    el.EV_COMPACT_HASH: frozenset({5, 6, 7}),
    el.EV_IPL: _OS,
    el.EV_NONHOST_CODE: frozenset({0, 2}),
    el.EV_NONHOST_CONFIG: frozenset({1, 3}),
    el.EV_NONHOST_INFO: frozenset({0, 1, 2, 3}),
    el.EV_OMIT_BOOT_DEVICE_EVENTS: frozenset({4}),
    el.EV_EFI_VARIABLE_DRIVER_CONFIG: frozenset({1, 3, 7}),
    el.EV_EFI_VARIABLE_BOOT: frozenset({1}),
    el.EV_EFI_VARIABLE_BOOT2: frozenset({1}),
    el.EV_EFI_BOOT_SERVICES_APPLICATION: frozenset({2, 4}),
    el.EV_EFI_BOOT_SERVICES_DRIVER: frozenset({0, 2}),
    el.EV_EFI_RUNTIME_SERVICES_DRIVER: frozenset({0, 2}),
    el.EV_EFI_GPT_EVENT: frozenset({5}),
    el.EV_EFI_ACTION: _FIRMWARE,
    el.EV_EFI_PLATFORM_FIRMWARE_BLOB: frozenset({0, 2}),
    el.EV_EFI_PLATFORM_FIRMWARE_BLOB2: frozenset({0, 2}),
    el.EV_EFI_HANDOFF_TABLES: frozenset({1}),
    el.EV_EFI_HANDOFF_TABLES2: frozenset({1}),
    el.EV_EFI_HCRTM_EVENT: frozenset({0}),
    el.EV_EFI_VARIABLE_AUTHORITY: frozenset({7}),
    el.EV_EFI_SPDM_FIRMWARE_BLOB: frozenset({0, 2}),
    el.EV_EFI_SPDM_FIRMWARE_CONFIG: frozenset({1, 3}),
    el.EV_EFI_SPDM_DEVICE_POLICY: frozenset({7}),
    el.EV_EFI_SPDM_DEVICE_AUTHORITY: frozenset({7}),
}
# event types whose sha256 digest is the hash of the event data itself
HASHED_DATA = frozenset({el.EV_SEPARATOR, el.EV_ACTION, el.EV_EFI_ACTION, el.EV_S_CRTM_VERSION,
                         el.EV_EFI_GPT_EVENT})
# UEFI variable events: the firmware hashes the whole UEFI_VARIABLE_DATA, except for
# EV_EFI_VARIABLE_BOOT, where it hashes the variable's data only
VARIABLE_TYPES = frozenset({el.EV_EFI_VARIABLE_DRIVER_CONFIG, el.EV_EFI_VARIABLE_BOOT,
                            el.EV_EFI_VARIABLE_BOOT2, el.EV_EFI_VARIABLE_AUTHORITY})
SEPARATOR_DATA = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff")
SECURE_BOOT_VARIABLES = frozenset({"SecureBoot", "PK", "KEK", "db", "dbx"})


@dataclass(frozen=True)
class LogFacts:
    replayed: dict[int, bytes]                  # sha256 bank, PCR 0-23
    boot_applications: tuple[bytes, ...] = ()   # PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION digests
    secure_boot: bool | None = None             # SecureBoot as measured into PCR 7
    secure_boot_variables: frozenset[str] = frozenset()   # PCR 7 variables measured
    authorities: tuple[str, ...] = ()           # after PCR 7's separator: sha256 hex of the db
    #                                             certificate, or "<name>" for other authorities
    measurements: tuple[tuple[int, int, bytes], ...] = ()  # soft: (register, type, data)


def _fail(reason: str) -> VerificationError:
    return VerificationError(STEP, reason)


def analyse(raw: bytes, mode: str, quoted: tuple[int, ...]) -> LogFacts:
    """Parse and check one event log; raise VerificationError(``event_log``) on any fault."""
    try:
        log = el.parse(raw)
    except EvidenceError as exc:
        raise _fail(str(exc)) from None
    if not log.events:
        raise _fail("event log has no events")
    if not any(a == TPM_ALG_SHA256 for a, _ in log.spec.algorithms):
        raise _fail("event log has no sha256 digests")
    quoted_set = frozenset(quoted)
    for e in log.events:
        if e.pcr not in quoted_set:
            raise _fail(f"event {e.index}: PCR {e.pcr} is not quoted")
    facts = _soft(log) if mode == "soft" else _tpm2(log, quoted_set)
    try:
        replayed = el.replay(log, TPM_ALG_SHA256)
    except EvidenceError as exc:
        raise _fail(str(exc)) from None
    return LogFacts(replayed, facts.boot_applications, facts.secure_boot,
                    facts.secure_boot_variables, facts.authorities, facts.measurements)


def _soft(log: el.EventLog) -> LogFacts:
    for e in log.events:
        if e.digests[TPM_ALG_SHA256] != soft_event_digest(e.type, e.pcr, e.data):
            raise _fail(f"event {e.index}: digest does not cover its data")
    return LogFacts({}, measurements=tuple((e.pcr, e.type, e.data) for e in log.events))


def _check_variable(e: el.Event) -> tuple[str, bytes, bytes]:
    """(name, GUID, value) of a UEFI variable event whose digest covers it."""
    try:
        var = parse_variable(e.data)
    except EvidenceError as exc:
        raise _fail(f"event {e.index}: {exc}") from None
    covered = var.data if e.type == el.EV_EFI_VARIABLE_BOOT else e.data
    if hashlib.sha256(covered).digest() != e.digests[TPM_ALG_SHA256]:
        raise _fail(f"event {e.index}: digest does not match its UEFI variable data")
    return var.name, var.guid, var.data


def _tpm2(log: el.EventLog, quoted: frozenset[int]) -> LogFacts:
    separators: Counter[int] = Counter()
    pcr0_measured = startup_locality = False
    secure_boot: bool | None = None
    variables: set[str] = set()
    authorities: list[str] = []
    apps: list[bytes] = []
    for e in log.events:
        d = e.digests[TPM_ALG_SHA256]
        if e.type == el.EV_NO_ACTION:
            if any(any(x) for x in e.digests.values()):
                raise _fail(f"event {e.index}: EV_NO_ACTION with a non-zero digest")
            if el.is_startup_locality(e):
                if pcr0_measured or startup_locality:
                    raise _fail(f"event {e.index}: StartupLocality is not the first PCR 0 event")
                startup_locality = True
            continue
        allowed = PCRS_OF_TYPE.get(e.type)
        if allowed is None:
            raise _fail(f"event {e.index}: event type 0x{e.type:08x} is not allowed")
        if e.pcr not in allowed:
            raise _fail(f"event {e.index}: event type 0x{e.type:08x} may not appear in PCR "
                        f"{e.pcr}")
        pcr0_measured = pcr0_measured or e.pcr == 0
        if e.type == el.EV_SEPARATOR:
            separators[e.pcr] += 1
            if e.data not in SEPARATOR_DATA:
                raise _fail(f"event {e.index}: bad EV_SEPARATOR data")
        if e.type in HASHED_DATA and d != hashlib.sha256(e.data).digest():
            raise _fail(f"event {e.index}: digest does not match its data")
        if e.type in VARIABLE_TYPES:
            name, guid, value = _check_variable(e)
            if e.pcr == 7 and e.type == el.EV_EFI_VARIABLE_DRIVER_CONFIG:
                if separators[7]:
                    raise _fail(f"event {e.index}: Secure Boot configuration measured after "
                                "PCR 7's separator")
                if name in variables and name in SECURE_BOOT_VARIABLES:
                    raise _fail(f"event {e.index}: {name} measured twice")
                variables.add(name)
                if name == "SecureBoot":
                    if guid != EFI_GLOBAL_VARIABLE or len(value) != 1:
                        raise _fail(f"event {e.index}: malformed SecureBoot variable")
                    secure_boot = value == b"\x01"
            elif e.type == el.EV_EFI_VARIABLE_AUTHORITY and separators[7]:
                cert = signature_certificate(parse_variable(e.data))
                authorities.append(hashlib.sha256(cert).hexdigest() if cert else name)
        if e.pcr == 4 and e.type == el.EV_EFI_BOOT_SERVICES_APPLICATION:
            apps.append(d)
    for i in sorted(quoted & _FIRMWARE):
        if separators[i] != 1:
            raise _fail(f"PCR {i}: expected exactly one EV_SEPARATOR")
    return LogFacts({}, tuple(apps), secure_boot,
                    frozenset(variables & SECURE_BOOT_VARIABLES), tuple(authorities))


class LogCache:
    """LRU of ``analyse`` results (facts or the refusal) keyed by the log's sha256, the mode
    and the quoted PCR set. Thread safe. Only logs of quotes whose signature verified reach
    it, so junk cannot fill it."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[bytes, str, tuple[int, ...]],
                                   LogFacts | str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def facts(self, log_base64: str, mode: str, quoted: tuple[int, ...]) -> LogFacts:
        """The facts of the log given as its base64 text (as evidence carries it): keyed by
        the text's digest, so a hit costs no base64 decoding either."""
        key = (hashlib.sha256(log_base64.encode("ascii")).digest(), mode, tuple(quoted))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
        if hit is None:
            self.misses += 1
            try:
                hit = analyse(decode_log(log_base64), mode, quoted)
            except EvidenceError as exc:
                hit = str(exc)
            except VerificationError as exc:
                hit = exc.reason
            with self._lock:
                self._entries[key] = hit
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        if isinstance(hit, str):
            raise _fail(hit)
        return hit
