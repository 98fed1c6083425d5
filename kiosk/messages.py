"""Every message the kiosk shows for a refusal or failure, in one place (the auditor
guide lists them from here)."""

from __future__ import annotations

from typing import Any

from .screens import MessageView

AUTH_MESSAGES = {
    "bad-password": "Wrong user name or password.",
    "bad-code": "Wrong or expired one-time code (each code works once).",
    "locked-out": "Too many failed log-ins for this user.",
    "rate-limited": "Too many failed log-ins from this terminal.",
    "locked": "This account is locked by an administrator.",
    "unavailable": "The gateway cannot log anyone in right now. Try again later.",
    "bad-token": "The enrollment token is unknown, expired or already used.",
}

STEP_EXPLANATIONS = {
    "enrollment": "The gateway does not know this terminal (or it was revoked). An "
                  "administrator must enroll it: press F2 on the login screen.",
    "policy": "This terminal did not boot the image the gateway expects (a changed or "
              "unknown image, or changed firmware).",
    "revocation": "This terminal or its image has been revoked.",
    "clock": "This terminal's TPM clock went backwards (a reset or replay).",
    "timeout": "This terminal did not answer the gateway's check in time.",
    "protocol": "This terminal and the gateway disagreed about the protocol.",
    "store": "The gateway could not read its registry.",
}


def auth_message(data: dict[str, Any]) -> str:
    """One line for the login or enrollment screen."""
    code = data.get("code")
    if code in AUTH_MESSAGES:
        text = data.get("text") or ""
        base = AUTH_MESSAGES[code]
        # the gateway's own text adds detail (until when, retry after, the admin's message)
        same = text.lower().strip(" .") in base.lower()
        return base if not text or same else f"{base} {text}"
    if data.get("error") == "AgentError":
        return f"This terminal's attestation agent failed: {data.get('text')}"
    if data.get("error") in ("LinkError", "ProtocolError"):
        return f"Cannot reach the gateway: {data.get('text')}"
    return f"Log-in failed: {data.get('text') or data.get('error')}"


def failure_view(data: dict[str, Any]) -> MessageView | None:
    """A full-screen message for failures the auditor must acknowledge; None for the ones
    shown on the login screen's message line."""
    err = data.get("error")
    if err == "HostKeyMismatch":
        return MessageView(
            "The gateway could not be verified - refused",
            "The server at the gateway's address presented a host key that this terminal "
            "was not built to trust. The terminal refused to connect and sent nothing. "
            "Tell the administrator.\n\n" + str(data.get("text", "")), style="error")
    if err == "AttestationRefused":
        step = str(data.get("step", "?"))
        if step == "locked":
            return lock_view(str(data.get("message", "")), "device")
        explanation = STEP_EXPLANATIONS.get(
            step, "The gateway did not accept this terminal's measured boot.")
        return MessageView(
            f"Refused at attestation (step: {step})",
            f"{explanation}\n\nThe gateway said: {data.get('message', '')}\n\n"
            "Tell the administrator.", style="error")
    return None


def lock_view(message: str, target: str) -> MessageView:
    who = "This terminal" if target == "device" else "Your account"
    return MessageView(
        f"{who} has been locked",
        f"An administrator locked {who.lower()}.\n\nTheir message: {message or '(none)'}\n\n"
        "You cannot unlock it from here. Contact the administrator.", style="error")
