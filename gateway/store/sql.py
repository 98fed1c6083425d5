"""The store's SQL, shared by SQLite and PostgreSQL.

A backend gives ``_tx(write)``: a context manager around ONE transaction that yields a
``Tx`` (``?`` placeholders, translated for PostgreSQL) and maps driver errors to
StoreError/StoreConflict. Everything that must hold fleet-wide is decided by the
database: conditional UPDATEs (tokens, nonces, TOTP steps), upserts with RETURNING
(output totals, failure counters) and, for the audit chain, a transaction that holds
the chain's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock);
concurrent appends of one process share such a transaction (auditgroup.py).
"""

from __future__ import annotations

import abc
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .auditgroup import AuditGroup, Pending
from .base import (
    Alert,
    Attestation,
    AuditEntry,
    Device,
    Image,
    Lock,
    SessionRow,
    Store,
    StoreConflict,
    StoreError,
    Token,
    User,
)

SCHEMA_VERSION = 2     # 2: audit_event index
SCHEMA = Path(__file__).with_name("schema.sql")
SCOPES = ("user", "source")
AUDIT_PAGE = 1000
_GROUP_LOCK = threading.Lock()


class Tx(abc.ABC):
    """One open transaction; SQL uses ``?`` placeholders."""

    @abc.abstractmethod
    def run(self, sql: str, *params: Any) -> int:
        """Execute; return the row count."""

    @abc.abstractmethod
    def all(self, sql: str, *params: Any) -> list[Sequence[Any]]: ...

    def one(self, sql: str, *params: Any) -> Sequence[Any] | None:
        rows = self.all(sql, *params)
        return rows[0] if rows else None


def schema_statements(dialect: dict[str, str]) -> list[str]:
    text = SCHEMA.read_text()
    for word, value in dialect.items():
        text = text.replace(word, value)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _user(row: Sequence[Any]) -> User:
    name, ph, secret, upstream, role, bg, created, step = row
    return User(name, ph, secret, upstream, role, bool(bg), created, step)


def _token(row: Sequence[Any]) -> Token:
    return Token(*row)


_DEVICE_COLS = ("device_id, mode, image_id, record, enrolled_at, status, ek_cert, "
                "last_attest_at, last_attest_result, last_attest_step, last_attest_reason")


def _device(row: Sequence[Any]) -> Device:
    values = list(row)
    values[3] = json.loads(values[3])
    return Device(*values)


_LOCK_COLS = ("target_kind, target, reason, created_at, created_by, expires_at, id, "
              "removed_at, removed_by")
_SESSION_COLS = ("id, user_name, device_id, source, replica, started_at, recording, ended_at, "
                 "end_reason, bytes_in, bytes_out, recording_sha256, break_glass, budget_used, "
                 "anomaly_score")
_SESSION_FIELDS = {f.name: f.name for f in fields(SessionRow)} | {"user": "user_name"}


def _session(row: Sequence[Any]) -> SessionRow:
    values = list(row)
    values[12] = bool(values[12])
    return SessionRow(*values)


_ALERT_COLS = ("at, rule, severity, action, detail, user_name, device_id, session_id, id, "
               "acked_at, acked_by, ack_comment")
_AUDIT_COLS = "seq, at_us, actor, event, data, prev_hash, hash"


def _audit(row: Sequence[Any]) -> AuditEntry:
    seq, at_us, actor, event, data, prev_hash, h = row
    return AuditEntry(seq, at_us / 1e6, actor, event, json.loads(data), prev_hash, h, at_us)


def _image(row: Sequence[Any]) -> Image:
    image_id, ref, sig, added_at, added_by, revoked_at = row
    return Image(image_id, bytes(ref), bytes(sig), added_at, added_by, revoked_at)


class _Abort(Exception):
    """Roll the transaction back and answer ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"bad scope {scope!r}")


class SqlStore(Store):
    """The Store methods in SQL; subclasses supply connections and dialect details."""

    url: str

    @abc.abstractmethod
    def _tx(self, write: bool = True) -> AbstractContextManager[Tx]: ...

    def _lock_audit(self, tx: Tx) -> None:
        """Take the audit chain's write lock inside tx (SQLite: BEGIN IMMEDIATE has it)."""

    def _locks_changed(self, tx: Tx) -> None:
        tx.run("UPDATE counters SET value = value + 1 WHERE name = 'locks'")

    def _lock_schema(self, tx: Tx) -> None:
        """Serialize schema creation between processes (PostgreSQL: an advisory lock)."""

    def _schema_version(self) -> int | None:
        """The store's schema version; None for a new store (no meta table yet)."""
        try:
            with self._tx(False) as tx:
                row = tx.one("SELECT value FROM meta WHERE key = 'schema_version'")
        except StoreError:
            return None
        return int(row[0]) if row else None

    def _init_schema(self, dialect: dict[str, str]) -> None:
        # A store at this version is opened with no DDL: CREATE INDEX IF NOT EXISTS still
        # takes its table's SHARE lock, and every CLI call and replica opens the store while
        # others append (found as a deadlock between an open and a lock's transaction)
        if self._schema_version() == SCHEMA_VERSION:
            return
        with self._tx() as tx:
            self._lock_schema(tx)
            row = tx.one("SELECT value FROM meta WHERE key = 'schema_version'") \
                if self._has_meta(tx) else None
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise StoreError(f"store schema version {row[0]} is newer than "
                                 f"{SCHEMA_VERSION}; this auditbox cannot use it")
            # new store, or an older one: every change so far is an added table or index,
            # so the idempotent statements bring it up to date
            for stmt in schema_statements(dialect):
                tx.run(stmt)
            if row is None:
                tx.run("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                       str(SCHEMA_VERSION))
            elif int(row[0]) < SCHEMA_VERSION:
                tx.run("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                       str(SCHEMA_VERSION))
            tx.run("INSERT INTO counters (name, value) VALUES ('locks', 0) "
                   "ON CONFLICT (name) DO NOTHING")

    @abc.abstractmethod
    def _has_meta(self, tx: Tx) -> bool:
        """Whether the meta table exists (inside tx, without failing it)."""

    # -- users ---------------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        with self._tx() as tx:
            tx.run("INSERT INTO users (name, password_hash, totp_secret, upstream_user, role, "
                   "break_glass, created_at, last_totp_step) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   user.name, user.password_hash, user.totp_secret, user.upstream_user,
                   user.role, int(user.break_glass), user.created_at, user.last_totp_step)

    def get_user(self, name: str) -> User | None:
        with self._tx(False) as tx:
            row = tx.one("SELECT name, password_hash, totp_secret, upstream_user, role, "
                         "break_glass, created_at, last_totp_step FROM users WHERE name = ?",
                         name)
        return _user(row) if row else None

    def list_users(self) -> list[User]:
        with self._tx(False) as tx:
            rows = tx.all("SELECT name, password_hash, totp_secret, upstream_user, role, "
                          "break_glass, created_at, last_totp_step FROM users ORDER BY name")
        return [_user(r) for r in rows]

    _USER_UPDATABLE = frozenset({"password_hash", "totp_secret", "upstream_user", "role",
                                 "break_glass", "last_totp_step"})

    def update_user(self, name: str, **values: Any) -> bool:
        return self._update("users", "name", name, self._USER_UPDATABLE, values,
                            {"break_glass": int})

    def remove_user(self, name: str) -> bool:
        with self._tx() as tx:
            return tx.run("DELETE FROM users WHERE name = ?", name) == 1

    def accept_totp_step(self, name: str, step: int) -> bool:
        with self._tx() as tx:
            return tx.run("UPDATE users SET last_totp_step = ? "
                          "WHERE name = ? AND last_totp_step < ?", step, name, step) == 1

    def _update(self, table: str, key_col: str, key: str, allowed: frozenset[str],
                values: dict[str, Any], convert: dict[str, Any] | None = None) -> bool:
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"cannot update {table}: {', '.join(sorted(unknown))}")
        if not values:
            raise ValueError(f"nothing to update in {table}")
        convert = convert or {}
        cols = sorted(values)
        params = [convert[c](values[c]) if c in convert else values[c] for c in cols]
        sets = ", ".join(f"{c} = ?" for c in cols)
        with self._tx() as tx:
            return tx.run(f"UPDATE {table} SET {sets} WHERE {key_col} = ?",
                          *params, key) == 1

    # -- failures and lockouts -------------------------------------------------------------
    def record_failure(self, scope: str, key: str, at: float, window: float) -> int:
        _check_scope(scope)
        with self._tx() as tx:
            # the upsert takes the (scope, key) row lock: writers of one key go one by one
            tx.run("INSERT INTO failure_keys (scope, key, n) VALUES (?, ?, 1) "
                   "ON CONFLICT (scope, key) DO UPDATE SET n = failure_keys.n + 1", scope, key)
            tx.run("DELETE FROM failures WHERE scope = ? AND key = ? AND at < ?",
                   scope, key, at - window)
            tx.run("INSERT INTO failures (scope, key, at) VALUES (?, ?, ?)", scope, key, at)
            # every failure committed since at - window, including ones timed a moment
            # after ``at`` (a racing attempt that committed first): the last writer to
            # commit sees them all, so N racing failures always reach N
            row = tx.one("SELECT COUNT(*) FROM failures WHERE scope = ? AND key = ? "
                         "AND at >= ?", scope, key, at - window)
        return int(row[0]) if row else 0

    def clear_failures(self, scope: str, key: str) -> None:
        _check_scope(scope)
        with self._tx() as tx:
            tx.run("DELETE FROM failures WHERE scope = ? AND key = ?", scope, key)

    def set_lockout(self, scope: str, key: str, until: float) -> None:
        _check_scope(scope)
        with self._tx() as tx:
            tx.run("INSERT INTO lockouts (scope, key, until) VALUES (?, ?, ?) "
                   "ON CONFLICT (scope, key) DO UPDATE SET until = "
                   "CASE WHEN excluded.until > lockouts.until THEN excluded.until "
                   "ELSE lockouts.until END", scope, key, until)

    def lockout_until(self, scope: str, key: str, now: float) -> float | None:
        _check_scope(scope)
        with self._tx(False) as tx:
            row = tx.one("SELECT until FROM lockouts WHERE scope = ? AND key = ? AND until > ?",
                         scope, key, now)
        return float(row[0]) if row else None

    def clear_lockout(self, scope: str, key: str) -> None:
        _check_scope(scope)
        with self._tx() as tx:
            tx.run("DELETE FROM lockouts WHERE scope = ? AND key = ?", scope, key)

    def list_lockouts(self, now: float) -> list[tuple[str, str, float]]:
        """(scope, key, until) of every lockout in force at ``now``."""
        with self._tx(False) as tx:
            rows = tx.all("SELECT scope, key, until FROM lockouts WHERE until > ? "
                          "ORDER BY scope, key", now)
        return [(r[0], r[1], float(r[2])) for r in rows]

    # -- tokens ---------------------------------------------------------------------------
    def add_token(self, token: Token) -> None:
        with self._tx() as tx:
            tx.run("INSERT INTO tokens (token_hash, mode, created_at, expires_at, created_by, "
                   "used_at, used_by) VALUES (?, ?, ?, ?, ?, ?, ?)", *asdict(token).values())

    def get_token(self, token_hash: str) -> Token | None:
        with self._tx(False) as tx:
            row = tx.one("SELECT token_hash, mode, created_at, expires_at, created_by, used_at, "
                         "used_by FROM tokens WHERE token_hash = ?", token_hash)
        return _token(row) if row else None

    def use_token(self, token_hash: str, device_id: str, at: float) -> bool:
        with self._tx() as tx:
            return tx.run("UPDATE tokens SET used_at = ?, used_by = ? WHERE token_hash = ? "
                          "AND used_at IS NULL AND expires_at > ?",
                          at, device_id, token_hash, at) == 1

    def list_tokens(self) -> list[Token]:
        with self._tx(False) as tx:
            rows = tx.all("SELECT token_hash, mode, created_at, expires_at, created_by, "
                          "used_at, used_by FROM tokens ORDER BY created_at")
        return [_token(r) for r in rows]

    # -- devices ---------------------------------------------------------------------------
    def add_device(self, device: Device) -> None:
        values = asdict(device)
        values["record"] = json.dumps(device.record, sort_keys=True)
        with self._tx() as tx:
            tx.run(f"INSERT INTO devices ({_DEVICE_COLS}) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", *values.values())

    def enroll_device(self, device: Device, token_hash: str, at: float) -> str | None:
        values = asdict(device)
        values["record"] = json.dumps(device.record, sort_keys=True)
        try:
            with self._tx() as tx:
                if tx.run("UPDATE tokens SET used_at = ?, used_by = ? WHERE token_hash = ? "
                          "AND used_at IS NULL AND expires_at > ?",
                          at, device.device_id, token_hash, at) != 1:
                    raise _Abort("token")
                if tx.run(f"INSERT INTO devices ({_DEVICE_COLS}) VALUES "
                          "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO NOTHING",
                          *values.values()) != 1:
                    raise _Abort("device")
        except _Abort as abort:
            return abort.reason
        return None

    def get_device(self, device_id: str) -> Device | None:
        with self._tx(False) as tx:
            row = tx.one(f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id = ?", device_id)
        return _device(row) if row else None

    def list_devices(self) -> list[Device]:
        with self._tx(False) as tx:
            rows = tx.all(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY enrolled_at")
        return [_device(r) for r in rows]

    _DEVICE_UPDATABLE = frozenset({"image_id", "record", "status", "ek_cert", "last_attest_at",
                                   "last_attest_result", "last_attest_step",
                                   "last_attest_reason"})

    def update_device(self, device_id: str, **values: Any) -> bool:
        return self._update("devices", "device_id", device_id, self._DEVICE_UPDATABLE, values,
                            {"record": lambda r: json.dumps(r, sort_keys=True)})

    def record_attestation(self, att: Attestation,
                           record: dict[str, Any] | None = None) -> None:
        with self._tx() as tx:
            tx.run("INSERT INTO attestations (device_id, at, result, step, reason, session_id) "
                   "VALUES (?, ?, ?, ?, ?, ?)", att.device_id, att.at, att.result, att.step,
                   att.reason, att.session_id)
            sets = ("last_attest_at = ?, last_attest_result = ?, last_attest_step = ?, "
                    "last_attest_reason = ?")
            params: list[Any] = [att.at, att.result, att.step, att.reason]
            if record is not None:
                sets += ", record = ?"
                params.append(json.dumps(record, sort_keys=True))
            if tx.run(f"UPDATE devices SET {sets} WHERE device_id = ?", *params,
                      att.device_id) != 1:
                raise StoreError(f"no device {att.device_id!r}")

    def attestation_history(self, device_id: str, limit: int = 50) -> list[Attestation]:
        with self._tx(False) as tx:
            rows = tx.all("SELECT device_id, at, result, step, reason, session_id "
                          "FROM attestations WHERE device_id = ? ORDER BY id DESC LIMIT ?",
                          device_id, limit)
        return [Attestation(*r) for r in rows]

    # -- images ----------------------------------------------------------------------------
    def add_image(self, image: Image) -> None:
        with self._tx() as tx:
            tx.run("INSERT INTO images (image_id, reference, signature, added_at, added_by, "
                   "revoked_at) VALUES (?, ?, ?, ?, ?, ?)", image.image_id, image.reference,
                   image.signature, image.added_at, image.added_by, image.revoked_at)

    def get_image(self, image_id: str) -> Image | None:
        with self._tx(False) as tx:
            row = tx.one("SELECT image_id, reference, signature, added_at, added_by, "
                         "revoked_at FROM images WHERE image_id = ?", image_id)
        return _image(row) if row else None

    def list_images(self) -> list[Image]:
        with self._tx(False) as tx:
            rows = tx.all("SELECT image_id, reference, signature, added_at, added_by, "
                          "revoked_at FROM images ORDER BY added_at")
        return [_image(r) for r in rows]

    def revoke_image(self, image_id: str, at: float) -> bool:
        with self._tx() as tx:
            return tx.run("UPDATE images SET revoked_at = ? WHERE image_id = ? "
                          "AND revoked_at IS NULL", at, image_id) == 1

    # -- nonces -----------------------------------------------------------------------------
    def issue_nonce(self, nonce: bytes, issued_at: float, expires_at: float) -> None:
        with self._tx() as tx:
            tx.run("INSERT INTO nonces (nonce, issued_at, expires_at) VALUES (?, ?, ?)",
                   bytes(nonce), issued_at, expires_at)

    def consume_nonce(self, nonce: bytes, at: float) -> str | None:
        with self._tx() as tx:
            if tx.run("UPDATE nonces SET used_at = ? WHERE nonce = ? AND used_at IS NULL "
                      "AND expires_at >= ?", at, bytes(nonce), at) == 1:
                return None
            row = tx.one("SELECT used_at FROM nonces WHERE nonce = ?", bytes(nonce))
        if row is None:
            return "unknown"
        return "used" if row[0] is not None else "expired"

    def purge_nonces(self, before: float) -> int:
        with self._tx() as tx:
            return tx.run("DELETE FROM nonces WHERE expires_at < ?", before)

    # -- locks -------------------------------------------------------------------------------
    def add_lock(self, lock: Lock) -> int:
        with self._tx() as tx:
            row = tx.one("INSERT INTO locks (target_kind, target, reason, created_at, "
                         "created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                         lock.target_kind, lock.target, lock.reason, lock.created_at,
                         lock.created_by, lock.expires_at)
            self._locks_changed(tx)
        assert row is not None
        return int(row[0])

    def remove_lock(self, lock_id: int, by: str, at: float) -> bool:
        with self._tx() as tx:
            done = tx.run("UPDATE locks SET removed_at = ?, removed_by = ? WHERE id = ? "
                          "AND removed_at IS NULL", at, by, lock_id) == 1
            if done:
                self._locks_changed(tx)
        return done

    def active_locks(self, now: float) -> list[Lock]:
        with self._tx(False) as tx:
            rows = tx.all(f"SELECT {_LOCK_COLS} FROM locks WHERE removed_at IS NULL AND "
                          "(expires_at IS NULL OR expires_at > ?) ORDER BY id", now)
        return [Lock(*r) for r in rows]

    def list_locks(self, limit: int = 200) -> list[Lock]:
        """Every lock, newest first, including removed and expired ones."""
        with self._tx(False) as tx:
            rows = tx.all(f"SELECT {_LOCK_COLS} FROM locks ORDER BY id DESC LIMIT ?", limit)
        return [Lock(*r) for r in rows]

    def locks_version(self) -> int:
        with self._tx(False) as tx:
            row = tx.one("SELECT value FROM counters WHERE name = 'locks'")
        return int(row[0]) if row else 0

    # -- sessions ----------------------------------------------------------------------------
    def start_session(self, row: SessionRow) -> None:
        values = asdict(row)
        values["break_glass"] = int(row.break_glass)
        with self._tx() as tx:
            tx.run(f"INSERT INTO sessions ({_SESSION_COLS}) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", *values.values())

    _SESSION_UPDATABLE = frozenset({"ended_at", "end_reason", "bytes_in", "bytes_out",
                                    "recording_sha256", "budget_used", "anomaly_score",
                                    "device_id"})

    def update_session(self, session_id: str, **values: Any) -> None:
        if not self._update("sessions", "id", session_id, self._SESSION_UPDATABLE, values):
            raise StoreError(f"no session {session_id!r}")

    def get_session(self, session_id: str) -> SessionRow | None:
        with self._tx(False) as tx:
            row = tx.one(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?", session_id)
        return _session(row) if row else None

    def list_sessions(self, live_only: bool = False, limit: int = 200) -> list[SessionRow]:
        where = "WHERE ended_at IS NULL " if live_only else ""
        with self._tx(False) as tx:
            rows = tx.all(f"SELECT {_SESSION_COLS} FROM sessions {where}"
                          "ORDER BY started_at DESC, id DESC LIMIT ?", limit)
        return [_session(r) for r in rows]

    def end_orphan_sessions(self, replica: str, at: float, reason: str) -> list[str]:
        with self._tx() as tx:
            rows = tx.all("UPDATE sessions SET ended_at = ?, end_reason = ? "
                          "WHERE replica = ? AND ended_at IS NULL RETURNING id",
                          at, reason, replica)
        return sorted(str(r[0]) for r in rows)

    # -- alerts ------------------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> int:
        with self._tx() as tx:
            row = tx.one("INSERT INTO alerts (at, rule, severity, action, detail, user_name, "
                         "device_id, session_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                         alert.at, alert.rule, alert.severity, alert.action, alert.detail,
                         alert.user, alert.device_id, alert.session_id)
        assert row is not None
        return int(row[0])

    def list_alerts(self, open_only: bool = False, limit: int = 200) -> list[Alert]:
        where = "WHERE acked_at IS NULL " if open_only else ""
        with self._tx(False) as tx:
            rows = tx.all(f"SELECT {_ALERT_COLS} FROM alerts {where}ORDER BY id DESC LIMIT ?",
                          limit)
        return [Alert(*r) for r in rows]

    def ack_alert(self, alert_id: int, by: str, comment: str, at: float) -> bool:
        with self._tx() as tx:
            return tx.run("UPDATE alerts SET acked_at = ?, acked_by = ?, ack_comment = ? "
                          "WHERE id = ? AND acked_at IS NULL", at, by, comment, alert_id) == 1

    # -- output budget and baselines ------------------------------------------------------------
    def add_output(self, user: str, day: str, nbytes: int) -> int:
        if nbytes < 0:
            raise ValueError("nbytes must not be negative")
        with self._tx() as tx:
            row = tx.one("INSERT INTO output_totals (user_name, day, total) VALUES (?, ?, ?) "
                         "ON CONFLICT (user_name, day) DO UPDATE SET "
                         "total = output_totals.total + excluded.total RETURNING total",
                         user, day, nbytes)
        assert row is not None
        return int(row[0])

    def output_total(self, user: str, day: str) -> int:
        with self._tx(False) as tx:
            row = tx.one("SELECT total FROM output_totals WHERE user_name = ? AND day = ?",
                         user, day)
        return int(row[0]) if row else 0

    def get_baseline(self, user: str) -> dict[str, Any]:
        with self._tx(False) as tx:
            row = tx.one("SELECT data FROM baselines WHERE user_name = ?", user)
        data: dict[str, Any] = json.loads(row[0]) if row else {}
        return data

    def put_baseline(self, user: str, baseline: dict[str, Any]) -> None:
        text = json.dumps(baseline, sort_keys=True, allow_nan=False)
        with self._tx() as tx:
            tx.run("INSERT INTO baselines (user_name, data) VALUES (?, ?) "
                   "ON CONFLICT (user_name) DO UPDATE SET data = excluded.data", user, text)

    # -- audit chain ----------------------------------------------------------------------------
    def append_audit(self, at: float, actor: str, event: str,
                     data: dict[str, Any]) -> AuditEntry:
        text = json.dumps(data, sort_keys=True, allow_nan=False)
        item = Pending(round(at * 1_000_000), actor, event, text, json.loads(text))
        group: AuditGroup | None = self.__dict__.get("_audit_group")
        if group is None:
            with _GROUP_LOCK:
                group = self.__dict__.get("_audit_group")
                if group is None:
                    group = self.__dict__["_audit_group"] = AuditGroup(
                        self._append_audit_batch)
        return group.append(item)

    def _append_audit_batch(self, batch: list[Pending]) -> None:
        """Append the batch in one transaction holding the chain's lock (auditgroup.py)."""
        from gateway.audit import ZERO_HASH, entry_hash

        with self._tx() as tx:
            self._lock_audit(tx)
            row = tx.one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            seq, prev = (int(row[0]), str(row[1])) if row else (0, ZERO_HASH)
            for p in batch:
                seq += 1
                h = entry_hash(seq, p.at_us, p.actor, p.event, p.data, prev)
                tx.run(f"INSERT INTO audit ({_AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       seq, p.at_us, p.actor, p.event, p.text, prev, h)
                p.entry = AuditEntry(seq, p.at_us / 1e6, p.actor, p.event, p.data, prev, h,
                                     p.at_us)
                prev = h

    def audit_entries(self, after_seq: int = 0,
                      limit: int | None = None) -> Iterator[AuditEntry]:
        left = limit
        while left is None or left > 0:
            page = AUDIT_PAGE if left is None else min(AUDIT_PAGE, left)
            with self._tx(False) as tx:
                rows = tx.all(f"SELECT {_AUDIT_COLS} FROM audit WHERE seq > ? "
                              "ORDER BY seq LIMIT ?", after_seq, page)
            for r in rows:
                yield _audit(r)
            if len(rows) < page:
                return
            after_seq = int(rows[-1][0])
            if left is not None:
                left -= len(rows)

    def last_audit(self) -> AuditEntry | None:
        with self._tx(False) as tx:
            row = tx.one(f"SELECT {_AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT 1")
        return _audit(row) if row else None

    def audit_tail(self, n: int) -> list[AuditEntry]:
        """The last n entries, oldest first."""
        with self._tx(False) as tx:
            rows = tx.all(f"SELECT {_AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT ?", n)
        return [_audit(r) for r in reversed(rows)]

    def audit_latest(self, event: str, n: int) -> list[AuditEntry]:
        with self._tx(False) as tx:
            rows = tx.all(f"SELECT {_AUDIT_COLS} FROM audit WHERE event = ? "
                          "ORDER BY seq DESC LIMIT ?", event, n)
        return [_audit(r) for r in rows]


__all__ = ["SqlStore", "StoreConflict", "StoreError", "Tx"]
