"""The terminal's side of the auditbox gateway protocol (docs/protocol.md), on paramiko.

Runs on Debian 13's python3 with python3-paramiko (3.5) and python3-cryptography;
imports only those, the standard library and ``attestation``.

Log-in, attest, open the PTY session::

    link = GatewayLink("192.0.2.10", 22, "ssh-ed25519 AAAAC3Nza...")
    link.connect()                                   # optional: TCP, kex, pinned key check
    link.login("alice", password, code)              # AuthError subclasses on refusal
    accepted = link.attest(BackendAgent(backend))    # AttestationRefused(step, message)
    shell = link.open_shell("xterm-256color", 80, 24)  # a paramiko Channel
    ...                                              # shell.send / shell.recv
    link.resize(120, 40)
    link.close()

Enrollment of a new terminal (a one-time token from ``auditbox gateway device token
create``)::

    link = GatewayLink(host, port, host_key)
    link.enroll_login(token)                         # BadToken on refusal
    enrolled = link.enroll(BackendAgent(backend), token)   # -> Enrolled
    link.close()

``connect()`` may be called early (while the auditor is still typing); ``login`` and
``enroll_login`` reuse the connection. ``password`` and ``code`` may be callables
``() -> str``: each is called when the gateway sends its prompt (so the password is
checked while the code is being typed); they may block.

After ``attest`` a background thread serves the control channel: it answers every
re-attestation challenge through the agent, and calls ``on_lock(message, target)``,
``on_notice(code, message)``, ``on_refused(step, message)`` and, when the control
channel ends without either verdict (gateway restart, network drop),
``on_closed(reason)`` (set them before ``attest``; they run in that thread). After a
lock or a refusal the gateway ends the session, so the shell channel closes too.
``send_alert(kind, detail)`` reports a local alert to the gateway.

An *agent* is any object with ``device_id``, ``mode`` (``tpm2``/``soft``),
``quote(nonce, session_id) -> evidence bytes``, and for enrollment
``enrollment_request(token) -> dict`` and ``activate(credential) -> secret``.
``BackendAgent`` adapts ``attestation.soft.SoftBackend`` and
``attestation.tpm2.Tpm2Backend``.

Errors are all ``LinkError``: ``HostKeyMismatch``, ``AuthError`` (``code`` and
``text`` from the gateway's ``auditbox-error`` line; subclasses ``BadPassword``,
``BadCode``, ``LockedOut``, ``RateLimited``, ``Locked``, ``Unavailable``,
``BadToken``), ``AttestationRefused`` (``step``, ``message``), ``ProtocolError``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paramiko

from attestation import evidence as evidence_format

from . import protocol
from .protocol import CLIENT_MESSAGES, GATEWAY_MESSAGES, FrameReader

KEX = ("curve25519-sha256@libssh.org",)
CIPHERS = ("aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr", "aes128-ctr")
MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
HOST_KEY_TYPES = ("ssh-ed25519",)


class LinkError(Exception):
    """Anything that ends a gateway connection attempt."""


class HostKeyMismatch(LinkError):
    """The gateway presented a host key other than the pinned one."""


class ProtocolError(LinkError):
    """The gateway sent something docs/protocol.md does not allow."""


class AuthError(LinkError):
    code = "auth-failed"

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        if code:
            self.code = code


class BadPassword(AuthError):
    code = "bad-password"


class BadCode(AuthError):
    code = "bad-code"


class LockedOut(AuthError):
    code = "locked-out"


class RateLimited(AuthError):
    code = "rate-limited"


class Locked(AuthError):
    code = "locked"


class Unavailable(AuthError):
    code = "unavailable"


class BadToken(AuthError):
    code = "bad-token"


_AUTH_ERRORS: dict[str, type[AuthError]] = {
    c.code: c for c in (BadPassword, BadCode, LockedOut, RateLimited, Locked, Unavailable,
                        BadToken)
}


class AttestationRefused(LinkError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


Answer = str | Callable[[], str]


class Agent(Protocol):
    device_id: str
    mode: str

    def quote(self, nonce: bytes, session_id: bytes) -> bytes: ...

    def enrollment_request(self, token: str) -> dict[str, Any]: ...

    def activate(self, credential: bytes) -> bytes: ...


class BackendAgent:
    """An Agent over an ``attestation`` backend (SoftBackend or Tpm2Backend)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.mode: str = backend.mode
        self.device_id: str = backend.device_id()

    def quote(self, nonce: bytes, session_id: bytes) -> bytes:
        qd = hashlib.sha256(nonce + session_id).digest()
        return evidence_format.encode(self.backend.quote(qd))

    def enrollment_request(self, token: str) -> dict[str, Any]:
        if self.mode == "soft":
            return dict(self.backend.enrollment_request(token))
        return dict(self.backend.enrollment_request())

    def activate(self, credential: bytes) -> bytes:
        return bytes(self.backend.activate(credential))


@dataclass(frozen=True)
class Accepted:
    device_id: str
    next: int              # seconds until the next challenge (0 = none)


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    mode: str
    image_id: str


def parse_host_key(line: str) -> paramiko.PKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA... [comment]``)."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES:
        raise LinkError("pinned host key must be an ssh-ed25519 public key line")
    try:
        return paramiko.Ed25519Key(data=base64.b64decode(parts[1], validate=True))
    except (ValueError, paramiko.SSHException) as exc:
        raise LinkError(f"pinned host key unreadable: {exc}") from None


class GatewayLink:
    """One connection to the gateway. Not reusable: make a new one per log-in."""

    def __init__(self, host: str, port: int, host_key: str, *, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.pinned = parse_host_key(host_key)
        self.on_lock: Callable[[str, str], None] = lambda message, target: None
        self.on_notice: Callable[[str, str], None] = lambda code, message: None
        self.on_refused: Callable[[str, str], None] = lambda step, message: None
        self.on_closed: Callable[[str], None] = lambda reason: None
        self._verdict = False
        self.transport: paramiko.Transport | None = None
        self._control: paramiko.Channel | None = None
        self._reader = FrameReader()
        self._send_lock = threading.Lock()
        self._agent: Agent | None = None
        self._thread: threading.Thread | None = None
        self.last_refusal: tuple[str, str] | None = None
        self._backlog: list[bytes] = []
        self._shell: paramiko.Channel | None = None

    # -- transport and authentication ----------------------------------------------------
    def connect(self) -> paramiko.Transport:
        """TCP, key exchange and the pinned host key check; no authentication. Idempotent:
        a second call returns the same transport."""
        if self.transport is not None and self.transport.is_active():
            return self.transport
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise LinkError(f"cannot reach the gateway {self.host}:{self.port}: {exc}") from None
        t = paramiko.Transport(sock)
        opts = t.get_security_options()
        opts.kex = KEX
        opts.ciphers = CIPHERS
        opts.digests = MACS
        opts.key_types = HOST_KEY_TYPES
        opts.compression = ("none",)
        try:
            t.start_client(timeout=self.timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            t.close()
            raise LinkError(f"SSH handshake failed: {exc}") from None
        key = t.get_remote_server_key()
        if key.get_name() != "ssh-ed25519" or key.asbytes() != self.pinned.asbytes():
            t.close()
            raise HostKeyMismatch(
                f"gateway host key {key.get_name()} SHA256:{_fingerprint(key)} is not the "
                f"pinned SHA256:{_fingerprint(self.pinned)}")
        self.transport = t
        return t

    def _kbdint(self, user: str, answers: dict[str, Answer]) -> None:
        t = self.connect()
        error: list[tuple[str, str]] = []

        def handler(title: str, instructions: str,
                    prompts: list[tuple[str, bool]]) -> list[str]:
            if not prompts:
                got = protocol.auth_error(instructions)
                if got:
                    error.append(got)
                return []
            out = []
            for prompt, _echo in prompts:
                if prompt not in answers:
                    raise ProtocolError(f"unexpected prompt {prompt!r}")
                answer = answers[prompt]
                out.append(answer() if callable(answer) else answer)
            return out

        try:
            t.auth_interactive(user, handler)
        except paramiko.AuthenticationException:
            self.close()
            if error:
                code, text = error[0]
                raise _AUTH_ERRORS.get(code, AuthError)(text, code) from None
            raise AuthError("the gateway refused the log-in") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise LinkError(f"log-in failed: {exc}") from None
        if not t.is_authenticated():
            self.close()
            raise AuthError("the gateway refused the log-in")

    def login(self, user: str, password: Answer, code: Answer) -> None:
        """Keyboard-interactive: password, then one-time code (strings, or callables
        asked when the gateway sends the prompt)."""
        self._kbdint(user, {"Password: ": password, "One-time code: ": code})

    def enroll_login(self, token: str) -> None:
        self._kbdint(protocol.ENROLL_USER, {"Enrollment token: ": token})

    @property
    def session_id(self) -> bytes:
        if self.transport is None or self.transport.session_id is None:
            raise LinkError("not connected")
        return bytes(self.transport.session_id)

    # -- control channel -----------------------------------------------------------------
    def _open_control(self) -> None:
        if self.transport is None:
            raise LinkError("log in first")
        try:
            chan = self.transport.open_session(timeout=self.timeout)
            chan.invoke_subsystem(protocol.SUBSYSTEM)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise LinkError(f"control channel refused: {exc}") from None
        chan.settimeout(self.timeout)
        self._control = chan

    def _send(self, msg: dict[str, Any]) -> None:
        if self._control is None:
            raise LinkError("no control channel")
        frame = protocol.encode(msg, CLIENT_MESSAGES)
        with self._send_lock:
            try:
                self._control.sendall(frame)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise LinkError(f"control channel: {exc or 'closed'}") from None

    def _recv(self, timeout: float | None) -> dict[str, Any] | None:
        """Next gateway message; None when the channel closed."""
        assert self._control is not None
        self._control.settimeout(timeout)
        pending: list[bytes] = []
        while not pending:
            try:
                data = self._control.recv(65536)
            except TimeoutError:
                raise LinkError("the gateway did not answer in time") from None
            except (OSError, EOFError):
                return None
            if not data:
                return None
            try:
                pending = self._reader.feed(data)
            except protocol.ProtocolError as exc:
                raise ProtocolError(str(exc)) from None
        self._backlog = pending[1:]
        try:
            return protocol.parse(pending[0], GATEWAY_MESSAGES)
        except protocol.ProtocolError as exc:
            raise ProtocolError(str(exc)) from None

    def _next(self, timeout: float | None) -> dict[str, Any] | None:
        if self._backlog:
            body, self._backlog = self._backlog[0], self._backlog[1:]
            try:
                return protocol.parse(body, GATEWAY_MESSAGES)
            except protocol.ProtocolError as exc:
                raise ProtocolError(str(exc)) from None
        return self._recv(timeout)

    def _expect(self, *types: str) -> dict[str, Any]:
        while True:
            msg = self._next(self.timeout)
            if msg is None:
                if self.last_refusal:
                    raise AttestationRefused(*self.last_refusal)
                raise LinkError("the gateway closed the control channel")
            if msg["type"] == "refused":
                self.last_refusal = (msg["step"], msg["message"])
                raise AttestationRefused(msg["step"], msg["message"])
            if msg["type"] == "locked":
                self.on_lock(msg["message"], msg["target"])
                raise AttestationRefused("locked", msg["message"])
            if msg["type"] == "notice":
                self.on_notice(msg["code"], msg["message"])
                continue
            if msg["type"] not in types:
                raise ProtocolError(f"expected {' or '.join(types)}, got {msg['type']}")
            return msg

    def _answer(self, agent: Agent, challenge: dict[str, Any]) -> None:
        ev = agent.quote(challenge["nonce"], self.session_id)
        self._send({"type": "evidence", "nonce": challenge["nonce"].hex(),
                    "evidence": protocol.b64(ev)})

    def attest(self, agent: Agent) -> Accepted:
        """hello, challenge/evidence, accepted; then serve re-attestation in a thread."""
        self._open_control()
        self._agent = agent
        self._send({"type": "hello", "version": protocol.VERSION, "device_id": agent.device_id,
                    "mode": agent.mode})
        self._answer(agent, self._expect("challenge"))
        acc = self._expect("accepted")
        self._thread = threading.Thread(target=self._serve, name="gateway-control", daemon=True)
        self._thread.start()
        return Accepted(acc["device_id"], acc["next"])

    def _serve(self) -> None:
        assert self._agent is not None
        try:
            while True:
                msg = self._next(None)
                if msg is None:
                    if not self._verdict:
                        self.on_closed("the gateway closed the connection")
                    return
                typ = msg["type"]
                if typ == "challenge":
                    # a late answer may find the channel closed: read on for the verdict
                    with contextlib.suppress(LinkError):
                        self._answer(self._agent, msg)
                elif typ == "locked":
                    self._verdict = True
                    self.on_lock(msg["message"], msg["target"])
                elif typ == "notice":
                    self.on_notice(msg["code"], msg["message"])
                elif typ == "refused":
                    self._verdict = True
                    self.last_refusal = (msg["step"], msg["message"])
                    self.on_refused(msg["step"], msg["message"])
                elif typ != "accepted":
                    raise ProtocolError(f"unexpected {typ} during the session")
        except ProtocolError as exc:
            self._verdict = True
            self.on_refused("protocol", str(exc))
            self.close()
        except LinkError as exc:
            if not self._verdict:
                self.on_closed(str(exc))
            self.close()

    def send_alert(self, kind: str, detail: str) -> None:
        self._send({"type": "alert", "kind": kind, "detail": detail[:512]})

    def enroll(self, agent: Agent, token: str) -> Enrolled:
        """The enrollment exchange after ``enroll_login``."""
        self._open_control()
        self._reader.limit = protocol.SMALL_LIMIT
        self._send({"type": "enroll", "version": protocol.VERSION,
                    "request": agent.enrollment_request(token)})
        msg = self._expect("credential", "challenge")
        if msg["type"] == "credential":
            secret = agent.activate(msg["credential"])
            self._send({"type": "activate", "secret": protocol.b64(secret)})
            msg = self._expect("challenge")
        self._answer(agent, msg)
        done = self._expect("enrolled")
        return Enrolled(done["device_id"], done["mode"], done["image_id"])

    # -- the PTY session -------------------------------------------------------------------
    def open_shell(self, term: str = "xterm-256color", cols: int = 80,
                   rows: int = 24) -> paramiko.Channel:
        if self.transport is None:
            raise LinkError("log in first")
        try:
            chan = self.transport.open_session(timeout=self.timeout)
            chan.get_pty(term=term, width=cols, height=rows)
            chan.invoke_shell()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise LinkError(f"session refused: {exc}") from None
        self._shell = chan
        return chan

    def resize(self, cols: int, rows: int) -> None:
        if self._shell is not None:
            self._shell.resize_pty(width=cols, height=rows)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _fingerprint(key: paramiko.PKey) -> str:
    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
