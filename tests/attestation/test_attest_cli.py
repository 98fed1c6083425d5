"""Agent CLI (soft backend, subprocess) and admin CLI exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from attest_helpers import FakeTpm, enroll_fake, reference_data
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation import canonical
from attestation.admin_cli import attest_group
from attestation.reference import public_key_pem, write_signed_reference
from attestation.verifier import qualifying_data

ROOT = Path(__file__).resolve().parents[2]


def _ref(tmp: Path, key: Ed25519PrivateKey) -> Path:
    write_signed_reference(tmp, reference_data(roothash=None), key)
    (tmp / "pub.pem").write_bytes(public_key_pem(key))
    return tmp / "reference.json"


def test_admin_cli_accept_refuse_badinput(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    ref = _ref(tmp_path, key)
    tpm = FakeTpm()
    record = enroll_fake(tpm)
    (tmp_path / "rec.json").write_bytes(canonical.dumps(record))
    nonce, session = os.urandom(32), os.urandom(32)
    (tmp_path / "ev.json").write_bytes(tpm.quote(qualifying_data(nonce, session)) + b"\n")
    args = ["verify", "--reference", str(ref), "--build-key", str(tmp_path / "pub.pem"),
            "--enrollment", str(tmp_path / "rec.json"), str(tmp_path / "ev.json"),
            "--session", session.hex()]
    ok = CliRunner().invoke(attest_group, [*args, "--nonce", nonce.hex(),
                                           "--update-enrollment"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["accepted"] is True
    assert canonical.loads((tmp_path / "rec.json").read_bytes().strip())["last_clock"]
    bad = CliRunner().invoke(attest_group, [*args, "--nonce", "00" * 32])
    assert bad.exit_code == 1 and bad.output.startswith("refused: qualifying_data:")
    worse = CliRunner().invoke(attest_group, [*args, "--nonce", "zz"])
    assert worse.exit_code == 2


def test_agent_cli_soft(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "attestation.agent_cli", "--backend", "soft",
            "--state-dir", str(tmp_path / "st")]
    info = json.loads(subprocess.run([*base, "info"], env=env, check=True,
                                     capture_output=True).stdout)
    assert info["backend"] == "soft" and info["device_id"].startswith("soft-")
    req = json.loads(subprocess.run([*base, "enroll", "--token", "t"], env=env, check=True,
                                    capture_output=True).stdout)
    assert req["device_id"] == info["device_id"] and req["token"] == "t"
    out = subprocess.run([*base, "quote", "--nonce", "ab" * 32, "--session", "cd" * 32],
                         env=env, check=True, capture_output=True).stdout.rstrip(b"\n")
    assert canonical.loads(out, require_canonical=True)["mode"] == "soft"
    assert (tmp_path / "st" / "soft" / "ak.key").stat().st_mode & 0o777 == 0o600
    bad = subprocess.run([*base, "quote", "--nonce", "xyz", "--session", "00"], env=env,
                         capture_output=True)
    assert bad.returncode == 2
