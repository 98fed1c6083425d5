"""Password hashes: argon2id (argon2-cffi), PHC strings in the store.

Parameters are argon2-cffi's defaults, RFC 9106's second recommended option
(t=3, m=64 MiB, p=4). ``verify_unknown`` spends the same work on a user name that does
not exist, so the answer time does not tell who exists.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024

_HASHER = PasswordHasher(type=Type.ID)


def check_policy(password: str) -> str | None:
    """None if the password is acceptable for a new account, else what is wrong."""
    if len(password) < MIN_LENGTH:
        return f"the password is shorter than {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"the password is longer than {MAX_LENGTH} characters"
    if len(set(password)) < 5:
        return "the password has fewer than 5 different characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        return "the password contains control characters"
    return None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def is_argon2id(phc: str) -> bool:
    return phc.startswith("$argon2id$")


def verify_password(phc: str, password: str) -> bool:
    """True if ``password`` matches the argon2id PHC string ``phc``."""
    if not is_argon2id(phc) or len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(phc, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("auditbox: no such user, same work as a real check")


def verify_unknown(password: str) -> bool:
    """The work of one verification for a user that does not exist; always False."""
    verify_password(_dummy_hash(), password[:MAX_LENGTH])
    return False
