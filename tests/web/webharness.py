"""A running gateway with its web console, and a real headless Chromium to drive it.

``ConsoleWorld``: the SSH tests' World (tests/gateway/gwharness.py: a real sshd
upstream, a gateway process serving a SQLite store) with a ``web:`` section and a
self-signed certificate made by ``gateway.web.tls``; an admin, an observer and an
auditor user. ``Browser``: Debian's chromium (/usr/bin/chromium) through Playwright,
never a downloaded browser; as root it needs --no-sandbox, and on a closed network the
flags that stop it calling home. It trusts the console's certificate by its public
key (``--ignore-certificate-errors-spki-list``), nothing else. Every page load is
checked: every request stays on the console's origin, and no CSP violation happened.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.store.base import Store
from gateway.web.tls import make_self_signed
from tests.gateway.gwharness import Account, Sshd, World, free_port
from tests.tools import require

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--disable-features=Translate,OptimizationHints,MediaRouter",
                 "--disable-default-apps", "--metrics-recording-only", "--no-default-browser-check"]
SHOTS = REPO / "build" / "web-screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
# collects CSP violations in every document (an init script runs before the page's own)
VIOLATION_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def record_timing(name: str, seconds: float) -> None:
    """Keep a measured figure of the run in build/web-timings.json (for the report; the
    tests assert the issue's bounds themselves)."""
    path = REPO / "build" / "web-timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = round(seconds, 4)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def spki_hash(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class ConsoleWorld:
    world: World
    web_port: int
    cert_pem: bytes
    admin: Account
    observer: Account
    auditor: Account

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.web_port}"

    @classmethod
    def start(cls, base: Path, sshd: Sshd) -> ConsoleWorld:
        web_port = free_port()
        world = World.create(base, sshd, extra=(
            "attestation:\n  allow_soft: true\n"
            # the tests type whole lines at once: the injection rules raise alerts, not locks
            "anomaly:\n  rules:\n"
            "    - {id: keystroke-injection, metric: keys_per_second, above: 40, action: alert}\n"
            "    - {id: paste-burst, metric: burst_keys, above: 30, action: alert}\n"
            f"web:\n  address: 127.0.0.1\n  port: {web_port}\n  audit_verify_interval: 2s\n"))
        make_self_signed(world.dir / "web_cert.pem", world.dir / "web_key.pem", "127.0.0.1")
        admin = world.add_user("admin1")
        observer = world.add_user("observer1")
        auditor = world.add_user("auditor1")
        with world.store() as s:
            s.update_user("admin1", role="admin")
            s.update_user("observer1", role="observer")
        world.start()
        cw = cls(world, web_port, (world.dir / "web_cert.pem").read_bytes(), admin, observer,
                 auditor)
        cw.wait_ready()
        return cw

    def stop(self) -> None:
        self.world.stop()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/login").status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"console did not answer:\n{self.world.log_text()[-2000:]}")
            time.sleep(0.1)

    # -- plain HTTPS (no browser) -------------------------------------------------------
    def _conn(self) -> http.client.HTTPSConnection:
        ctx = ssl.create_default_context(cadata=self.cert_pem.decode())
        return http.client.HTTPSConnection("127.0.0.1", self.web_port, context=ctx, timeout=10)

    def request(self, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
        conn = self._conn()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()},
                            r.read().decode("utf-8", "replace"),
                            r.headers.get_all("set-cookie") or [])
        finally:
            conn.close()

    def get(self, path: str, cookie: str = "") -> Response:
        return self.request("GET", path, headers={"cookie": cookie} if cookie else {})

    def store(self) -> Any:
        return self.world.store()

    def audit(self, event: str) -> list[Any]:
        return self.world.audit_events(event)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str] = field(default_factory=list)


# -- a live SSH session of an auditor, through the gateway -----------------------------------

@dataclass
class Terminal:
    link: Any
    chan: paramiko.Channel
    device_id: str
    user: str

    def type(self, text: str) -> None:
        self.chan.sendall(text.encode())

    def read_until(self, marker: bytes, timeout: float = 15) -> bytes:
        self.chan.settimeout(timeout)
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf:
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} not seen; got {buf[-300:]!r}")
            data = self.chan.recv(65536)
            if not data:
                raise AssertionError(f"channel closed before {marker!r}; got {buf[-300:]!r}")
            buf += data
        return buf

    def close(self) -> None:
        self.link.close()


def open_terminal(cw: ConsoleWorld, name: str, account: Account | None = None) -> Terminal:
    """Enroll a soft terminal, log in as the auditor (or ``account``), attest, open a PTY."""
    agent = cw.world.enroll_soft(name)
    acc = account or cw.world.add_user()
    link = cw.world.link()
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    chan = link.open_shell("xterm", 80, 24)
    return Terminal(link, chan, agent.device_id, acc.name)


def session_of(store: Store, user: str, live: bool = True) -> str:
    """The newest session id of ``user`` (live or ended), waiting for its row."""
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in store.list_sessions(limit=50)
                if r.user == user and (r.ended_at is None) == live]
        if rows:
            return rows[0].id
        if time.monotonic() > deadline:
            raise AssertionError(f"no {'live' if live else 'ended'} session of {user}")
        time.sleep(0.05)


# -- the browser ----------------------------------------------------------------------------

def have_chromium() -> bool:
    return Path(CHROMIUM).exists()


@contextmanager
def chromium(cert_pem: bytes) -> Iterator[Any]:
    require(("chromium",), need_root=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_hash(cert_pem)}"])
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A browser context whose every request and CSP violation is recorded."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int] | None = None) -> None:
        self.base = base
        self.context = browser.new_context(viewport=viewport or DESKTOP)
        self.context.add_init_script(VIOLATION_WATCH)
        self.requests: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.csp_messages: list[str] = []     # what Chromium logs when the CSP blocks something
        self.page.on("console", lambda m: self.csp_messages.append(m.text)
                     if "Content Security Policy" in m.text else None)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def violations(self) -> list[str]:
        """CSP violations: logged by Chromium during the test, or seen by the page now."""
        found: list[str] = self.page.evaluate("window.__cspViolations || []")
        return [*self.csp_messages, *found]

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests
                if not (u.startswith(self.base + "/") or u == self.base
                        or u.startswith(self.base.replace("https://", "wss://") + "/")
                        or u.startswith(("data:", "blob:")))]

    def login(self, acc: Account) -> None:
        self.goto("/login")
        self.page.fill("input[name=user]", acc.name)
        self.page.fill("input[name=password]", acc.password)
        self.page.fill("input[name=code]", acc.code())
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


def form_post(cw: ConsoleWorld, path: str, fields: dict[str, str], cookie: str) -> Response:
    from urllib.parse import urlencode
    return cw.request("POST", path, urlencode(fields), {
        "content-type": "application/x-www-form-urlencoded", "cookie": cookie,
        "origin": cw.base})


def session_cookie(watched: Watched) -> str:
    """The console's session cookie of a logged-in browser context, as a Cookie header."""
    for c in watched.context.cookies():
        if c["name"] == "__Host-auditbox-session":
            return f"{c['name']}={c['value']}"
    raise AssertionError("not logged in")
