"""Enrollment: one-time tokens, and the gateway's decisions around attestation.enroll.

Tokens: ``create_token`` makes a random token (120 bits, shown once, typed on the
terminal as ``ABCD-EFGH-...``), stores only its SHA-256 with its mode and expiry.
``token_hash`` normalises what was typed (case, dashes, spaces) before hashing.

An enrollment over SSH (docs/protocol.md section 3, "Enrollment, in order"), as the
server (G2) drives it with an ``Enroller``:

    pending = enroller.start(request, token_hash, source)   # token mode, soft policy,
                                                             # AK checks, MakeCredential
    [tpm2] send pending.challenge["credential"]; get the secret back
    pending = enroller.activate(pending, secret)             # ActivateCredential proof
    send a challenge; get evidence
    image = enroller.choose_image(evidence)                  # by the UKI in PCR 4
    record = pending.record_for(image.image_id)
    result = <verify evidence against record, nonce, session id (attest.py)>
    device = enroller.complete(pending, result.record, source)   # token used + device
                                                                 # stored, atomically

Every refusal is an ``EnrollRefused(step, message)``: step is what the ``refused``
control message carries (``enrollment`` or ``policy``), and it is audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.enroll import (
    EnrollmentPolicy,
    TokenStore,
    assign_image,
    begin_enrollment,
    finish_enrollment,
)
from attestation.errors import EnrollmentError, EvidenceError
from attestation.reference import image_for_boot
from attestation.verifier import booted_uki

from . import images
from .audit import Auditor
from .store.base import Device, Image, Store, Token

MODES = ("tpm2", "soft")
TOKEN_BYTES = 15                      # 120 bits -> 24 base32 characters
PENDING_IMAGE = "pending"             # image id placeholder until the evidence shows it
_TOKEN_TEXT = re.compile(r"[A-Z2-7]{24}")


class EnrollRefused(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


# -- tokens --------------------------------------------------------------------------------

def normalise_token(text: str) -> str:
    return re.sub(r"[\s-]", "", text).upper()


def well_formed_token(text: str) -> bool:
    return len(text) <= 64 and _TOKEN_TEXT.fullmatch(normalise_token(text)) is not None


def token_hash(text: str) -> str:
    """Hex SHA-256 of the normalised token (what the store keeps)."""
    return hashlib.sha256(normalise_token(text).encode("ascii", "replace")).hexdigest()


def format_token(raw: str) -> str:
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def create_token(store: Store, auditor: Auditor, mode: str, ttl: float, by: str,
                 now: float | None = None) -> tuple[str, Token]:
    """A new one-time token: (the token to show once, its stored row)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    now = time.time() if now is None else now
    raw = base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii")
    text = format_token(raw)
    tok = Token(token_hash(text), mode, now, now + ttl, by)
    store.add_token(tok)
    auditor.log("token.create", actor=by, token=tok.token_hash[:12], mode=mode,
                expires_at=tok.expires_at)
    return text, tok


def token_state(tok: Token, now: float) -> str:
    if tok.used_at is not None:
        return f"used by {tok.used_by}"
    return "expired" if tok.expires_at <= now else "unused"


# -- the enroller ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pending:
    device_id: str
    mode: str
    token_hash: str
    record: dict[str, Any]              # attestation.enroll record, image_id "pending"
    challenge: dict[str, Any] | None    # tpm2: {"credential": base64}; soft: None

    def record_for(self, image_id: str) -> dict[str, Any]:
        return assign_image(self.record, image_id)


class _LoginToken(TokenStore):
    """attestation.enroll's soft-mode token check, answered by the token the SSH log-in
    presented (it is used up later, with the device insert)."""

    def __init__(self, expected_hash: str) -> None:
        super().__init__()
        self.expected_hash = expected_hash

    def consume(self, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token_hash(token),
                                                              self.expected_hash)


class Enroller:
    def __init__(self, store: Store, auditor: Auditor, allow_soft: bool,
                 trusted_keys: list[Ed25519PublicKey],
                 clock: Any = time.time, *,
                 ek_ca_bundle: tuple[x509.Certificate, ...] = (),
                 allow_ek_without_cert: bool = False) -> None:
        self.store = store
        self.auditor = auditor
        self.allow_soft = allow_soft
        self.trusted_keys = trusted_keys
        self.clock = clock
        self.policy = EnrollmentPolicy(allow_soft=allow_soft, ek_ca_bundle=ek_ca_bundle,
                                       allow_ek_without_cert=allow_ek_without_cert)

    def _refuse(self, step: str, message: str, source: str, **data: Any) -> EnrollRefused:
        self.auditor.log("enroll.refused", actor="auditbox-enroll", source=source, step=step,
                         reason=message, **data)
        return EnrollRefused(step, message)

    def start(self, request: object, token_hash_hex: str, source: str) -> Pending:
        now = self.clock()
        tok = self.store.get_token(token_hash_hex)
        if tok is None or tok.used_at is not None or tok.expires_at <= now:
            raise self._refuse("enrollment", "enrollment token unknown, expired or used",
                               source)
        mode = request.get("mode") if isinstance(request, dict) else None
        if mode != tok.mode:
            raise self._refuse("enrollment", f"this token is for {tok.mode} terminals, the "
                                             f"request is {mode!s}", source)
        if mode == "soft" and not self.allow_soft:
            raise self._refuse("enrollment", "this gateway does not accept soft (TPM-less) "
                                             "terminals (attestation.allow_soft)", source)
        try:
            record, challenge = begin_enrollment(
                request, image_id=PENDING_IMAGE,
                policy=self.policy,
                tokens=_LoginToken(token_hash_hex))
        except EnrollmentError as exc:
            raise self._refuse("enrollment", str(exc), source) from None
        device_id = str(record["device_id"])
        existing = self.store.get_device(device_id)
        if existing is not None:
            raise self._refuse("enrollment", f"device {device_id} is already enrolled "
                                             f"({existing.status})", source,
                               device_id=device_id)
        self.auditor.log("enroll.start", actor="auditbox-enroll", source=source,
                         device_id=device_id, mode=mode, token=token_hash_hex[:12])
        return Pending(device_id, str(mode), token_hash_hex, record, challenge)

    def activate(self, pending: Pending, secret: bytes, source: str) -> Pending:
        if pending.mode != "tpm2":
            raise self._refuse("enrollment", "activate is for tpm2 enrollments", source)
        try:
            record = finish_enrollment(pending.record, secret)
        except (EnrollmentError, EvidenceError) as exc:
            raise self._refuse("enrollment", str(exc), source,
                               device_id=pending.device_id) from None
        return replace(pending, record=record, challenge=None)

    def choose_image(self, evidence: bytes, source: str = "") -> Image:
        """The registered, unrevoked image whose signed reference names the UKI that PCR 4
        shows booted (attestation's booted_uki / image_for_boot); the newest if several do.
        Nothing here is trusted yet: the full verification against it follows."""
        try:
            mode, digest = booted_uki(evidence)
        except EvidenceError as exc:
            raise self._refuse("parse", f"evidence: {exc}", source) from None
        refs = images.references(self.store, self.trusted_keys)
        newest_first = sorted((i for i in self.store.list_images() if i.image_id in refs),
                              key=lambda i: i.added_at, reverse=True)
        chosen = image_for_boot({i.image_id: refs[i.image_id] for i in newest_first}, mode,
                                digest)
        if chosen is None:
            raise self._refuse("policy", "the booted UKI matches no registered image "
                                         "(auditbox gateway image add OUT/)", source)
        return next(i for i in newest_first if i.image_id == chosen)

    def complete(self, pending: Pending, record: dict[str, Any], source: str) -> Device:
        """Store the device (with the verified record) and use the token up, atomically."""
        if record.get("device_id") != pending.device_id or record.get("status") != "active":
            raise self._refuse("enrollment", "the record is not an active record for this "
                                             "device", source, device_id=pending.device_id)
        now = self.clock()
        device = Device(pending.device_id, pending.mode, str(record["image_id"]), record, now,
                        ek_cert=str(record.get("ek_cert", "none")))
        why = self.store.enroll_device(device, pending.token_hash, now)
        if why == "token":
            raise self._refuse("enrollment", "enrollment token already used or expired",
                               source, device_id=pending.device_id)
        if why == "device":
            raise self._refuse("enrollment", f"device {pending.device_id} is already enrolled",
                               source, device_id=pending.device_id)
        self.auditor.log("enroll.ok", actor="auditbox-enroll", source=source,
                         device_id=device.device_id, mode=device.mode, image_id=device.image_id,
                         token=pending.token_hash[:12])
        return device
