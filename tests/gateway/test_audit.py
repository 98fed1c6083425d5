"""The audit chain: tampering in the database (edit, drop, reorder) is found and the
first affected entry named; every entry also reaches the journal socket."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import (
    SYSLOG_IDENTIFIER,
    ZERO_HASH,
    Auditor,
    JournalSink,
    entry_hash,
    journal_message,
    verify,
)
from gateway.store import Store

N = 12


@pytest.fixture
def chain(store: Store) -> Auditor:
    a = Auditor(store, "cli:test")
    for i in range(N):
        a.log("login.ok" if i % 2 else "login.failed", actor=f"user{i % 3}", source="192.0.2.1",
              i=i, note="x" * i)
    return a


def sql(store: Store, statement: str, *params: Any) -> None:
    with store._tx() as tx:  # type: ignore[attr-defined]
        tx.run(statement, *params)


def test_intact_chain_verifies(chain: Auditor) -> None:
    r = chain.verify()
    assert r.ok and r.count == N and r.kind is None
    assert r.last_hash == chain.store.last_audit().hash  # type: ignore[union-attr]


def test_empty_chain_verifies(store: Store) -> None:
    r = Auditor(store, "x").verify()
    assert r.ok and r.count == 0 and r.last_hash == ZERO_HASH


def test_edited_data(chain: Auditor) -> None:
    sql(chain.store, "UPDATE audit SET data = ? WHERE seq = 5", '{"i":4,"note":"forged"}')
    r = chain.verify()
    assert (r.ok, r.kind, r.seq) == (False, "edited", 5)
    assert "seq 5" in r.message and "edited" in r.message


def test_edited_actor_with_recomputed_hash(chain: Auditor) -> None:
    """The forger recomputes entry 5's hash: entry 6 still records the original."""
    e5 = next(e for e in chain.store.audit_entries() if e.seq == 5)
    forged = entry_hash(5, e5.at_us, "admin", e5.event, e5.data, e5.prev_hash)
    sql(chain.store, "UPDATE audit SET actor = 'admin', hash = ? WHERE seq = 5", forged)
    r = chain.verify()
    assert (r.ok, r.kind, r.seq) == (False, "edited", 5)
    assert "recomputed" in r.message


def test_edited_time(chain: Auditor) -> None:
    sql(chain.store, "UPDATE audit SET at_us = at_us + 1 WHERE seq = 9")
    r = chain.verify()
    assert (r.kind, r.seq) == ("edited", 9)


def test_dropped_entry(chain: Auditor) -> None:
    sql(chain.store, "DELETE FROM audit WHERE seq = 7")
    r = chain.verify()
    assert (r.ok, r.kind, r.seq) == (False, "dropped", 7)
    assert "seq 7 dropped" in r.message


def test_dropped_entries_renumbered(chain: Auditor) -> None:
    """Entry 4 deleted and the later ones renumbered to hide the gap."""
    sql(chain.store, "DELETE FROM audit WHERE seq = 4")
    for seq in range(5, N + 1):
        sql(chain.store, "UPDATE audit SET seq = ? WHERE seq = ?", seq - 1, seq)
    r = chain.verify()
    assert (r.ok, r.kind, r.seq) == (False, "dropped", 4)
    assert "written as seq 5" in r.message


def test_dropped_first_entry(chain: Auditor) -> None:
    sql(chain.store, "DELETE FROM audit WHERE seq = 1")
    r = chain.verify()
    assert (r.kind, r.seq) == ("dropped", 1)


def test_reordered_entries(chain: Auditor) -> None:
    """Entries 3 and 8 swap places (their seq numbers exchanged)."""
    sql(chain.store, "UPDATE audit SET seq = -3 WHERE seq = 3")
    sql(chain.store, "UPDATE audit SET seq = 3 WHERE seq = 8")
    sql(chain.store, "UPDATE audit SET seq = 8 WHERE seq = -3")
    r = chain.verify()
    assert (r.ok, r.kind, r.seq) == (False, "reordered", 3)
    assert "written as seq 8" in r.message


def test_reordered_neighbours(chain: Auditor) -> None:
    for a, b in ((6, 7),):
        sql(chain.store, "UPDATE audit SET seq = -1 WHERE seq = ?", a)
        sql(chain.store, "UPDATE audit SET seq = ? WHERE seq = ?", a, b)
        sql(chain.store, "UPDATE audit SET seq = ? WHERE seq = -1", b)
    r = chain.verify()
    assert (r.kind, r.seq) == ("reordered", 6)


def test_appends_continue_after_verify(chain: Auditor) -> None:
    e = chain.log("lock.add", target="alice")
    assert e.seq == N + 1 and e.prev_hash == chain.store.audit_tail(2)[0].hash
    assert chain.verify().ok


def test_bad_event_and_data_refused(store: Store) -> None:
    a = Auditor(store, "x")
    with pytest.raises(ValueError):
        a.log("Bad Event")
    with pytest.raises(TypeError):
        a.log("ok.event", blob=b"bytes")
    with pytest.raises(TypeError):
        a.log("ok.event", n=float("nan"))
    assert store.last_audit() is None


# -- the journal ---------------------------------------------------------------------------------

def _parse_journal(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(datagram):
        nl = datagram.index(b"\n", pos)
        line = datagram[pos:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode()
            pos = nl + 1
        else:       # binary-safe field: NAME\n<u64 le length><value>\n
            (n,) = struct.unpack_from("<Q", datagram, nl + 1)
            start = nl + 9
            fields[line.decode()] = datagram[start:start + n].decode()
            assert datagram[start + n:start + n + 1] == b"\n"
            pos = start + n + 1
    return fields


def test_journal_receives_every_entry(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    sink = JournalSink(path)
    a = Auditor(store, "gw-a", sink)
    a.log("login.failed", actor="mallory", source="192.0.2.9", reason="password")
    a.log("session.end", actor="alice", note="line one\nline two")
    first = _parse_journal(server.recv(65536))
    second = _parse_journal(server.recv(65536))
    server.close()
    sink.close()
    assert first["SYSLOG_IDENTIFIER"] == SYSLOG_IDENTIFIER == "auditbox-gateway"
    assert first["PRIORITY"] == "4" and second["PRIORITY"] == "6"
    assert first["AUDITBOX_SEQ"] == "1" and first["AUDITBOX_EVENT"] == "login.failed"
    assert first["AUDITBOX_ACTOR"] == "mallory"
    assert first["AUDITBOX_HASH"] == store.audit_tail(2)[0].hash
    assert first["MESSAGE"].startswith("login.failed by mallory: ")
    assert '"source":"192.0.2.9"' in first["AUDITBOX_DATA"]
    assert "line one\\nline two" in second["MESSAGE"]
    assert sink.sent == 2


def test_journal_binary_field_for_newlines() -> None:
    from gateway.store.base import AuditEntry

    e = AuditEntry(1, 0.0, "a\nb", "x.y", {}, ZERO_HASH, "f" * 64, 0)
    fields = _parse_journal(journal_message(e))
    assert fields["AUDITBOX_ACTOR"] == "a\nb"


def test_no_journal_socket_is_skipped(store: Store, tmp_path: Path) -> None:
    sink = JournalSink(tmp_path / "absent.sock")
    Auditor(store, "x", sink).log("x.y")
    assert (sink.sent, sink.failed) == (0, 0)
    assert store.last_audit() is not None


def test_verify_names_first_problem_only(chain: Auditor) -> None:
    sql(chain.store, "UPDATE audit SET data = '{}' WHERE seq = 10")
    sql(chain.store, "DELETE FROM audit WHERE seq = 3")
    r = verify(chain.store.audit_entries())
    assert (r.kind, r.seq, r.count) == ("dropped", 3, 2)
