"""Typed configuration: what a fully resolved and validated profile holds.

The loader (builder.profile.loader) fills these from YAML through the settings
table in builder.profile.settings; nothing else constructs them from user input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Origin:
    """Where a value came from: file and 1-based line."""

    file: Path
    line: int


@dataclass
class Packages:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


@dataclass
class KernelModules:
    # module names, or globs under kernel/ like "drivers/usb/storage/*"
    deny: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)  # exceptions to deny


@dataclass
class Kernel:
    cmdline: list[str] = field(default_factory=list)
    modules: KernelModules = field(default_factory=KernelModules)


@dataclass
class User:
    name: str
    uid: int
    shell: str = "/usr/sbin/nologin"
    groups: list[str] = field(default_factory=list)
    home: str | None = None


@dataclass
class KioskInjection:
    action: str = "lock"              # lock | alert | off
    burst_keys: int = 20              # this many keys ...
    burst_ms: int = 200               # ... within this many milliseconds is a burst


@dataclass
class Kiosk:
    tty: str = "tty1"
    gateway_host: str | None = None
    gateway_port: int = 22
    host_key: str | None = None       # OpenSSH public key line of the gateway (ssh-ed25519)
    banner: str = "auditbox terminal"
    notice: str | None = None         # None: show /etc/issue
    idle_timeout: int = 900           # seconds
    injection: KioskInjection = field(default_factory=KioskInjection)


@dataclass
class Network:
    dhcp: bool = True
    interface: str = "en*"
    ipv6: bool = False
    dns: list[str] = field(default_factory=list)


@dataclass
class Output:
    formats: list[str] = field(default_factory=lambda: ["raw"])


@dataclass
class Image:
    verity: bool = True
    compression: str = "lz4hc"        # erofs compressor
    trim: bool = True                 # drop docs, man pages, unused locales
    source_date_epoch: int | None = None


@dataclass
class TestAccess:
    """Test-only access channels. Empty in production profiles."""

    root_shell_tty: str | None = None  # e.g. "ttyS1": a passwordless root shell
    kiosk_tty: str | None = None       # e.g. "ttyS0": the kiosk on a serial port


@dataclass
class FileEntry:
    path: PurePosixPath                # absolute, normalised, inside the image
    content: str
    mode: int = 0o644


@dataclass
class Profile:
    name: str
    source: Path                       # the file given on the command line
    requires: list[str] = field(default_factory=list)   # keys a buildable profile must set
    description: str = ""
    suite: str = "trixie"
    architecture: str = "amd64"
    mirror: str | None = None
    hostname: str = "auditbox"
    packages: Packages = field(default_factory=Packages)
    kernel: Kernel = field(default_factory=Kernel)
    users: list[User] = field(default_factory=list)
    kiosk: Kiosk = field(default_factory=Kiosk)
    network: Network = field(default_factory=Network)
    rules: list[str] = field(default_factory=list)
    rule_vars: dict[str, dict[str, object]] = field(default_factory=dict)
    files: list[FileEntry] = field(default_factory=list)
    output: Output = field(default_factory=Output)
    image: Image = field(default_factory=Image)
    test_access: TestAccess = field(default_factory=TestAccess)
    # key path ("kernel.cmdline", "users") -> where it was set; for later errors
    origins: dict[str, Origin] = field(default_factory=dict)
    # every profile file read, in resolution order (for the manifest)
    sources: list[Path] = field(default_factory=list)
