"""make bench (builder): cold build vs bare mmdebstrap, warm rebuild, image size.

Prints the figures side by side and merges them into bench-results.json as
{"metric": {"value": n, "unit": "...", "baseline": n, "baseline_name": "..."}}.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from builder.bootstrap import BootstrapSpec, mmdebstrap_argv  # noqa: E402
from builder.planner import make_plan  # noqa: E402
from builder.profile import load_profile  # noqa: E402

PROFILE = REPO / "profiles" / "audit-laptop-example.yaml"
RESULTS = REPO / "bench-results.json"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def merge_results(new: dict[str, Any]) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update(new)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="auditbox-bench-"))
    try:
        cache = work / "cache"
        env = dict(os.environ, AUDITBOX_CACHE=str(cache))
        out = work / "out"
        # bare mmdebstrap of exactly the package set the build bootstraps
        plan = make_plan(load_profile(PROFILE))
        spec = BootstrapSpec(plan.profile.suite, plan.profile.architecture, plan.profile.mirror,
                             tuple(plan.packages), None)
        bare = timed(mmdebstrap_argv(spec, work / "bare.tar"), env)
        (work / "bare.tar").unlink()
        cold = timed(["auditbox", "build", str(PROFILE), "-o", str(out), "-q"], env)
        size = (out / "image.raw").stat().st_size
        # warm: change only an overlay value (the hostname) in a profile extending the default
        child = work / "warm.yaml"
        child.write_text(f"extends: {PROFILE}\nname: audit-laptop-bench\nhostname: bench-warm\n")
        warm = timed(["auditbox", "build", str(child), "-o", str(work / "out2"), "-q"], env)
        # the same profile untrimmed (docs, man pages, locales kept) and with a plain root
        untrimmed = work / "untrimmed.yaml"
        untrimmed.write_text(f"extends: {PROFILE}\nname: audit-laptop-untrimmed\n"
                             "image:\n  trim: false\n")
        subprocess.run(["auditbox", "build", str(untrimmed), "-o", str(work / "out3"), "-q"],
                       check=True, env=env)
        untrimmed_size = (work / "out3" / "image.raw").stat().st_size
        plain = work / "plain.yaml"
        plain.write_text(f"extends: {PROFILE}\nname: audit-laptop-plain\n"
                         "image:\n  verity: false\n")
        plain_time = timed(["auditbox", "build", str(plain), "-o", str(work / "out4"), "-q"], env)
        verity_time = timed(["auditbox", "build", str(PROFILE), "-o", str(work / "out5"), "-q"],
                            env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "build_cold_seconds": {"value": round(cold, 1), "unit": "s", "baseline": round(bare, 1),
                               "baseline_name": "bare mmdebstrap of the same package set"},
        "build_warm_seconds": {"value": round(warm, 1), "unit": "s", "baseline": 30,
                               "baseline_name": "goal: warm rebuild under 30 s"},
        "image_size_mib": {"value": round(size / (1 << 20), 1), "unit": "MiB",
                           "baseline": round(untrimmed_size / (1 << 20), 1),
                           "baseline_name": "same profile untrimmed (image.trim: false)"},
        "build_warm_verity_seconds": {"value": round(verity_time, 1), "unit": "s",
                                      "baseline": round(plain_time, 1),
                                      "baseline_name": "warm build, plain erofs root (no verity)"},
    }
    merge_results(results)
    print(f"{'metric':<22} {'auditbox':>10} {'baseline':>10}  baseline is")
    for name, r in results.items():
        base = "-" if r["baseline"] is None else f"{r['baseline']}"
        print(f"{name:<22} {r['value']:>9}{r['unit'][:1]} {base:>10}  {r['baseline_name']}")
    print(f"cold build / bare mmdebstrap = {cold / bare:.2f}x (goal <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
