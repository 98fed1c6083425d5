"""auditbox attestation: agent, evidence format and verifier.

Runs on the terminal (Debian's python3 and python3-cryptography >= 43) and on the
gateway. Only the standard library and ``cryptography`` are used here. Its version is the
auditbox version (builder/__init__.py), which the terminal package carries.
"""
