"""auditbox attestation: agent, evidence format and verifier.

Runs on the terminal (Debian's python3 and python3-cryptography >= 43) and on the
gateway. Only the standard library and ``cryptography`` are used here.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
