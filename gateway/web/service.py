"""The console inside the gateway process: uvicorn on the event loop the SSH server runs
on, TLS from ``web.certificate``/``web.key``, sharing the server's store, auditor and
live-session registry (so the live view and the Lock button reach this replica's
sessions directly, and the lock watcher reaches the others)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn

from ..audit import Auditor
from ..config import Config
from ..live import Registry
from ..store.base import Store
from .app import create_app
from .chain import ChainWatch
from .console import Console
from .logins import Logins
from .tls import server_context

log = logging.getLogger("auditbox.gateway.web")


class _Server(uvicorn.Server):  # type: ignore[misc,unused-ignore]
    """uvicorn without its own signal handling: the gateway owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebConsole:
    def __init__(self, cfg: Config, store: Store, auditor: Auditor, registry: Registry) -> None:
        web = cfg.web
        if web is None:
            raise ValueError("the config has no web section")
        self.cfg = cfg
        self.ssl = server_context(cfg)
        self.chain = ChainWatch(store, web.audit_verify_interval)
        self.console = Console(cfg, store, auditor, registry,
                               Logins(web.session_ttl, web.idle_timeout), self.chain)
        self.app = create_app(self.console)
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[Any] | None = None

    def _socket(self) -> socket.socket:
        assert self.cfg.web is not None
        family = socket.AF_INET6 if ":" in self.cfg.web.address else socket.AF_INET
        # proto IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (with
        # proto 0, Nagle holds a small response's last segment for the client's delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.cfg.web.address, self.cfg.web.port))
        sock.listen(256)
        sock.set_inheritable(True)
        return sock

    async def start(self) -> int:
        """Listen and serve in the background; return the port."""
        sock = self._socket()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                server_header=False, date_header=True, proxy_headers=False,
                                ws="websockets-sansio", ws_max_size=4096,
                                ssl_context_factory=self._ssl,
                                timeout_keep_alive=30, limit_concurrency=500)
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()             # raises what stopped it
            await asyncio.sleep(0.02)
        self.chain.start()
        log.warning("web console on https://%s:%d", self.cfg.web.address if self.cfg.web
                    else "?", self.port)
        return self.port

    def _ssl(self, config: uvicorn.Config, default: Any) -> ssl.SSLContext:
        return self.ssl

    async def stop(self) -> None:
        self.chain.stop()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
