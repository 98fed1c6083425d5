"""Strict value checks used by the settings table.

A Check has a short description (shown as "allowed: ..." in errors and in the
schema) and a function that returns None when the value is fine, or a short
problem statement.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    describe: str
    fn: Callable[[str], str | None]

    def __call__(self, value: str) -> str | None:
        return self.fn(value)


def _pattern(regex: str, what: str, max_len: int | None = None,
             extra: Callable[[str], str | None] | None = None) -> Check:
    compiled = re.compile(regex)

    def fn(value: str) -> str | None:
        if max_len is not None and len(value) > max_len:
            return f"{what} longer than {max_len} characters"
        if not compiled.fullmatch(value):
            return f"{value!r} is not a valid {what}"
        return extra(value) if extra else None

    desc = f"{what} matching {regex}" + (f", at most {max_len} characters" if max_len else "")
    return Check(desc, fn)


# kernel command line token: no spaces, quotes, newlines, ';', '$', backticks
CMDLINE_TOKEN = _pattern(r"[A-Za-z0-9_.,:=/+@-]+", "kernel command line token", 256)
# Debian policy 5.6.1: lower case, digits, + - . ; at least two characters
PACKAGE = _pattern(r"[a-z0-9][a-z0-9+.-]+", "Debian package name", 128)
RULE_ID = _pattern(r"[a-z0-9][a-z0-9-]*", "rule id", 64)
VAR_NAME = _pattern(r"[a-z_][a-z0-9_]*", "variable name", 64)


def _setting_key(value: str) -> str | None:
    from builder.profile.settings import BY_KEY  # the table uses this module's checks

    if value not in BY_KEY or value in ("extends", "name", "requires"):
        return f"{value!r} is not a profile key a profile can be required to set"
    return None


SETTING_KEY = Check("a key listed by `auditbox profile schema`",
                    _setting_key)
HOST_FILE = _pattern(r"[A-Za-z0-9._/@+~-]+", "file path on the build host", 4096)
PROFILE_NAME = _pattern(r"[a-z0-9][a-z0-9-]{0,62}", "profile name")
USER_NAME = _pattern(r"[a-z_][a-z0-9_-]{0,31}", "user name")
GROUP_NAME = _pattern(r"[a-z_][a-z0-9_-]{0,31}", "group name")
TTY = _pattern(r"tty[0-9]{1,2}|ttyS[0-9]|hvc[0-9]", "tty name")
INTERFACE = _pattern(r"[A-Za-z0-9_.*-]{1,15}", "interface name or glob")

_MODULE_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_MODULE_GLOB = re.compile(r"[a-zA-Z0-9_*-]+(/[a-zA-Z0-9_*-]+)*(/\*)?")


def _module(value: str) -> str | None:
    if len(value) > 200:
        return "module name or path longer than 200 characters"
    if _MODULE_NAME.fullmatch(value):
        return None
    if value.startswith("/"):
        return f"{value!r}: module paths are relative to the kernel tree (no leading '/')"
    if ".." in value.split("/"):
        return f"{value!r}: '..' is not allowed in a module path"
    if "/" in value and _MODULE_GLOB.fullmatch(value):
        return None
    return f"{value!r} is not a module name or module path glob"


MODULE = Check(r"module name [a-zA-Z0-9_-]+ or path glob like drivers/usb/storage/*", _module)

_PATH_CHARS = re.compile(r"[A-Za-z0-9._/@+-]+")
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


def _image_path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"{value!r} is not an absolute path"
    if len(value) > 1024:
        return "path longer than 1024 characters"
    if not _PATH_CHARS.fullmatch(value):
        return f"{value!r} contains characters outside [A-Za-z0-9._/@+-]"
    if value == "/":
        return "'/' is not a file path"
    if "//" in value:
        return f"{value!r} contains '//'"
    if value.endswith("/"):
        return f"{value!r} ends with '/'"
    parts = value.split("/")
    if ".." in parts or "." in parts:
        return f"{value!r} contains '.' or '..' components"
    if posixpath.normpath(value) != value:
        return f"{value!r} is not normalised"
    for root in _FORBIDDEN_ROOTS:
        if value == root or value.startswith(root + "/"):
            return f"{value!r} is under {root}, which is not part of the image"
    return None


IMAGE_PATH = Check("absolute normalised path of [A-Za-z0-9._/@+-], not under /proc /sys /dev",
                   _image_path)

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _hostname(value: str) -> str | None:
    if len(value) > 253 or not value:
        return f"{value!r} is not an RFC 1123 host name (1..253 characters)"
    labels = value.removesuffix(".").split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"{value!r} is not an RFC 1123 host name"
    if labels[-1].isdigit():
        return f"{value!r}: the last label of a host name cannot be all digits"
    return None


HOSTNAME = Check("RFC 1123 host name (labels of letters, digits, '-')", _hostname)


def _ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IPv4 or IPv6 address"
    return None


IP_ADDRESS = Check("IPv4 or IPv6 address literal", _ip)


def _host_or_ip(value: str) -> str | None:
    if _ip(value) is None or _hostname(value) is None:
        return None
    return f"{value!r} is neither a host name nor an IP address"


HOST_OR_IP = Check("RFC 1123 host name or IPv4/IPv6 literal", _host_or_ip)

_URL = re.compile(r"(https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|file://)(/[A-Za-z0-9._~/%+-]*)?")


def _mirror(value: str) -> str | None:
    if not _URL.fullmatch(value):
        return f"{value!r} is not an http(s):// or file:// URL without spaces or quotes"
    return None


MIRROR = Check("http://, https:// or file:// URL without spaces or quotes", _mirror)

# the gateway offers an Ed25519 host key only (docs/protocol.md section 1)
_KEY_TYPES = ("ssh-ed25519",)


def _host_key(value: str) -> str | None:
    fields = value.split()
    if len(fields) not in (2, 3) or value != value.strip() or "\n" in value:
        return "not an OpenSSH public key line 'TYPE BASE64 [comment]'"
    key_type, blob = fields[0], fields[1]
    if key_type not in _KEY_TYPES:
        return f"key type {key_type!r} is not accepted"
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "the key data is not valid base64"
    if len(raw) < 4:
        return "the key data is truncated"
    n = int.from_bytes(raw[:4], "big")
    if n > len(raw) - 4 or raw[4:4 + n] != key_type.encode():
        return f"the key data does not hold a {key_type} key"
    return None


HOST_KEY = Check("OpenSSH public key line: " + "|".join(_KEY_TYPES) + " BASE64 [comment]",
                 _host_key)


def _single_line(value: str) -> str | None:
    if any(ord(c) < 32 and c != "\t" for c in value):
        return "control characters or newlines are not allowed"
    if len(value) > 1000:
        return "longer than 1000 characters"
    return None


SINGLE_LINE = Check("one line of text, at most 1000 characters", _single_line)


def _text_block(max_lines: int, max_chars: int) -> Check:
    """Printable text shown on the kiosk screen: newlines allowed, no other control chars."""

    def fn(value: str) -> str | None:
        if any((ord(c) < 32 and c != "\n") or 0x7f <= ord(c) < 0xa0 for c in value):
            return "control characters other than newlines are not allowed"
        if len(value) > max_chars:
            return f"longer than {max_chars} characters"
        if value.count("\n") + 1 > max_lines:
            return f"more than {max_lines} lines"
        return None

    return Check(f"printable text, at most {max_lines} lines and {max_chars} characters", fn)


BANNER_TEXT = _text_block(3, 240)
NOTICE_TEXT = _text_block(12, 1200)


def _abs_path(value: str) -> str | None:
    return _image_path(value)


ABS_PATH = Check("absolute normalised path of [A-Za-z0-9._/@+-]", _abs_path)

_OCTAL = re.compile(r"0o?[0-7]{1,4}|[0-7]{1,4}")


def parse_mode(value: str) -> int | None:
    """Parse an octal mode string like "0644" or "0o755"; None if malformed."""
    if not _OCTAL.fullmatch(value):
        return None
    return int(value.replace("0o", "") or "0", 8)
