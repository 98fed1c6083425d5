"""Attestation inside the SSH connection: log-in, enrollment, re-attestation.

Nonces are issued and used up through the store (``issue_nonce``/``consume_nonce``),
so a nonce is single-use across every replica, and expires after
``attestation.nonce_ttl``. The ``Verifier`` (attestation/verifier.py) is built per
process from the config and the registered images (every reference re-verified with
the trusted build keys; refreshed when the image list changes), and checks evidence
against the device's enrollment record with qualifying data SHA256(nonce || SSH
session id). Every result is written to the device's history and the audit log.

The exchanges (docs/protocol.md section 3) run over a ``ControlChannel``; a refusal
is a ``ControlError(step, message)`` that the server turns into ``refused``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.ekcert import load_ca_bundle
from attestation.errors import EnrollmentError, ReferenceValueError, VerificationError
from attestation.policy import Policy
from attestation.reference import verify_reference_bytes
from attestation.verifier import Verifier

from . import metrics
from .audit import Auditor
from .config import Config
from .control import ControlChannel, ControlError
from .enrollment import Enroller, EnrollRefused
from .store.base import Attestation, Device, Image, Store, StoreError

NONCE_BYTES = 32


class StoreNonces:
    """The verifier's nonce interface, answered by the store (fleet-wide single use)."""

    def __init__(self, store: Store, ttl: float, clock: Callable[[], float]) -> None:
        self.store, self.ttl, self.clock = store, ttl, clock

    def issue(self) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        now = self.clock()
        self.store.issue_nonce(nonce, now, now + self.ttl)
        return nonce

    def consume(self, nonce: bytes) -> str | None:
        why = self.store.consume_nonce(nonce, self.clock())
        return None if why is None else f"nonce {why}"


@dataclass(frozen=True)
class Verified:
    device: Device
    record: dict[str, Any]


class Attester:
    def __init__(self, store: Store, auditor: Auditor, cfg: Config,
                 trusted_keys: list[Ed25519PublicKey],
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.auditor, self.cfg, self.clock = store, auditor, cfg, clock
        self.trusted_keys = trusted_keys
        self.nonces = StoreNonces(store, cfg.attestation.nonce_ttl, clock)
        att = cfg.attestation
        bundle: tuple[x509.Certificate, ...] = ()
        if att.ek_ca_bundle is not None:
            try:
                bundle = load_ca_bundle(att.ek_ca_bundle)
            except EnrollmentError as exc:
                raise cfg.error("attestation.ek_ca_bundle", str(exc)) from None
        self.enroller = Enroller(store, auditor, att.allow_soft, trusted_keys, clock,
                                 ek_ca_bundle=bundle,
                                 allow_ek_without_cert=att.allow_ek_without_cert)
        self._images_key: tuple[tuple[str, float | None], ...] | None = None
        self._verifier: Verifier | None = None

    def policy(self, images: list[Image] | None = None) -> Policy:
        att = self.cfg.attestation
        return Policy(
            allow_soft=att.allow_soft, require_secure_boot=att.require_secure_boot,
            trust_firmware_on_first_use=att.firmware.trust_on_first_use,
            revoked_images={i.image_id for i in images or [] if i.revoked_at is not None})

    # -- the verifier, kept in step with the registered images --------------------------------
    def verifier(self) -> Verifier:
        """(blocking) The process's Verifier for the current image list."""
        images = self.store.list_images()
        key = tuple(sorted((i.image_id, i.revoked_at) for i in images))
        if self._verifier is None or key != self._images_key:
            refs: dict[str, dict[str, Any]] = {}
            for image in images:
                try:
                    data = verify_reference_bytes(image.reference, image.signature,
                                                  self.trusted_keys)
                except ReferenceValueError:
                    continue        # a row edited in the database is never trusted
                if data["image_id"] == image.image_id:
                    refs[image.image_id] = data
            self._verifier = Verifier(self.policy(images), self.nonces, refs)
            self._images_key = key
        return self._verifier

    def _verify(self, evidence: bytes, record: dict[str, Any], nonce: bytes,
                session_id: bytes) -> dict[str, Any]:
        """(blocking) Verify; the updated record on success, VerificationError otherwise."""
        v = self.verifier()
        device = self.store.get_device(record["device_id"])
        if device is not None and device.status == "revoked":
            self.nonces.consume(nonce)
            raise VerificationError("revocation", f"device {device.device_id} is revoked")
        t0 = time.perf_counter()
        try:
            return v.verify(evidence, record, nonce, session_id).record
        finally:
            metrics.current().verified(time.perf_counter() - t0)

    # -- one challenge -----------------------------------------------------------------------------
    async def challenge(self, ctrl: ControlChannel) -> tuple[bytes, bytes]:
        """Send a fresh nonce; return (nonce, evidence bytes) answered within the deadline."""
        try:
            nonce = await asyncio.to_thread(self.nonces.issue)
        except StoreError as exc:
            raise ControlError("store", f"the gateway cannot reach its store: {exc}") from None
        deadline = self.cfg.attestation.deadline
        ctrl.expect_large(True)
        ctrl.send({"type": "challenge", "nonce": nonce.hex(), "deadline": max(1, int(deadline))})
        msg = await ctrl.recv("evidence", timeout=deadline, what="evidence")
        ctrl.expect_large(False)
        if msg["nonce"] != nonce:
            raise ControlError("qualifying_data", "evidence answers another nonce")
        return nonce, msg["evidence"]

    async def check(self, device: Device, nonce: bytes, evidence: bytes, session_id: bytes,
                    session: str | None, actor: str) -> dict[str, Any]:
        """Verify and record the outcome (history + audit); ControlError on refusal."""
        now = self.clock()
        try:
            record = await asyncio.to_thread(self._verify, evidence, device.record, nonce,
                                             session_id)
        except VerificationError as exc:
            await self._record(device.device_id, now, "refused", exc.step, exc.reason, session,
                               actor, None)
            raise ControlError(exc.step, exc.reason) from None
        except StoreError as exc:
            raise ControlError("store", f"the gateway cannot reach its store: {exc}") from None
        await self._record(device.device_id, now, "ok", None, None, session, actor, record)
        return record

    async def _record(self, device_id: str, at: float, result: str, step: str | None,
                      reason: str | None, session: str | None, actor: str,
                      record: dict[str, Any] | None) -> None:
        def write() -> None:
            self.store.record_attestation(
                Attestation(device_id, at, result, step, reason, session), record=record)
            self.auditor.log("attest.ok" if result == "ok" else "attest.refused", actor=actor,
                             device_id=device_id, step=step, reason=reason, session=session)
        try:
            await asyncio.to_thread(write)
        except StoreError as exc:
            raise ControlError("store", f"the gateway cannot reach its store: {exc}") from None

    # -- log-in ------------------------------------------------------------------------------------
    async def login(self, ctrl: ControlChannel, user: str, session_id: bytes,
                    is_locked: Callable[[str | None], Awaitable[tuple[str, str] | None]],
                    session: str | None = None) -> Device:
        """hello -> (lock check) -> challenge -> evidence -> verified; returns the device.
        ``is_locked(device_id)`` gives (message, target kind) when a lock applies."""
        hello = await ctrl.recv("hello", timeout=self.cfg.attestation.hello_timeout,
                                what="hello")
        device_id = hello["device_id"]
        try:
            device = await asyncio.to_thread(self.store.get_device, device_id)
        except StoreError as exc:
            raise ControlError("store", f"the gateway cannot reach its store: {exc}") from None
        if device is None or device.status != "active":
            why = "unknown" if device is None else device.status
            await self._audit("attest.refused", user, device_id=device_id, step="enrollment",
                              reason=f"device {why}")
            raise ControlError("enrollment", f"this terminal ({device_id}) is not enrolled "
                                             f"here ({why})")
        if hello["mode"] != device.mode:
            await self._audit("attest.refused", user, device_id=device_id, step="signature",
                              reason=f"mode {hello['mode']} but enrolled {device.mode}")
            raise ControlError("signature", f"this terminal was enrolled as {device.mode}, "
                                            f"not {hello['mode']} (no downgrade)")
        locked = await is_locked(device_id)
        if locked is not None:
            raise LockedError(*locked)
        nonce, evidence = await self.challenge(ctrl)
        await self.check(device, nonce, evidence, session_id, session, user)
        return device

    async def reattest(self, ctrl: ControlChannel, device_id: str, session_id: bytes,
                       session: str, user: str) -> None:
        """One re-attestation during a session (the device row is read fresh)."""
        try:
            device = await asyncio.to_thread(self.store.get_device, device_id)
        except StoreError as exc:
            raise ControlError("store", f"the gateway cannot reach its store: {exc}") from None
        if device is None or device.status != "active":
            raise ControlError("revocation", f"terminal {device_id} is no longer enrolled")
        nonce, evidence = await self.challenge(ctrl)
        await self.check(device, nonce, evidence, session_id, session, user)
        ctrl.send({"type": "accepted", "device_id": device_id,
                   "next": int(self.cfg.attestation.reattest_interval)})

    # -- enrollment --------------------------------------------------------------------------------
    async def enroll(self, ctrl: ControlChannel, token_hash: str, source: str,
                     session_id: bytes) -> Device:
        ctrl.expect_large(True)
        msg = await ctrl.recv("enroll", timeout=self.cfg.attestation.hello_timeout,
                              what="enroll")
        ctrl.expect_large(False)
        try:
            pending = await asyncio.to_thread(self.enroller.start, msg["request"], token_hash,
                                              source)
            if pending.challenge is not None:
                ctrl.send({"type": "credential", "credential": pending.challenge["credential"]})
                act = await ctrl.recv("activate", timeout=self.cfg.attestation.deadline,
                                      what="activate")
                pending = await asyncio.to_thread(self.enroller.activate, pending,
                                                  act["secret"], source)
            nonce, evidence = await self.challenge(ctrl)
            image = await asyncio.to_thread(self.enroller.choose_image, evidence, source)
            record = pending.record_for(image.image_id)
            try:
                verified = await asyncio.to_thread(self._verify, evidence, record, nonce,
                                                   session_id)
            except VerificationError as exc:
                await self._audit("enroll.refused", "auditbox-enroll", device_id=pending.device_id,
                                  step=exc.step, reason=exc.reason, source=source)
                raise ControlError(exc.step, exc.reason) from None
            device = await asyncio.to_thread(self.enroller.complete, pending, verified, source)
        except EnrollRefused as exc:
            raise ControlError(exc.step if exc.step in ("policy", "parse") else "enrollment",
                               exc.message) from None
        except StoreError as exc:
            raise ControlError("store", f"the gateway cannot reach its store: {exc}") from None
        ctrl.send({"type": "enrolled", "device_id": device.device_id, "mode": device.mode,
                   "image_id": device.image_id})
        return device

    async def _audit(self, event: str, actor: str, **data: Any) -> None:
        try:
            await asyncio.to_thread(self.auditor.log, event, actor, **data)
        except StoreError as exc:
            raise ControlError("store", f"the gateway cannot reach its store: {exc}") from None


class LockedError(Exception):
    def __init__(self, message: str, target: str) -> None:
        super().__init__(message)
        self.message = message
        self.target = target
