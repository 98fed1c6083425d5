"""The log-in decision (docs/protocol.md section 2), apart from SSH.

The server calls, from a worker thread (they block on argon2 and the store):

    check_source(source)                  before prompting: is this address rate-limited?
    check_password(name, password, src)   round 1  -> Refusal or None
    check_code(name, code, src)           round 2  -> Refusal or LoginOk(user)
    check_token(token, src)               enrollment log-in (user ``auditbox-enroll``)

``source`` is the client's IP address (no port). Rules:
- a failure counts against the user name (known or not) and the address;
  ``auth.max_failures`` in ``auth.failure_window`` locks the name out for
  ``auth.lockout``; ``auth.source_max_failures`` in ``auth.source_window`` refuses the
  address (``rate-limited``) for ``auth.source_window``;
- unknown names cost one argon2id verification like known ones, and get the same
  ``bad-password`` answer;
- a code is accepted once (``Store.accept_totp_step``), replays are ``bad-code``;
- an administrator's lock on the user is told only to someone who knew the password;
- any StoreError refuses with ``unavailable`` (fail closed).
Every refusal and every success is written to the audit log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import locks, passwords, totp
from .audit import Auditor
from .config import ENROLL_USER, AuthConfig
from .enrollment import token_hash, well_formed_token
from .store.base import Store, StoreError, User

MAX_NAME = 64

TEXTS = {
    "bad-password": "wrong user name or password",
    "bad-code": "wrong, expired or already used one-time code",
    "unavailable": "the gateway cannot read its store; try again later",
    "bad-token": "enrollment token unknown, expired or already used",
}


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@dataclass(frozen=True)
class Refusal:
    code: str          # bad-password | bad-code | locked-out | rate-limited | locked |
    text: str          # unavailable | bad-token

    @property
    def instruction(self) -> str:
        """The keyboard-interactive instruction line the gateway sends before failing."""
        return f"auditbox-error {self.code}: {self.text}"


@dataclass(frozen=True)
class LoginOk:
    user: User


def _refuse(code: str, text: str | None = None) -> Refusal:
    return Refusal(code, text if text is not None else TEXTS[code])


class Authenticator:
    def __init__(self, store: Store, cfg: AuthConfig, auditor: Auditor,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cfg = cfg
        self.auditor = auditor
        self.clock = clock

    # -- the checks ---------------------------------------------------------------------
    def check_source(self, source: str) -> Refusal | None:
        try:
            return self._source_limited(source, self.clock())
        except StoreError as exc:
            return self._unavailable("source", source, exc)

    def check_password(self, name: str, password: str, source: str) -> Refusal | None:
        now = self.clock()
        try:
            early = self._pre(name, source, now)
            if early is not None:
                passwords.verify_unknown(password)
                return early
            user = self.store.get_user(name) if self._valid_name(name) else None
            if user is None:
                passwords.verify_unknown(password)
                return self._failed(name, source, now, "password", known=False)
            if not passwords.verify_password(user.password_hash, password):
                return self._failed(name, source, now, "password", known=True)
            lock = locks.matching(self.store.active_locks(now), user=name)
            if lock is not None:
                self.auditor.log("login.locked", actor=name, source=source, lock=lock.id)
                return _refuse("locked", locks.message(lock))
            return None
        except StoreError as exc:
            return self._unavailable(name, source, exc)

    def check_code(self, name: str, code: str, source: str) -> Refusal | LoginOk:
        now = self.clock()
        try:
            early = self._pre(name, source, now)
            if early is not None:
                return early
            user = self.store.get_user(name) if self._valid_name(name) else None
            if user is None:     # only reachable if the user was removed meanwhile
                return self._failed(name, source, now, "code", known=False)
            step = totp.matching_step(user.totp_secret, code, now, self.cfg.totp_window)
            if step is None:
                return self._failed(name, source, now, "code", known=True)
            if step <= user.last_totp_step or not self.store.accept_totp_step(name, step):
                return self._failed(name, source, now, "code-replayed", known=True)
            self.store.clear_failures("user", name)
            self.auditor.log("login.ok", actor=name, source=source,
                             break_glass_allowed=user.break_glass)
            return LoginOk(user)
        except StoreError as exc:
            return self._unavailable(name, source, exc)

    def check_token(self, token: str, source: str) -> Refusal | None:
        """Round 1 of an enrollment log-in: the token exists, is unused and unexpired.
        It is used up only when the enrollment completes (enrollment.py)."""
        now = self.clock()
        try:
            limited = self._source_limited(source, now)
            if limited is not None:
                return limited
            tok = self.store.get_token(token_hash(token)) if well_formed_token(token) else None
            if tok is None or tok.used_at is not None or tok.expires_at <= now:
                why = "unknown" if tok is None else ("used" if tok.used_at else "expired")
                self.auditor.log("login.failed", actor=ENROLL_USER, source=source,
                                 reason=f"token-{why}")
                if self._count_source(source, now):
                    return self._rate_limited(now + self.cfg.source_window)
                return _refuse("bad-token")
            self.auditor.log("login.token", actor=ENROLL_USER, source=source,
                             token=tok.token_hash[:12], mode=tok.mode)
            return None
        except StoreError as exc:
            return self._unavailable(ENROLL_USER, source, exc)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _valid_name(name: str) -> bool:
        return 0 < len(name) <= MAX_NAME and name != ENROLL_USER and name.isprintable()

    def _source_limited(self, source: str, now: float) -> Refusal | None:
        until = self.store.lockout_until("source", source, now)
        return None if until is None else self._rate_limited(until)

    @staticmethod
    def _rate_limited(until: float) -> Refusal:
        return _refuse("rate-limited", "too many failed log-ins from this address; "
                                       f"retry after {_utc(until)}")

    def _pre(self, name: str, source: str, now: float) -> Refusal | None:
        limited = self._source_limited(source, now)
        if limited is not None:
            self.auditor.log("login.rate-limited", actor=name[:MAX_NAME], source=source)
            return limited
        until = self.store.lockout_until("user", name[:MAX_NAME], now)
        if until is not None:
            self.auditor.log("login.locked-out", actor=name[:MAX_NAME], source=source,
                             until=until)
            return _refuse("locked-out", f"too many failed log-ins; locked out until "
                                         f"{_utc(until)}")
        return None

    def _count_source(self, source: str, now: float) -> bool:
        n = self.store.record_failure("source", source, now, self.cfg.source_window)
        if n >= self.cfg.source_max_failures:
            self.store.set_lockout("source", source, now + self.cfg.source_window)
            self.auditor.log("login.rate-limit", actor="system", source=source, failures=n,
                             until=now + self.cfg.source_window)
            return True
        return False

    def _failed(self, name: str, source: str, now: float, what: str,
                known: bool) -> Refusal:
        key = name[:MAX_NAME]
        self.auditor.log("login.failed", actor=key, source=source, reason=what, known=known)
        n = self.store.record_failure("user", key, now, self.cfg.failure_window)
        limited = self._count_source(source, now)
        if n >= self.cfg.max_failures:
            until = now + self.cfg.lockout
            self.store.set_lockout("user", key, until)
            self.auditor.log("login.lockout", actor=key, source=source, failures=n,
                             until=until)
            return _refuse("locked-out", f"too many failed log-ins; locked out until "
                                         f"{_utc(until)}")
        if limited:
            return self._rate_limited(now + self.cfg.source_window)
        return _refuse("bad-password" if what == "password" else "bad-code")

    def _unavailable(self, name: str, source: str, exc: StoreError) -> Refusal:
        with contextlib.suppress(StoreError):
            self.auditor.log("login.unavailable", actor=name[:MAX_NAME], source=source,
                             error=str(exc)[:200])
        return _refuse("unavailable")
