"""The console's pages (GET, read only): overview, devices, users, sessions, alerts,
audit, locks, enrollment tokens, images. Each handler runs in a worker thread behind
the guard (gateway/web/guard.py) and renders one template."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from .. import locks
from ..enrollment import token_state
from ..store.base import Lock, SessionRow
from .console import Console
from .guard import Refused, html
from .logins import ADMIN, VIEW, WebLogin
from .queries import PAGE

Form = dict[str, str]


@dataclass(frozen=True)
class LiveRow:
    """A live session as the console lists it."""

    id: str
    user: str
    device_id: str | None
    source: str
    started_at: float
    bytes_out: int
    budget_used: float
    anomaly_score: float
    break_glass: bool
    here: bool                 # on this replica: the live view and lock reach it

    @property
    def seconds(self) -> float:
        return time.time() - self.started_at


def live_rows(c: Console) -> list[LiveRow]:
    """This replica's sessions from the registry, then other replicas' from the store."""
    rows = [LiveRow(s.id, s.user, s.device_id, s.source, s.started_at, s.bytes_out,
                    s.budget_used, s.anomaly_score, s.break_glass, True)
            for s in reversed(c.registry.sessions()) if not s.ended]
    mine = {r.id for r in rows}
    for r in c.queries.sessions(live=True, limit=200).rows:
        if r.id not in mine and r.replica != c.cfg.replica_name:
            rows.append(LiveRow(r.id, r.user, r.device_id, r.source, r.started_at, r.bytes_out,
                                r.budget_used, r.anomaly_score, r.break_glass, False))
    return rows


def arg(request: Request, name: str, limit: int = 100) -> str:
    return str(request.query_params.get(name, "")).strip()[:limit]


def offset_arg(request: Request) -> int:
    text = arg(request, "offset", 9)
    return int(text) if text.isdigit() else 0


def _locks_on(c: Console, kind: str, target: str) -> list[Lock]:
    return [lk for lk in c.store.active_locks(time.time())
            if lk.target_kind == kind and lk.target == target]


# -- overview -----------------------------------------------------------------------------

def overview(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    return html(c, login, "overview.html", live=live_rows(c),
                alerts=c.queries.alerts(open_only=True, limit=10),
                attention=c.queries.devices(attention=True, limit=10),
                devices_total=c.queries.device_count(), chain=c.chain.state,
                last_seq=c.queries.audit_last_seq())


# -- devices ------------------------------------------------------------------------------

STATUSES = ("", "active", "revoked")


def devices(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    status = arg(request, "status")
    if status not in STATUSES:
        raise Refused(400, f"unknown status {status!r}")
    search, attention = arg(request, "q"), arg(request, "attention") == "1"
    page = c.queries.devices(search, status, attention, offset_arg(request), PAGE)
    return html(c, login, "devices.html", page=page, q=search, status_filter=status,
                attention=attention, statuses=STATUSES)


def device(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    device_id = request.path_params["device_id"]
    d = c.store.get_device(device_id)
    if d is None:
        raise Refused(404, f"no device {device_id!r}")
    return html(c, login, "device.html", d=d, history=c.store.attestation_history(device_id, 50),
                locks=_locks_on(c, "device", device_id),
                sessions=c.queries.sessions(device_id=device_id, limit=10).rows)


# -- users (admin) ----------------------------------------------------------------------

def users(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    now = time.time()
    lockouts = {k: until for scope, k, until in c.store.list_lockouts(now) if scope == "user"}
    user_locks: dict[str, list[Lock]] = {}
    for lk in c.store.active_locks(now):
        if lk.target_kind == "user":
            user_locks.setdefault(lk.target, []).append(lk)
    return html(c, login, "users.html", users=c.store.list_users(), lockouts=lockouts,
                user_locks=user_locks, roles=("auditor", "observer", "admin"))


# -- sessions -----------------------------------------------------------------------------

def sessions(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    user = arg(request, "user", 64)
    ended = c.queries.sessions(live=False, user=user, offset=offset_arg(request))
    live = [r for r in live_rows(c) if not user or r.user == user]
    return html(c, login, "sessions.html", live=live, ended=ended, user=user)


def session(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    sid = request.path_params["session_id"]
    row: SessionRow | None = c.store.get_session(sid)
    if row is None:
        raise Refused(404, f"no session {sid!r}")
    live = c.registry.get(sid)
    here = live is not None and not live.ended
    locked = [*_locks_on(c, "user", row.user),
              *(_locks_on(c, "device", row.device_id) if row.device_id else [])]
    return html(c, login, "session.html", s=row, here=here, live=live, locks=locked,
                speeds=("0.5", "1", "2", "4", "8", "16"))


# -- alerts, audit, locks -----------------------------------------------------------------

def alerts(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    rule, open_only = arg(request, "rule"), arg(request, "open") == "1"
    return html(c, login, "alerts.html", rules=c.queries.alert_rules(), rule=rule,
                open_only=open_only,
                page=c.queries.alerts(rule, open_only, offset_arg(request)))


def audit(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    event, actor = arg(request, "event", 80), arg(request, "actor", 80)
    before_text = arg(request, "before", 18)
    before = int(before_text) if before_text.isdigit() else None
    entries = c.queries.audit(event, actor, before, PAGE)
    older = entries[-1].seq if len(entries) == PAGE else None
    return html(c, login, "audit.html", entries=entries, event=event, actor=actor,
                older=older, chain=c.chain.state, last_seq=c.queries.audit_last_seq())


def lock_state(lk: Lock, now: float) -> str:
    if lk.removed_at is not None:
        return f"removed by {lk.removed_by}"
    if lk.expires_at is not None and lk.expires_at <= now:
        return "expired"
    return "active"


def locks_page(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    now = time.time()
    rows = [(lk, lock_state(lk, now), locks.message(lk)) for lk in c.store.list_locks(200)]
    return html(c, login, "locks.html", rows=rows)


# -- enrollment tokens and images (admin) ------------------------------------------------

def tokens(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    now = time.time()
    rows = [(t, token_state(t, now)) for t in reversed(c.store.list_tokens()[-200:])]
    return html(c, login, "tokens.html", rows=rows, created=None)


def images(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    return html(c, login, "images.html", images=c.store.list_images())


PERMISSION = {overview: VIEW, devices: VIEW, device: VIEW, users: ADMIN, sessions: VIEW,
              session: VIEW, alerts: VIEW, audit: VIEW, locks_page: VIEW, tokens: ADMIN,
              images: ADMIN}
