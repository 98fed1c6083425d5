"""Build the test and production images once per test session; extract their root trees."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.progress import BuildLog
from builder.reproducible import extract_partition
from tests.dissect import tools_root
from tests.rundir import REPO, images_dir, logs_dir


@dataclass
class BuiltImage:
    name: str
    out: Path
    tree: Path
    manifest: dict[str, Any]

    @property
    def image(self) -> Path:
        return self.out / "image.raw"


def build_image(profile: str | Path, name: str, *extra: str) -> BuiltImage:
    """Build REPO/profiles/<profile> (or a given path) into the run's images/<name>."""
    out = images_dir() / name
    path = profile if isinstance(profile, Path) else REPO / "profiles" / profile
    subprocess.run(["auditbox", "build", str(path), "-o", str(out), *extra], check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    tree = images_dir() / f"{name}-tree"
    extract_root(out / "image.raw", manifest, tree)
    return BuiltImage(name, out, tree, manifest)


def extract_root(image: Path, manifest: dict[str, Any], tree: Path) -> None:
    """Unpack the root partition of the disk image into tree (the builder's own extractor)."""
    root = next(p for p in manifest["partitions"]
                if p["type"].startswith("root-") and not p["type"].endswith("-verity"))
    if tree.exists():
        shutil.rmtree(tree)
    log = BuildLog(logs_dir() / f"extract-{tree.name}.log", quiet=True)
    try:
        # the tools tree's fsck.erofs keeps setuid/setgid bits (rule setid-minimal checks them)
        extract_partition(log, image, root, tree, tools=tools_root())
    finally:
        log.close()
