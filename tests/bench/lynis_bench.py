"""Lynis hardening index of the auditbox image beside stock Debian 13's.

Library use (from a VM test that has two booted machines, each with `execute(cmd) -> (rc, out)`
like the `machine` fixture):

    from tests.bench.lynis_bench import bench
    bench(auditbox_machine, stock_machine)   # merges into bench-results.json

lynis must be installed in both guests: the rule engine adds it to test images
(profile test_access.root_shell_tty set); a stock image gets it with `apt-get install lynis`.

CLI, on saved /var/log/lynis-report.dat files (e.g. copied off the guests):

    python3 tests/bench/lynis_bench.py --auditbox A.dat --stock B.dat
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench-results.json"
REPORT = "/var/log/lynis-report.dat"
COMMAND = "lynis audit system --quick --no-colors --no-log >/dev/null 2>&1; cat " + REPORT


class Machine(Protocol):
    def execute(self, command: str, timeout: float = ...) -> tuple[int, str]: ...


LYNIS_TIMEOUT = 1800.0  # a full audit runs hundreds of probes: minutes under TCG


@dataclass(frozen=True)
class LynisResult:
    hardening_index: int
    tests_performed: int
    warnings: int
    suggestions: int


def parse_report(text: str) -> LynisResult:
    """Parse lynis-report.dat (key=value lines; warning[]/suggestion[] repeat)."""
    values: dict[str, str] = {}
    warnings = suggestions = 0
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "warning[]":
            warnings += 1
        elif key == "suggestion[]":
            suggestions += 1
        else:
            values[key] = value.strip()
    if "hardening_index" not in values:
        m = re.search(r"Hardening index\s*:\s*(\d+)", text)
        if not m:
            raise ValueError("no hardening_index in the lynis report")
        values["hardening_index"] = m.group(1)
    return LynisResult(int(values["hardening_index"]), int(values.get("lynis_tests_done", "0")),
                       warnings, suggestions)


def run_lynis(machine: Machine) -> LynisResult:
    rc, out = machine.execute("command -v lynis")
    if rc != 0:
        raise RuntimeError("lynis is not installed in the guest")
    # --no-log would skip the report file on some versions: fall back to the default log run
    rc, out = machine.execute(COMMAND, timeout=LYNIS_TIMEOUT)
    if "hardening_index" not in out:
        rc, out = machine.execute("lynis audit system --quick --no-colors >/dev/null 2>&1; "
                                  "cat " + REPORT, timeout=LYNIS_TIMEOUT)
    return parse_report(out)


def merge_results(entries: dict[str, object], path: Path = RESULTS) -> None:
    data: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def record(auditbox: LynisResult, stock: LynisResult, path: Path = RESULTS) -> dict[str, object]:
    entries: dict[str, object] = {
        "lynis_hardening_index": {
            "value": auditbox.hardening_index, "unit": "index (0-100)",
            "baseline": stock.hardening_index,
            "baseline_name": "stock Debian 13, same tooling, no rules (goal: ours >= 85)"},
        "lynis_detail": {"auditbox": asdict(auditbox), "stock_debian13": asdict(stock)},
    }
    merge_results(entries, path)
    print(f"{'lynis':<24} {'auditbox':>10} {'stock Debian 13':>16}")
    for field in ("hardening_index", "tests_performed", "warnings", "suggestions"):
        print(f"{field:<24} {getattr(auditbox, field):>10} {getattr(stock, field):>16}")
    return entries


def service_exposure(machine: Machine) -> dict[str, str]:
    """`systemd-analyze security`: exposure of every loaded service, as printed."""
    _rc, out = machine.execute("systemd-analyze security --no-pager 2>/dev/null")
    exposure: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith(".service"):
            exposure[parts[0]] = " ".join(parts[1:])
    return exposure


def boot_and_bench() -> int:
    """Build and boot the auditbox test image and a stock image; Lynis both."""
    sys.path.insert(0, str(ROOT))
    from tests.images import build_image
    from tests.machine import Machine as QemuMachine

    images = {"auditbox": build_image("audit-laptop-test.yaml", "lynis-auditbox"),
              "stock": build_image(ROOT / "tests/profiles_vm/stock-debian.yaml", "lynis-stock")}
    results: dict[str, LynisResult] = {}
    exposure: dict[str, str] = {}
    for name, image in images.items():
        m = QemuMachine(image.image, name=f"lynis-{name}")
        m.start()
        try:
            m.wait_for_shell()
            m.execute("systemctl is-system-running --wait")
            results[name] = run_lynis(m)
            if name == "auditbox":
                exposure = service_exposure(m)
        finally:
            m.stop()
    record(results["auditbox"], results["stock"])
    merge_results({"systemd_analyze_security_auditbox": exposure})
    print("\nsystemd-analyze security (auditbox image):")
    for unit, level in sorted(exposure.items()):
        print(f"  {unit:<48} {level}")
    return 0


def bench(auditbox: Machine, stock: Machine, path: Path = RESULTS) -> dict[str, object]:
    return record(run_lynis(auditbox), run_lynis(stock), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--auditbox", type=Path, help="lynis-report.dat of auditbox")
    ap.add_argument("--stock", type=Path, help="lynis-report.dat of stock Debian")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.auditbox is None and args.stock is None:
        return boot_and_bench()
    if args.auditbox is None or args.stock is None:
        ap.error("give both --auditbox and --stock, or neither (to build and boot both)")
    entries = record(parse_report(args.auditbox.read_text()),
                     parse_report(args.stock.read_text()), args.results)
    print(json.dumps(entries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
