"""A replica's metrics (Prometheus, prometheus-client) and its /metrics + /healthz listener.

One process-wide ``Metrics`` (``current()``); the server and its parts call the hooks
below, which cost a counter increment each:

    login(result)                      ok, or the refusal code (bad-password, locked, ...)
    attestation(kind, result, step)    kind: login | reattest | enroll; step on refusal
    verified(seconds)                  time the verifier took (attestation/verifier.py)
    anomaly(rule, action)              an anomaly rule fired
    throttled(wait)                    the output budget slowed a session
    lock_enforced(lock_created_at)     a lock ended a session here: delay since its commit
    lock_wakeup(source)                the lock watcher woke: notify (LISTEN) | poll

``instrument_store(store)`` times every store call (``auditbox_store_query_seconds``
by method). Gauges (live sessions, connections, attested terminals, store health) are
read from the service when scraped.

``MetricsServer`` is a small asyncio HTTP/1.0 listener on ``metrics.address:port``
(config; off unless a port is set), separate from the SSH port and the web console:
``GET /metrics`` (text exposition format 0.0.4) and ``GET /healthz`` (200 ``ok``
while the store answers, 503 otherwise, JSON body). Anything else: 404 or 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .store.base import Store, StoreError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
LOCK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0)
# Store methods that are not timed: generators (timed only when created) and close
UNTIMED = frozenset({"audit_entries", "close"})
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.logins = Counter("auditbox_logins_total",
                              "Log-in decisions (keyboard-interactive), by result: ok or the "
                              "refusal code.", ["result"], registry=r)
        self.attestations = Counter("auditbox_attestations_total",
                                    "Attestations by kind (login, reattest, enroll), result "
                                    "(ok, refused) and refusing step.",
                                    ["kind", "result", "step"], registry=r)
        self.verify_seconds = Histogram("auditbox_attestation_verify_seconds",
                                        "Time the verifier took for one piece of evidence.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.alerts = Counter("auditbox_anomaly_alerts_total",
                              "Anomaly rules fired, by rule and action.", ["rule", "action"],
                              registry=r)
        self.throttle_events = Counter("auditbox_budget_throttled_total",
                                       "Times the output budget slowed a session's output.",
                                       registry=r)
        self.throttle_seconds = Counter("auditbox_budget_throttled_seconds_total",
                                        "Seconds of output delay the budget imposed.",
                                        registry=r)
        self.store_seconds = Histogram("auditbox_store_query_seconds",
                                       "Store call latency by method (one transaction each).",
                                       ["op"], buckets=STORE_BUCKETS, registry=r)
        self.store_errors = Counter("auditbox_store_errors_total",
                                    "Store calls that failed (StoreError), by method.", ["op"],
                                    registry=r)
        self.lock_delay = Histogram("auditbox_lock_propagation_seconds",
                                    "From a lock's commit (any replica or the CLI) to a "
                                    "matching session ended on this replica.",
                                    buckets=LOCK_BUCKETS, registry=r)
        self.lock_wakeups = Counter("auditbox_lock_wakeups_total",
                                    "Lock watcher rounds that found the lock version changed, "
                                    "by what woke it: notify (PostgreSQL LISTEN) or poll.",
                                    ["source"], registry=r)
        self.live_sessions = Gauge("auditbox_live_sessions", "PTY sessions live on this "
                                   "replica.", registry=r)
        self.connections = Gauge("auditbox_connections", "SSH connections held.", registry=r)
        self.attested = Gauge("auditbox_attested_terminals",
                              "Connections whose terminal has passed attestation.", registry=r)
        self.store_up = Gauge("auditbox_store_up", "1 while the store answers (the lock "
                              "watcher's last read), else 0 (failing closed).", registry=r)
        self.listening = Gauge("auditbox_lock_listen_up", "1 while the PostgreSQL LISTEN "
                               "connection for lock notifications is up.", registry=r)
        self.started = time.time()

    # -- hooks ---------------------------------------------------------------------------
    def login(self, result: str) -> None:
        self.logins.labels(result).inc()

    def attestation(self, kind: str, result: str, step: str | None = None) -> None:
        self.attestations.labels(kind, result, step or "").inc()

    def verified(self, seconds: float) -> None:
        self.verify_seconds.observe(seconds)

    def anomaly(self, rule: str, action: str) -> None:
        self.alerts.labels(rule, action).inc()

    def throttled(self, wait: float) -> None:
        self.throttle_events.inc()
        self.throttle_seconds.inc(max(0.0, wait))

    def lock_enforced(self, lock_created_at: float) -> float:
        delay = max(0.0, time.time() - lock_created_at)
        self.lock_delay.observe(delay)
        return delay

    def lock_wakeup(self, source: str) -> None:
        self.lock_wakeups.labels(source).inc()

    def bind(self, sessions: Callable[[], int], connections: Callable[[], int],
             attested: Callable[[], int], store_ok: Callable[[], bool],
             listening: Callable[[], bool]) -> None:
        """Read these from the service at scrape time."""
        self.live_sessions.set_function(sessions)
        self.connections.set_function(connections)
        self.attested.set_function(attested)
        self.store_up.set_function(lambda: 1.0 if store_ok() else 0.0)
        self.listening.set_function(lambda: 1.0 if listening() else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_current: Metrics | None = None


def current() -> Metrics:
    """The process's Metrics (made on first use)."""
    global _current
    if _current is None:
        _current = Metrics()
    return _current


def reset() -> Metrics:
    """A fresh process-wide Metrics (tests)."""
    global _current
    _current = Metrics()
    return _current


def instrument_store(store: Store, metrics: Metrics | None = None) -> Store:
    """Time every public store method on this instance (same object returned)."""
    m = metrics or current()
    for name in dir(type(store)):
        if name.startswith("_") or name in UNTIMED:
            continue
        fn = getattr(store, name, None)
        if not callable(fn):
            continue
        setattr(store, name, _timed(fn, name, m))
    return store


def _timed(fn: Callable[..., Any], op: str, m: Metrics) -> Callable[..., Any]:
    hist = m.store_seconds.labels(op)
    errors = m.store_errors.labels(op)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except StoreError:
            errors.inc()
            raise
        finally:
            hist.observe(time.perf_counter() - t0)
    return call


# -- the listener ---------------------------------------------------------------------------
class MetricsServer:
    """GET /metrics and /healthz on a local port; ``health()`` -> (ok, details)."""

    def __init__(self, metrics: Metrics, health: Callable[[], tuple[bool, dict[str, Any]]],
                 address: str, port: int) -> None:
        self.metrics, self.health = metrics, health
        self.address, self.port = address, port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.address, self.port,
                                                  reuse_address=True, limit=MAX_REQUEST)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status, ctype, body = self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            status, ctype, body = "400 Bad Request", "text/plain", b"bad request\n"
        head_only = head.split(b" ", 1)[0] == b"HEAD"
        writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        if not head_only:
            writer.write(body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        if len(head) > MAX_REQUEST:
            return "431 Request Header Fields Too Large", "text/plain", b"too large\n"
        line = head.split(b"\r\n", 1)[0].decode("ascii", "replace").split()
        if len(line) != 3 or not line[2].startswith("HTTP/1."):
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = line[0], line[1].split("?", 1)[0]
        if target not in ("/metrics", "/healthz"):
            return "404 Not Found", "text/plain", b"not found: /metrics, /healthz\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET or HEAD only\n"
        if target == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, self.metrics.exposition()
        ok, details = self.health()
        body = json.dumps({"status": "ok" if ok else "unavailable", **details},
                          sort_keys=True).encode() + b"\n"
        return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
