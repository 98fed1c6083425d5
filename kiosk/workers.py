"""Background work of the kiosk: reach the gateway, log in, attest, enroll.

Each attempt runs in its own thread and reports to the main loop through ``Events``
(tagged with its attempt number, so the result of an abandoned attempt is ignored).
A log-in starts as soon as the user name is entered: the connection, the key
exchange and the pinned host-key check happen while the password is typed, and the
gateway checks the password while the one-time code is typed (the answers are
``Slot``s the main loop fills when Enter is pressed).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .agent_client import AgentClient, AgentError
from .config import KioskConfig
from .events import Events
from .slots import Cancelled, Slot

ANSWER_TIMEOUT = 600.0    # the gateway's own log-in timeout ends an unanswered prompt first


def make_link(cfg: KioskConfig) -> Any:
    # imported here: paramiko is loaded after the first screen is drawn, not before
    from .gateway_link import GatewayLink

    assert cfg.gateway_host is not None and cfg.host_key is not None
    return GatewayLink(cfg.gateway_host, cfg.gateway_port, cfg.host_key)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The fields the screens need from a gateway_link / agent error."""
    kind = type(exc).__name__
    out: dict[str, Any] = {"error": kind, "text": str(exc)}
    for attr in ("code", "step", "message"):
        if hasattr(exc, attr):
            out[attr] = getattr(exc, attr)
    if isinstance(exc, AgentError):
        out["error"] = "AgentError"
    return out


class LoginAttempt:
    """One log-in: connect, keyboard-interactive, attest, open the PTY session."""

    def __init__(self, number: int, cfg: KioskConfig, agent: AgentClient, events: Events,
                 user: str, size: Callable[[], tuple[int, int]], term: str) -> None:
        self.number = number
        self.cfg, self.agent, self.events = cfg, agent, events
        self.user = user
        self.size = size
        self.term = term
        self.password = Slot()
        self.code = Slot()
        self.password_given = False
        self.link: Any = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, name=f"login-{number}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.cancelled = True
        self.password.cancel()
        self.code.cancel()
        if self.link is not None:
            self.link.close()

    def _post(self, kind: str, **data: Any) -> None:
        if not self.cancelled:
            self.events.post(kind, self.number, **data)

    def _answer(self, slot: Slot, progress: str) -> Callable[[], str]:
        def get() -> str:
            value = slot.get(ANSWER_TIMEOUT)
            self._post("progress", text=progress)
            return value
        return get

    def _run(self) -> None:
        try:
            link = self.link = make_link(self.cfg)
            link.on_lock = lambda message, target: self.events.post(
                "locked", self.number, message=message, target=target)
            link.on_notice = lambda code, message: self.events.post(
                "notice", self.number, code=code, message=message)
            link.on_refused = lambda step, message: self.events.post(
                "refused", self.number, step=step, message=message)
            if hasattr(link, "on_closed"):
                link.on_closed = lambda reason: self.events.post(
                    "closed", self.number, reason=reason)
            if hasattr(link, "connect"):
                link.connect()
                self._post("connected")
            link.login(self.user, self._answer(self.password, "Checking your password..."),
                       self._answer(self.code, "Checking your one-time code..."))
            self._post("progress", text="Checking this terminal (attestation)...")
            started = time.monotonic()
            accepted = link.attest(self.agent)
            self._post("progress", text="Opening your session...")
            cols, rows = self.size()
            chan = link.open_shell(self.term, cols, rows)
            self._post("session", link=link, channel=chan, device_id=accepted.device_id,
                       attest_s=time.monotonic() - started)
        except Cancelled:
            if self.link is not None:
                self.link.close()
        except Exception as exc:   # every failure becomes a message on the screen
            if self.link is not None:
                self.link.close()
            self._post("login-failed", **describe_error(exc))


class EnrollAttempt:
    def __init__(self, number: int, cfg: KioskConfig, agent: AgentClient, events: Events,
                 token: str) -> None:
        self.number = number
        self.cfg, self.agent, self.events, self.token = cfg, agent, events, token
        self.thread = threading.Thread(target=self._run, name=f"enroll-{number}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        link = None
        try:
            link = make_link(self.cfg)
            self.events.post("progress", self.number, text="Checking the token...")
            link.enroll_login(self.token)
            self.events.post("progress", self.number,
                             text="Enrolling: proving this terminal's keys and boot...")
            done = link.enroll(self.agent, self.token)
            try:
                self.agent.mark_enrolled(done.image_id)
            except AgentError as exc:
                self.events.post("progress", self.number, text=str(exc))
            self.events.post("enrolled", self.number, device_id=done.device_id,
                             mode=done.mode, image_id=done.image_id)
        except Exception as exc:
            self.events.post("enroll-failed", self.number, **describe_error(exc))
        finally:
            if link is not None:
                link.close()


class Prober:
    """Is the gateway's TCP port reachable? Checked at start, then every ``interval``
    seconds; after a failure with backoff (2, 4, 8 ... ``max_backoff`` s)."""

    def __init__(self, cfg: KioskConfig, events: Events, interval: float = 60.0,
                 max_backoff: float = 60.0) -> None:
        self.cfg, self.events = cfg, events
        self.interval, self.max_backoff = interval, max_backoff
        self.kick = threading.Event()
        self.thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def start(self) -> None:
        if self.cfg.gateway_host:
            self.thread.start()

    def now(self) -> None:
        self.kick.set()

    def _run(self) -> None:
        backoff = 2.0
        assert self.cfg.gateway_host is not None
        while True:
            try:
                # reachable = the gateway answers with its SSH version line, not merely a port
                # that accepts: a gateway still dying (or a half-open path) accepts the TCP
                # handshake in the kernel and then says nothing
                with socket.create_connection((self.cfg.gateway_host, self.cfg.gateway_port),
                                              timeout=5) as sock:
                    if not sock.recv(64).startswith(b"SSH-2.0-"):
                        raise OSError("no SSH version line from the gateway")
                self.events.post("reachable", ok=True, retry=0.0)
                wait, backoff = self.interval, 2.0
            except OSError as exc:
                self.events.post("reachable", ok=False, reason=exc.strerror or str(exc),
                                 retry=backoff)
                wait, backoff = backoff, min(backoff * 2, self.max_backoff)
            self.kick.wait(wait)
            self.kick.clear()
