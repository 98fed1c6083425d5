"""reference.json: deterministic, signed, strictly checked; build key helpers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation import canonical
from attestation.errors import EvidenceError, ReferenceValueError
from attestation.reference import (
    load_or_create_build_key,
    load_public_key,
    load_reference,
    public_key_pem,
    write_signed_reference,
)

DATA = {
    "format": 2, "image_id": "audit-laptop-1", "pcr_bank": "sha256",
    "pcrs": {"11": "ab" * 32, "12": "00" * 32, "13": "00" * 32},
    "pcr11_phases": {"enter-initrd": "cd" * 32},
    "roothash": "ef" * 32, "uki_sha256": "01" * 32, "uki_authenticode_sha256": "02" * 32,
    "cmdline": "roothash=" + "ef" * 32 + " console=ttyS0",
    "boot_applications": {"secure_boot": ["02" * 32], "no_secure_boot": ["02" * 32, "03" * 32]},
    "db_certificate_sha256": "04" * 32,
}


def test_roundtrip_and_determinism(tmp_path: Path) -> None:
    key = load_or_create_build_key(tmp_path / "k" / "build.key")
    assert (tmp_path / "k" / "build.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_build_key(tmp_path / "k" / "build.key").public_key() == \
        key.public_key()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_signed_reference(a, dict(DATA), key)
    write_signed_reference(b, dict(reversed(list(DATA.items()))), key)
    assert (a / "reference.json").read_bytes() == (b / "reference.json").read_bytes()
    sig = (a / "reference.json.sig").read_bytes()
    assert sig.endswith(b"\n") and sig.count(b"\n") == 1
    assert len(base64.b64decode(sig.strip())) == 64
    (tmp_path / "pub.pem").write_bytes(public_key_pem(key))
    pub = load_public_key(tmp_path / "pub.pem")
    assert load_reference(a / "reference.json", [pub]) == DATA


def test_refuses_untrusted_and_missing(tmp_path: Path) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    write_signed_reference(tmp_path, DATA, key)
    with pytest.raises(ReferenceValueError, match="not signed by a trusted build key"):
        load_reference(tmp_path / "reference.json", [other.public_key()])
    with pytest.raises(ReferenceValueError, match="not signed by a trusted build key"):
        load_reference(tmp_path / "reference.json", [])
    with pytest.raises(ReferenceValueError, match="cannot read reference"):
        load_reference(tmp_path / "nope.json", [key.public_key()])
    assert load_reference(tmp_path / "reference.json", [key.public_key()]) == DATA


BAD_FIELDS = [
    ({**DATA, "extra": 1}, r"unknown field\(s\) \['extra'\]"),
    ({k: v for k, v in DATA.items() if k != "roothash"}, r"missing field\(s\) \['roothash'\]"),
    ({**DATA, "pcr_bank": "sha1"}, "pcr_bank must be sha256"),
    ({**DATA, "pcrs": {"24": "00" * 32}}, "bad PCR index '24'"),
    ({**DATA, "uki_sha256": "XY"}, "uki_sha256: expected lower-case hex"),
    ({**DATA, "uki_sha256": "01" * 15 + " 0101"}, "uki_sha256: expected lower-case hex"),
    ({**DATA, "format": 1}, "unsupported format 1"),
    ({**DATA, "pcrs": {"11": "ab" * 32, "13": "00" * 32}}, "pcrs must predict PCR 12"),
    ({**DATA, "boot_applications": {"secure_boot": ["02" * 32]}},
     r"missing field\(s\) \['no_secure_boot'\]"),
    ({**DATA, "boot_applications": {"secure_boot": [], "no_secure_boot": ["02" * 32]}},
     "secure_boot: expected a list of 1..16 digests"),
    ({**DATA, "db_certificate_sha256": "04" * 31}, "expected 32 bytes"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_FIELDS, ids=lambda v: str(v)[:24])
def test_refuses_bad_fields_when_writing_and_loading(tmp_path: Path, bad: dict[str, object],
                                                     message: str) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(EvidenceError, match=message):
        write_signed_reference(tmp_path, bad, key)
    assert not (tmp_path / "reference.json").exists()     # nothing half-written
    # the same data signed by a trusted key (as a buggy or hostile builder would) is refused
    body = canonical.dumps(bad) + b"\n"
    (tmp_path / "reference.json").write_bytes(body)
    (tmp_path / "reference.json.sig").write_bytes(base64.b64encode(key.sign(body)) + b"\n")
    with pytest.raises(ReferenceValueError, match=message):
        load_reference(tmp_path / "reference.json", [key.public_key()])
