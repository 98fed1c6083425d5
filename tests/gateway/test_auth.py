"""The log-in decision: password + one-time code, replay, lockout, per-source rate limit,
admin locks, enrollment tokens, and failing closed when the store is gone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway import enrollment, passwords, totp
from gateway.audit import Auditor
from gateway.auth import Authenticator, LoginOk, Refusal
from gateway.config import AuthConfig
from gateway.locks import add_lock
from gateway.store import Store, User, open_store

PASSWORD = "correct horse battery"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
T0 = 1_767_225_600.0 + 15          # mid-step
CFG = AuthConfig(max_failures=3, failure_window=60, lockout=120, source_max_failures=5,
                 source_window=60, totp_window=1)
IP = "192.0.2.10"


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def password_hash() -> str:
    return passwords.hash_password(PASSWORD)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(store: Store, clock: Clock, password_hash: str) -> Authenticator:
    store.add_user(User("alice", password_hash, SECRET, "alice"))
    return Authenticator(store, CFG, Auditor(store, "test"), clock)


def code(clock: Clock, offset_steps: int = 0) -> str:
    return totp.code_at(SECRET, totp.step_of(clock.t) + offset_steps)


def events(store: Store) -> list[tuple[str, str]]:
    return [(e.event, str(e.data.get("reason", ""))) for e in store.audit_entries()]


def test_login_ok(auth: Authenticator, clock: Clock, store: Store) -> None:
    assert auth.check_source(IP) is None
    assert auth.check_password("alice", PASSWORD, IP) is None
    ok = auth.check_code("alice", code(clock), IP)
    assert isinstance(ok, LoginOk) and ok.user.upstream_user == "alice"
    assert events(store)[-1] == ("login.ok", "")


def test_wrong_password_and_unknown_user_look_alike(auth: Authenticator,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[str] = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password",
                        lambda h, p: checks.append(h[:9]) or real(h, p))
    wrong = auth.check_password("alice", "wrong password!", IP)
    unknown = auth.check_password("mallory", PASSWORD, IP)
    assert wrong == unknown == Refusal("bad-password", "wrong user name or password")
    assert wrong is not None and wrong.instruction == \
        "auditbox-error bad-password: wrong user name or password"
    assert checks == ["$argon2id", "$argon2id"]       # the unknown name cost one argon2id too


def test_wrong_code(auth: Authenticator, clock: Clock) -> None:
    r = auth.check_code("alice", code(clock, 5), IP)
    assert r == Refusal("bad-code", "wrong, expired or already used one-time code")
    assert auth.check_code("alice", "abcdef", IP).code == "bad-code"       # type: ignore[union-attr]


def test_code_accepted_once(auth: Authenticator, clock: Clock, store: Store) -> None:
    c = code(clock)
    assert isinstance(auth.check_code("alice", c, IP), LoginOk)
    clock.t += 5                                       # same 30 s step, still in its window
    again = auth.check_code("alice", c, IP)
    assert isinstance(again, Refusal) and again.code == "bad-code"
    assert ("login.failed", "code-replayed") in events(store)


def test_earlier_step_refused_after_a_later_one(auth: Authenticator, clock: Clock) -> None:
    assert isinstance(auth.check_code("alice", code(clock, +1), IP), LoginOk)   # clock skew
    r = auth.check_code("alice", code(clock), IP)          # older step, never used
    assert isinstance(r, Refusal) and r.code == "bad-code"


def test_window_edges(auth: Authenticator, clock: Clock) -> None:
    assert isinstance(auth.check_code("alice", code(clock, -2), IP), Refusal)
    assert isinstance(auth.check_code("alice", code(clock, -1), IP), LoginOk)


def test_replay_race_one_winner(auth: Authenticator, clock: Clock) -> None:
    """The same code presented on many connections (any replica) at once: one log-in."""
    c = code(clock)
    barrier = threading.Barrier(8)
    results: list[object] = []

    def attempt() -> None:
        barrier.wait()
        results.append(auth.check_code("alice", c, f"192.0.2.{len(results) + 50}"))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(isinstance(r, LoginOk) for r in results) == 1


def test_lockout_after_n_failures(auth: Authenticator, clock: Clock, store: Store) -> None:
    assert auth.check_password("alice", "nope nope nope", IP).code == "bad-password"  # type: ignore[union-attr]
    clock.t += 1
    assert auth.check_code("alice", "000000", IP).code == "bad-code"  # type: ignore[union-attr]
    clock.t += 1
    third = auth.check_password("alice", "nope nope nope", IP)
    assert third is not None and third.code == "locked-out"
    assert "locked out until 2026-01-01 00:02:17 UTC" in third.text
    # the right password does not help while locked out
    clock.t += 60
    r = auth.check_password("alice", PASSWORD, "198.51.100.1")
    assert r is not None and r.code == "locked-out"
    assert ("login.lockout", "") in events(store)
    # the lockout ends
    clock.t += 61
    assert auth.check_password("alice", PASSWORD, "198.51.100.1") is None
    assert isinstance(auth.check_code("alice", code(clock), "198.51.100.1"), LoginOk)


def test_failures_outside_window_do_not_add_up(auth: Authenticator, clock: Clock) -> None:
    for _ in range(4):
        r = auth.check_password("alice", "nope nope nope", IP)
        assert r is not None and r.code == "bad-password"
        clock.t += 31                                   # window 60 s: at most 2 in it
    assert auth.check_password("alice", PASSWORD, IP) is None


def test_unknown_names_lock_out_too(auth: Authenticator) -> None:
    codes = [auth.check_password("ghost", "x" * 12, IP).code for _ in range(3)]  # type: ignore[union-attr]
    assert codes == ["bad-password", "bad-password", "locked-out"]


def test_success_clears_user_failures(auth: Authenticator, clock: Clock) -> None:
    for _ in range(2):
        auth.check_password("alice", "nope nope nope", IP)
    assert isinstance(auth.check_code("alice", code(clock), IP), LoginOk)
    for _ in range(2):
        assert auth.check_password("alice", "nope nope nope", IP).code == "bad-password"  # type: ignore[union-attr]


def test_rate_limit_per_source(auth: Authenticator, clock: Clock, store: Store) -> None:
    results = [auth.check_password(f"user{i}", "guess guess!", IP) for i in range(5)]
    assert [r.code for r in results if r] == ["bad-password"] * 4 + ["rate-limited"]
    limited = auth.check_source(IP)
    assert limited is not None and limited.code == "rate-limited"
    assert "retry after 2026-01-01 00:01:15 UTC" in limited.text
    # even the right credentials are refused from that address, not from another one
    assert auth.check_password("alice", PASSWORD, IP).code == "rate-limited"  # type: ignore[union-attr]
    assert auth.check_password("alice", PASSWORD, "192.0.2.11") is None
    assert ("login.rate-limit", "") in events(store)
    clock.t += 61
    assert auth.check_source(IP) is None


def test_admin_lock_told_only_with_the_password(auth: Authenticator, store: Store,
                                                clock: Clock) -> None:
    add_lock(store, Auditor(store, "cli:root"), "user", "alice", "audit paused, call the lab",
             "cli:root", now=clock.t)
    assert auth.check_password("alice", "nope nope nope", IP).code == "bad-password"  # type: ignore[union-attr]
    r = auth.check_password("alice", PASSWORD, IP)
    assert r == Refusal("locked", "audit paused, call the lab")


def test_reserved_enroll_name(auth: Authenticator, store: Store, password_hash: str) -> None:
    store.add_user(User("auditbox-enroll", password_hash, SECRET, "x"))
    r = auth.check_password("auditbox-enroll", PASSWORD, IP)
    assert r is not None and r.code == "bad-password"


def test_enrollment_tokens(auth: Authenticator, store: Store, clock: Clock) -> None:
    a = Auditor(store, "cli:root")
    good, _ = enrollment.create_token(store, a, "soft", 3600, "cli:root", now=clock.t)
    old, _ = enrollment.create_token(store, a, "tpm2", 10, "cli:root", now=clock.t - 20)
    assert auth.check_token(good, IP) is None
    assert auth.check_token(good.lower().replace("-", " "), IP) is None      # as typed
    assert auth.check_token(old, IP) == Refusal(
        "bad-token", "enrollment token unknown, expired or already used")
    assert store.use_token(enrollment.token_hash(good), "dev", clock.t)
    assert auth.check_token(good, IP).code == "bad-token"               # type: ignore[union-attr]
    assert auth.check_token("not a token", IP).code == "bad-token"      # type: ignore[union-attr]
    # failed tokens count against the address (the 5th failure from it)
    assert auth.check_token("AAAA-AAAA-AAAA-AAAA-AAAA-AAAA", IP).code == "bad-token"  # type: ignore[union-attr]
    r = auth.check_token("AAAA-AAAA-AAAA-AAAA-AAAA-AAAB", IP)
    assert r is not None and r.code == "rate-limited"
    assert auth.check_token(good, IP).code == "rate-limited"            # type: ignore[union-attr]


def test_store_gone_fails_closed(tmp_path: Path, password_hash: str) -> None:
    store = open_store(tmp_path / "s.db")
    store.add_user(User("alice", password_hash, SECRET, "alice"))
    auth = Authenticator(store, CFG, Auditor(store, "test"))
    store.close()
    for r in (auth.check_source(IP), auth.check_password("alice", PASSWORD, IP),
              auth.check_code("alice", "123456", IP), auth.check_token("ABCD", IP)):
        assert r == Refusal("unavailable", "the gateway cannot read its store; try again later")
