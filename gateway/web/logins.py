"""Console log-ins: who holds which session cookie, for how long, with which CSRF token.

A log-in is a random 256-bit cookie value (``__Host-`` cookie: Secure, HttpOnly,
SameSite=Strict, Path=/); the server keeps only its SHA-256, with the user, a CSRF
token for the forms, the time it began and the time it was last used. It ends at
``web.session_ttl`` after it began, ``web.idle_timeout`` after its last use, at
log-out, or when the user loses console access (removed, role changed: checked on
every request against the store). Log-ins live in this process: a restart logs
everyone out.

Before log-in, the log-in form is protected by its own cookie (``__Host-`` too) and a
token that is the HMAC of that cookie under a per-process secret (the double-submit
pattern), so another site cannot post a log-in form in the admin's browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "__Host-auditbox-session"
LOGIN_COOKIE = "__Host-auditbox-login"
ROLES = ("admin", "observer")          # roles with console access; "auditor" has none
VIEW = "view"
ADMIN = "admin"
PERMISSIONS = {"admin": frozenset({VIEW, ADMIN}), "observer": frozenset({VIEW})}
MAX_LOGINS = 10_000


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class WebLogin:
    key: str              # SHA-256 of the cookie value
    user: str
    role: str
    csrf: str
    source: str
    created: float
    last_seen: float
    flash: list[str] = field(default_factory=list)   # shown once on the next page

    @property
    def actor(self) -> str:
        """The audit log's actor for what this log-in does."""
        return f"web:{self.user}"

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


class Logins:
    """The log-ins of this process (thread safe)."""

    def __init__(self, ttl: float, idle: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl, self.idle, self.clock = ttl, idle, clock
        self._by_key: dict[str, WebLogin] = {}
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)

    def create(self, user: str, role: str, source: str) -> tuple[str, WebLogin]:
        """A new log-in; returns (cookie value, log-in)."""
        value = secrets.token_urlsafe(32)
        now = self.clock()
        login = WebLogin(_digest(value), user, role, secrets.token_urlsafe(32), source, now, now)
        with self._lock:
            self._expire(now)
            if len(self._by_key) >= MAX_LOGINS:        # oldest out: memory stays bounded
                oldest = min(self._by_key.values(), key=lambda x: x.last_seen)
                del self._by_key[oldest.key]
            self._by_key[login.key] = login
        return value, login

    def get(self, value: str | None) -> WebLogin | None:
        """The live log-in of a cookie value (its last use moves to now), else None."""
        if not value or len(value) > 100:
            return None
        now = self.clock()
        with self._lock:
            login = self._by_key.get(_digest(value))
            if login is None:
                return None
            if now - login.created >= self.ttl or now - login.last_seen >= self.idle:
                del self._by_key[login.key]
                return None
            login.last_seen = now
            return login

    def alive(self, login: WebLogin) -> bool:
        """Still logged in (a live view watching counts as use; the TTL still holds)."""
        now = self.clock()
        with self._lock:
            if self._by_key.get(login.key) is not login or now - login.created >= self.ttl:
                return False
            login.last_seen = now
            return True

    def end(self, login: WebLogin) -> None:
        with self._lock:
            self._by_key.pop(login.key, None)

    def end_user(self, user: str) -> int:
        with self._lock:
            gone = [k for k, x in self._by_key.items() if x.user == user]
            for k in gone:
                del self._by_key[k]
        return len(gone)

    def _expire(self, now: float) -> None:
        for k, x in list(self._by_key.items()):
            if now - x.created >= self.ttl or now - x.last_seen >= self.idle:
                del self._by_key[k]

    # -- the log-in form's CSRF token --------------------------------------------------
    @staticmethod
    def new_login_cookie() -> str:
        return secrets.token_urlsafe(24)

    def login_token(self, cookie: str) -> str:
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    def check_login_token(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token or len(cookie) > 100:
            return False
        return hmac.compare_digest(self.login_token(cookie), token)


def csrf_ok(login: WebLogin, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(login.csrf.encode(), str(token).encode())
