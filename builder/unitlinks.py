"""The links that enable or alias a unit in /etc/systemd/system (what `systemctl disable`
removes). Masking a unit leaves them behind, dangling; the build removes them first."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

ETC_UNITS = "etc/systemd/system"
DEPENDENCY_DIRS = (".wants", ".requires", ".upholds")


def is_unit_link(rel: str, target: str, unit: str) -> bool:
    """rel: a symlink's path under /etc/systemd/system; target: where it points."""
    path = PurePosixPath(rel)
    if len(path.parts) == 2 and path.parent.name.endswith(DEPENDENCY_DIRS):
        return path.name == unit                      # wanted/required by a target
    return len(path.parts) == 1 and path.name != unit and PurePosixPath(target).name == unit


def unit_links(root: Path, unit: str) -> list[Path]:
    base = root / ETC_UNITS
    if not base.is_dir():
        return []
    return [p for p in sorted(base.rglob("*")) if p.is_symlink() and is_unit_link(
        p.relative_to(base).as_posix(), str(p.readlink()), unit)]


def remove_unit_links(root: Path, units: list[str]) -> list[str]:
    removed = []
    for unit in units:
        for link in unit_links(root, unit):
            link.unlink()
            removed.append("/" + link.relative_to(root).as_posix())
    return removed
