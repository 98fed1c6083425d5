"""Which Secure Boot db key pair signs the UKI, and what the outputs say about it.

In order: ``--secure-boot-key/--secure-boot-cert`` on the command line; else the profile's
``secure_boot.key/cert`` (paths relative to the profile file that sets them); else, with
``secure_boot.development_key: true``, a development pair generated into the cache on first
use (``<cache>/keys/secure-boot-dev/db.{key,crt}``, as the build key is); else none. A
profile with ``secure_boot.required: true`` (profiles/audit-laptop.yaml) refuses to build
without a key; an unsigned build says so loudly. The key must be an RSA key (sbsign) and
the certificate (PEM) its own.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from builder.errors import InputError
from builder.profile.model import Profile

DEV_DIR = Path("keys") / "secure-boot-dev"
DEV_SUBJECT = "auditbox DEVELOPMENT Secure Boot db key - not for real terminals"
# owner GUID recorded with the enrolled entries (any fixed GUID will do)
OWNER_GUID = "5b1f8a52-6f3e-4c1b-9d0e-a0d1c7e0b0b5"
CERT_NAME = "secure-boot-db.crt"
UNSIGNED_WARNING = ("WARNING: this image is NOT signed for Secure Boot (secure_boot.required "
                    "is false): development only. Gateways that require Secure Boot refuse "
                    "its terminals at PCR 7.")


@dataclass(frozen=True)
class SigningKeys:
    key: Path
    cert: Path
    source: str               # "command line" | "profile" | "development key (cache)"
    development: bool


def resolve_signing(profile: Profile, cli_key: Path | None, cli_cert: Path | None,
            cache: Path) -> SigningKeys | None:
    """The key pair that signs this build, or None (unsigned); InputError on bad input."""
    sb = profile.secure_boot
    if cli_key is not None and cli_cert is not None:
        keys = SigningKeys(cli_key, cli_cert, "command line", False)
        _check_pair(keys, "<command line>", "--secure-boot-key")
        return keys
    if sb.key is not None or sb.cert is not None:
        if sb.key is None or sb.cert is None:
            missing = "secure_boot.cert" if sb.cert is None else "secure_boot.key"
            where = profile.origins.get("secure_boot.key") or \
                profile.origins.get("secure_boot.cert")
            raise InputError("set both secure_boot.key and secure_boot.cert, or neither",
                             file=where.file if where else profile.source,
                             line=where.line if where else None, key=missing)
        if sb.development_key:
            where = profile.origins.get("secure_boot.development_key")
            raise InputError("secure_boot.development_key and secure_boot.key/cert exclude "
                             "each other", file=where.file if where else profile.source,
                             line=where.line if where else None,
                             key="secure_boot.development_key")
        keys = SigningKeys(_profile_path(profile, "secure_boot.key", sb.key),
                           _profile_path(profile, "secure_boot.cert", sb.cert), "profile", False)
        where = profile.origins.get("secure_boot.key")
        _check_pair(keys, str(where.file) if where else str(profile.source), "secure_boot.key",
                    where.line if where else None)
        return keys
    if sb.development_key:
        key, cert = ensure_development_pair(cache)
        return SigningKeys(key, cert, "development key (cache)", True)
    if sb.required:
        where = profile.origins.get("secure_boot.required")
        raise InputError("this profile requires Secure Boot and no key signs the UKI: pass "
                         "--secure-boot-key KEY --secure-boot-cert CERT, or set "
                         "secure_boot.key/cert (secure_boot.development_key: true for an "
                         "example build)", file=where.file if where else profile.source,
                         line=where.line if where else None, key="secure_boot.required")
    return None


def _profile_path(profile: Profile, key: str, value: str) -> Path:
    path = Path(value)
    where = profile.origins.get(key)
    if not path.is_absolute():
        path = (where.file.parent if where else profile.source.parent) / path
    if not path.is_file():
        raise InputError(f"file not found: {path}", file=where.file if where else profile.source,
                         line=where.line if where else None, key=key)
    return path


def _check_pair(keys: SigningKeys, file: str, option: str, line: int | None = None) -> None:
    def fail(message: str) -> InputError:
        return InputError(message, file=file, line=line, key=option)

    try:
        key = serialization.load_pem_private_key(keys.key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(keys.cert.read_bytes())
        cert_key = cert.public_key()
    except OSError as exc:
        raise fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise fail(f"not a PEM private key and certificate: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise fail("the Secure Boot key must be an RSA key (sbsign)")
    if not isinstance(cert_key, rsa.RSAPublicKey) or \
            cert_key.public_numbers() != key.public_key().public_numbers():
        raise fail(f"{keys.cert} is not the certificate of {keys.key}")


def ensure_development_pair(cache: Path) -> tuple[Path, Path]:
    """RSA-2048 key and self-signed certificate for development builds, made once."""
    directory = cache / DEV_DIR
    key_path, cert_path = directory / "db.key", directory / "db.crt"
    if key_path.is_file() and cert_path.is_file():
        return key_path, cert_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEV_SUBJECT)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # the certificate goes last: its presence says the pair is complete
    _write(key_path, pem_key, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return key_path, cert_path


def _write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def certificate_der(cert_path: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
        serialization.Encoding.DER)


def manifest_entry(profile: Profile, keys: SigningKeys | None) -> dict[str, Any]:
    """manifest.json ``secure_boot``: what signed the UKI, and how to enroll its certificate."""
    entry: dict[str, Any] = {"required": profile.secure_boot.required, "signed": keys is not None,
                             "key_source": None, "development_key": False,
                             "certificate": None, "certificate_sha256": None,
                             "certificate_subject": None, "enroll": None}
    if keys is None:
        return entry
    cert = x509.load_pem_x509_certificate(keys.cert.read_bytes())
    entry.update(
        key_source=keys.source, development_key=keys.development, certificate=CERT_NAME,
        certificate_sha256=hashlib.sha256(certificate_der(keys.cert)).hexdigest(),
        certificate_subject=cert.subject.rfc4514_string(),
        enroll=enroll_commands(CERT_NAME))
    return entry


def enroll_commands(cert: str) -> dict[str, str]:
    """How to make firmware trust ``cert`` (the OUT file) as its db (and PK/KEK) entry."""
    return {
        "ovmf": (f"virt-fw-vars --input /usr/share/OVMF/OVMF_VARS_4M.fd --output "
                 f"OVMF_VARS.auditbox.fd --set-pk {OWNER_GUID} {cert} --add-kek {OWNER_GUID} "
                 f"{cert} --add-db {OWNER_GUID} {cert} --secure-boot"),
        "laptop": (f"in the firmware's Secure Boot setup, enroll {cert} into db (and make "
                   "your own PK/KEK, or keep the vendor's where the firmware lets you append "
                   "to db), then turn Secure Boot on; docs/admin-guide.md, section Secure "
                   "Boot, has the commands"),
    }
