"""The kiosk's main loop: one thread owns the console and the screen.

Modes: ``login`` (the login screen), ``enroll`` (an administrator types a token),
``message`` (a result, a refusal or a lock, shown until acknowledged with Enter) and
``session`` (the console relayed to the gateway). Workers and the gateway link's
control thread only post ``Events``; this loop reacts to them, to keys and to the
clock. Nothing here ever starts a local program.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from .agent_client import AgentClient, AgentError, AgentInfo
from .config import KioskConfig, notice_text
from .events import Event, Events
from .injection import BurstDetector, KeyboardWatcher
from .keys import Key, KeyDecoder, count_keys
from .messages import auth_message, failure_view, lock_view
from .render import Renderer
from .screens import Field, LoginView, MessageView, Status, login_frame, message_frame
from .session import RESET_SCREEN, Session
from .tty import Console, Waker, ignore_keyboard_signals
from .workers import EnrollAttempt, LoginAttempt, Prober

FIELD_LIMITS = (64, 256, 16)          # user name, password, one-time code
TOKEN_LIMIT = 256
TICK = 1.0
CLOSE_GRACE = 0.5                     # seconds


@dataclass
class LoginForm:
    fields: list[Field] = field(default_factory=lambda: [
        Field("User name"), Field("Password", secret=True), Field("One-time code", secret=True)])
    focus: int = 0
    discard_code: bool = False      # the password was refused while the code was typed

    def clear(self, keep_user: bool = False) -> None:
        self.discard_code = False
        for i, f in enumerate(self.fields):
            if not (keep_user and i == 0):
                f.value = ""
        self.focus = 1 if keep_user and self.fields[0].value else 0

    @property
    def empty(self) -> bool:
        return not any(f.value for f in self.fields)


class Kiosk:
    def __init__(self, cfg: KioskConfig, console: Console, agent: AgentClient) -> None:
        self.cfg = cfg
        self.console = console
        self.agent = agent
        self.waker = Waker()
        self.events = Events(self.waker)
        self.renderer = Renderer(console.write)
        self.decoder = KeyDecoder()
        self.notice = notice_text(cfg)
        self.term = os.environ.get("TERM") or "vt220"
        self.status = Status(gateway="not configured on this image" if not self.configured
                             else f"{cfg.gateway}  (checking...)")
        self.info: AgentInfo | None = None
        self.mode = "login"
        self.form = LoginForm()
        self.token = Field("Enrollment token")
        self.message = ""
        self.message_style = ""
        self.view: MessageView | None = None
        self.attempt: LoginAttempt | None = None
        self.attempt_no = 0
        self.busy = False
        self.session: Session | None = None
        self.pending_alerts: list[tuple[str, str]] = []
        self.burst = self._detector()
        self.last_key = time.monotonic()
        self.size = console.size()
        self.prober = Prober(cfg, self.events)
        self.dirty = True

    @property
    def configured(self) -> bool:
        return bool(self.cfg.gateway_host and self.cfg.host_key)

    def _detector(self) -> BurstDetector:
        return BurstDetector(self.cfg.injection.burst_keys, self.cfg.injection.burst_ms)

    # -- start-up ----------------------------------------------------------------------
    def start(self) -> None:
        ignore_keyboard_signals()
        self.waker.on_signal(signal.SIGWINCH)
        self.console.make_raw()
        self.draw()                                  # the login screen, before anything slow
        self.prober.start()
        self._refresh_agent()

    def _refresh_agent(self) -> None:
        import threading

        def work() -> None:
            delay = 0.5
            while True:     # the agent may still be starting, or restarting: keep asking
                try:
                    self.events.post("agent", info=self.agent.info(refresh=True))
                    return
                except AgentError as exc:
                    self.events.post("agent-error", text=str(exc))
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

        threading.Thread(target=work, name="agent-info", daemon=True).start()

    # -- drawing -----------------------------------------------------------------------
    def _clock(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def draw(self) -> None:
        cols, rows = self.size
        self.status.clock = self._clock()
        if self.mode == "login":
            view = LoginView(self.cfg.banner, self.notice, self.status, self.form.fields,
                             self.form.focus, self.message, self.message_style)
            self.renderer.draw(login_frame(view, cols, rows))
        elif self.mode == "enroll":
            mv = MessageView(
                "Enroll this terminal", "Administrator: type the one-time token from `auditbox "
                "gateway device token create` and press Enter. Esc goes back.\n\n"
                + (self.message or ""), footer="Enter: enroll    Esc: back",
                status=self.status, fields=[self.token])
            self.renderer.draw(message_frame(mv, cols, rows))
        elif self.mode == "message" and self.view is not None:
            self.view.status = self.status
            self.renderer.draw(message_frame(self.view, cols, rows))
        self.dirty = False

    # -- the loop ----------------------------------------------------------------------
    def run_forever(self) -> None:
        self.start()
        while True:
            self.step()

    def step(self) -> None:
        fds: list[int] = [self.console.fd, self.waker.r]
        if self.session is not None:
            fds.append(self.session.fileno())
        ready, _, _ = select.select(fds, [], [], TICK)
        now = time.monotonic()
        for ev in self.events.drain():
            self.on_event(ev)
        if self.console.fd in ready:
            data = self.console.read()
            if data:
                self.on_input(data, now)
        if self.session is not None and self.session.fileno() in ready:
            self._pump_session()
        self.on_tick(now)
        if self.mode != "session" and self.dirty:
            self.draw()

    # -- input -------------------------------------------------------------------------
    def on_input(self, data: bytes, now: float) -> None:
        if self.session is not None:
            if not self.session.typed(data, now):
                self._burst(f"{count_keys(data)} keys at once, "
                            f"over {self.cfg.injection.burst_keys} keys within "
                            f"{self.cfg.injection.burst_ms} ms")
            return
        self.last_key = now
        if self.burst.feed(count_keys(data), now) and self.cfg.injection.action != "off":
            self.form.clear()
            self.token.value = ""
            self.pending_alerts.append(
                ("keystroke-burst", f"on the {self.mode} screen at {self._clock()}: over "
                 f"{self.cfg.injection.burst_keys} keys within {self.cfg.injection.burst_ms} ms"))
            self._cancel_attempt()
            self._set_message("Typing faster than a person can was detected; the input was "
                              "discarded and will be reported.", "error")
            return
        for key in self.decoder.feed(data):
            self.on_key(key)
        self.dirty = True

    def on_key(self, key: Key) -> None:
        if self.mode == "login":
            self._login_key(key)
        elif self.mode == "enroll":
            self._enroll_key(key)
        elif self.mode == "message" and key.name == "enter":
            self.mode = "login"
            self.view = None
            self.renderer.invalidate()

    def _login_key(self, key: Key) -> None:
        form = self.form
        f = form.fields[form.focus]
        if self.busy and key.name != "escape":
            return
        if key.name in ("char", "backspace", "clear"):
            if key.name == "char" and len(f.value) < FIELD_LIMITS[form.focus]:
                f.value += key.char
            elif key.name == "backspace":
                f.value = f.value[:-1]
            elif key.name == "clear":
                f.value = ""
            # a changed user name, or a password changed after it was sent: start again
            if form.focus == 0 or (form.focus == 1 and self.attempt is not None
                                   and self.attempt.password_given):
                self._cancel_attempt()
        elif key.name in ("enter", "tab", "down"):
            self._login_next(key.name == "enter")
        elif key.name in ("up", "backtab"):
            form.focus = max(0, form.focus - 1)
        elif key.name == "escape":
            self._cancel_attempt()
            form.clear()
            self._set_message("")
        elif key.name == "f2":
            self._cancel_attempt()
            form.clear()
            self.mode = "enroll"
            self.token.value = ""
            self._set_message("")
            self.renderer.invalidate()

    def _login_next(self, enter: bool) -> None:
        """Enter, Tab or Down: to the next field; Enter on the code logs in."""
        form = self.form
        user, password, code = (f.value for f in form.fields)
        if not self.configured:
            if enter:
                self._set_message("This image has no gateway configured. Tell the "
                                  "administrator.", "error")
            form.focus = min(form.focus + 1, 2)
            return
        if form.focus == 0:
            if user and self.attempt is None:
                self._start_attempt()           # connect while the password is typed
            if user or not enter:
                form.focus = 1
        elif form.focus == 1:
            if password and user:
                self._give_password()
            if password or not enter:
                form.focus = 2
        elif form.discard_code:
            if enter:
                form.discard_code = False
                form.fields[2].value = ""
                form.focus = 1
        elif enter and not (user and password):
            form.focus = 0 if not user else 1
        elif enter and code:
            self._give_password()
            assert self.attempt is not None
            self.attempt.code.set(code)
            self.busy = True
            self._set_message("Logging in...", "bold")
            for f in form.fields[1:]:
                f.value = ""

    def _give_password(self) -> None:
        if self.attempt is None:
            self._start_attempt()
        assert self.attempt is not None
        if not self.attempt.password_given:
            self.attempt.password.set(self.form.fields[1].value)
            self.attempt.password_given = True

    def _enroll_key(self, key: Key) -> None:
        if self.busy:
            return
        if key.name == "char" and len(self.token.value) < TOKEN_LIMIT:
            self.token.value += key.char
        elif key.name == "backspace":
            self.token.value = self.token.value[:-1]
        elif key.name == "clear":
            self.token.value = ""
        elif key.name == "escape":
            self.mode = "login"
            self._set_message("")
            self.renderer.invalidate()
        elif key.name == "enter" and self.token.value.strip():
            if not self.configured:
                self._set_message("This image has no gateway configured.", "error")
                return
            self.attempt_no += 1
            EnrollAttempt(self.attempt_no, self.cfg, self.agent, self.events,
                          self.token.value.strip()).start()
            self.token.value = ""
            self.busy = True
            self._set_message("Connecting to the gateway...", "bold")

    # -- log-in attempts -----------------------------------------------------------------
    def _start_attempt(self) -> None:
        self._cancel_attempt()
        self.attempt_no += 1
        self.attempt = LoginAttempt(self.attempt_no, self.cfg, self.agent, self.events,
                                    self.form.fields[0].value, self.console.size, self.term)
        self.attempt.start()

    def _cancel_attempt(self) -> None:
        if self.attempt is not None:
            self.attempt.cancel()
            self.attempt = None
            self.attempt_no += 1
        self.busy = False

    def _set_message(self, text: str, style: str = "") -> None:
        self.message, self.message_style = text, style
        self.dirty = True

    def _show(self, view: MessageView) -> None:
        self.mode = "message"
        self.view = view
        self.busy = False
        self.renderer.invalidate()
        self.dirty = True

    # -- events ------------------------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        self.dirty = True
        if ev.kind == "agent":
            self._agent_info(ev.data["info"])
        elif ev.kind == "agent-error":
            self.status.device_id = "(agent unavailable)"
            self.status.enrollment = ev.data["text"][:60]
        elif ev.kind == "reachable":
            self._reachable(ev.data)
        elif ev.attempt and ev.attempt != self.attempt_no:
            return                                   # a cancelled attempt's late result
        elif ev.kind == "progress":
            self._set_message(ev.data["text"], "bold")
        elif ev.kind == "connected":
            self.status.gateway = f"{self.cfg.gateway}  reachable"
        elif ev.kind == "session":
            self._start_session(ev.data)
        elif ev.kind == "login-failed":
            self._login_failed(ev.data)
        elif ev.kind == "enrolled":
            self._enrolled(ev.data)
        elif ev.kind == "enroll-failed":
            self.busy = False
            self._set_message(auth_message(ev.data), "error")
        elif ev.kind in ("locked", "refused", "closed", "notice"):
            self._session_event(ev)

    def _agent_info(self, info: AgentInfo) -> None:
        self.info = info
        self.status.device_id = info.device_id
        self.status.mode = info.mode
        if info.enrolled is not None:
            self.status.enrollment = "enrolled"
        elif info.mode == "tpm2":
            self.status.enrollment = "not confirmed on this disk (log in, or F2)"
        else:
            self.status.enrollment = "NOT ENROLLED (administrator: F2)"
        if info.mode == "soft" and not info.persistent:
            self.status.enrollment += "; no state partition: lost at power-off"

    def _reachable(self, data: dict[str, Any]) -> None:
        if data["ok"]:
            self.status.gateway = f"{self.cfg.gateway}  reachable"
        else:
            self.status.gateway = (f"{self.cfg.gateway}  UNREACHABLE ({data['reason']}); "
                                   f"retry in {data['retry']:.0f} s")

    def _login_failed(self, data: dict[str, Any]) -> None:
        self.attempt = None
        self.busy = False
        typing_code = self.form.focus == 2 and data["error"] == "BadPassword"
        self.form.clear(keep_user=True)
        if typing_code:
            # the password was refused while the code was being typed: the rest of the
            # code stays in the code field and its Enter only goes back to the password,
            # so a one-time code is never sent as a password (and never counts a failure)
            self.form.focus = 2
            self.form.discard_code = True
        if data["error"] == "AttestationRefused" and data.get("step") == "enrollment":
            try:
                self.agent.mark_enrolled(None)
                self._agent_info(self.agent.info())
            except AgentError:
                pass
        if data["error"] == "HostKeyMismatch":
            self.status.gateway = f"{self.cfg.gateway}  REFUSED: wrong host key"
        view = failure_view(data)
        if view is not None:
            self._show(view)
        else:
            self._set_message(auth_message(data), "error")

    def _enrolled(self, data: dict[str, Any]) -> None:
        self.busy = False
        try:
            self._agent_info(self.agent.info(refresh=True))
        except AgentError:
            self.status.enrollment = "enrolled"
        self._show(MessageView(
            "This terminal is enrolled",
            f"Device {data['device_id']} ({data['mode']}) is enrolled for image "
            f"{data['image_id']}. Auditors can log in now."))

    # -- the session ---------------------------------------------------------------------
    def _start_session(self, data: dict[str, Any]) -> None:
        self.attempt = None
        self.busy = False
        self.form.clear()
        self._set_message("")
        self.mode = "session"
        self.session = Session(data["link"], data["channel"], self._detector(),
                               float(self.cfg.idle_timeout), KeyboardWatcher())
        self.console.write(b"\x1b[0m\x1b[H\x1b[2J")
        if self.info is not None and self.info.enrolled is None:
            try:    # the gateway knows this terminal: show it as enrolled from now on
                self.agent.mark_enrolled("unknown")
                self._agent_info(self.agent.info())
            except AgentError:
                pass
        for kind, detail in self.pending_alerts:
            self.session.alert(kind, detail)
        self.pending_alerts.clear()

    def _pump_session(self) -> None:
        s = self.session
        assert s is not None
        try:
            out = s.received()
        except Exception:   # a transport error is the end of the session
            out = None
        if out:
            self.console.write(out)
        elif out is None:
            # a lock or refusal on the control channel explains why the channel closed;
            # give it a moment to arrive before calling this a normal end or a lost link
            deadline = time.monotonic() + CLOSE_GRACE
            while self.session is not None and time.monotonic() < deadline:
                try:
                    self.on_event(self.events.queue.get(timeout=0.05))
                except queue.Empty:
                    continue
            if self.session is not None:
                if not s.exited():
                    s.end = s.end or "lost"
                self._end_session()

    def _session_event(self, ev: Event) -> None:
        s = self.session
        if ev.kind == "notice":
            if s is not None:
                self.console.write(s.notice(ev.data["message"], *self.size))
            return
        if ev.kind == "locked":
            view = lock_view(ev.data["message"], ev.data["target"])
            if s is not None:
                s.close("locked")
            else:
                self._cancel_attempt()              # locked before the session opened
            self._end_session(view)
        elif ev.kind == "refused":
            if s is not None:
                s.close("refused")
            self._end_session(failure_view({"error": "AttestationRefused", **ev.data}))
        elif ev.kind == "closed" and s is not None:
            # the gateway closes the connection after a shell's normal exit, too
            if not s.exited():
                s.close("lost")
            self._end_session()

    def _burst(self, detail: str) -> None:
        s = self.session
        action = self.cfg.injection.action
        if s is None or action == "off":
            return
        s.alert("keystroke-burst", detail)
        if action == "lock":
            s.close("injection")
            self._end_session(MessageView(
                "Session locked",
                "Typing faster than a person can was detected on this terminal (a keystroke "
                "injector?). The session was ended and the gateway was told. Contact the "
                "administrator if this was not you.", style="error"))
        else:
            self.console.write(s.notice("input faster than a person types: reported",
                                        *self.size))

    def _end_session(self, view: MessageView | None = None) -> None:
        s = self.session
        if s is None:
            if view is not None:
                self._show(view)
            return
        self.session = None
        self.attempt_no += 1                        # late events of this log-in are stale
        s.close(s.end or "ended")
        self.console.write(RESET_SCREEN)
        self.console.make_raw()
        self.renderer.invalidate()
        self.burst = self._detector()
        self.last_key = time.monotonic()
        why = s.end
        if view is not None:
            self._show(view)
            return
        self.mode = "login"
        if why == "idle":
            t = self.cfg.idle_timeout
            span = f"{t // 60} minutes" if t >= 120 else f"{t} seconds"
            self._set_message(f"The session was closed after {span} without input. "
                              "Log in again.", "bold")
        elif why == "lost":
            self._set_message("The connection to the gateway was lost. Log in again.", "error")
            self.prober.now()
        else:
            said = s.gateway_said()
            self._set_message(f"Session ended by the gateway: {said}" if said
                              else "Session ended.", "bold")
        self.dirty = True

    # -- time ----------------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        size = self.console.size()
        if size != self.size:
            self.size = size
            if self.session is not None:
                with contextlib.suppress(Exception):
                    self.session.link.resize(*size)
            else:
                self.renderer.invalidate()
                self.dirty = True
        s = self.session
        if s is not None:
            if s.idle(now):
                s.close("idle")
                self._end_session()
                return
            for kb in s.keyboards.check():
                text = f"a USB keyboard was connected: {kb.name} ({kb.phys or kb.node})"
                self.console.write(s.notice(text + " - reported", *self.size))
                s.alert("usb-keyboard", text)
            return
        if self.mode in ("login", "enroll") and now - self.last_key >= self.cfg.idle_timeout \
                and (not self.form.empty or self.token.value or self.attempt is not None):
            self._cancel_attempt()
            self.form.clear()
            self.token.value = ""
            self.mode = "login"
            self._set_message("Cleared after a long time without input.")
        if self.status.clock != self._clock():
            self.dirty = True
