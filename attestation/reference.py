"""Signed golden values written by the builder and read by the verifier.

``reference.json`` is canonical JSON (``canonical.dumps``: sort_keys=True,
separators=(",", ":"), ensure_ascii=True) followed by one newline. It is therefore
deterministic for the same data. ``reference.json.sig`` holds base64 of the raw
64-byte Ed25519 signature over the exact bytes of reference.json, on one line
ending with a newline.

Fields (format 2; docs/reference-format.md has the full table):

    format                   2 (format 1 predates the pinned boot path and is refused)
    image_id                 str
    pcr_bank                 "sha256"
    pcrs                     {"<pcr>": hex}: at least "11" (after the final boot phase),
                             "12" and "13" (their value with nothing passed to the stub)
    pcr11_phases             {phase path: hex}, optional: every phase ukify predicted
    boot_applications        {"secure_boot": [hex, ...], "no_secure_boot": [hex, ...]}: the
                             ordered Authenticode sha256 of every PCR 4 boot application
                             with Secure Boot on and off
    db_certificate_sha256    hex sha256 of the DER db certificate that signed the UKI, or
                             null for an unsigned image
    roothash                 hex or null
    uki_sha256               hex
    uki_authenticode_sha256  hex (the first boot application)
    cmdline                  str

``image_for_boot(references, mode, digest)`` answers which registered reference a piece
of evidence boots (see ``attestation.verifier.booted_uki``).
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from . import canonical
from .errors import EvidenceError, ReferenceValueError

MAX_REFERENCE = 1024 * 1024
FORMAT = 2
REQUIRED = frozenset({
    "format", "image_id", "pcr_bank", "pcrs", "roothash", "uki_sha256",
    "uki_authenticode_sha256", "cmdline", "boot_applications", "db_certificate_sha256",
})
OPTIONAL = frozenset({"pcr11_phases"})
REQUIRED_PCRS = ("11", "12", "13")
BOOT_STATES = frozenset({"secure_boot", "no_secure_boot"})
MAX_BOOT_APPLICATIONS = 16


def encode_reference(data: dict[str, Any]) -> bytes:
    """The exact bytes of reference.json for ``data`` (validated first)."""
    check_reference(data)
    return canonical.dumps(data) + b"\n"


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_signed_reference(out_dir: Path, data: dict[str, Any],
                           private_key: Ed25519PrivateKey) -> None:
    """Write out_dir/reference.json and out_dir/reference.json.sig."""
    body = encode_reference(data)
    sig = base64.b64encode(private_key.sign(body)) + b"\n"
    out_dir = Path(out_dir)
    _atomic_write(out_dir / "reference.json", body)
    _atomic_write(out_dir / "reference.json.sig", sig)


def verify_reference_bytes(body: bytes, sig_file: bytes,
                           trusted_keys: list[Ed25519PublicKey]) -> dict[str, Any]:
    """Verify a signature file over reference bytes and return the checked data."""
    if len(body) > MAX_REFERENCE:
        raise ReferenceValueError("reference.json too large")
    line = sig_file.strip(b"\n")
    if b"\n" in line or len(line) > 200:
        raise ReferenceValueError("reference.json.sig must be one line")
    try:
        sig = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise ReferenceValueError("reference.json.sig is not base64") from None
    if len(sig) != 64:
        raise ReferenceValueError("reference.json.sig is not a 64-byte Ed25519 signature")
    for key in trusted_keys:
        try:
            key.verify(sig, body)
            break
        except InvalidSignature:
            continue
    else:
        raise ReferenceValueError("reference.json is not signed by a trusted build key")
    try:
        data = canonical.loads(body[:-1] if body.endswith(b"\n") else body,
                               require_canonical=True, limit=MAX_REFERENCE)
        if not body.endswith(b"\n"):
            raise EvidenceError("missing final newline")
        return check_reference(data)
    except EvidenceError as exc:
        raise ReferenceValueError(f"reference.json: {exc}") from None


def load_reference(path: Path, trusted_keys: list[Ed25519PublicKey]) -> dict[str, Any]:
    """Read reference.json and reference.json.sig beside it; verify and check fields."""
    path = Path(path)
    try:
        body = path.read_bytes()
        sig = path.with_name(path.name + ".sig").read_bytes()
    except OSError as exc:
        raise ReferenceValueError(f"cannot read reference: {exc}") from None
    return verify_reference_bytes(body, sig, trusted_keys)


def _hex32(value: object, what: str) -> None:
    canonical.hexd(value, what, 32)


def check_reference(data: object) -> dict[str, Any]:
    """Strict field check of reference data; raises EvidenceError."""
    fmt = data.get("format") if isinstance(data, dict) else None
    if type(fmt) is not int or fmt != FORMAT:
        raise EvidenceError(f"reference: unsupported format {fmt!r} (this verifier reads "
                            f"format {FORMAT}; rebuild the image)")
    ref = canonical.require_keys(data, "reference", REQUIRED, OPTIONAL)
    if not isinstance(ref["image_id"], str) or not ref["image_id"]:
        raise EvidenceError("reference: image_id must be a non-empty string")
    if ref["pcr_bank"] != "sha256":
        raise EvidenceError("reference: pcr_bank must be sha256")
    pcrs = ref["pcrs"]
    if not isinstance(pcrs, dict):
        raise EvidenceError("reference: pcrs must be an object")
    for k, v in pcrs.items():
        if k not in {str(i) for i in range(24)}:
            raise EvidenceError(f"reference: bad PCR index {k!r}")
        _hex32(v, f"reference.pcrs.{k}")
    for k in REQUIRED_PCRS:
        if k not in pcrs:
            raise EvidenceError(f"reference: pcrs must predict PCR {k}")
    apps = canonical.require_keys(ref["boot_applications"], "reference.boot_applications",
                                  BOOT_STATES)
    for state, digests in apps.items():
        if not isinstance(digests, list) or not 1 <= len(digests) <= MAX_BOOT_APPLICATIONS:
            raise EvidenceError(f"reference.boot_applications.{state}: expected a list of "
                                f"1..{MAX_BOOT_APPLICATIONS} digests")
        for i, d in enumerate(digests):
            _hex32(d, f"reference.boot_applications.{state}[{i}]")
    if ref["db_certificate_sha256"] is not None:
        _hex32(ref["db_certificate_sha256"], "reference.db_certificate_sha256")
    phases = ref.get("pcr11_phases", {})
    if not isinstance(phases, dict):
        raise EvidenceError("reference: pcr11_phases must be an object")
    for k, v in phases.items():
        if not isinstance(k, str):
            raise EvidenceError("reference: bad pcr11_phases key")
        _hex32(v, f"reference.pcr11_phases.{k}")
    if ref["roothash"] is not None:
        canonical.hexd(ref["roothash"], "reference.roothash", limit=64)
    _hex32(ref["uki_sha256"], "reference.uki_sha256")
    _hex32(ref["uki_authenticode_sha256"], "reference.uki_authenticode_sha256")
    if not isinstance(ref["cmdline"], str):
        raise EvidenceError("reference: cmdline must be a string")
    return ref


def image_for_boot(references: dict[str, dict[str, Any]], mode: str,
                   digest: str) -> str | None:
    """The image id whose reference boots ``digest``: the UKI's Authenticode sha256 (tpm2,
    the first PCR 4 boot application) or its file sha256 (soft). None if no reference does;
    the newest-registered choice among several is the caller's."""
    field = "uki_sha256" if mode == "soft" else "uki_authenticode_sha256"
    for image_id, ref in references.items():
        if ref.get(field) == digest:
            return image_id
    return None


def load_or_create_build_key(path: Path) -> Ed25519PrivateKey:
    """Load the Ed25519 build key (PKCS#8 PEM) or create it with mode 0600."""
    path = Path(path)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ReferenceValueError(f"{path}: not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(path, pem, 0o600)
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a trusted build key: PEM public key (or a PEM private key's public half)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ReferenceValueError(f"cannot read build key: {exc}") from None
    try:
        if b"PRIVATE KEY" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            if isinstance(priv, Ed25519PrivateKey):
                return priv.public_key()
        else:
            pub = serialization.load_pem_public_key(data)
            if isinstance(pub, Ed25519PublicKey):
                return pub
    except (ValueError, TypeError):
        pass
    raise ReferenceValueError(f"{path}: not an Ed25519 key")
