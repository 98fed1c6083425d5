"""The gateway as a fleet: two replicas on one real PostgreSQL, Debian's HAProxy in front
(docs/haproxy.cfg), everything fleet-wide held fleet-wide (issue 14)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from gateway import proxyproto
from gateway.audit import verify
from kiosk.gateway_link import (
    AttestationRefused,
    BackendAgent,
    BadCode,
    Enrolled,
    GatewayLink,
    LinkError,
    LockedOut,
)
from kiosk.protocol import b64
from tests.gateway.fleetharness import Fleet, metric_value
from tests.gateway.gwharness import AUDITBOX, REPO, World, read_until
from tests.gateway.ssh.test_server_lock import lock_created, unlock_all


def shell_on(w: World, name: str) -> tuple[GatewayLink, object, str]:
    """An attested terminal with a shell straight on replica ``w``; (link, chan, user)."""
    link, chan, acc = w.attested_shell(name)
    return link, chan, acc.name


def cli(w: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AUDITBOX, "gateway", *args, "--config", str(w.dir / "gateway.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_two_replicas_serve_behind_haproxy(fleet: Fleet) -> None:
    assert fleet.haproxy is not None
    assert fleet.haproxy.servers() == {"gw-a": "UP", "gw-b": "UP"}
    a = fleet.replicas[0]
    agents = [BackendAgent(a.soft_backend(f"front-{i}")) for i in range(2)]
    for ag in agents:
        link = a.link()
        token = a.token("soft")
        link.enroll_login(token)
        link.enroll(ag, token)
        link.close()
    links = []
    for i, ag in enumerate(agents):          # leastconn: the second goes to the other replica
        acc = a.add_user()
        link = fleet.link()
        link.login(acc.name, acc.password, acc.code())
        link.attest(ag)
        chan = link.open_shell()
        chan.send(f"echo via-haproxy-{i}\n".encode())
        read_until(chan, f"via-haproxy-{i}".encode())
        links.append(link)
        # HAProxy's PROXY v2 header: the replica sees this terminal's own address and port
        assert link.transport is not None
        mine = link.transport.sock.getsockname()      # type: ignore[union-attr]
        attested = a.wait_event("login.attested", acc.name)
        assert attested.data["source"] == f"{mine[0]}:{mine[1]}"
    with a.store() as s:
        live = {r.replica for r in s.list_sessions(live_only=True)}
    assert live == {"gw-a", "gw-b"}
    for link in links:
        link.close()
    for w in fleet.replicas:
        with urllib.request.urlopen(f"http://127.0.0.1:{fleet.metrics_ports[w.replica]}"
                                    "/healthz", timeout=10) as r:
            health = json.loads(r.read())
        assert r.status == 200 and health["status"] == "ok"
        assert health["replica"] == w.replica and health["lock_listen"] is True
        text = fleet.metrics(w.replica)
        assert metric_value(text, "auditbox_logins_total", {"result": "ok"}) >= 1
        assert metric_value(text, "auditbox_attestations_total",
                            {"kind": "login", "result": "ok"}) >= 1
        assert metric_value(text, "auditbox_attestation_verify_seconds_count") >= 1
        assert metric_value(text, "auditbox_store_query_seconds_count",
                            {"op": "append_audit"}) >= 1
        assert metric_value(text, "auditbox_lock_listen_up") == 1
        for family in ("auditbox_live_sessions", "auditbox_anomaly_alerts_total",
                       "auditbox_budget_throttled_total", "auditbox_lock_propagation_seconds",
                       "auditbox_connections"):
            assert f"# TYPE {family} " in text
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{fleet.metrics_ports[w.replica]}/x",
                                   timeout=10)
        assert info.value.code == 404
        # structured logs on request (log.format: json): every line one object
        lines = [json.loads(x) for x in w.log_text().splitlines() if x.startswith("{")]
        assert any(x.get("event") == "login.ok" and x["replica"] == w.replica for x in lines)
        assert not [x for x in w.log_text().splitlines() if x and not x.startswith("{")]


def test_lock_through_replica_a_ends_a_session_on_replica_b(fleet: Fleet) -> None:
    a, b = fleet.replicas
    before = fleet.metrics("gw-b")
    link, chan, user = shell_on(b, "lock-b")
    got = threading.Event()
    link.on_lock = lambda m, t: got.set()
    done = cli(a, "lock", "--user", user, "--reason", "paused fleet-wide")
    assert done.returncode == 0, done.stderr
    out = read_until(chan, b"paused fleet-wide", timeout=5)    # type: ignore[arg-type]
    seen = time.time()
    assert b"auditbox: locked: paused fleet-wide" in out
    delay = seen - lock_created(a, user)
    assert delay < 1.0, delay
    assert got.wait(2)
    link.close()
    after = fleet.metrics("gw-b")
    assert (metric_value(after, "auditbox_lock_propagation_seconds_count")
            == metric_value(before, "auditbox_lock_propagation_seconds_count") + 1)
    assert metric_value(after, "auditbox_lock_propagation_seconds_bucket", {"le": "1.0"}) >= 1
    ended = b.wait_event("session.end", user)
    assert ended.data["reason"].startswith("lock:")
    unlock_all(a)


def _challenge(link: GatewayLink, agent: BackendAgent) -> bytes:
    link._open_control()
    link._send({"type": "hello", "version": 1, "device_id": agent.device_id,
                "mode": agent.mode})
    nonce: bytes = link._expect("challenge")["nonce"]
    return nonce


def test_a_nonce_replayed_to_the_other_replica_is_refused(fleet: Fleet) -> None:
    a, b = fleet.replicas
    agent = a.enroll_soft("nonce")
    acc = a.add_user()
    on_a = a.link()
    on_a.login(acc.name, acc.password, acc.code())
    nonce_a = _challenge(on_a, agent)
    evidence_a = agent.quote(nonce_a, on_a.session_id)
    on_a._send({"type": "evidence", "nonce": nonce_a.hex(),
                "evidence": b64(evidence_a)})
    on_a._expect("accepted")
    on_a.close()
    # the same answer (nonce A, evidence for A's session) sent to replica B
    before = metric_value(fleet.metrics("gw-b"), "auditbox_attestations_total",
                          {"kind": "login", "result": "refused", "step": "qualifying_data"})
    on_b = b.link()
    on_b.login(acc.name, acc.password, acc.code())
    nonce_b = _challenge(on_b, agent)
    assert nonce_b != nonce_a
    on_b._send({"type": "evidence", "nonce": nonce_a.hex(),
                "evidence": b64(evidence_a)})
    with pytest.raises(AttestationRefused) as info:
        on_b._expect("accepted")
    assert info.value.step == "qualifying_data"
    on_b.close()
    # and the nonce A used up is used up for replica B's store connection too
    with b.store() as s:
        assert s.consume_nonce(nonce_a, time.time()) == "used"
    after = metric_value(fleet.metrics("gw-b"), "auditbox_attestations_total",
                         {"kind": "login", "result": "refused", "step": "qualifying_data"})
    assert after == before + 1


def test_lockout_is_counted_across_replicas(fleet: Fleet) -> None:
    a, b = fleet.replicas
    acc = a.add_user()
    for i in range(4):                       # max_failures 5: two on each replica
        w = (a, b)[i % 2]
        with pytest.raises(BadCode):
            w.link().login(acc.name, acc.password, "000000")
    with pytest.raises(LockedOut):           # the fifth, on A, locks the user out fleet-wide
        a.link().login(acc.name, acc.password, "000000")
    with pytest.raises(LockedOut) as info:   # and B refuses the right code
        b.link().login(acc.name, acc.password, acc.code())
    assert "locked out until" in info.value.text
    lockout = a.wait_event("login.lockout", acc.name)
    assert lockout.data["failures"] == 5


def test_one_token_enrolls_one_device_through_two_replicas_at_once(fleet: Fleet) -> None:
    a, b = fleet.replicas
    for attempt in range(3):
        token = a.token("soft")
        agents = [BackendAgent(w.soft_backend(f"race-{attempt}-{w.replica}"))
                  for w in (a, b)]
        links = [w.link() for w in (a, b)]
        for link in links:                   # both log in with the token: it is unused yet
            link.enroll_login(token)
        barrier = threading.Barrier(2)
        results: list[object] = [None, None]

        def run(i: int, links: list[GatewayLink] = links,
                agents: list[BackendAgent] = agents, token: str = token,
                results: list[object] = results,
                barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                results[i] = links[i].enroll(agents[i], token)
            except LinkError as exc:
                results[i] = exc
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for link in links:
            link.close()
        won = [r for r in results if isinstance(r, Enrolled)]
        lost = [r for r in results if isinstance(r, AttestationRefused)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].step == "enrollment"
        with a.store() as s:
            enrolled = [ag.device_id for ag in agents if s.get_device(ag.device_id)]
            tok = [t for t in s.list_tokens() if t.used_by in {ag.device_id for ag in agents}]
        assert enrolled == [won[0].device_id]   # type: ignore[union-attr]
        assert len(tok) == 1


def test_audit_verify_passes_after_concurrent_activity_on_both(fleet: Fleet) -> None:
    a, b = fleet.replicas
    agents = {w.replica: w.enroll_soft(f"audit-{w.replica}") for w in (a, b)}
    errors: list[BaseException] = []

    def work(w: World, rounds: int) -> None:
        try:
            for i in range(rounds):
                acc = w.add_user()
                link = w.link()
                link.login(acc.name, acc.password, acc.code())
                link.attest(agents[w.replica])
                link.close()
                with pytest.raises(BadCode):
                    w.link().login(acc.name, acc.password, "000000")
                assert cli(w, "lock", "--user", acc.name, "--reason", f"r{i}").returncode == 0
        except BaseException as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(w, 4)) for w in (a, b) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    done = cli(a, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok:")
    with a.store() as s:
        entries = list(s.audit_entries())
    assert verify(entries).ok
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    for w in (a, b):             # both replicas wrote into the one chain meanwhile
        assert metric_value(fleet.metrics(w.replica), "auditbox_attestations_total",
                            {"kind": "login", "result": "ok"}) >= 8
    starts = {e.data["replica"] for e in entries if e.event == "gateway.start"}
    assert {"gw-a", "gw-b"} <= starts
    oks = [e for e in entries if e.event == "attest.ok"]
    assert len(oks) >= 16
    unlock_all(a)


class Terminal:
    """A soft terminal through HAProxy that logs in again whenever its session ends."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        a = fleet.replicas[0]
        self.fleet, self.agent = fleet, a.enroll_soft(name)
        self.acc = a.add_user()
        self.link: GatewayLink | None = None
        self.chan: object = None
        self.replica = ""

    def login(self, deadline: float) -> None:
        """Log in through HAProxy (retrying while the fleet fails over) to a prompt."""
        while True:
            try:
                link = self.fleet.link()
                link.login(self.acc.name, self.acc.password, self.acc.code())
                link.attest(self.agent)
                chan = link.open_shell()
                chan.send(b"echo in-$((40+2))\n")
                read_until(chan, b"in-42")
                break
            except (LinkError, AssertionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.link, self.chan = link, chan
        with self.fleet.replicas[0].store() as s:
            rows = [r for r in s.list_sessions(live_only=True) if r.user == self.acc.name]
        self.replica = rows[0].replica if rows else "?"

    def alive(self) -> bool:
        chan = self.chan
        try:
            chan.send(b"echo alive\n")                     # type: ignore[attr-defined]
            read_until(chan, b"alive", timeout=3)          # type: ignore[arg-type]
            return True
        except (OSError, AssertionError, EOFError):
            return False


def test_killing_a_replica_under_load_loses_nothing_and_its_terminals_return(
        fleet: Fleet) -> None:
    a, b = fleet.replicas
    terminals = [Terminal(fleet, f"fo-{i}") for i in range(6)]
    for t in terminals:
        t.login(time.monotonic() + 60)
    on_a = [t for t in terminals if t.replica == "gw-a"]
    assert on_a and len(on_a) < len(terminals), [t.replica for t in terminals]
    # load: enrollments through HAProxy and locks through the CLI, until told to stop
    stop = threading.Event()
    enrolled: list[str] = []
    lock_ids: list[int] = []
    failures: list[str] = []

    def enrolling() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            agent = BackendAgent(a.soft_backend(f"load-{i}"))
            token = a.token("soft")
            try:
                link = fleet.link()
                link.enroll_login(token)
                enrolled.append(link.enroll(agent, token).device_id)
                link.close()
            except LinkError as exc:           # in flight on the killed replica
                failures.append(f"enroll: {exc}")

    def locking() -> None:
        while not stop.is_set():
            bystander = b.add_user()
            done = cli(b, "lock", "--user", bystander.name, "--reason", "load")
            if done.returncode == 0:
                lock_ids.append(int(done.stdout.split()[1].rstrip(":")))
            else:
                failures.append(f"lock: {done.stderr}")
    load = [threading.Thread(target=enrolling), threading.Thread(target=locking)]
    for t in load:
        t.start()
    time.sleep(3)
    fleet.kill("gw-a")
    killed = time.monotonic()
    # its terminals' sessions end; they log in again through HAProxy, on gw-b
    for t in on_a:
        assert not t.alive()
    for t in on_a:
        t.login(killed + 90)
        assert t.replica == "gw-b"
    failover = time.monotonic() - killed
    time.sleep(2)
    stop.set()
    for t in load:
        t.join(120)
    assert fleet.haproxy is not None
    assert fleet.haproxy.servers()["gw-a"] == "DOWN"
    assert all(t.alive() for t in terminals)
    print(f"failover: {len(on_a)} terminals back in {failover:.1f} s; "
          f"{len(enrolled)} enrollments, {len(lock_ids)} locks; {len(failures)} refused")
    assert enrolled and lock_ids
    # nothing acknowledged is lost
    with b.store() as s:
        devices = {d.device_id for d in s.list_devices()}
        locks = {lk.id for lk in s.list_locks(limit=100000)}
        entries = list(s.audit_entries())
    assert set(enrolled) <= devices
    assert set(lock_ids) <= locks
    assert verify(entries).ok
    audited_locks = {e.data["id"] for e in entries if e.event == "lock.add"}
    assert set(lock_ids) <= audited_locks
    audited_enrolls = {e.data.get("device_id") for e in entries if e.event == "enroll.ok"}
    assert set(enrolled) <= audited_enrolls
    done = cli(b, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    # gw-a comes back: it closes the sessions its crash left open, and HAProxy uses it again
    fleet.restart("gw-a")
    fleet.haproxy.wait_status({"gw-a": "UP"})
    ended = a.wait_event("session.end", "system")
    assert ended.data["reason"] == "gateway-restart"
    with b.store() as s:
        assert not [r for r in s.list_sessions(live_only=True, limit=100000)
                    if r.replica == "gw-a"]
    for t in terminals:
        assert t.link is not None
        t.link.close()
    unlock_all(b)


def test_proxy_headers_count_only_from_the_balancer(fleet: Fleet,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A header from a listed balancer names the source; from anyone else it is refused."""
    a = fleet.replicas[0]
    acc = a.add_user()
    real = socket.create_connection

    def via(source: tuple[str, int], bind: str) -> None:
        def connect(addr: tuple[str, int], timeout: float | None = None,
                    *args: object, **kwargs: object) -> socket.socket:
            sock = real(addr, timeout, (bind, 0))
            sock.sendall(proxyproto.encode(source, addr))
            return sock
        monkeypatch.setattr(socket, "create_connection", connect)
    via(("192.0.2.77", 4242), "127.0.0.1")            # as HAProxy would
    with pytest.raises(BadCode):
        a.link().login(acc.name, acc.password, "000000")
    failed = a.wait_event("login.failed", acc.name)
    assert failed.data["source"] == "192.0.2.77"
    via(("192.0.2.78", 4242), "127.0.0.2")            # not a listed balancer
    with pytest.raises(LinkError):
        a.link().login(acc.name, acc.password, acc.code())
    monkeypatch.undo()
    with a.store() as s:
        assert s.lockout_until("user", acc.name, time.time()) is None
