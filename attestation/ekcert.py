"""EK certificates: the TPM maker's statement that an endorsement key is a real TPM's.

A tpm2 enrollment request carries the EK certificate the agent read from the TPM's NV
index 0x01c00002 (RSA-2048 EK certificate, TCG EK Credential Profile), DER, base64. The
gateway checks it against a CA bundle from its configuration (the manufacturers' CA
certificates, intermediates included; in tests the CA ``swtpm_setup --create-ek-cert``
made):

* the certificate parses (DER, X.509) and its public key is exactly the EK's (RSA modulus
  and exponent of the request's ``ek_public``);
* it is directly issued by (signature verifies with, issuer name matches) a certificate in
  the bundle that may issue certificates (basicConstraints CA, where present). Every
  bundle certificate is a trust anchor, so list intermediates beside their roots: TPMs
  store only the EK certificate itself.

Validity periods are not enforced: an EK certificate states how the TPM was made, TPMs
outlive their certificates' notAfter, and Keylime does the same. Without a certificate
(or without a bundle) enrollment is refused unless the admin explicitly allows EKs without
certificates; the device record says which happened (``ek_cert``: ``checked`` or
``allowed-without``; ``none`` for soft devices).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import EnrollmentError

MAX_EK_CERT = 4096
# what cryptography raises for malformed certificates (parsing is lazy: any attribute may)
_BAD_CERT = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion,
             x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
CHECKED = "checked"
ALLOWED_WITHOUT = "allowed-without"
NONE = "none"


def load_ca_bundle(path: Path) -> tuple[x509.Certificate, ...]:
    """All certificates of a PEM file (one or more ``BEGIN CERTIFICATE`` blocks)."""
    try:
        data = Path(path).read_bytes()
        certs = tuple(x509.load_pem_x509_certificates(data))
    except OSError as exc:
        raise EnrollmentError(f"cannot read EK CA bundle {path}: {exc.strerror or exc}") \
            from None
    except _BAD_CERT as exc:
        raise EnrollmentError(f"EK CA bundle {path}: not PEM certificates ({exc})") from None
    if not certs:
        raise EnrollmentError(f"EK CA bundle {path} holds no certificate")
    return certs


def parse_der(der: bytes) -> x509.Certificate:
    """The certificate from TPM NV contents (DER; NV areas may be padded after it)."""
    if len(der) > MAX_EK_CERT:
        raise EnrollmentError("EK certificate too large")
    try:
        return x509.load_der_x509_certificate(trim_der(der))
    except _BAD_CERT as exc:
        raise EnrollmentError(f"EK certificate is not DER X.509: {exc}") from None


def trim_der(der: bytes) -> bytes:
    """The outer DER SEQUENCE only (drop NV padding after it)."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    first = der[1]
    if first < 0x80:
        return der[:2 + first]
    n = first & 0x7F
    if n == 0 or n > 3 or len(der) < 2 + n:
        return der
    return der[:2 + n + int.from_bytes(der[2:2 + n], "big")]


def _may_issue(ca: x509.Certificate) -> bool:
    try:
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return True
    return bool(bc.ca)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        if ca.subject != cert.issuer or not _may_issue(ca):
            return False
        cert.verify_directly_issued_by(ca)
    except (*_BAD_CERT, InvalidSignature):
        return False
    return True


def check_ek_certificate(der: bytes, ek_key: rsa.RSAPublicKey,
                         bundle: Iterable[x509.Certificate]) -> x509.Certificate:
    """Refuse (EnrollmentError) unless ``der`` certifies ``ek_key`` under a bundle CA."""
    cert = parse_der(der)
    try:
        key = cert.public_key()
        issuer = cert.issuer.rfc4514_string()
    except _BAD_CERT as exc:
        raise EnrollmentError(f"EK certificate is unreadable: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.public_numbers() != ek_key.public_numbers():
        raise EnrollmentError("the EK certificate is for another key than the TPM's EK")
    if any(_issued_by(cert, ca) for ca in bundle):
        return cert
    raise EnrollmentError(f"EK certificate (issuer {issuer!r}) is not signed by a CA in the "
                          "EK CA bundle")
