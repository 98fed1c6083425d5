"""/metrics counts what a session does: output-budget throttling and anomaly alerts by rule,
live sessions while one is open (one replica, SQLite store, local-command upstream)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.fleetharness import metric_value
from tests.gateway.gwharness import World, free_port, read_until, wait_port


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, int]]:
    port = free_port()
    w = World.create(tmp_path_factory.mktemp("metered"), None, command=["/bin/sh"], extra=(
        "attestation:\n  allow_soft: true\n"
        "budget:\n  rate: 8KiB\n  burst: 8KiB\n"
        "anomaly:\n  rules:\n"
        "    - {id: big-output, metric: output_bytes, action: alert, above: 10000}\n"
        f"metrics:\n  port: {port}\n"))
    w.start()
    assert w.proc is not None
    wait_port(port, w.proc, "metrics")
    try:
        yield w, port
    finally:
        w.stop()


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        text: str = r.read().decode()
    return text


def test_throttling_alerts_and_live_sessions_are_counted(metered: tuple[World, int],
                                                         tmp_path: Path) -> None:
    w, port = metered
    link, chan, acc = w.attested_shell("metered")
    assert metric_value(scrape(port), "auditbox_live_sessions") == 1
    chan.send(b"head -c 40000 /dev/zero | tr '\\0' x; echo; echo done-$((3*3))\n")
    read_until(chan, b"done-9", timeout=60)
    w.wait_event("anomaly", acc.name)
    text = scrape(port)
    assert metric_value(text, "auditbox_budget_throttled_total") >= 1
    assert metric_value(text, "auditbox_budget_throttled_seconds_total") > 0
    assert metric_value(text, "auditbox_anomaly_alerts_total",
                        {"rule": "big-output", "action": "alert"}) == 1
    link.close()
    w.wait_event("session.end", acc.name)
    assert metric_value(scrape(port), "auditbox_live_sessions") == 0
    assert '"status": "ok"' in scrape(port, "/healthz")
