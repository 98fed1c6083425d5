"""The store suite: every test runs against SQLite and a real PostgreSQL.

The operations that must hold fleet-wide (use_token, enroll_device, consume_nonce,
accept_totp_step, record_failure, add_output, append_audit) are also run from many
threads at once, and from two Store objects (two connection sets) at once.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.audit import verify
from gateway.store import (
    Alert,
    Attestation,
    Device,
    Image,
    Lock,
    SessionRow,
    Store,
    StoreConflict,
    StoreError,
    Token,
    User,
    open_store,
)
from gateway.store import sql as sqlmod
from tests.gateway.pg import PgServer

T = TypeVar("T")
THREADS = 12


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) in n threads released at the same moment; return the results."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


@pytest.fixture
def second(store_url: str, store: Store) -> Any:
    """A second Store on the same database: its own connections, as another process has."""
    s = open_store(store_url)
    yield s
    s.close()


def _user(name: str = "alice") -> User:
    return User(name, "$argon2id$x", "JBSWY3DPEHPK3PXP", f"up-{name}", created_at=1.5)


def _device(device_id: str = "tpm-0123456789abcdef") -> Device:
    return Device(device_id, "tpm2", "img-1", {"format": 1, "device_id": device_id}, 10.0)


# -- users ----------

def test_users_roundtrip(store: Store) -> None:
    store.add_user(_user())
    store.add_user(User("bob", "h", "S", "bob", role="admin", break_glass=True))
    assert store.get_user("alice") == _user()
    assert store.get_user("nobody") is None
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    assert store.get_user("bob").break_glass is True  # type: ignore[union-attr]
    with pytest.raises(StoreConflict):
        store.add_user(_user())
    assert store.update_user("alice", upstream_user="a2", break_glass=True)
    u = store.get_user("alice")
    assert u is not None and u.upstream_user == "a2" and u.break_glass is True
    assert not store.update_user("ghost", role="admin")
    with pytest.raises(ValueError):
        store.update_user("alice", created_at=5.0)
    assert store.remove_user("alice") and not store.remove_user("alice")
    assert store.get_user("alice") is None


def test_totp_step_accepted_once(store: Store) -> None:
    store.add_user(_user())
    assert store.accept_totp_step("alice", 100)
    assert not store.accept_totp_step("alice", 100)
    assert not store.accept_totp_step("alice", 99)
    assert store.accept_totp_step("alice", 101)
    assert not store.accept_totp_step("ghost", 5)


def test_totp_step_race(store: Store, second: Store) -> None:
    store.add_user(_user())
    got = race(THREADS, lambda i: (store if i % 2 else second).accept_totp_step("alice", 7))
    assert got.count(True) == 1


# -- failures and lockouts ----------

def test_failures_window(store: Store) -> None:
    assert [store.record_failure("user", "a", 100.0 + i, 10) for i in range(3)] == [1, 2, 3]
    assert store.record_failure("user", "a", 111.5, 10) == 2      # 100, 101 fell out
    assert store.record_failure("source", "a", 111.5, 10) == 1    # scopes are separate
    store.clear_failures("user", "a")
    assert store.record_failure("user", "a", 112.0, 10) == 1
    with pytest.raises(ValueError):
        store.record_failure("device", "a", 1.0, 1)


def test_failures_race(store: Store, second: Store) -> None:
    counts = race(THREADS, lambda i: (store if i % 2 else second).record_failure(
        "source", "192.0.2.7", 1000.0, 60))
    assert sorted(counts) == list(range(1, THREADS + 1))


def test_lockouts(store: Store) -> None:
    assert store.lockout_until("user", "a", 0) is None
    store.set_lockout("user", "a", 500.0)
    store.set_lockout("user", "a", 400.0)         # never shortened
    assert store.lockout_until("user", "a", 100.0) == 500.0
    assert store.lockout_until("user", "a", 500.0) is None
    assert store.list_lockouts(100.0) == [("user", "a", 500.0)]
    store.clear_lockout("user", "a")
    assert store.lockout_until("user", "a", 100.0) is None


# -- tokens and enrollment ----------

def _token(h: str = "ab" * 32, expires: float = 1000.0) -> Token:
    return Token(h, "soft", 1.0, expires, "cli:root")


def test_tokens(store: Store) -> None:
    store.add_token(_token())
    store.add_token(_token("cd" * 32, expires=50.0))
    with pytest.raises(StoreConflict):
        store.add_token(_token())
    assert store.get_token("ab" * 32) == _token()
    assert not store.use_token("cd" * 32, "dev", 60.0)            # expired
    assert store.use_token("ab" * 32, "dev-1", 60.0)
    assert not store.use_token("ab" * 32, "dev-2", 61.0)          # used
    assert not store.use_token("ef" * 32, "dev", 1.0)             # unknown
    tok = store.get_token("ab" * 32)
    assert tok is not None and tok.used_by == "dev-1" and tok.used_at == 60.0
    assert len(store.list_tokens()) == 2


def test_use_token_race(store: Store, second: Store) -> None:
    store.add_token(_token())
    got = race(THREADS, lambda i: (store if i % 2 else second).use_token("ab" * 32, f"d{i}",
                                                                           10.0))
    assert got.count(True) == 1
    tok = store.get_token("ab" * 32)
    assert tok is not None and tok.used_by == f"d{got.index(True)}"


def test_enroll_device_atomic(store: Store) -> None:
    store.add_token(_token())
    store.add_token(_token("cd" * 32))
    assert store.enroll_device(_device(), "ab" * 32, 5.0) is None
    assert store.get_device(_device().device_id) == _device()
    assert store.get_token("ab" * 32).used_by == _device().device_id  # type: ignore[union-attr]
    # the token is spent: nothing changes for another device
    assert store.enroll_device(_device("soft-1111"), "ab" * 32, 6.0) == "token"
    assert store.get_device("soft-1111") is None
    # the device exists: the second token stays unused
    assert store.enroll_device(_device(), "cd" * 32, 7.0) == "device"
    assert store.get_token("cd" * 32).used_at is None  # type: ignore[union-attr]


def test_enroll_device_race(store: Store, second: Store) -> None:
    """One token, many terminals enrolling with it at the same moment: one device."""
    store.add_token(_token())
    got = race(THREADS, lambda i: (store if i % 2 else second).enroll_device(
        _device(f"soft-{i:04d}"), "ab" * 32, 5.0))
    assert got.count(None) == 1 and got.count("token") == THREADS - 1
    assert len(store.list_devices()) == 1


# -- devices, attestations, images ----------

def test_devices_and_attestations(store: Store) -> None:
    store.add_device(_device())
    with pytest.raises(StoreConflict):
        store.add_device(_device())
    assert store.update_device(_device().device_id, status="revoked")
    assert store.get_device(_device().device_id).status == "revoked"  # type: ignore[union-attr]
    assert not store.update_device("ghost", status="revoked")
    new_record = {"format": 1, "device_id": _device().device_id, "last_clock": {"clock": 5}}
    store.record_attestation(Attestation(_device().device_id, 20.0, "ok", None, None, "s1"),
                             record=new_record)
    store.record_attestation(Attestation(_device().device_id, 30.0, "refused", "clock",
                                         "resetCount went down", "s2"))
    d = store.get_device(_device().device_id)
    assert d is not None and d.record == new_record
    assert (d.last_attest_at, d.last_attest_result, d.last_attest_step) == (30.0, "refused",
                                                                            "clock")
    hist = store.attestation_history(_device().device_id)
    assert [h.session_id for h in hist] == ["s2", "s1"]
    assert len(store.attestation_history(_device().device_id, limit=1)) == 1
    # an attestation for an unknown device writes nothing (one transaction)
    with pytest.raises(StoreError):
        store.record_attestation(Attestation("ghost", 1.0, "ok", None, None))
    assert store.attestation_history("ghost") == []


def test_images(store: Store) -> None:
    ref, sig = b'{"image_id":"img-1"}\n', b"c2ln\n"
    store.add_image(Image("img-1", ref, sig, 1.0, "cli:root"))
    with pytest.raises(StoreConflict):
        store.add_image(Image("img-1", ref, sig, 2.0, "cli:root"))
    img = store.get_image("img-1")
    assert img is not None and img.reference == ref and img.signature == sig
    assert store.revoke_image("img-1", 5.0) and not store.revoke_image("img-1", 6.0)
    assert store.list_images()[0].revoked_at == 5.0
    assert store.get_image("nope") is None


# -- nonces ----------

def test_nonces(store: Store) -> None:
    n1, n2 = os.urandom(32), os.urandom(32)
    store.issue_nonce(n1, 100.0, 130.0)
    store.issue_nonce(n2, 100.0, 130.0)
    with pytest.raises(StoreConflict):
        store.issue_nonce(n1, 101.0, 131.0)
    assert store.consume_nonce(n1, 110.0) is None
    assert store.consume_nonce(n1, 111.0) == "used"
    assert store.consume_nonce(n2, 131.0) == "expired"
    assert store.consume_nonce(os.urandom(32), 110.0) == "unknown"
    assert store.purge_nonces(131.0) == 2
    assert store.consume_nonce(n1, 111.0) == "unknown"


def test_consume_nonce_race(store: Store, second: Store) -> None:
    n = os.urandom(32)
    store.issue_nonce(n, 100.0, 130.0)
    got = race(THREADS, lambda i: (store if i % 2 else second).consume_nonce(n, 105.0))
    assert got.count(None) == 1 and got.count("used") == THREADS - 1


# -- locks ----------

def test_locks(store: Store, second: Store) -> None:
    v0 = store.locks_version()
    a = store.add_lock(Lock("user", "alice", "stop", 100.0, "cli:root"))
    b = store.add_lock(Lock("device", "tpm-1", "gone", 100.0, "cli:root", expires_at=200.0))
    assert second.locks_version() == v0 + 2          # seen from the other connections
    assert [lk.id for lk in store.active_locks(150.0)] == [a, b]
    assert [lk.id for lk in store.active_locks(200.0)] == [a]       # expired
    assert store.remove_lock(a, "cli:bob", 160.0) and not store.remove_lock(a, "x", 161.0)
    assert store.locks_version() == v0 + 3
    assert store.active_locks(150.0)[0].target == "tpm-1"
    removed = next(lk for lk in store.list_locks() if lk.id == a)
    assert (removed.removed_at, removed.removed_by) == (160.0, "cli:bob")
    assert [lk.id for lk in store.list_locks()] == [b, a]


# -- sessions and alerts ----------

def _session(sid: str, replica: str = "r1", started: float = 10.0) -> SessionRow:
    return SessionRow(sid, "alice", "tpm-1", "192.0.2.1:5000", replica, started, f"{sid}.cast")


def test_sessions(store: Store) -> None:
    store.start_session(_session("s1"))
    store.start_session(_session("s2", started=20.0))
    store.start_session(_session("s3", replica="r2", started=30.0))
    with pytest.raises(StoreConflict):
        store.start_session(_session("s1"))
    store.update_session("s1", ended_at=15.0, end_reason="closed", bytes_out=1234,
                         recording_sha256="ab" * 32)
    s1 = store.get_session("s1")
    assert s1 is not None and s1.bytes_out == 1234 and s1.end_reason == "closed"
    with pytest.raises(ValueError):
        store.update_session("s1", user="mallory")
    with pytest.raises(StoreError):
        store.update_session("ghost", bytes_in=1)
    assert [s.id for s in store.list_sessions()] == ["s3", "s2", "s1"]
    assert [s.id for s in store.list_sessions(live_only=True)] == ["s3", "s2"]
    assert store.end_orphan_sessions("r1", 40.0, "crash") == ["s2"]
    assert [s.id for s in store.list_sessions(live_only=True)] == ["s3"]
    assert store.get_session("s2").end_reason == "crash"  # type: ignore[union-attr]


def test_alerts(store: Store) -> None:
    a = store.add_alert(Alert(1.0, "paste-burst", "warning", "alert", "40 keys", "alice"))
    b = store.add_alert(Alert(2.0, "break-glass", "critical", "alert", "login", "bob"))
    assert [x.id for x in store.list_alerts()] == [b, a]
    assert store.ack_alert(a, "cli:root", "known", 3.0)
    assert not store.ack_alert(a, "cli:root", "again", 4.0)
    assert [x.id for x in store.list_alerts(open_only=True)] == [b]
    acked = next(x for x in store.list_alerts() if x.id == a)
    assert (acked.acked_by, acked.ack_comment) == ("cli:root", "known")


# -- output budget and baselines ----------

def test_output_totals(store: Store) -> None:
    assert store.output_total("alice", "2026-01-01") == 0
    assert store.add_output("alice", "2026-01-01", 100) == 100
    assert store.add_output("alice", "2026-01-01", 50) == 150
    assert store.add_output("alice", "2026-01-02", 1) == 1
    assert store.output_total("alice", "2026-01-01") == 150


def test_add_output_race(store: Store, second: Store) -> None:
    got = race(THREADS, lambda i: (store if i % 2 else second).add_output("u", "d", 10))
    assert sorted(got) == [10 * (i + 1) for i in range(THREADS)]
    assert store.output_total("u", "d") == 10 * THREADS


def test_baselines(store: Store) -> None:
    assert store.get_baseline("alice") == {}
    store.put_baseline("alice", {"version": 1, "days": {"2026-01-01": {"sessions": 2}}})
    store.put_baseline("alice", {"version": 1, "days": {}})
    assert store.get_baseline("alice") == {"version": 1, "days": {}}


# -- the audit chain ----------

def test_audit_append_and_read(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.last_audit() is None
    for i in range(25):
        store.append_audit(1_767_225_600.123456 + i, "system", "test.event", {"i": i})
    monkeypatch.setattr(sqlmod, "AUDIT_PAGE", 7)      # several pages
    entries = list(store.audit_entries())
    assert [e.seq for e in entries] == list(range(1, 26))
    assert entries[0].at_us == 1_767_225_600_123_456 and entries[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert [e.seq for e in store.audit_entries(after_seq=20)] == [21, 22, 23, 24, 25]
    assert [e.seq for e in store.audit_entries(after_seq=3, limit=9)] == list(range(4, 13))
    assert [e.seq for e in store.audit_tail(3)] == [23, 24, 25]
    assert store.last_audit() == entries[-1]
    assert verify(entries).ok


def test_audit_append_race(store: Store, second: Store) -> None:
    """Many writers, one chain: seq 1..N, every link intact."""
    per = 5

    def write(i: int) -> None:
        s = store if i % 2 else second
        for k in range(per):
            s.append_audit(1000.0 + k, f"replica-{i}", "race.append", {"k": k})

    race(THREADS, write)
    entries = list(store.audit_entries())
    assert [e.seq for e in entries] == list(range(1, THREADS * per + 1))
    result = verify(entries)
    assert result.ok, result.message


# -- failure modes ----------

def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    s = open_store(path)
    s.add_user(_user())
    assert (path.stat().st_mode & 0o777) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    s2 = s._conn()  # type: ignore[attr-defined]
    assert s2.execute("PRAGMA synchronous").fetchone()[0] == 2       # FULL
    s.close()


def test_sqlite_missing_store_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_schema_version_mismatch_refused(store_url: str, store: Store) -> None:
    with store._tx() as tx:  # type: ignore[attr-defined]
        tx.run("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(store_url)


def test_older_schema_is_brought_up_to_date(store_url: str, store: Store) -> None:
    """A version-1 store (no audit_event index) is upgraded when opened; a current one is
    opened without DDL (an open must not take table locks while replicas write)."""
    with store._tx() as tx:  # type: ignore[attr-defined]
        tx.run("DROP INDEX audit_event")
        tx.run("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    s2 = open_store(store_url)
    try:
        with s2._tx(False) as tx:  # type: ignore[attr-defined]
            assert tx.one("SELECT value FROM meta WHERE key = 'schema_version'")[0] == \
                str(sqlmod.SCHEMA_VERSION)
            assert tx.all("SELECT seq FROM audit WHERE event = ? ORDER BY seq DESC", "x") == []
    finally:
        s2.close()
    with store._tx() as tx:  # type: ignore[attr-defined]
        tx.run("DROP INDEX audit_event")          # current version: nothing re-made on open
    open_store(store_url).close()
    with pytest.raises(StoreError), store._tx() as tx:  # type: ignore[attr-defined]
        tx.run("DROP INDEX audit_event")


def test_postgres_unreachable_is_store_error(pg_server: PgServer) -> None:
    from tests.gateway.pg import free_port

    bad = pg_server.url().replace(f":{pg_server.port}/", f":{free_port()}/")
    with pytest.raises(StoreError, match="cannot connect") as info:
        open_store(bad)
    assert pg_server.password not in str(info.value)


def test_postgres_server_gone_fails_closed() -> None:
    """A store whose server stops answers StoreError (the gateway then refuses log-ins)."""
    server = PgServer.start()
    try:
        s = open_store(server.create_database())
        s.add_user(_user())
        server.stop()
        with pytest.raises(StoreError):
            s.get_user("alice")
        with pytest.raises(StoreError):
            s.append_audit(1.0, "system", "x", {})
        s.close()
    finally:
        server.stop()
