"""Secure Boot signing at build time: which key signs, refusals with one line, the manifest.

The builds here stop at the input check (before any bootstrap), so they are fast; the
signed images themselves are built and booted in tests/vm/test_secure_boot.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from builder.errors import InputError
from builder.profile import load_profile
from builder.secureboot import (
    DEV_SUBJECT,
    ensure_development_pair,
    manifest_entry,
    resolve_signing,
)

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
TEST = PROFILES / "audit-laptop-test.yaml"


def profile(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"extends: {PROFILES / 'audit-laptop-example.yaml'}\nname: {name}\n{text}")
    return path


def build(tmp_path: Path, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["auditbox", "build", str(path), "-o", str(tmp_path / "out"),
                           "--cache", str(tmp_path / "cache"), *extra],
                          capture_output=True, text=True, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache").rglob("*.tar"))       # nothing bootstrapped
    return proc.stderr


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_development_pair(tmp_path_factory.mktemp("keys"))


def test_production_requires_a_key_and_says_so_in_one_line(tmp_path: Path) -> None:
    path = profile(tmp_path, "unsigned", "secure_boot:\n  development_key: false\n")
    assert load_profile(path).secure_boot.required          # inherited from audit-laptop.yaml
    err = one_line_error(build(tmp_path, path), tmp_path)
    assert "audit-laptop.yaml:" in err and "secure_boot.required" in err
    assert "--secure-boot-key" in err


def test_required_is_met_by_command_line_keys(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    path = profile(tmp_path, "unsigned", "secure_boot:\n  development_key: false\n")
    keys = resolve_signing(load_profile(path), pair[0], pair[1], tmp_path / "cache")
    assert keys is not None and keys.source == "command line" and not keys.development


def test_profile_keys_are_relative_to_the_profile(tmp_path: Path,
                                                  pair: tuple[Path, Path]) -> None:
    (tmp_path / "sb").mkdir()
    for p in pair:
        (tmp_path / "sb" / p.name).write_bytes(p.read_bytes())
    path = profile(tmp_path, "keyed", "secure_boot:\n  development_key: false\n"
                                      "  key: sb/db.key\n  cert: sb/db.crt\n")
    keys = resolve_signing(load_profile(path), None, None, tmp_path / "cache")
    assert keys is not None and keys.source == "profile"
    assert keys.key == tmp_path / "sb" / "db.key"


@pytest.mark.parametrize(("text", "words"), [
    ("secure_boot:\n  development_key: false\n  key: sb/db.key\n",
     "set both secure_boot.key and secure_boot.cert"),
    ("secure_boot:\n  key: sb/db.key\n  cert: sb/db.crt\n", "exclude each other"),
    ("secure_boot:\n  development_key: false\n  key: nope.key\n  cert: sb/db.crt\n",
     "file not found"),
    ("secure_boot:\n  development_key: false\n  key: sb/db.key\n  cert: sb/other.crt\n",
     "is not the certificate of"),
    ("secure_boot:\n  development_key: false\n  key: sb/ec.key\n  cert: sb/db.crt\n",
     "must be an RSA key"),
    ("secure_boot:\n  development_key: false\n  key: sb/db.crt\n  cert: sb/db.crt\n",
     "not a PEM private key"),
])
def test_bad_profile_keys_are_one_line_errors(tmp_path: Path, pair: tuple[Path, Path],
                                              text: str, words: str) -> None:
    (tmp_path / "sb").mkdir()
    for p in pair:
        (tmp_path / "sb" / p.name).write_bytes(p.read_bytes())
    other = ensure_development_pair(tmp_path / "other")
    (tmp_path / "sb" / "other.crt").write_bytes(other[1].read_bytes())
    (tmp_path / "sb" / "ec.key").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path = profile(tmp_path, "bad", text)
    with pytest.raises(InputError, match=words):
        resolve_signing(load_profile(path), None, None, tmp_path / "cache")
    err = one_line_error(build(tmp_path, path), tmp_path)
    # the line that set the offending key: the child's, or the example's development_key
    where = "audit-laptop-example.yaml:" if "exclude" in words else f"{path}:"
    assert where in err and words in err


def test_command_line_pair_must_match(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    other = ensure_development_pair(tmp_path / "other")
    path = profile(tmp_path, "cli", "")
    err = one_line_error(build(tmp_path, path, "--secure-boot-key", str(pair[0]),
                               "--secure-boot-cert", str(other[1])), tmp_path)
    assert "--secure-boot-key" in err and "is not the certificate of" in err


def test_development_pair_is_made_once_and_marked(tmp_path: Path) -> None:
    key, cert = ensure_development_pair(tmp_path)
    assert key.stat().st_mode & 0o777 == 0o600
    again = ensure_development_pair(tmp_path)
    assert again == (key, cert) and cert.read_bytes() == again[1].read_bytes()
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert DEV_SUBJECT in parsed.subject.rfc4514_string()
    example = load_profile(PROFILES / "audit-laptop-example.yaml")
    keys = resolve_signing(example, None, None, tmp_path / "cache")
    assert keys is not None and keys.development
    entry = manifest_entry(example, keys)
    assert entry["signed"] and entry["development_key"] and entry["required"]
    assert entry["certificate"] == "secure-boot-db.crt"
    assert "virt-fw-vars" in entry["enroll"]["ovmf"] and "--add-db" in entry["enroll"]["ovmf"]


def test_test_profile_builds_unsigned_loudly(tmp_path: Path) -> None:
    test = load_profile(TEST)
    assert not test.secure_boot.required and not test.secure_boot.development_key
    assert resolve_signing(test, None, None, tmp_path) is None
    assert manifest_entry(test, None)["signed"] is False


@pytest.mark.build
def test_example_image_is_signed_with_the_development_key(prod_image: Any,
                                                           tmp_path: Path) -> None:
    """What `make image` builds (the example profile): a UKI signed with the cache's
    development key, said so in the manifest, with the certificate and how to enroll it."""
    import hashlib

    from attestation.reference import load_public_key, load_reference
    from tests.secureboot import read_esp_file
    from tests.tools import require

    require(("sbverify",), need_root=False)
    sb = prod_image.manifest["secure_boot"]
    assert sb["required"] and sb["signed"] and sb["development_key"]
    assert sb["key_source"] == "development key (cache)"
    assert DEV_SUBJECT in sb["certificate_subject"] and "--add-db" in sb["enroll"]["ovmf"]
    cert = prod_image.out / "secure-boot-db.crt"
    assert "secure-boot-db.crt" in (prod_image.out / "SHA256SUMS").read_text()
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == sb["certificate_sha256"]
    ref = load_reference(prod_image.out / "reference.json",
                         [load_public_key(prod_image.out / "build-key.pub")])
    assert ref["db_certificate_sha256"] == sb["certificate_sha256"]
    uki = tmp_path / "BOOTX64.EFI"
    uki.write_bytes(read_esp_file(prod_image.image, prod_image.manifest))
    ok = subprocess.run(["sbverify", "--cert", str(cert), str(uki)], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # control: another certificate does not verify it
    other = ensure_development_pair(tmp_path / "other")[1]
    bad = subprocess.run(["sbverify", "--cert", str(other), str(uki)], capture_output=True,
                         text=True)
    assert bad.returncode != 0
