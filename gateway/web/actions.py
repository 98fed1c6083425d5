"""What an admin does from the console (POST, behind the guard's role and CSRF checks).

Every action goes through the same code the CLI uses where there is such code
(gateway/locks.py for locks, gateway/enrollment.py for tokens, gateway/images.py for
images) and is written to the audit log with the acting console user as actor
(``web:<name>``). A lock added here reaches live sessions the way a CLI lock does: the
store's lock version moves and every replica's lock watcher ends matching sessions
(250 ms poll).
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from .. import enrollment, images, locks, passwords, totp
from ..config import ENROLL_USER, parse_duration
from ..store.base import StoreConflict, User
from .console import Console
from .guard import Refused, html, see_other
from .logins import ADMIN, VIEW, WebLogin

Form = dict[str, str]
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
ROLES = ("auditor", "observer", "admin")
MAX_TTL = 365 * 86400


def _reason(form: Form) -> str:
    reason = form.get("reason", "").strip()
    problem = locks.check_reason(reason)
    if problem:
        raise Refused(400, f"reason: {problem}")
    return reason


def _ttl(form: Form, default: str = "") -> float | None:
    text = form.get("ttl", default).strip()
    if not text:
        return None
    seconds = parse_duration(text)
    if seconds is None or not 0 < seconds <= MAX_TTL:
        raise Refused(400, f"ttl: {text[:20]!r} is not a duration like 30m, 4h, 7d")
    return seconds


def _lock(c: Console, login: WebLogin, kind: str, target: str, form: Form) -> int:
    lock_id = locks.add_lock(c.store, c.auditor, kind, target, _reason(form), login.actor,
                             ttl=_ttl(form))
    login.flash.append(f"lock {lock_id} on {kind} {target} added; its sessions end now")
    return lock_id


def _unlock(c: Console, login: WebLogin, kind: str, target: str) -> None:
    gone = [lk.id for lk in c.store.active_locks(time.time())
            if lk.target_kind == kind and lk.target == target and lk.id is not None
            and locks.remove_lock(c.store, c.auditor, lk.id, login.actor)]
    login.flash.append(f"{kind} {target}: removed lock(s) {', '.join(map(str, gone))}"
                       if gone else f"{kind} {target} had no lock")


# -- sessions -------------------------------------------------------------------------------

def session_lock(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    sid = request.path_params["session_id"]
    row = c.store.get_session(sid)
    if row is None:
        raise Refused(404, f"no session {sid!r}")
    kind = form.get("target", "device" if row.device_id else "user")
    if kind == "device" and row.device_id:
        _lock(c, login, "device", row.device_id, form)
    elif kind == "user":
        _lock(c, login, "user", row.user, form)
    else:
        raise Refused(400, "target: must be device (of an attested session) or user")
    return see_other(f"/sessions/{sid}")


# -- devices ------------------------------------------------------------------------------

def _device_id(c: Console, request: Request) -> str:
    device_id = str(request.path_params["device_id"])
    if c.store.get_device(device_id) is None:
        raise Refused(404, f"no device {device_id!r}")
    return device_id


def device_lock(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    device_id = _device_id(c, request)
    _lock(c, login, "device", device_id, form)
    return see_other(f"/devices/{device_id}")


def device_unlock(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    device_id = _device_id(c, request)
    _unlock(c, login, "device", device_id)
    return see_other(f"/devices/{device_id}")


def device_revoke(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    device_id = _device_id(c, request)
    d = c.store.get_device(device_id)
    if d is not None and d.status != "revoked":
        c.store.update_device(device_id, status="revoked",
                              record={**d.record, "status": "revoked"})
        c.auditor.log("device.revoke", actor=login.actor, device_id=device_id)
        login.flash.append(f"device {device_id} revoked: its next attestation is refused")
    return see_other(f"/devices/{device_id}")


# -- users ----------------------------------------------------------------------------------

def _user(c: Console, request: Request) -> User:
    user = c.store.get_user(request.path_params["name"])
    if user is None:
        raise Refused(404, "no such user")
    return user


def _secret_page(c: Console, login: WebLogin, name: str, secret: str, what: str) -> Response:
    import qrcode
    import qrcode.image.svg

    uri = totp.provisioning_uri(secret, name)
    svg = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    return html(c, login, "secret.html", name=name, uri=uri, what=what,
                svg=svg.to_string(encoding="unicode"))


def user_add(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    name = form.get("name", "").strip()
    upstream = form.get("upstream", "").strip() or name
    role = form.get("role", "auditor")
    if not USER_NAME.fullmatch(name) or name == ENROLL_USER:
        raise Refused(400, f"name: {name[:40]!r} is not a valid user name "
                           f"(allowed: {USER_NAME.pattern}, not {ENROLL_USER})")
    if not USER_NAME.fullmatch(upstream):
        raise Refused(400, f"upstream: {upstream[:40]!r} is not a valid account name")
    if role not in ROLES:
        raise Refused(400, f"role: {role[:20]!r} (allowed: {', '.join(ROLES)})")
    password = form.get("password", "")
    problem = passwords.check_policy(password)
    if problem:
        raise Refused(400, f"password: {problem}")
    break_glass = form.get("break_glass") == "1"
    secret = totp.new_secret()
    try:
        c.store.add_user(User(name, passwords.hash_password(password), secret, upstream, role,
                              break_glass, time.time()))
    except StoreConflict:
        raise Refused(409, f"user {name!r} already exists") from None
    c.auditor.log("user.add", actor=login.actor, user=name, upstream=upstream, role=role,
                  break_glass=break_glass)
    return _secret_page(c, login, name, secret, "added")


def user_reset_code(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    user = _user(c, request)
    secret = totp.new_secret()
    c.store.update_user(user.name, totp_secret=secret, last_totp_step=-1)
    c.auditor.log("user.reset-otp", actor=login.actor, user=user.name)
    c.logins.end_user(user.name)
    return _secret_page(c, login, user.name, secret, "given a new one-time code secret")


def user_clear_lockout(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    user = _user(c, request)
    was = c.store.lockout_until("user", user.name, time.time())
    c.store.clear_lockout("user", user.name)
    c.store.clear_failures("user", user.name)
    c.auditor.log("user.unlock", actor=login.actor, user=user.name,
                  was_locked_out=was is not None)
    login.flash.append(f"user {user.name}: lockout cleared" if was is not None
                       else f"user {user.name} was not locked out; failures cleared")
    return see_other("/users")


def user_lock(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    _lock(c, login, "user", _user(c, request).name, form)
    return see_other("/users")


def user_unlock(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    _unlock(c, login, "user", _user(c, request).name)
    return see_other("/users")


# -- locks, alerts, tokens, images, audit -----------------------------------------------------

def lock_remove(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    lock_id = int(request.path_params["lock_id"])
    done = locks.remove_lock(c.store, c.auditor, lock_id, login.actor)
    login.flash.append(f"lock {lock_id} removed" if done else f"lock {lock_id} was not active")
    return see_other("/locks")


def alert_ack(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    alert_id = int(request.path_params["alert_id"])
    comment = form.get("comment", "").strip()
    problem = locks.check_reason(comment) if comment else "a comment is required"
    if problem:
        raise Refused(400, f"comment: {problem}")
    if c.store.ack_alert(alert_id, login.actor, comment, time.time()):
        c.auditor.log("alert.ack", actor=login.actor, id=alert_id, comment=comment)
        login.flash.append(f"alert {alert_id} acknowledged")
    else:
        login.flash.append(f"alert {alert_id} was already acknowledged")
    rule = form.get("rule", "")[:64]
    return see_other(f"/alerts?{urlencode({'rule': rule})}" if rule else "/alerts")


def token_create(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    mode = form.get("mode", "tpm2")
    if mode not in enrollment.MODES:
        raise Refused(400, f"mode: {mode[:10]!r} (allowed: {', '.join(enrollment.MODES)})")
    ttl = _ttl(form, "1h") or 3600.0
    text, tok = enrollment.create_token(c.store, c.auditor, mode, ttl, login.actor)
    now = time.time()
    rows = [(t, enrollment.token_state(t, now)) for t in reversed(c.store.list_tokens()[-200:])]
    return html(c, login, "tokens.html", rows=rows, created=(text, tok))


def image_revoke(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    image_id = request.path_params["image_id"]
    if c.store.get_image(image_id) is None:
        raise Refused(404, f"no image {image_id!r}")
    done = images.revoke_image(c.store, c.auditor, image_id, login.actor)
    login.flash.append(f"image {image_id} revoked" if done else f"{image_id} was already revoked")
    return see_other("/images")


def audit_verify(c: Console, request: Request, login: WebLogin, form: Form) -> Response:
    state = c.chain.verify_now()
    c.auditor.log("web.audit-verify", actor=login.actor,
                  ok=bool(state.result and state.result.ok), entries=state.last_seq)
    return see_other("/audit")


PERMISSION = {session_lock: ADMIN, device_lock: ADMIN, device_unlock: ADMIN,
              device_revoke: ADMIN, user_add: ADMIN, user_reset_code: ADMIN,
              user_clear_lockout: ADMIN, user_lock: ADMIN, user_unlock: ADMIN,
              lock_remove: ADMIN, alert_ack: ADMIN, token_create: ADMIN, image_revoke: ADMIN,
              audit_verify: VIEW}
