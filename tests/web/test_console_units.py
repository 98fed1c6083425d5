"""The console's parts on their own: vendored files, no outside references, config, TLS,
log-ins, redirect targets, the live view's recording tail, and the page queries on both
store backends."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from builder.errors import InputError
from gateway.config import load_config
from gateway.store.base import Alert, Device, SessionRow, Store
from gateway.web import tls
from gateway.web.console import STATIC, TEMPLATES
from gateway.web.guard import local_path
from gateway.web.liveview import output_tail
from gateway.web.logins import Logins, csrf_ok
from gateway.web.queries import Queries

VENDOR = STATIC / "vendor"


# -- vendored files and outside references -------------------------------------------------

def test_vendored_files_match_the_versions_note() -> None:
    note = (VENDOR / "README.md").read_text()
    rows = re.findall(r"^\| (xterm/[\w.-]+) \| (.+?) \| ([0-9a-f]{64}) \|$", note, re.M)
    assert {r[0] for r in rows} == {str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*")
                                    if p.is_file() and p.name != "README.md"}
    for name, _, digest in rows:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    for lic in ("LICENSE.xterm", "LICENSE.addon-canvas"):
        assert "Permission is hereby granted" in (VENDOR / "xterm" / lic).read_text()
    assert "@xterm/xterm | 5.5.0" in note and "@xterm/addon-canvas | 0.7.0" in note


REFERENCE = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*([^"'\s>]+)|url\(\s*["']?([^"')]+)""",
                       re.I)


def _references(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    if path.suffix in (".js", ".css"):
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)        # licence comments
    return [a or b for a, b in REFERENCE.findall(text)]


def test_pages_and_assets_reference_nothing_outside_the_console() -> None:
    files = [*TEMPLATES.glob("*.html"), *STATIC.rglob("*.css"), *STATIC.rglob("*.js")]
    assert len(files) > 15
    outside = []
    for path in files:
        for ref in _references(path):
            if re.match(r"(?i)([a-z][a-z0-9+.-]*:|//)", ref) and not ref.startswith("data:"):
                outside.append(f"{path.name}: {ref}")
    assert outside == []
    # and the scan would see one
    probe = TEMPLATES.parent / "probe.html"
    probe.write_text('<script src="https://cdn.example/x.js"></script>')
    try:
        assert _references(probe) == ["https://cdn.example/x.js"]
    finally:
        probe.unlink()


def test_templates_have_no_inline_script_or_style() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", text), path.name
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", text), path.name


# -- config and TLS -------------------------------------------------------------------------

def test_web_section_turns_the_console_on(tmp_path: Path) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text("listen:\n  port: 2222\n")
    assert load_config(f).web is None
    f.write_text("web:\n  port: 9443\n  session_ttl: 1h\n")
    web = load_config(f).web
    assert web is not None and (web.address, web.port, web.session_ttl) == ("127.0.0.1", 9443,
                                                                           3600)
    assert web.certificate == tmp_path / "web_cert.pem"
    f.write_text("web:\n  port: 9443\n  ttl: 1h\n")
    with pytest.raises(InputError) as info:
        load_config(f)
    assert str(info.value).startswith(f"{f}:3: web.ttl: unknown key 'ttl'")
    f.write_text("listen:\n  port: 2222\nweb:\n  address: 0.0.0.0\n  port: 2222\n")
    with pytest.raises(InputError, match=r"web.port: 2222 is the SSH port"):
        load_config(f)


def test_self_signed_certificate_and_server_context(tmp_path: Path) -> None:
    fp = tls.make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "gw.example")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-text",
                          "-in", str(tmp_path / "c.pem")], capture_output=True, text=True,
                         check=True).stdout
    assert f"sha256 Fingerprint={fp.removeprefix('SHA256:')}" in out
    assert "DNS:gw.example" in out and "IP Address:127.0.0.1" in out and "CA:FALSE" in out
    f = tmp_path / "gateway.yaml"
    f.write_text("web:\n  certificate: c.pem\n  key: k.pem\n")
    ctx = tls.server_context(load_config(f))
    assert ctx.minimum_version.name == "TLSv1_2"
    f.write_text("web:\n  certificate: missing.pem\n  key: k.pem\n")
    with pytest.raises(InputError, match=r"gateway.yaml:2: web.certificate: .*no such file"):
        tls.server_context(load_config(f))
    other = tmp_path / "other"
    other.mkdir()
    tls.make_self_signed(other / "c.pem", other / "k.pem", "x.example")
    f.write_text("web:\n  certificate: c.pem\n  key: other/k.pem\n")
    with pytest.raises(InputError, match=r"web.certificate: cannot use"):
        tls.server_context(load_config(f))


# -- log-ins ----------------------------------------------------------------------------------

def test_logins_expire_idle_and_absolute_and_end_per_user() -> None:
    now = [1000.0]
    logins = Logins(ttl=3600, idle=600, clock=lambda: now[0])
    value, login = logins.create("alice", "admin", "127.0.0.1")
    assert logins.get(value) is login and logins.get("x" + value) is None
    assert csrf_ok(login, login.csrf) and not csrf_ok(login, "") and not csrf_ok(login, None)
    now[0] += 599
    assert logins.get(value) is login            # used: idle clock restarts
    now[0] += 599
    assert logins.get(value) is login
    now[0] += 600
    assert logins.get(value) is None             # idle too long
    value, login = logins.create("alice", "admin", "127.0.0.1")
    for _ in range(7):
        now[0] += 500
        assert logins.get(value) is login
    now[0] += 500
    assert logins.get(value) is None             # past the TTL however busy
    value, _ = logins.create("bob", "observer", "127.0.0.1")
    assert logins.end_user("bob") == 1 and logins.get(value) is None
    cookie = logins.new_login_cookie()
    token = logins.login_token(cookie)
    assert logins.check_login_token(cookie, token)
    assert not logins.check_login_token(cookie + "x", token)
    assert not logins.check_login_token(cookie, None)
    assert not Logins(3600, 600).check_login_token(cookie, token)   # another process's secret


@pytest.mark.parametrize(("target", "expected"), [
    ("/devices?q=x", "/devices?q=x"), (None, "/"), ("", "/"), ("https://evil.example/", "/"),
    ("//evil.example/x", "/"), ("/\\evil.example", "/"), ("javascript:alert(1)", "/"),
    ("devices", "/")])
def test_redirect_targets_stay_on_the_console(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


# -- the live view's start: the recording's tail ---------------------------------------------------

def test_output_tail_reads_output_events_from_the_end(tmp_path: Path) -> None:
    cast = tmp_path / "s.cast"
    lines = [json.dumps({"version": 2, "width": 80, "height": 24, "timestamp": 0})]
    lines += [json.dumps([i * 0.1, "o", f"line {i}\r\n"]) for i in range(30_000)]
    lines += [json.dumps([9.0, "i", "typed"]), '[9.1, "o", "cut sho']     # crash mid-write
    cast.write_text("\n".join(lines))
    tail = output_tail(cast, limit=1000)
    assert len(tail) == 1000 and tail.endswith(b"line 29999\r\n")
    assert b"typed" not in tail and b"cut sho" not in tail
    assert output_tail(tmp_path / "missing.cast") == b""


# -- the page queries, on SQLite and PostgreSQL ----------------------------------------------------

def _seed(s: Store) -> None:
    now = time.time()
    for i in range(120):
        d = Device(f"dev-{i:03d}", "soft", "img-a" if i % 2 else "img_b", {}, now - 1000 + i,
                   status="revoked" if i == 7 else "active")
        s.add_device(d)
        if i % 3 == 0:
            s.update_device(d.device_id, last_attest_at=now, last_attest_result="ok")
        elif i % 3 == 1:
            s.update_device(d.device_id, last_attest_at=now, last_attest_result="refused",
                            last_attest_step="pcr_digest")
    for i in range(10):
        s.start_session(SessionRow(f"s{i}", "alice" if i % 2 else "bob", f"dev-{i:03d}", "src",
                                   "r1", now + i, f"{i}.cast"))
        if i < 6:
            s.update_session(f"s{i}", ended_at=now + 100, end_reason="closed")
    for i in range(5):
        alert_id = s.add_alert(Alert(now, "paste-burst" if i < 3 else "break-glass", "warning",
                                     "alert", "x", "alice"))
        if i == 0:
            s.ack_alert(alert_id, "web:admin", "ok", now)
    for i in range(130):
        s.append_audit(now, "web:admin" if i % 10 == 0 else "system",
                       "lock.add" if i % 10 == 0 else "login_ok.x", {"i": i})


def test_page_queries(store: Store) -> None:
    _seed(store)
    q = Queries(store)
    page = q.devices(limit=50)
    assert (page.total, len(page.rows), page.next_offset, page.prev_offset) == (120, 50, 50, None)
    assert page.rows[0].device_id == "dev-119"                    # newest enrollment first
    assert q.devices(offset=100).next_offset is None
    # attention: revoked, refused, never attested (every i % 3 == 2 has never attested)
    attention = q.devices(attention=True, limit=200)
    reasons = {d.device_id: d.attention for d in attention.rows}
    assert attention.total == 80 and reasons["dev-007"] == "revoked"
    assert reasons["dev-001"] == "attestation refused (pcr_digest)"
    assert reasons["dev-002"] == "never seen" and "dev-000" not in reasons
    # search is a substring, with LIKE's wildcards taken literally
    assert q.devices(search="dev-11").total == 10
    assert q.devices(search="img_b").total == 60 and q.devices(search="img%").total == 0
    assert q.devices(status="revoked").total == 1
    assert [r.id for r in q.sessions(live=True).rows] == ["s9", "s8", "s7", "s6"]
    assert q.sessions(live=False, user="alice").total == 3
    assert q.sessions(device_id="dev-003").rows[0].id == "s3"
    assert q.alert_rules() == [("break-glass", 2, 2), ("paste-burst", 3, 2)]
    assert q.alerts(rule="paste-burst", open_only=True).total == 2
    entries = q.audit(limit=50)
    assert [e.seq for e in entries[:2]] == [130, 129] and len(entries) == 50
    locks = q.audit(event="lock")
    assert len(locks) == 13 and {e.event for e in locks} == {"lock.add"}
    assert q.audit(event="login_ok") and not q.audit(event="login%")   # prefix, literal
    assert [e.seq for e in q.audit(actor="web:admin", before=50)] == [41, 31, 21, 11, 1]
    assert q.audit_last_seq() == 130 and q.device_count() == 120
