"""Log-in and log-out. The decision is the SSH log-in's (gateway/auth.py): password,
then one-time code, the same per-user and per-address failure counters, lockouts and
code replay guard; then the role must be one with console access."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..auth import LoginOk
from .console import Console
from .guard import (
    console_of,
    current_login,
    error_page,
    html,
    local_path,
    page,
    read_form,
    same_origin,
)
from .logins import COOKIE, LOGIN_COOKIE, ROLES, VIEW, WebLogin


def _cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite="strict")


def _form(c: Console, request: Request, cookie: str, status: int = 200,
          message: str = "", user: str = "") -> Response:
    response = html(c, None, "login.html", http_status=status, message=message, user=user,
                    token=c.logins.login_token(cookie),
                    next=local_path(request.query_params.get("next")))
    _cookie(response, LOGIN_COOKIE, cookie, 3600)
    return response


async def login_form(request: Request) -> Response:
    c = console_of(request)
    login = await run_in_threadpool(current_login, c, request)
    if login is not None:
        return RedirectResponse("/", status_code=303)
    cookie = request.cookies.get(LOGIN_COOKIE) or c.logins.new_login_cookie()
    if len(cookie) > 100:
        cookie = c.logins.new_login_cookie()
    return _form(c, request, cookie)


async def login_submit(request: Request) -> Response:
    c = console_of(request)
    form = await read_form(request)
    if form is None:
        return error_page(c, None, 415, "forms must be url-encoded")
    return await run_in_threadpool(_login, c, request, form)


def _login(c: Console, request: Request, form: dict[str, str]) -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    source = request.client.host if request.client else "?"
    name = form.get("user", "").strip()[:64]
    if not (same_origin(request) and c.logins.check_login_token(cookie, form.get("token"))):
        c.auditor.log("web.csrf-refused", actor=f"web:{name or '?'}", path="/login",
                      source=source)
        return error_page(c, None, 403, "the log-in form's security token is missing or "
                                        "wrong; reload the page and try again")
    refusal = c.auth.check_source(source) or c.auth.check_password(
        name, form.get("password", "")[:1024], source)
    if refusal is None:
        result = c.auth.check_code(name, form.get("code", "")[:16], source)
        if isinstance(result, LoginOk):
            return _logged_in(c, request, result.user.name, result.user.role, source, cookie)
        refusal = result
    return _form(c, request, cookie, 401, refusal.text, name)


def _logged_in(c: Console, request: Request, name: str, role: str, source: str,
               cookie: str) -> Response:
    if role not in ROLES:
        c.auditor.log("web.login-refused", actor=f"web:{name}", source=source, role=role)
        return _form(c, request, cookie, 403, "this account has no console access", name)
    value, login = c.logins.create(name, role, source)
    c.auditor.log("web.login", actor=login.actor, source=source, role=role)
    response = RedirectResponse(local_path(request.query_params.get("next")), status_code=303)
    _cookie(response, COOKIE, value, int(c.logins.ttl))
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


@page(VIEW)
def logout(c: Console, request: Request, login: WebLogin, form: dict[str, str]) -> Response:
    c.logins.end(login)
    c.auditor.log("web.logout", actor=login.actor)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
