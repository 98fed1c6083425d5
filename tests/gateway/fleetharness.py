"""A gateway fleet for tests and the fleet bench: replicas on one PostgreSQL, HAProxy in front.

    fleet = Fleet.create(base, pg_url, replicas=2)   # gateway.yaml per replica, one host key
    fleet.start()                                    # `auditbox gateway serve` each, haproxy
    fleet.link()                                     # a terminal's link through HAProxy
    fleet.replicas[0].link()                         # ... or straight to replica gw-a
    fleet.kill("gw-a")                               # SIGKILL one replica
    fleet.stop()

Every replica is a ``World`` (tests/gateway/gwharness.py) with its own directory and
config file, differing only in ``listen.port``, ``metrics.port`` and ``replica``: the
host key, build key, store (the PostgreSQL URL) and everything else are the same.
The upstream is a local command (``/bin/sh`` on a PTY), so a session costs one shell.
``HaProxy`` runs Debian's ``haproxy`` on ``docs/haproxy.cfg`` itself (the documented
example config), with the addresses in its environment, foreground, on loopback.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiosk.gateway_link import GatewayLink
from tests.gateway.gwharness import REPO, World, free_port, wait_port
from tests.tools import require, stop_process

HAPROXY_CFG = REPO / "docs" / "haproxy.cfg"
SHELL = ["/bin/sh"]


def replica_extra(metrics_port: int, extra: str) -> str:
    text = "attestation:\n  allow_soft: true\n" + extra
    if "anomaly:" not in extra:
        text += "anomaly:\n  rules: []\n"
    return text + f"metrics:\n  port: {metrics_port}\n"


PROXY_FROM = "  proxy_protocol_from: [127.0.0.1]\n"   # HAProxy sends PROXY v2 headers


@dataclass
class HaProxy:
    dir: Path
    port: int
    backends: list[tuple[str, int, int]]       # (name, ssh port, metrics port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def stats(self) -> Path:
        return self.dir / "stats.sock"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "AUDITBOX_FRONT": f"127.0.0.1:{self.port}",
               "AUDITBOX_HAPROXY_STATS": str(self.stats), "AUDITBOX_HAPROXY_LOG": "stderr"}
        for name, port, check in self.backends:
            var = "AUDITBOX_" + name.upper().replace("-", "_")
            env[var] = f"127.0.0.1:{port}"
            env[var + "_CHECK"] = str(check)
        return env

    @classmethod
    def start(cls, base: Path, backends: list[tuple[str, int, int]]) -> HaProxy:
        require(("haproxy",), need_root=False)
        d = base / "haproxy"
        d.mkdir(parents=True, exist_ok=True)
        hp = cls(d, free_port(), backends)
        with open(d / "haproxy.log", "ab") as log:
            hp.proc = subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG)], cwd=d,
                                       env=hp.env(), stdout=log, stderr=log)
        wait_port(hp.port, hp.proc, "haproxy")
        return hp

    def servers(self) -> dict[str, str]:
        """Backend server name -> status (UP, DOWN, ...) from the stats socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows
                if r["pxname"] == "auditbox_gateways" and r["svname"] != "BACKEND"}

    def wait_status(self, want: dict[str, str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.servers()
            if all(got.get(k) == v for k, v in want.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy servers {got}, wanted {want}")
            time.sleep(0.2)

    def log_text(self) -> str:
        p = self.dir / "haproxy.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


@dataclass
class Fleet:
    base: Path
    database: str
    replicas: list[World]
    metrics_ports: dict[str, int]
    haproxy: HaProxy | None = None
    extra: str = ""
    command: list[str] = field(default_factory=lambda: list(SHELL))

    @classmethod
    def create(cls, base: Path, database: str, replicas: int = 2, extra: str = "",
               command: list[str] | None = None,
               max_connections: int | None = None) -> Fleet:
        require(("haproxy",), need_root=False)
        cmd = command or list(SHELL)
        names = [f"gw-{chr(ord('a') + i)}" for i in range(replicas)]
        ports = {n: free_port() for n in names}
        first = World.create(base / names[0], None, database=database, command=cmd)
        worlds = [first]
        for n in names[1:]:
            w = World(base / n / "gw", None, database, host_key_line=first.host_key_line,
                      build_key=first.build_key)
            w.dir.mkdir(parents=True)
            for f in ("host_key", "build-key.pub"):
                shutil.copy2(first.dir / f, w.dir / f)
            w.port = free_port()
            worlds.append(w)
        for n, w in zip(names, worlds, strict=True):
            w.replica = n
            w.extra = replica_extra(ports[n], extra)
            w.write_config(w.extra, cmd)
            cfg = w.dir / "gateway.yaml"              # listen: what HAProxy sends
            cfg.write_text(cfg.read_text().replace(f"  port: {w.port}\n",
                                                   f"  port: {w.port}\n{PROXY_FROM}", 1))
            if max_connections is not None:
                cfg = w.dir / "gateway.yaml"
                cfg.write_text(cfg.read_text().replace(
                    f"  port: {w.port}\n",
                    f"  port: {w.port}\n  max_connections: {max_connections}\n", 1))
        return cls(base, database, worlds, ports, extra=extra, command=cmd)

    def replica(self, name: str) -> World:
        return next(w for w in self.replicas if w.replica == name)

    def start(self) -> None:
        for w in self.replicas:
            w.start()
        for w in self.replicas:
            wait_port(self.metrics_ports[w.replica], w.proc, "metrics")  # type: ignore[arg-type]
        self.haproxy = HaProxy.start(self.base, [(w.replica, w.port,
                                                  self.metrics_ports[w.replica])
                                                 for w in self.replicas])
        self.haproxy.wait_status({w.replica: "UP" for w in self.replicas})

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        w = self.replica(name)
        assert w.proc is not None
        w.proc.send_signal(sig)
        w.proc.wait(10)
        w.proc = None

    def restart(self, name: str) -> None:
        w = self.replica(name)
        w.start()
        wait_port(self.metrics_ports[name], w.proc, "metrics")  # type: ignore[arg-type]

    def link(self, timeout: float = 15) -> GatewayLink:
        assert self.haproxy is not None
        return GatewayLink("127.0.0.1", self.haproxy.port, self.replicas[0].host_key_line,
                           timeout=timeout)

    def metrics(self, name: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_ports[name]}/metrics",
                                    timeout=10) as r:
            text: str = r.read().decode()
        return text

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for w in self.replicas:
            w.stop()

    def logs(self) -> dict[str, Any]:
        out: dict[str, Any] = {w.replica: w.log_text()[-3000:] for w in self.replicas}
        if self.haproxy is not None:
            out["haproxy"] = self.haproxy.log_text()[-3000:]
        return out


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text format (0.0 if absent)."""
    want = labels or {}
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        got = dict(item.split("=", 1) for item in rest.rstrip("}").split(",") if "=" in item)
        got = {k: v.strip('"') for k, v in got.items()}
        if all(got.get(k) == v for k, v in want.items()):
            total += float(value)
    return total
