"""Issue 11: the boot trust chain. Each attack is refused AND names its step (and PCR);
beside each, a control that the genuine variant of the same evidence passes.

The fake TPM (attest_helpers) measures what OVMF and systemd-stub measure for our images:
with Secure Boot on the UKI is the only PCR 4 boot application and PCR 7 ends with the
db certificate that verified it; with Secure Boot off the stub's kernel follows the UKI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from attest_helpers import (
    APP,
    AUTH,
    CALLING,
    LINUX_AUTH,
    OTHER_CERT,
    FakeTpm,
    build_log,
    encode_log,
    make_ek_ca,
    make_ek_cert,
    make_reference,
    new_verifier,
    replay,
    uefi_var,
)

from attestation import canonical, eventlog, uefi
from attestation.errors import VerificationError
from attestation.evidence import decode, encode
from attestation.logcheck import LogCache
from attestation.verifier import Verifier, qualifying_data

SHA256 = 0x000B
ZERO = b"\0" * 32


def refused(fn: Any, step: str, *words: str) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        fn()
    err = info.value
    assert err.step == step, f"{err.step}: {err.reason}"
    for w in words:
        assert w in err.reason, err.reason
    return err


def twin(world: Any, **kw: Any) -> FakeTpm:
    """The world's TPM (same EK and AK, so the same enrolled device) in another boot state."""
    tpm = FakeTpm(ek=world.tpm.ek, ak=world.tpm.ak, **kw)
    tpm.device_id = world.tpm.device_id
    return tpm


def with_events(tpm: FakeTpm, events: list[Any]) -> FakeTpm:
    """The TPM after exactly these events: its PCRs are their replay, its log them."""
    tpm.events = events
    return tpm


def verify(world: Any, tpm: FakeTpm, verifier: Verifier | None = None,
           record: dict[str, Any] | None = None) -> Any:
    v = verifier or world.verifier
    n = v.nonces.issue()
    ev = tpm.quote(qualifying_data(n, world.session))
    return v.verify(ev, record or world.record, n, world.session)


def lenient(world: Any, **policy: Any) -> Verifier:
    """A verifier like the world's with another policy (e.g. Secure Boot not required)."""
    return new_verifier(world.ref, world.clock, **policy)


# PCR 4: the exact ordered boot applications ------------------------------------------


def _app_event(digest: bytes) -> tuple[int, int, dict[int, bytes], bytes]:
    path = struct.pack("<QQQQ", 0x7E000000, 0x1000, 0, 4) + b"\x7f\xff\x04\x00"
    return (4, APP, {SHA256: digest}, path)


def _index(events: list[Any], pcr: int, typ: int, nth: int = 0) -> int:
    return [i for i, e in enumerate(events) if e[0] == pcr and e[1] == typ][nth]


CHAINLOADER = hashlib.sha256(b"a chainloader (shim, grub, another OS)").digest()


def test_pcr4_genuine_boot_paths_are_accepted(world: Any) -> None:
    assert verify(world, world.tpm).secure_boot is True              # [UKI]
    off = verify(world, twin(world, secure_boot=False), lenient(world, require_secure_boot=False))
    assert off.secure_boot is False                                  # [UKI, kernel]


def test_pcr4_chainloader_before_the_uki_is_refused(world: Any) -> None:
    """Another loader runs first and then extends the genuine UKI digest (and PCR 11) itself:
    every genuine event is there, and the replay matches the quote."""
    events = build_log()
    events.insert(_index(events, 4, APP), _app_event(CHAINLOADER))
    tpm = with_events(twin(world), events)
    refused(lambda: verify(world, tpm), "policy", "PCR 4", "ran before the UKI")


@pytest.mark.parametrize("case", ["extra-after", "missing-kernel", "reordered", "other-uki"])
def test_pcr4_any_other_application_list_is_refused(world: Any, case: str) -> None:
    events = build_log(secure_boot=False)
    apps = [i for i, e in enumerate(events) if e[0] == 4 and e[1] == APP]
    if case == "extra-after":
        events.insert(apps[-1] + 1, _app_event(CHAINLOADER))
        words = ["extra application"]
    elif case == "missing-kernel":
        del events[apps[1]]
        words = ["missing"]
    elif case == "reordered":
        events[apps[0]], events[apps[1]] = events[apps[1]], events[apps[0]]
        words = ["ran before the UKI"]
    else:
        events[apps[0]] = _app_event(hashlib.sha256(b"uki-B").digest())
        words = ["ran where the UKI"]
    v = lenient(world, require_secure_boot=False)
    refused(lambda: verify(world, with_events(twin(world, secure_boot=False), events), v),
            "policy", "PCR 4", *words)
    # control: the untouched Secure-Boot-off path passes the same verifier
    assert verify(world, twin(world, secure_boot=False), v).image_id == "img-A"


def test_pcr4_secure_boot_state_selects_the_list(world: Any) -> None:
    """Secure Boot measured on, but the kernel was measured too (the stub's own loading
    path was not taken): not what this image does with Secure Boot on."""
    events = build_log(secure_boot=True)
    events.insert(_index(events, 4, APP) + 1, _app_event(LINUX_AUTH))
    refused(lambda: verify(world, with_events(twin(world), events)), "policy", "PCR 4",
            "Secure Boot on", "extra application")


# PCR 12 and 13: nothing passed in ------------------------------------------------------


def test_pcr12_boot_loader_command_line_is_refused(world: Any) -> None:
    tpm = twin(world, secure_boot=False, loader_cmdline="init=/bin/sh")
    for v in (world.verifier, lenient(world, require_secure_boot=False)):
        refused(lambda v=v: verify(world, tpm, v), "policy", "PCR 12",
                "boot-loader command line")
    # control: the same boot without the command line (Secure Boot not required)
    assert verify(world, twin(world, secure_boot=False),
                  lenient(world, require_secure_boot=False)).pcrs[12] == ZERO


def test_pcr13_system_extension_is_refused(world: Any) -> None:
    events = build_log()
    sysext = b"extension.raw"
    events.append((13, eventlog.EV_IPL, {SHA256: hashlib.sha256(sysext).digest()}, sysext))
    refused(lambda: verify(world, with_events(twin(world), events)), "policy", "PCR 13",
            "system extension")
    assert verify(world, twin(world)).pcrs[13] == ZERO


# PCR 7: Secure Boot --------------------------------------------------------------------


def test_pcr7_secure_boot_off_is_refused(world: Any) -> None:
    tpm = twin(world, secure_boot=False)
    refused(lambda: verify(world, tpm), "policy", "PCR 7", "Secure Boot is off")
    # control: only a verifier told loudly not to require Secure Boot accepts it
    v = lenient(world, require_secure_boot=False)
    assert any("NOT required" in w for w in v.policy.warnings())
    assert verify(world, tpm, v).secure_boot is False


def test_pcr7_device_first_seen_without_secure_boot_stays_refused(world: Any) -> None:
    """Trust on first use of PCR 7 does not make Secure Boot optional."""
    tpm = twin(world, secure_boot=False)
    first = verify(world, tpm, lenient(world, require_secure_boot=False))
    assert "7" in first.record["firmware_pcrs"]
    refused(lambda: verify(world, tpm, record=first.record), "policy", "PCR 7",
            "Secure Boot is off")


def test_pcr7_uki_verified_by_another_db_certificate_is_refused(world: Any) -> None:
    tpm = twin(world, db_cert=OTHER_CERT)
    refused(lambda: verify(world, tpm), "policy", "PCR 7", "not the image's db certificate")
    assert verify(world, twin(world)).secure_boot is True


def test_pcr7_unsigned_image_is_refused(world: Any, tmp_path: Path) -> None:
    ref = make_reference(world.build_key, tmp_path, db_cert=None)
    v = new_verifier(ref, world.clock)
    refused(lambda: verify(world, world.tpm, v), "policy", "PCR 7", "not signed")
    assert verify(world, world.tpm, new_verifier(ref, world.clock, require_secure_boot=False))


@pytest.mark.parametrize("case", ["no-secureboot-variable", "no-authority", "no-pk"])
def test_pcr7_incomplete_secure_boot_measurements_are_refused(world: Any, case: str) -> None:
    events = build_log()
    if case == "no-secureboot-variable":
        events = [e for e in events if b"S\0e\0c\0u\0r\0e\0B\0o\0o\0t" not in e[3]]
        words = ["SecureBoot variable was not measured"]
    elif case == "no-authority":
        events = [e for e in events if e[1] != eventlog.EV_EFI_VARIABLE_AUTHORITY]
        words = ["no EV_EFI_VARIABLE_AUTHORITY"]
    else:
        events = [e for e in events
                  if not (e[1] == eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG
                          and e[3][32:36] == "PK".encode("utf-16-le"))]
        words = ["PK"]
    refused(lambda: verify(world, with_events(twin(world), events)), "policy", "PCR 7", *words)


def test_pcr7_changed_pk_after_enrollment_is_refused(world: Any) -> None:
    first = verify(world, world.tpm)
    events = build_log()
    i = next(i for i, e in enumerate(events) if e[3][32:36] == "PK".encode("utf-16-le"))
    pk = uefi_var("PK", b"\x01" * 16 + b"another platform key")
    events[i] = (7, eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG, {SHA256: hashlib.sha256(pk).digest()},
                 pk)
    refused(lambda: verify(world, with_events(twin(world), events), record=first.record),
            "policy", "firmware PCR 7 differs from the enrolled value")
    assert verify(world, twin(world, clock=1001), record=first.record)


# the event log's structure ---------------------------------------------------------------


def _tamper_refused(world: Any, events: list[Any], *words: str) -> None:
    refused(lambda: verify(world, with_events(twin(world), events)), "event_log", *words)
    assert verify(world, twin(world)).image_id == "img-A"   # control: the genuine log


def test_no_action_event_with_a_digest_is_refused(world: Any) -> None:
    events = build_log()
    events.insert(3, (0, eventlog.EV_NO_ACTION, {SHA256: b"\x01" * 32}, b"note"))
    _tamper_refused(world, events, "EV_NO_ACTION with a non-zero digest")


def test_startup_locality_first_is_accepted_and_anywhere_else_refused(world: Any) -> None:
    locality = (0, eventlog.EV_NO_ACTION, {SHA256: ZERO},
                eventlog.STARTUP_LOCALITY_SIGNATURE + b"\x03")
    first = [locality, *build_log()]
    assert replay(first)[0] != replay(build_log())[0]
    assert verify(world, with_events(twin(world), first)).image_id == "img-A"
    mid = build_log()
    mid.insert(5, locality)
    _tamper_refused(world, mid, "StartupLocality is not the first PCR 0 event")


@pytest.mark.parametrize("pcr", [10, 14, 15, 16, 23])
def test_event_for_a_pcr_outside_the_quote_is_refused(world: Any, pcr: int) -> None:
    events = build_log()
    events.append((pcr, eventlog.EV_IPL, {SHA256: hashlib.sha256(b"x").digest()}, b"x"))
    _tamper_refused(world, events, f"PCR {pcr} is not quoted")


@pytest.mark.parametrize(("pcr", "typ"), [
    (4, eventlog.EV_IPL), (4, eventlog.EV_EFI_BOOT_SERVICES_DRIVER),
    (11, eventlog.EV_EFI_BOOT_SERVICES_APPLICATION), (0, eventlog.EV_EFI_VARIABLE_AUTHORITY),
    (12, eventlog.EV_EFI_ACTION), (4, eventlog.EV_COMPACT_HASH), (3, 0x1234),
    (4, eventlog.EV_PREBOOT_CERT), (4, eventlog.EV_IPL_PARTITION_DATA),
])
def test_event_type_outside_its_pcrs_is_refused(world: Any, pcr: int, typ: int) -> None:
    events = build_log()
    events.insert(-2, (pcr, typ, {SHA256: hashlib.sha256(b"x").digest()}, b"x"))
    _tamper_refused(world, events, f"0x{typ:08x}")


def test_secure_boot_configuration_after_the_separator_is_refused(world: Any) -> None:
    events = build_log()
    sb = next(e for e in events if e[0] == 7 and e[1] == eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG)
    events.remove(sb)
    events.insert(_index(events, 7, eventlog.EV_SEPARATOR) + 1, sb)
    _tamper_refused(world, events, "after PCR 7's separator")


def test_authority_relabelled_as_configuration_is_refused(world: Any) -> None:
    """The two variable types hash the same bytes, so a relabel keeps the digest right."""
    events = build_log()
    i = _index(events, 7, eventlog.EV_EFI_VARIABLE_AUTHORITY)
    pcr, _, d, data = events[i]
    events[i] = (pcr, eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG, d, data)
    _tamper_refused(world, events, "after PCR 7's separator")


def test_action_event_relabelled_into_pcr4_application_is_refused(world: Any) -> None:
    events = build_log()
    i = next(i for i, e in enumerate(events) if e[3] == CALLING)
    pcr, _, d, data = events[i]
    events[i] = (pcr, APP, d, data)           # "an application ran" where none did
    refused(lambda: verify(world, with_events(twin(world), events)), "policy", "PCR 4")


# EK parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(("exponent", "modulus", "words"), [
    (1, None, "exponent must be 65537"),
    (3, None, "exponent must be 65537"),
    (0, b"\xc3" * 255 + b"\x02", "odd"),            # even modulus
    (0, b"\x01" + b"\x01" * 255, "2048-bit"),       # top bit clear: a 2041-bit modulus
    (0, b"\xff" * 256, None),                      # odd, 2048 bits, but no RSA key: fine
])
def test_ek_parameters_are_checked_without_crashing(exponent: int, modulus: bytes | None,
                                                   words: str | None) -> None:
    from attest_helpers import rsa_ek_public_area, tpm2b

    from attestation.enroll import EnrollmentPolicy, begin_enrollment
    from attestation.errors import EnrollmentError
    from attestation.tpm2 import tpm_device_id

    tpm = FakeTpm()
    request = tpm.enrollment_request()
    ek = tpm2b(rsa_ek_public_area(tpm.ek.public_key(), exponent, modulus))
    request.update(ek_public=canonical.b64e(ek), device_id=tpm_device_id(ek))
    policy = EnrollmentPolicy(allow_ek_without_cert=True)
    if words is None:
        record, challenge = begin_enrollment(request, image_id="img-A", policy=policy)
        assert challenge is not None and record["status"] == "pending"
        return
    with pytest.raises(EnrollmentError, match=words):
        begin_enrollment(request, image_id="img-A", policy=policy)


# nonces and clock ---------------------------------------------------------------------------


def test_nonce_has_a_fixed_length(world: Any) -> None:
    from attestation.nonces import NonceReused

    n = world.nonce()
    ev = world.tpm.quote(qualifying_data(n[:31], world.session))
    refused(lambda: world.verifier.verify(ev, world.record, n[:31], world.session),
            "qualifying_data", "31 bytes")
    with pytest.raises(NonceReused, match="32 bytes"):
        world.verifier.nonces.add(b"\x01" * 16)
    assert world.verify(world.tpm.quote(qualifying_data(n, world.session)), n)


def test_used_nonce_cannot_be_added_back(world: Any) -> None:
    from attestation.nonces import NonceReused

    n = world.nonce()
    ev = world.tpm.quote(qualifying_data(n, world.session))
    world.verify(ev, n)
    with pytest.raises(NonceReused):
        world.verifier.nonces.add(n)
    refused(lambda: world.verify(ev, n), "qualifying_data", "already used")
    # an expired one is retired for good too
    old = world.nonce()
    world.clock.t += 31
    assert world.verifier.nonces.consume(old) == "nonce expired"
    with pytest.raises(NonceReused):
        world.verifier.nonces.add(old)
    # and an outstanding one cannot be registered twice
    fresh = world.nonce()
    with pytest.raises(NonceReused):
        world.verifier.nonces.add(fresh)


def test_clock_must_strictly_advance_within_a_boot(world: Any) -> None:
    first = verify(world, world.tpm)
    refused(lambda: verify(world, world.tpm, record=first.record), "clock", "did not advance")
    world.tpm.clock += 1
    assert verify(world, world.tpm, record=first.record).clock.clock == 1001


# cheap refusals: order, and what junk costs -----------------------------------------------


class CountingNonces:
    """A nonce store that records whether the verifier asked it (NonceConsumer protocol)."""

    def __init__(self) -> None:
        self.calls = 0

    def consume(self, nonce: bytes) -> str | None:
        self.calls += 1
        return "nonce unknown"


def test_junk_with_a_bad_signature_is_refused_before_nonce_and_log(world: Any) -> None:
    nonces = CountingNonces()
    v = Verifier(world.verifier.policy, nonces, world.verifier.references)
    n = b"\x33" * 32
    ev = decode(world.tpm.quote(qualifying_data(n, world.session)))
    junk = encode(dataclasses.replace(
        ev, signature=ev.signature[:-1] + bytes([ev.signature[-1] ^ 1]),
        event_log=b"\x00" * 200_000))                      # not even a log
    refused(lambda: v.verify(junk, world.record, n, world.session), "signature")
    assert nonces.calls == 0 and v.logs.misses == 0
    # control: a genuine signature reaches the nonce step (and this store refuses it)
    good = world.tpm.quote(qualifying_data(n, world.session))
    refused(lambda: v.verify(good, world.record, n, world.session), "qualifying_data")
    assert nonces.calls == 1


def test_log_cache_never_skips_the_replay(world: Any) -> None:
    verify(world, world.tpm)
    before = world.verifier.logs.hits
    # the same log bytes (a cache hit) with a PCR value the log does not give
    n = world.nonce()
    vals = world.tpm.pcr_values()
    vals[8] = hashlib.sha256(b"something measured").digest()
    ev = _quote_values(world, n, vals)
    refused(lambda: world.verify(ev, n), "event_log", "replay does not reproduce PCR 8")
    assert world.verifier.logs.hits == before + 1
    # and a cached refusal is still a refusal
    bad = build_log()
    bad.insert(3, (0, eventlog.EV_NO_ACTION, {SHA256: b"\x02" * 32}, b"n"))
    for _ in range(2):
        refused(lambda: verify(world, with_events(twin(world), list(bad))), "event_log")


def _quote_values(world: Any, nonce: bytes, values: dict[int, bytes]) -> bytes:
    """A correctly signed quote over ``values`` with the genuine log attached."""
    tpm = twin(world)
    tpm.pcr_values = lambda: values  # type: ignore[method-assign]
    return tpm.quote(qualifying_data(nonce, world.session), log=encode_log(build_log()))


def test_log_cache_is_bounded() -> None:
    cache = LogCache(size=4)
    for i in range(10):
        log = encode_log(build_log(cmdline=f"console=ttyS{i}"))
        cache.facts(canonical.b64e(log), "tpm2", (*range(10), 11, 12, 13))
    assert len(cache._entries) == 4 and cache.misses == 10


# enrollment helpers for the gateway ---------------------------------------------------------


def test_booted_uki_names_the_reference_image(world: Any, tmp_path: Path) -> None:
    from attestation.enroll import assign_image
    from attestation.errors import EvidenceError
    from attestation.reference import image_for_boot
    from attestation.verifier import booted_uki

    n = world.nonce()
    ev = world.tpm.quote(qualifying_data(n, world.session))
    mode, digest = booted_uki(ev)
    assert (mode, digest) == ("tpm2", AUTH.hex())
    refs = {"img-A": world.ref}
    assert image_for_boot(refs, mode, digest) == "img-A"
    assert image_for_boot(refs, mode, hashlib.sha256(b"uki-B").hexdigest()) is None
    record = assign_image(world.record, "img-A")
    assert world.verifier.verify(ev, record, n, world.session).image_id == "img-A"
    with pytest.raises(EvidenceError):
        booted_uki(b"{}")


def test_verify_and_cli_survive_deep_nesting(world: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from attestation.admin_cli import attest_group
    from attestation.reference import public_key_pem

    deep = b"[" * 50_000 + b"]" * 50_000
    n = world.nonce()
    refused(lambda: world.verify(deep, n), "parse", "nested deeper")
    nested: Any = {}
    for _ in range(5000):
        nested = {"a": nested}
    refused(lambda: world.verify(world.tpm.quote(qualifying_data(n, world.session)), n,
                                 record=nested), "parse")
    (tmp_path / "pub.pem").write_bytes(public_key_pem(world.build_key))
    (tmp_path / "deep.json").write_bytes(deep)
    (tmp_path / "rec.json").write_bytes(canonical.dumps(world.record))
    base = ["verify", "--reference", str(tmp_path / "reference.json"), "--build-key",
            str(tmp_path / "pub.pem"), "--nonce", n.hex(), "--session", world.session.hex()]
    res = CliRunner().invoke(attest_group, [*base, "--enrollment", str(tmp_path / "rec.json"),
                                            str(tmp_path / "deep.json")])
    assert res.exit_code == 1 and res.output.startswith("refused: parse:"), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    res = CliRunner().invoke(attest_group, [*base, "--enrollment", str(tmp_path / "deep.json"),
                                            str(tmp_path / "deep.json")])
    assert res.exit_code == 2 and "nested deeper" in res.output, res.output
    assert isinstance(res.exception, SystemExit)


def test_uefi_variable_names_and_guids(world: Any) -> None:
    """SecureBoot measured under a vendor GUID is not the global variable."""
    events = build_log()
    i = next(i for i, e in enumerate(events) if b"S\0e\0c\0u\0r\0e" in e[3])
    fake = uefi.encode_variable(b"\x11" * 16, "SecureBoot", b"\x01")
    events[i] = (7, eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG,
                 {SHA256: hashlib.sha256(fake).digest()}, fake)
    refused(lambda: verify(world, with_events(twin(world), events)), "event_log",
            "malformed SecureBoot variable")



# EK certificates (certificates made here; tests/attestation/test_attest_swtpm.py checks the
# ones swtpm_setup issues into a real TPM's NV) ------------------------------------------


@pytest.mark.parametrize("case", ["other-key", "other-ca", "not-a-ca", "garbage", "padded"])
def test_ek_certificate_is_checked(case: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from attestation.enroll import EnrollmentPolicy, begin_enrollment
    from attestation.errors import EnrollmentError

    ca = make_ek_ca()
    tpm = FakeTpm()
    good = make_ek_cert(ca, tpm.ek.public_key())
    bundle = (ca[1],)
    if case == "other-key":
        tpm.ek_cert, words = make_ek_cert(ca, rsa.generate_private_key(65537, 2048).public_key()), \
            "for another key"
    elif case == "other-ca":
        tpm.ek_cert, words = make_ek_cert(make_ek_ca(), tpm.ek.public_key()), "not signed by a CA"
    elif case == "not-a-ca":
        weak = make_ek_ca(ca_flag=False)
        tpm.ek_cert, bundle, words = make_ek_cert(weak, tpm.ek.public_key()), (weak[1],), \
            "not signed by a CA"
    elif case == "garbage":
        tpm.ek_cert, words = good[:40] + b"\xff" * 40, "not DER X.509"
    else:
        tpm.ek_cert, words = good + b"\xff" * 200, None     # NV areas pad after the DER
    for allow in (False, True):      # a certificate that fails is refused even when allowed
        policy = EnrollmentPolicy(ek_ca_bundle=bundle, allow_ek_without_cert=allow)
        if words is None:
            record, _ = begin_enrollment(tpm.enrollment_request(), image_id="i", policy=policy)
            assert record["ek_cert"] == "checked"
            continue
        with pytest.raises(EnrollmentError, match=words):
            begin_enrollment(tpm.enrollment_request(), image_id="i", policy=policy)
    # control: the same TPM with its genuine certificate
    tpm.ek_cert = good
    record, _ = begin_enrollment(tpm.enrollment_request(), image_id="i",
                                 policy=EnrollmentPolicy(ek_ca_bundle=(ca[1],)))
    assert record["ek_cert"] == "checked"
