"""Enrollment and attestation over SSH: tokens, session binding, re-attestation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.tpm2 import Tpm2Backend
from attestation.tpm_structs import TPM_ALG_SHA256
from kiosk.gateway_link import AttestationRefused, BackendAgent, BadToken
from tests.attestation.attest_helpers import build_log, encode_log
from tests.gateway.gwharness import Sshd, World, fresh_world, read_until
from tests.gateway.swtpm import start_swtpm
from tests.tools import require


class OtherSession(BackendAgent):
    """A terminal whose quotes are bound to another SSH session (a relay)."""

    def quote(self, nonce: bytes, session_id: bytes) -> bytes:
        return super().quote(nonce, hashlib.sha256(b"another" + session_id).digest())


def test_soft_enrollment_over_ssh_and_token_reuse(world: World) -> None:
    agent = BackendAgent(world.soft_backend("enroll-1"))
    token = world.token("soft")
    link = world.link()
    link.enroll_login(token)
    done = link.enroll(agent, token)
    link.close()
    assert done.device_id == agent.device_id and done.mode == "soft"
    assert done.image_id == "img-test"
    with world.store() as s:
        dev = s.get_device(agent.device_id)
    assert dev is not None and dev.status == "active" and dev.mode == "soft"
    # the token enrolled one device once: a second use is refused at log-in
    with pytest.raises(BadToken):
        world.link().enroll_login(token)


def test_unknown_token_refused(world: World) -> None:
    with pytest.raises(BadToken):
        world.link().enroll_login("AAAA-BBBB-CCCC-DDDD-EEEE-FFFF")


def test_token_for_tpm2_refuses_a_soft_request(world: World) -> None:
    agent = BackendAgent(world.soft_backend("enroll-2"))
    token = world.token("tpm2")
    link = world.link()
    link.enroll_login(token)
    with pytest.raises(AttestationRefused) as info:
        link.enroll(agent, token)
    assert info.value.step == "enrollment" and "tpm2" in info.value.message
    link.close()


def test_evidence_for_another_session_refused(world: World) -> None:
    good = world.enroll_soft("relay")
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    with pytest.raises(AttestationRefused) as info:
        link.attest(OtherSession(good.backend))
    assert info.value.step == "qualifying_data"
    link.close()
    refused = world.audit_events("attest.refused")
    assert refused[-1].data["device_id"] == good.device_id
    assert refused[-1].data["step"] == "qualifying_data"


def test_unenrolled_terminal_refused(world: World) -> None:
    agent = BackendAgent(world.soft_backend("never-enrolled"))
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    with pytest.raises(AttestationRefused) as info:
        link.attest(agent)
    assert info.value.step == "enrollment"


class FailLater(BackendAgent):
    """Quotes correctly once, then answers for another session (or not at all)."""

    def __init__(self, backend: Any, how: str) -> None:
        super().__init__(backend)
        self.how = how
        self.calls = 0

    def quote(self, nonce: bytes, session_id: bytes) -> bytes:
        self.calls += 1
        if self.calls == 1:
            return super().quote(nonce, session_id)
        if self.how == "late":
            time.sleep(4)
        return super().quote(nonce, b"\x00" * 32)


@pytest.fixture(scope="module")
def fast_world(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = fresh_world(tmp_path_factory.mktemp("fast"), sshd,
                    extra="  reattest_interval: 5s\n  deadline: 2s\n")
    try:
        yield w
    finally:
        w.stop()


@pytest.mark.parametrize("how, step", [("wrong", "qualifying_data"), ("late", "timeout")])
def test_failed_reattestation_ends_a_live_session(fast_world: World, how: str,
                                                  step: str) -> None:
    w = fast_world
    agent = FailLater(w.enroll_soft(f"reattest-{how}").backend, how)
    acc = w.add_user()
    link = w.link()
    refusals: list[tuple[str, str]] = []
    got = threading.Event()
    link.on_refused = lambda s, m: (refusals.append((s, m)), got.set())
    link.login(acc.name, acc.password, acc.code())
    assert link.attest(agent).next == 5
    chan = link.open_shell()
    chan.send(b"echo alive\n")
    read_until(chan, b"alive")
    out = read_until(chan, b"re-attestation", timeout=20)
    assert f"refused at re-attestation ({step})".encode() in out
    assert got.wait(5) and refusals[0][0] == step
    deadline = time.monotonic() + 5
    while not chan.exit_status_ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chan.recv_exit_status() == 1
    link.close()
    assert w.wait_event("session.end", acc.name).data["reason"] == f"reattest:{step}"


def test_tpm2_enrollment_and_login_through_swtpm(world: World, tmp_path: Path) -> None:
    require(("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_pcrextend",
             "tpm2_activatecredential", "tpm2_quote"), need_root=False)
    with start_swtpm(tmp_path) as tcti:
        events = build_log()                     # the reference's image, Secure Boot on
        for pcr, _typ, dig, _data in events:
            subprocess.run(["tpm2_pcrextend", f"{pcr}:sha256={dig[TPM_ALG_SHA256].hex()}"],
                           env={**os.environ, "TPM2TOOLS_TCTI": tcti}, check=True,
                           capture_output=True)
        (tmp_path / "log.bin").write_bytes(encode_log(events, (TPM_ALG_SHA256,)))
        agent = BackendAgent(Tpm2Backend(tmp_path / "state", tcti=tcti,
                                         event_log_path=tmp_path / "log.bin"))
        token = world.token("tpm2")
        link = world.link()
        link.enroll_login(token)
        done = link.enroll(agent, token)       # MakeCredential / ActivateCredential inside
        link.close()
        assert done.mode == "tpm2" and done.device_id == agent.device_id
        acc = world.add_user()
        link = world.link()
        link.login(acc.name, acc.password, acc.code())
        assert link.attest(agent).device_id == agent.device_id
        chan = link.open_shell()
        chan.send(b"echo tpm-$((2*21))\n")
        read_until(chan, b"tpm-42")
        link.close()
        with pytest.raises(BadToken):
            world.link().enroll_login(token)


def test_terminal_alert_is_stored_and_audited(world: World) -> None:
    agent = world.enroll_soft("alerting")
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link.attest(agent)
    link.send_alert("keystroke-burst", "14 keys in 40 ms")
    entry = world.wait_event("terminal.alert", acc.name)
    assert entry.data["kind"] == "keystroke-burst" and entry.data["device_id"] == agent.device_id
    with world.store() as s:
        alerts = [a for a in s.list_alerts() if a.user == acc.name]
    assert [(a.rule, a.detail, a.device_id) for a in alerts] == [
        ("terminal:keystroke-burst", "14 keys in 40 ms", agent.device_id)]
    link.close()


def test_alert_before_acceptance_is_a_protocol_violation(world: World) -> None:
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link._open_control()
    link._send({"type": "alert", "kind": "local", "detail": "too early"})
    with pytest.raises(AttestationRefused) as info:
        link._expect("challenge")
    assert info.value.step == "protocol" and "alert before" in info.value.message
    link.close()


@pytest.mark.parametrize("raw, why", [
    (b"\x00\x00\x00\x00", "frame length 0"),
    (b"\x00\x01\x90\x00" + b"{" * 100, "frame length 102400"),     # 100 KiB before hello
    (b"\x00\x00\x00\x05[1,2]", "expected a JSON object"),
    (b"\x00\x00\x00\x0c{\"type\":\"x\"}", "unknown type"),
])
def test_malformed_control_frames_end_the_connection(world: World, raw: bytes,
                                                     why: str) -> None:
    acc = world.add_user()
    link = world.link()
    link.login(acc.name, acc.password, acc.code())
    link._open_control()
    assert link._control is not None
    link._control.sendall(raw)
    with pytest.raises(AttestationRefused) as info:
        link._expect("challenge")
    assert info.value.step == "protocol" and why in info.value.message
    deadline = time.monotonic() + 5
    assert link.transport is not None
    while link.transport.is_active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not link.transport.is_active()            # and the gateway hung up
