"""asciicast v2 recordings: exact output, crash-safe, playback, export, hash."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import recording as rec


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


CHUNKS = [b"hello \xe2\x82", b"\xac world\r\n", b"\x1b[31mred\x1b[0m", b"bad \xff\xfe bytes",
          "üñí\n".encode(), b"\x00\x07"]


def test_output_round_trip_exact_bytes_and_hash(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "s.cast"
    r = rec.Recorder(path, width=80, height=24, term="xterm", title="s1", clock=clock)
    for i, c in enumerate(CHUNKS):
        clock.t += 0.25
        r.output(c)
        if i == 1:
            r.input(b"ls\r")
            r.resize(100, 30)
    digest = r.close()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == rec.sha256_file(path)
    assert rec.output_bytes(path) == b"".join(CHUNKS)
    header, events = rec.read(path)
    assert (header.width, header.height, header.term, header.title) == (80, 24, "xterm", "s1")
    evs = list(events)
    assert [e.kind for e in evs].count("r") == 1 and evs[2] == rec.Event(0.5, "i", "ls\r")
    # the split euro sign was held until complete: no event carries half of it
    assert evs[0].data == "hello " and evs[1].data == "€ world\r\n"
    # every line is plain JSON an asciicast player reads
    for line in path.read_text().splitlines()[1:]:
        assert isinstance(json.loads(line), list)


@pytest.mark.parametrize("mode, want", [("keys", "pw\r"), ("timing", "***"), ("off", None)])
def test_input_modes(tmp_path: Path, mode: str, want: str | None) -> None:
    path = tmp_path / "s.cast"
    r = rec.Recorder(path, width=80, height=24, term="xterm", title="s", input_mode=mode)
    r.input(b"pw\r")
    r.close()
    inputs = [e.data for e in rec.read(path)[1] if e.kind == "i"]
    assert inputs == ([want] if want else [])


def test_play_speed_and_idle_cap(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "s.cast"
    r = rec.Recorder(path, width=80, height=24, term="xterm", title="s", clock=clock)
    for dt, data in ((1.0, b"a"), (3.0, b"b"), (100.0, b"c")):
        clock.t += dt
        r.output(data)
    r.close()
    waits: list[float] = []
    out = io.BytesIO()
    assert rec.play(path, out, speed=2.0, max_idle=5.0, sleep=waits.append) == 3
    assert out.getvalue() == b"abc" and waits == [0.5, 1.5, 5.0]


def test_crash_leaves_a_playable_file(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-session: every flushed event plays back."""
    path = tmp_path / "crash.cast"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from gateway.recording import Recorder
        r = Recorder(Path({str(path)!r}), width=80, height=24, term="xterm", title="c")
        for i in range(1000000):
            r.output(b"line %d\\r\\n" % i)
            if i == 500:
                print("ready", flush=True)
            time.sleep(0.0005)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    data = rec.output_bytes(path)
    n = data.count(b"\r\n")
    assert n > 500 and data == b"".join(b"line %d\r\n" % i for i in range(n))
    out = io.BytesIO()
    assert rec.play(path, out, speed=1e9, sleep=lambda _: None) == len(data)


def test_cut_last_line_ignored_and_export_is_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    r = rec.Recorder(path, width=80, height=24, term="xterm", title="s")
    r.output(b"one\n")
    r.output(b"two\n")
    r.close()
    with path.open("ab") as f:
        f.write(b'[9.5, "o", "thr')          # a write cut short by a crash
    assert rec.output_bytes(path) == b"one\ntwo\n"
    out = io.BytesIO()
    rec.export(path, out)
    exported = tmp_path / "e.cast"
    exported.write_bytes(out.getvalue())
    assert exported.read_bytes().endswith(b"\n") and b"thr" not in exported.read_bytes()
    assert rec.output_bytes(exported) == b"one\ntwo\n"


@pytest.mark.parametrize("content, where", [
    (b"not json\n", ":1:"),
    (b'{"version": 1, "width": 80, "height": 24, "timestamp": 0}\n', ":1:"),
    (b'{"version": 2, "width": 80, "height": 24, "timestamp": 0}\n[1, "x", "a"]\n', ":2:"),
    (b'{"version": 2, "width": 80, "height": 24, "timestamp": 0}\n{]\n', ":2:"),
])
def test_malformed_recordings_refused(tmp_path: Path, content: bytes, where: str) -> None:
    path = tmp_path / "bad.cast"
    path.write_bytes(content)
    with pytest.raises(rec.RecordingError, match=where):
        rec.output_bytes(path)


def test_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "s.cast"
    path.write_text("x")
    with pytest.raises(FileExistsError):
        rec.Recorder(path, width=80, height=24, term="xterm", title="s")
