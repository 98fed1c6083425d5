"""Verifier cost on one core: tpm2 and soft verifications/s, and what junk costs to refuse.

Run: python3 tests/bench/attest_bench.py [--n 3000] [--runs 3] [--no-write]

tpm2 evidence is what the pure-Python stand-in TPM of the tests signs (byte-identical
structures to a real TPM's: ECDSA P-256 quote over the 13 required sha256 PCRs) carrying
the REAL event log of one of our images booted with Secure Boot on under OVMF
(tests/attestation/data/ovmf-secureboot-on.bin: 46 events, four banks), with a reference
predicting that boot; so every check runs, as for a terminal of a fleet booting one image.
Junk is evidence with a valid structure and a bad signature, for a nonce the verifier never
issued: it must be refused at ``signature`` without the event log being read.

The machine is shared (2 cores, other engineers' builds and VMs): the process is pinned
to one core and each figure is the slowest of ``--runs`` runs. Rates are verifications
per second of this process's CPU time (what one core does), so that other processes
taking turns on the core do not count as verifier cost; the wall-clock rates of the same
runs are recorded beside them, with the load average. Results merge into
bench-results.json at the repo root (atomic replace) with the CPU model beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "attestation"))

from attest_helpers import Clock, FakeTpm, enroll_fake, make_reference  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from attestation import eventlog, uefi  # noqa: E402
from attestation.enroll import EnrollmentPolicy, TokenStore, begin_enrollment  # noqa: E402
from attestation.errors import VerificationError  # noqa: E402
from attestation.evidence import decode, encode  # noqa: E402
from attestation.nonces import NonceStore  # noqa: E402
from attestation.policy import Policy  # noqa: E402
from attestation.soft import SoftBackend  # noqa: E402
from attestation.tpm_structs import TPM_ALG_SHA256  # noqa: E402
from attestation.verifier import Verifier, qualifying_data  # noqa: E402

BASELINE = 250
BASELINE_NAME = "Keylime verifier (quotes/s)"
GOAL_RATE = 2000
GOAL_JUNK_MS = 1.0
REAL_LOG = ROOT / "tests" / "attestation" / "data" / "ovmf-secureboot-on.bin"
NOTE = ("one core (pinned), slowest of {runs} runs; the machine (2 cores) is shared by the "
        "team's builds, VMs and tests, so figures vary between runs and machines")
SESSION = b"\x5a" * 32


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})


def real_boot(tmp: Path) -> tuple[FakeTpm, dict[str, Any], dict[str, Any], bytes]:
    """A fake TPM whose PCRs are the real log's replay; the matching signed reference."""
    raw = REAL_LOG.read_bytes()
    log = eventlog.parse(raw)
    tpm = FakeTpm()
    tpm.events = [(e.pcr, e.type, {TPM_ALG_SHA256: e.digests[TPM_ALG_SHA256]}, e.data)
                  for e in log.events]
    record = enroll_fake(tpm)
    replayed = eventlog.replay(log, TPM_ALG_SHA256)
    apps = [e.digests[TPM_ALG_SHA256].hex() for e in log.events
            if e.pcr == 4 and e.type == eventlog.EV_EFI_BOOT_SERVICES_APPLICATION]
    cert = next(uefi.signature_certificate(uefi.parse_variable(e.data)) for e in log.events
                if e.type == eventlog.EV_EFI_VARIABLE_AUTHORITY)
    assert cert is not None
    ref = make_reference(
        Ed25519PrivateKey.generate(), tmp, auth=bytes.fromhex(apps[0]),
        pcrs={"11": replayed[11].hex(), "12": "00" * 32, "13": "00" * 32},
        boot_applications={"secure_boot": apps, "no_secure_boot": [*apps, apps[0]]},
        db_certificate_sha256=hashlib.sha256(cert).hexdigest())
    return tpm, record, ref, raw


class Clocks:
    """CPU time of this process and wall time over a block."""

    def __enter__(self) -> Clocks:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


def _rate(verifier: Verifier, record: dict[str, Any],
          items: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """(verifications per CPU second, per wall second)."""
    with Clocks() as c:
        for nonce, ev in items:
            verifier.verify(ev, record, nonce, SESSION)
    return len(items) / c.cpu, len(items) / c.wall


def bench_tpm2(n: int, tmp: Path) -> tuple[tuple[float, float], tuple[float, float]]:
    """((verifications/s cpu, wall), (ms per junk refusal cpu, wall)) for one run."""
    tpm, record, ref, raw = real_boot(tmp)
    v = Verifier(Policy(), NonceStore(clock=Clock()), {ref["image_id"]: ref})
    items = []
    for _ in range(n):
        nonce = v.nonces.issue()
        items.append((nonce, tpm.quote(qualifying_data(nonce, SESSION), log=raw)))
    rate = _rate(v, record, items)
    junk = []
    for _nonce, ev in items:
        e = decode(ev)
        sig = bytearray(e.signature)
        sig[10] ^= 0x55                            # inside ECDSA r: structure still valid
        junk.append((os.urandom(32), encode(dataclasses.replace(e, signature=bytes(sig)))))
    misses = v.logs.misses
    with Clocks() as c:
        for nonce, ev in junk:
            try:
                v.verify(ev, record, nonce, SESSION)
            except VerificationError as exc:
                if exc.step != "signature":
                    raise AssertionError(f"junk refused at {exc.step}, not signature") \
                        from None
            else:
                raise AssertionError("junk accepted")
    assert v.logs.misses == misses, "junk made the verifier read an event log"
    return rate, (c.cpu / len(junk) * 1000, c.wall / len(junk) * 1000)


def bench_soft(n: int, tmp: Path) -> tuple[float, float]:
    ref = make_reference(Ed25519PrivateKey.generate(), tmp)
    (tmp / "boot_id").write_text("b1\n")
    (tmp / "cmdline").write_text(ref["cmdline"] + "\n")
    (tmp / "uki").write_bytes(b"uki-file")
    soft = SoftBackend(tmp / "soft", boot_id_path=tmp / "boot_id",
                       cmdline_path=tmp / "cmdline", uki_paths=(tmp / "uki",))
    tokens = TokenStore()
    srec, _ = begin_enrollment(soft.enrollment_request(tokens.issue()), image_id="img-A",
                               policy=EnrollmentPolicy(allow_soft=True), tokens=tokens)
    v = Verifier(Policy(allow_soft=True), NonceStore(clock=Clock()), {ref["image_id"]: ref})
    items = []
    for _ in range(n):
        nonce = v.nonces.issue()
        items.append((nonce, encode(soft.quote(qualifying_data(nonce, SESSION)))))
    return _rate(v, srec, items)


def bench(n: int, runs: int) -> dict[str, list[tuple[float, float]]]:
    """Per figure, one (cpu, wall) pair per run."""
    tpm2, junk, soft = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            rate, junk_ms = bench_tpm2(n, Path(a))
            tpm2.append(rate)
            junk.append(junk_ms)
            soft.append(bench_soft(n, Path(b)))
    return {"tpm2": tpm2, "junk_ms": junk, "soft": soft}


def results(runs: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, Any]]:
    common = {"cpu": cpu_model(), "note": NOTE.format(runs=len(runs["tpm2"])),
              "load_average": [round(x, 1) for x in os.getloadavg()]}

    def entry(key: str, slowest: Any, unit: str, digits: int) -> dict[str, Any]:
        cpu = [round(c, digits) for c, _ in runs[key]]
        wall = [round(w, digits) for _, w in runs[key]]
        return {"value": slowest(cpu), "unit": unit, "runs": cpu,
                "wall_clock_runs": wall, **common}

    return {
        "attest_verify_tpm2": {
            **entry("tpm2", min, "verifications per CPU second (one core)", 1),
            "goal": GOAL_RATE, "baseline": BASELINE, "baseline_name": BASELINE_NAME},
        "attest_verify_soft": {
            **entry("soft", min, "verifications per CPU second (one core)", 1),
            "baseline": BASELINE, "baseline_name": BASELINE_NAME},
        "attest_refuse_junk_ms": {
            **entry("junk_ms", max, "CPU ms per refusal", 4), "goal": GOAL_JUNK_MS,
            "baseline": None, "baseline_name": "valid structure, bad signature, unknown "
            "nonce: refused at signature, event log never parsed"},
    }


def merge_results(path: Path, new: dict[str, dict[str, Any]]) -> None:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data.update(new)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bench-results.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    _pin_one_core()
    res = results(bench(args.n, args.runs))
    print(f"CPU: {cpu_model()}; {NOTE.format(runs=args.runs)}")
    for key, r in res.items():
        goal = f" (goal {r['goal']})" if r.get("goal") else ""
        print(f"{key:24s} {r['value']:>10} {r['unit']}{goal}   runs: {r['runs']}  "
              f"(wall clock: {r['wall_clock_runs']})")
    print(f"Keylime: {BASELINE} quotes/s per verifier")
    if not args.no_write:
        merge_results(ROOT / "bench-results.json", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
