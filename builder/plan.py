"""BuildPlan: everything the pipeline will put into the image.

The plan is data: builder.planner.make_plan fills it from a profile (the pipeline's own
needs, the base overlays, the test access, the rules' mechanisms, each adding to it), and
the pipeline only reads it. Layering, one way: overlay (rendering) <- plan <- rules <-
planner <- pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from builder.overlay import render
from builder.profile.model import Profile

KIOSK_USER = "kiosk"                  # the account the kiosk service runs as
CMDLINE_FILE = "/etc/kernel/cmdline"  # the UKI's command line (before roothash=) in the tree


@dataclass
class PlannedFile:
    path: PurePosixPath               # absolute path inside the image
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    source: str = ""                  # overlay template or rule id that produced it


@dataclass
class BuildPlan:
    profile: Profile
    packages: list[str] = field(default_factory=list)          # to install (sorted, unique)
    packages_absent: list[str] = field(default_factory=list)   # must not be in the image
    cmdline: list[str] = field(default_factory=list)           # kernel command line tokens
    files: list[PlannedFile] = field(default_factory=list)
    modules_remove: list[str] = field(default_factory=list)    # module names / globs to delete
    modules_keep: list[str] = field(default_factory=list)      # exceptions
    modules_allow: list[str] | None = None  # an allow-list: None keeps what no rule removes
    units_enable: list[str] = field(default_factory=list)
    units_mask: list[str] = field(default_factory=list)
    rule_ids: list[str] = field(default_factory=list)          # rules applied, in order
    setid_allow: list[str] | None = None   # None: keep setuid/setgid bits; else strip all others
    paths_remove: list[str] = field(default_factory=list)      # absolute paths/globs to delete

    def add_file(self, path: str, content: str | bytes, mode: int = 0o644,
                 source: str = "") -> None:
        data = content.encode() if isinstance(content, str) else content
        p = PurePosixPath(path)
        self.files = [f for f in self.files if f.path != p]
        self.files.append(PlannedFile(p, data, mode, source=source))

    def add_overlay(self, path: str, template: str, mode: int = 0o644, **context: object) -> None:
        self.add_file(path, render(template, profile=self.profile, **context), mode,
                      source=f"overlays/{template}")
