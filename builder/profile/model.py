"""Typed configuration: what a fully resolved and validated profile holds.

The loader (builder.profile.loader) fills these from YAML through the settings
table in builder.profile.settings; nothing else constructs them from user input.
Defaults are the table's (`default("kiosk.tty")`): it is the one place they are written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from builder.profile.settings import BY_KEY, FILE_FIELDS, USER_FIELDS, Setting

_RECORD_FIELDS = {"users": USER_FIELDS, "files": FILE_FIELDS}


def _setting(key: str) -> Setting:
    record, dot, name = key.partition(".")
    if dot and record in _RECORD_FIELDS:                  # "users.shell": a record's field
        return next(f for f in _RECORD_FIELDS[record] if f.name == name)
    return BY_KEY[key]


def default(key: str) -> Any:
    """The dataclass default of setting `key`, from the settings table."""
    value = _setting(key).default
    if isinstance(value, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(value))
    return value


@dataclass(frozen=True)
class Origin:
    """Where a value came from: file and 1-based line."""

    file: Path
    line: int


@dataclass
class Packages:
    include: list[str] = default("packages.include")
    exclude: list[str] = default("packages.exclude")


@dataclass
class KernelModules:
    # module names, or globs under kernel/ like "drivers/usb/storage/*"
    deny: list[str] = default("kernel.modules.deny")
    allow: list[str] = default("kernel.modules.allow")  # exceptions to deny


@dataclass
class Kernel:
    cmdline: list[str] = default("kernel.cmdline")
    modules: KernelModules = field(default_factory=KernelModules)


@dataclass
class User:
    name: str
    uid: int
    shell: str = default("users.shell")
    groups: list[str] = default("users.groups")
    home: str | None = default("users.home")


@dataclass
class KioskInjection:
    action: str = default("kiosk.injection.action")          # lock | alert | off
    burst_keys: int = default("kiosk.injection.burst_keys")  # this many keys ...
    burst_ms: int = default("kiosk.injection.burst_ms")      # ... within this many ms


@dataclass
class Kiosk:
    tty: str = default("kiosk.tty")
    gateway_host: str | None = default("kiosk.gateway_host")
    gateway_port: int = default("kiosk.gateway_port")
    host_key: str | None = default("kiosk.host_key")   # OpenSSH line (ssh-ed25519)
    banner: str = default("kiosk.banner")
    notice: str | None = default("kiosk.notice")       # None: show /etc/issue
    idle_timeout: int = default("kiosk.idle_timeout")  # seconds
    injection: KioskInjection = field(default_factory=KioskInjection)


@dataclass
class Network:
    dhcp: bool = default("network.dhcp")
    interface: str = default("network.interface")
    ipv6: bool = default("network.ipv6")
    dns: list[str] = default("network.dns")


@dataclass
class Output:
    formats: list[str] = default("output.formats")


@dataclass
class Image:
    verity: bool = default("image.verity")
    compression: str = default("image.compression")      # erofs compressor
    trim: bool = default("image.trim")                    # drop docs, man pages, locales
    source_date_epoch: int | None = default("image.source_date_epoch")


@dataclass
class SecureBoot:
    required: bool = default("secure_boot.required")         # refuse an unsigned UKI
    key: str | None = default("secure_boot.key")             # PEM RSA key (profile-relative)
    cert: str | None = default("secure_boot.cert")           # its certificate, for the db
    development_key: bool = default("secure_boot.development_key")  # a pair in the cache


@dataclass
class TestAccess:
    """Test-only access channels. Empty in production profiles."""

    root_shell_tty: str | None = default("test_access.root_shell_tty")  # e.g. "ttyS1"
    kiosk_tty: str | None = default("test_access.kiosk_tty")            # e.g. "ttyS0"


@dataclass
class FileEntry:
    path: PurePosixPath                # absolute, normalised, inside the image
    content: str
    mode: int = default("files.mode")


@dataclass
class Profile:
    name: str
    source: Path                       # the file given on the command line
    requires: list[str] = default("requires")   # keys a buildable profile must set
    description: str = default("description")
    suite: str = default("suite")
    architecture: str = default("architecture")
    mirror: str | None = default("mirror")
    hostname: str = default("hostname")
    packages: Packages = field(default_factory=Packages)
    kernel: Kernel = field(default_factory=Kernel)
    users: list[User] = default("users")
    kiosk: Kiosk = field(default_factory=Kiosk)
    network: Network = field(default_factory=Network)
    rules: list[str] = default("rules")
    rule_vars: dict[str, dict[str, object]] = default("rule_vars")
    files: list[FileEntry] = default("files")
    output: Output = field(default_factory=Output)
    image: Image = field(default_factory=Image)
    secure_boot: SecureBoot = field(default_factory=SecureBoot)
    test_access: TestAccess = field(default_factory=TestAccess)
    # key path ("kernel.cmdline", "users") -> where it was set; for later errors
    origins: dict[str, Origin] = field(default_factory=dict)
    # every profile file read, in resolution order (for the manifest)
    sources: list[Path] = field(default_factory=list)
