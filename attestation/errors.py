"""Errors raised by the attestation package. Nothing else escapes its parsers."""

from __future__ import annotations


class AttestationError(Exception):
    """Base class of every error this package raises on purpose."""


class EvidenceError(AttestationError):
    """Malformed input: bad length, trailing bytes, unknown field, oversized field."""


class EnrollmentError(AttestationError):
    """An enrollment request or proof of possession was refused."""


class ReferenceValueError(AttestationError):
    """A reference.json file is unsigned, signed by an untrusted key, or malformed."""


class BackendError(AttestationError):
    """The agent backend (TPM through tpm2-tools, or the soft backend) failed."""


class VerificationError(AttestationError):
    """Evidence was refused; ``step`` names the verification step that failed."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
