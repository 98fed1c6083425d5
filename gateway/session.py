"""One PTY session: terminal <-> upstream, with its watchers.

Output path (harness -> terminal): upstream ``read`` -> anomaly metrics -> output
budget (slowed, never dropped) -> recording -> live subscribers -> the SSH channel
(waiting while the channel's send buffer is full). Input path (terminal ->
harness): recording -> anomaly metrics -> upstream ``write``. Window changes go to
the upstream and the recording.

A session ends when the upstream ends, the terminal closes, or ``end(message)`` is
called (a lock, a failed re-attestation, the daily budget, an anomaly rule): the
message goes to the terminal on the PTY, the exit status is 1, the channel closes.
At the end the recording is closed and its SHA-256, the byte counts, the budget
share and the anomaly score go to the session row and the audit log; the session's
metrics go into the user's anomaly baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from . import anomaly, budget, locks, metrics, recording
from .audit import Auditor
from .config import Config
from .live import LiveSession, Registry
from .relay import CommandUpstream, RelayError, SshUpstream, Upstream
from .store.base import Alert, SessionRow, Store, StoreError

EVALUATE_SECONDS = 1.0


def new_session_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + os.urandom(4).hex()


@dataclass
class Who:
    user: str
    upstream_user: str
    device_id: str | None
    source: str
    break_glass: bool
    replica: str


async def open_upstream(cfg: Config, user: str, term: str, cols: int, rows: int) -> Upstream:
    up = cfg.upstream
    if up.command is not None:
        return await CommandUpstream.open(up.command, user, term, cols, rows)
    ssh = up.ssh
    if ssh.host is None or ssh.host_key is None or ssh.client_key is None:
        raise RelayError("no upstream configured")
    return await SshUpstream.open(ssh.host, ssh.port, ssh.host_key, ssh.client_key, user, term,
                                  cols, rows, ssh.connect_timeout)


class PtySession:
    def __init__(self, cfg: Config, store: Store, auditor: Auditor, registry: Registry,
                 who: Who, chan: asyncssh.SSHServerChannel[bytes], term: str, cols: int, rows: int,
                 notify: Callable[[dict[str, Any]], None],
                 disconnect: Callable[[], None], session_id: str | None = None) -> None:
        self.cfg, self.store, self.auditor, self.registry = cfg, store, auditor, registry
        self.who, self.chan, self.term, self.cols, self.rows = who, chan, term, cols, rows
        self.notify = notify                 # a control message to the terminal, if any
        self.disconnect = disconnect
        self.now = time.monotonic
        self.started = time.time()
        self.id = session_id or new_session_id(self.started)
        self.writable = asyncio.Event()
        self.writable.set()
        self.upstream: Upstream | None = None
        self.recorder: recording.Recorder | None = None
        self.live: LiveSession | None = None
        self.metrics = anomaly.SessionMetrics(self.now(), anomaly.login_hour(
            self.started, cfg.anomaly.timezone))
        self.detector = anomaly.Detector(cfg.anomaly.rules)
        self.budget: budget.OutputBudget | None = None
        self.end_reason = "closed"
        self.done = asyncio.Event()
        self._ending = False
        self._own_lock_pending = False   # writing its own lock (budget, rule): ends itself next
        self._last_notice = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.row_started = False
        self._early = bytearray()

    # -- input from the terminal (asyncssh callbacks, via server.SessionChannel) -----------
    def data_received(self, data: bytes) -> None:
        if self._ending:
            return
        if self.upstream is None:           # typed before the harness answered: keep it
            self._early += data
            return
        if self.recorder is not None:
            self.recorder.input(data)
        self.metrics.on_input(self.now(), data)
        if self.live is not None:
            self.live.bytes_in += len(data)
        self.upstream.write(data)

    def resized(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        if self.upstream is not None:
            self.upstream.resize(cols, rows)
        if self.recorder is not None:
            self.recorder.resize(cols, rows)

    # -- the session ------------------------------------------------------------------------
    async def run(self) -> None:
        """Start, relay until the end, finish. Never raises."""
        try:
            await self._start()
            self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._watch())]
            await self.done.wait()
        except (RelayError, StoreError, OSError) as exc:
            self.end_reason = f"failed: {exc}"[:200]
            self._write_line(f"auditbox: the session could not start: {exc}")
            self._exit(1)
            self.done.set()
        finally:
            for t in self._tasks:
                t.cancel()
            await self._finish()

    async def _start(self) -> None:
        who = self.who
        rec_rel = Path(time.strftime("%Y/%m", time.gmtime(self.started))) / f"{self.id}.cast"
        self.recorder = recording.Recorder(
            self.cfg.recordings / rec_rel, width=self.cols, height=self.rows, term=self.term,
            title=f"{who.user} {self.id}", input_mode=self.cfg.recording.input,
            started=self.started)
        row = SessionRow(self.id, who.user, who.device_id, who.source, who.replica,
                         self.started, str(rec_rel), break_glass=who.break_glass)
        baseline = await asyncio.to_thread(self._begin_rows, row)
        self.row_started = True
        self.detector.baseline = baseline
        b = self.cfg.budget
        daily = await asyncio.to_thread(budget.DailyTotal, who.user, b.daily,
                                        self.store.add_output)
        self.budget = budget.OutputBudget(budget.TokenBucket(b.rate, b.burst), daily,
                                          on_throttle=self._throttled)
        if daily.remaining() <= 0:
            raise RelayError("the daily output budget of this account is used up")
        self.upstream = await open_upstream(self.cfg, who.upstream_user, self.term, self.cols,
                                            self.rows)
        self.live = LiveSession(self.id, who.user, who.device_id, who.source, self.started,
                                who.break_glass, self.end)
        self.registry.add(self.live)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)
        await self._evaluate()         # login_hour rules fire at the start

    def _begin_rows(self, row: SessionRow) -> dict[str, Any]:
        self.store.start_session(row)
        self.auditor.log("session.start", self.who.user, session=row.id, device_id=row.device_id,
                         source=row.source, recording=row.recording,
                         break_glass=row.break_glass, upstream_user=self.who.upstream_user)
        return self.store.get_baseline(self.who.user)

    async def _pump(self) -> None:
        assert self.upstream is not None and self.budget is not None
        try:
            while True:
                data = await self.upstream.read()
                if not data:
                    self.end_reason = "upstream-exit"
                    break
                self.metrics.on_output(self.now(), data)
                if not await self.budget.send(data, self._deliver):
                    await self._daily_exhausted()
                    return
        except (OSError, asyncssh.Error) as exc:
            self.end_reason = f"upstream-error: {exc}"[:200]
        if not self._ending:
            status = self.upstream.exit_status
            self._exit(status if status is not None else 1)
            self.done.set()

    async def _deliver(self, data: bytes) -> None:
        await self.writable.wait()
        if self._ending:
            return
        assert self.recorder is not None and self.live is not None
        self.recorder.output(data)
        self.live.bytes_out += len(data)
        self.live.publish(data)
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            self.chan.write(data)

    async def _watch(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(EVALUATE_SECONDS)
            await self._evaluate()

    async def _evaluate(self) -> None:
        values = self.metrics.values(self.now())
        triggers = self.detector.evaluate(values)
        if self.live is not None:
            self.live.anomaly_score = self.detector.score
            if self.budget is not None:
                self.live.budget_used = self.budget.daily.used_share
        for t in triggers:
            await self._act(t)

    async def _act(self, t: anomaly.Trigger) -> None:
        rule, who = t.rule, self.who
        now = time.time()
        metrics.current().anomaly(rule.id, rule.action)

        def write() -> int | None:
            self.auditor.log("anomaly", who.user, rule=rule.id, action=rule.action,
                             session=self.id, device_id=who.device_id, detail=t.detail)
            if rule.action == "log":
                return None
            self.store.add_alert(Alert(now, rule.id, anomaly.SEVERITY[rule.action], rule.action,
                                       t.detail, who.user, who.device_id, self.id))
            if rule.action == "lock":
                return locks.add_lock(self.store, self.auditor, "user", who.user,
                                      f"anomaly rule {rule.id}: {t.detail}"[:480],
                                      f"rule:{rule.id}", now=now)
            return None

        if rule.action == "lock":
            await self._lock_self(write, f"auditbox: session locked by rule {rule.id}: "
                                  f"{rule.description or t.detail}", f"anomaly:{rule.id}")
            return
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(write)

    async def _daily_exhausted(self) -> None:
        until = budget.next_utc_midnight(time.time())
        await self._lock_self(
            lambda: locks.add_lock(self.store, self.auditor, "user", self.who.user,
                                   "daily output budget reached", "rule:budget",
                                   until - time.time()),
            budget.DAILY_MESSAGE, "budget-daily")

    async def _lock_self(self, write: Callable[[], object], message: str, reason: str) -> None:
        """Write this session's own lock (and what goes with it), then end with ``message``.
        Meanwhile nothing else ends the session: the lock watcher may see the lock first."""
        self._own_lock_pending = True
        try:
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(write)
        finally:
            self._own_lock_pending = False
        await self.end(message, reason, locked="user")

    def _throttled(self, wait: float) -> None:
        metrics.current().throttled(wait)
        now = self.now()
        if now - self._last_notice >= 60.0:
            self._last_notice = now
            self.notify({"type": "notice", "code": "budget-throttled",
                         "message": "output is slowed to the session's output budget"})

    # -- ending -----------------------------------------------------------------------------
    async def end(self, message: str, reason: str, locked: str | None = None) -> None:
        """End now: message on the PTY (and ``locked`` on the control channel), exit 1."""
        if self._ending or self._own_lock_pending:
            # while the session writes its own lock (daily budget, anomaly rule), the lock
            # watcher may see that lock first: the session ends itself right after, with its
            # own, more specific message
            return
        self._ending = True
        self.end_reason = reason
        if locked is not None:
            self.notify({"type": "locked", "message": message[:2000], "target": locked})
        self._write_line(message)
        self._exit(1)
        self.done.set()

    def _write_line(self, text: str) -> None:
        line = ("\r\n" + text + "\r\n").encode("utf-8", "replace")
        if self.recorder is not None:
            with contextlib.suppress(recording.RecordingError):
                self.recorder.output(line)
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            self.chan.write(line)

    def _exit(self, status: int) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            self.chan.exit(status)
        self.disconnect_soon()

    def disconnect_soon(self) -> None:
        asyncio.get_running_loop().call_later(0.2, self.disconnect)

    def closed_by_terminal(self) -> None:
        if not self.done.is_set():
            self.end_reason = "terminal-closed"
            self._ending = True
            self.done.set()

    async def _finish(self) -> None:
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.close()
        if self.budget is not None:
            with contextlib.suppress(StoreError):
                await self.budget.close()
        digest = self.recorder.close() if self.recorder is not None else None
        if self.live is not None:
            self.registry.remove(self.id)
        values = self.metrics.values(self.now())
        rec_in = self.recorder.bytes_in if self.recorder else 0
        rec_out = self.recorder.bytes_out if self.recorder else 0
        ended = time.time()

        def write() -> None:
            self.store.update_session(
                self.id, ended_at=ended, end_reason=self.end_reason, bytes_in=rec_in,
                bytes_out=rec_out, recording_sha256=digest,
                budget_used=self.budget.daily.used_share if self.budget else 0.0,
                anomaly_score=self.detector.score)
            self.auditor.log("session.end", self.who.user, session=self.id,
                             reason=self.end_reason, bytes_in=rec_in, bytes_out=rec_out,
                             recording_sha256=digest, seconds=round(ended - self.started, 3))
            base = self.store.get_baseline(self.who.user)
            self.store.put_baseline(self.who.user, anomaly.updated_baseline(
                base, values, budget.utc_day(ended), self.cfg.anomaly.baseline_days))

        if self.row_started:
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(write)

