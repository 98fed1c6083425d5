"""The console's Starlette application: its routes, each behind the guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from . import actions, pages
from .console import STATIC, Console
from .guard import Guardrails, error_page, page
from .liveview import cast, live
from .login import login_form, login_submit, logout
from .logins import VIEW

PAGES: list[tuple[str, Callable[..., Response]]] = [
    ("/", pages.overview),
    ("/devices", pages.devices),
    ("/devices/{device_id}", pages.device),
    ("/users", pages.users),
    ("/sessions", pages.sessions),
    ("/sessions/{session_id}", pages.session),
    ("/alerts", pages.alerts),
    ("/audit", pages.audit),
    ("/locks", pages.locks_page),
    ("/tokens", pages.tokens),
    ("/images", pages.images),
]
ACTIONS: list[tuple[str, Callable[..., Response]]] = [
    ("/sessions/{session_id}/lock", actions.session_lock),
    ("/devices/{device_id}/lock", actions.device_lock),
    ("/devices/{device_id}/unlock", actions.device_unlock),
    ("/devices/{device_id}/revoke", actions.device_revoke),
    ("/users", actions.user_add),
    ("/users/{name}/reset-code", actions.user_reset_code),
    ("/users/{name}/clear-lockout", actions.user_clear_lockout),
    ("/users/{name}/lock", actions.user_lock),
    ("/users/{name}/unlock", actions.user_unlock),
    ("/locks/{lock_id:int}/remove", actions.lock_remove),
    ("/alerts/{alert_id:int}/ack", actions.alert_ack),
    ("/tokens", actions.token_create),
    ("/images/{image_id}/revoke", actions.image_revoke),
    ("/audit/verify", actions.audit_verify),
]


async def not_found(request: Request, exc: Any) -> Response:
    from .guard import console_of
    return error_page(console_of(request), None, 404, "no such page")


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/sessions/{session_id}/cast", page(VIEW)(cast), methods=["GET"]),
        WebSocketRoute("/sessions/{session_id}/live", live),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    for path, fn in PAGES:
        out.append(Route(path, page(pages.PERMISSION[fn])(fn), methods=["GET"]))
    for path, fn in ACTIONS:
        out.append(Route(path, page(actions.PERMISSION[fn])(fn), methods=["POST"]))
    return out


def create_app(console: Console) -> Starlette:
    app = Starlette(routes=routes(), exception_handlers={404: not_found})
    app.state.console = console
    app.add_middleware(Guardrails)
    return app
