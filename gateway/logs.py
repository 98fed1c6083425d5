"""The server's log lines on stderr: plain text, or JSON objects on request (``log.format``).

JSON: one object per line, keys ``ts`` (ISO 8601 UTC with milliseconds), ``level``,
``logger``, ``replica``, ``msg``, plus any ``extra`` fields of the record. With JSON,
every audit entry is logged too (logger ``auditbox.audit``: ``event``, ``actor``,
``seq``, ``data``), so a log shipper sees the same events as the chain.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .audit import JOURNAL_SOCKET, JournalSink
from .store.base import AuditEntry

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
AUDIT_LOGGER = "auditbox.audit"


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        t = record.created
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "replica": self.replica,
            "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, sort_keys=True, default=str)


def setup(fmt: str, replica: str, stream: TextIO | None = None) -> None:
    """Send the gateway's logs (``auditbox.*``, psycopg's pool) to stderr in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(replica))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s {replica} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


class LoggingJournal(JournalSink):
    """The audit sink of a server logging JSON: the journal copy (when ``journal``) and
    one ``auditbox.audit`` log record per entry."""

    def __init__(self, journal: bool, path: Path = JOURNAL_SOCKET) -> None:
        super().__init__(path)
        self.journal = journal
        self.log = logging.getLogger(AUDIT_LOGGER)

    def send(self, e: AuditEntry) -> bool:
        sent = super().send(e) if self.journal else False
        self.log.info("%s by %s", e.event, e.actor, extra={
            "event": e.event, "actor": e.actor, "seq": e.seq, "data": e.data})
        return sent
