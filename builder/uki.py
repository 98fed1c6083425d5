"""Build the unified kernel image with trixie's ukify and record its PCR 11 predictions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from builder.tools import ToolsTree

STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
PHASE = re.compile(r"^# PCR\[11\] Phase <(?P<phase>[^>]*)>")
VALUE = re.compile(r"^11:sha256=(?P<hex>[0-9a-f]{64})$")


@dataclass
class Uki:
    path: Path
    pcr11: dict[str, str] = field(default_factory=dict)   # phase path -> sha256 hex


def parse_measure(text: str) -> dict[str, str]:
    """ukify --measure output -> {phase path: PCR 11 sha256}; "" for the first, unphased value."""
    phases: dict[str, str] = {}
    phase = ""
    for line in text.splitlines():
        if m := PHASE.match(line.strip()):
            phase = m["phase"]
        elif m := VALUE.match(line.strip()):
            phases[phase] = m["hex"]
    return phases


def build_uki(tools: ToolsTree, inside: str, work: Path, kver: str, cmdline: str,
              sign_key: str | None = None, sign_cert: str | None = None,
              env: dict[str, str] | None = None) -> Uki:
    argv = ["ukify", "build", f"--linux={inside}/vmlinuz", f"--initrd={inside}/initrd.img",
            f"--cmdline={cmdline}", f"--os-release=@{inside}/os-release", f"--uname={kver}",
            f"--stub={STUB}", "--measure", f"--output={inside}/uki.efi"]
    if sign_key and sign_cert:
        argv += [f"--secureboot-private-key={sign_key}",
                 f"--secureboot-certificate={sign_cert}", "--signtool=sbsign"]
    out = tools.run(argv, what="ukify", capture=True, env=env, merge_stderr=True)
    return Uki(work / "uki.efi", parse_measure(out))
