"""The gateway's SSH endpoint (asyncssh): one connection's life as a pipeline of states.

    accept -> key exchange -> keyboard-interactive (gateway/auth.py)
           -> control channel -> attestation or enrollment (gateway/attest.py)
           -> one PTY session (gateway/session.py) -> close

Only docs/protocol.md section 1's algorithms are offered. Every channel type and
request the protocol does not allow is refused and written to the audit log as
``channel.refused`` with its kind: ``exec`` (and scp), ``subsystem`` (sftp, anything
but the control channel), ``env``, ``x11``, ``agent``, ``direct-tcpip``,
``tcpip-forward``, ``streamlocal``, ``session-extra`` (a third session channel),
``pty-on-control``, ``shell`` (before attestation, or on an enrollment connection),
``channel`` (any other channel type) and ``global`` (any other global request).

A shell asked for without an accepted attestation gets
``kiosk.protocol.ATTESTATION_REFUSAL`` and exit status 1, unless the user is allowed
break-glass access and opened no control channel (audited ``break-glass``, alert).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncssh
from asyncssh.channel import SSHChannel

from kiosk import protocol

from . import locks, logs, metrics
from .attest import Attester, LockedError
from .audit import Auditor, JournalSink
from .auth import Authenticator, LoginOk, Refusal
from .config import Config
from .control import ControlChannel, ControlError
from .enrollment import token_hash
from .images import load_trusted_keys
from .live import Registry
from .lockwatch import LockWatcher
from .proxyproto import ProxyListener
from .session import PtySession, Who, new_session_id
from .store import open_store
from .store.base import Alert, Store, StoreError, User

log = logging.getLogger("auditbox.gateway")

KEX_ALGS = ("curve25519-sha256", "curve25519-sha256@libssh.org")
ENCRYPTION_ALGS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com",
                   "aes128-gcm@openssh.com", "aes256-ctr", "aes128-ctr")
MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
BENIGN_GLOBAL = frozenset({"keepalive@openssh.com", "no-more-sessions@openssh.com"})
KNOWN_CHANNELS = frozenset({"session", "direct-tcpip", "direct-streamlocal@openssh.com"})
MSG_GLOBAL_REQUEST = 80
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_CLOSE = 97
CLOSE_DELAY = 0.3


def replica_name(cfg: Config) -> str:
    return cfg.replica or socket.gethostname()


class Service:
    """What every connection of this process shares."""

    def __init__(self, cfg: Config, store: Store, auditor: Auditor) -> None:
        self.cfg, self.store, self.auditor = cfg, store, auditor
        self.replica = replica_name(cfg)
        self.auth = Authenticator(store, cfg.auth, auditor)
        self.attester = Attester(store, auditor, cfg, load_trusted_keys(cfg.trusted_build_keys))
        self.registry = Registry()
        self.connections: set[Connection] = set()
        self.writes: set[asyncio.Task[None]] = set()
        self.store_ok = True
        self.metrics = metrics.current()
        # argon2id (about 0.2 s of CPU each) runs in its own threads, one per core, so a
        # burst of log-ins (a replica failing over) never queues the store calls of
        # re-attestations and locks behind it in the default executor
        self.hashing = concurrent.futures.ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="argon2")

    async def hash_slot(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.hashing, fn, *args)

    def record(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an audit/alert write to its end, even if its connection closes first."""
        task = asyncio.get_running_loop().create_task(coro)
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def audit(self, event: str, actor: str, **data: Any) -> None:
        try:
            await asyncio.to_thread(self.auditor.log, event, actor, **data)
        except StoreError:
            log.warning("audit write failed: %s %s %s", event, actor, data)

    async def lock_for(self, user: str, device_id: str | None) -> tuple[str, str] | None:
        """(message, target kind) of a lock in force on this user or device."""
        try:
            active = await asyncio.to_thread(self.store.active_locks, time.time())
        except StoreError:
            return ("the gateway cannot read its store; try again later", "user")
        lock = locks.matching(active, user=user, device_id=device_id)
        return None if lock is None else (locks.message(lock), lock.target_kind)


# -- channel-level refusals that asyncssh does not hand to the application ----------------------
def _process_close_now(chan: AuditedChannel, pkttype: int, pktid: int, packet: Any) -> None:
    chan.on_peer_close()          # in packet order: an open that follows sees the place free
    SSHChannel._process_close(chan, pkttype, pktid, packet)


class AuditedChannel(asyncssh.SSHServerChannel[bytes]):
    """A server channel whose env, x11, agent and unknown requests are refused and
    reported (asyncssh accepts env requests by default; we refuse them), and which
    reports the peer's close as soon as it arrives."""

    on_refused: Callable[[str, str], None]
    on_peer_close: Callable[[], None]
    _packet_handlers = {**SSHChannel._packet_handlers, MSG_CHANNEL_CLOSE: _process_close_now}

    def _process_env_request(self, packet: Any) -> bool:
        name = packet.get_string()
        packet.get_string()
        packet.check_end()
        self.on_refused("env", name.decode("utf-8", "replace")[:100])
        return False

    def _process_x11_req_request(self, packet: Any) -> bool:
        self.on_refused("x11", "")
        return False

    def _process_auth_agent_req_at_openssh_dot_com_request(self, packet: Any) -> None:
        self.on_refused("agent", "")
        self._report_response(False)

    def _service_next_request(self) -> None:
        request = self._request_queue[0][0]
        name = "_process_" + request.replace(".", "_dot_").replace("@", "_at_").replace(
            "-", "_") + "_request"
        if request not in ("keepalive@openssh.com",) and getattr(self, name, None) is None:
            self.on_refused("request", request[:100])
        super()._service_next_request()


def _peek_string(packet: Any) -> str:
    idx = packet._idx
    try:
        return bytes(packet.get_string()).decode("ascii", "replace")[:100]
    except Exception:  # malformed: asyncssh's own handler refuses it
        return ""
    finally:
        packet._idx = idx


def _hook_refusals(conn: asyncssh.SSHServerConnection, report: Callable[[str, str], None]) -> None:
    """Report channel types and global requests that asyncssh refuses on its own."""
    handlers = dict(type(conn)._packet_handlers)
    open_handler = handlers[MSG_CHANNEL_OPEN]
    global_handler = handlers[MSG_GLOBAL_REQUEST]

    def on_open(c: Any, pkttype: int, pktid: int, packet: Any) -> Any:
        kind = _peek_string(packet)
        if kind not in KNOWN_CHANNELS:
            report("channel", kind)
        return open_handler(c, pkttype, pktid, packet)

    def on_global(c: Any, pkttype: int, pktid: int, packet: Any) -> Any:
        name = _peek_string(packet)
        if name not in BENIGN_GLOBAL and name not in ("tcpip-forward", "cancel-tcpip-forward",
                                                      "streamlocal-forward@openssh.com"):
            report("global", name)
        return global_handler(c, pkttype, pktid, packet)

    handlers[MSG_CHANNEL_OPEN] = on_open
    handlers[MSG_GLOBAL_REQUEST] = on_global
    conn._packet_handlers = handlers


# -- one connection -------------------------------------------------------------------------------
class Connection(asyncssh.SSHServer):
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source = "?"
        self.peer = "?"
        self.kstate = "start"            # start, password, code, token, refused, done
        self.user: User | None = None
        self.login_name = ""
        self.enrolling = False
        self.token_hash = ""
        self.sessions = 0
        self.control: ControlChannel | None = None
        self.attested = False
        self.device_id: str | None = None
        self.pty: PtySession | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.session_name: str | None = None

    # -- accept -------------------------------------------------------------------------------
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.source, self.peer = str(peer[0]), f"{peer[0]}:{peer[1]}"
        self.svc.connections.add(self)
        _hook_refusals(conn, self.refused)
        if len(self.svc.connections) > self.svc.cfg.listen.max_connections:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.svc.connections.discard(self)
        self.closing = True
        if self.pty is not None:
            self.pty.closed_by_terminal()
        for t in list(self.tasks):
            if self.pty is None or t is not self._pty_task:
                t.cancel()

    _pty_task: asyncio.Task[Any] | None = None

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def close(self, delay: float = 0.0) -> None:
        self.closing = True
        if self.conn is None:
            return
        conn = self.conn
        if delay:
            asyncio.get_running_loop().call_later(delay, conn.close)
        else:
            conn.close()

    @property
    def session_id(self) -> bytes:
        assert self.conn is not None
        return bytes(self.conn._session_id)      # the exchange hash H of the first kex

    @property
    def actor(self) -> str:
        return self.user.name if self.user else (self.login_name[:64] or "?")

    def refused(self, kind: str, detail: str) -> None:
        self.svc.record(self.svc.audit("channel.refused", self.actor, kind=kind, detail=detail,
                                       source=self.peer, device_id=self.device_id))

    # -- keyboard-interactive -----------------------------------------------------------------
    def begin_auth(self, username: str) -> bool:
        self.login_name = username
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    def _refuse(self, r: Refusal) -> tuple[str, str, str, list[tuple[str, bool]]]:
        self.svc.metrics.login(r.code)
        self.kstate = "refused"
        self.close(CLOSE_DELAY * 3)      # no second try on this connection
        return ("auditbox", r.instruction, "", [])

    async def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        if self.kstate != "start":
            self.close()
            return False
        self.login_name = username
        limited = await asyncio.to_thread(self.svc.auth.check_source, self.source)
        if limited is not None:
            return self._refuse(limited)
        if username == protocol.ENROLL_USER:
            self.kstate, self.enrolling = "token", True
            return ("auditbox", "", "", [("Enrollment token: ", True)])
        self.kstate = "password"
        return ("auditbox", "", "", [("Password: ", False)])

    async def validate_kbdint_response(self, username: str,
                                       responses: Sequence[str]) -> Any:
        state = self.kstate
        if state == "refused" or len(responses) != 1 or username != self.login_name:
            self.kstate = "refused"
            self.close(CLOSE_DELAY)
            return False
        answer = responses[0][:1024]
        if state == "password":
            r = await self.svc.hash_slot(self.svc.auth.check_password, username, answer,
                                         self.source)
            if r is not None:
                return self._refuse(r)
            self.kstate = "code"
            return ("auditbox", "", "", [("One-time code: ", False)])
        if state == "code":
            res = await asyncio.to_thread(self.svc.auth.check_code, username, answer,
                                          self.source)
            if isinstance(res, LoginOk):
                self.svc.metrics.login("ok")
                self.user, self.kstate = res.user, "done"
                return True
            return self._refuse(res)
        if state == "token":
            r = await asyncio.to_thread(self.svc.auth.check_token, answer, self.source)
            if r is not None:
                return self._refuse(r)
            self.svc.metrics.login("token-ok")
            self.token_hash, self.kstate = token_hash(answer), "done"
            return True
        return False

    def auth_completed(self) -> None:
        # the session's id exists from here, so attestations are filed under it
        self.session_name = new_session_id(time.time())
        limit = self.svc.cfg.attestation.hello_timeout + self.svc.cfg.attestation.deadline + 5
        self.spawn(self._admission_deadline(limit))

    async def _admission_deadline(self, seconds: float) -> None:
        """An authenticated connection that neither attests nor starts a session goes."""
        await asyncio.sleep(seconds)
        if self.pty is None and not self.attested and not self.closing:
            await self.svc.audit("connection.timeout", self.actor, source=self.peer)
            self.close()

    # -- channels -----------------------------------------------------------------------------
    def session_requested(self) -> Any:
        assert self.conn is not None
        if self.sessions >= 2 or self.kstate != "done":
            self.refused("session-extra", f"session channel #{self.sessions + 1}")
            return False
        self.sessions += 1              # open session channels; closing one frees its place
        chan = self.conn.create_server_channel(encoding=None)
        chan.__class__ = AuditedChannel          # same object, our request handlers
        audited: AuditedChannel = chan  # type: ignore[assignment]
        audited.on_refused = self.refused
        session = SessionChannel(self)
        audited.on_peer_close = session.release
        return chan, session

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> bool:
        self.refused("direct-tcpip", f"{dest_host}:{dest_port}"[:100])
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self.refused("tcpip-forward", f"{listen_host}:{listen_port}"[:100])
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self.refused("streamlocal", dest_path[:100])
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self.refused("streamlocal", listen_path[:100])
        return False

    # -- control channel: attestation or enrollment --------------------------------------------
    def start_control(self, ctrl: ControlChannel) -> None:
        self.control = ctrl
        ctrl.on_alert = self._terminal_alert
        self.spawn(self._enroll(ctrl) if self.enrolling else self._attest(ctrl))

    async def _enroll(self, ctrl: ControlChannel) -> None:
        try:
            await self.svc.attester.enroll(ctrl, self.token_hash, self.peer, self.session_id)
            self.svc.metrics.attestation("enroll", "ok")
        except ControlError as exc:
            self.svc.metrics.attestation("enroll", "refused", exc.step)
            ctrl.refuse(exc.step, exc.message)
        self.close(CLOSE_DELAY)

    async def _attest(self, ctrl: ControlChannel) -> None:
        assert self.user is not None
        user = self.user.name
        try:
            device = await self.svc.attester.login(
                ctrl, user, self.session_id, lambda dev: self.svc.lock_for(user, dev),
                self.session_name)
        except ControlError as exc:
            self.svc.metrics.attestation("login", "refused", exc.step)
            ctrl.refuse(exc.step, exc.message)
            self.close(CLOSE_DELAY)
            return
        except LockedError as exc:
            self.svc.metrics.attestation("login", "refused", "locked")
            ctrl.send({"type": "locked", "message": exc.message[:2000], "target": exc.target})
            await self.svc.audit("login.locked", user, source=self.peer, stage="attestation")
            self.close(CLOSE_DELAY)
            return
        self.svc.metrics.attestation("login", "ok")
        self.device_id, self.attested, ctrl.accepted = device.device_id, True, True
        interval = self.svc.cfg.attestation.reattest_interval
        ctrl.send({"type": "accepted", "device_id": device.device_id, "next": int(interval)})
        await self.svc.audit("login.attested", user, device_id=device.device_id,
                             source=self.peer)
        while not self.closing:
            await asyncio.sleep(interval)
            if self.closing:
                return
            try:
                await self.svc.attester.reattest(ctrl, device.device_id, self.session_id,
                                                 self.session_name or "-", user)
                self.svc.metrics.attestation("reattest", "ok")
            except ControlError as exc:
                self.svc.metrics.attestation("reattest", "refused", exc.step)
                ctrl.refuse(exc.step, exc.message)
                await self.end(f"auditbox: refused at re-attestation ({exc.step}): "
                               f"{exc.message}", f"reattest:{exc.step}")
                return

    def _terminal_alert(self, kind: str, detail: str) -> None:
        who = self.actor

        def write() -> None:
            self.svc.store.add_alert(Alert(time.time(), f"terminal:{kind}", "warning", "alert",
                                           detail, who, self.device_id, self.session_name))
            self.svc.auditor.log("terminal.alert", who, kind=kind, detail=detail,
                                 device_id=self.device_id)

        async def run() -> None:
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(write)

        self.svc.record(run())

    def notify(self, msg: dict[str, Any]) -> None:
        if self.control is not None and self.control.accepted:
            self.control.send(msg)

    # -- the PTY session -------------------------------------------------------------------------
    def shell_allowed(self) -> str | None:
        """None if a shell may start now, else why not."""
        if self.enrolling:
            return "enrollment"
        if self.attested:
            return None
        assert self.user is not None
        if self.user.break_glass and self.control is None:
            return None
        return "attestation"

    async def start_pty(self, chan: asyncssh.SSHServerChannel[bytes], term: str, cols: int,
                        rows: int, sc: SessionChannel) -> PtySession | None:
        assert self.user is not None
        user = self.user
        locked = await self.svc.lock_for(user.name, self.device_id)
        if locked is not None:
            text = f"auditbox: locked: {locked[0]}"
            chan.write(("\r\n" + text + "\r\n").encode())
            chan.exit(1)
            self.close(CLOSE_DELAY)
            return None
        break_glass = not self.attested
        if break_glass:
            await self.svc.audit("break-glass", user.name, source=self.peer)
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.svc.store.add_alert, Alert(
                    time.time(), "break-glass", "critical", "alert",
                    f"break-glass log-in without attestation from {self.peer}", user.name))
        who = Who(user.name, user.upstream_user, self.device_id, self.peer, break_glass,
                  self.svc.replica)
        self.pty = PtySession(self.svc.cfg, self.svc.store, self.svc.auditor, self.svc.registry,
                              who, chan, term, cols, rows, self.notify, self.close,
                              self.session_name)
        if sc.early:
            self.pty.data_received(sc.early)
            sc.early = b""
        self._pty_task = self.spawn(self.pty.run())
        return self.pty

    async def end(self, message: str, reason: str, locked: str | None = None) -> None:
        """End this connection's session (or the connection) showing ``message``."""
        if self.pty is not None:
            await self.pty.end(message, reason, locked)
        else:
            if locked is not None:
                self.notify({"type": "locked", "message": message[:2000], "target": locked})
            self.close(CLOSE_DELAY)

    async def refuse_shell(self, chan: asyncssh.SSHServerChannel[bytes], why: str) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            chan.write((protocol.ATTESTATION_REFUSAL + "\r\n").encode())
            chan.exit(1)
        self.refused("shell", why)
        self.close(CLOSE_DELAY)


class SessionChannel(asyncssh.SSHServerSession[bytes]):
    """A session channel: it becomes the control channel or the PTY session."""

    def __init__(self, owner: Connection) -> None:
        self.owner = owner
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.role: str | None = None          # control | pty | refused
        self.control: ControlChannel | None = None
        self.term: tuple[str, int, int] | None = None
        self.refusal = ""
        self.early = b""
        self.released = False

    def release(self) -> None:
        """This channel no longer counts against the connection's two session channels."""
        if not self.released:
            self.released = True
            self.owner.sessions -= 1

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Any) -> bool:
        if self.role == "control":
            self.owner.refused("pty-on-control", term_type[:40])
            return False
        self.term = (term_type[:64] or "xterm", max(1, term_size[0] or 80),
                     max(1, term_size[1] or 24))
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        o = self.owner
        if (subsystem != protocol.SUBSYSTEM or o.control is not None or self.term is not None
                or self.role is not None):
            o.refused("subsystem", subsystem[:100])
            return False
        self.role = "control"
        self.control = ControlChannel(o.svc.cfg.attestation.max_evidence_bytes)
        assert self.chan is not None
        self.control.connection_made(self.chan)
        o.start_control(self.control)
        return True

    def exec_requested(self, command: str) -> bool:
        self.owner.refused("exec", command[:200])
        return False

    def shell_requested(self) -> bool:
        o = self.owner
        if self.role is not None or o.pty is not None:
            o.refused("shell", "second shell")
            return False
        why = o.shell_allowed()
        if why == "enrollment":
            o.refused("shell", "on an enrollment connection")
            return False
        self.role = "pty" if why is None else "refused"
        self.refusal = why or ""
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        if self.role == "refused":
            self.owner.spawn(self.owner.refuse_shell(self.chan, self.refusal))
        elif self.role == "pty":
            term, cols, rows = self.term or ("dumb", 80, 24)
            self.owner.spawn(self.owner.start_pty(self.chan, term, cols, rows, self))

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.control is not None:
            self.control.data_received(data, datatype)
        elif self.role == "pty":
            if self.owner.pty is None:
                self.early += data          # before the session object exists
            else:
                self.owner.pty.data_received(data)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int,
                              pixheight: int) -> None:
        if self.role == "pty" and self.owner.pty is not None:
            self.owner.pty.resized(max(1, width), max(1, height))
        elif self.term is not None:
            self.term = (self.term[0], max(1, width), max(1, height))

    def pause_writing(self) -> None:
        if self.owner.pty is not None and self.role == "pty":
            self.owner.pty.writable.clear()

    def resume_writing(self) -> None:
        if self.owner.pty is not None and self.role == "pty":
            self.owner.pty.writable.set()

    def eof_received(self) -> bool:
        if self.control is not None:
            return self.control.eof_received()
        return True          # keep the channel: the gateway closes it, after its message

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        if self.control is not None:
            self.control.connection_lost(exc)
        elif self.role == "pty" and self.owner.pty is not None:
            self.owner.pty.closed_by_terminal()


# -- serving --------------------------------------------------------------------------------------
def _proxy(cfg: Config) -> dict[str, Any]:
    """With listen.proxy_protocol_from, our listener reads PROXY v2 headers first."""
    trusted = cfg.listen.proxy_protocol_from
    return {"tunnel": ProxyListener(trusted)} if trusted else {}


async def start(cfg: Config, store: Store, auditor: Auditor) -> tuple[Any, Service, LockWatcher]:
    """Listen; return (asyncssh server, service, lock watcher)."""
    svc = Service(cfg, store, auditor)
    orphans = await asyncio.to_thread(store.end_orphan_sessions, svc.replica, time.time(),
                                      "gateway-restart")
    for sid in orphans:
        await svc.audit("session.end", "system", session=sid, reason="gateway-restart")
    server = await asyncssh.create_server(
        lambda: Connection(svc), cfg.listen.address, cfg.listen.port,
        server_host_keys=[str(cfg.host_key)], kex_algs=list(KEX_ALGS),
        encryption_algs=list(ENCRYPTION_ALGS), mac_algs=list(MAC_ALGS),
        compression_algs=["none"], signature_algs=["ssh-ed25519"],
        password_auth=False, public_key_auth=False, host_based_auth=False, kbdint_auth=True,
        gss_host=None, allow_pty=True, x11_forwarding=False, agent_forwarding=False,
        line_editor=False, encoding=None, login_timeout=cfg.listen.login_timeout,
        keepalive_interval=60, keepalive_count_max=3, server_version="auditbox",
        backlog=1024, reuse_address=True, **_proxy(cfg))
    watcher = LockWatcher(store, svc)
    watcher.start()
    svc.metrics.bind(sessions=lambda: len(svc.registry), connections=lambda: len(svc.connections),
                     attested=lambda: sum(1 for c in svc.connections if c.attested),
                     store_ok=lambda: svc.store_ok, listening=lambda: watcher.listening)
    previous = await asyncio.to_thread(_last_config_sha256, store, svc.replica)
    await svc.audit("gateway.start", "system", replica=svc.replica,
                    listen=f"{cfg.listen.address}:{cfg.listen.port}", pid=os.getpid(),
                    config=str(cfg.path.absolute()) if cfg.path else None,
                    config_sha256=cfg.sha256 or None)
    if previous and cfg.sha256 and previous != cfg.sha256:
        log.warning("the configuration changed since this replica's last start "
                    "(sha256 %s..., was %s...)", cfg.sha256[:12], previous[:12])
        await svc.audit("config.changed", "system", replica=svc.replica,
                        config=str(cfg.path.absolute()) if cfg.path else None,
                        previous_sha256=previous, config_sha256=cfg.sha256)
    return server, svc, watcher


def _last_config_sha256(store: Store, replica: str) -> str | None:
    """The config digest this replica recorded at its last start (None: never recorded)."""
    try:
        for e in store.audit_latest("gateway.start", 200):
            if e.data.get("replica") == replica and e.data.get("config_sha256"):
                return str(e.data["config_sha256"])
    except StoreError:
        pass
    return None


def _health(svc: Service, watcher: LockWatcher) -> tuple[bool, dict[str, Any]]:
    """/healthz: serving while the store answers (new log-ins fail closed otherwise)."""
    return svc.store_ok, {
        "replica": svc.replica, "store": "ok" if svc.store_ok else "unreadable",
        "lock_listen": watcher.listening, "connections": len(svc.connections),
        "sessions": len(svc.registry), "uptime_s": round(time.time() - svc.metrics.started)}


async def serve_forever(cfg: Config, ready: Callable[[int], None] | None = None) -> int:
    logs.setup(cfg.log.format, replica_name(cfg))
    # store calls wait on PostgreSQL, not the CPU: as many threads as pooled connections
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="store"))
    store = await asyncio.to_thread(open_store, cfg.database)
    try:
        store.claim_serving()          # SQLite: one serving process per file (StoreBusy)
    except StoreError:
        store.close()
        raise
    metrics.instrument_store(store)
    journal: JournalSink | None = JournalSink() if cfg.audit.journal else None
    if cfg.log.format == "json":
        journal = logs.LoggingJournal(cfg.audit.journal)
    auditor = Auditor(store, replica_name(cfg), journal)
    web = None
    if cfg.web is not None:                   # the console (gateway/web/), same process
        from .web.service import WebConsole
        web = WebConsole(cfg, store, auditor, Registry())
    server, svc, watcher = await start(cfg, store, auditor)
    if web is not None:
        web.console.registry = svc.registry
        await web.start()
    port = server.sockets[0].getsockname()[1]
    metrics_http: metrics.MetricsServer | None = None
    if cfg.metrics.port is not None:
        metrics_http = metrics.MetricsServer(svc.metrics, lambda: _health(svc, watcher),
                                             cfg.metrics.address, cfg.metrics.port)
        mport = await metrics_http.start()
        log.info("metrics on http://%s:%d/metrics and /healthz", cfg.metrics.address, mport,
                 extra={"metrics_port": mport})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if cfg.log.format == "json":
        log.info("listening on %s:%d as %s", cfg.listen.address, port, svc.replica,
                 extra={"port": port})
    else:
        print(f"auditbox gateway: listening on {cfg.listen.address}:{port} as {svc.replica}",
              file=sys.stderr, flush=True)
    for warning in svc.attester.policy().warnings():
        if cfg.log.format == "json":
            log.warning("%s", warning)
        else:
            print(f"auditbox gateway: WARNING: {warning}", file=sys.stderr, flush=True)
        await svc.audit("gateway.warning", "system", warning=warning)
    if ready is not None:
        ready(port)
    await stop.wait()
    if metrics_http is not None:
        metrics_http.close()
    server.close()
    if web is not None:
        await web.stop()
    for c in list(svc.connections):
        await c.end("auditbox: the gateway is shutting down", "gateway-stop")
    await asyncio.sleep(0.5)
    if svc.writes:
        await asyncio.wait(svc.writes, timeout=5)
    watcher.stop()
    await svc.audit("gateway.stop", "system", replica=svc.replica)
    store.close()
    return 0
