"""Real TPM (swtpm) tests: agent enrollment, quotes, and cross-checks with tpm2-tools."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attest_helpers import (
    APP,
    TPM2_PCRS,
    Clock,
    build_log,
    encode_log,
    make_reference,
    new_verifier,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from swtpm_ca import SETUP_TOOLS, EkCa, make_ca, manufacture

from attestation import canonical, eventlog
from attestation.ekcert import load_ca_bundle
from attestation.enroll import EnrollmentPolicy, begin_enrollment, finish_enrollment
from attestation.errors import EnrollmentError, VerificationError
from attestation.evidence import Evidence, encode
from attestation.tpm2 import Tpm2Backend
from attestation.tpm_structs import TPM_ALG_SHA1, TPM_ALG_SHA256, parse_tpm2b_public
from attestation.verifier import qualifying_data
from tests.tools import require

TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_checkquote",
         "tpm2_eventlog", "tpm2_pcrextend", "tpm2_activatecredential")
pytestmark = [pytest.mark.swtpm]


@pytest.fixture(autouse=True)
def _tools() -> None:
    # skips outside CI where swtpm/tpm2-tools are missing; fails in CI
    require(TOOLS, need_root=False)


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="session")
def ek_ca(tmp_path_factory: pytest.TempPathFactory) -> EkCa:
    require(SETUP_TOOLS, need_root=False)
    return make_ca(tmp_path_factory.mktemp("ek-ca"))


@pytest.fixture
def swtpm(tmp_path: Path, ek_ca: EkCa) -> Iterator[str]:
    """A TPM manufactured with an EK certificate from ``ek_ca``."""
    manufacture(tmp_path / "swtpm", ek_ca)
    yield from _serve(tmp_path / "swtpm")


@pytest.fixture
def bare_swtpm(tmp_path: Path) -> Iterator[str]:
    """A TPM with no EK certificate (as a software TPM on a machine may be)."""
    (tmp_path / "bare").mkdir()
    yield from _serve(tmp_path / "bare")


def _serve(state: Path) -> Iterator[str]:
    state = state.resolve()
    port = _free_port_pair()
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port}", "--ctrl", f"type=tcp,port={port + 1}",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    tcti = f"swtpm:host=127.0.0.1,port={port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("swtpm did not start") from None
                time.sleep(0.05)
        yield tcti
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(tcti: str, *args: str) -> bytes:
    return subprocess.run(list(args), env={**os.environ, "TPM2TOOLS_TCTI": tcti},
                          check=True, capture_output=True).stdout


AUTH = hashlib.sha256(b"uki-A").digest()
CMDLINE = "roothash=aa console=ttyS0"


def _boot(tcti: str, path: Path, banks: tuple[int, ...] = (TPM_ALG_SHA256,)) -> list[Any]:
    """Measure a synthetic boot into the swtpm and write the matching event log."""
    events = build_log(AUTH, CMDLINE, banks)
    for pcr, _typ, dig, _data in events:
        spec = ",".join(("sha1=" if a == TPM_ALG_SHA1 else "sha256=") + dig[a].hex()
                        for a in banks)
        _run(tcti, "tpm2_pcrextend", f"{pcr}:{spec}")
    path.write_bytes(encode_log(events, banks))
    return events


def _ek_policy(ca: EkCa) -> EnrollmentPolicy:
    return EnrollmentPolicy(ek_ca_bundle=load_ca_bundle(ca.bundle))


def _enroll(backend: Tpm2Backend, policy: EnrollmentPolicy) -> dict[str, Any]:
    record, challenge = begin_enrollment(backend.enrollment_request(), image_id="img-A",
                                         policy=policy)
    assert challenge is not None and record["status"] == "pending"
    secret = backend.activate(canonical.b64d(challenge["credential"], "c", 4096))
    return finish_enrollment(record, secret)


@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_tpm2_good_path_and_checkquote(swtpm: str, ek_ca: EkCa, tmp_path: Path,
                                       alg: str) -> None:
    log = tmp_path / "log.bin"
    _boot(swtpm, log)
    backend = Tpm2Backend(tmp_path / "state", tcti=swtpm, ak_alg=alg, event_log_path=log)
    record = _enroll(backend, _ek_policy(ek_ca))
    assert record["status"] == "active" and record["ek_cert"] == "checked"
    ref = make_reference(Ed25519PrivateKey.generate(), tmp_path)
    clock = Clock()
    v = new_verifier(ref, clock)
    session = os.urandom(32)
    n = v.nonces.issue()
    qd = qualifying_data(n, session)
    ev = backend.quote(qd)
    res = v.verify(encode(ev), record, n, session)
    assert res.mode == "tpm2" and res.clock.safe == 1
    # qualifiedSigner matches what tpm2-tools computes
    # cross-check: tpm2_checkquote accepts the agent's quote
    (tmp_path / "msg").write_bytes(ev.quote)
    (tmp_path / "sig").write_bytes(ev.signature)
    _run(swtpm, "tpm2_checkquote", "-u", str(tmp_path / "state" / "ak.pub"),
         "-m", str(tmp_path / "msg"), "-s", str(tmp_path / "sig"), "-q", qd.hex(),
         "-g", "sha256")
    # a second quote in the same boot is accepted with the updated record
    n2 = v.nonces.issue()
    v.verify(encode(backend.quote(qualifying_data(n2, session))), res.record, n2, session)
    # and a replay is refused
    with pytest.raises(VerificationError) as info:
        v.verify(encode(ev), record, n, session)
    assert info.value.step == "qualifying_data"


def test_tpm2_quote_tool_verifies_with_our_verifier(swtpm: str, ek_ca: EkCa,
                                                    tmp_path: Path) -> None:
    log = tmp_path / "log.bin"
    _boot(swtpm, log)
    backend = Tpm2Backend(tmp_path / "state", tcti=swtpm, event_log_path=log)
    record = _enroll(backend, _ek_policy(ek_ca))
    ref = make_reference(Ed25519PrivateKey.generate(), tmp_path)
    v = new_verifier(ref, Clock())
    session = b"\x07" * 32
    n = v.nonces.issue()
    qd = qualifying_data(n, session)
    sel = "sha256:" + ",".join(map(str, TPM2_PCRS))
    _run(swtpm, "tpm2_quote", "-c", "0x81010002", "-l", sel, "-q", qd.hex(),
         "-m", str(tmp_path / "m"), "-s", str(tmp_path / "s"), "-g", "sha256")
    _run(swtpm, "tpm2_pcrread", sel, "-o", str(tmp_path / "p"))
    raw = (tmp_path / "p").read_bytes()
    order = TPM2_PCRS
    ev = Evidence(
        mode="tpm2", device_id=record["device_id"],
        ak_name=parse_tpm2b_public((tmp_path / "state" / "ak.pub").read_bytes()).name,
        quote=(tmp_path / "m").read_bytes(), signature=(tmp_path / "s").read_bytes(),
        pcrs={"sha256": {i: raw[32 * k : 32 * k + 32] for k, i in enumerate(order)}},
        event_log=log.read_bytes(),
    )
    assert v.verify(encode(ev), record, n, session).device_id == record["device_id"]


def test_qualified_name_matches_tpm2_tools(swtpm: str, ek_ca: EkCa, tmp_path: Path) -> None:
    backend = Tpm2Backend(tmp_path / "state", tcti=swtpm)
    record = _enroll(backend, _ek_policy(ek_ca))
    out = _run(swtpm, "tpm2_readpublic", "-c", "0x81010002").decode()
    m = re.search(r"^qualified name: ([0-9a-f]+)", out, re.M)
    assert m is not None and m.group(1) == record["ak_qualified_name"]


def _tool_pcrs(out: str) -> dict[str, dict[int, str]]:
    banks: dict[str, dict[int, str]] = {}
    section = out[out.index("pcrs:"):]
    bank = ""
    for line in section.splitlines()[1:]:
        m = re.match(r"^\s+(sha1|sha256|sha384|sha512):\s*$", line)
        if m:
            bank = m.group(1)
            banks[bank] = {}
            continue
        m = re.match(r"^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)", line)
        if m and bank:
            banks[bank][int(m.group(1))] = m.group(2).lower()
    return banks


@pytest.mark.parametrize("banks", [(TPM_ALG_SHA256,), (TPM_ALG_SHA1, TPM_ALG_SHA256)])
def test_eventlog_agrees_with_tpm2_eventlog(swtpm: str, tmp_path: Path,
                                            banks: tuple[int, ...]) -> None:
    log = tmp_path / "log.bin"
    _boot(swtpm, log, banks)
    out = subprocess.run(["tpm2_eventlog", str(log)], check=True, capture_output=True,
                         text=True).stdout
    tool = _tool_pcrs(out)
    parsed = eventlog.parse(log.read_bytes())
    assert out.count("- EventNum:") == len(parsed.events) + 1
    names = {TPM_ALG_SHA1: "sha1", TPM_ALG_SHA256: "sha256"}
    for alg in banks:
        ours = eventlog.replay(parsed, alg)
        assert tool[names[alg]], out
        for i, value in tool[names[alg]].items():
            assert ours[i].hex() == value, (names[alg], i)
    # and both agree with the swtpm's actual PCRs
    raw = _run(swtpm, "tpm2_pcrread", "sha256:0,4,7,11", "-o", str(tmp_path / "p"))
    del raw
    actual = (tmp_path / "p").read_bytes()
    ours = eventlog.replay(parsed, TPM_ALG_SHA256)
    assert actual == ours[0] + ours[4] + ours[7] + ours[11]


DATA = Path(__file__).parent / "data"


REAL_LOGS = sorted(DATA.glob("*.bin"))


def test_real_ovmf_logs_are_present() -> None:
    names = {p.name for p in REAL_LOGS}
    assert {"ovmf-secureboot-off.bin", "ovmf-secureboot-on.bin"} <= names


@pytest.mark.parametrize("path", REAL_LOGS, ids=lambda p: p.name)
def test_eventlog_real_logs_agree_with_tpm2_eventlog(path: Path) -> None:
    out = subprocess.run(["tpm2_eventlog", str(path)], check=True, capture_output=True,
                         text=True).stdout
    parsed = eventlog.parse(path.read_bytes())
    assert out.count("- EventNum:") == len(parsed.events) + 1
    tool = _tool_pcrs(out)
    # OVMF logs sha256 (and sha1/384/512); the verifier replays sha1 and sha256: compare
    # each of those the tool printed, and at least sha256, PCRs 0, 4 and 7 among them
    assert {0, 4, 7} <= set(tool.get("sha256", {})), out[-3000:]
    for name, alg in (("sha1", TPM_ALG_SHA1), ("sha256", TPM_ALG_SHA256)):
        ours = eventlog.replay(parsed, alg)
        for i, value in tool.get(name, {}).items():
            assert ours[i].hex() == value, (name, i)


def test_agent_cli_tpm2(swtpm: str, ek_ca: EkCa, tmp_path: Path) -> None:
    import json

    log = tmp_path / "log.bin"
    _boot(swtpm, log)
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    base = ["python3", "-m", "attestation.agent_cli", "--backend", "tpm2",
            "--state-dir", str(tmp_path / "st"), "--event-log", str(log)]
    req = json.loads(subprocess.run([*base, "enroll"], env=env, check=True,
                                    capture_output=True).stdout)
    assert req["ek_cert"], "the agent sent no EK certificate"
    record, challenge = begin_enrollment(req, image_id="img-A", policy=_ek_policy(ek_ca))
    assert record["ek_cert"] == "checked"
    (tmp_path / "ch.json").write_bytes(canonical.dumps(challenge))
    ans = json.loads(subprocess.run([*base, "activate", "--challenge", str(tmp_path / "ch.json")],
                                    env=env, check=True, capture_output=True).stdout)
    import base64

    record = finish_enrollment(record, base64.b64decode(ans["secret"]))
    ref = make_reference(Ed25519PrivateKey.generate(), tmp_path)
    v = new_verifier(ref, Clock())
    n, s = v.nonces.issue(), b"\x01" * 32
    ev = subprocess.run([*base, "quote", "--nonce", n.hex(), "--session", s.hex()], env=env,
                        check=True, capture_output=True).stdout.rstrip(b"\n")
    assert v.verify(ev, record, n, s).device_id == req["device_id"]
    info = json.loads(subprocess.run([*base, "info"], env=env, check=True,
                                     capture_output=True).stdout)
    assert info["device_id"] == req["device_id"] and info["backend"] == "tpm2"
    assert APP  # keep import used


# EK certificates ----------------------------------------------------------------------


def test_ek_certificate_from_the_tpm_is_checked_against_the_ca(swtpm: str, ek_ca: EkCa,
                                                               tmp_path: Path) -> None:
    backend = Tpm2Backend(tmp_path / "state", tcti=swtpm)
    request = backend.enrollment_request()
    cert = canonical.b64d(request["ek_cert"], "ek_cert", 4096)
    # the certificate tpm2-tools reads from NV is the one the agent sent
    _run(swtpm, "tpm2_nvread", "0x01c00002", "-C", "o", "-o", str(tmp_path / "nv.der"))
    assert (tmp_path / "nv.der").read_bytes().startswith(cert)
    # control: checked against the bundle
    record, _ = begin_enrollment(request, image_id="img-A", policy=_ek_policy(ek_ca))
    assert record["ek_cert"] == "checked"
    # no bundle configured: refused, unless explicitly allowed
    with pytest.raises(EnrollmentError, match="no EK CA bundle"):
        begin_enrollment(request, image_id="img-A", policy=EnrollmentPolicy())
    record, _ = begin_enrollment(request, image_id="img-A",
                                 policy=EnrollmentPolicy(allow_ek_without_cert=True))
    assert record["ek_cert"] == "allowed-without"


def test_ek_certificate_from_another_ca_is_refused(swtpm: str, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca")
    backend = Tpm2Backend(tmp_path / "state", tcti=swtpm)
    request = backend.enrollment_request()
    for policy in (_ek_policy(other),
                   EnrollmentPolicy(ek_ca_bundle=load_ca_bundle(other.bundle),
                                    allow_ek_without_cert=True)):
        with pytest.raises(EnrollmentError, match="not signed by a CA in the EK CA bundle"):
            begin_enrollment(request, image_id="img-A", policy=policy)


def test_tpm_without_ek_certificate_needs_the_explicit_switch(bare_swtpm: str, ek_ca: EkCa,
                                                              tmp_path: Path) -> None:
    backend = Tpm2Backend(tmp_path / "state", tcti=bare_swtpm)
    request = backend.enrollment_request()
    assert request["ek_cert"] is None
    with pytest.raises(EnrollmentError, match="no EK certificate"):
        begin_enrollment(request, image_id="img-A", policy=_ek_policy(ek_ca))
    record = _enroll(backend, EnrollmentPolicy(ek_ca_bundle=load_ca_bundle(ek_ca.bundle),
                                               allow_ek_without_cert=True))
    assert record["ek_cert"] == "allowed-without" and record["status"] == "active"


def test_keys_persisted_by_another_process_meanwhile_are_used(swtpm: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """On a booted terminal the agent service and `auditbox-attest enroll` can both find no
    EK/AK and race to persist them: the loser reads the winner's keys instead of failing."""
    first = Tpm2Backend(tmp_path / "a", tcti=swtpm)
    ek, ak = first.ensure_keys()
    second = Tpm2Backend(tmp_path / "b", tcti=swtpm)
    seen: list[set[int]] = []
    real = Tpm2Backend._persistent

    def stale(self: Tpm2Backend) -> set[int]:
        handles = real(self)
        seen.append(handles)
        return set() if len(seen) == 1 else handles     # the first look predates the winner
    monkeypatch.setattr(Tpm2Backend, "_persistent", stale)
    assert second.ensure_keys() == (ek, ak)
    assert len(seen) == 3                               # the look, then one per lost race
