"""The verifier: checks evidence cheapest first (docs/attestation.md); the first failure is
the refusal.

``Verifier(policy, nonces, references).verify(evidence, record, nonce, session_id)``
returns a ``VerificationResult`` or raises ``VerificationError(step, reason)``; for any
input at all it raises nothing else. Steps (``VerificationError.step``), in order:

    parse            size limits (evidence and nesting), strict canonical JSON, the
                     TPMS_ATTEST and TPMT_SIGNATURE structures (the event log is NOT
                     parsed yet: junk costs microseconds), the enrollment record
    signature        mode matches the enrollment (no downgrade), device and AK are the
                     enrolled, activated ones, scheme is the enrolled one, signature
                     verifies
    magic            TPM_GENERATED, type QUOTE, qualifiedSigner is the enrolled AK
    qualifying_data  the nonce is used up (``nonces.consume``: fresh, unused, right
                     length), then extraData == SHA256(nonce || session_id)
    hash_algorithm   one bank, sha256
    pcr_selection    quoted set == required set; PCR values sent == quoted set
    pcr_digest       SHA256(quoted PCR values) == pcrDigest
    event_log        only now the log is parsed and checked (``attestation.logcheck``),
                     and its replay must reproduce every quoted PCR
    policy           signed reference for the enrolled image: boot path, UKI, nothing
                     passed in, Secure Boot, firmware PCRs (``attestation.boot_policy``)
    clock            safe == 1; resetCount/restartCount never go down; within a boot the
                     clock strictly advances (the same clock twice is a replay)
    revocation       device or image not revoked

The nonce is consumed at the ``qualifying_data`` step, so evidence refused earlier (junk,
a bad signature) costs no nonce-store round trip; the gateway ends the connection on any
refusal and that nonce then expires unused. ``nonces`` is anything with
``consume(nonce: bytes) -> str | None`` (``attestation.nonces.NonceConsumer``), e.g. the
gateway's database-backed store.

What repeats is cached, without skipping a check: the enrolled AK's public key per
(mode, ak_public), and the event-log analysis per log digest (``logcheck.LogCache``);
every quote still has its signature, nonce, digest and replayed values checked.

For enrollment, ``booted_uki(evidence)`` says cheaply which UKI the evidence claims to
boot: ("tpm2", Authenticode sha256 of the first PCR 4 boot application) or ("soft",
the measured ``uki_sha256=``); ``reference.image_for_boot`` maps it to a registered image,
and the full ``verify`` against that image decides.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import boot_policy, canonical, eventlog
from .enroll import validate_record
from .errors import EvidenceError, VerificationError
from .evidence import Evidence, decode, decode_deferred
from .logcheck import LogCache, LogFacts
from .nonces import NonceConsumer
from .policy import Policy
from .soft import SOFT_QUOTE_PREFIX
from .tpm_structs import (
    TPM_ALG_ECC,
    TPM_ALG_ECDSA,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    Attest,
    ClockInfo,
    Signature,
    parse_attest,
    parse_signature,
    parse_tpm2b_public,
)

STEPS = (
    "parse", "signature", "magic", "qualifying_data", "hash_algorithm", "pcr_selection",
    "pcr_digest", "event_log", "policy", "clock", "revocation",
)
_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class VerificationResult:
    device_id: str
    image_id: str
    mode: str
    clock: ClockInfo
    pcrs: dict[int, bytes]
    record: dict[str, Any]  # the enrollment record updated with last_clock (and TOFU values)
    secure_boot: bool | None = None   # tpm2: Secure Boot as measured into PCR 7


def qualifying_data(nonce: bytes, session_id: bytes) -> bytes:
    return hashlib.sha256(nonce + session_id).digest()


def _fail(step: str, reason: str) -> VerificationError:
    return VerificationError(step, reason)


def booted_uki(evidence: bytes) -> tuple[str, str]:
    """(mode, what the evidence's log says booted): tpm2, the hex Authenticode sha256 of
    the first PCR 4 boot application; soft, the ``uki_sha256=`` value measured. Strict
    parsing; raises EvidenceError. Nothing here is trusted: it only picks the reference the
    full verification then runs against."""
    ev = decode(evidence)
    log = eventlog.parse(ev.event_log)
    for e in log.events:
        if e.pcr != 4 or e.type != eventlog.EV_EFI_BOOT_SERVICES_APPLICATION:
            continue
        if ev.mode == "tpm2":
            return ev.mode, e.digests[TPM_ALG_SHA256].hex() \
                if TPM_ALG_SHA256 in e.digests else ""
        if e.data.startswith(b"uki_sha256="):
            return ev.mode, e.data[len(b"uki_sha256="):].decode("ascii", "replace")
    raise EvidenceError("the event log names no boot application in PCR 4")


_AkKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | Ed25519PublicKey


class Verifier:
    def __init__(self, policy: Policy, nonces: NonceConsumer,
                 references: dict[str, dict[str, Any]] | None = None) -> None:
        self.policy = policy
        self.nonces = nonces
        self.references: dict[str, dict[str, Any]] = dict(references or {})
        self.logs = LogCache()
        self._keys: dict[tuple[str, str], tuple[_AkKey, int]] = {}
        self._lock = threading.Lock()

    def add_reference(self, ref: dict[str, Any]) -> None:
        """Add reference values already verified by ``reference.load_reference``."""
        self.references[ref["image_id"]] = ref

    # -- cached helpers ---------------------------------------------------------------
    def _ak(self, rec: dict[str, Any]) -> tuple[_AkKey, int]:
        cache_key = (rec["mode"], rec["ak_public"])
        hit = self._keys.get(cache_key)
        if hit is not None:
            return hit
        raw = canonical.b64d(rec["ak_public"], "ak_public", 2048)
        key: _AkKey
        if rec["mode"] == "soft":
            key, scheme = Ed25519PublicKey.from_public_bytes(raw), 0
        else:
            pub = parse_tpm2b_public(raw)
            if pub.name.hex() != rec["ak_name"]:
                raise EvidenceError("enrolled ak_public does not match ak_name")
            if pub.type == TPM_ALG_ECC:
                key = ec.EllipticCurvePublicNumbers(
                    int.from_bytes(pub.ecc_x, "big"), int.from_bytes(pub.ecc_y, "big"),
                    ec.SECP256R1(),
                ).public_key()
                scheme = TPM_ALG_ECDSA
            else:
                key = rsa.RSAPublicNumbers(
                    pub.rsa_exponent or 65537, int.from_bytes(pub.rsa_modulus, "big")
                ).public_key()
                scheme = TPM_ALG_RSASSA
        with self._lock:
            if len(self._keys) > _CACHE_SIZE:
                self._keys.clear()
            self._keys[cache_key] = (key, scheme)
        return key, scheme

    # -- the verification ------------------------------------------------------------
    def verify(self, evidence: bytes, record: dict[str, Any], nonce: bytes,
               session_id: bytes) -> VerificationResult:
        pol = self.policy
        # 1. parse: sizes, JSON, quote and signature structures (not the event log)
        try:
            if not isinstance(nonce, bytes | bytearray) or \
                    not isinstance(session_id, bytes | bytearray):
                raise EvidenceError("nonce and session id must be bytes")
            rec = validate_record(record)
            ev, log_text = decode_deferred(evidence)
            att = parse_attest(ev.quote)
            sig: Signature | None = None
            if ev.mode == "tpm2":
                sig = parse_signature(ev.signature)
            elif len(ev.signature) != 64:
                raise EvidenceError("soft signature must be 64 bytes")
        except EvidenceError as exc:
            raise _fail("parse", str(exc)) from None

        # 2. signature with the enrolled AK
        self._check_signature(ev, rec, sig)

        # 3. magic and type
        if att.magic != TPM_GENERATED_VALUE:
            raise _fail("magic", f"magic 0x{att.magic:08x} is not TPM_GENERATED")
        if att.type != TPM_ST_ATTEST_QUOTE:
            raise _fail("magic", f"attestation type 0x{att.type:04x} is not a quote")
        if att.qualified_signer.hex() != rec["ak_qualified_name"]:
            raise _fail("magic", "qualifiedSigner is not the enrolled AK")

        # 4. nonce, then qualifying data
        nonce_problem = self.nonces.consume(bytes(nonce))
        if nonce_problem is not None:
            raise _fail("qualifying_data", nonce_problem)
        if not hmac.compare_digest(att.extra_data, qualifying_data(nonce, session_id)):
            raise _fail("qualifying_data",
                        "quote is not bound to this nonce and SSH session")

        # 5.-7. hash algorithm, PCR selection, PCR digest
        quoted, values = self._check_pcrs(ev, att)

        # 8. event log (parsed only now; cached per distinct log)
        ref = self.references.get(rec["image_id"])
        facts = self.logs.facts(log_text, ev.mode, quoted)
        self._check_replay(ev.mode, facts, quoted, values, ref)

        # 9. policy
        new_fw = boot_policy.check(ev.mode, rec, facts, values, ref, pol)

        # 10. clock
        ci = att.clock_info
        self._check_clock(ci, rec["last_clock"])

        # 11. revocation
        if rec["status"] == "revoked" or rec["device_id"] in pol.revoked_devices:
            raise _fail("revocation", f"device {rec['device_id']} is revoked")
        if rec["image_id"] in pol.revoked_images:
            raise _fail("revocation", f"image {rec['image_id']} is revoked")

        updated = dict(rec)
        updated["last_clock"] = {
            "clock": ci.clock, "reset_count": ci.reset_count, "restart_count": ci.restart_count,
        }
        if new_fw:
            updated["firmware_pcrs"] = {**rec["firmware_pcrs"], **new_fw}
        return VerificationResult(
            rec["device_id"], rec["image_id"], ev.mode, ci, dict(values), updated,
            facts.secure_boot if ev.mode == "tpm2" else None,
        )

    # -- step helpers ------------------------------------------------------------------
    def _check_signature(self, ev: Evidence, rec: dict[str, Any], sig: Signature | None) -> None:
        step = "signature"
        if ev.mode != rec["mode"]:
            raise _fail(step, f"{ev.mode} evidence for a {rec['mode']} device (downgrade)")
        if ev.device_id != rec["device_id"]:
            raise _fail(step, "evidence is for another device")
        if rec["status"] == "pending":
            raise _fail(step, "AK has not passed credential activation")
        if ev.ak_name.hex() != rec["ak_name"]:
            raise _fail(step, "unknown AK (not the enrolled one)")
        try:
            key, scheme = self._ak(rec)
        except (EvidenceError, ValueError) as exc:
            raise _fail(step, f"enrolled AK unusable: {exc}") from None
        try:
            if isinstance(key, Ed25519PublicKey):
                key.verify(ev.signature, SOFT_QUOTE_PREFIX + ev.quote)
                return
            assert sig is not None
            if sig.sig_alg != scheme or sig.hash_alg != TPM_ALG_SHA256:
                raise _fail(step, f"signature scheme 0x{sig.sig_alg:04x}/0x{sig.hash_alg:04x} "
                                  "is not the enrolled AK's scheme with sha256")
            if isinstance(key, ec.EllipticCurvePublicKey):
                if len(sig.r) != 32 or len(sig.s) != 32:
                    raise _fail(step, "ECDSA r and s must be 32 bytes each")
                der = encode_dss_signature(int.from_bytes(sig.r, "big"),
                                           int.from_bytes(sig.s, "big"))
                key.verify(der, ev.quote, ec.ECDSA(hashes.SHA256()))
            else:
                if len(sig.r) != key.key_size // 8:
                    raise _fail(step, "RSA signature has the wrong length")
                key.verify(sig.r, ev.quote, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _fail(step, "signature does not verify with the enrolled AK") from None

    def _check_pcrs(self, ev: Evidence, att: Attest) -> tuple[tuple[int, ...], dict[int, bytes]]:
        if len(att.pcr_select) != 1 or att.pcr_select[0].hash_alg != TPM_ALG_SHA256:
            raise _fail("hash_algorithm", "quote must select exactly the sha256 bank")
        if set(ev.pcrs) != {"sha256"}:
            raise _fail("hash_algorithm", "evidence PCR values must be sha256 only")
        quoted = att.pcr_select[0].pcrs
        required = self.policy.soft_pcrs if ev.mode == "soft" else self.policy.tpm2_pcrs
        if set(quoted) != set(required):
            raise _fail("pcr_selection",
                        f"quoted PCRs {list(quoted)} != required {sorted(required)}")
        values = ev.pcrs["sha256"]
        if set(values) != set(quoted):
            raise _fail("pcr_selection", "PCR values sent do not match the quoted selection")
        if hashlib.sha256(b"".join(values[i] for i in quoted)).digest() != att.pcr_digest:
            raise _fail("pcr_digest", "PCR values do not match the quoted digest")
        return quoted, values

    @staticmethod
    def _check_replay(mode: str, facts: LogFacts, quoted: tuple[int, ...],
                      values: dict[int, bytes], ref: dict[str, Any] | None) -> None:
        for i in quoted:
            if facts.replayed[i] == values[i]:
                continue
            # systemd-pcrphase extends PCR 11 from userspace (not in the firmware log)
            if i == 11 and mode == "tpm2" and ref is not None and any(
                _extend_words(facts.replayed[11], path) == values[11]
                for path in ref.get("pcr11_phases", {})
            ):
                continue
            raise _fail("event_log", f"replay does not reproduce PCR {i}")

    @staticmethod
    def _check_clock(ci: ClockInfo, last: dict[str, int] | None) -> None:
        step = "clock"
        if ci.safe != 1:
            raise _fail(step, "clock info is not safe (safe = 0)")
        if last is None:
            return
        if ci.reset_count < last["reset_count"]:
            raise _fail(step, "resetCount went down")
        if ci.reset_count == last["reset_count"]:
            if ci.restart_count < last["restart_count"]:
                raise _fail(step, "restartCount went down")
            if ci.restart_count == last["restart_count"] and ci.clock <= last["clock"]:
                raise _fail(step, "clock did not advance within a boot (replayed quote?)")


def _extend_words(value: bytes, path: str) -> bytes:
    """Extend PCR 11 by systemd-pcrphase words (``a:b:c``): SHA256 of each word."""
    for word in path.split(":"):
        if word:
            value = hashlib.sha256(value + hashlib.sha256(word.encode()).digest()).digest()
    return value
