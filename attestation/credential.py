"""TPM2_MakeCredential in pure Python (TPM 2.0 Library Part 1, 24; Part 3, 12.6).

Supported EK: RSA-2048 storage key (default TCG template: nameAlg sha256, AES-128-CFB
symmetric, restricted decrypt). The seed is encrypted to the EK with RSA-OAEP
(SHA-256, label "IDENTITY\\0"). The output is the tpm2-tools credential file
(magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) that
``tpm2_activatecredential -i`` reads.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import EnrollmentError
from .tpm_structs import (
    DECRYPT,
    RESTRICTED,
    TPM_ALG_AES,
    TPM_ALG_CFB,
    TPM_ALG_RSA,
    TPM_ALG_SHA256,
    Public,
)

CRED_FILE_MAGIC = 0xBADCC0DE
CRED_FILE_VERSION = 1


def kdfa(key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa with HMAC-SHA256 (SP 800-108 counter mode, as the TPM defines it)."""
    if not label.endswith(b"\x00"):
        label += b"\x00"
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hmac.new(
            key,
            struct.pack(">I", counter) + label + context_u + context_v + struct.pack(">I", bits),
            hashlib.sha256,
        ).digest()
        counter += 1
    return out[: (bits + 7) // 8]


def ek_public_key(ek: Public) -> rsa.RSAPublicKey:
    if ek.type != TPM_ALG_RSA or ek.rsa_bits != 2048:
        raise EnrollmentError("EK must be an RSA-2048 key (ECC EKs are not supported yet)")
    if ek.name_alg != TPM_ALG_SHA256:
        raise EnrollmentError("EK nameAlg must be sha256")
    if not ek.has(RESTRICTED | DECRYPT):
        raise EnrollmentError("EK must be a restricted decryption key")
    if (ek.sym_alg, ek.sym_bits, ek.sym_mode) != (TPM_ALG_AES, 128, TPM_ALG_CFB):
        raise EnrollmentError("EK symmetric algorithm must be AES-128-CFB")
    if ek.rsa_exponent not in (0, 65537):
        raise EnrollmentError(f"EK exponent must be 65537 (0 in the TPM template), not "
                              f"{ek.rsa_exponent}")
    if len(ek.rsa_modulus) != 256 or ek.rsa_modulus[0] < 0x80 or not ek.rsa_modulus[-1] & 1:
        raise EnrollmentError("EK modulus must be a 2048-bit odd number")
    try:
        return rsa.RSAPublicNumbers(65537, int.from_bytes(ek.rsa_modulus, "big")).public_key()
    except ValueError as exc:
        raise EnrollmentError(f"EK public key unusable: {exc}") from None


def _aes_cfb_encrypt(key: bytes, plain: bytes) -> bytes:
    """AES-CFB128 with a zero IV, built on ECB (CFB leaves cryptography's main API)."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    prev = b"\x00" * 16
    out = bytearray()
    for off in range(0, len(plain), 16):
        block = plain[off : off + 16]
        stream = ecb.update(prev)
        c = bytes(a ^ b for a, b in zip(block, stream, strict=False))
        out += c
        prev = c
    return bytes(out)


def make_credential(ek: Public, object_name: bytes, secret: bytes,
                    seed: bytes | None = None) -> tuple[bytes, bytes]:
    """Return (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) binding ``secret`` to ``object_name``."""
    if not 1 <= len(secret) <= 32:
        raise EnrollmentError("credential secret must be 1..32 bytes")
    pub = ek_public_key(ek)
    seed = seed if seed is not None else os.urandom(32)
    enc_seed = pub.encrypt(
        seed,
        padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"IDENTITY\x00"
        ),
    )
    sym_key = kdfa(seed, b"STORAGE", object_name, b"", 128)
    plain = struct.pack(">H", len(secret)) + secret
    enc_identity = _aes_cfb_encrypt(sym_key, plain)
    hmac_key = kdfa(seed, b"INTEGRITY", b"", b"", 256)
    integrity = hmac.new(hmac_key, enc_identity + object_name, hashlib.sha256).digest()
    id_object = struct.pack(">H", len(integrity)) + integrity + enc_identity
    return (
        struct.pack(">H", len(id_object)) + id_object,
        struct.pack(">H", len(enc_seed)) + enc_seed,
    )


def credential_file(id_object: bytes, encrypted_secret: bytes) -> bytes:
    """Wrap MakeCredential output in the tpm2-tools credential file format."""
    return struct.pack(">II", CRED_FILE_MAGIC, CRED_FILE_VERSION) + id_object + encrypted_secret
