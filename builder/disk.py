"""Assemble the GPT disk with systemd-repart --offline (no loop devices, no mounts).

Pass 1 writes the root partition (erofs, plus its dm-verity hash partition when verity
is on) and yields the roothash; the UKI is built with it; pass 2 adds the ESP.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError
from builder.tools import ToolsTree

ROOT_EXCLUDES = ("/boot/", "/tmp/", "/run/", "/proc/", "/sys/", "/dev/")


@dataclass
class RootPartitions:
    roothash: str | None
    root_uuid: str
    partitions: list[dict[str, object]]


def _write(path: Path, sections: dict[str, str]) -> None:
    path.write_text("[Partition]\n" + "".join(f"{k}={v}\n" for k, v in sections.items()))


def root_definitions(defs: Path, verity: bool, compression: str) -> None:
    defs.mkdir(parents=True, exist_ok=True)
    root = {"Type": "root", "Format": "erofs", "CopyFiles": "/:/",
            "ExcludeFiles": " ".join(ROOT_EXCLUDES), "Minimize": "best"}
    if compression != "none":
        root["Compression"] = compression
    if verity:
        root |= {"Verity": "data", "VerityMatchKey": "root"}
    _write(defs / "10-root.conf", root)
    if verity:
        _write(defs / "20-root-verity.conf", {"Type": "root-verity", "Verity": "hash",
                                              "VerityMatchKey": "root", "Minimize": "best"})


def esp_definition(defs: Path, esp_bytes: int) -> None:
    _write(defs / "00-esp.conf", {"Type": "esp", "Format": "vfat", "CopyFiles": "/:/",
                                  "SizeMinBytes": str(esp_bytes),
                                  "SizeMaxBytes": str(esp_bytes)})


def _repart(tools: ToolsTree, inside: str, defs: str, source: str, image: str, seed: str,
            create: bool, env: dict[str, str]) -> list[dict[str, object]]:
    argv = ["systemd-repart", "--offline=yes", "--sector-size=512", "--size=auto",
            "--dry-run=no", "--json=short", f"--seed={seed}",
            f"--definitions={inside}/{defs}", f"--copy-source={inside}/{source}",
            f"{inside}/{image}"]
    if create:
        argv.insert(1, "--empty=create")
    out = tools.run(argv, what="systemd-repart", capture=True, env=env)
    try:
        result: list[dict[str, object]] = json.loads(out)
    except json.JSONDecodeError as exc:
        raise BuildError(f"systemd-repart printed no JSON: {exc}") from exc
    return result


def make_root(tools: ToolsTree, work: Path, inside: str, verity: bool, compression: str,
              seed: str, env: dict[str, str]) -> RootPartitions:
    root_definitions(work / "repart.d", verity, compression)
    parts = _repart(tools, inside, "repart.d", "root", "image.raw", seed, True, env)
    root = next(p for p in parts if str(p["type"]).startswith("root-") and
                not str(p["type"]).endswith("-verity"))
    roothash = root.get("roothash") if verity else None
    if verity and not roothash:
        raise BuildError("systemd-repart reported no roothash for the verity root")
    return RootPartitions(str(roothash) if roothash else None, str(root["uuid"]), parts)


def add_esp(tools: ToolsTree, work: Path, inside: str, uki: Path, seed: str,
            env: dict[str, str]) -> list[dict[str, object]]:
    esp_tree = work / "esp"
    boot = esp_tree / "EFI/BOOT"
    boot.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(uki, boot / "BOOTX64.EFI")
    epoch = env.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        for path in (esp_tree, esp_tree / "EFI", boot, boot / "BOOTX64.EFI"):
            os.utime(path, (int(epoch), int(epoch)))
    mib = 1 << 20
    size = max(64 * mib, ((uki.stat().st_size * 5 // 4) // mib + 16) * mib)
    esp_definition(work / "repart.d", size)
    return _repart(tools, inside, "repart.d", "esp", "image.raw", seed, False, env)
