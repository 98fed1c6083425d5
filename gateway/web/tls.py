"""The console's TLS: a self-signed certificate for `gateway init`, its fingerprint, and
the server's SSL context (TLS 1.2 and newer only, the certificate and key from config).

The key is ECDSA P-256, written 0600; the certificate names the host (DNS or IP
subject alternative name), is valid for 825 days and is not a CA. Admins compare the
SHA-256 fingerprint `init` prints with what their browser shows on first visit, or
replace both files with ones from the lab's own CA.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..config import Config

VALID_DAYS = 825


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alt_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys([host, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def make_self_signed(cert_path: Path, key_path: Path, host: str,
                     days: int = VALID_DAYS) -> str:
    """Write a fresh key (0600) and a self-signed server certificate for ``host``;
    return the certificate's fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "auditbox gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_alt_names(host)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()), 0o600)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _atomic_write(cert_path, pem, 0o644)
    return fingerprint(pem)


def fingerprint(pem: bytes) -> str:
    """``SHA256:AB:CD:...`` of the first certificate in ``pem`` (as browsers show it)."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def server_context(cfg: Config) -> ssl.SSLContext:
    """The console's SSL context; an InputError at web.certificate / web.key when the
    files are missing or do not match."""
    web = cfg.web
    assert web is not None
    for key, path in (("web.certificate", web.certificate), ("web.key", web.key)):
        if not path.is_file():
            raise cfg.error(key, f"{path}: no such file (`auditbox gateway init` makes a "
                                 "self-signed pair)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    try:
        ctx.load_cert_chain(str(web.certificate), str(web.key))
    except (ssl.SSLError, ValueError) as exc:
        raise cfg.error("web.certificate", f"cannot use {web.certificate} with {web.key}: "
                                           f"{exc}") from None
    return ctx
