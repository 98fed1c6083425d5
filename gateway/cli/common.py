"""What every `auditbox gateway` command shares: --config/--database, the store, the
auditor, one-line errors, and how times, sizes and tables are printed."""

from __future__ import annotations

import functools
import getpass
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from builder.errors import AuditboxError, InputError

from ..audit import Auditor, JournalSink
from ..config import (
    DEFAULT_CONFIG,
    ENV_CONFIG,
    Config,
    default_config,
    load_config,
    parse_duration,
    with_database,
)
from ..store import Store, StoreError, is_postgres, open_store

F = TypeVar("F", bound=Callable[..., Any])
NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


class StoreUnavailable(AuditboxError):
    """The store cannot be read or written (exit 1)."""

    exit_code = 1


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:{os.getuid()}"


def utc(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def duration_option(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is None or seconds <= 0:
        raise InputError(f"{value!r} is not a duration like 30m, 1h, 7d", file="<command line>",
                         key=option)
    return seconds


def check_name(value: str, what: str, option: str) -> str:
    if not NAME.fullmatch(value):
        raise InputError(f"{value!r} is not a valid {what}", file="<command line>",
                         key=option, allowed=f"{what} matching {NAME.pattern}")
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns (the last one unpadded)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


@dataclass
class Env:
    """The loaded config and, on first use, the store and an auditor."""

    config: Config
    _store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_env_store(self.config.database, create=False)
        return self._store

    @property
    def auditor(self) -> Auditor:
        return Auditor(self.store, actor(), JournalSink() if self.config.audit.journal else None)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_env_store(database: str, create: bool) -> Store:
    try:
        return open_store(database, create=create)
    except StoreError as exc:
        if not is_postgres(database) and "no such store" in str(exc):
            raise InputError(f"{database}: no store here (run `auditbox gateway init`, or "
                             "pass --config/--database)", key="database") from None
        raise StoreUnavailable(f"store: {exc}") from None


def load_env(config: str | None, database: str | None) -> Env:
    explicit = config or os.environ.get(ENV_CONFIG)
    path = Path(explicit or DEFAULT_CONFIG)
    if not explicit and not path.exists() and database is not None:
        cfg = default_config()                 # --database alone: no config file needed
    else:
        cfg = load_config(path)
    return Env(with_database(cfg, database))


def with_env(fn: F) -> F:
    """Add --config and --database to a command; pass it ``env: Env``; close the store;
    turn StoreError into one line and exit 1."""
    @click.option("--config", "config_path", metavar="PATH",
                  help=f"gateway.yaml (default: ${ENV_CONFIG} or ./{DEFAULT_CONFIG})")
    @click.option("--database", metavar="URL",
                  help="store to use instead of the config's: a SQLite file or postgresql://")
    @functools.wraps(fn)
    def wrapper(*args: Any, config_path: str | None, database: str | None,
                **kwargs: Any) -> Any:
        with env_context(config_path, database) as env:
            return fn(*args, env=env, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def env_context(config_path: str | None, database: str | None) -> Iterator[Env]:
    env = load_env(config_path, database)
    try:
        yield env
    except StoreError as exc:
        raise StoreUnavailable(f"store: {exc}") from None
    finally:
        env.close()
