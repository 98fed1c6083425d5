"""One test per attack case 1-13 of docs/attestation.md: refusal AND the step named."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from attest_helpers import (
    APP,
    TPM2_PCRS,
    FakeTpm,
    encode_log,
    enroll_fake,
    make_reference,
    new_verifier,
    tpm2b,
)
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation import canonical, eventlog
from attestation.enroll import EnrollmentPolicy, begin_enrollment, check_ak, finish_enrollment
from attestation.errors import EnrollmentError, ReferenceValueError, VerificationError
from attestation.evidence import decode, encode
from attestation.reference import load_reference, public_key_pem, write_signed_reference
from attestation.soft import SoftBackend
from attestation.tpm_structs import (
    TPM_ALG_RSAPSS,
    TPM_ALG_SHA1,
    parse_signature,
    parse_tpm2b_public,
)
from attestation.verifier import qualifying_data


def refused(fn: Any, step: str) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        fn()
    assert info.value.step == step, f"{info.value.step}: {info.value.reason}"
    return info.value


def good(world: Any, nonce: bytes, **kw: Any) -> bytes:
    ev: bytes = world.tpm.quote(qualifying_data(nonce, world.session), **kw)
    return ev


def test_good_path_fake_tpm(world: Any) -> None:
    n = world.nonce()
    res = world.verify(good(world, n), n)
    assert res.device_id == world.record["device_id"]
    assert res.record["last_clock"]["reset_count"] == 1
    assert set(res.record["firmware_pcrs"]) == {"0", "1", "2", "3", "6", "7"}


def test_partition_table_change_is_not_a_firmware_change(world: Any) -> None:
    """PCR 5 measures the GPT, which the first boot's systemd-repart extends (the state
    partition): a device enrolled before that still verifies; PCR 0-3, 6 and 7 stay pinned."""
    vals = world.tpm.pcr_values()
    pinned = {str(i): vals[i].hex() for i in (0, 1, 2, 3, 5, 6, 7)}
    moved = dict(world.record, firmware_pcrs={**pinned, "5": "ab" * 32})
    n = world.nonce()
    assert world.verify(good(world, n), n, record=moved).device_id == \
        world.record["device_id"]
    for i in ("0", "1", "2", "3", "6", "7"):
        changed = dict(world.record, firmware_pcrs={**pinned, i: "ab" * 32})
        n = world.nonce()
        refused(lambda rec=changed, n=n: world.verify(good(world, n), n, record=rec), "policy")


# 1 -----------------------------------------------------------------------------
def test_attack01_replayed_quote(world: Any) -> None:
    n = world.nonce()
    ev = good(world, n)
    world.verify(ev, n)
    refused(lambda: world.verify(ev, n), "qualifying_data")


def test_attack01_expired_nonce(world: Any) -> None:
    n = world.nonce()
    ev = good(world, n)
    world.clock.t += 30.5
    e = refused(lambda: world.verify(ev, n), "qualifying_data")
    assert "expired" in e.reason


# 2 -----------------------------------------------------------------------------
def test_attack02_other_nonce(world: Any) -> None:
    n1, n2 = world.nonce(), world.nonce()
    ev = good(world, n1)
    refused(lambda: world.verify(ev, n2), "qualifying_data")


def test_attack02_other_session(world: Any) -> None:
    n = world.nonce()
    ev = world.tpm.quote(qualifying_data(n, b"other-session"))
    refused(lambda: world.verify(ev, n), "qualifying_data")


def test_attack02_other_device(world: Any) -> None:
    other = FakeTpm()
    enroll_fake(other)
    n = world.nonce()
    ev = other.quote(qualifying_data(n, world.session))
    refused(lambda: world.verify(ev, n), "signature")
    # even when it claims to be our device
    ev2 = other.quote(qualifying_data(n, world.session))
    obj = canonical.loads(ev2)
    obj["device_id"] = world.record["device_id"]
    refused(lambda: world.verify(canonical.dumps(obj), world.nonce()), "signature")


# 3 -----------------------------------------------------------------------------
def test_attack03_sign_with_non_restricted_key(world: Any) -> None:
    # TPM2_Sign with an unrestricted key can sign any bytes, including a forged
    # TPMS_ATTEST with the right magic; it is not the enrolled restricted AK.
    signer = ec.generate_private_key(ec.SECP256R1())
    n = world.nonce()
    ev = world.tpm.quote(qualifying_data(n, world.session), sign_key=signer)
    refused(lambda: world.verify(ev, n), "signature")


def test_attack03_non_restricted_key_cannot_enroll() -> None:
    from attest_helpers import ecc_public_area

    key = ec.generate_private_key(ec.SECP256R1())
    pub = parse_tpm2b_public(tpm2b(ecc_public_area(key.public_key(), attrs=0x00040072)))
    with pytest.raises(EnrollmentError, match="restricted"):
        check_ak(pub)


# 4 -----------------------------------------------------------------------------
def test_attack04_unknown_ak(world: Any) -> None:
    rogue = FakeTpm(ek=world.tpm.ek)  # same device identity, AK never enrolled
    rogue.device_id = world.tpm.device_id
    n = world.nonce()
    ev = rogue.quote(qualifying_data(n, world.session))
    refused(lambda: world.verify(ev, n), "signature")


def test_attack04_ak_not_activated(world: Any) -> None:
    tpm = FakeTpm()
    pending, _ = begin_enrollment(tpm.enrollment_request(), image_id="img-A",
                                  policy=EnrollmentPolicy(allow_ek_without_cert=True))
    n = world.nonce()
    ev = tpm.quote(qualifying_data(n, world.session))
    e = refused(lambda: world.verify(ev, n, record=pending), "signature")
    assert "activation" in e.reason
    with pytest.raises(EnrollmentError):
        finish_enrollment(pending, b"\0" * 32)


def test_attack04_ak_not_under_this_ek() -> None:
    # the AK answered the challenge addressed to another EK: activation fails
    tpm, other = FakeTpm(), FakeTpm()
    _, challenge = begin_enrollment(tpm.enrollment_request(), image_id="i",
                                    policy=EnrollmentPolicy(allow_ek_without_cert=True))
    assert challenge is not None
    with pytest.raises(ValueError):  # the other EK cannot decrypt the seed
        other.activate(canonical.b64d(challenge["credential"], "c", 4096))


# 5 -----------------------------------------------------------------------------
def test_attack05_pcr_value_differs_from_reference(world: Any, tmp_path: Path) -> None:
    ref = make_reference(world.build_key, tmp_path,
                         pcrs={"11": "00" * 32, "12": "00" * 32, "13": "00" * 32})
    v = new_verifier(ref, world.clock)
    n = v.nonces.issue()
    ev = world.tpm.quote(qualifying_data(n, world.session))
    refused(lambda: v.verify(ev, world.record, n, world.session), "policy")


def test_attack05_pcr_value_differs_from_digest(world: Any) -> None:
    n = world.nonce()
    vals = world.tpm.pcr_values()
    sent = {i: vals[i] for i in TPM2_PCRS}
    sent[8] = b"\x11" * 32
    ev = good(world, n, send_pcrs=sent)
    refused(lambda: world.verify(ev, n), "pcr_digest")


def test_attack05_firmware_pcr_differs_from_enrolled(world: Any) -> None:
    rec = dict(world.record, firmware_pcrs={"0": "ab" * 32})
    n = world.nonce()
    refused(lambda: world.verify(good(world, n), n, record=rec), "policy")


# 6 -----------------------------------------------------------------------------
def test_attack06_quoted_set_smaller(world: Any) -> None:
    n = world.nonce()
    ev = good(world, n, pcrs=(0, 1, 2, 3, 4, 5, 6, 7))
    refused(lambda: world.verify(ev, n), "pcr_selection")
    # the set of the old verifier (without PCR 12 and 13) is no longer enough
    n = world.nonce()
    ev = good(world, n, pcrs=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11))
    e = refused(lambda: world.verify(ev, n), "pcr_selection")
    assert "12, 13" in e.reason


def test_attack06_values_not_quoted(world: Any) -> None:
    n = world.nonce()
    vals = world.tpm.pcr_values()
    sent = {i: vals[i] for i in (*TPM2_PCRS, 14)}
    ev = good(world, n, send_pcrs=sent)
    refused(lambda: world.verify(ev, n), "pcr_selection")


# 7 -----------------------------------------------------------------------------
def _tamper(events: list[Any], how: str) -> list[Any]:
    evs = list(events)
    idx = next(i for i, e in enumerate(evs) if e[1] == eventlog.EV_EFI_ACTION)
    if how == "changed":
        p, t, d, _ = evs[idx]
        evs[idx] = (p, t, d, b"Calling something else")
    elif how == "digest":
        p, t, _, data = evs[idx]
        evs[idx] = (p, t, {0x000B: b"\x42" * 32}, data)
    elif how == "dropped":
        del evs[next(i for i, e in enumerate(evs) if e[0] == 11)]
    elif how == "injected":
        evs.append((11, eventlog.EV_IPL, {0x000B: hashlib.sha256(b"x").digest()}, b"x"))
    elif how == "reordered":
        i11 = [i for i, e in enumerate(evs) if e[0] == 11]
        evs[i11[0]], evs[i11[1]] = evs[i11[1]], evs[i11[0]]
    elif how == "relabelled":
        i = next(i for i, e in enumerate(evs) if e[1] == eventlog.EV_SEPARATOR and e[0] == 7)
        p, _, d, data = evs[i]
        evs[i] = (p, eventlog.EV_EFI_ACTION, d, data)
    return evs


@pytest.mark.parametrize(
    "how", ["changed", "digest", "dropped", "injected", "reordered", "relabelled"])
def test_attack07_tampered_event_log(world: Any, how: str) -> None:
    n = world.nonce()
    ev = good(world, n, log=encode_log(_tamper(world.tpm.events, how)))
    refused(lambda: world.verify(ev, n), "event_log")


@pytest.mark.parametrize("label", [eventlog.EV_EFI_BOOT_SERVICES_DRIVER, eventlog.EV_IPL,
                                   eventlog.EV_COMPACT_HASH, eventlog.EV_EFI_ACTION])
def test_attack07_relabelled_boot_application(world: Any, label: int) -> None:
    # digest and PCR unchanged, only the type of the UKI's event: refused in the log
    evs = [(p, label if t == APP else t, d, data) for p, t, d, data in world.tpm.events]
    n = world.nonce()
    ev = good(world, n, log=encode_log(evs))
    e = refused(lambda: world.verify(ev, n), "event_log")
    assert "may not appear in PCR 4" in e.reason or "digest does not match" in e.reason


def test_attack07_empty_log(world: Any) -> None:
    # the log is parsed only after signature, nonce and PCR digest: its step is event_log
    n = world.nonce()
    refused(lambda: world.verify(good(world, n, log=b""), n), "event_log")
    n = world.nonce()
    e = refused(lambda: world.verify(good(world, n, log=encode_log([])), n), "event_log")
    assert "no events" in e.reason


def test_attack07_soft_relabelled(tmp_path: Path) -> None:
    w = SoftWorld(tmp_path)
    n = w.nonce()
    ev = decode(w.evidence(n))
    parsed = eventlog.parse(ev.event_log)
    last = parsed.events[-1]
    relabelled = eventlog.Event(last.index, last.pcr, eventlog.EV_EVENT_TAG, last.digests,
                                last.data)
    log = eventlog.encode(eventlog.EventLog(parsed.spec, (*parsed.events[:-1], relabelled)))
    forged = encode(dataclasses.replace(ev, event_log=log))
    refused(lambda: w.verify(forged, n), "event_log")


# 8 -----------------------------------------------------------------------------
def test_attack08_sha1_bank(world: Any) -> None:
    n = world.nonce()
    vals = {i: b"\0" * 20 for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11)}
    ev = good(world, n, bank=TPM_ALG_SHA1, send_pcrs=vals)
    refused(lambda: world.verify(ev, n), "hash_algorithm")


def test_attack08_other_signature_hash(world: Any) -> None:
    n = world.nonce()
    ev = good(world, n, sig_hash=TPM_ALG_SHA1)
    refused(lambda: world.verify(ev, n), "signature")


def test_attack08_other_signature_scheme(world: Any) -> None:
    n = world.nonce()
    obj = canonical.loads(good(world, n))
    sig = parse_signature(canonical.b64d(obj["signature"], "s", 1024))
    obj["signature"] = canonical.b64e(
        struct.pack(">HH", TPM_ALG_RSAPSS, sig.hash_alg) + tpm2b(sig.r + sig.s))
    refused(lambda: world.verify(canonical.dumps(obj), n), "signature")


def test_attack08_soft_evidence_for_tpm2_device(world: Any, tmp_path: Path) -> None:
    soft = SoftBackend(tmp_path / "soft", boot_id_path=_boot_id(tmp_path),
                       device_id=world.record["device_id"])
    n = world.nonce()
    ev = encode(soft.quote(qualifying_data(n, world.session)))
    e = refused(lambda: world.verify(ev, n), "signature")
    assert "downgrade" in e.reason


# 9 -----------------------------------------------------------------------------
def _mutate_quote(ev: bytes, fn: Any) -> bytes:
    obj = canonical.loads(ev)
    obj["quote"] = canonical.b64e(fn(canonical.b64d(obj["quote"], "q", 4096)))
    return canonical.dumps(obj)


@pytest.mark.parametrize("case", ["truncated", "trailing", "bad_length", "oversized",
                                  "json_trailing", "unknown_field", "log_truncated",
                                  "hex_space", "deep_json"])
def test_attack09_malformed(world: Any, case: str) -> None:
    n = world.nonce()
    ev = good(world, n)
    if case == "truncated":
        bad = _mutate_quote(ev, lambda q: q[:-3])
    elif case == "trailing":
        bad = _mutate_quote(ev, lambda q: q + b"\0")
    elif case == "bad_length":
        bad = _mutate_quote(ev, lambda q: q[:6] + b"\xff\xff" + q[8:])
    elif case == "oversized":
        obj = canonical.loads(ev)
        obj["event_log"] = canonical.b64e(b"\0" * (3 * 1024 * 1024))
        bad = canonical.dumps(obj)
    elif case == "json_trailing":
        bad = ev + b" "
    elif case == "unknown_field":
        obj = canonical.loads(ev)
        obj["extra"] = 1
        bad = canonical.dumps(obj)
    elif case == "hex_space":
        # bytes.fromhex would read "0a 1b..." as hex; the format says lower-case hex only
        obj = canonical.loads(ev)
        obj["ak_name"] = obj["ak_name"][:4] + " " + obj["ak_name"][4:]
        bad = canonical.dumps(obj)
    elif case == "deep_json":
        bad = b"[" * 100_000 + b"]" * 100_000
    else:
        # a truncated log is refused where the log is first read: after the cheap steps
        obj = canonical.loads(ev)
        obj["event_log"] = canonical.b64e(canonical.b64d(obj["event_log"], "l", 1 << 22)[:-5])
        bad = canonical.dumps(obj)
        refused(lambda: world.verify(bad, n), "event_log")
        n2 = world.nonce()
        world.verify(good(world, n2), n2)  # control: a genuine quote passes
        return
    refused(lambda: world.verify(bad, n), "parse")
    # control: the genuine evidence passes, with the same nonce (a refusal at parse does not
    # touch the nonce store)
    world.verify(ev, n)


# 10 ----------------------------------------------------------------------------
@pytest.mark.parametrize("field,last", [
    ("reset", {"reset_count": 2, "restart_count": 0, "clock": 0}),
    ("restart", {"reset_count": 1, "restart_count": 3, "clock": 0}),
    ("clock", {"reset_count": 1, "restart_count": 0, "clock": 999_999}),
])
def test_attack10_clock_rollback(world: Any, field: str, last: dict[str, int]) -> None:
    rec = dict(world.record, last_clock=last)
    n = world.nonce()
    refused(lambda: world.verify(good(world, n), n, record=rec), "clock")


def test_attack10_unsafe_clock(world: Any) -> None:
    world.tpm.safe = 0
    n = world.nonce()
    refused(lambda: world.verify(good(world, n), n), "clock")


def test_attack10_accepts_new_boot(world: Any) -> None:
    rec = dict(world.record, last_clock={"reset_count": 0, "restart_count": 9, "clock": 10**9})
    n = world.nonce()
    world.verify(good(world, n), n, record=rec)


# 11 ----------------------------------------------------------------------------
def test_attack11_revoked_device(world: Any) -> None:
    n = world.nonce()
    refused(lambda: world.verify(good(world, n), n,
                                 record=dict(world.record, status="revoked")), "revocation")
    world.verifier.policy.revoked_devices.add(world.record["device_id"])
    n = world.nonce()
    refused(lambda: world.verify(good(world, n), n), "revocation")


def test_attack11_revoked_image(world: Any) -> None:
    world.verifier.policy.revoked_images.add("img-A")
    n = world.nonce()
    refused(lambda: world.verify(good(world, n), n), "revocation")


def test_attack11_reference_untrusted_key(world: Any, tmp_path: Path) -> None:
    out = tmp_path / "untrusted"
    out.mkdir()
    rogue = Ed25519PrivateKey.generate()
    write_signed_reference(out, dict(world.ref), rogue)
    with pytest.raises(ReferenceValueError, match="trusted"):
        load_reference(out / "reference.json", [world.build_key.public_key()])
    # without a trusted reference, the verifier refuses at the policy step
    v = new_verifier(world.ref, world.clock)
    v.references.clear()
    n = v.nonces.issue()
    ev = world.tpm.quote(qualifying_data(n, world.session))
    refused(lambda: v.verify(ev, world.record, n, world.session), "policy")
    # and the admin CLI says so
    from attestation.admin_cli import attest_group

    (tmp_path / "pub.pem").write_bytes(public_key_pem(world.build_key))
    (tmp_path / "rec.json").write_bytes(canonical.dumps(world.record))
    (tmp_path / "ev.json").write_bytes(ev)
    res = CliRunner().invoke(attest_group, [
        "verify", "--reference", str(out / "reference.json"), "--build-key",
        str(tmp_path / "pub.pem"), "--enrollment", str(tmp_path / "rec.json"),
        str(tmp_path / "ev.json"), "--nonce", n.hex(), "--session", world.session.hex()])
    assert res.exit_code == 1 and res.output.startswith("refused: policy:"), res.output


def test_attack11_tampered_reference(world: Any, tmp_path: Path) -> None:
    body = (tmp_path / "reference.json").read_bytes().replace(b"img-A", b"img-B")
    (tmp_path / "reference.json").write_bytes(body)
    with pytest.raises(ReferenceValueError):
        load_reference(tmp_path / "reference.json", [world.build_key.public_key()])


# 12 ----------------------------------------------------------------------------
def test_attack12_relay(world: Any) -> None:
    # the genuine terminal answered a nonce in ITS session; the relaying machine has
    # its own SSH session (another exchange hash) and forwards the quote.
    n = world.nonce()
    genuine_session = b"G" * 32
    ev = world.tpm.quote(qualifying_data(n, genuine_session))
    e = refused(lambda: world.verify(ev, n, session=b"R" * 32), "qualifying_data")
    assert "session" in e.reason


# 13 ----------------------------------------------------------------------------
def test_attack13_rebuilt_uki_other_cmdline(world: Any) -> None:
    rebuilt = FakeTpm(ek=world.tpm.ek, ak=world.tpm.ak,
                      auth=hashlib.sha256(b"uki-B").digest(),
                      cmdline="roothash=aa console=ttyS0 init=/bin/sh")
    rebuilt.device_id = world.tpm.device_id
    n = world.nonce()
    ev = rebuilt.quote(qualifying_data(n, world.session))
    e = refused(lambda: world.verify(ev, n), "policy")
    assert "PCR 4" in e.reason


def test_attack13_other_image_id(world: Any) -> None:
    rec = dict(world.record, image_id="img-B")  # enrolled with another image
    n = world.nonce()
    refused(lambda: world.verify(good(world, n), n, record=rec), "policy")


def test_attack13_soft_other_cmdline(tmp_path: Path) -> None:
    w = SoftWorld(tmp_path, cmdline="roothash=aa console=ttyS0 init=/bin/sh")
    n = w.nonce()
    refused(lambda: w.verify(w.evidence(n), n), "policy")


# soft helpers --------------------------------------------------------------------
def _boot_id(tmp: Path, value: str = "boot-1") -> Path:
    p = tmp / "boot_id"
    p.write_text(value + "\n")
    return p


class SoftWorld:
    def __init__(self, tmp: Path, cmdline: str = "roothash=aa console=ttyS0",
                 allow_soft: bool = True) -> None:
        from attest_helpers import Clock

        from attestation.enroll import TokenStore

        (tmp / "cmdline").write_text(cmdline + "\n")
        self.uki = tmp / "BOOTX64.EFI"
        self.uki.write_bytes(b"uki-file")
        self.backend = SoftBackend(tmp / "state", boot_id_path=_boot_id(tmp),
                                   cmdline_path=tmp / "cmdline", uki_paths=(self.uki,))
        tokens = TokenStore()
        req = self.backend.enrollment_request(tokens.issue())
        self.record, _ = begin_enrollment(req, image_id="img-A",
                                          policy=EnrollmentPolicy(allow_soft=True),
                                          tokens=tokens)
        self.build_key = Ed25519PrivateKey.generate()
        refdir = tmp / "ref"
        refdir.mkdir()
        ref = make_reference(self.build_key, refdir)
        self.clock = Clock()
        self.verifier = new_verifier(ref, self.clock, allow_soft=allow_soft)
        self.session = b"s" * 32

    def nonce(self) -> bytes:
        return self.verifier.nonces.issue()

    def evidence(self, nonce: bytes) -> bytes:
        return encode(self.backend.quote(qualifying_data(nonce, self.session)))

    def verify(self, ev: bytes, nonce: bytes) -> Any:
        return self.verifier.verify(ev, self.record, nonce, self.session)


def test_soft_good_path(tmp_path: Path) -> None:
    w = SoftWorld(tmp_path)
    n = w.nonce()
    res = w.verify(w.evidence(n), n)
    assert res.mode == "soft"
    assert (tmp_path / "state" / "ak.key").stat().st_mode & 0o777 == 0o600


def test_soft_refused_when_policy_disallows(tmp_path: Path) -> None:
    w = SoftWorld(tmp_path, allow_soft=False)
    n = w.nonce()
    refused(lambda: w.verify(w.evidence(n), n), "policy")


def test_soft_reset_counter_bumps_each_boot(tmp_path: Path) -> None:
    w = SoftWorld(tmp_path)
    n = w.nonce()
    r1 = w.verify(w.evidence(n), n)
    _boot_id(tmp_path, "boot-2")
    n = w.nonce()
    r2 = w.verifier.verify(w.evidence(n), r1.record, n, w.session)
    assert r2.clock.reset_count == r1.clock.reset_count + 1


def test_soft_token_single_use_and_policy(tmp_path: Path) -> None:
    from attestation.enroll import TokenStore

    tokens = TokenStore()
    b = SoftBackend(tmp_path / "s", boot_id_path=_boot_id(tmp_path))
    tok = tokens.issue()
    with pytest.raises(EnrollmentError, match="soft"):
        begin_enrollment(b.enrollment_request(tok), image_id="i",
                         policy=EnrollmentPolicy(allow_soft=False), tokens=tokens)
    begin_enrollment(b.enrollment_request(tok), image_id="i",
                     policy=EnrollmentPolicy(allow_soft=True), tokens=tokens)
    with pytest.raises(EnrollmentError, match="token"):
        begin_enrollment(b.enrollment_request(tok), image_id="i",
                         policy=EnrollmentPolicy(allow_soft=True), tokens=tokens)


# 7, UEFI variable events ---------------------------------------------------------
@pytest.mark.parametrize("which", ["BootOrder", "SecureBoot"])
def test_attack07_uefi_variable_data_changed(world: Any, which: str) -> None:
    """Changing a measured UEFI variable's data (e.g. SecureBoot=1 shown for a 0 boot)."""
    n = world.nonce()
    ev = decode(good(world, n))
    log = eventlog.parse(ev.event_log)
    events = list(log.events)
    for i, e in enumerate(events):
        if e.type in (eventlog.EV_EFI_VARIABLE_BOOT, eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG) \
                and which.encode("utf-16-le") in e.data:
            events[i] = dataclasses.replace(e, data=e.data[:-1] + bytes([e.data[-1] ^ 1]))
            break
    else:
        pytest.fail(f"no {which} event in the synthetic log")
    tampered = encode(dataclasses.replace(
        ev, event_log=eventlog.encode(dataclasses.replace(log, events=tuple(events)))))
    e = refused(lambda: world.verify(tampered, n), "event_log")
    assert "UEFI variable" in e.reason
