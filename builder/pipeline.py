"""The build, top to bottom: profile -> plan -> bootstrap -> tree -> initrd -> disk -> outputs."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import __version__, bootstrap, debpkg, disk, initrd, outputs, tree
from builder.cache import sha256_file
from builder.chroot import chroot_run, remove_tree
from builder.plan import BuildPlan
from builder.planner import make_plan
from builder.prediction import reference as predicted_reference
from builder.profile import load_profile, profile_to_dict
from builder.progress import BuildLog
from builder.prune import remove_paths
from builder.sbom import sbom
from builder.secureboot import (
    UNSIGNED_WARNING,
    SigningKeys,
    certificate_der,
    manifest_entry,
    resolve_signing,
)
from builder.setid import strip_setid
from builder.tools import ensure_tools
from builder.uki import build_uki


@dataclass
class BuildOptions:
    profile: Path
    out: Path
    cache: Path
    mirror: str | None = None
    formats: tuple[str, ...] = ()
    signing_key: Path | None = None
    secure_boot_key: Path | None = None
    secure_boot_cert: Path | None = None
    quiet: bool = False


def source_date_epoch(plan: BuildPlan) -> int | None:
    if plan.profile.image.source_date_epoch is not None:
        return plan.profile.image.source_date_epoch
    env = os.environ.get("SOURCE_DATE_EPOCH")
    return int(env) if env and env.isdigit() else None


def build(opts: BuildOptions) -> dict[str, Any]:
    """Build the image; returns the manifest. Raises InputError (2) or BuildError (1)."""
    started = time.time()
    profile = load_profile(opts.profile)
    if opts.mirror:
        profile.mirror = opts.mirror
    formats = sorted(set(profile.output.formats) | set(opts.formats) | {"raw"})
    plan = make_plan(profile)
    signing = resolve_signing(profile, opts.secure_boot_key, opts.secure_boot_cert,
                                 opts.cache)
    epoch = source_date_epoch(plan)
    opts.cache.mkdir(parents=True, exist_ok=True)
    with outputs.staged_output(opts.out) as out:
        # the live log sits in the cache so that it survives a failed build
        log_path = opts.cache / "logs" / f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        log = BuildLog(log_path, quiet=opts.quiet)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=_work_root(opts.cache)))
        try:
            manifest = _run(log, opts, plan, epoch, out, work, formats, signing)
        finally:
            remove_tree(log, work)
            log.close()
        shutil.copyfile(log_path, out / "build.log")
        manifest["build"]["seconds"] = round(time.time() - started, 1)
        outputs.write_json(out / "manifest.json", manifest)
        outputs.write_sha256sums(out, known=manifest["sha256"])
    return manifest


def _work_root(cache: Path) -> Path:
    root = cache / "work"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _run(log: BuildLog, opts: BuildOptions, plan: BuildPlan, epoch: int | None, out: Path,
         work: Path, formats: list[str],
         signing: SigningKeys | None) -> dict[str, Any]:
    profile = plan.profile
    env = {"SOURCE_DATE_EPOCH": str(epoch)} if epoch is not None else {}
    log.say(f"auditbox {__version__}: building {profile.name} ({profile.suite}/"
            f"{profile.architecture}, {len(plan.packages)} packages, {len(plan.rule_ids)} rules)")
    spec = bootstrap.BootstrapSpec(profile.suite, profile.architecture, profile.mirror,
                                   tuple(plan.packages), epoch)
    root = work / "root"

    with log.step("bootstrap image and tools trees (mmdebstrap, cached, in parallel)"):
        with ThreadPoolExecutor(max_workers=2) as pool:
            tools_job = pool.submit(ensure_tools, log, opts.cache, profile.suite,
                                    profile.architecture, profile.mirror)
            tarball = pool.submit(bootstrap.ensure_bootstrap, log, opts.cache, spec).result()
            tools = tools_job.result()
        bootstrap.extract(log, tarball, root)
    with log.step("customise tree (users, overlays, terminal package, units)"):
        tree.create_users(log, root, plan)
        tree.write_plan_files(root, plan)
        deb = debpkg.build_deb(log, work, epoch)
        shutil.copyfile(deb, root / "tmp" / deb.name)
        chroot_run(log, root, ["dpkg", "-i", f"/tmp/{deb.name}"], what="dpkg -i terminal")
        (root / "tmp" / deb.name).unlink()
        tree.apply_units(log, root, plan)
        stripped = [] if plan.setid_allow is None else strip_setid(root, plan.setid_allow)
        pruned = remove_paths(root, plan.paths_remove)
        (root / "etc/systemd/system/default.target").unlink(missing_ok=True)
        (root / "etc/systemd/system/default.target").symlink_to(
            "/usr/lib/systemd/system/multi-user.target")
    kver = tree.kernel_version(root)
    with log.step("trim (kernel modules, documentation, locales)"):
        removed_modules = tree.remove_modules(root, kver, plan.modules_remove, plan.modules_keep,
                                              plan.modules_allow)
        kept_modules = tree.kept_modules(root, kver)
        removed_docs = tree.trim_documentation(root) if profile.image.trim else []
        tree.run_depmod(log, root, kver)
        packages = tree.installed_packages(log, root)
        tree.check_absent(packages, plan)
        log.say(f"    removed {len(removed_modules)} kernel modules (kept {len(kept_modules)}), "
                f"{len(removed_docs)} doc paths")
    with log.step("initrd (dracut, systemd + veritysetup, cached)"):
        hit = initrd.ensure_initrd(
            log, opts.cache, root, kver,
            {"bootstrap": spec.key(), "removed": removed_modules,
             "config": initrd.config_digest(root)},
            work / "initrd.img")
        initrd_summary = initrd.record_listing(root, work / "initrd.img")
        log.say("    initrd cache " + ("hit" if hit else "miss") + f": {initrd_summary['files']} "
                f"files, {initrd_summary['modules']} kernel modules")
        shutil.copyfile(root / "boot" / f"vmlinuz-{kver}", work / "vmlinuz")
        shutil.copyfile(root / "usr/lib/os-release", work / "os-release")
        tree.relocate_package_db(root)
        (root / "boot").mkdir(exist_ok=True)
    if epoch is not None:
        with log.step(f"deterministic tree (SOURCE_DATE_EPOCH={epoch})"):
            tree.make_deterministic(root, epoch)
            for name in ("vmlinuz", "initrd.img", "os-release"):
                os.utime(work / name, (epoch, epoch))
    seed = str(uuid.UUID(hashlib.sha256(
        f"{profile.name}|{spec.key()}|{epoch}".encode()).hexdigest()[:32]))
    with tools.session(work) as inside:
        with log.step("root filesystem (erofs" + (" + dm-verity" if profile.image.verity
                                                   else "") + ", systemd-repart)"):
            rootparts = disk.make_root(tools, work, inside, profile.image.verity,
                                       profile.image.compression, seed, env)
        cmdline = _cmdline(plan, rootparts)
        if signing is None:       # loud even with -q: an unsigned image is development only
            log.write(UNSIGNED_WARNING)
            print(UNSIGNED_WARNING, file=sys.stderr, flush=True)
        with log.step("unified kernel image (ukify" + (
                f", signed for Secure Boot: {signing.source})" if signing else ", UNSIGNED)")):
            sign = _stage_secure_boot_keys(signing, work, inside)
            uki = build_uki(tools, inside, work, kver, cmdline, *sign, env=env)
        with log.step("EFI system partition (systemd-repart)"):
            parts = disk.add_esp(tools, work, inside, uki.path, seed, env)
    versions = outputs.tool_versions(log, tools, root)
    with log.step("outputs (image, manifest, signed reference, checksums)"):
        os.replace(work / "image.raw", out / "image.raw")
        if "qcow2" in formats:
            outputs.write_qcow2(log, out)
        reference = predicted_reference(
            profile.name, uki, cmdline, rootparts.roothash,
            certificate_der(signing.cert) if signing else None)
        outputs.write_reference(out, opts.cache, reference, opts.signing_key)
        if signing is not None:
            outputs.write_secure_boot_cert(out, signing.cert)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch or time.time()))
        image_sbom = sbom(str(reference["image_id"]), packages, created, profile.architecture)
        outputs.write_json(out / "sbom.spdx.json", image_sbom)
    return {
        "auditbox_version": __version__,
        "image_id": reference["image_id"],
        "profile": profile_to_dict(profile),
        "profile_sources": [str(p) for p in profile.sources],
        "suite": profile.suite,
        "architecture": profile.architecture,
        "mirror": profile.mirror,
        "kernel_version": kver,
        "kernel_cmdline": cmdline,
        "roothash": rootparts.roothash,
        "secure_boot": manifest_entry(profile, signing),
        "rules": plan.rule_ids,
        "packages": packages,
        "initrd": initrd_summary,
        "kernel_modules": {"allowlist": plan.modules_allow, "kept": kept_modules},
        "removed": {"kernel_modules": removed_modules, "paths": removed_docs,
                    "setid": stripped, "rule_paths": pruned},
        "partitions": [{k: p.get(k) for k in ("type", "uuid", "offset", "raw_size")}
                       for p in sorted(parts, key=lambda p: int(str(p["offset"])))],
        "image_size": (out / "image.raw").stat().st_size,
        "uki_size": uki.path.stat().st_size,
        "source_date_epoch": epoch,
        "tools": versions,
        "build": {"time": int(time.time()), "steps": log.timings,
                  "bootstrap_key": spec.key()},
        "formats": formats,
        "sha256": {name: sha256_file(out / name) for name in
                   ("image.raw", "image.qcow2", "reference.json") if (out / name).exists()},
        "plan_digest": hashlib.sha256(repr(sorted((str(f.path), f.content) for f in plan.files))
                                      .encode()).hexdigest(),
    }


def _stage_secure_boot_keys(signing: SigningKeys | None, work: Path,
                            inside: str) -> tuple[str | None, str | None]:
    """Copy the Secure Boot key pair where the tools tree sees it; (key, cert) inside paths."""
    if signing is None:
        return None, None
    keys = work / "sb"
    keys.mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(signing.key, keys / "db.key")
    (keys / "db.key").chmod(0o600)
    shutil.copyfile(signing.cert, keys / "db.crt")
    return f"{inside}/sb/db.key", f"{inside}/sb/db.crt"


def _cmdline(plan: BuildPlan, rootparts: disk.RootPartitions) -> str:
    tokens = []
    if rootparts.roothash:
        tokens.append(f"roothash={rootparts.roothash}")
    else:
        tokens += [f"root=PARTUUID={rootparts.root_uuid}", "rootfstype=erofs"]
    tokens.append("ro")
    tokens += [t for t in plan.cmdline if t not in tokens]
    return " ".join(tokens)
