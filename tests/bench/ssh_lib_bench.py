"""Which SSH library for the gateway: paramiko vs asyncssh, each as the SERVER.

For each library a server process listens on a free loopback port with an Ed25519
host key, curve25519 key exchange, AES-GCM and one keyboard-interactive prompt (the
gateway's own algorithm set as far as both libraries offer it). Clients run in a
separate process (asyncssh, the same client code for both servers) and measure:

- handshake rate: TCP connect -> key exchange -> keyboard-interactive authenticated
  -> close, ``--rate-n`` connections with ``--concurrency`` in flight, in conn/s;
- hold: ``--hold`` idle authenticated connections opened and kept; then the server's
  resident memory (VmRSS), thread count and CPU use over ``--idle`` seconds of idleness
  (utime + stime from /proc, as a share of one core).

Run: python3 tests/bench/ssh_lib_bench.py [--hold 1000] [--rate-n 400] [--no-write]
Merges ``ssh_lib_<lib>_<metric>`` entries into bench-results.json, each with the
other library's figure as its baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench-results.json"
LIBS = ("asyncssh", "paramiko")
PASSWORD = "bench-password"


# -- servers (run in their own process: --serve LIB) ---------------------------------
def _write_host_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def serve_asyncssh(host_key: Path) -> None:
    import asyncssh

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def kbdint_auth_supported(self) -> bool:
            return True

        def get_kbdint_challenge(self, username: str, lang: str,
                                 submethods: str) -> tuple[str, str, str, list[tuple[str, bool]]]:
            return ("bench", "", "", [("Password: ", False)])

        def validate_kbdint_response(self, username: str, responses: list[str]) -> bool:
            return list(responses) == [PASSWORD]

    async def main() -> None:
        server = await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[str(host_key)],
            kex_algs=["curve25519-sha256", "curve25519-sha256@libssh.org"],
            encryption_algs=["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"],
            mac_algs=["hmac-sha2-256-etm@openssh.com"], compression_algs=["none"],
            password_auth=False, public_key_auth=False, kbdint_auth=True,
            login_timeout=120, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_paramiko(host_key: Path) -> None:
    import paramiko

    key = paramiko.Ed25519Key.from_private_key_file(str(host_key))

    class Server(paramiko.ServerInterface):
        def get_allowed_auths(self, username: str) -> str:
            return "keyboard-interactive"

        def check_auth_interactive(self, username: str,
                                   submethods: str) -> paramiko.InteractiveQuery:
            q = paramiko.InteractiveQuery("bench", "")
            q.add_prompt("Password: ", False)
            return q

        def check_auth_interactive_response(self, responses: list[str]) -> int:
            ok = list(responses) == [PASSWORD]
            return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(sock.getsockname()[1], flush=True)
    transports = []
    while True:
        conn, _ = sock.accept()
        t = paramiko.Transport(conn)
        t.get_security_options().kex = ("curve25519-sha256@libssh.org",)
        t.get_security_options().ciphers = ("aes256-gcm@openssh.com", "aes128-gcm@openssh.com")
        t.get_security_options().digests = ("hmac-sha2-256-etm@openssh.com",)
        t.add_server_key(key)
        try:
            t.start_server(server=Server())   # one thread per connection
        except (paramiko.SSHException, OSError):
            t.close()
            continue
        transports.append(t)


# -- clients (run in their own process: --client rate|hold) -------------------------
async def _connect(port: int) -> Any:
    import asyncssh

    return await asyncssh.connect(
        "127.0.0.1", port, username="bench", known_hosts=None,
        password=PASSWORD, preferred_auth=["keyboard-interactive"],
        kex_algs=["curve25519-sha256", "curve25519-sha256@libssh.org"],
        encryption_algs=["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"],
        mac_algs=["hmac-sha2-256-etm@openssh.com"], compression_algs=["none"],
        client_keys=None, agent_path=None, keepalive_interval=0, login_timeout=120)


async def client_rate(port: int, n: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with sem:
            try:
                conn = await _connect(port)
                conn.close()
                await conn.wait_closed()
            except Exception:
                failures += 1

    for _ in range(min(10, n)):  # warm up
        await one()
    failures = 0
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    dt = time.perf_counter() - t0
    print(json.dumps({"rate": (n - failures) / dt, "failures": failures}), flush=True)


async def client_hold(port: int, n: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    conns: list[Any] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with sem:
            try:
                conns.append(await _connect(port))
            except Exception:
                failures += 1

    await asyncio.gather(*(one() for _ in range(n)))
    print(json.dumps({"held": len(conns), "failures": failures}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for c in conns:
        c.close()


# -- the driver ----------------------------------------------------------------------
def _proc_stats(pid: int) -> tuple[int, int, float]:
    """(VmRSS bytes, threads, CPU seconds) of a process, from /proc."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, threads, cpu


def _client(mode: str, port: int, n: int, concurrency: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--client", mode, "--port", str(port), "--n", str(n),
         "--concurrency", str(concurrency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def measure(lib: str, host_key: Path, hold: int, rate_n: int, idle: float) -> dict[str, float]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", lib,
                               "--host-key", str(host_key)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        rss0, threads0, _ = _proc_stats(server.pid)
        print(f"  {lib}: handshake rate, {rate_n} connections ...", flush=True)
        rate_p = _client("rate", port, rate_n, 8)
        out, _ = rate_p.communicate(timeout=900)
        rate = json.loads(out.strip().splitlines()[-1])
        print(f"  {lib}: opening {hold} idle authenticated connections ...", flush=True)
        hold_p = _client("hold", port, hold, 16)
        assert hold_p.stdout is not None and hold_p.stdin is not None
        line = hold_p.stdout.readline()
        held = json.loads(line)
        time.sleep(2.0)
        _, _, cpu_a = _proc_stats(server.pid)
        t_a = time.monotonic()
        time.sleep(idle)
        rss, threads, cpu_b = _proc_stats(server.pid)
        idle_cpu = (cpu_b - cpu_a) / (time.monotonic() - t_a) * 100.0
        hold_p.stdin.write("\n")
        hold_p.stdin.flush()
        hold_p.wait(timeout=300)
        return {
            "handshakes_per_s": round(rate["rate"], 1),
            "handshake_failures": rate["failures"],
            "held": held["held"],
            "hold_failures": held["failures"],
            "rss_mib": round(rss / 2**20, 1),
            "rss_per_conn_kib": round((rss - rss0) / max(1, held["held"]) / 1024, 1),
            "threads": threads,
            "threads_at_start": threads0,
            "idle_cpu_percent": round(idle_cpu, 2),
        }
    finally:
        server.kill()
        server.wait()


UNITS = {"handshakes_per_s": "conn/s", "held": "connections", "rss_mib": "MiB",
         "rss_per_conn_kib": "KiB", "threads": "threads", "idle_cpu_percent": "% of one core"}


def merge_results(results: dict[str, dict[str, float]]) -> None:
    try:
        data = json.loads(RESULTS.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    for lib, figures in results.items():
        other = next(x for x in results if x != lib)
        for metric, unit in UNITS.items():
            data[f"ssh_lib_{lib}_{metric}"] = {
                "value": figures[metric], "unit": unit,
                "baseline": results[other][metric], "baseline_name": f"{other} server",
            }
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".bench-results.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, RESULTS)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--hold", type=int, default=1000)
    p.add_argument("--rate-n", type=int, default=400)
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--serve", choices=LIBS, help=argparse.SUPPRESS)
    p.add_argument("--host-key", help=argparse.SUPPRESS)
    p.add_argument("--client", choices=("rate", "hold"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        (serve_asyncssh if args.serve == "asyncssh" else serve_paramiko)(Path(args.host_key))
        return 0
    if args.client:
        coro = client_rate if args.client == "rate" else client_hold
        asyncio.run(coro(args.port, args.n, args.concurrency))
        return 0
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        host_key = Path(tmp) / "host_key"
        _write_host_key(host_key)
        threading.stack_size(0)
        for lib in LIBS:
            results[lib] = measure(lib, host_key, args.hold, args.rate_n, args.idle)
    rows = [("handshakes_per_s", "handshake rate (conn/s)"),
            ("held", f"idle authenticated connections held (of {args.hold})"),
            ("rss_mib", "server RSS while holding (MiB)"),
            ("rss_per_conn_kib", "RSS per connection (KiB)"),
            ("threads", "server threads while holding"),
            ("idle_cpu_percent", f"server CPU while idle, {args.idle:.0f} s (% of a core)")]
    print(f"{'':<52} {'asyncssh':>10} {'paramiko':>10}")
    for key, label in rows:
        print(f"{label:<52} {results['asyncssh'][key]:>10} {results['paramiko'][key]:>10}")
    for lib in LIBS:
        f = results[lib]
        if f["handshake_failures"] or f["hold_failures"]:
            print(f"{lib}: {f['handshake_failures']} handshake and {f['hold_failures']} hold "
                  "failures")
    if not args.no_write:
        merge_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
