"""The console's read side: paged, filtered queries over the store's tables.

The Store interface answers whole lists (every device, the last N sessions), which
is what the CLI wants; a console page wants one page of 50 rows out of 10,000
devices or 100,000 audit entries, a total, and no enrollment record JSON it does not
show. These queries run on the same SQL store (SQLite and PostgreSQL: ``?``
placeholders, translated by the store's transaction) in read transactions, and use
only columns of ``gateway/store/schema.sql``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..store.base import Alert, AuditEntry, SessionRow, Store
from ..store.sql import SqlStore

PAGE = 50
T = TypeVar("T")


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    mode: str
    image_id: str
    enrolled_at: float
    status: str
    last_attest_at: float | None
    last_attest_result: str | None
    last_attest_step: str | None
    last_attest_reason: str | None

    @property
    def attention(self) -> str | None:
        """Why an admin should look at this device, or None."""
        if self.status != "active":
            return self.status
        if self.last_attest_at is None:
            return "never seen"
        if self.last_attest_result != "ok":
            return f"attestation refused ({self.last_attest_step or '?'})"
        return None


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def prev_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None


_DEVICE_COLS = ("device_id, mode, image_id, enrolled_at, status, last_attest_at, "
                "last_attest_result, last_attest_step, last_attest_reason")
_ATTENTION = ("(status <> 'active' OR last_attest_at IS NULL OR last_attest_result IS NULL "
              "OR last_attest_result <> 'ok')")
_SESSION_COLS = ("id, user_name, device_id, source, replica, started_at, recording, ended_at, "
                 "end_reason, bytes_in, bytes_out, recording_sha256, break_glass, budget_used, "
                 "anomaly_score")
_ALERT_COLS = ("at, rule, severity, action, detail, user_name, device_id, session_id, id, "
               "acked_at, acked_by, ack_comment")


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _session(row: Sequence[Any]) -> SessionRow:
    values = list(row)
    values[12] = bool(values[12])
    return SessionRow(*values)


class Queries:
    def __init__(self, store: Store) -> None:
        if not isinstance(store, SqlStore):
            raise TypeError("the console needs an SQL store")
        self.store = store

    def _all(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        with self.store._tx(False) as tx:
            return tx.all(sql, *params)

    def _count(self, sql: str, *params: Any) -> int:
        rows = self._all(sql, *params)
        return int(rows[0][0]) if rows else 0

    # -- devices -------------------------------------------------------------------------
    def devices(self, search: str = "", status: str = "", attention: bool = False,
                offset: int = 0, limit: int = PAGE) -> Page[DeviceRow]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if search:
            where.append("(device_id LIKE ? ESCAPE '\\' OR image_id LIKE ? ESCAPE '\\')")
            pattern = f"%{like_escape(search)}%"
            params += [pattern, pattern]
        if status:
            where.append("status = ?")
            params.append(status)
        if attention:
            where.append(_ATTENTION)
        cond = " AND ".join(where)
        total = self._count(f"SELECT COUNT(*) FROM devices WHERE {cond}", *params)
        rows = self._all(f"SELECT {_DEVICE_COLS} FROM devices WHERE {cond} "
                         "ORDER BY enrolled_at DESC, device_id DESC LIMIT ? OFFSET ?",
                         *params, limit, offset)
        return Page([DeviceRow(*r) for r in rows], total, offset, limit)

    def device_count(self) -> int:
        return self._count("SELECT COUNT(*) FROM devices")

    # -- sessions ------------------------------------------------------------------------
    def sessions(self, live: bool | None = None, user: str = "", device_id: str = "",
                 offset: int = 0, limit: int = PAGE) -> Page[SessionRow]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if live is True:
            where.append("ended_at IS NULL")
        elif live is False:
            where.append("ended_at IS NOT NULL")
        if user:
            where.append("user_name = ?")
            params.append(user)
        if device_id:
            where.append("device_id = ?")
            params.append(device_id)
        cond = " AND ".join(where)
        total = self._count(f"SELECT COUNT(*) FROM sessions WHERE {cond}", *params)
        rows = self._all(f"SELECT {_SESSION_COLS} FROM sessions WHERE {cond} "
                         "ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
                         *params, limit, offset)
        return Page([_session(r) for r in rows], total, offset, limit)

    # -- alerts --------------------------------------------------------------------------
    def alert_rules(self) -> list[tuple[str, int, int]]:
        """(rule, alerts, open alerts) for every rule that raised one."""
        rows = self._all("SELECT rule, COUNT(*), SUM(CASE WHEN acked_at IS NULL THEN 1 ELSE 0 "
                         "END) FROM alerts GROUP BY rule ORDER BY rule")
        return [(str(r[0]), int(r[1]), int(r[2] or 0)) for r in rows]

    def alerts(self, rule: str = "", open_only: bool = False, offset: int = 0,
               limit: int = PAGE) -> Page[Alert]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if rule:
            where.append("rule = ?")
            params.append(rule)
        if open_only:
            where.append("acked_at IS NULL")
        cond = " AND ".join(where)
        total = self._count(f"SELECT COUNT(*) FROM alerts WHERE {cond}", *params)
        rows = self._all(f"SELECT {_ALERT_COLS} FROM alerts WHERE {cond} "
                         "ORDER BY id DESC LIMIT ? OFFSET ?", *params, limit, offset)
        return Page([Alert(*r) for r in rows], total, offset, limit)

    # -- audit ---------------------------------------------------------------------------
    def audit(self, event: str = "", actor: str = "", before: int | None = None,
              limit: int = PAGE) -> list[AuditEntry]:
        """Newest first: entries whose event is ``event`` or starts with ``event.``, by
        ``actor``, with seq below ``before``."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if event:
            where.append("(event = ? OR event LIKE ? ESCAPE '\\')")
            params += [event, f"{like_escape(event)}.%"]
        if actor:
            where.append("actor = ?")
            params.append(actor)
        if before is not None:
            where.append("seq < ?")
            params.append(before)
        rows = self._all("SELECT seq, at_us, actor, event, data, prev_hash, hash FROM audit "
                         f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                         *params, limit)
        return [AuditEntry(int(r[0]), int(r[1]) / 1e6, r[2], r[3], json.loads(r[4]), r[5],
                           r[6], int(r[1])) for r in rows]

    def audit_last_seq(self) -> int:
        return self._count("SELECT COALESCE(MAX(seq), 0) FROM audit")
