"""The SSH side against a PostgreSQL store (a real server the tests start), and failing
closed when the store goes away."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from gateway import budget, recording
from kiosk.gateway_link import BackendAgent, BadCode, BadToken, LockedOut, Unavailable
from tests.gateway.gwharness import Sshd, World, fresh_world, read_until
from tests.gateway.pg import PgServer
from tests.gateway.ssh.test_server_lock import lock, lock_created
from tests.gateway.ssh.test_server_session import drain


@pytest.fixture(scope="module")
def pg_world(pg_server: PgServer, sshd: Sshd,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = pg_server.create_database()
    w = fresh_world(tmp_path_factory.mktemp("pgworld"), sshd, database=url,
                    extra="  reattest_interval: 5s\n  deadline: 3s\n")
    try:
        yield w
    finally:
        w.stop()
        pg_server.drop_database(url)


def test_login_refusals_enrollment_and_relay_on_postgres(pg_world: World) -> None:
    w = pg_world
    acc = w.add_user()
    code = acc.code()
    with pytest.raises(BadCode):
        w.link().login(acc.name, acc.password, f"{(int(code) + 1) % 10**6:06d}")
    token = w.token("soft")
    agent = w.enroll_soft("pg-1")
    link = w.link()
    link.login(acc.name, acc.password, code)
    link.attest(agent)
    chan = link.open_shell()
    chan.send(b"echo pg-$((6*7)); exit\n")
    got = b""
    chan.settimeout(15)
    while data := chan.recv(65536):
        got += data
    link.close()
    assert b"pg-42" in got
    start = w.wait_event("session.start", acc.name)
    w.wait_event("session.end", acc.name)
    assert recording.output_bytes(w.dir / "recordings" / start.data["recording"]) == got
    with pytest.raises(BadCode):                  # replayed code
        w.link().login(acc.name, acc.password, code)
    other = w.add_user()
    for _ in range(4):
        with pytest.raises(BadCode):
            w.link().login(other.name, other.password, "000000")
    with pytest.raises(LockedOut):
        w.link().login(other.name, other.password, "000000")
    second = BackendAgent(w.soft_backend("pg-2"))
    link = w.link()
    link.enroll_login(token)
    assert link.enroll(second, token).device_id == second.device_id
    link.close()
    with pytest.raises(BadToken):                 # the token enrolled one device once
        w.link().enroll_login(token)


def test_lock_within_a_second_on_postgres(pg_world: World) -> None:
    w = pg_world
    agent = w.enroll_soft("pg-lock")
    acc = w.add_user()
    link = w.link()
    got = threading.Event()
    link.on_lock = lambda m, t: got.set()
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    chan = link.open_shell()
    chan.send(b"echo ready\n")
    read_until(chan, b"ready")
    lock(w, "user", acc.name, "pg lock")
    read_until(chan, b"pg lock", timeout=5)
    assert time.time() - lock_created(w, acc.name) < 1.0
    assert got.wait(2)
    link.close()
    with w.store() as s:
        for lk in s.active_locks(time.time()):
            assert lk.id is not None
            s.remove_lock(lk.id, "test", time.time())


def test_store_down_fails_closed(pg_server: PgServer, pg_world: World) -> None:
    w = pg_world
    link, chan, _acc = w.attested_shell("pg-down")
    later = w.add_user()
    pg_ctl = str(pg_server.bindir / "pg_ctl")
    pg_server._run(pg_ctl, "stop", "-D", str(pg_server.data), "-m", "fast", "-w")
    try:
        with pytest.raises(Unavailable):
            w.link().login(later.name, later.password, later.code())
        # the live session ends at its next re-attestation, which needs the store
        out = read_until(chan, b"re-attestation", timeout=15)
        assert b"refused at re-attestation (store)" in out
    finally:
        opts = (f"-c listen_addresses=127.0.0.1 -c port={pg_server.port} "
                f"-c unix_socket_directories={pg_server.root / 'sock'} -c max_connections=200")
        pg_server._run(pg_ctl, "start", "-D", str(pg_server.data), "-w", "-l",
                       str(pg_server.root / "server.log"), "-o", opts)
    link.close()
    deadline = time.monotonic() + 20
    while True:                                     # the pool reconnects by itself
        try:
            link = w.link()
            link.login(later.name, later.password, later.code())
            break
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    link.close()


def test_daily_output_total_on_postgres(pg_server: PgServer, sshd: Sshd,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    url = pg_server.create_database()
    w = fresh_world(tmp_path_factory.mktemp("pgbudget"), sshd, database=url,
                    extra="budget:\n  rate: 64KiB\n  burst: 64KiB\n  daily: 64KiB\n")
    try:
        acc = w.add_user()
        agent = w.enroll_soft("pg-budget")
        for i in range(2):                          # two sessions share the user's day
            link = w.link()
            link.login(acc.name, acc.password, acc.code())
            link.attest(agent)
            chan = link.open_shell()
            chan.send(b"head -c 40000 /dev/zero | tr '\\0' 'y'; echo; echo END-$((1+1))\n"
                      if i == 0 else b"head -c 40000 /dev/zero | tr '\\0' 'z'\n")
            if i == 0:
                read_until(chan, b"END-2")
                link.close()
                continue
            got = drain(chan)
            link.close()
        assert budget.DAILY_MESSAGE.encode() in got
        with w.store() as s:
            total = s.output_total(acc.name, budget.utc_day(time.time()))
        assert 64 * 1024 <= total <= 64 * 1024 + 4096
    finally:
        w.stop()
        pg_server.drop_database(url)
