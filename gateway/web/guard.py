"""Every console request passes here: security headers, a body cap, and the guard that
decides who may do what.

Headers on every HTTP answer: a strict Content-Security-Policy (scripts, styles,
fonts and connections from this origin only, no inline script or style, no frames,
forms post only here), HSTS, nosniff, referrers only to this origin, no framing, a
same-origin opener and resource policy, ``Cache-Control: no-store`` for pages, and ``Server-Timing:
app;dur=<ms>`` (the time the server spent on the request; the benchmark reads it).

The guard (``page``): no valid log-in cookie -> 303 to /login; a role without the
permission -> 403; a POST must be a url-encoded form (64 KiB at most) that carries
the log-in's CSRF token, and whose Origin, when the browser sends one, is this
origin. Refusals of the last two are written to the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store.base import StoreError
from .console import Console
from .logins import COOKIE, ROLES, WebLogin, csrf_ok

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make Chrome send Origin: null
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), usb=(), payment=()",
}
MAX_BODY = 64 * 1024
MAX_FIELDS = 50

Handler = Callable[[Console, Request, WebLogin, dict[str, str]], Response]


class Refused(Exception):
    """Answer with an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyTooLarge(Exception):
    pass


class Guardrails:
    """ASGI middleware: security headers, Server-Timing, request body cap."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await _plain(send, 413, "request body too large")
            return
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise BodyTooLarge
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers[k] = v
                if "cache-control" not in headers:
                    static = scope["path"].startswith("/static/")
                    headers["cache-control"] = "no-cache" if static else "no-store"
                dur = (time.perf_counter() - t0) * 1000
                headers["server-timing"] = f"app;dur={dur:.2f}"
            await send(message)

        try:
            await self.app(scope, capped, with_headers)
        except BodyTooLarge:
            await _plain(send, 413, "request body too large")


async def _plain(send: Send, status: int, text: str) -> None:
    headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    headers += [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode()})


# -- pages -------------------------------------------------------------------------------

def console_of(conn: HTTPConnection) -> Console:
    c: Console = conn.app.state.console
    return c


def html(c: Console, login: WebLogin | None, template: str, /, http_status: int = 200,
         **values: Any) -> HTMLResponse:
    flash: list[str] = []
    if login is not None:
        flash, login.flash = login.flash, []
    return HTMLResponse(c.render(template, login=login, flash=flash, **values),
                        status_code=http_status)


def error_page(c: Console, login: WebLogin | None, status: int, message: str) -> HTMLResponse:
    return html(c, login, "error.html", http_status=status, status_code=status, message=message)


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site (no scheme, host or backslash), else default."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else default


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(local_path(path), status_code=303)


def to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = "/login" if here == "/" or request.method != "GET" else \
        f"/login?next={quote(here, safe='')}"
    return RedirectResponse(target, status_code=303)


def current_login(c: Console, conn: HTTPConnection) -> WebLogin | None:
    """The request's log-in, checked against the store (removed users and users whose
    role lost console access are logged out). Blocking: call from a worker thread."""
    login = c.logins.get(conn.cookies.get(COOKIE))
    if login is None:
        return None
    user = c.store.get_user(login.user)
    if user is None or user.role not in ROLES:
        c.logins.end_user(login.user)
        return None
    login.role = user.role
    return login


def same_origin(conn: HTTPConnection) -> bool:
    """False when the browser says the request comes from another site."""
    if conn.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = conn.headers.get("origin")
    return origin is None or origin == f"https://{conn.headers.get('host', '')}"


async def read_form(request: Request) -> dict[str, str] | None:
    """A POST's url-encoded fields (None: not url-encoded); {} for other methods."""
    if request.method != "POST":
        return {}
    if request.headers.get("content-type", "").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        return None
    data = await request.form(max_files=0, max_fields=MAX_FIELDS)
    return {k: v for k, v in data.items() if isinstance(v, str)}


def page(permission: str) -> Callable[[Handler], Callable[[Request], Any]]:
    """Wrap a blocking handler ``fn(console, request, login, form)`` in the guard."""
    def wrap(fn: Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            c = console_of(request)
            form = await read_form(request)
            if form is None:
                return error_page(c, None, 415, "forms must be url-encoded")
            return await run_in_threadpool(_guarded, fn, permission, c, request, form)
        endpoint.__name__ = fn.__name__
        return endpoint
    return wrap


def _guarded(fn: Handler, permission: str, c: Console, request: Request,
             form: dict[str, str]) -> Response:
    login: WebLogin | None = None
    try:
        login = current_login(c, request)
        if login is None:
            return to_login(request)
        if not login.may(permission):
            c.auditor.log("web.forbidden", actor=login.actor, path=request.url.path[:200],
                          method=request.method)
            return error_page(c, login, 403, "your role may not do this")
        if request.method == "POST" and not (same_origin(request)
                                             and csrf_ok(login, form.get("csrf"))):
            c.auditor.log("web.csrf-refused", actor=login.actor, path=request.url.path[:200],
                          origin=request.headers.get("origin", "")[:200])
            return error_page(c, login, 403, "the form's security token is missing or wrong; "
                                             "reload the page and try again")
        return fn(c, request, login, form)
    except Refused as r:
        return error_page(c, login, r.status, r.message)
    except StoreError:
        return error_page(c, login, 503, "the gateway cannot read its store; try again later")
