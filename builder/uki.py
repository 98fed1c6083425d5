"""Build the unified kernel image with trixie's ukify and record its PCR 11 predictions.

Signing (sbsign, called by ukify) puts the current time into the Authenticode signature's
signingTime attribute. For a reproducible build (SOURCE_DATE_EPOCH set) ukify runs under
faketime frozen at that epoch, so the same inputs and key give the same signed UKI.
"""

from __future__ import annotations

import datetime
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
        epoch = (env or {}).get("SOURCE_DATE_EPOCH")
        if epoch:
            frozen = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
            argv = ["faketime", "-f", frozen.strftime("%Y-%m-%d %H:%M:%S"), *argv]
            env = {**(env or {}), "TZ": "UTC", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    out = tools.run(argv, what="ukify", capture=True, env=env, merge_stderr=True)
    return Uki(work / "uki.efi", parse_measure(out))
