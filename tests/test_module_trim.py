"""builder/module_trim.py: the allow-list keeps what it names and what that needs; removals
take their dependents along; a removal that breaks what the image needs stops the build."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.module_trim import parse_modules_dep, plan_trim
from builder.tree import kept_modules, remove_modules

DEP = "".join(f"kernel/{line}\n" for line in (
    "drivers/gpu/drm/i915/i915.ko.xz: "
    "kernel/drivers/gpu/drm/display/drm_display_helper.ko.xz "
    "kernel/drivers/media/cec/core/cec.ko.xz kernel/drivers/gpu/drm/drm.ko.xz",
    "drivers/gpu/drm/display/drm_display_helper.ko.xz: "
    "kernel/drivers/media/cec/core/cec.ko.xz kernel/drivers/gpu/drm/drm.ko.xz",
    "drivers/media/cec/core/cec.ko.xz:",
    "drivers/gpu/drm/drm.ko.xz:",
    "drivers/mmc/core/mmc_core.ko.xz:",
    "drivers/net/wireless/brcmfmac.ko.xz: "
    "kernel/drivers/mmc/core/mmc_core.ko.xz",
    "drivers/media/i2c/ov5693.ko.xz: "
    "kernel/drivers/media/v4l2-core/videodev.ko.xz",
    "drivers/media/v4l2-core/videodev.ko.xz:",
    "fs/udf/udf.ko.xz:",
))
FILES = sorted(line.split(":")[0].removeprefix("kernel/") for line in DEP.splitlines())


def test_parse_modules_dep() -> None:
    deps = parse_modules_dep(DEP)
    assert deps["drivers/gpu/drm/i915/i915.ko.xz"][1] == "drivers/media/cec/core/cec.ko.xz"
    assert deps["fs/udf/udf.ko.xz"] == []


def test_allowlist_keeps_what_it_names_and_their_dependencies() -> None:
    trim = plan_trim(FILES, parse_modules_dep(DEP), [], [], ["i915"])
    assert trim.kept == ["drivers/gpu/drm/display/drm_display_helper.ko.xz",
                         "drivers/gpu/drm/drm.ko.xz", "drivers/gpu/drm/i915/i915.ko.xz",
                         "drivers/media/cec/core/cec.ko.xz"]       # CEC core comes along
    assert "drivers/media/i2c/ov5693.ko.xz" in trim.removed and not trim.unloadable


def test_a_removal_takes_its_dependents() -> None:
    trim = plan_trim(FILES, parse_modules_dep(DEP), ["drivers/mmc"], [], None)
    assert "drivers/net/wireless/brcmfmac.ko.xz" in trim.removed
    assert trim.unloadable == {"drivers/net/wireless/brcmfmac.ko.xz":
                               "drivers/mmc/core/mmc_core.ko.xz"}
    assert "fs/udf/udf.ko.xz" in trim.kept                           # no allow-list: rest stays


def test_a_removal_that_breaks_a_kept_module_stops_the_build() -> None:
    with pytest.raises(BuildError, match=r"needs drivers/gpu/drm/i915/i915\.ko\.xz \(which"):
        plan_trim(FILES, parse_modules_dep(DEP), ["drivers/media"], ["i915"], ["i915"])
    # the same removal without CEC's directory is fine
    trim = plan_trim(FILES, parse_modules_dep(DEP), ["drivers/media/i2c", "videodev"],
                     ["i915"], ["i915"])
    assert "drivers/gpu/drm/i915/i915.ko.xz" in trim.kept


def test_pipeline_applies_the_allowlist(tmp_path: Path) -> None:
    kver = "6.12.0-1-amd64"
    base = tmp_path / "usr/lib/modules" / kver
    for rel in FILES:
        (base / "kernel" / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / "kernel" / rel).write_bytes(b"")
    (base / "modules.dep").write_text(DEP)
    removed = remove_modules(tmp_path, kver, ["udf"], ["drm"], ["i915"])
    assert "fs/udf/udf.ko.xz" in removed and "drivers/media/i2c/ov5693.ko.xz" in removed
    assert kept_modules(tmp_path, kver) == plan_trim(FILES, parse_modules_dep(DEP), ["udf"],
                                                     ["drm"], ["i915"]).kept


def test_a_directory_written_as_a_name_is_refused() -> None:
    from builder.errors import InputError
    from builder.plan import BuildPlan
    from builder.profile.model import Profile
    from builder.rules import apply_rules

    p = Profile(name="t", source=Path("/p/t.yaml"), rules=["modules-allowlist"],
                rule_vars={"modules-allowlist": {"extra": ["crypto"]}})
    with pytest.raises(InputError, match="for the directory write crypto/"):
        apply_rules(p, BuildPlan(profile=p))
