"""SQLite behind the store: WAL, synchronous=FULL, one connection per thread.

Writes run in ``BEGIN IMMEDIATE`` transactions: SQLite then holds its one write lock
for the whole transaction, which serializes every writer of the file, in this process
or another (the CLI beside a running gateway). ``busy_timeout`` makes them wait.

One file serves one gateway process: ``claim_serving()`` (called by ``serve``) takes
an exclusive ``flock`` on ``<store>.serve.lock`` and keeps it until the process ends,
so a second ``serve`` on the same file stops at start with ``StoreBusy``. (Locks reach
live sessions through the polled ``locks_version``, but nonces, rate limits and the
audit chain of two processes on one SQLite file are not the fleet the PostgreSQL store
makes; replicas use postgresql://.) The CLI never claims the file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .base import StoreBusy, StoreConflict, StoreError
from .sql import SqlStore, Tx

DIALECT = {"@ID@": "INTEGER PRIMARY KEY AUTOINCREMENT", "@BLOB@": "BLOB", "@FLOAT@": "REAL"}
BUSY_TIMEOUT_MS = 30_000


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def run(self, sql: str, *params: Any) -> int:
        return self.conn.execute(sql, params).rowcount

    def all(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        return list(self.conn.execute(sql, params).fetchall())


class SqliteStore(SqlStore):
    def __init__(self, path: Path | str, create: bool = True) -> None:
        self.path = Path(path)
        self.url = str(self.path)
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no such store (run `auditbox gateway init`)")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._serve_fd: int | None = None
        if create and not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        self._init_schema(DIALECT)

    def _has_meta(self, tx: Tx) -> bool:
        return tx.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'") \
            is not None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError("store is closed")
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL mode")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Tx]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        try:
            yield _SqliteTx(conn)
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise StoreConflict(str(exc)) from None
            raise StoreError(str(exc)) from None
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: {exc}") from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def claim_serving(self) -> None:
        lock = self.path.with_name(self.path.name + ".serve.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"{lock}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise StoreBusy(f"{self.path} is already served by another gateway process "
                            f"(pid {holder}); a SQLite store serves one process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._serve_fd = fd          # held (and the lock with it) until close or exit

    def close(self) -> None:
        if self._serve_fd is not None:
            os.close(self._serve_fd)
            self._serve_fd = None
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                with suppress(sqlite3.Error):
                    conn.close()
            self._conns.clear()
        self._local = threading.local()
