"""PostgreSQL behind the store (psycopg 3, a psycopg_pool connection pool).

Every method is one transaction on a pooled connection (READ COMMITTED). What must
hold across replicas is decided by PostgreSQL: conditional UPDATEs and upserts (row
locks), and ``pg_advisory_xact_lock`` for the audit chain and for creating the schema.
Adding or removing a lock also sends ``NOTIFY auditbox_locks`` in its transaction
(delivered when it commits); ``lock_listener()`` opens the ``LISTEN`` connection every
replica's lock watcher waits on, with ``locks_version()`` polled as the backstop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from .base import LockListener, StoreConflict, StoreError
from .sql import SqlStore, Tx

DIALECT = {"@ID@": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "@BLOB@": "BYTEA",
           "@FLOAT@": "DOUBLE PRECISION"}
AUDIT_LOCK = 0x61756469        # "audi"
SCHEMA_LOCK = 0x73636865       # "sche"
POOL_MAX = 20
CONNECT_TIMEOUT = 10.0
_SECRET = re.compile(r"(://[^:/@]*:)[^@]*@")
# the pool logs its reconnection attempts; they reach the root logger's handlers when the
# server configures logging, and never print on their own (CLI errors stay one line)
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    return _SECRET.sub(r"\1***@", url)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _PgTx(Tx):
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def run(self, sql: str, *params: Any) -> int:
        cur = self.conn.execute(sql.replace("?", "%s"), params)
        return cur.rowcount

    def all(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        cur = self.conn.execute(sql.replace("?", "%s"), params)
        return list(cur.fetchall()) if cur.description is not None else []


class PgLockListener(LockListener):
    """``LISTEN auditbox_locks`` on its own autocommit connection (not the pool's)."""

    CHANNEL = "auditbox_locks"

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.conn = psycopg.connect(url, autocommit=True,
                                        connect_timeout=int(CONNECT_TIMEOUT),
                                        application_name="auditbox-gateway-listen")
            self.conn.execute(f"LISTEN {self.CHANNEL}")
        except psycopg.Error as exc:
            raise StoreError(f"{redact(url)}: listen: {_first_line(exc)}") from None

    def wait(self, timeout: float) -> int:
        try:
            return sum(1 for _ in self.conn.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error as exc:
            raise StoreError(f"{redact(self.url)}: listen: {_first_line(exc)}") from None

    def close(self) -> None:
        self.conn.close()


class PostgresStore(SqlStore):
    def __init__(self, url: str) -> None:
        self.url = url
        try:        # fail fast, with the server's reason, before the pool starts retrying
            psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT)).close()
        except psycopg.Error as exc:
            raise StoreError(f"{redact(url)}: cannot connect: {_first_line(exc)}") from None
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=POOL_MAX, timeout=CONNECT_TIMEOUT, open=False,
            kwargs={"connect_timeout": int(CONNECT_TIMEOUT), "application_name":
                    "auditbox-gateway"})
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self._pool.close()
            raise StoreError(f"{redact(url)}: cannot connect: {exc}") from None
        self._init_schema(DIALECT)

    def lock_listener(self) -> LockListener:
        return PgLockListener(self.url)

    def _lock_schema(self, tx: Tx) -> None:
        tx.all("SELECT pg_advisory_xact_lock(?)", SCHEMA_LOCK)

    def _lock_audit(self, tx: Tx) -> None:
        tx.all("SELECT pg_advisory_xact_lock(?)", AUDIT_LOCK)

    def _has_meta(self, tx: Tx) -> bool:
        row = tx.one("SELECT to_regclass('meta') IS NOT NULL")
        return bool(row and row[0])

    def _locks_changed(self, tx: Tx) -> None:
        super()._locks_changed(tx)
        tx.run("NOTIFY auditbox_locks")

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn:   # commits at the end, rolls back on error
                yield _PgTx(conn)
        except psycopg.errors.UniqueViolation as exc:
            raise StoreConflict(_first_line(exc)) from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise StoreError(f"{redact(self.url)}: {_first_line(exc)}") from None

    def close(self) -> None:
        self._pool.close()
