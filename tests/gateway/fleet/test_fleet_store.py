"""What must hold fleet-wide, decided by PostgreSQL: two store instances (two replicas'
connection pools) on one real database, many threads each, racing on one row."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import lockwatch
from gateway.audit import verify
from gateway.store import open_store
from gateway.store.base import Device, Lock, Store, StoreBusy, Token
from gateway.store.sqlite import SqliteStore
from tests.gateway.gwharness import AUDITBOX, REPO, World, free_port

THREADS = 8


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[Store, Store]]:
    a, b = open_store(pg_url), open_store(pg_url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def race(stores: tuple[Store, Store], fn: Callable[[Store, int], Any]) -> list[Any]:
    """Run fn(store, i) in THREADS threads per store, released at once."""
    n = 2 * THREADS
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        out[i] = fn(stores[i % 2], i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_a_nonce_is_used_once_across_replicas(two: tuple[Store, Store]) -> None:
    now = time.time()
    for k in range(5):
        nonce = bytes([k]) * 32
        two[0].issue_nonce(nonce, now, now + 30)
        got = race(two, lambda s, i, nonce=nonce: s.consume_nonce(nonce, time.time()))
        assert got.count(None) == 1 and got.count("used") == len(got) - 1, got


def test_one_token_enrolls_one_device_across_replicas(two: tuple[Store, Store]) -> None:
    now = time.time()
    for k in range(5):
        two[0].add_token(Token(f"tok{k}", "soft", now, now + 3600, "test"))
        got = race(two, lambda s, i, k=k: s.enroll_device(
            Device(f"dev-{k}-{i}", "soft", "img", {"device_id": f"dev-{k}-{i}"}, now),
            f"tok{k}", time.time()))
        assert got.count(None) == 1 and got.count("token") == len(got) - 1, got
        winners = [d for d in two[1].list_devices() if d.device_id.startswith(f"dev-{k}-")]
        assert len(winners) == 1


def test_failures_count_across_replicas(two: tuple[Store, Store]) -> None:
    got = race(two, lambda s, i: s.record_failure("user", "mallory", time.time(), 900))
    assert sorted(got) == list(range(1, 2 * THREADS + 1))      # each saw its own count
    two[0].set_lockout("user", "mallory", time.time() + 60)
    assert two[1].lockout_until("user", "mallory", time.time()) is not None


def test_audit_appends_from_both_replicas_make_one_chain(two: tuple[Store, Store]) -> None:
    def append(s: Store, i: int) -> None:
        for j in range(20):
            s.append_audit(time.time(), f"r{i % 2}", "test.event", {"i": i, "j": j})
    race(two, append)
    entries = list(two[0].audit_entries())
    assert len(entries) == 2 * THREADS * 20
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert verify(entries).ok


def test_a_lock_change_is_notified_to_every_listener(two: tuple[Store, Store]) -> None:
    listener = two[1].lock_listener()
    assert listener is not None
    try:
        assert listener.wait(0.3) == 0
        t0 = time.monotonic()
        lock_id = two[0].add_lock(Lock("user", "eve", "r", time.time(), "test"))
        assert listener.wait(5) >= 1
        assert time.monotonic() - t0 < 2
        two[0].remove_lock(lock_id, "test", time.time())
        assert listener.wait(5) >= 1
    finally:
        listener.close()


class _Conn:
    def __init__(self, user: str) -> None:
        self.user = type("U", (), {"name": user})()
        self.device_id: str | None = None
        self.closing = False
        self.pty = None
        self.ended: list[float] = []

    async def end(self, message: str, reason: str, locked: str | None = None) -> None:
        self.ended.append(time.time())


class _Svc:
    def __init__(self, conns: set[_Conn]) -> None:
        self.connections = conns
        self.store_ok = True

    async def audit(self, event: str, actor: str, **data: Any) -> None:
        return None


def test_the_watcher_is_woken_by_notify_not_only_by_the_poll(
        two: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch) -> None:
    """With the poll backstop at 60 s, only LISTEN can end the session within a second."""
    monkeypatch.setattr(lockwatch, "POLL", 60.0)
    conn = _Conn("frank")

    async def main() -> float:
        watcher = lockwatch.LockWatcher(two[1], _Svc({conn}))  # type: ignore[arg-type]
        watcher.start()
        try:
            deadline = time.monotonic() + 20
            while not watcher.listening:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)            # its first round has read the version
            created = time.time()
            await asyncio.to_thread(two[0].add_lock,
                                    Lock("user", "frank", "r", created, "test"))
            while not conn.ended:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            return conn.ended[0] - created
        finally:
            watcher.stop()
    delay = asyncio.run(main())
    assert delay < 1.0, delay


def test_a_sqlite_store_serves_one_process(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "store.db")
    first.claim_serving()
    second = SqliteStore(tmp_path / "store.db")
    with pytest.raises(StoreBusy, match="already served by another gateway process"):
        second.claim_serving()
    second.list_users()                      # the CLI (no claim) still works beside it
    first.close()
    second.claim_serving()                   # the holder gone, the file is free again
    second.close()


def test_serve_refuses_a_sqlite_store_already_served(tmp_path: Path) -> None:
    w = World.create(tmp_path, None, command=["/bin/sh"])
    w.start()
    try:
        text = (w.dir / "gateway.yaml").read_text()
        other = w.dir / "second.yaml"
        other.write_text(text.replace(f"port: {w.port}", f"port: {free_port()}"))
        done = subprocess.run([*AUDITBOX, "gateway", "serve", "--config", str(other)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        w.stop()
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith("database:"))
    assert lines[0].startswith(f"error: {other}:{line}: database: ")
    assert "already served by another gateway process (pid" in lines[0]
    assert "postgresql://" in lines[0]


def test_concurrent_appends_of_one_replica_share_transactions(
        two: tuple[Store, Store]) -> None:
    """Group commit: 16 threads of one store need far fewer transactions than entries,
    the chain stays whole, and a failed transaction fails every caller in it."""
    store = two[0]

    def append(s: Store, i: int) -> None:
        for j in range(25):
            store.append_audit(time.time(), "t", "test.group", {"i": i, "j": j})
    race(two, append)
    group = store.__dict__["_audit_group"]
    entries = list(two[1].audit_entries())
    assert len(entries) == 2 * THREADS * 25 and verify(entries).ok
    assert group.batches < len(entries)
    with pytest.raises(TypeError):          # not JSON: refused before any transaction
        store.append_audit(time.time(), "t", "test.bad", {"x": object()})
    failing = open_store(store.url)
    try:
        failing._lock_audit = lambda tx: tx.run("SELECT no_such_column FROM audit")  # type: ignore[method-assign]
        got = race((failing, failing), lambda s, i: _raises(
            lambda: s.append_audit(time.time(), "t", "test.fail", {"i": i})))
        assert got == ["StoreError"] * len(got)
    finally:
        failing.close()
    assert len(list(two[1].audit_entries())) == len(entries)


def _raises(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__
    return "ok"
