from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from attest_helpers import Clock, FakeTpm, enroll_fake, make_reference, new_verifier


class World:
    """A gateway with one enrolled fake-TPM device and a signed reference."""

    def __init__(self, tmp: Path) -> None:
        self.build_key = Ed25519PrivateKey.generate()
        self.tpm = FakeTpm()
        self.record = enroll_fake(self.tpm)
        self.ref = make_reference(self.build_key, tmp)
        self.clock = Clock()
        self.verifier = new_verifier(self.ref, self.clock)
        self.session = b"S" * 32

    def nonce(self) -> bytes:
        return self.verifier.nonces.issue()

    def verify(self, evidence: bytes, nonce: bytes, session: bytes | None = None,
               record: dict[str, Any] | None = None) -> Any:
        return self.verifier.verify(evidence, record or self.record, nonce,
                                    session if session is not None else self.session)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "swtpm: needs swtpm and tpm2-tools (skipped if missing)")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)
