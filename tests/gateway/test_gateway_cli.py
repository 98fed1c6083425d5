"""`auditbox gateway ...` through the real `auditbox` command (subprocesses)."""

from __future__ import annotations

import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.reference import public_key_pem, write_signed_reference
from gateway import totp
from gateway.audit import Auditor
from gateway.auth import Authenticator, LoginOk
from gateway.config import load_config
from gateway.store import Alert, Device, SessionRow, Token, open_store
from tests.attestation.attest_helpers import reference_data
from tests.gateway.pg import PgServer

REPO = Path(__file__).resolve().parents[2]
AUDITBOX = str(Path(sys.executable).with_name("auditbox"))
PASSWORD = "correct horse battery"
ONE_LINE = re.compile(r"^error: [^\n]+\n$")


@dataclass
class Result:
    code: int
    out: str
    err: str


def gw(*args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None,
       timeout: float = 120) -> Result:
    p = subprocess.run([AUDITBOX, "gateway", *args], cwd=cwd, input=stdin, text=True,
                       capture_output=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    return Result(p.returncode, p.stdout, p.stderr)


def bad(r: Result, code: int = 2) -> str:
    """The run failed with exactly one error line and the exit code."""
    assert r.code == code, (r.code, r.out, r.err)
    assert ONE_LINE.match(r.err), r.err
    assert "Traceback" not in r.err
    return r.err


@pytest.fixture
def gwdir(tmp_path: Path) -> Path:
    r = gw("init", "--dir", "gw", "--gateway-host", "gw.example", "--port", "2200",
           cwd=tmp_path)
    assert r.code == 0, r.err
    return tmp_path / "gw"


def add_user(gwdir: Path, name: str = "alice", *extra: str) -> str:
    r = gw("user", "add", name, "--password-stdin", "--no-qr", *extra, cwd=gwdir,
           stdin=PASSWORD + "\n")
    assert r.code == 0, r.err
    m = re.search(r"secret=([A-Z2-7]+)&", r.out)
    assert m, r.out
    return m.group(1)


# -- init ------------------------------------------------------------------------------------

def test_init_writes_a_working_gateway_dir(tmp_path: Path) -> None:
    r = gw("init", "--dir", "gw", "--gateway-host", "192.0.2.10", cwd=tmp_path)
    assert r.code == 0, r.err
    d = tmp_path / "gw"
    assert sorted(p.name for p in d.iterdir()) == ["gateway.yaml", "host_key", "host_key.pub",
                                                   "recordings", "store.db", "web_cert.pem",
                                                   "web_key.pem"]
    assert (d / "host_key").stat().st_mode & 0o777 == 0o600
    assert (d / "web_key.pem").stat().st_mode & 0o777 == 0o600
    # the console's self-signed certificate: openssl agrees with the printed fingerprint
    web_fp = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                             str(d / "web_cert.pem")], capture_output=True, text=True,
                            check=True).stdout.strip().split("=", 1)[1]
    assert f"web certificate fingerprint: SHA256:{web_fp}\n" in r.out
    assert (d / "recordings").stat().st_mode & 0o777 == 0o700
    # OpenSSH reads the key, and agrees with the printed fingerprint and public key
    fp = subprocess.run(["ssh-keygen", "-lf", str(d / "host_key")], capture_output=True,
                        text=True, check=True).stdout.split()[1]
    assert f"host key fingerprint: {fp}\n" in r.out
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(d / "host_key")], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert pub.startswith("ssh-ed25519 ")
    # the exact profile lines, which a terminal profile accepts as they are
    lines = r.out[r.out.index("kiosk:\n"):]
    assert lines == (f'kiosk:\n  host_key: "{pub} auditbox-gateway@192.0.2.10"\n'
                     "  gateway_host: 192.0.2.10\n  gateway_port: 2222\n")
    profile = tmp_path / "site.yaml"
    profile.write_text(f"extends: {REPO / 'profiles/audit-laptop.yaml'}\nname: site\n" + lines)
    v = subprocess.run([AUDITBOX, "validate", str(profile)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    # the config loads, the store is there with its first audit entry
    cfg = load_config(d / "gateway.yaml")
    assert (cfg.listen.port, cfg.database) == (2222, str(d / "store.db"))
    store = open_store(cfg.database, create=False)
    assert [e.event for e in store.audit_entries()] == ["gateway.init"]
    store.close()
    assert gw("check", cwd=d).out.startswith("ok: gateway.yaml: 0 users, 0 devices")


def test_init_refuses_to_overwrite(gwdir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in gwdir.iterdir()}
    err = bad(gw("init", "--dir", str(gwdir), "--gateway-host", "x.example", cwd=gwdir))
    assert "refusing to overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in gwdir.iterdir()} == before


def test_init_bad_input_writes_nothing(tmp_path: Path) -> None:
    assert "--gateway-host" in bad(gw("init", "--dir", "gw", "--gateway-host", "gw example",
                                      cwd=tmp_path))
    assert "--listen" in bad(gw("init", "--dir", "gw", "--listen", "anywhere",
                                "--gateway-host", "gw.example", cwd=tmp_path))
    assert "--database" in bad(gw("init", "--dir", "gw", "--gateway-host", "h.example",
                                  "--database", "mysql://x", cwd=tmp_path))
    assert not (tmp_path / "gw").exists()


def test_init_store_failure_leaves_nothing(tmp_path: Path) -> None:
    from tests.gateway.pg import free_port

    r = gw("init", "--dir", "gw", "--gateway-host", "h.example", "--database",
           f"postgresql://nobody@127.0.0.1:{free_port()}/none", cwd=tmp_path)
    assert "cannot connect" in bad(r, 1)
    assert not (tmp_path / "gw").exists()


def test_init_with_postgres(tmp_path: Path, pg_url: str) -> None:
    r = gw("init", "--dir", "gw", "--gateway-host", "h.example", "--database", pg_url,
           cwd=tmp_path)
    assert r.code == 0, r.err
    password = pg_url.split(":")[2].split("@")[0]
    assert password not in r.out and "***" in r.out
    assert not (tmp_path / "gw/store.db").exists()
    add_user(tmp_path / "gw")
    store = open_store(pg_url)
    assert [u.name for u in store.list_users()] == ["alice"]
    store.close()


# -- users -----------------------------------------------------------------------------------

def test_user_add_then_log_in(gwdir: Path) -> None:
    r = gw("user", "add", "alice", "--upstream", "auditor7", "--password-stdin", cwd=gwdir,
           stdin=PASSWORD + "\n")
    assert r.code == 0, r.err
    assert r.out.startswith("user alice added (upstream account auditor7, role auditor)\n")
    uri = re.search(r"^otpauth://totp/auditbox:alice\?secret=([A-Z2-7]{32})&issuer=auditbox$",
                    r.out, re.M)
    assert uri, r.out
    assert sum(1 for line in r.out.splitlines() if set(line) <= set("█▀▄ \u00a0")) >= 20  # QR
    # the printed secret logs in, against the store the CLI wrote
    cfg = load_config(gwdir / "gateway.yaml")
    store = open_store(cfg.database)
    auth = Authenticator(store, cfg.auth, Auditor(store, "test"))
    assert auth.check_password("alice", PASSWORD, "192.0.2.1") is None
    ok = auth.check_code("alice", totp.code_at(uri.group(1), totp.step_of(time.time())),
                         "192.0.2.1")
    assert isinstance(ok, LoginOk) and ok.user.upstream_user == "auditor7"
    assert ok.user.break_glass is False
    store.close()
    listing = gw("user", "list", cwd=gwdir).out
    assert re.search(r"^alice\s+auditor7\s+auditor\s+no\s", listing, re.M), listing


def test_user_add_refusals(gwdir: Path) -> None:
    add_user(gwdir)
    assert "already exists" in bad(gw("user", "add", "alice", "--password-stdin", cwd=gwdir,
                                      stdin=PASSWORD + "\n"))
    assert "shorter than 12" in bad(gw("user", "add", "bob", "--password-stdin", cwd=gwdir,
                                       stdin="short\n"))
    assert "reserved" in bad(gw("user", "add", "auditbox-enroll", "--password-stdin",
                                cwd=gwdir, stdin=PASSWORD + "\n"))
    assert "not a valid user name" in bad(gw("user", "add", "Bob Smith", "--password-stdin",
                                             cwd=gwdir, stdin=PASSWORD + "\n"))
    assert "upstream account" in bad(gw("user", "add", "carol", "--upstream", "root;x",
                                        "--password-stdin", cwd=gwdir, stdin=PASSWORD + "\n"))
    users = gw("user", "list", cwd=gwdir).out
    assert "bob" not in users and "carol" not in users


def _pty_run(argv: list[str], cwd: Path, replies: list[tuple[str, str]],
             timeout: float = 60) -> tuple[int, str]:
    """Run argv on a pseudo-terminal (its controlling tty), answering prompts in order."""
    pid, fd = pty.fork()
    if pid == 0:                                   # child
        os.chdir(cwd)
        os.execv(argv[0], argv)
    out = b""
    pending = list(replies)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if pending and pending[0][0].encode() in out.split(b"\n")[-1]:
            os.write(fd, pending.pop(0)[1].encode() + b"\r")
            out += b"\n"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_user_add_hidden_prompt_twice(gwdir: Path) -> None:
    code, out = _pty_run([AUDITBOX, "gateway", "user", "add", "dana", "--no-qr"], gwdir,
                         [("Password:", PASSWORD), ("Repeat for confirmation:", "mismatch!!"),
                          ("Password:", PASSWORD), ("Repeat for confirmation:", PASSWORD)])
    assert code == 0, out
    assert "do not match" in out.lower() or "don't match" in out.lower()
    assert PASSWORD not in out                       # never echoed
    assert "user dana added" in out


def test_reset_otp_unlock_remove(gwdir: Path) -> None:
    old = add_user(gwdir)
    r = gw("user", "reset-otp", "alice", "--no-qr", cwd=gwdir)
    new = re.search(r"secret=([A-Z2-7]+)&", r.out)
    assert r.code == 0 and new and new.group(1) != old
    cfg = load_config(gwdir / "gateway.yaml")
    store = open_store(cfg.database)
    assert store.get_user("alice").totp_secret == new.group(1)   # type: ignore[union-attr]
    store.set_lockout("user", "alice", time.time() + 600)
    assert re.search(r"alice .* until \S+Z$", gw("user", "list", cwd=gwdir).out, re.M)
    assert gw("user", "unlock", "alice", cwd=gwdir).out == "user alice: lockout cleared\n"
    assert store.lockout_until("user", "alice", time.time()) is None
    store.close()
    assert gw("user", "remove", "alice", cwd=gwdir).out == "user alice removed\n"
    assert "no user 'alice'" in bad(gw("user", "remove", "alice", cwd=gwdir))
    assert "no user" in bad(gw("user", "reset-otp", "ghost", cwd=gwdir))


# -- devices, tokens, images --------------------------------------------------------------

def test_tokens(gwdir: Path) -> None:
    r = gw("device", "token", "create", "--mode", "tpm2", "--ttl", "30m", cwd=gwdir)
    assert r.code == 0, r.err
    token = r.out.splitlines()[1]
    assert re.fullmatch(r"([A-Z2-7]{4}-){5}[A-Z2-7]{4}", token)
    listing = gw("device", "token", "list", cwd=gwdir).out
    assert re.search(r"^[0-9a-f]{12}\s+tpm2\s.*\sunused$", listing, re.M), listing
    cfg = load_config(gwdir / "gateway.yaml")
    store = open_store(cfg.database)
    assert Authenticator(store, cfg.auth, Auditor(store, "t")).check_token(token, "::1") is None
    store.close()
    assert "duration" in bad(gw("device", "token", "create", "--ttl", "soon", cwd=gwdir))
    soft = gw("device", "token", "create", "--mode", "soft", cwd=gwdir)
    assert soft.code == 0 and "allow_soft is false" in soft.err


def test_devices(gwdir: Path) -> None:
    store = open_store(gwdir / "store.db")
    store.add_token(Token("ab" * 32, "soft", 1.0, time.time() + 60, "t"))
    record = {"format": 1, "device_id": "soft-0123456789abcdef", "mode": "soft",
              "ek_hash": None, "ak_name": "00", "status": "active", "image_id": "img-1",
              "last_clock": {"clock": 123456, "reset_count": 3, "restart_count": 0},
              "firmware_pcrs": {}}
    assert store.enroll_device(Device("soft-0123456789abcdef", "soft", "img-1", record,
                                      time.time()), "ab" * 32, time.time()) is None
    store.close()
    listing = gw("device", "list", cwd=gwdir).out
    assert re.search(r"^soft-0123456789abcdef\s+soft\s+img-1\s+active\s+\S+Z\s+never$",
                     listing, re.M), listing
    show = gw("device", "show", "soft-0123456789abcdef", cwd=gwdir).out
    assert "clock 123456 ms, resets 3, restarts 0" in show and "no attestations yet" in show
    assert gw("device", "revoke", "soft-0123456789abcdef", cwd=gwdir).out == \
        "device soft-0123456789abcdef revoked\n"
    assert " revoked " in gw("device", "list", cwd=gwdir).out
    assert "no device" in bad(gw("device", "show", "ghost", cwd=gwdir))


def _build_out(tmp: Path, key: Ed25519PrivateKey, image_id: str = "auditbox-site-1") -> Path:
    """A build output directory as `auditbox build` leaves it (the reference parts)."""
    out = tmp / image_id
    out.mkdir()
    write_signed_reference(out, reference_data(image_id=image_id), key)
    (out / "build-key.pub").write_bytes(public_key_pem(key))
    return out


def _trust(gwdir: Path, *keys: Path) -> None:
    text = (gwdir / "gateway.yaml").read_text()
    listed = ", ".join(str(k) for k in keys)
    (gwdir / "gateway.yaml").write_text(re.sub(r"^trusted_build_keys: .*$",
                                               f"trusted_build_keys: [{listed}]", text,
                                               flags=re.M))


def test_images(gwdir: Path, tmp_path: Path) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    out = _build_out(tmp_path, key)
    untrusted = tmp_path / "other.pub"
    untrusted.write_bytes(public_key_pem(other))
    assert "no trusted build key" in bad(gw("image", "add", str(out), cwd=gwdir))
    _trust(gwdir, untrusted)
    assert "not signed by a trusted build key" in bad(gw("image", "add", str(out), cwd=gwdir))
    _trust(gwdir, untrusted, out / "build-key.pub")
    r = gw("image", "add", str(out), cwd=gwdir)
    assert r.code == 0, r.err
    assert r.out.startswith("image auditbox-site-1 registered\n")
    assert "already registered" in bad(gw("image", "add", str(out), cwd=gwdir))
    # a tampered reference is refused, even with the right key
    tampered = _build_out(tmp_path, key, "auditbox-site-2")
    (tampered / "reference.json").write_bytes(
        (tampered / "reference.json").read_bytes().replace(b'"roothash":"aa"',
                                                            b'"roothash":"ab"'))
    assert "not signed" in bad(gw("image", "add", str(tampered), cwd=gwdir))
    assert re.search(r"^auditbox-site-1\s+\S+Z\s+cli:\S+\s+active$",
                     gw("image", "list", cwd=gwdir).out, re.M)
    assert gw("image", "revoke", "auditbox-site-1", cwd=gwdir).out == \
        "image auditbox-site-1 revoked\n"
    assert "revoked" in gw("image", "list", cwd=gwdir).out


def test_image_add_with_relative_key_path(gwdir: Path, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    out = _build_out(tmp_path, key)
    (gwdir / "build-key.pub").write_bytes(public_key_pem(key))
    _trust(gwdir, Path("build-key.pub"))
    assert gw("image", "add", str(out), cwd=gwdir).code == 0


# -- locks, sessions, alerts, audit ----------------------------------------------------------

def test_locks(gwdir: Path) -> None:
    add_user(gwdir)
    r = gw("lock", "--user", "alice", "--reason", "audit paused", "--ttl", "2h", cwd=gwdir)
    assert re.fullmatch(r"lock 1: user alice locked, until \S+Z: audit paused\n", r.out), r.out
    assert "exactly one" in bad(gw("lock", "--user", "alice", "--device", "d", cwd=gwdir))
    assert "no user 'bob'" in bad(gw("lock", "--user", "bob", cwd=gwdir))
    assert "no device" in bad(gw("lock", "--device", "tpm-x", cwd=gwdir))
    assert "duration" in bad(gw("lock", "--user", "alice", "--ttl", "forever", cwd=gwdir))
    assert "control characters" in bad(gw("lock", "--user", "alice", "--reason", "a\nb",
                                          cwd=gwdir))
    listing = gw("locks", "list", cwd=gwdir).out
    assert re.search(r"^1\s+user\s+alice\s.*until \S+Z\s+audit paused$", listing, re.M)
    cfg = load_config(gwdir / "gateway.yaml")
    store = open_store(cfg.database)
    assert [lk.target for lk in store.active_locks(time.time())] == ["alice"]
    assert [lk.target for lk in store.active_locks(time.time() + 7201)] == []   # TTL
    store.close()
    assert gw("unlock", "1", cwd=gwdir).out == "lock 1 removed\n"
    assert "no active lock" in bad(gw("unlock", "1", cwd=gwdir))
    gw("lock", "--user", "alice", cwd=gwdir)
    assert gw("unlock", "--user", "alice", cwd=gwdir).out == "lock 2 removed\n"
    assert "removed" in gw("locks", "list", "--all", cwd=gwdir).out


def test_sessions_and_alerts(gwdir: Path) -> None:
    store = open_store(gwdir / "store.db")
    now = time.time()
    store.start_session(SessionRow("20260101T000000Z-0000aaaa", "alice", "tpm-1",
                                   "192.0.2.1:50000", "gw-a", now - 100, "a.cast"))
    store.start_session(SessionRow("20260101T000100Z-0000bbbb", "bob", None,
                                   "192.0.2.2:50000", "gw-a", now - 50, "b.cast",
                                   break_glass=True))
    store.update_session("20260101T000000Z-0000aaaa", ended_at=now - 40, end_reason="closed",
                         bytes_out=3 * 1024 * 1024, bytes_in=2048)
    a = store.add_alert(Alert(now, "break-glass", "critical", "alert", "bob logged in "
                              "without attestation", user="bob"))
    store.close()
    listing = gw("sessions", "list", cwd=gwdir).out
    assert re.search(r"^20260101T000000Z-0000aaaa\s+alice\s+tpm-1\s.*\s60s\s+2.0 KiB\s+"
                     r"3.0 MiB\s+closed$", listing, re.M), listing
    live = gw("sessions", "list", "--live", cwd=gwdir).out
    assert "0000bbbb" in live and "break-glass" in live and "0000aaaa" not in live
    alerts = gw("alerts", "list", "--open", cwd=gwdir).out
    assert re.search(rf"^{a}\s+\S+Z\s+break-glass\s+critical\s+alert\s+bob\s+-\s+open\s+",
                     alerts, re.M), alerts
    assert gw("alerts", "ack", str(a), "--comment", "planned", cwd=gwdir).out == \
        f"alert {a} acknowledged\n"
    assert f"no open alert {a}" in bad(gw("alerts", "ack", str(a), cwd=gwdir))
    assert gw("alerts", "list", "--open", cwd=gwdir).out.count("\n") == 1   # header only


def test_audit_commands_and_tamper(gwdir: Path) -> None:
    add_user(gwdir)
    gw("lock", "--user", "alice", cwd=gwdir)
    tail = gw("audit", "tail", "-n", "2", cwd=gwdir).out.splitlines()
    assert [line.split()[3] for line in tail] == ["user.add", "lock.add"]
    show = gw("audit", "show", "2", cwd=gwdir).out
    assert re.search(r"^hash\s+[0-9a-f]{64}$", show, re.M) and "user.add" in show
    assert "no audit entry 99" in bad(gw("audit", "show", "99", cwd=gwdir))
    ok = gw("audit", "verify", cwd=gwdir)
    assert ok.code == 0 and ok.out.startswith("ok: 3 entries, last hash ")
    db = sqlite3.connect(gwdir / "store.db")
    db.execute("UPDATE audit SET data = '{\"user\":\"mallory\"}' WHERE seq = 2")
    db.commit()
    db.close()
    r = gw("audit", "verify", cwd=gwdir)
    assert r.code == 1
    assert r.out.startswith("FAILED after 1 good entries: entry seq 2 (user.add by cli:")
    assert "was edited" in r.out


# -- errors and the lazy import -------------------------------------------------------------

def test_config_error_is_one_line(gwdir: Path) -> None:
    (gwdir / "gateway.yaml").write_text("listen:\n  port: 2222\n  prot: 22\n")
    err = bad(gw("user", "list", cwd=gwdir))
    assert err == ("error: gateway.yaml:3: listen.prot: unknown key 'prot' (did you mean "
                   "'port'?) (allowed: address, port, login_timeout, proxy_protocol_from, "
                   "max_connections)\n")
    assert bad(gw("user", "list", "--config", "absent.yaml", cwd=gwdir)).startswith(
        "error: absent.yaml:1: (file): cannot read")


def test_env_config_and_database_override(gwdir: Path, tmp_path: Path) -> None:
    add_user(gwdir)
    r = gw("user", "list", cwd=tmp_path, env={"AUDITBOX_GATEWAY_CONFIG":
                                              str(gwdir / "gateway.yaml")})
    assert "alice" in r.out
    r = gw("user", "list", "--database", str(gwdir / "store.db"), cwd=tmp_path)
    assert "alice" in r.out
    assert "no store here" in bad(gw("user", "list", "--database", "absent.db", cwd=tmp_path))
    assert not (tmp_path / "absent.db").exists()


def test_unreachable_store_is_one_line_exit_1(gwdir: Path) -> None:
    from tests.gateway.pg import free_port

    url = f"postgresql://auditbox:secret@127.0.0.1:{free_port()}/x"
    err = bad(gw("user", "list", "--database", url, cwd=gwdir), 1)
    assert err.startswith("error: store: postgresql://auditbox:***@127.0.0.1:")


def test_postgres_store_through_the_cli(gwdir: Path, pg_server: PgServer) -> None:
    url = pg_server.create_database()
    try:
        add_user(gwdir, "alice", "--database", url)
        assert "alice" in gw("user", "list", "--database", url, cwd=gwdir).out
        assert "alice" not in gw("user", "list", cwd=gwdir).out        # the SQLite one
        assert gw("audit", "verify", "--database", url, cwd=gwdir).code == 0
    finally:
        pg_server.drop_database(url)


def test_serve_needs_an_upstream(gwdir: Path) -> None:
    err = bad(gw("serve", cwd=gwdir))
    assert err.startswith("error: gateway.yaml:") and "no upstream configured" in err


def test_build_never_imports_the_gateway() -> None:
    """`auditbox build` (and --help) load neither gateway/, asyncssh nor psycopg."""
    for argv in (["build", "--help"], ["--help"], ["validate", "--help"]):
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder.cli", *argv],
                           capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 0, p.stderr
        imported = {line.split("|")[-1].strip().split(".")[0]
                    for line in p.stderr.splitlines() if line.startswith("import time:")}
        assert not imported & {"gateway", "asyncssh", "psycopg", "psycopg_pool", "argon2",
                               "pyotp", "qrcode"}, argv
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder.cli", "gateway",
                        "--help"], capture_output=True, text=True, cwd=REPO)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.splitlines()}
    assert "gateway" in imported                  # the check itself can see an import
    assert not imported & {"asyncssh", "psycopg"}
