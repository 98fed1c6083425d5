"""The verifier: checks evidence in exactly the order docs/attestation.md lists.

Steps (``VerificationError.step``), first failure wins:

    parse            strict parse of evidence, TPMS_ATTEST, signature, event log
    signature        mode matches the enrollment (no downgrade), AK is the enrolled,
                     activated AK, scheme is the enrolled one, signature verifies
    magic            TPM_GENERATED, type QUOTE, qualifiedSigner is the enrolled AK
    qualifying_data  nonce fresh and unused, extraData == SHA256(nonce || session)
    hash_algorithm   one bank, sha256
    pcr_selection    quoted set == required set; PCR values sent == quoted set
    pcr_digest       SHA256(quoted PCR values) == pcrDigest
    event_log        log replay reproduces every quoted PCR (plus structural checks)
    policy           signed reference for the enrolled image; firmware PCRs
    clock            safe == 1; resetCount/restartCount never go down; clock advances
    revocation       device or image not revoked

The nonce is consumed when ``verify`` is called, whatever the outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import canonical, eventlog
from .enroll import validate_record
from .errors import EvidenceError, VerificationError
from .evidence import Evidence, decode
from .nonces import NonceStore
from .policy import Policy
from .soft import SOFT_QUOTE_PREFIX, soft_event_digest
from .tpm_structs import (
    TPM_ALG_ECC,
    TPM_ALG_ECDSA,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
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
_SEPARATOR_DATA = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff")
_HASHED_DATA_TYPES = (eventlog.EV_SEPARATOR, eventlog.EV_EFI_ACTION, eventlog.EV_ACTION)
# UEFI variable events (TCG PC Client PFP): the firmware hashes the whole UEFI_VARIABLE_DATA,
# except for EV_EFI_VARIABLE_BOOT, where it hashes the variable's data only
_VARIABLE_TYPES = (eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG, eventlog.EV_EFI_VARIABLE_BOOT,
                   eventlog.EV_EFI_VARIABLE_BOOT2, eventlog.EV_EFI_VARIABLE_AUTHORITY)


def _check_variable_event(step: str, index: int, typ: int, data: bytes, digest: bytes) -> None:
    """Parse UEFI_VARIABLE_DATA strictly and check the event's sha256 digest covers it."""
    if len(data) < 32:
        raise _fail(step, f"event {index}: UEFI variable data truncated")
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    if name_len > 1024 or data_len > len(data) or 32 + 2 * name_len + data_len != len(data):
        raise _fail(step, f"event {index}: UEFI variable data lengths do not add up")
    covered = data[32 + 2 * name_len:] if typ == eventlog.EV_EFI_VARIABLE_BOOT else data
    if hashlib.sha256(covered).digest() != digest:
        raise _fail(step, f"event {index}: digest does not match its UEFI variable data")


@dataclass(frozen=True)
class VerificationResult:
    device_id: str
    image_id: str
    mode: str
    clock: ClockInfo
    pcrs: dict[int, bytes]
    record: dict[str, Any]  # the enrollment record updated with last_clock (and TOFU values)


def qualifying_data(nonce: bytes, session_id: bytes) -> bytes:
    return hashlib.sha256(nonce + session_id).digest()


def _fail(step: str, reason: str) -> VerificationError:
    return VerificationError(step, reason)


_AkKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | Ed25519PublicKey


class Verifier:
    def __init__(self, policy: Policy, nonces: NonceStore,
                 references: dict[str, dict[str, Any]] | None = None) -> None:
        self.policy = policy
        self.nonces = nonces
        self.references: dict[str, dict[str, Any]] = dict(references or {})
        self._keys: dict[tuple[str, str], tuple[_AkKey, int]] = {}

    def add_reference(self, ref: dict[str, Any]) -> None:
        """Add reference values already verified by ``reference.load_reference``."""
        self.references[ref["image_id"]] = ref

    # -- helpers -----------------------------------------------------------------
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
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[cache_key] = (key, scheme)
        return key, scheme

    # -- the verification ------------------------------------------------------------
    def verify(self, evidence: bytes, record: dict[str, Any], nonce: bytes,
               session_id: bytes) -> VerificationResult:
        nonce_problem = self.nonces.consume(nonce)
        pol = self.policy

        # 1. parse
        try:
            rec = validate_record(record)
            ev = decode(evidence)
            att = parse_attest(ev.quote)
            sig: Signature | None = None
            if ev.mode == "tpm2":
                sig = parse_signature(ev.signature)
            elif len(ev.signature) != 64:
                raise EvidenceError("soft signature must be 64 bytes")
            log = eventlog.parse(ev.event_log)
        except EvidenceError as exc:
            raise _fail("parse", str(exc)) from None

        # 2. signature with the enrolled AK
        if ev.mode != rec["mode"]:
            raise _fail("signature", f"{ev.mode} evidence for a {rec['mode']} device (downgrade)")
        if ev.device_id != rec["device_id"]:
            raise _fail("signature", "evidence is for another device")
        if rec["status"] == "pending":
            raise _fail("signature", "AK has not passed credential activation")
        if ev.ak_name.hex() != rec["ak_name"]:
            raise _fail("signature", "unknown AK (not the enrolled one)")
        try:
            key, scheme = self._ak(rec)
        except (EvidenceError, ValueError) as exc:
            raise _fail("signature", f"enrolled AK unusable: {exc}") from None
        try:
            if isinstance(key, Ed25519PublicKey):
                key.verify(ev.signature, SOFT_QUOTE_PREFIX + ev.quote)
            else:
                assert sig is not None
                if sig.sig_alg != scheme or sig.hash_alg != TPM_ALG_SHA256:
                    raise _fail(
                        "signature",
                        f"signature scheme 0x{sig.sig_alg:04x}/0x{sig.hash_alg:04x} is not the "
                        "enrolled AK's scheme with sha256",
                    )
                if isinstance(key, ec.EllipticCurvePublicKey):
                    if len(sig.r) != 32 or len(sig.s) != 32:
                        raise _fail("signature", "ECDSA r and s must be 32 bytes each")
                    der = encode_dss_signature(
                        int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big")
                    )
                    key.verify(der, ev.quote, ec.ECDSA(hashes.SHA256()))
                else:
                    if len(sig.r) != key.key_size // 8:
                        raise _fail("signature", "RSA signature has the wrong length")
                    key.verify(sig.r, ev.quote, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _fail("signature", "signature does not verify with the enrolled AK") from None

        # 3. magic and type
        if att.magic != TPM_GENERATED_VALUE:
            raise _fail("magic", f"magic 0x{att.magic:08x} is not TPM_GENERATED")
        if att.type != TPM_ST_ATTEST_QUOTE:
            raise _fail("magic", f"attestation type 0x{att.type:04x} is not a quote")
        if att.qualified_signer.hex() != rec["ak_qualified_name"]:
            raise _fail("magic", "qualifiedSigner is not the enrolled AK")

        # 4. qualifying data
        if nonce_problem is not None:
            raise _fail("qualifying_data", nonce_problem)
        if not hmac.compare_digest(att.extra_data, qualifying_data(nonce, session_id)):
            raise _fail("qualifying_data",
                        "quote is not bound to this nonce and SSH session")

        # 5. hash algorithm
        if len(att.pcr_select) != 1 or att.pcr_select[0].hash_alg != TPM_ALG_SHA256:
            raise _fail("hash_algorithm", "quote must select exactly the sha256 bank")
        if set(ev.pcrs) != {"sha256"}:
            raise _fail("hash_algorithm", "evidence PCR values must be sha256 only")

        # 6. PCR selection
        quoted = att.pcr_select[0].pcrs
        required = pol.soft_pcrs if ev.mode == "soft" else pol.tpm2_pcrs
        if set(quoted) != set(required):
            raise _fail("pcr_selection",
                        f"quoted PCRs {list(quoted)} != required {sorted(required)}")
        values = ev.pcrs["sha256"]
        if set(values) != set(quoted):
            raise _fail("pcr_selection", "PCR values sent do not match the quoted selection")

        # 7. PCR digest
        if hashlib.sha256(b"".join(values[i] for i in quoted)).digest() != att.pcr_digest:
            raise _fail("pcr_digest", "PCR values do not match the quoted digest")

        # 8. event log
        ref = self.references.get(rec["image_id"])
        self._check_log(ev, log, quoted, values, ref)

        # 9. policy
        new_fw = self._check_policy(ev, rec, log, quoted, values, ref)

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
            rec["device_id"], rec["image_id"], ev.mode, ci, dict(values), updated
        )

    # -- step helpers ------------------------------------------------------------------
    def _check_log(self, ev: Evidence, log: eventlog.EventLog, quoted: tuple[int, ...],
                   values: dict[int, bytes], ref: dict[str, Any] | None) -> None:
        step = "event_log"
        if not log.events:
            raise _fail(step, "event log has no events")
        if not any(a == TPM_ALG_SHA256 for a, _ in log.spec.algorithms):
            raise _fail(step, "event log has no sha256 digests")
        if ev.mode == "soft":
            for e in log.events:
                if e.digests[TPM_ALG_SHA256] != soft_event_digest(e.type, e.pcr, e.data):
                    raise _fail(step, f"event {e.index}: digest does not cover its data")
        else:
            seps: dict[int, int] = {}
            for e in log.events:
                d = e.digests[TPM_ALG_SHA256]
                if e.type == eventlog.EV_NO_ACTION:
                    continue
                if e.type == eventlog.EV_SEPARATOR:
                    seps[e.pcr] = seps.get(e.pcr, 0) + 1
                    if e.data not in _SEPARATOR_DATA:
                        raise _fail(step, f"event {e.index}: bad EV_SEPARATOR data")
                if e.type in _HASHED_DATA_TYPES and d != hashlib.sha256(e.data).digest():
                    raise _fail(step, f"event {e.index}: digest does not match its data")
                if e.type in _VARIABLE_TYPES:
                    _check_variable_event(step, e.index, e.type, e.data, d)
            for i in quoted:
                if i < 8 and seps.get(i, 0) != 1:
                    raise _fail(step, f"PCR {i}: expected exactly one EV_SEPARATOR")
        try:
            replayed = eventlog.replay(log, TPM_ALG_SHA256)
        except EvidenceError as exc:
            raise _fail(step, str(exc)) from None
        for i in quoted:
            if replayed[i] == values[i]:
                continue
            if i == 11 and ev.mode == "tpm2" and ref is not None and any(
                _extend_words(replayed[11], path) == values[11]
                for path in ref.get("pcr11_phases", {})
            ):
                continue
            raise _fail(step, f"replay does not reproduce PCR {i}")

    def _check_policy(self, ev: Evidence, rec: dict[str, Any], log: eventlog.EventLog,
                      quoted: tuple[int, ...], values: dict[int, bytes],
                      ref: dict[str, Any] | None) -> dict[str, str]:
        step = "policy"
        pol = self.policy
        if ref is None:
            raise _fail(step, f"no trusted reference for image {rec['image_id']!r}")
        if ev.mode == "soft":
            if not pol.allow_soft:
                raise _fail(step, "policy does not allow soft devices")
            want = {
                (4, eventlog.EV_EFI_BOOT_SERVICES_APPLICATION,
                 b"uki_sha256=" + ref["uki_sha256"].encode()),
                (11, eventlog.EV_IPL, b"cmdline=" + ref["cmdline"].encode()),
            }
            have = {(e.pcr, e.type, e.data) for e in log.events}
            for pcr, _typ, data in sorted(want - have):
                raise _fail(step, f"register {pcr}: {data[:40]!r} not measured (other image?)")
            return {}
        for k, hexval in ref["pcrs"].items():
            i = int(k)
            if i in values and values[i].hex() != hexval:
                if i == 11 and pol.accept_any_pcr11_phase and \
                        values[i].hex() in ref.get("pcr11_phases", {}).values():
                    continue
                if i == 11 and values[i].hex() in ref.get("pcr11_phases", {}).values():
                    raise _fail(step, "PCR 11 is at an earlier boot phase than the reference's "
                                      "final one (quote not from the running system)")
                raise _fail(step, f"PCR {i} differs from the reference for {rec['image_id']}")
        if 11 in values and "11" not in ref["pcrs"] and ref.get("pcr11_phases") and \
                values[11].hex() not in ref["pcr11_phases"].values():
            raise _fail(step, "PCR 11 matches no reference phase")
        auth = bytes.fromhex(ref["uki_authenticode_sha256"])
        if not any(e.pcr == 4 and e.type == eventlog.EV_EFI_BOOT_SERVICES_APPLICATION
                   and e.digests[TPM_ALG_SHA256] == auth for e in log.events):
            raise _fail(step, "PCR 4: the reference UKI was not booted")
        new_fw: dict[str, str] = {}
        enrolled = rec["firmware_pcrs"]
        for i in pol.firmware_pcrs:
            if i not in values:
                continue
            v = values[i]
            if str(i) in enrolled:
                if enrolled[str(i)] != v.hex():
                    raise _fail(step, f"firmware PCR {i} differs from the enrolled value")
            elif i in pol.firmware_allow_list:
                if v not in pol.firmware_allow_list[i]:
                    raise _fail(step, f"firmware PCR {i} is not on the allow-list")
            elif pol.trust_firmware_on_first_use:
                new_fw[str(i)] = v.hex()
            else:
                raise _fail(step, f"firmware PCR {i}: no enrolled or allowed value")
        return new_fw

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
            if ci.clock < last["clock"]:
                raise _fail(step, "clock went back within a boot")


def _extend_words(value: bytes, path: str) -> bytes:
    """Extend PCR 11 by systemd-pcrphase words (``a:b:c``): SHA256 of each word."""
    for word in path.split(":"):
        if word:
            value = hashlib.sha256(value + hashlib.sha256(word.encode()).digest()).digest()
    return value
