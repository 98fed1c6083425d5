"""Enrollment decisions: tokens, modes, credential activation, image choice by the UKI
that PCR 4 shows booted, and a token enrolling one device once."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation import canonical
from attestation.evidence import encode
from attestation.nonces import NonceStore
from attestation.policy import Policy
from attestation.reference import write_signed_reference
from attestation.soft import SoftBackend
from attestation.verifier import Verifier, qualifying_data
from gateway import enrollment
from gateway.audit import Auditor
from gateway.enrollment import Enroller, EnrollRefused
from gateway.store import Image, Store
from tests.attestation.attest_helpers import FakeTpm, make_reference

SESSION = b"S" * 32
IP = "192.0.2.20"


class World:
    def __init__(self, store: Store, tmp: Path, allow_soft: bool = True) -> None:
        self.store = store
        self.tmp = tmp
        self.key = Ed25519PrivateKey.generate()
        self.auditor = Auditor(store, "test")
        self.enroller = Enroller(store, self.auditor, allow_soft, [self.key.public_key()],
                                 allow_ek_without_cert=True)   # the fake TPM has no EK cert
        self.added = 0

    def register(self, image_id: str = "img-A", key: Ed25519PrivateKey | None = None,
                 auth: bytes = hashlib.sha256(b"uki-A").digest(),
                 uki_sha256: str | None = None) -> dict[str, Any]:
        """Sign (with the trusted key unless told) and store a reference for image_id."""
        out = self.tmp / image_id
        out.mkdir()
        data = make_reference(key or self.key, out, image_id=image_id, auth=auth)
        if uki_sha256 is not None:
            data = {**data, "uki_sha256": uki_sha256}
            write_signed_reference(out, data, key or self.key)
        self.added += 1
        self.store.add_image(Image(image_id, (out / "reference.json").read_bytes(),
                                   (out / "reference.json.sig").read_bytes(),
                                   float(self.added), "test"))
        return data

    def token(self, mode: str, ttl: float = 3600) -> str:
        text, _ = enrollment.create_token(self.store, self.auditor, mode, ttl, "test")
        return text

    def verify(self, evidence: bytes, record: dict[str, Any], nonce: bytes,
               refs: dict[str, Any]) -> dict[str, Any]:
        nonces = NonceStore()
        nonces.add(nonce)
        v = Verifier(Policy(allow_soft=True), nonces, refs)
        rec: dict[str, Any] = v.verify(evidence, record, nonce, SESSION).record
        return rec


@pytest.fixture
def world(store: Store, tmp_path: Path) -> World:
    return World(store, tmp_path)


def _soft_agent(tmp: Path, ref: dict[str, Any], uki: bytes) -> SoftBackend:
    (tmp / "uki.efi").write_bytes(uki)
    (tmp / "cmdline").write_text(ref["cmdline"] + "\n")
    (tmp / "boot_id").write_text("0f0e0d0c-0b0a-0908-0706-050403020100\n")
    return SoftBackend(tmp / "agent", boot_id_path=tmp / "boot_id",
                       cmdline_path=tmp / "cmdline", uki_paths=(tmp / "uki.efi",))


def test_tpm2_enrollment(world: World) -> None:
    refs = {"img-A": world.register("img-A")}
    world.register("img-B", auth=hashlib.sha256(b"uki-B").digest())
    tpm = FakeTpm()
    token = world.token("tpm2")
    pending = world.enroller.start(tpm.enrollment_request(), enrollment.token_hash(token), IP)
    assert pending.record["status"] == "pending" and pending.challenge is not None
    cred = canonical.b64d(pending.challenge["credential"], "credential", 4096)
    pending = world.enroller.activate(pending, tpm.activate(cred), IP)
    assert pending.record["status"] == "active"
    nonce = os.urandom(32)
    evidence = tpm.quote(qualifying_data(nonce, SESSION))
    image = world.enroller.choose_image(evidence, IP)
    assert image.image_id == "img-A"                     # by the UKI in PCR 4, not img-B
    record = world.verify(evidence, pending.record_for(image.image_id), nonce, refs)
    device = world.enroller.complete(pending, record, IP)
    assert (device.device_id, device.mode, device.image_id) == (tpm.device_id, "tpm2", "img-A")
    stored = world.store.get_device(tpm.device_id)
    assert stored is not None and stored.record["last_clock"] is not None
    tok = world.store.get_token(enrollment.token_hash(token))
    assert tok is not None and tok.used_by == tpm.device_id
    events = [e.event for e in world.store.audit_entries()]
    assert events[-2:] == ["enroll.start", "enroll.ok"]
    # the same token cannot enroll anything again, nor can the device enroll twice
    with pytest.raises(EnrollRefused, match="token unknown, expired or used"):
        world.enroller.start(FakeTpm().enrollment_request(), enrollment.token_hash(token), IP)
    with pytest.raises(EnrollRefused, match="already enrolled"):
        world.enroller.start(tpm.enrollment_request(),
                             enrollment.token_hash(world.token("tpm2")), IP)


def test_tpm2_wrong_secret(world: World) -> None:
    tpm = FakeTpm()
    pending = world.enroller.start(tpm.enrollment_request(),
                                   enrollment.token_hash(world.token("tpm2")), IP)
    with pytest.raises(EnrollRefused, match="wrong secret") as info:
        world.enroller.activate(pending, b"\0" * 32, IP)
    assert info.value.step == "enrollment"
    assert world.store.list_devices() == []


def test_token_mode_must_match(world: World) -> None:
    with pytest.raises(EnrollRefused, match="for soft terminals, the request is tpm2"):
        world.enroller.start(FakeTpm().enrollment_request(),
                             enrollment.token_hash(world.token("soft")), IP)


def test_expired_token(world: World) -> None:
    token = world.token("tpm2", ttl=-1)
    with pytest.raises(EnrollRefused, match="expired"):
        world.enroller.start(FakeTpm().enrollment_request(), enrollment.token_hash(token), IP)


def test_soft_enrollment(world: World, tmp_path: Path) -> None:
    uki = b"the UKI file of img-soft"
    world.register("img-other")                 # another UKI: must not be chosen
    data = world.register("img-soft", uki_sha256=hashlib.sha256(uki).hexdigest())
    agent = _soft_agent(tmp_path, data, uki)
    token = world.token("soft")
    request = agent.enrollment_request(token)
    pending = world.enroller.start(request, enrollment.token_hash(token), IP)
    assert pending.challenge is None and pending.record["status"] == "active"
    nonce = os.urandom(32)
    evidence = encode(agent.quote(qualifying_data(nonce, SESSION)))
    assert world.enroller.choose_image(evidence).image_id == "img-soft"
    record = world.verify(evidence, pending.record_for("img-soft"), nonce,
                          {"img-soft": data})
    device = world.enroller.complete(pending, record, IP)
    assert device.mode == "soft" and device.ek_cert == "none"
    assert world.store.get_device(agent.device_id()) is not None


def test_soft_refused_by_policy(store: Store, tmp_path: Path) -> None:
    w = World(store, tmp_path, allow_soft=False)
    agent = SoftBackend(tmp_path / "agent")
    token = w.token("soft")
    with pytest.raises(EnrollRefused, match="allow_soft"):
        w.enroller.start(agent.enrollment_request(token), enrollment.token_hash(token), IP)


def test_soft_request_must_carry_the_login_token(world: World, tmp_path: Path) -> None:
    agent = SoftBackend(tmp_path / "agent")
    token, other = world.token("soft"), world.token("soft")
    with pytest.raises(EnrollRefused, match="token"):
        world.enroller.start(agent.enrollment_request(other), enrollment.token_hash(token), IP)


def test_image_choice_refusals(world: World, tmp_path: Path) -> None:
    tpm = FakeTpm()
    tpm.enrollment_request()                      # sets its device id
    nonce = os.urandom(32)
    evidence = tpm.quote(qualifying_data(nonce, SESSION))
    with pytest.raises(EnrollRefused, match="matches no registered image") as info:
        world.enroller.choose_image(evidence)
    assert info.value.step == "policy"
    # signed by a key the gateway does not trust: ignored
    world.register("img-A", key=Ed25519PrivateKey.generate())
    with pytest.raises(EnrollRefused, match="matches no registered image"):
        world.enroller.choose_image(evidence)
    # trusted but revoked: ignored
    world.register("img-A2")
    world.store.revoke_image("img-A2", 1.0)
    with pytest.raises(EnrollRefused, match="matches no registered image"):
        world.enroller.choose_image(evidence)
    # a reference row edited in the database no longer verifies: ignored
    world.register("img-A3")
    with world.store._tx() as tx:  # type: ignore[attr-defined]
        tx.run("UPDATE images SET reference = ? WHERE image_id = 'img-A3'",
               (tmp_path / "img-A3/reference.json").read_bytes().replace(b"aa", b"ab"))
    with pytest.raises(EnrollRefused, match="matches no registered image"):
        world.enroller.choose_image(evidence)
    with pytest.raises(EnrollRefused) as info:
        world.enroller.choose_image(b"{not evidence")
    assert info.value.step == "parse"


def test_newest_image_of_the_same_uki_wins(world: World) -> None:
    """Two registered references for one UKI (re-signed, re-registered): the newest."""
    world.register("img-A-first")
    world.register("img-A-again")
    tpm = FakeTpm()
    tpm.enrollment_request()
    evidence = tpm.quote(qualifying_data(os.urandom(32), SESSION))
    assert world.enroller.choose_image(evidence).image_id == "img-A-again"


def test_one_token_one_device_under_race(world: World) -> None:
    """Two terminals presenting one token at the same moment: one is enrolled."""
    refs = {"img-A": world.register("img-A")}
    token = enrollment.token_hash(world.token("tpm2"))
    tpms = [FakeTpm() for _ in range(2)]
    records = []
    pendings = []
    for tpm in tpms:
        p = world.enroller.start(tpm.enrollment_request(), token, IP)
        assert p.challenge is not None
        p = world.enroller.activate(p, tpm.activate(canonical.b64d(
            p.challenge["credential"], "c", 4096)), IP)
        nonce = os.urandom(32)
        ev = tpm.quote(qualifying_data(nonce, SESSION))
        records.append(world.verify(ev, p.record_for("img-A"), nonce, refs))
        pendings.append(p)
    barrier = threading.Barrier(2)
    results: list[object] = [None, None]

    def finish(i: int) -> None:
        barrier.wait()
        try:
            results[i] = world.enroller.complete(pendings[i], records[i], IP)
        except EnrollRefused as exc:
            results[i] = exc

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(isinstance(r, EnrollRefused) for r in results) == 1
    assert len(world.store.list_devices()) == 1


def test_token_text() -> None:
    t = enrollment.format_token("ABCDEFGHIJKLMNOPQRSTUVWX")
    assert t == "ABCD-EFGH-IJKL-MNOP-QRST-UVWX"
    assert enrollment.well_formed_token(t) and enrollment.well_formed_token(t.lower())
    assert not enrollment.well_formed_token("ABCD-EFGH")
    assert enrollment.token_hash(t) == enrollment.token_hash(" abcd efgh-ijkl mnop qrst uvwx")
