"""Test helpers: a pure-Python stand-in TPM that produces tpm2-mode evidence.

It builds the same bytes a TPM would (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE) with
keys held in Python, so attack cases can forge anything a real attacker could.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from attestation import canonical, eventlog, uefi
from attestation.credential import kdfa
from attestation.enroll import EnrollmentPolicy, begin_enrollment, finish_enrollment
from attestation.evidence import Evidence
from attestation.evidence import encode as encode_evidence
from attestation.nonces import NonceStore
from attestation.policy import Policy
from attestation.reference import verify_reference_bytes, write_signed_reference
from attestation.tpm_structs import (
    TPM_ALG_ECDSA,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    ClockInfo,
    PcrSelection,
    Signature,
    encode_attest_quote,
    encode_signature,
    parse_tpm2b_public,
    pcr_digest,
)
from attestation.verifier import Verifier, qualifying_data

EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
AK_ATTRS = 0x00050072
EK_ATTRS = 0x000300B2
TPM2_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13)
APP = eventlog.EV_EFI_BOOT_SERVICES_APPLICATION
AUTH = hashlib.sha256(b"uki-A").digest()            # the UKI's Authenticode digest
LINUX_AUTH = hashlib.sha256(b"linux-A").digest()    # the kernel the stub loads from it
CMDLINE = "roothash=aa console=ttyS0"
DB_CERT = b"0\x82\x03\x17 the test db certificate (DER stand-in)"
OTHER_CERT = b"0\x82\x03\x17 someone else's db certificate"
OWNER = uuid.UUID("5b1f8a52-6f3e-4c1b-9d0e-a0d1c7e0b0b5").bytes_le
CALLING = b"Calling EFI Application from Boot Option"
CERT_TIME = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
Events = list[tuple[int, int, dict[int, bytes], bytes]]


def tpm2b(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def ecc_public_area(key: ec.EllipticCurvePublicKey, attrs: int = AK_ATTRS) -> bytes:
    n = key.public_numbers()
    return (
        struct.pack(">HHI", 0x0023, 0x000B, attrs) + tpm2b(b"")
        + struct.pack(">H", 0x0010) + struct.pack(">HH", 0x0018, 0x000B)
        + struct.pack(">H", 0x0003) + struct.pack(">H", 0x0010)
        + tpm2b(n.x.to_bytes(32, "big")) + tpm2b(n.y.to_bytes(32, "big"))
    )


def rsa_ek_public_area(key: rsa.RSAPublicKey, exponent: int = 0,
                       modulus: bytes | None = None) -> bytes:
    n = modulus if modulus is not None else key.public_numbers().n.to_bytes(256, "big")
    return (
        struct.pack(">HHI", 0x0001, 0x000B, EK_ATTRS) + tpm2b(EK_POLICY)
        + struct.pack(">HHH", 0x0006, 128, 0x0043) + struct.pack(">H", 0x0010)
        + struct.pack(">HI", 2048, exponent) + tpm2b(n)
    )


def uefi_var(name: str, data: bytes, guid: bytes = uefi.EFI_GLOBAL_VARIABLE) -> bytes:
    """UEFI_VARIABLE_DATA: GUID, name length, data length, UTF-16 name, data."""
    return uefi.encode_variable(guid, name, data)


def build_log(auth: bytes = AUTH, cmdline: str = CMDLINE,
              banks: tuple[int, ...] = (TPM_ALG_SHA256,), *, secure_boot: bool = True,
              db_cert: bytes = DB_CERT, linux: bytes = LINUX_AUTH,
              loader_cmdline: str | None = None) -> Events:
    """An OVMF + systemd-stub boot as the real logs of our images show it.

    Secure Boot on: PK/KEK/db/dbx measured, the UKI verified by db_cert (an authority
    event after PCR 7's separator), the UKI the only PCR 4 boot application. Off: nothing
    in the variables, no authority, and the kernel the stub loads is a second application.
    loader_cmdline: a command line passed by a boot loader (the stub measures it into
    PCR 12; with Secure Boot off it is the one the kernel gets).
    """

    def h(data: bytes) -> dict[int, bytes]:
        return {a: hashlib.new("sha1" if a == TPM_ALG_SHA1 else "sha256", data).digest()
                for a in banks}

    def var(name: str, value: bytes, guid: bytes = uefi.EFI_GLOBAL_VARIABLE) -> tuple[
            int, int, dict[int, bytes], bytes]:
        data = uefi_var(name, value, guid)
        return (7, eventlog.EV_EFI_VARIABLE_DRIVER_CONFIG, h(data), data)

    def digest(d: bytes) -> dict[int, bytes]:
        return {a: (d if a == TPM_ALG_SHA256 else d[:20]) for a in banks}

    dbs = uefi.EFI_IMAGE_SECURITY_DATABASE
    evs: Events = []
    evs.append((0, eventlog.EV_S_CRTM_VERSION, h(b"\0\0"), b"\0\0"))
    evs.append((0, eventlog.EV_EFI_PLATFORM_FIRMWARE_BLOB, h(b"fv-main"), b"\x01" * 16))
    sig_list = OWNER + db_cert if secure_boot else b""
    evs.append(var("SecureBoot", b"\x01" if secure_boot else b"\x00"))
    evs.append(var("PK", sig_list))
    evs.append(var("KEK", sig_list))
    evs.append(var("db", sig_list, dbs))
    evs.append(var("dbx", b"\x26\x16" * 8 if secure_boot else b"", dbs))
    evs.append((7, eventlog.EV_SEPARATOR, h(b"\0\0\0\0"), b"\0\0\0\0"))
    boot_order = uefi_var("BootOrder", b"\x01\x00")
    # as real firmware does: EV_EFI_VARIABLE_BOOT digests the variable's data only
    evs.append((1, eventlog.EV_EFI_VARIABLE_BOOT, h(b"\x01\x00"), boot_order))
    evs.append((4, eventlog.EV_EFI_ACTION, h(CALLING), CALLING))
    for pcr in range(7):
        evs.append((pcr, eventlog.EV_SEPARATOR, h(b"\0\0\0\0"), b"\0\0\0\0"))
    if secure_boot:
        authority = uefi_var("db", OWNER + db_cert, dbs)
        evs.append((7, eventlog.EV_EFI_VARIABLE_AUTHORITY, h(authority), authority))
    # UEFI_GPT_DATA: the 92-byte partition table header and NumberOfPartitions (0 here)
    gpt = b"EFI PART" + struct.pack("<IIIIQQQQ", 0x10000, 92, 0, 0, 1, 0x7FF, 34, 0x7DE) + \
        b"\x11" * 16 + struct.pack("<QIII", 2, 128, 128, 0) + struct.pack("<Q", 0)
    evs.append((5, eventlog.EV_EFI_GPT_EVENT, h(gpt), gpt))
    devpath = b"\x7f\xff\x04\x00"  # end-of-device-path node
    image = struct.pack("<QQQQ", 0x7E000000, 0x100000, 0, len(devpath)) + devpath
    evs.append((4, APP, digest(auth), image))
    for name, body in ((".linux", b"kernel"), (".osrel", b"ID=debian"),
                       (".cmdline", cmdline.encode()), (".initrd", b"initrd")):
        label = name.encode("utf-16-le") + b"\0\0"
        evs.append((11, eventlog.EV_IPL, h(label), label))
        evs.append((11, eventlog.EV_IPL, h(body), label))
    if loader_cmdline is not None:
        text = (loader_cmdline + "\0").encode("utf-16-le")
        evs.append((12, eventlog.EV_IPL, h(text), text))
    if not secure_boot:
        evs.append((4, APP, digest(linux), image))
    given = loader_cmdline if loader_cmdline is not None and not secure_boot else cmdline
    for tag, body in ((b"LoadOptions", (given + "\0").encode("utf-16-le")),
                      (b"Linux initrd", b"initrd")):
        evs.append((9, eventlog.EV_EVENT_TAG, h(body), tag))
    for action in (b"Exit Boot Services Invocation",
                   b"Exit Boot Services Returned with Success"):
        evs.append((5, eventlog.EV_EFI_ACTION, h(action), action))
    return evs


def encode_log(events: Events, banks: tuple[int, ...] = (TPM_ALG_SHA256,)) -> bytes:
    sizes = {TPM_ALG_SHA1: 20, TPM_ALG_SHA256: 32}
    out = eventlog.encode_spec_id(tuple((a, sizes[a]) for a in banks))
    for pcr, typ, dig, data in events:
        out += eventlog.encode_event(pcr, typ, [(a, dig[a]) for a in banks], data)
    return out


def replay(events: Events) -> dict[int, bytes]:
    """What a TPM holds after these events (a leading StartupLocality sets PCR 0)."""
    pcrs = {i: b"\0" * 32 for i in range(24)}
    for pcr, typ, dig, data in events:
        if typ == eventlog.EV_NO_ACTION:
            if pcr == 0 and data[:16] == eventlog.STARTUP_LOCALITY_SIGNATURE and \
                    pcrs[0] == b"\0" * 32:
                pcrs[0] = b"\0" * 31 + data[16:17]
            continue
        pcrs[pcr] = hashlib.sha256(pcrs[pcr] + dig[TPM_ALG_SHA256]).digest()
    return pcrs


@dataclass
class FakeTpm:
    """A TPM whose keys we hold: produces evidence and answers credential challenges."""

    device_id: str = ""
    ak: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(
        ec.SECP256R1()))
    ek: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    auth: bytes = AUTH
    cmdline: str = CMDLINE
    secure_boot: bool = True
    loader_cmdline: str | None = None
    db_cert: bytes = DB_CERT
    ek_cert: bytes | None = None
    reset_count: int = 1
    restart_count: int = 0
    clock: int = 1000
    safe: int = 1

    def __post_init__(self) -> None:
        self.events = build_log(self.auth, self.cmdline, secure_boot=self.secure_boot,
                                db_cert=self.db_cert, loader_cmdline=self.loader_cmdline)

    @property
    def ak_public(self) -> bytes:
        return tpm2b(ecc_public_area(self.ak.public_key()))

    @property
    def ek_public(self) -> bytes:
        return tpm2b(rsa_ek_public_area(self.ek.public_key()))

    def enrollment_request(self) -> dict[str, Any]:
        from attestation.tpm2 import tpm_device_id

        self.device_id = tpm_device_id(self.ek_public)
        return {
            "format": 1, "mode": "tpm2", "device_id": self.device_id,
            "ek_public": canonical.b64e(self.ek_public),
            "ek_cert": None if self.ek_cert is None else canonical.b64e(self.ek_cert),
            "ak_public": canonical.b64e(self.ak_public),
            "ak_name": parse_tpm2b_public(self.ak_public).name.hex(),
        }

    def activate(self, cred_file: bytes) -> bytes:
        """ActivateCredential with the EK private key (pure Python)."""
        assert cred_file[:8] == bytes.fromhex("badcc0de00000001")
        pos = 8
        (n,) = struct.unpack_from(">H", cred_file, pos)
        id_object = cred_file[pos + 2 : pos + 2 + n]
        pos += 2 + n
        (m,) = struct.unpack_from(">H", cred_file, pos)
        enc_seed = cred_file[pos + 2 : pos + 2 + m]
        seed = self.ek.decrypt(enc_seed, padding.OAEP(
            padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\0"))
        name = parse_tpm2b_public(self.ak_public).name
        (hl,) = struct.unpack_from(">H", id_object, 0)
        integrity, enc_identity = id_object[2 : 2 + hl], id_object[2 + hl :]
        hkey = kdfa(seed, b"INTEGRITY", b"", b"", 256)
        assert hmac.compare_digest(
            integrity, hmac.new(hkey, enc_identity + name, hashlib.sha256).digest())
        key = kdfa(seed, b"STORAGE", name, b"", 128)
        ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        prev, plain = b"\0" * 16, b""
        for off in range(0, len(enc_identity), 16):
            c = enc_identity[off : off + 16]
            plain += bytes(a ^ b for a, b in zip(c, ecb.update(prev), strict=False))
            prev = c
        (sl,) = struct.unpack_from(">H", plain, 0)
        return plain[2 : 2 + sl]

    def pcr_values(self) -> dict[int, bytes]:
        return replay(self.events)

    def quote(
        self, qdata: bytes, *, pcrs: tuple[int, ...] = TPM2_PCRS, bank: int = TPM_ALG_SHA256,
        signer: bytes | None = None, magic: int | None = None, type_: int | None = None,
        send_pcrs: dict[int, bytes] | None = None, log: bytes | None = None,
        sig_hash: int = TPM_ALG_SHA256, sign_key: ec.EllipticCurvePrivateKey | None = None,
        ak_name: bytes | None = None,
    ) -> bytes:
        from attestation.enroll import ak_qualified_name

        values = self.pcr_values()
        sel_values = [values[i] for i in sorted(pcrs)]
        qn = signer if signer is not None else ak_qualified_name(
            parse_tpm2b_public(self.ek_public), parse_tpm2b_public(self.ak_public))
        attest = encode_attest_quote(
            qn, qdata, ClockInfo(self.clock, self.reset_count, self.restart_count, self.safe),
            0x2019102300163636, (PcrSelection(bank, tuple(sorted(pcrs)), 3),),
            pcr_digest(TPM_ALG_SHA256, sel_values),
        )
        if magic is not None:
            attest = struct.pack(">I", magic) + attest[4:]
        if type_ is not None:
            attest = attest[:4] + struct.pack(">H", type_) + attest[6:]
        der = (sign_key or self.ak).sign(attest, ec.ECDSA(
            hashes.SHA256() if sig_hash == TPM_ALG_SHA256 else hashes.SHA1()))
        r, s = decode_dss_signature(der)
        sig = encode_signature(Signature(TPM_ALG_ECDSA, sig_hash, r.to_bytes(32, "big"),
                                         s.to_bytes(32, "big")))
        bank_name = "sha256" if bank == TPM_ALG_SHA256 else "sha1"
        ev = Evidence(
            mode="tpm2", device_id=self.device_id,
            ak_name=ak_name or parse_tpm2b_public(self.ak_public).name,
            quote=attest, signature=sig,
            pcrs={bank_name: send_pcrs if send_pcrs is not None else
                  {i: values[i] for i in pcrs}},
            event_log=log if log is not None else encode_log(self.events),
        )
        return encode_evidence(ev)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def reference_data(*, image_id: str = "img-A", auth: bytes = AUTH,
                   cmdline: str = CMDLINE, db_cert: bytes | None = DB_CERT,
                   pcrs: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """What the builder would write for the fake image: PCR 11 of a genuine boot, PCR 12/13
    with nothing passed in, PCR 4 applications for either Secure Boot state."""
    pcr11 = replay(build_log(auth, cmdline))[11].hex()
    data: dict[str, Any] = {
        "format": 2, "image_id": image_id, "pcr_bank": "sha256",
        "pcrs": pcrs if pcrs is not None else {"11": pcr11, "12": "00" * 32, "13": "00" * 32},
        "roothash": "aa", "uki_sha256": hashlib.sha256(b"uki-file").hexdigest(),
        "uki_authenticode_sha256": auth.hex(), "cmdline": cmdline,
        "boot_applications": {"secure_boot": [auth.hex()],
                              "no_secure_boot": [auth.hex(), LINUX_AUTH.hex()]},
        "db_certificate_sha256": None if db_cert is None else
        hashlib.sha256(db_cert).hexdigest(),
    }
    data.update(extra)
    return data


def make_reference(build_key: Ed25519PrivateKey, tmp: Any, **kw: Any) -> dict[str, Any]:
    """reference_data(**kw), signed with build_key into tmp and read back as a verifier would."""
    write_signed_reference(tmp, reference_data(**kw), build_key)
    return verify_reference_bytes((tmp / "reference.json").read_bytes(),
                                  (tmp / "reference.json.sig").read_bytes(),
                                  [build_key.public_key()])


def make_ek_ca(ca_flag: bool = True, name: str = "test EK CA") -> tuple[Any, Any]:
    """(private key, certificate) of an EK CA (basicConstraints CA=ca_flag)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1).not_valid_before(CERT_TIME)
            .not_valid_after(CERT_TIME + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_ek_cert(ca: tuple[Any, Any], public_key: Any) -> bytes:
    """DER EK certificate for public_key, issued by ca (from make_ek_ca)."""
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca[1].subject)
            .public_key(public_key).serial_number(2).not_valid_before(CERT_TIME)
            .not_valid_after(CERT_TIME + datetime.timedelta(days=3650))
            .sign(ca[0], hashes.SHA256()))
    der: bytes = cert.public_bytes(serialization.Encoding.DER)
    return der


def enroll_fake(tpm: FakeTpm, image_id: str = "img-A",
                policy: EnrollmentPolicy | None = None) -> dict[str, Any]:
    """Enroll the fake TPM (it has no EK certificate unless given one: allowed without)."""
    record, challenge = begin_enrollment(
        tpm.enrollment_request(), image_id=image_id,
        policy=policy or EnrollmentPolicy(allow_ek_without_cert=True))
    assert challenge is not None
    secret = tpm.activate(canonical.b64d(challenge["credential"], "c", 4096))
    return finish_enrollment(record, secret)


def new_verifier(ref: dict[str, Any], clock: Clock, **policy: Any) -> Verifier:
    return Verifier(Policy(**policy), NonceStore(clock=clock), {ref["image_id"]: ref})


__all__ = ["qualifying_data"]
