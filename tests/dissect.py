"""Run trixie's systemd-dissect from the build's tools tree on an image (root only)."""

from __future__ import annotations

import json
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from builder.cache import default_cache_dir
from builder.chroot import bind
from builder.progress import BuildLog
from tests.rundir import logs_dir


def tools_root() -> Path:
    trees = sorted((default_cache_dir() / "tools").glob("*/.complete"))
    if not trees:
        raise FileNotFoundError("no tools tree in the cache: build an image first")
    return trees[-1].parent


def dissect(image: Path, roothash: str | None) -> dict[str, Any]:
    root = tools_root()
    with ExitStack() as stack:
        log = BuildLog(logs_dir() / "dissect.log", quiet=True)
        stack.callback(log.close)
        # systemd-dissect detaches a mount namespace: its root must be a mount point
        stack.enter_context(bind(log, root, root))
        log.run(["mount", "--make-private", root])
        for name in ("proc", "sys", "dev"):
            stack.enter_context(bind(log, Path("/") / name, root / name))
        stack.enter_context(bind(log, image.parent.resolve(), root / "run/dissect"))
        argv = ["unshare", "--mount", "chroot", str(root), "systemd-dissect", "--json=short",
                f"/run/dissect/{image.name}"]
        if roothash:
            argv.insert(-1, f"--root-hash={roothash}")
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result
