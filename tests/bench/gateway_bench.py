"""make bench (gateway): sessions held, keystroke round trip, login-to-prompt, exfiltration.

Everything runs on loopback against servers started here: a real OpenSSH sshd as the
harness and `auditbox gateway serve` in its own process (SQLite store, soft
terminals). Terminals are kiosk/gateway_link.py clients (paramiko, as on the
terminal) in this process.

- sessions held: ``--sessions`` attested PTY sessions opened and held at once;
  gateway RSS before and after, per session (baseline: the goal of 500);
- keystroke round trip: one byte typed, its echo back, ``--keys`` times, p50/p99,
  through the gateway and over a direct OpenSSH session to the same sshd with the
  same client (baseline: the direct session; goal: < 2 ms added at p99);
- login to prompt: TCP connect -> password + code -> attestation -> PTY -> the shell's
  prompt, median of ``--logins`` (baseline: direct OpenSSH log-in to a prompt);
- exfiltrating 1 GiB through one session: measured throughput of a bulk stream with
  the budget effectively off, extrapolated to 1 GiB, beside the default budget:
  the sustained rate alone (measured over ``--budget-seconds``) and with the daily
  total (64 MiB a day).

Run: python3 tests/bench/gateway_bench.py [--sessions 500] [--no-write]
Merges gateway_* entries into bench-results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import paramiko  # noqa: E402

from gateway import budget  # noqa: E402
from kiosk.gateway_link import BackendAgent  # noqa: E402
from tests.gateway.gwharness import Sshd, World, fresh_world  # noqa: E402

RESULTS = ROOT / "bench-results.json"
GiB = 1 << 30
PROMPT = b"# "


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def read_until(chan: paramiko.Channel, marker: bytes, timeout: float = 30) -> bytes:
    chan.settimeout(timeout)
    buf = b""
    while marker not in buf:
        data = chan.recv(65536)
        if not data:
            raise RuntimeError(f"closed before {marker!r}: {buf[-200:]!r}")
        buf += data
    return buf


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Terminal:
    """One logged-in, attested terminal with its shell."""

    def __init__(self, world: World, agent: BackendAgent) -> None:
        acc = world.add_user()
        self.t0 = time.perf_counter()
        self.link = world.link()
        self.link.login(acc.name, acc.password, acc.code())
        self.link.attest(agent)
        self.chan = self.link.open_shell("xterm", 80, 24)
        read_until(self.chan, PROMPT)
        self.login_to_prompt = time.perf_counter() - self.t0

    def close(self) -> None:
        self.link.close()


def direct_shell(sshd: Sshd) -> tuple[paramiko.SSHClient, paramiko.Channel, float]:
    t0 = time.perf_counter()
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect("127.0.0.1", sshd.port, username="root", key_filename=str(sshd.client_key),
              look_for_keys=False, allow_agent=False)
    chan = c.invoke_shell("xterm", 80, 24)
    read_until(chan, PROMPT)
    return c, chan, time.perf_counter() - t0


def keystroke_rtts(chan: paramiko.Channel, n: int) -> list[float]:
    """Type one character at a time into `cat` and time its echo (ms)."""
    chan.send(b"stty -echoctl; cat > /dev/null\n")
    time.sleep(0.5)
    chan.settimeout(0.2)
    try:
        while chan.recv(65536):
            pass
    except TimeoutError:
        pass
    chan.settimeout(10)
    out = []
    for i in range(n):
        ch = b"abcdefghij"[i % 10:i % 10 + 1]
        t0 = time.perf_counter()
        chan.send(ch)
        got = b""
        while ch not in got:
            got += chan.recv(64)
        out.append((time.perf_counter() - t0) * 1000)
    chan.send(b"\x03")
    return out


def stream_rate(chan: paramiko.Channel, seconds: float, nbytes: int,
                skip: int = 0) -> tuple[float, int]:
    """Bytes/s of a bulk stream from the harness, timed after its first ``skip`` bytes
    (the budget's burst) for at most ``seconds``."""
    chan.send(f"head -c {nbytes} /dev/zero | tr '\\0' 'x'; echo; echo DONE$((1+1))\n".encode())
    chan.settimeout(60)
    total = 0
    tail = b""
    t0: float | None = None
    counted = 0
    while True:
        data = chan.recv(1 << 20)
        if not data:
            break
        total += len(data)
        tail = (tail + data)[-64:]
        if t0 is None:
            if total >= skip:
                t0, counted = time.perf_counter(), 0
            continue
        counted += len(data)
        if b"DONE2" in tail or time.perf_counter() - t0 > seconds:
            break
    assert t0 is not None
    return counted / (time.perf_counter() - t0), total


def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="auditbox-gw-bench-"))
    sshd = Sshd.start(base, extra="MaxStartups 200:30:400\n")
    out: dict[str, Any] = {}
    try:
        if "held" in args.parts:
            out["held"] = held(args, base, sshd)
        if "rtt" in args.parts:
            out.update(latency(args, base, sshd))
        if "exfil" in args.parts:
            out["exfil"] = exfil(args, base, sshd)
    finally:
        sshd.stop()
    return out


def held(args: argparse.Namespace, base: Path, sshd: Sshd) -> dict[str, Any]:
    w = fresh_world(base / "held", sshd)
    agent = w.enroll_soft("bench")
    assert w.proc is not None
    time.sleep(1)
    rss0 = rss(w.proc.pid)
    print(f"gateway: opening {args.sessions} attested sessions ...", flush=True)
    terms: list[Terminal] = []
    failures = 0
    with ThreadPoolExecutor(max_workers=6) as pool:
        futs = [pool.submit(Terminal, w, agent) for _ in range(args.sessions)]
        for i, f in enumerate(futs, 1):
            try:
                terms.append(f.result())
            except Exception as exc:  # counted and reported
                failures += 1
                if failures <= 3:
                    print(f"  session failed: {exc}", flush=True)
            if i % 100 == 0:
                print(f"  {i}/{args.sessions}", flush=True)
    time.sleep(2)
    rss1 = rss(w.proc.pid)
    with w.store() as s:
        live = len(s.list_sessions(live_only=True, limit=100000))
    for t in terms:
        t.close()
    w.stop()
    print(f"  held {live}, gateway RSS {rss1 / 2**20:.0f} MiB", flush=True)
    return {"sessions": live, "failures": failures, "rss_mib": round(rss1 / 2**20, 1),
            "per_session_kib": round((rss1 - rss0) / max(1, live) / 1024, 1)}


def latency(args: argparse.Namespace, base: Path, sshd: Sshd) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # -- one quiet gateway for latency and throughput ---------------------------------------
    w = fresh_world(base / "rtt", sshd)
    agent = w.enroll_soft("rtt")
    login_times = []
    direct_login = []
    for _ in range(args.logins):
        t = Terminal(w, agent)
        login_times.append(t.login_to_prompt)
        t.close()
        c, _, dt = direct_shell(sshd)
        direct_login.append(dt)
        c.close()
    t = Terminal(w, agent)
    via = keystroke_rtts(t.chan, args.keys)
    t.close()
    c, chan, _ = direct_shell(sshd)
    direct = keystroke_rtts(chan, args.keys)
    c.close()
    out["rtt"] = {"gw_p50": pct(via, 50), "gw_p99": pct(via, 99),
                  "direct_p50": pct(direct, 50), "direct_p99": pct(direct, 99)}
    out["login"] = {"gw_median_ms": statistics.median(login_times) * 1000,
                    "direct_median_ms": statistics.median(direct_login) * 1000}
    w.stop()
    return out


def exfil(args: argparse.Namespace, base: Path, sshd: Sshd) -> dict[str, Any]:
    # the default budget: its sustained rate, measured
    w = fresh_world(base / "budget", sshd)
    agent = w.enroll_soft("budget")
    t = Terminal(w, agent)
    rate_default, _ = stream_rate(t.chan, args.budget_seconds, 64 << 20,
                                  skip=budget.DEFAULT_BURST + (16 << 10))
    t.close()
    w.stop()

    # -- the budget off (rate and burst at their maximum) -------------------------------------
    w = fresh_world(base / "nobudget", sshd,
                    extra="budget:\n  rate: 1GiB\n  burst: 1GiB\n  daily: 1TiB\n")
    agent = w.enroll_soft("fast")
    t = Terminal(w, agent)
    rate_free, moved = stream_rate(t.chan, 120, 256 << 20, skip=1 << 20)
    t.close()
    w.stop()
    d = budget.DEFAULT_DAILY
    return {
        "no_budget_s": GiB / rate_free, "no_budget_rate": rate_free, "moved": moved,
        "default_rate_measured": rate_default,
        "default_sustained_s": (GiB - budget.DEFAULT_BURST) / budget.DEFAULT_RATE,
        "default_with_daily_days": GiB / d,
    }


def merge(results: dict[str, dict[str, Any]]) -> None:
    try:
        data = json.loads(RESULTS.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data.update(results)
    fd, tmp = tempfile.mkstemp(dir=RESULTS.parent, prefix=".bench-results.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, RESULTS)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--logins", type=int, default=20)
    p.add_argument("--budget-seconds", type=float, default=20.0)
    p.add_argument("--parts", default="held,rtt,exfil",
                   help="which measurements: held, rtt (round trip and login), exfil")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    r = bench(args)
    rows: list[tuple[str, str, str]] = []
    results: dict[str, dict[str, Any]] = {}
    if "held" in r:
        h = r["held"]
        rows += [("concurrent sessions held", f"{h['sessions']}", f"goal {args.sessions}"),
                 ("gateway RSS holding them (MiB)", f"{h['rss_mib']}", ""),
                 ("memory per session (KiB)", f"{h['per_session_kib']}", "")]
        results["gateway_sessions_held"] = {"value": h["sessions"], "unit": "sessions",
                                            "baseline": args.sessions, "baseline_name": "goal",
                                            "failures": h["failures"]}
        results["gateway_memory_per_session"] = {"value": h["per_session_kib"], "unit": "KiB",
                                                 "rss_mib": h["rss_mib"]}
    if "rtt" in r:
        k, lg = r["rtt"], r["login"]
        rows += [
            ("keystroke round trip p50 (ms)", f"{k['gw_p50']:.2f}",
             f"direct {k['direct_p50']:.2f}"),
            ("keystroke round trip p99 (ms)", f"{k['gw_p99']:.2f}",
             f"direct {k['direct_p99']:.2f}"),
            ("added at p99 (ms, goal < 2)", f"{k['gw_p99'] - k['direct_p99']:.2f}", ""),
            ("login to prompt incl. attestation (ms)", f"{lg['gw_median_ms']:.0f}",
             f"direct OpenSSH {lg['direct_median_ms']:.0f}")]
        for q in ("50", "99"):
            results[f"gateway_keystroke_rtt_p{q}"] = {
                "value": round(k[f"gw_p{q}"], 3), "unit": "ms",
                "baseline": round(k[f"direct_p{q}"], 3),
                "baseline_name": "direct OpenSSH session, same client and sshd"}
        results["gateway_login_to_prompt"] = {
            "value": round(lg["gw_median_ms"], 1), "unit": "ms",
            "baseline": round(lg["direct_median_ms"], 1),
            "baseline_name": "direct OpenSSH log-in (key) to the prompt"}
    if "exfil" in r:
        x = r["exfil"]
        rows += [
            ("1 GiB out, no budget (s)", f"{x['no_budget_s']:.1f}",
             f"{x['no_budget_rate'] / 2**20:.1f} MiB/s measured"),
            ("1 GiB out, default rate only (h)", f"{x['default_sustained_s'] / 3600:.1f}",
             f"measured {x['default_rate_measured'] / 1024:.1f} KiB/s"),
            ("1 GiB out, with the daily total (days)", f"{x['default_with_daily_days']:.0f}",
             "64 MiB per user per day")]
        results["gateway_exfil_1gib"] = {
            "value": round(x["default_sustained_s"], 0), "unit": "s",
            "baseline": round(x["no_budget_s"], 1),
            "baseline_name": "same session, budget off",
            "with_daily_total_days": round(x["default_with_daily_days"], 1),
            "default_rate_measured_bps": round(x["default_rate_measured"])}
    for label, value, base in rows:
        print(f"{label:<42} {value:>10}   {base}")
    if not args.no_write:
        merge(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
