"""RFC 6238 one-time codes (pyotp): 6 digits, 30 s steps, SHA-1, and a replay guard.

``matching_step`` finds the step a code belongs to within +-window steps of now; the
caller then raises the user's ``last_totp_step`` atomically in the store
(``Store.accept_totp_step``), so a code is accepted once, and no code of that step or
an earlier one is accepted afterwards, on any replica.
"""

from __future__ import annotations

import hmac
import re

import pyotp

STEP = 30
DIGITS = 6
ISSUER = "auditbox"
_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    """A fresh base32 secret (32 characters, 160 bits)."""
    return pyotp.random_base32(32)


def step_of(now: float) -> int:
    return int(now // STEP)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).at(step * STEP)


def matching_step(secret: str, code: str, now: float, window: int = 1) -> int | None:
    """The step within [now - window, now + window] whose code equals ``code``, else None.
    Every candidate is compared (constant time), newest match wins."""
    code = code.strip()
    if not _CODE.fullmatch(code):
        return None
    here = step_of(now)
    found: int | None = None
    for step in range(here - window, here + window + 1):
        if hmac.compare_digest(code_at(secret, step), code):
            found = step
    return found


def provisioning_uri(secret: str, user: str, issuer: str = ISSUER) -> str:
    """otpauth://totp/ISSUER:USER?secret=...&issuer=ISSUER (what authenticator apps scan)."""
    uri: str = pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=user, issuer_name=issuer)
    return uri
