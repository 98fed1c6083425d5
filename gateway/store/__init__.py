"""The gateway's store. ``open_store(url)``: a SQLite file path, or a postgresql:// URL."""

from __future__ import annotations

from pathlib import Path

from .base import (
    Alert,
    Attestation,
    AuditEntry,
    Device,
    Image,
    Lock,
    SessionRow,
    Store,
    StoreBusy,
    StoreConflict,
    StoreError,
    Token,
    User,
)


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_store(url: str | Path, create: bool = True) -> Store:
    """Open (and with ``create`` make, or migrate to this schema) the store at ``url``.

    SQLite: a file path (created 0600 if missing; ``create=False`` refuses a missing one).
    PostgreSQL: ``postgresql://user@host:port/db`` (the database must exist). psycopg
    is imported only here, so SQLite users and ``auditbox build`` never load it.
    """
    text = str(url)
    if is_postgres(text):
        from .postgres import PostgresStore
        pg: Store = PostgresStore(text)
        return pg
    from .sqlite import SqliteStore
    return SqliteStore(Path(text), create=create)


__all__ = [
    "Alert", "Attestation", "AuditEntry", "Device", "Image", "Lock", "SessionRow", "Store",
    "StoreBusy", "StoreConflict", "StoreError", "Token", "User", "is_postgres", "open_store",
]
