"""Verifier throughput on one core, tpm2 and soft evidence, vs Keylime's figure.

Run: python3 tests/bench/attest_bench.py [--n 3000]
Merges {"attest_verify_tpm2": ..., "attest_verify_soft": ...} into bench-results.json
at the repo root (atomic replace). tpm2 evidence comes from the pure-Python stand-in
TPM of the tests (byte-identical structures to a real TPM's: ECDSA P-256 quote over
11 sha256 PCRs plus a ~30-event crypto-agile log), so no swtpm is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "attestation"))

from attest_helpers import Clock, FakeTpm, enroll_fake, make_reference  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from attestation.enroll import EnrollmentPolicy, TokenStore, begin_enrollment  # noqa: E402
from attestation.evidence import encode  # noqa: E402
from attestation.nonces import NonceStore  # noqa: E402
from attestation.policy import Policy  # noqa: E402
from attestation.soft import SoftBackend  # noqa: E402
from attestation.verifier import Verifier, qualifying_data  # noqa: E402

BASELINE = 250
BASELINE_NAME = "Keylime verifier (quotes/s)"


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0]})


def _run(verifier: Verifier, record: dict[str, object], items: list[tuple[bytes, bytes]],
         session: bytes) -> float:
    t0 = time.perf_counter()
    for nonce, ev in items:
        verifier.verify(ev, record, nonce, session)  # type: ignore[arg-type]
    return len(items) / (time.perf_counter() - t0)


def bench(n: int) -> dict[str, float]:
    session = b"\x5a" * 32
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        key = Ed25519PrivateKey.generate()
        ref = make_reference(key, tmp)
        clock = Clock()
        out: dict[str, float] = {}

        tpm = FakeTpm()
        record = enroll_fake(tpm)
        v = Verifier(Policy(), NonceStore(clock=clock), {ref["image_id"]: ref})
        items = []
        for _ in range(n):
            nonce = v.nonces.issue()
            items.append((nonce, tpm.quote(qualifying_data(nonce, session))))
        out["tpm2"] = _run(v, record, items, session)

        (tmp / "boot_id").write_text("b1\n")
        (tmp / "cmdline").write_text(ref["cmdline"] + "\n")
        (tmp / "uki").write_bytes(b"uki-file")
        soft = SoftBackend(tmp / "soft", boot_id_path=tmp / "boot_id",
                           cmdline_path=tmp / "cmdline", uki_paths=(tmp / "uki",))
        tokens = TokenStore()
        srec, _ = begin_enrollment(soft.enrollment_request(tokens.issue()), image_id="img-A",
                                   policy=EnrollmentPolicy(allow_soft=True), tokens=tokens)
        sv = Verifier(Policy(allow_soft=True), NonceStore(clock=clock), {ref["image_id"]: ref})
        sitems = []
        for _ in range(n):
            nonce = sv.nonces.issue()
            sitems.append((nonce, encode(soft.quote(qualifying_data(nonce, session)))))
        out["soft"] = _run(sv, srec, sitems, session)
        return out


def merge_results(path: Path, results: dict[str, float]) -> None:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    for mode, value in results.items():
        data[f"attest_verify_{mode}"] = {
            "value": round(value, 1), "unit": "verifications/s",
            "baseline": BASELINE, "baseline_name": BASELINE_NAME,
        }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bench-results.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    _pin_one_core()
    res = bench(args.n)
    print(f"{'evidence':<8} {'verifications/s (1 core)':>26} {'Keylime quotes/s':>18} {'x':>6}")
    for mode, value in res.items():
        print(f"{mode:<8} {value:>26.0f} {BASELINE:>18} {value / BASELINE:>6.1f}")
    if not args.no_write:
        merge_results(ROOT / "bench-results.json", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
