"""Console page server times with a large registry (issue 15; goal: p95 under 100 ms).

Run: python3 tests/bench/web_bench.py [--devices 10000] [--audit 100000] [--n 60]

Seeds a SQLite store with 10,000 devices (enrollment records of ~1 KiB, 3 attestations
each), 100,000 audit entries (a valid hash chain), 2,000 ended sessions, 1,000 alerts,
200 locks and 50 users; starts the gateway as `auditbox gateway serve` (the console on
HTTPS in the same process, as in production), logs in as an admin, waits for the
console's first full chain verification, then requests every page N times one after
the other. The server's own time per request comes from its ``Server-Timing: app;dur=``
header (request in, response headers out); the round trip over TLS on loopback is shown
beside it. Merges ``web_page_server_ms`` (p50/p95/max per page) and
``web_audit_verify_seconds`` into bench-results.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import passwords, totp  # noqa: E402
from gateway.audit import ZERO_HASH, entry_hash  # noqa: E402
from gateway.store import open_store  # noqa: E402
from gateway.store.base import User  # noqa: E402
from gateway.store.sql import SqlStore  # noqa: E402
from gateway.web.tls import make_self_signed  # noqa: E402
from tests.gateway.gwharness import AUDITBOX, ed25519_openssh, free_port, wait_port  # noqa: E402

GOAL_MS = 100.0
RESULTS = ROOT / "bench-results.json"


def seed(store: SqlStore, devices: int, audit: int) -> dict[str, str]:
    """Fill the store in a few transactions; return ids the page list refers to."""
    now = time.time()
    rng = secrets.SystemRandom()
    t0 = time.monotonic()
    with store._tx() as tx:
        for i in range(devices):
            device_id = f"soft-{i:08d}{secrets.token_hex(8)}"
            record = {"ak_public": secrets.token_hex(300), "ek_hash": secrets.token_hex(32),
                      "firmware": {str(p): secrets.token_hex(32) for p in range(6)},
                      "mode": "soft", "status": "active"}
            status = "revoked" if i % 97 == 0 else "active"
            last = None if i % 31 == 0 else now - rng.uniform(0, 86400)
            result = None if last is None else ("refused" if i % 13 == 0 else "ok")
            tx.run("INSERT INTO devices (device_id, mode, image_id, record, enrolled_at, status, "
                   "ek_cert, last_attest_at, last_attest_result, last_attest_step, "
                   "last_attest_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   device_id, "soft", f"img-{i % 5}", json.dumps(record), now - 86400 * 30 + i,
                   status, "none", last, result, "pcr_digest" if result == "refused" else None,
                   "PCR 11 differs" if result == "refused" else None)
            for k in range(3):
                tx.run("INSERT INTO attestations (device_id, at, result, step, reason, "
                       "session_id) VALUES (?, ?, ?, ?, ?, ?)", device_id, now - 3600 * k,
                       "ok", None, None, None)
            if i == devices // 2:
                sample_device = device_id
        for i in range(2000):
            tx.run("INSERT INTO sessions (id, user_name, device_id, source, replica, started_at, "
                   "recording, ended_at, end_reason, bytes_in, bytes_out, recording_sha256, "
                   "break_glass, budget_used, anomaly_score) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   f"20261101T000000Z-{i:08x}", f"user{i % 50}", sample_device, "10.0.0.1:1",
                   "bench", now - 86400 + i, f"x/{i}.cast", now - 86400 + i + 600, "closed",
                   1000, 50000, "0" * 64, 0, 0.01, 0.1)
        for i in range(1000):
            tx.run("INSERT INTO alerts (at, rule, severity, action, detail, user_name, device_id, "
                   "session_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", now - i,
                   ("paste-burst", "slow-scrape", "break-glass")[i % 3], "warning", "alert",
                   "burst_keys = 50 > threshold 30", f"user{i % 50}", sample_device, None)
        for i in range(200):
            tx.run("INSERT INTO locks (target_kind, target, reason, created_at, created_by, "
                   "expires_at, removed_at, removed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   "user", f"user{i % 50}", "bench", now - i, "cli:root", None,
                   now if i % 2 else None, "cli:root" if i % 2 else None)
    with store._tx() as tx:
        prev, at_us = ZERO_HASH, int((now - 86400) * 1e6)
        for seq in range(1, audit + 1):
            event = ("login.ok", "session.start", "session.end", "attest.ok", "lock.add")[seq % 5]
            actor, data = f"user{seq % 50}", {"source": "10.0.0.1", "n": seq}
            h = entry_hash(seq, at_us + seq, actor, event, data, prev)
            tx.run("INSERT INTO audit (seq, at_us, actor, event, data, prev_hash, hash) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", seq, at_us + seq, actor, event,
                   json.dumps(data, sort_keys=True), prev, h)
            prev = h
    print(f"seeded {devices} devices, {audit} audit entries in "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    return {"device": sample_device, "session": "20261101T000000Z-00000010"}


class Client:
    def __init__(self, port: int, cert: Path) -> None:
        self.ctx = ssl.create_default_context(cafile=str(cert))
        self.port = port
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx, timeout=60)
        self.cookie = ""

    def request(self, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        h = {"cookie": self.cookie} if self.cookie else {}
        h.update(headers or {})
        self.conn.request(method, path, body=body, headers=h)
        r = self.conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in r.getheaders()}
        headers["set-cookie"] = "\n".join(r.headers.get_all("set-cookie") or [])
        return r.status, headers, text

    def login(self, user: str, password: str, secret: str) -> None:
        _, headers, body = self.request("GET", "/login")
        pre = headers["set-cookie"].split(";")[0]
        token = re.search(r'name="token" value="([^"]+)"', body)
        assert token is not None
        self.cookie = pre
        status, headers, _ = self.request(
            "POST", "/login", urlencode({"token": token.group(1), "user": user,
                                         "password": password,
                                         "code": totp.code_at(secret, totp.step_of(time.time()))}),
            {"content-type": "application/x-www-form-urlencoded",
             "origin": f"https://127.0.0.1:{self.port}"})
        if status != 303:
            raise RuntimeError(f"log-in failed: {status}")
        self.cookie = next(c.split(";")[0] for c in headers["set-cookie"].splitlines()
                           if c.startswith("__Host-auditbox-session="))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--audit", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        d = Path(tmp)
        make_self_signed(d / "web_cert.pem", d / "web_key.pem", "127.0.0.1")
        ed25519_openssh(d / "host_key")
        ssh_port, web_port = free_port(), free_port()
        (d / "gateway.yaml").write_text(
            f"listen:\n  address: 127.0.0.1\n  port: {ssh_port}\nreplica: bench\n"
            "audit:\n  journal: false\nupstream:\n  command: [/bin/cat]\n"
            f"web:\n  port: {web_port}\n  audit_verify_interval: 1d\n")
        store = open_store(str(d / "store.db"))
        assert isinstance(store, SqlStore)
        ids = seed(store, args.devices, args.audit)
        password, secret = "bench-" + secrets.token_urlsafe(12), totp.new_secret()
        store.add_user(User("admin", passwords.hash_password(password), secret, "root",
                            "admin", False, time.time()))
        for i in range(50):
            store.add_user(User(f"user{i}", passwords.hash_password("x" * 12), totp.new_secret(),
                                f"user{i}", "auditor", False, time.time()))
        store.close()
        with open(d / "gateway.log", "wb") as log:
            proc = subprocess.Popen([*AUDITBOX, "gateway", "serve", "--config",
                                     str(d / "gateway.yaml")], cwd=ROOT, stdout=log, stderr=log,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            wait_port(web_port, proc, "console", timeout=60)
            client = Client(web_port, d / "web_cert.pem")
            client.login("admin", password, secret)
            t0 = time.monotonic()
            while "entries intact" not in client.request("GET", "/audit")[2]:
                if time.monotonic() - t0 > 300:
                    raise RuntimeError("the first chain verification did not finish")
                time.sleep(0.5)
            took = re.search(r"through seq [0-9]+, ([0-9.]+) s\)",
                             client.request("GET", "/audit")[2])
            verify_s = float(took.group(1)) if took else float("nan")
            results = measure(client, ids, args.n)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    report(results, verify_s, args)
    return 0


PAGES = [
    ("overview", "/"),
    ("devices", "/devices"),
    ("devices page 100", "/devices?offset=5000"),
    ("devices attention", "/devices?attention=1"),
    ("devices search", "/devices?q=0000123"),
    ("device detail", "/devices/{device}"),
    ("sessions", "/sessions"),
    ("session recording page", "/sessions/{session}"),
    ("alerts", "/alerts"),
    ("alerts by rule", "/alerts?rule=slow-scrape&open=1"),
    ("audit", "/audit"),
    ("audit by event", "/audit?event=lock"),
    ("audit by actor, old", "/audit?actor=user7&before=20000"),
    ("users", "/users"),
    ("locks", "/locks"),
    ("tokens", "/tokens"),
    ("images", "/images"),
]


def measure(client: Client, ids: dict[str, str], n: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, template in PAGES:
        path = template.format(**ids)
        server: list[float] = []
        rtt: list[float] = []
        for i in range(n + 3):
            t0 = time.perf_counter()
            status, headers, _ = client.request("GET", path)
            elapsed = (time.perf_counter() - t0) * 1000
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status}")
            if i >= 3:                                  # three warm-up requests
                server.append(float(headers["server-timing"].split("dur=")[1]))
                rtt.append(elapsed)
        out[name] = {"p50_ms": round(statistics.median(server), 2),
                     "p95_ms": round(pct(server, 95), 2), "max_ms": round(max(server), 2),
                     "rtt_p95_ms": round(pct(rtt, 95), 2)}
        print(f"{name:<24} server p50 {out[name]['p50_ms']:7.2f} ms  p95 "
              f"{out[name]['p95_ms']:7.2f} ms  max {out[name]['max_ms']:7.2f} ms  "
              f"(round trip p95 {out[name]['rtt_p95_ms']:7.2f} ms)", flush=True)
    return out


def report(results: dict[str, dict[str, float]], verify_s: float,
           args: argparse.Namespace) -> None:
    worst = max(r["p95_ms"] for r in results.values())
    print(f"\nworst page p95: {worst:.2f} ms (goal < {GOAL_MS:.0f} ms): "
          f"{'met' if worst < GOAL_MS else 'NOT met'}")
    print(f"full audit chain verification ({args.audit} entries, in the background): "
          f"{verify_s:.2f} s")
    if args.no_write:
        return
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data["web_page_server_ms"] = {
        "pages": results, "worst_p95_ms": worst, "goal_p95_ms": GOAL_MS,
        "registry": {"devices": args.devices, "audit_entries": args.audit,
                     "sessions": 2000, "alerts": 1000, "locks": 200, "users": 51},
        "requests_per_page": args.n}
    data["web_audit_verify_seconds"] = {"value": verify_s, "entries": args.audit}
    tmp = RESULTS.with_name(".bench-results.web.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    sys.exit(main())
