"""make bench (issue 12): the production image's size, its UKI's and its initrd's, beside
the same figures for the production image as main built it before issue 12 (commit
BASELINE, profiles/audit-laptop.yaml), which this script builds from `git archive`.

Both builds share the build cache (AUDITBOX_CACHE or the default), so a warm cache makes
them quick. Results are merged into bench-results.json as
{"metric": {"value": n, "unit": "...", "baseline": n, "baseline_name": "..."}}.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from builder.cpio import list_cpio  # noqa: E402
from tests.bench.build_bench import merge_results  # noqa: E402

BASELINE = "b8111f5"          # main before issue 12's hardening
BASELINE_PROFILE = "profiles/audit-laptop.yaml"
PROFILE = REPO / "profiles" / "audit-laptop-example.yaml"
MIB = 1 << 20
BASELINE_MAIN = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import builder
assert builder.__file__.startswith(sys.path[0]), builder.__file__
from builder.cli import main
sys.exit(main())
"""


def pe_sections(data: bytes) -> dict[str, bytes]:
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    count, opt_size = struct.unpack_from("<H", data, pe + 6)[0], struct.unpack_from(
        "<H", data, pe + 20)[0]
    table = pe + 24 + opt_size
    out = {}
    for i in range(count):
        entry = table + 40 * i
        name = data[entry:entry + 8].rstrip(b"\0").decode()
        vsize, _, raw_size, raw_ptr = struct.unpack_from("<IIII", data, entry + 8)
        out[name] = data[raw_ptr:raw_ptr + min(vsize, raw_size)]
    return out


def measure(out: Path, work: Path) -> dict[str, int]:
    manifest = json.loads((out / "manifest.json").read_text())
    esp = next(p for p in manifest["partitions"] if p["type"] == "esp")
    uki = work / f"{out.name}-BOOTX64.EFI"
    subprocess.run(["mcopy", "-o", "-i", f"{out / 'image.raw'}@@{esp['offset']}",
                    "::/EFI/BOOT/BOOTX64.EFI", str(uki)], check=True)
    data = uki.read_bytes()
    initrd = pe_sections(data)[".initrd"]
    members = list_cpio(initrd)
    return {"image": (out / "image.raw").stat().st_size, "uki": len(data),
            "initrd": len(initrd), "initrd_modules": sum(".ko" in m.path for m in members),
            "initrd_files": len(members),
            "modules_removed": len(manifest["removed"]["kernel_modules"])}


def build(argv: list[str], env: dict[str, str], what: str) -> None:
    print(f"building {what} ...", flush=True)
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> int:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="auditbox-size-") as tmp:
        work = Path(tmp)
        base = work / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE],
                                 check=True, capture_output=True).stdout
        (work / "baseline.tar").write_bytes(archive)
        with tarfile.open(work / "baseline.tar") as tar:
            tar.extractall(base, filter="tar")
        # the baseline's own code builds the baseline's profile: its checkout goes first on
        # the path (python -c puts the working directory, maybe this checkout, first)
        build([sys.executable, "-c", BASELINE_MAIN, str(base), "build",
               str(base / BASELINE_PROFILE), "-o", str(work / "before"), "-q"], env,
              f"{BASELINE} {BASELINE_PROFILE}")
        build(["auditbox", "build", str(PROFILE), "-o", str(work / "after"), "-q"], env,
              PROFILE.relative_to(REPO).as_posix())
        before, after = measure(work / "before", work), measure(work / "after", work)
    name = f"production image before issue 12 ({BASELINE}, {BASELINE_PROFILE})"

    def mib(key: str) -> dict[str, Any]:
        return {"value": round(after[key] / MIB, 2), "unit": "MiB",
                "baseline": round(before[key] / MIB, 2), "baseline_name": name}

    def count(key: str) -> dict[str, Any]:
        return {"value": after[key], "unit": "", "baseline": before[key], "baseline_name": name}

    results = {"prod_image_size_mib": mib("image"), "prod_uki_size_mib": mib("uki"),
               "prod_initrd_size_mib": mib("initrd"),
               "prod_initrd_kernel_modules": count("initrd_modules"),
               "prod_initrd_files": count("initrd_files"),
               "prod_kernel_modules_removed": count("modules_removed")}
    merge_results(results)
    print(f"{'metric':<28} {'now':>10} {'before':>10}  ({name})")
    for key, r in results.items():
        print(f"{key:<28} {r['value']:>10} {r['baseline']:>10} {r['unit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
