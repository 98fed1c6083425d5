"""The one declarative table of profile settings.

Loading (builder.profile.loader), merging (builder.profile.merge), error messages
and the documented schema (`auditbox profile schema`) all come from SETTINGS.
Groups such as "kernel" or "kernel.modules" are implied by the dotted keys.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from builder.profile import validators as v


class Kind(Enum):
    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    ENUM = "one of the allowed values"
    LIST = "list of strings"
    RECORDS = "list of mappings"
    RULE_VARS = "mapping rule-id -> mapping variable -> scalar or list of scalars"
    MODE = "file mode: integer or octal string like \"0644\""
    EXTENDS = "string or list of strings"


@dataclass(frozen=True)
class Setting:
    key: str
    kind: Kind
    default: Any
    help: str
    check: v.Check | None = None          # for STR, and for LIST items
    choices: tuple[str, ...] = ()          # for ENUM, and for LIST items
    nullable: bool = False
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    min_items: int = 0
    fields: tuple[Setting, ...] = ()       # for RECORDS: the keys of one item
    identity: str | None = None            # for RECORDS: the field naming an item
    multiline: bool = False                # for STR: newlines allowed

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    def allowed(self) -> str | None:
        """Short description of the allowed values, for errors and the schema."""
        parts: list[str] = []
        if self.choices:
            parts.append(", ".join(self.choices))
        if self.check is not None:
            parts.append(self.check.describe)
        if self.minimum is not None or self.maximum is not None:
            if self.maximum is None:
                parts.append(f">= {self.minimum}")
            elif self.minimum is None:
                parts.append(f"<= {self.maximum}")
            elif self.kind is Kind.MODE:
                parts.append(f"0{self.minimum:o}..0{self.maximum:o}")
            else:
                parts.append(f"{self.minimum}..{self.maximum}")
        text = "; ".join(parts)
        if self.nullable:
            text = f"{text} or null" if text else "null"
        return text or None

    def type_text(self) -> str:
        if self.kind is Kind.LIST and self.choices:
            return "list of: " + ", ".join(self.choices)
        if self.kind is Kind.RECORDS:
            return f"list of {self.name.removesuffix('s')} mappings"
        text = self.kind.value
        return f"{text} or null" if self.nullable else text


USER_FIELDS: tuple[Setting, ...] = (
    Setting("name", Kind.STR, None, "Login name.", v.USER_NAME, required=True),
    Setting("uid", Kind.INT, None, "Numeric user id.", minimum=1000, maximum=59999,
            required=True),
    Setting("shell", Kind.STR, "/usr/sbin/nologin", "Login shell (absolute path).", v.ABS_PATH),
    Setting("groups", Kind.LIST, [], "Supplementary groups.", v.GROUP_NAME),
    Setting("home", Kind.STR, None, "Home directory; null means /home/NAME.", v.ABS_PATH,
            nullable=True),
)

FILE_FIELDS: tuple[Setting, ...] = (
    Setting("path", Kind.STR, None, "Absolute path inside the image.", v.IMAGE_PATH,
            required=True),
    Setting("content", Kind.STR, None, "File content (text).", required=True, multiline=True),
    Setting("mode", Kind.MODE, 0o644, "Permission bits.", minimum=0, maximum=0o7777),
)

_TTY_NOTE = "tty1..tty63, ttyS0..ttyS9 or hvc0..hvc9"

SETTINGS: tuple[Setting, ...] = (
    Setting("extends", Kind.EXTENDS, [],
            "Parent profile(s): absolute paths or paths relative to this file's directory, "
            "'.yaml' may be omitted; a bare name not found there names a profile shipped "
            "with auditbox. Parents are merged in list order, depth first, then this file on "
            "top."),
    Setting("name", Kind.STR, None, "Profile name; names the image.", v.PROFILE_NAME,
            required=True),
    Setting("requires", Kind.LIST, [],
            "Keys a buildable profile must set (a base profile lists what the profiles "
            "extending it have to fill in, e.g. its gateway); build and validate refuse a "
            "profile that leaves one unset.", v.SETTING_KEY),
    Setting("description", Kind.STR, "", "Free text for humans.", v.SINGLE_LINE),
    Setting("suite", Kind.ENUM, "trixie", "Debian suite.", choices=("trixie",)),
    Setting("architecture", Kind.ENUM, "amd64", "Debian architecture.", choices=("amd64",)),
    Setting("mirror", Kind.STR, None,
            "Package mirror URL; null leaves the choice to mmdebstrap (or --mirror).",
            v.MIRROR, nullable=True),
    Setting("hostname", Kind.STR, "auditbox", "Host name of the terminal.", v.HOSTNAME),
    Setting("packages.include", Kind.LIST, [], "Extra Debian packages to install.", v.PACKAGE),
    Setting("packages.exclude", Kind.LIST, [], "Debian packages that must not be installed.",
            v.PACKAGE),
    Setting("kernel.cmdline", Kind.LIST, [], "Kernel command line tokens.", v.CMDLINE_TOKEN),
    Setting("kernel.modules.deny", Kind.LIST, [],
            "Kernel modules (names or tree path globs) removed from the image.", v.MODULE),
    Setting("kernel.modules.allow", Kind.LIST, [], "Exceptions to kernel.modules.deny.",
            v.MODULE),
    Setting("users", Kind.RECORDS, [],
            "Local accounts. An item with the name of an inherited user replaces it.",
            fields=USER_FIELDS, identity="name"),
    Setting("kiosk.tty", Kind.STR, "tty1", f"Terminal the kiosk runs on ({_TTY_NOTE}).", v.TTY),
    Setting("kiosk.gateway_host", Kind.STR, None, "Gateway host name or address.",
            v.HOST_OR_IP, nullable=True),
    Setting("kiosk.gateway_port", Kind.INT, 22, "Gateway SSH port.", minimum=1, maximum=65535),
    Setting("kiosk.host_key", Kind.STR, None,
            "The gateway's Ed25519 host key (OpenSSH public key line, as `auditbox gateway "
            "init` prints it), pinned at build time: the kiosk refuses any other key.",
            v.HOST_KEY, nullable=True),
    Setting("kiosk.banner", Kind.STR, "auditbox terminal",
            "Organization banner at the top of the login screen (1-3 lines).", v.BANNER_TEXT,
            multiline=True),
    Setting("kiosk.notice", Kind.STR, None,
            "Legal notice on the login screen, re-wrapped to the screen width; null shows "
            "/etc/issue (the legal-banner rule's text).", v.NOTICE_TEXT, nullable=True,
            multiline=True),
    Setting("kiosk.idle_timeout", Kind.INT, 900,
            "Seconds without a key press after which the kiosk closes the session (or clears "
            "a half-typed login) and asks for credentials again.", minimum=30, maximum=86400),
    Setting("kiosk.injection.action", Kind.ENUM, "lock",
            "Typing faster than a person can (a keystroke injector): alert = report it to the "
            "gateway; lock = report it, end the session and lock the screen; off = ignore.",
            choices=("lock", "alert", "off")),
    Setting("kiosk.injection.burst_keys", Kind.INT, 20,
            "Key presses that count as a burst when they all arrive within "
            "kiosk.injection.burst_ms.", minimum=5, maximum=1000),
    Setting("kiosk.injection.burst_ms", Kind.INT, 200,
            "The burst window in milliseconds (default 20 keys in 200 ms, 100 keys/s: "
            "several times the fastest human typing).", minimum=10, maximum=10000),
    Setting("network.dhcp", Kind.BOOL, True, "Configure the interface with DHCP."),
    Setting("network.interface", Kind.STR, "en*", "Interface name or glob.", v.INTERFACE),
    Setting("network.ipv6", Kind.BOOL, False, "Enable IPv6."),
    Setting("network.dns", Kind.LIST, [], "DNS server addresses.", v.IP_ADDRESS),
    Setting("rules", Kind.LIST, [], "Hardening rule ids from the rule catalogue.", v.RULE_ID),
    Setting("rule_vars", Kind.RULE_VARS, {},
            "Per-rule variables; the rule catalogue checks the values.", v.VAR_NAME),
    Setting("files", Kind.RECORDS, [],
            "Extra files. An item with the path of an inherited file replaces it.",
            fields=FILE_FIELDS, identity="path"),
    Setting("output.formats", Kind.LIST, ["raw"], "Disk image formats to write.",
            choices=("raw", "qcow2"), min_items=1),
    Setting("image.verity", Kind.BOOL, True, "erofs root under dm-verity."),
    Setting("image.compression", Kind.ENUM, "lz4hc", "erofs compressor.",
            choices=("lz4", "lz4hc", "lzma", "none")),
    Setting("image.trim", Kind.BOOL, True, "Drop docs, man pages and unused locales."),
    Setting("image.source_date_epoch", Kind.INT, None,
            "SOURCE_DATE_EPOCH for reproducible builds; null: the build time.",
            minimum=0, nullable=True),
    Setting("secure_boot.required", Kind.BOOL, False,
            "Refuse to build unless a Secure Boot key signs the UKI (the production base "
            "profile sets it; gateways then require Secure Boot at PCR 7)."),
    Setting("secure_boot.key", Kind.STR, None,
            "PEM RSA private key that signs the UKI (relative to this profile's directory); "
            "--secure-boot-key overrides it.", v.HOST_FILE, nullable=True),
    Setting("secure_boot.cert", Kind.STR, None,
            "PEM certificate of secure_boot.key: enroll it in the firmware's db.",
            v.HOST_FILE, nullable=True),
    Setting("secure_boot.development_key", Kind.BOOL, False,
            "Sign with a development key pair generated in the cache on first use (example "
            "and development builds; the manifest says so). Never for real terminals."),
    Setting("test_access.root_shell_tty", Kind.STR, None,
            "TEST ONLY: passwordless root shell on this tty. Null in production.", v.TTY,
            nullable=True),
    Setting("test_access.kiosk_tty", Kind.STR, None,
            "TEST ONLY: run the kiosk on this (serial) tty. Null in production.", v.TTY,
            nullable=True),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}

MERGE_RULES: tuple[str, ...] = (
    "extends: one path or a list of paths, absolute or relative to the extending file's "
    "directory ('.yaml' may be omitted; a bare name not found there names a shipped "
    "profile). Parents are resolved depth first and merged in list order; "
    "the extending file is merged last, on top. A cycle is an error naming the chain.",
    "Mappings merge key by key, recursively.",
    "Lists of strings append: inherited items first, then the child's; duplicates are "
    "dropped (first occurrence kept).",
    "A list item written as \"!item\" removes \"item\" from the inherited list. Removing an "
    "item that is not inherited is an error (it hides typos).",
    "users and files: an item whose name (users) or path (files) matches an inherited item "
    "replaces it; \"!name\" / \"!/path\" removes an inherited item.",
    "rule_vars: merged per rule and variable; a variable's value (scalar or list) is "
    "replaced as a whole.",
    "Scalars (strings, integers, booleans, null): the child's value wins.",
    "Defaults apply to keys no file sets.",
)


class Keyed(Protocol):
    """Anything with a dotted ``key``: a Setting here, or gateway.config's."""

    @property
    def key(self) -> str: ...


def group_children(prefix: str, table: Sequence[Keyed] = SETTINGS) -> list[str]:
    """Names allowed directly under the group `prefix` ("" is the top level)."""
    names: list[str] = []
    for s in table:
        if prefix and not s.key.startswith(prefix + "."):
            continue
        rest = s.key[len(prefix) + 1:] if prefix else s.key
        head = rest.split(".", 1)[0]
        if head not in names:
            names.append(head)
    return names


def is_group(key: str, table: Sequence[Keyed] = SETTINGS) -> bool:
    return any(s.key.startswith(key + ".") for s in table)


def _default_text(s: Setting) -> str:
    if s.required:
        return "(required)"
    if s.default is None:
        return "null"
    if s.kind is Kind.MODE:
        return f'"{s.default:04o}"'
    if isinstance(s.default, bool):
        return "true" if s.default else "false"
    if isinstance(s.default, str):
        return f'"{s.default}"'
    if isinstance(s.default, list):
        return "[" + ", ".join(str(x) for x in s.default) + "]"
    if isinstance(s.default, dict):
        return "{}"
    return str(s.default)


def _describe(s: Setting, indent: str) -> list[str]:
    lines = [f"{indent}{s.key}", f"{indent}    type:    {s.type_text()}",
             f"{indent}    default: {_default_text(s)}"]
    allowed = s.allowed()
    if allowed:
        lines.append(f"{indent}    allowed: {allowed}")
    if s.min_items:
        lines.append(f"{indent}    at least {s.min_items} item(s)")
    lines.extend(textwrap.wrap(s.help, 92, initial_indent=indent + "    ",
                               subsequent_indent=indent + "    "))
    for f in s.fields:
        lines.extend(_describe(f, indent + "    "))
    return lines


def schema_text() -> str:
    """The documented profile format: every key, type, default, allowed values, help."""
    out = ["auditbox profile format (YAML)", "",
           "One YAML document per file, a mapping at the top; plain YAML only (no anchors,",
           "aliases or tags); UTF-8, at most 1 MiB. Unknown keys are errors. Booleans are",
           "true/false; integers are plain integers; strings that look like numbers or",
           "booleans must be quoted.", "", "Settings:", ""]
    for s in SETTINGS:
        out.extend(_describe(s, "  "))
        out.append("")
    out.append("Merge rules (extends):")
    for rule in MERGE_RULES:
        out.extend(textwrap.wrap(rule, 92, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(out) + "\n"


def _json_setting(s: Setting) -> dict[str, Any]:
    item: dict[str, Any] = {
        "key": s.key, "type": s.kind.name.lower(), "type_text": s.type_text(),
        "default": None if s.required else s.default, "required": s.required,
        "nullable": s.nullable, "help": s.help,
    }
    if s.choices:
        item["choices"] = list(s.choices)
    if s.check is not None:
        item["allowed"] = s.check.describe
    if s.minimum is not None:
        item["minimum"] = s.minimum
    if s.maximum is not None:
        item["maximum"] = s.maximum
    if s.min_items:
        item["min_items"] = s.min_items
    if s.fields:
        item["fields"] = [_json_setting(f) for f in s.fields]
        item["identity"] = s.identity
    return item


def schema_json() -> dict[str, Any]:
    return {"settings": [_json_setting(s) for s in SETTINGS], "merge_rules": list(MERGE_RULES)}
