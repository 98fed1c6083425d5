"""Remote lock: issued in another process, it ends a live session within a second."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from kiosk.gateway_link import AttestationRefused, Locked
from tests.gateway.gwharness import AUDITBOX, REPO, World, read_until


def lock(world: World, kind: str, target: str, reason: str, ttl: str | None = None) -> None:
    """`auditbox gateway lock`, in another process."""
    subprocess.run([*AUDITBOX, "gateway", "lock", f"--{kind}", target, "--reason", reason,
                    *(["--ttl", ttl] if ttl else []), "--config",
                    str(world.dir / "gateway.yaml")], check=True, cwd=REPO, capture_output=True)


def lock_created(world: World, target: str) -> float:
    with world.store() as s:
        return max(lk.created_at for lk in s.active_locks(time.time()) if lk.target == target)


def unlock_all(world: World) -> None:
    with world.store() as s:
        for lk in s.active_locks(time.time()):
            assert lk.id is not None
            s.remove_lock(lk.id, "test", time.time())


@pytest.mark.parametrize("kind", ["user", "device"])
def test_lock_ends_a_live_session_within_a_second(world: World, kind: str) -> None:
    agent = world.enroll_soft(f"lock-{kind}")
    acc = world.add_user()
    link = world.link()
    locked: list[tuple[str, str]] = []
    got = threading.Event()
    link.on_lock = lambda m, t: (locked.append((m, t)), got.set())
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    chan = link.open_shell()
    chan.send(b"echo before-lock\n")
    read_until(chan, b"before-lock")
    target = acc.name if kind == "user" else agent.device_id
    lock(world, kind, target, "audit paused: call the lab")
    out = read_until(chan, b"call the lab", timeout=5)
    t_message = time.time()
    deadline = time.monotonic() + 5
    while not chan.exit_status_ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    t_closed = time.time()
    assert b"locked: audit paused: call the lab" in out
    assert chan.recv_exit_status() == 1
    # an upper bound, measured from the lock's commit (its created_at) in the other process
    t_lock = lock_created(world, target)
    assert t_message - t_lock < 1.0 and t_closed - t_lock < 1.5, (t_message - t_lock)
    assert got.wait(2) and locked[0] == ("auditbox: locked: audit paused: call the lab", kind)
    link.close()
    assert world.wait_event("session.end", acc.name).data["reason"].startswith("lock:")
    # new log-ins are refused with the lock's message
    if kind == "user":
        with pytest.raises(Locked) as info:
            world.link().login(acc.name, acc.password, acc.code())
        assert "call the lab" in info.value.text
    else:
        other = world.add_user()
        link = world.link()
        link.login(other.name, other.password, other.code())
        with pytest.raises(AttestationRefused) as ainfo:
            link.attest(agent)
        assert "call the lab" in ainfo.value.message
        link.close()
    unlock_all(world)


def test_lock_expires_at_its_ttl(world: World) -> None:
    acc = world.add_user()
    lock(world, "user", acc.name, "short break", ttl="2s")
    with pytest.raises(Locked) as info:
        world.link().login(acc.name, acc.password, acc.code())
    assert "short break" in info.value.text and "until" in info.value.text
    time.sleep(2.2)
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link.close()


def test_locks_persist_across_a_restart(world: World) -> None:
    acc = world.add_user()
    lock(world, "user", acc.name, "persisted lock")
    world.stop()
    world.start()
    with pytest.raises(Locked) as info:
        world.link().login(acc.name, acc.password, acc.code())
    assert "persisted lock" in info.value.text
    unlock_all(world)
