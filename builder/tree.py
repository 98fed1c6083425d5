"""Changes to the extracted root tree: users, files, units, trimming, package checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from builder.chroot import chroot_run
from builder.errors import BuildError
from builder.module_trim import parse_modules_dep, plan_trim
from builder.modules import is_module_file
from builder.plan import BuildPlan, PlannedFile
from builder.progress import BuildLog
from builder.unitlinks import remove_unit_links

DOC_DIRS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian",
            "usr/share/linda")
KEEP_LOCALES = {"C.UTF-8", "C.utf8", "en", "en_US", "locale.alias"}


def kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "usr/lib/modules").iterdir() if p.is_dir())
    if len(versions) != 1:
        raise BuildError(f"expected one kernel in the image, found {versions or 'none'}")
    return versions[0]


def create_users(log: BuildLog, root: Path, plan: BuildPlan) -> None:
    for user in plan.profile.users:
        argv = ["useradd", "--uid", str(user.uid), "--shell", user.shell,
                "--home-dir", user.home or f"/home/{user.name}", "--no-create-home",
                "--user-group"]
        if user.groups:
            argv += ["--groups", ",".join(user.groups)]
        chroot_run(log, root, [*argv, user.name], what=f"useradd {user.name}")
    # root cannot log in anywhere: password locked, no valid hash
    chroot_run(log, root, ["usermod", "--lock", "root"], what="lock root")


def target_path(root: Path, path: PurePosixPath) -> Path:
    """Map an absolute in-image path onto root, refusing anything that escapes it."""
    if not path.is_absolute() or ".." in path.parts:
        raise BuildError(f"refusing to write outside the image: {path}")
    dest = root.joinpath(*path.parts[1:])
    # refuse symlinked parents that point outside the tree
    parent = dest.parent
    while parent != root and not parent.exists():
        parent = parent.parent
    if not parent.resolve().is_relative_to(root.resolve()):
        raise BuildError(f"refusing to write through a symlink leaving the image: {path}")
    return dest


def write_files(root: Path, files: list[PlannedFile]) -> None:
    """Write each planned file atomically (temp file, chmod, rename) under root."""
    for f in files:
        dest = target_path(root, f.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        tmp = dest.with_name(f".{dest.name}.auditbox-tmp")
        tmp.write_bytes(f.content)
        os.chmod(tmp, f.mode)
        os.replace(tmp, dest)


def write_plan_files(root: Path, plan: BuildPlan) -> None:
    write_files(root, plan.files)


def apply_units(log: BuildLog, root: Path, plan: BuildPlan) -> None:
    if plan.units_enable:
        log.run(["systemctl", f"--root={root}", "enable", *plan.units_enable],
                what="systemctl enable")
    if plan.units_mask:
        remove_unit_links(root, plan.units_mask)    # mask alone leaves them dangling
        log.run(["systemctl", f"--root={root}", "mask", *plan.units_mask],
                what="systemctl mask")


def remove_modules(root: Path, kver: str, remove: list[str], keep: list[str],
                   allow: list[str] | None = None) -> list[str]:
    """Delete the kernel modules `remove` names and `keep` does not, those outside the
    allow-list (if any) and those whose dependencies go (builder/module_trim.py);
    return their paths relative to kernel/."""
    base = root / "usr/lib/modules" / kver / "kernel"
    if not remove and allow is None:
        return []
    files = [p.relative_to(base).as_posix() for p in sorted(base.rglob("*"))
             if p.is_file() and is_module_file(p.name)]
    dep_file = base.parent / "modules.dep"
    deps = parse_modules_dep(dep_file.read_text()) if dep_file.is_file() else {}
    removed = plan_trim(files, deps, remove, keep, allow).removed
    for rel in removed:
        (base / rel).unlink()
    return removed


def kept_modules(root: Path, kver: str) -> list[str]:
    """Module files left in the tree, relative to kernel/."""
    base = root / "usr/lib/modules" / kver / "kernel"
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                  if p.is_file() and is_module_file(p.name))


def run_depmod(log: BuildLog, root: Path, kver: str) -> None:
    chroot_run(log, root, ["depmod", "-a", kver], what="depmod")


def trim_documentation(root: Path) -> list[str]:
    removed: list[str] = []
    for rel in DOC_DIRS:
        d = root / rel
        if d.is_dir():
            shutil.rmtree(d)
            d.mkdir()
            removed.append("/" + rel)
    locale = root / "usr/share/locale"
    if locale.is_dir():
        for entry in sorted(locale.iterdir()):
            if entry.name not in KEEP_LOCALES:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append("/usr/share/locale/" + entry.name)
    return removed


def installed_packages(log: BuildLog, root: Path) -> dict[str, str]:
    fmt = "${Package}\t${Version}\t${db:Status-Abbrev}\n"
    out = chroot_run(log, root, ["dpkg-query", "-W", "-f", fmt], what="dpkg-query", capture=True)
    packages: dict[str, str] = {}
    for line in out.splitlines():
        name, version, status = line.split("\t")
        if status.startswith("ii"):
            packages[name] = version
    return dict(sorted(packages.items()))


def check_absent(packages: dict[str, str], plan: BuildPlan) -> None:
    unwanted = sorted(set(plan.packages_absent) & set(packages))
    if unwanted:
        raise BuildError("packages that must not be in the image are installed: "
                         + ", ".join(unwanted) + " (pulled in by a dependency?)")


def relocate_package_db(root: Path) -> None:
    """/var is a tmpfs at run time: keep the dpkg database under /usr and link it back."""
    src = root / "var/lib/dpkg"
    dest = root / "usr/lib/auditbox/dpkg"
    if src.is_symlink() or not src.is_dir():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(src), str(dest))
    src.symlink_to("/usr/lib/auditbox/dpkg")


# files that record when or where a build ran, not what it contains
VOLATILE = ("var/log/dpkg.log", "var/log/alternatives.log", "var/log/bootstrap.log",
            "var/cache/ldconfig/aux-cache", "var/lib/dbus/machine-id",
            "var/lib/systemd/random-seed", "etc/machine-id")


def make_deterministic(root: Path, epoch: int) -> None:
    """Drop volatile files and clamp every timestamp to SOURCE_DATE_EPOCH."""
    for rel in VOLATILE:
        path = root / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
    log_apt = root / "var/log/apt"
    if log_apt.is_dir():
        shutil.rmtree(log_apt)
    # systemd treats an empty machine-id as "first boot, make a transient one"
    (root / "etc/machine-id").write_text("")
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if st.st_mtime > epoch or st.st_atime > epoch:
            os.utime(path, (epoch, epoch), follow_symlinks=False)
