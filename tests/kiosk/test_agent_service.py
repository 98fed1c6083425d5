"""The attestation agent service over its real socket (soft backend): the kiosk's client,
the evidence it returns (checked by the real verifier), and refusals of bad requests."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation import canonical
from attestation.enroll import EnrollmentPolicy, TokenStore, begin_enrollment
from attestation.framing import recv_frame, send_frame
from attestation.nonces import NonceStore
from attestation.policy import Policy
from attestation.verifier import Verifier
from kiosk.agent_client import AgentClient, AgentError
from tests.kiosk.harness import AgentService


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AgentService]:
    a = AgentService(tmp_path)
    yield a
    a.stop()


def raw_call(path: Path, payload: bytes) -> Any:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        return recv_frame(s, 1 << 20)


def test_info_quote_verifies_and_enrollment(service: AgentService) -> None:
    client = AgentClient(str(service.socket))
    info = client.info()
    assert info.mode == "soft" and info.device_id.startswith("soft-")
    assert info.enrolled is None and info.persistent is False   # tmp dir: not a mount
    tokens = TokenStore()
    token = tokens.issue()
    request = client.enrollment_request(token)
    record, challenge = begin_enrollment(request, image_id="img-1",
                                         policy=EnrollmentPolicy(allow_soft=True), tokens=tokens)
    assert challenge is None and record["device_id"] == info.device_id
    # a quote for a nonce and session verifies with the enrolled key (the soft backend
    # measured no UKI here, so the verifier stops at policy, after every crypto check)
    verifier = Verifier(Policy(allow_soft=True), NonceStore(), {})
    nonce, session = verifier.nonces.issue(), os.urandom(32)
    evidence = client.quote(nonce, session)
    with pytest.raises(Exception) as exc:
        verifier.verify(evidence, record, nonce, session)
    assert getattr(exc.value, "step", None) == "policy", exc.value
    # the same evidence for another session fails at the binding
    nonce2 = verifier.nonces.issue()
    with pytest.raises(Exception) as exc:
        verifier.verify(client.quote(nonce2, session), record, nonce2, os.urandom(32))
    assert getattr(exc.value, "step", None) == "qualifying_data"
    # the enrollment mark survives the client and is refused for another device id
    client.mark_enrolled("img-1")
    assert AgentClient(str(service.socket)).info().enrolled == {
        "device_id": info.device_id, "image_id": "img-1"}
    with pytest.raises(AgentError, match="not this terminal"):
        client.call({"op": "mark", "enrolled": {"device_id": "soft-00", "image_id": "x"}})
    client.mark_enrolled(None)
    assert client.info(refresh=True).enrolled is None
    with pytest.raises(AgentError, match="tpm2"):
        client.activate(b"x")


@pytest.mark.parametrize("request_obj, error", [
    ({"op": "shell"}, "unknown request"),
    ({"op": "info", "extra": 1}, "unknown field"),
    ({"op": "quote", "nonce": "zz", "session": "00"}, "hex"),
    ({"op": "quote", "nonce": "", "session": "00"}, "must not be empty"),
    ({"op": "enroll", "token": "x" * 600}, "at most 512"),
])
def test_bad_requests_are_refused(service: AgentService, request_obj: dict[str, Any],
                                  error: str) -> None:
    answer = raw_call(service.socket, _frame(request_obj))
    assert answer["ok"] is False and error in answer["error"], answer
    assert AgentClient(str(service.socket)).info().mode == "soft"   # still serving


def test_bad_frames_are_refused(service: AgentService) -> None:
    big = struct.pack(">I", 1 << 20)          # over the 64 KiB request limit: body not read
    assert "outside" in raw_call(service.socket, big)["error"]
    body = b'{"op": "info"}'                   # not canonical JSON
    assert "canonical" in raw_call(service.socket, struct.pack(">I", len(body)) + body)["error"]
    with socket.socket(socket.AF_UNIX) as s:  # a client that hangs up mid-frame
        s.connect(str(service.socket))
        s.sendall(b"\x00\x00")
    assert AgentClient(str(service.socket)).info().mode == "soft"


def _frame(obj: dict[str, Any]) -> bytes:
    body = canonical.dumps(obj)
    return struct.pack(">I", len(body)) + body


def test_send_frame_round_trip() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_frame(a, {"x": [1, "y"]})
        assert recv_frame(b, 100) == {"x": [1, "y"]}
