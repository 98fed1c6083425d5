"""Build the test and production images once per test session; extract their root trees."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rundir import REPO, images_dir


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
    """Copy the root partition out of the disk image and unpack its erofs into tree."""
    root = next(p for p in manifest["partitions"]
                if p["type"].startswith("root-") and not p["type"].endswith("-verity"))
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    part = tree.with_suffix(".erofs")
    with image.open("rb") as src, part.open("wb") as dst:
        src.seek(int(root["offset"]))
        left = int(root["raw_size"])
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
    subprocess.run(["fsck.erofs", f"--extract={tree}", "--force", "--preserve", str(part)],
                   check=True, stdout=subprocess.DEVNULL)
    part.unlink()
