"""The kiosk's side of the local attestation agent service (attestation/agent_service.py).

``AgentClient`` is also the agent object the gateway link uses: ``device_id``, ``mode``,
``quote(nonce, session_id)``, ``enrollment_request(token)``, ``activate(credential)``.
"""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass
from typing import Any

from attestation.framing import FrameError, recv_frame, send_frame

MAX_ANSWER = 8 * 1024 * 1024
TIMEOUT = 60.0        # a TPM quote under emulation can take seconds


class AgentError(Exception):
    pass


@dataclass(frozen=True)
class AgentInfo:
    device_id: str
    mode: str
    persistent: bool
    enrolled: dict[str, Any] | None


class AgentClient:
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._info: AgentInfo | None = None

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                send_frame(s, request)
                answer = recv_frame(s, MAX_ANSWER)
        except (OSError, FrameError) as exc:
            raise AgentError(f"attestation agent: {exc}") from None
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            err = answer.get("error") if isinstance(answer, dict) else None
            raise AgentError(f"attestation agent: {err or 'bad answer'}")
        return answer

    def info(self, refresh: bool = False) -> AgentInfo:
        if self._info is None or refresh:
            a = self.call({"op": "info"})
            enrolled = a.get("enrolled")
            self._info = AgentInfo(str(a.get("device_id")), str(a.get("mode")),
                                   a.get("persistent") is True,
                                   enrolled if isinstance(enrolled, dict) else None)
        return self._info

    # -- the agent object of the gateway link ------------------------------------------
    @property
    def device_id(self) -> str:
        return self.info().device_id

    @property
    def mode(self) -> str:
        return self.info().mode

    def quote(self, nonce: bytes, session_id: bytes) -> bytes:
        a = self.call({"op": "quote", "nonce": nonce.hex(), "session": session_id.hex()})
        try:
            return base64.b64decode(str(a["evidence"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise AgentError(f"attestation agent: bad evidence: {exc}") from None

    def enrollment_request(self, token: str) -> dict[str, Any]:
        request = self.call({"op": "enroll", "token": token}).get("request")
        if not isinstance(request, dict):
            raise AgentError("attestation agent: bad enrollment request")
        return request

    def activate(self, credential: bytes) -> bytes:
        a = self.call({"op": "activate", "credential": base64.b64encode(credential).decode()})
        try:
            return base64.b64decode(str(a["secret"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise AgentError(f"attestation agent: bad secret: {exc}") from None

    # -- what the kiosk shows ------------------------------------------------------------
    def mark_enrolled(self, image_id: str | None) -> None:
        """Record (image_id) or forget (None) this terminal's enrollment."""
        mark = None if image_id is None else {"device_id": self.device_id, "image_id": image_id}
        self.call({"op": "mark", "enrolled": mark})
        self.info(refresh=True)
