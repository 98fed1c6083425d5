"""Enrollment: the gateway side (pure Python) and the request format.

Enrollment record (a JSON dict; ``validate_record`` checks it strictly):

    format             1
    device_id          device id (tpm2: ``tpm-`` + SHA256(EK TPMT_PUBLIC)[:16] hex)
    mode               "tpm2" | "soft" (fixed for life: no downgrade)
    ek_hash            hex SHA256 of the EK TPMT_PUBLIC (tpm2), null (soft)
    ak_public          base64: AK TPM2B_PUBLIC (tpm2) or raw Ed25519 key (soft)
    ak_name            hex AK Name
    ak_qualified_name  hex qualified name the TPM puts in quotes (soft: the name)
    image_id           image id the device was enrolled with
    status             "pending" (credential not yet activated) | "active" | "revoked"
    last_clock         null or {"clock": int, "reset_count": int, "restart_count": int}
    firmware_pcrs      {"<pcr>": hex} sha256 firmware PCRs accepted for this device
    challenge_sha256   hex SHA256 of the credential secret while pending, else null
    ek_cert            "checked" (EK certificate verified against the CA bundle),
                       "allowed-without" (admin allowed EKs without a checked certificate),
                       "none" (soft)

tpm2 flow: ``begin_enrollment`` checks the AK attributes, the EK (RSA-2048, exponent
65537, odd 2048-bit modulus) and its certificate (``attestation.ekcert``), and runs
MakeCredential against the EK -> the agent runs ``auditbox-attest activate`` ->
``finish_enrollment`` compares the returned secret. soft flow: a one-time token from
``TokenStore`` and a policy that allows soft devices; the record is active at once.

For the gateway: ``EnrollmentPolicy(allow_soft, ek_ca_bundle, allow_ek_without_cert)``
carries the EK certificate settings (``ekcert.load_ca_bundle(path)`` reads a PEM bundle);
the outcome is ``record["ek_cert"]``. The image is decided from the evidence, not from
the terminal's word: begin with a placeholder image id, find the image the evidence boots
(``attestation.verifier.booted_uki`` + ``reference.image_for_boot``), then
``assign_image(record, image_id)`` and verify the evidence against that record.
Every refusal is an ``EnrollmentError``; no other exception leaves these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from . import canonical, ekcert
from .credential import credential_file, ek_public_key, make_credential
from .errors import EnrollmentError, EvidenceError
from .evidence import check_device_id
from .soft import soft_ak_name, soft_device_id
from .tpm2 import tpm_device_id
from .tpm_structs import (
    DECRYPT,
    FIXED_PARENT,
    FIXED_TPM,
    RESTRICTED,
    SENSITIVE_DATA_ORIGIN,
    SIGN_ENCRYPT,
    TPM_ALG_ECC,
    TPM_ALG_ECDSA,
    TPM_ALG_NULL,
    TPM_ALG_RSA,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_ECC_NIST_P256,
    Public,
    parse_tpm2b_public,
)

TPM_RH_ENDORSEMENT = 0x4000000B
REQUIRED_AK_ATTRIBUTES = (
    FIXED_TPM | FIXED_PARENT | RESTRICTED | SIGN_ENCRYPT | SENSITIVE_DATA_ORIGIN
)
RECORD_FIELDS = frozenset({
    "format", "device_id", "mode", "ek_hash", "ak_public", "ak_name", "ak_qualified_name",
    "image_id", "status", "last_clock", "firmware_pcrs", "challenge_sha256", "ek_cert",
})
STATUSES = ("pending", "active", "revoked")
_PCR_KEYS = frozenset(str(i) for i in range(24))
EK_CERT_STATES = (ekcert.CHECKED, ekcert.ALLOWED_WITHOUT, ekcert.NONE)


@dataclass(frozen=True)
class EnrollmentPolicy:
    """allow_soft: accept soft devices (with a token). ek_ca_bundle: the CA certificates
    tpm2 EK certificates must chain to (directly). allow_ek_without_cert: enroll a tpm2
    device whose TPM has no EK certificate, or when no bundle is configured (recorded as
    ``allowed-without``); a certificate that is present and fails is still refused."""

    allow_soft: bool = False
    ek_ca_bundle: tuple[x509.Certificate, ...] = ()
    allow_ek_without_cert: bool = False


def qualified_name(parent_qn: bytes, name: bytes) -> bytes:
    """QN(child) = nameAlg || H(QN(parent) || Name(child)) for sha256 names."""
    return struct.pack(">H", TPM_ALG_SHA256) + hashlib.sha256(parent_qn + name).digest()


def ak_qualified_name(ek: Public, ak: Public) -> bytes:
    """Qualified name of an AK whose parent is the EK (itself under the endorsement hierarchy)."""
    ek_qn = qualified_name(struct.pack(">I", TPM_RH_ENDORSEMENT), ek.name)
    return qualified_name(ek_qn, ak.name)


def check_ak(ak: Public) -> None:
    """Refuse any AK that is not a restricted, TPM-bound sha256 signing key."""
    if not ak.has(REQUIRED_AK_ATTRIBUTES):
        raise EnrollmentError(
            "AK lacks required attributes (fixedTPM, fixedParent, restricted, sign, "
            f"sensitiveDataOrigin): 0x{ak.attributes:08x}"
        )
    if ak.attributes & DECRYPT:
        raise EnrollmentError("AK must not be a decryption key")
    if ak.name_alg != TPM_ALG_SHA256:
        raise EnrollmentError("AK nameAlg must be sha256")
    if ak.sym_alg != TPM_ALG_NULL:
        raise EnrollmentError("AK must not have a symmetric algorithm")
    if ak.type == TPM_ALG_ECC:
        if ak.curve != TPM_ECC_NIST_P256 or (ak.scheme, ak.scheme_hash) != (
            TPM_ALG_ECDSA, TPM_ALG_SHA256
        ):
            raise EnrollmentError("ECC AK must be NIST P-256 with ECDSA/sha256")
        if len(ak.ecc_x) != 32 or len(ak.ecc_y) != 32:
            raise EnrollmentError("ECC AK point must be 32+32 bytes")
    elif ak.type == TPM_ALG_RSA:
        if ak.rsa_bits != 2048 or (ak.scheme, ak.scheme_hash) != (TPM_ALG_RSASSA, TPM_ALG_SHA256):
            raise EnrollmentError("RSA AK must be 2048-bit with RSASSA/sha256")
        if ak.rsa_exponent not in (0, 65537) or len(ak.rsa_modulus) != 256:
            raise EnrollmentError("RSA AK must use exponent 65537 and a 256-byte modulus")
    else:
        raise EnrollmentError("AK must be ECC or RSA")


class TokenStore:
    """One-time soft enrollment tokens (in memory; thread safe)."""

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(token)
        return token

    def consume(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        with self._lock:
            if token in self._tokens:
                self._tokens.remove(token)
                return True
        return False


def _request(obj: object) -> dict[str, Any]:
    if isinstance(obj, bytes | bytearray):
        try:
            obj = canonical.loads(bytes(obj), limit=64 * 1024)
        except EvidenceError as exc:
            raise EnrollmentError(f"bad enrollment request: {exc}") from None
    if not isinstance(obj, dict):
        raise EnrollmentError("enrollment request must be an object")
    mode = obj.get("mode")
    try:
        if mode == "tpm2":
            return canonical.require_keys(
                obj, "enrollment request",
                {"format", "mode", "device_id", "ek_public", "ek_cert", "ak_public", "ak_name"},
            )
        if mode == "soft":
            return canonical.require_keys(
                obj, "enrollment request",
                {"format", "mode", "device_id", "ak_public", "ak_name", "token"},
            )
    except EvidenceError as exc:
        raise EnrollmentError(str(exc)) from None
    raise EnrollmentError(f"unknown mode {mode!r}")


def begin_enrollment(
    request: object,
    *,
    image_id: str,
    policy: EnrollmentPolicy,
    tokens: TokenStore | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Check a request; return (record, challenge). challenge is None for soft mode.

    tpm2: the record is "pending" and the challenge is {"credential": base64 of a
    tpm2-tools credential file} for ``auditbox-attest activate``. soft: the record is
    "active" if the token was valid and policy allows soft devices.
    """
    req = _request(request)
    if type(req["format"]) is not int or req["format"] != 1:
        raise EnrollmentError("unsupported enrollment request format")
    if not isinstance(image_id, str) or not image_id:
        raise EnrollmentError("image_id must be a non-empty string")
    try:
        device_id = check_device_id(req["device_id"])
        if req["mode"] == "soft":
            if not policy.allow_soft:
                raise EnrollmentError("policy does not allow soft (TPM-less) devices")
            if tokens is None or not tokens.consume(req["token"]):
                raise EnrollmentError("enrollment token unknown or already used")
            raw = canonical.b64d(req["ak_public"], "ak_public", 32)
            if len(raw) != 32:
                raise EnrollmentError("soft AK must be a 32-byte Ed25519 key")
            name = soft_ak_name(raw)
            if canonical.hexd(req["ak_name"], "ak_name") != name:
                raise EnrollmentError("ak_name does not match ak_public")
            if device_id != soft_device_id(raw):
                raise EnrollmentError("device_id does not match the AK")
            record = new_record(device_id, "soft", None, raw, name, name, image_id, "active",
                                ekcert.NONE)
            return record, None
        ek_raw = canonical.b64d(req["ek_public"], "ek_public", 2048)
        ak_raw = canonical.b64d(req["ak_public"], "ak_public", 2048)
        ek = parse_tpm2b_public(ek_raw)
        ak = parse_tpm2b_public(ak_raw)
        ak_name = canonical.hexd(req["ak_name"], "ak_name", limit=66)
        cert = None if req["ek_cert"] is None else \
            canonical.b64d(req["ek_cert"], "ek_cert", ekcert.MAX_EK_CERT)
    except EvidenceError as exc:
        raise EnrollmentError(f"bad enrollment request: {exc}") from None
    check_ak(ak)
    ek_key = ek_public_key(ek)  # EK type and parameter checks
    if ak_name != ak.name:
        raise EnrollmentError("ak_name does not match ak_public")
    if device_id != tpm_device_id(ek_raw):
        raise EnrollmentError("device_id does not match the EK")
    ek_state = _ek_certificate(cert, ek_key, policy)
    secret = os.urandom(32)
    id_object, enc_secret = make_credential(ek, ak.name, secret)
    record = new_record(
        device_id, "tpm2", hashlib.sha256(ek.area).hexdigest(), ak_raw, ak.name,
        ak_qualified_name(ek, ak), image_id, "pending", ek_state,
    )
    record["challenge_sha256"] = hashlib.sha256(secret).hexdigest()
    challenge = {"credential": canonical.b64e(credential_file(id_object, enc_secret))}
    return record, challenge


def _ek_certificate(cert: bytes | None, ek_key: Any, policy: EnrollmentPolicy) -> str:
    """``checked`` or ``allowed-without``; refuses otherwise."""
    if cert is None or not policy.ek_ca_bundle:
        if policy.allow_ek_without_cert:
            return ekcert.ALLOWED_WITHOUT
        if cert is None:
            raise EnrollmentError("the TPM has no EK certificate (a software TPM?); enroll "
                                  "it only if the lab vets devices another way "
                                  "(allow EKs without certificate)")
        raise EnrollmentError("no EK CA bundle is configured to check the EK certificate")
    ekcert.check_ek_certificate(cert, ek_key, policy.ek_ca_bundle)
    return ekcert.CHECKED


def assign_image(record: dict[str, Any], image_id: str) -> dict[str, Any]:
    """The record with ``image_id`` (the image its evidence showed it boots)."""
    if not isinstance(image_id, str) or not image_id:
        raise EnrollmentError("image_id must be a non-empty string")
    try:
        return validate_record({**record, "image_id": image_id})
    except EvidenceError as exc:
        raise EnrollmentError(f"bad enrollment record: {exc}") from None


def finish_enrollment(record: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """Complete a tpm2 enrollment with the secret ActivateCredential returned."""
    if not isinstance(secret, bytes | bytearray):
        raise EnrollmentError("the credential secret must be bytes")
    try:
        rec = validate_record(record)
    except EvidenceError as exc:
        raise EnrollmentError(f"bad enrollment record: {exc}") from None
    if rec["status"] != "pending" or rec["challenge_sha256"] is None:
        raise EnrollmentError("record is not waiting for credential activation")
    got = hashlib.sha256(secret).hexdigest()
    if not hmac.compare_digest(got, rec["challenge_sha256"]):
        raise EnrollmentError("credential activation failed: wrong secret")
    return {**rec, "status": "active", "challenge_sha256": None}


def new_record(device_id: str, mode: str, ek_hash: str | None, ak_public: bytes, ak_name: bytes,
               ak_qn: bytes, image_id: str, status: str, ek_cert: str) -> dict[str, Any]:
    return {
        "format": 1,
        "device_id": device_id,
        "mode": mode,
        "ek_hash": ek_hash,
        "ak_public": canonical.b64e(ak_public),
        "ak_name": ak_name.hex(),
        "ak_qualified_name": ak_qn.hex(),
        "image_id": image_id,
        "status": status,
        "last_clock": None,
        "firmware_pcrs": {},
        "challenge_sha256": None,
        "ek_cert": ek_cert,
    }


def validate_record(record: object) -> dict[str, Any]:
    """Strictly check an enrollment record; raises EvidenceError."""
    rec = canonical.require_keys(record, "enrollment record", RECORD_FIELDS)
    if rec["format"] != 1:
        raise EvidenceError("enrollment record: unsupported format")
    check_device_id(rec["device_id"])
    if rec["mode"] not in ("tpm2", "soft") or rec["status"] not in STATUSES:
        raise EvidenceError("enrollment record: bad mode or status")
    if rec["ek_cert"] not in EK_CERT_STATES or \
            (rec["ek_cert"] == ekcert.NONE) != (rec["mode"] == "soft"):
        raise EvidenceError(f"enrollment record: bad ek_cert {rec['ek_cert']!r} for "
                            f"{rec['mode']} (allowed: {', '.join(EK_CERT_STATES)})")
    if not isinstance(rec["image_id"], str) or not rec["image_id"]:
        raise EvidenceError("enrollment record: bad image_id")
    canonical.hexd(rec["ak_name"], "ak_name", 34)
    canonical.hexd(rec["ak_qualified_name"], "ak_qualified_name", 34)
    canonical.b64d(rec["ak_public"], "ak_public", 2048)
    if rec["ek_hash"] is not None:
        canonical.hexd(rec["ek_hash"], "ek_hash", 32)
    if rec["challenge_sha256"] is not None:
        canonical.hexd(rec["challenge_sha256"], "challenge_sha256", 32)
    lc = rec["last_clock"]
    if lc is not None:
        lc = canonical.require_keys(lc, "last_clock", {"clock", "reset_count", "restart_count"})
        for k, v in lc.items():
            if type(v) is not int or v < 0 or v >= 1 << 64:
                raise EvidenceError(f"last_clock.{k}: expected a non-negative integer")
    fw = rec["firmware_pcrs"]
    if not isinstance(fw, dict):
        raise EvidenceError("firmware_pcrs: expected an object")
    for k, v in fw.items():
        if k not in _PCR_KEYS:
            raise EvidenceError(f"firmware_pcrs: bad PCR index {k!r}")
        canonical.hexd(v, f"firmware_pcrs.{k}", 32)
    return rec
