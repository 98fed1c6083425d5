"""Anomaly detection on a live session: metrics, rules, actions.

``SessionMetrics`` is fed every input and output chunk with its time and keeps the
per-session metrics below. ``Detector`` evaluates the configured rules against them
(about once a second, and once at log-in for ``login_hour``); each rule fires at most
once per session, and its action is ``log`` (audit entry), ``alert`` (audit entry and
an alert in the store) or ``lock`` (alert, a lock on the user, the session ends).

A rule compares one metric with
- ``above: N`` / ``below: N``: an absolute threshold;
- ``outside: [FROM, TO]``: for ``login_hour``, hours FROM..TO-1 are normal;
- ``above_baseline: F``: F times the user's own rolling mean of that metric over
  ``anomaly.baseline_days`` days (sessions of the last days; at least
  ``min_sessions`` of them, default 5, before the rule can fire).

Rationale of each metric and default threshold: docs/anomaly.md.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

METRICS: dict[str, str] = {
    "keys_per_second": "peak keystrokes in any one-second window",
    "burst_keys": "peak keystrokes arriving within 100 ms (paste-like bursts)",
    "inter_key_ms": "median time between keystrokes (ms) over the last 50 keys",
    "output_bytes": "bytes sent to the terminal in this session",
    "output_rate_peak": "peak output rate (bytes/s) over any 10-second window",
    "output_rate_10m": "mean output rate (bytes/s) over the last 10 minutes, 0 before that",
    "dense_output_share": "share of the last 64 KiB of output in base64/hex-looking lines "
                          "(0 until 16 KiB of output)",
    "idle_seconds": "seconds since the last keystroke",
    "session_seconds": "length of the session so far",
    "login_hour": "hour of the log-in (0-23) in anomaly.timezone",
}
ACTIONS = ("log", "alert", "lock")
SEVERITY = {"log": "info", "alert": "warning", "lock": "critical"}
CONDITIONS = ("above", "below", "outside", "above_baseline")
DENSE_WINDOW = 64 * 1024
DENSE_MIN = 16 * 1024
SCRAPE_WINDOW = 600.0
_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_ESC_SEQ = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|O.|.)", re.S)
_B64_LINE = re.compile(rb"[A-Za-z0-9+/=_-]{32,}")
_HEX_LINE = re.compile(rb"(?:[0-9a-fA-F]{2}[ :]?){16,}")


@dataclass(frozen=True)
class Rule:
    id: str
    metric: str
    action: str
    above: float | None = None
    below: float | None = None
    outside: tuple[int, int] | None = None
    above_baseline: float | None = None
    min_sessions: int = 5
    description: str = ""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric: unknown metric {self.metric!r} "
                             f"(allowed: {', '.join(METRICS)})")
        if self.action not in ACTIONS:
            raise ValueError(f"action: {self.action!r} (allowed: {', '.join(ACTIONS)})")
        given = [c for c in CONDITIONS if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one condition is needed (allowed: {', '.join(CONDITIONS)})")
        if self.outside is not None:
            lo, hi = self.outside
            if self.metric != "login_hour" or not (0 <= lo <= 23 and 0 <= hi <= 24):
                raise ValueError("outside: only for login_hour, hours 0..24")

    @property
    def condition(self) -> str:
        return next(c for c in CONDITIONS if getattr(self, c) is not None)


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("keystroke-injection", "keys_per_second", "lock", above=40,
         description="more keys in one second than a person types (a fake HID)"),
    Rule("paste-burst", "burst_keys", "alert", above=30,
         description="30+ keys within 100 ms: a paste or an injector (the kiosk has no clipboard)"),
    Rule("bulk-encoded-output", "dense_output_share", "lock", above=0.5,
         description="most of the recent output is base64/hex: data encoded for copying"),
    Rule("slow-scrape", "output_rate_10m", "alert", above=2048,
         description="a steady 2 KiB/s for ten minutes: 600 screens, more than anyone reads"),
    Rule("output-above-baseline", "output_bytes", "alert", above_baseline=10,
         description="ten times the user's usual output per session"),
    Rule("off-hours-login", "login_hour", "alert", outside=(7, 20),
         description="log-in outside 07:00-20:00"),
    Rule("long-session", "session_seconds", "log", above=12 * 3600,
         description="a session longer than twelve hours"),
)


def count_keys(data: bytes) -> int:
    """Keystrokes in an input chunk: an escape sequence (arrow, function key) is one."""
    return len(_ESC_SEQ.sub(b"\x1b", data))


def _mixed(run: bytes) -> bool:
    """Base64 of random data mixes digits, upper and lower case; words and paths do not."""
    return bool(re.search(rb"[0-9]", run) and re.search(rb"[A-Z]", run)
                and re.search(rb"[a-z]", run))


def dense_bytes(data: bytes) -> int:
    """Bytes of ``data`` in base64- or hex-looking runs (escape sequences removed)."""
    text = _ANSI.sub(b"", data) if b"\x1b" in data else data
    n = sum(len(m.group(0)) for m in _B64_LINE.finditer(text) if _mixed(m.group(0)))
    if not n:
        n = sum(len(m.group(0)) for m in _HEX_LINE.finditer(text))
    return min(n, len(data))


class SessionMetrics:
    """The metrics of one session, updated as data passes (``now`` = monotonic)."""

    def __init__(self, started: float, login_hour: int) -> None:
        self.started = started
        self.login_hour = login_hour
        self.last_key = started
        self._keys: deque[float] = deque()          # key times within the last second
        self._burst: deque[tuple[float, int]] = deque()
        self._gaps: deque[float] = deque(maxlen=50)
        self._out: deque[tuple[float, int]] = deque()   # (time, bytes) for 10 minutes
        self._out_sum = 0
        self._out10: deque[tuple[float, int]] = deque()  # the same for 10 seconds
        self._out10_sum = 0
        self._dense: deque[tuple[int, int]] = deque()   # (bytes, dense bytes)
        self._dense_total = [0, 0]
        self.peak: dict[str, float] = {"keys_per_second": 0, "burst_keys": 0,
                                       "output_rate_peak": 0}
        self.output_bytes = 0
        self.input_keys = 0

    def on_input(self, now: float, data: bytes) -> None:
        keys = count_keys(data)
        if not keys:
            return
        self.input_keys += keys
        if self.input_keys > keys:
            self._gaps.append((now - self.last_key) * 1000.0)
        self.last_key = now
        for _ in range(keys):
            self._keys.append(now)
        while self._keys and now - self._keys[0] >= 1.0:
            self._keys.popleft()
        self.peak["keys_per_second"] = max(self.peak["keys_per_second"], len(self._keys))
        self._burst.append((now, keys))
        while self._burst and now - self._burst[0][0] > 0.1:
            self._burst.popleft()
        self.peak["burst_keys"] = max(self.peak["burst_keys"], sum(k for _, k in self._burst))

    def on_output(self, now: float, data: bytes) -> None:
        n = len(data)
        self.output_bytes += n
        self._out.append((now, n))
        self._out10.append((now, n))
        self._out_sum += n
        self._out10_sum += n
        while self._out and now - self._out[0][0] > SCRAPE_WINDOW:
            self._out_sum -= self._out.popleft()[1]
        while self._out10 and now - self._out10[0][0] > 10.0:
            self._out10_sum -= self._out10.popleft()[1]
        if now - self.started >= 10:
            self.peak["output_rate_peak"] = max(self.peak["output_rate_peak"],
                                                self._out10_sum / 10.0)
        d = dense_bytes(data)
        self._dense.append((n, d))
        self._dense_total[0] += n
        self._dense_total[1] += d
        while self._dense and self._dense_total[0] - self._dense[0][0] >= DENSE_WINDOW:
            b, db = self._dense.popleft()
            self._dense_total[0] -= b
            self._dense_total[1] -= db

    def values(self, now: float) -> dict[str, float]:
        gaps = sorted(self._gaps)
        rate_10m = 0.0
        if now - self.started >= SCRAPE_WINDOW:
            while self._out and now - self._out[0][0] > SCRAPE_WINDOW:
                self._out_sum -= self._out.popleft()[1]
            rate_10m = self._out_sum / SCRAPE_WINDOW
        total, dense = self._dense_total
        return {
            "keys_per_second": float(self.peak["keys_per_second"]),
            "burst_keys": float(self.peak["burst_keys"]),
            "inter_key_ms": gaps[len(gaps) // 2] if gaps else 0.0,
            "output_bytes": float(self.output_bytes),
            "output_rate_peak": float(self.peak["output_rate_peak"]),
            "output_rate_10m": rate_10m,
            "dense_output_share": dense / total if total >= DENSE_MIN else 0.0,
            "idle_seconds": now - self.last_key,
            "session_seconds": now - self.started,
            "login_hour": float(self.login_hour),
        }


@dataclass(frozen=True)
class Trigger:
    rule: Rule
    value: float
    threshold: float
    detail: str


@dataclass
class Detector:
    rules: tuple[Rule, ...]
    baseline: dict[str, Any] = field(default_factory=dict)
    fired: set[str] = field(default_factory=set)
    score: float = 0.0

    def evaluate(self, values: dict[str, float]) -> list[Trigger]:
        """Rules that fire now (each once per session). Updates ``score``: the highest
        value/threshold ratio over all rules (1.0 = at a threshold)."""
        out: list[Trigger] = []
        means = baseline_means(self.baseline)
        score = 0.0
        for rule in self.rules:
            value = values[rule.metric]
            hit, threshold = _check(rule, value, means)
            if threshold and rule.condition in ("above", "above_baseline"):
                score = max(score, value / threshold)
            elif hit:
                score = max(score, 1.0)
            if hit and rule.id not in self.fired:
                self.fired.add(rule.id)
                out.append(Trigger(rule, value, threshold, _describe(rule, value, threshold)))
        self.score = round(min(score, 10.0), 3)
        return out


def _check(rule: Rule, value: float, means: dict[str, tuple[float, int]]) -> tuple[bool, float]:
    if rule.above is not None:
        return value > rule.above, float(rule.above)
    if rule.below is not None:
        return value < rule.below, float(rule.below)
    if rule.outside is not None:
        lo, hi = rule.outside
        inside = lo <= value < hi if lo <= hi else (value >= lo or value < hi)
        return not inside, 0.0
    assert rule.above_baseline is not None
    mean, n = means.get(rule.metric, (0.0, 0))
    if n < rule.min_sessions or mean <= 0:
        return False, 0.0
    threshold = rule.above_baseline * mean
    return value > threshold, threshold


def _describe(rule: Rule, value: float, threshold: float) -> str:
    if rule.outside is not None:
        lo, hi = rule.outside
        return f"{rule.metric} = {value:g}, outside {lo:02d}:00-{hi:02d}:00"
    what = "the user's baseline x" + f"{rule.above_baseline:g}" if rule.above_baseline else (
        "threshold")
    op = "<" if rule.below is not None else ">"
    return f"{rule.metric} = {value:.6g} {op} {what} {threshold:.6g}"


# -- the user's rolling baseline (stored with Store.get_baseline/put_baseline) -----------
def baseline_means(baseline: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """metric -> (mean per session, sessions) over the days the baseline holds."""
    sums: dict[str, float] = {}
    sessions = 0
    for day in baseline.get("days", {}).values():
        sessions += int(day.get("sessions", 0))
        for k, v in day.get("sums", {}).items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: (v / sessions, sessions) for k, v in sums.items()} if sessions else {}


def updated_baseline(baseline: dict[str, Any], values: dict[str, float], day: str,
                     days: int) -> dict[str, Any]:
    """The baseline with one finished session added to ``day`` (YYYY-MM-DD) and days
    older than the last ``days`` dropped."""
    kept = dict(sorted(baseline.get("days", {}).items())[-(days - 1):]) if days > 1 else {}
    if day in baseline.get("days", {}):
        kept[day] = baseline["days"][day]
    entry = kept.get(day, {"sessions": 0, "sums": {}})
    sums = dict(entry.get("sums", {}))
    for k, v in values.items():
        if k in METRICS and math.isfinite(v):
            sums[k] = round(float(sums.get(k, 0.0)) + v, 3)
    kept[day] = {"sessions": int(entry.get("sessions", 0)) + 1, "sums": sums}
    return {"version": 1, "days": dict(sorted(kept.items())[-days:])}


def login_hour(at: float, tz: str = "UTC") -> int:
    """Hour of ``at`` (POSIX seconds) in the IANA time zone ``tz``."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(at, ZoneInfo(tz)).hour


def rule_from_mapping(obj: dict[str, Any]) -> Rule:
    """Build a Rule from a config mapping (keys: id, metric, action, one condition,
    min_sessions, description); ValueError names what is wrong."""
    allowed = {"id", "metric", "action", "min_sessions", "description", *CONDITIONS}
    unknown = set(obj) - allowed
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} "
                         f"(allowed: {', '.join(sorted(allowed))})")
    for key in ("id", "metric", "action"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise ValueError(f"{key}: required string")
    kw: dict[str, Any] = {k: obj[k] for k in ("id", "metric", "action")}
    for c in ("above", "below", "above_baseline"):
        if c in obj:
            v = obj[c]
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"{c}: expected a non-negative number")
            kw[c] = float(v)
    if "outside" in obj:
        v = obj["outside"]
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(h, int) and not isinstance(h, bool) for h in v)):
            raise ValueError("outside: expected [FROM_HOUR, TO_HOUR]")
        kw["outside"] = (v[0], v[1])
    if "min_sessions" in obj:
        v = obj["min_sessions"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError("min_sessions: expected a positive integer")
        kw["min_sessions"] = v
    if "description" in obj:
        kw["description"] = str(obj["description"])
    return Rule(**kw)


def check_rule_ids(rules: Iterable[Rule]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise ValueError(f"duplicate rule id {r.id!r}")
        seen.add(r.id)
