"""The gateway's store: one interface, SQLite and PostgreSQL behind it.

Everything the gateway must remember lives here, and nothing else holds state that
another replica needs: users, failure counters and lockouts, enrollment tokens,
devices and their attestation history, registered images, nonces, locks, sessions,
alerts, the daily output totals, anomaly baselines and the audit chain.

Methods are synchronous and thread safe; the asyncio server calls them through
``asyncio.to_thread``. Times are POSIX seconds (float, UTC). Every method that must
hold fleet-wide is atomic in the database (a conditional UPDATE, a unique key, or a
transaction), never a read-then-write in Python.

Errors: ``StoreError`` when the database cannot be reached or answers with an error
(the gateway then fails closed); ``StoreConflict`` for a unique-key clash the caller
asked about (a user that already exists).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class StoreError(Exception):
    """The store cannot be read or written: the gateway fails closed."""


class StoreConflict(StoreError):
    """A row that must be unique already exists."""


@dataclass
class User:
    name: str
    password_hash: str                 # argon2id PHC string
    totp_secret: str                   # base32
    upstream_user: str                 # account on the research harness
    role: str = "auditor"              # auditor | observer | admin (web console)
    break_glass: bool = False          # may log in without attestation (audited, alerts)
    created_at: float = 0.0
    last_totp_step: int = -1           # highest RFC 6238 step accepted (replay guard)


@dataclass
class Token:
    token_hash: str                    # hex SHA-256 of the token; the token is shown once
    mode: str                          # tpm2 | soft
    created_at: float
    expires_at: float
    created_by: str
    used_at: float | None = None
    used_by: str | None = None         # device id


@dataclass
class Device:
    device_id: str
    mode: str                          # tpm2 | soft
    image_id: str
    record: dict[str, Any]             # attestation.enroll record (validate_record)
    enrolled_at: float
    status: str = "active"             # active | revoked
    ek_cert: str = "none"              # checked | allowed-without | none (the record's ek_cert)
    last_attest_at: float | None = None
    last_attest_result: str | None = None   # ok | refused
    last_attest_step: str | None = None
    last_attest_reason: str | None = None


@dataclass
class Attestation:
    device_id: str
    at: float
    result: str                        # ok | refused
    step: str | None
    reason: str | None
    session_id: str | None = None


@dataclass
class Image:
    image_id: str
    reference: bytes                   # reference.json, exact bytes
    signature: bytes                   # reference.json.sig, exact bytes
    added_at: float
    added_by: str
    revoked_at: float | None = None


@dataclass
class Lock:
    target_kind: str                   # device | user
    target: str
    reason: str
    created_at: float
    created_by: str
    expires_at: float | None = None
    id: int | None = None
    removed_at: float | None = None
    removed_by: str | None = None


@dataclass
class SessionRow:
    id: str                            # e.g. 20261130T101502Z-<8 hex>
    user: str
    device_id: str | None              # None for break-glass
    source: str                        # client address:port
    replica: str
    started_at: float
    recording: str                     # path relative to the recordings directory
    ended_at: float | None = None
    end_reason: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    recording_sha256: str | None = None
    break_glass: bool = False
    budget_used: float = 0.0           # share of the daily total, 0..1
    anomaly_score: float = 0.0


@dataclass
class Alert:
    at: float
    rule: str
    severity: str                      # info | warning | critical
    action: str                        # log | alert | lock
    detail: str
    user: str | None = None
    device_id: str | None = None
    session_id: str | None = None
    id: int | None = None
    acked_at: float | None = None
    acked_by: str | None = None
    ack_comment: str | None = None


@dataclass
class AuditEntry:
    seq: int                           # 1, 2, 3, ... no gaps
    at: float
    actor: str                         # user name, "system", "cli:<unix user>", replica id
    event: str                         # login.ok, login.failed, lock.add, ...
    data: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""                # hex; "0"*64 for the first entry
    hash: str = ""                     # hex SHA-256 over the canonical entry (gateway.audit)
    at_us: int = 0                     # ``at`` in whole microseconds: what the hash covers


class StoreBusy(StoreError):
    """A SQLite store is already served by another gateway process."""


class LockListener(abc.ABC):
    """Blocking waits for lock-change notifications (one dedicated connection)."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds; the number of notifications received (0: none).
        StoreError when the connection is lost."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Store(abc.ABC):
    """The one store interface. ``gateway.store.open_store(url)`` returns one."""

    url: str

    # -- lifecycle -------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...

    # -- users -----------------------------------------------------------------------
    @abc.abstractmethod
    def add_user(self, user: User) -> None:
        """Insert; StoreConflict if the name exists."""

    @abc.abstractmethod
    def get_user(self, name: str) -> User | None: ...

    @abc.abstractmethod
    def list_users(self) -> list[User]: ...

    @abc.abstractmethod
    def update_user(self, name: str, **fields: Any) -> bool:
        """Set the given User fields; False if there is no such user."""

    @abc.abstractmethod
    def remove_user(self, name: str) -> bool: ...

    @abc.abstractmethod
    def accept_totp_step(self, name: str, step: int) -> bool:
        """Atomically raise last_totp_step to step if step is higher; False = replay."""

    # -- failures and lockouts (scope: "user" or "source") ----------------------------
    @abc.abstractmethod
    def record_failure(self, scope: str, key: str, at: float, window: float) -> int:
        """Record one failure; return how many are recorded at or after ``at - window``
        (racing writers of one key are serialized: the last to commit counts them all)."""

    @abc.abstractmethod
    def clear_failures(self, scope: str, key: str) -> None: ...

    @abc.abstractmethod
    def set_lockout(self, scope: str, key: str, until: float) -> None: ...

    @abc.abstractmethod
    def lockout_until(self, scope: str, key: str, now: float) -> float | None:
        """The lockout's end if one is in force at ``now``, else None."""

    @abc.abstractmethod
    def clear_lockout(self, scope: str, key: str) -> None: ...

    @abc.abstractmethod
    def list_lockouts(self, now: float) -> list[tuple[str, str, float]]:
        """(scope, key, until) of every lockout in force at ``now``."""

    # -- enrollment tokens -------------------------------------------------------------
    @abc.abstractmethod
    def add_token(self, token: Token) -> None: ...

    @abc.abstractmethod
    def get_token(self, token_hash: str) -> Token | None: ...

    @abc.abstractmethod
    def use_token(self, token_hash: str, device_id: str, at: float) -> bool:
        """Atomically mark an unused, unexpired token used; False if it was not."""

    @abc.abstractmethod
    def list_tokens(self) -> list[Token]: ...

    # -- devices -----------------------------------------------------------------------
    @abc.abstractmethod
    def add_device(self, device: Device) -> None:
        """Insert; StoreConflict if the device id exists."""

    @abc.abstractmethod
    def enroll_device(self, device: Device, token_hash: str, at: float) -> str | None:
        """In one transaction: use the token up (unused, unexpired) and insert the device.
        None if both happened; else nothing changed and the reason: "token" (unknown, used
        or expired) or "device" (the device id is already enrolled)."""

    @abc.abstractmethod
    def get_device(self, device_id: str) -> Device | None: ...

    @abc.abstractmethod
    def list_devices(self) -> list[Device]: ...

    @abc.abstractmethod
    def update_device(self, device_id: str, **fields: Any) -> bool: ...

    @abc.abstractmethod
    def record_attestation(self, att: Attestation,
                           record: dict[str, Any] | None = None) -> None:
        """Append to the history, set the device's last_attest_*, and (when given) the
        updated enrollment record (last clock, firmware values), in one transaction."""

    @abc.abstractmethod
    def attestation_history(self, device_id: str, limit: int = 50) -> list[Attestation]: ...

    # -- images --------------------------------------------------------------------------
    @abc.abstractmethod
    def add_image(self, image: Image) -> None: ...

    @abc.abstractmethod
    def get_image(self, image_id: str) -> Image | None: ...

    @abc.abstractmethod
    def list_images(self) -> list[Image]: ...

    @abc.abstractmethod
    def revoke_image(self, image_id: str, at: float) -> bool: ...

    # -- nonces (single use, fleet-wide) -----------------------------------------------
    @abc.abstractmethod
    def issue_nonce(self, nonce: bytes, issued_at: float, expires_at: float) -> None:
        """Insert a fresh nonce; StoreConflict if it was ever issued."""

    @abc.abstractmethod
    def consume_nonce(self, nonce: bytes, at: float) -> str | None:
        """Atomically use a nonce up. None if it was fresh; else why not
        ("unknown", "used", "expired")."""

    @abc.abstractmethod
    def purge_nonces(self, before: float) -> int: ...

    # -- locks -----------------------------------------------------------------------------
    @abc.abstractmethod
    def add_lock(self, lock: Lock) -> int:
        """Insert and bump the lock version; return the lock id."""

    @abc.abstractmethod
    def remove_lock(self, lock_id: int, by: str, at: float) -> bool: ...

    @abc.abstractmethod
    def active_locks(self, now: float) -> list[Lock]: ...

    @abc.abstractmethod
    def list_locks(self, limit: int = 200) -> list[Lock]:
        """Every lock, newest first, including removed and expired ones."""

    @abc.abstractmethod
    def locks_version(self) -> int:
        """A counter that changes whenever a lock is added or removed (cheap to poll)."""

    def lock_listener(self) -> LockListener | None:
        """A connection told of every lock change as it commits (PostgreSQL LISTEN/NOTIFY),
        or None where the store has none (SQLite: ``locks_version`` is polled)."""
        return None

    def claim_serving(self) -> None:
        """Called by ``serve`` before it listens. SQLite refuses a second serving process
        on one file (``StoreBusy``); PostgreSQL serves any number of replicas."""
        return None

    # -- sessions ----------------------------------------------------------------------------
    @abc.abstractmethod
    def start_session(self, row: SessionRow) -> None: ...

    @abc.abstractmethod
    def update_session(self, session_id: str, **fields: Any) -> None: ...

    @abc.abstractmethod
    def get_session(self, session_id: str) -> SessionRow | None: ...

    @abc.abstractmethod
    def list_sessions(self, live_only: bool = False, limit: int = 200) -> list[SessionRow]: ...

    @abc.abstractmethod
    def end_orphan_sessions(self, replica: str, at: float, reason: str) -> list[str]:
        """Mark this replica's sessions still open (a crash) as ended; return their ids."""

    # -- alerts --------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_alert(self, alert: Alert) -> int: ...

    @abc.abstractmethod
    def list_alerts(self, open_only: bool = False, limit: int = 200) -> list[Alert]: ...

    @abc.abstractmethod
    def ack_alert(self, alert_id: int, by: str, comment: str, at: float) -> bool: ...

    # -- output budget and anomaly baselines -------------------------------------------------
    @abc.abstractmethod
    def add_output(self, user: str, day: str, nbytes: int) -> int:
        """Atomically add to the user's total for day (YYYY-MM-DD, UTC); return the total."""

    @abc.abstractmethod
    def output_total(self, user: str, day: str) -> int: ...

    @abc.abstractmethod
    def get_baseline(self, user: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def put_baseline(self, user: str, baseline: dict[str, Any]) -> None: ...

    # -- audit chain ------------------------------------------------------------------------------
    @abc.abstractmethod
    def append_audit(self, at: float, actor: str, event: str,
                     data: dict[str, Any]) -> AuditEntry:
        """Append one entry chained to the last; appends are serialized in the database
        (one chain, whatever the number of writers)."""

    @abc.abstractmethod
    def audit_entries(self, after_seq: int = 0,
                      limit: int | None = None) -> Iterator[AuditEntry]: ...

    @abc.abstractmethod
    def last_audit(self) -> AuditEntry | None: ...

    @abc.abstractmethod
    def audit_tail(self, n: int) -> list[AuditEntry]:
        """The last n entries, oldest first."""

    @abc.abstractmethod
    def audit_latest(self, event: str, n: int) -> list[AuditEntry]:
        """The last n entries of kind ``event``, newest first."""
