"""gateway.yaml: one table of settings, typed frozen dataclasses, a strict loader.

Everything comes from SETTINGS: parsing and its errors (``error: FILE:LINE: key.path:
what is wrong (allowed: ...)``), the defaults, the commented file ``auditbox gateway
init`` writes (``render_commented``) and the documented schema (``schema_text``).
Unknown keys are errors. Durations are written ``250ms``, ``30s``, ``5m``, ``1h``,
``7d``; sizes ``512B``, ``2KiB``, ``64MiB``, ``1GiB``. Relative paths are relative to
the directory of the config file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import hashlib
import re
import socket
import textwrap
import zoneinfo
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import InputError
from builder.profile import validators as v
from builder.profile.settings import group_children as _group_children
from builder.profile.settings import is_group as _is_group
from builder.profile.yamlpos import Map, Scalar, Seq, YNode, load_yaml, type_name

if TYPE_CHECKING:
    from gateway.anomaly import Rule

ENV_CONFIG = "AUDITBOX_GATEWAY_CONFIG"
DEFAULT_CONFIG = "gateway.yaml"
ENROLL_USER = "auditbox-enroll"


class Kind(Enum):
    STR = "string"
    INT = "integer"
    NUMBER = "number"
    BOOL = "boolean"
    ENUM = "one of the allowed values"
    DURATION = "duration (250ms, 30s, 5m, 1h, 7d)"
    SIZE = "size (512B, 2KiB, 64MiB, 1GiB)"
    PATH = "path (relative to this file's directory)"
    PATHS = "list of paths (relative to this file's directory)"
    DATABASE = "SQLite file path, or postgresql:// URL"
    ARGV = "list of strings (a command and its arguments)"
    ADDRESSES = "list of IP addresses"
    RULES = "list of rule mappings"


# Config fields that describe where the configuration came from, not settings
LOAD_FIELDS = ("path", "sha256", "lines")


@dataclass(frozen=True)
class Setting:
    key: str
    kind: Kind
    default: Any
    help: str
    check: v.Check | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    required: bool = False
    minimum: float | None = None          # INT, NUMBER; DURATION in seconds; SIZE in bytes
    maximum: float | None = None

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    def allowed(self) -> str | None:
        parts: list[str] = []
        if self.choices:
            parts.append(", ".join(self.choices))
        if self.check is not None:
            parts.append(self.check.describe)
        lo, hi = self.minimum, self.maximum
        if lo is not None or hi is not None:
            fmt = {Kind.DURATION: format_duration, Kind.SIZE: format_size}.get(
                self.kind, _plain_number)
            if hi is None:
                parts.append(f">= {fmt(lo or 0)}")
            elif lo is None:
                parts.append(f"<= {fmt(hi)}")
            else:
                parts.append(f"{fmt(lo)}..{fmt(hi)}")
        text = "; ".join(parts)
        if self.nullable:
            text = f"{text} or null" if text else "null"
        return text or None


def _plain_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# -- value syntaxes ----------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]{1,9})(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"([0-9]{1,12})(B|KiB|MiB|GiB|TiB)")
_SIZE_UNITS: dict[str, float] = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
                                 "TiB": 1 << 40}


def _parse(text: str, pattern: re.Pattern[str], units: dict[str, float]) -> float | None:
    m = pattern.fullmatch(text)
    return int(m.group(1)) * units[m.group(2)] if m else None


def _format(value: float, units: dict[str, float], smallest: str) -> str:
    """The largest unit that writes ``value`` as a whole number."""
    for unit, size in sorted(units.items(), key=lambda u: -u[1]):
        n = value / size
        if n >= 1 and float(n).is_integer():
            return f"{int(n)}{unit}"
    return f"{round(value / units[smallest])}{smallest}"


def parse_duration(text: str) -> float | None:
    """Seconds for ``30s`` etc.; None if malformed."""
    return _parse(text, _DURATION, _DURATION_UNITS)


def format_duration(seconds: float) -> str:
    return _format(seconds, _DURATION_UNITS, "ms")


def parse_size(text: str) -> int | None:
    value = _parse(text, _SIZE, _SIZE_UNITS)
    return None if value is None else int(value)


def format_size(nbytes: float) -> str:
    return _format(nbytes, _SIZE_UNITS, "B")


def _postgres_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


_PATH_TEXT = re.compile(r"[A-Za-z0-9._/@+~-]+")
PATH = v.Check("file path of [A-Za-z0-9._/@+~-]",
               lambda s: None if _PATH_TEXT.fullmatch(s) and len(s) <= 1024
               else f"{s!r} is not a plain file path")
REPLICA = v.Check("replica name matching [A-Za-z0-9._:-]{1,64}",
                  lambda s: None if re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", s)
                  else f"{s!r} is not a valid replica name")


def _timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{value!r} is not a known time zone"
    return None


ARGV_ITEM = v.Check("an absolute command path, then its arguments",
                    lambda s: "newlines and NUL are not allowed"
                    if "\n" in s or "\x00" in s else None)
_UPSTREAM_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                       "ecdsa-sha2-nistp521", "ssh-rsa")


def _upstream_host_key(value: str) -> str | None:
    """An OpenSSH public key line of any key type a harness's sshd may have."""
    fields = value.split()
    if len(fields) not in (2, 3) or value != value.strip() or "\n" in value:
        return "not an OpenSSH public key line 'TYPE BASE64 [comment]'"
    if fields[0] not in _UPSTREAM_KEY_TYPES:
        return f"key type {fields[0]!r} is not accepted"
    try:
        raw = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return "the key data is not valid base64"
    n = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if n < 0 or raw[4:4 + n] != fields[0].encode():
        return f"the key data does not hold a {fields[0]} key"
    return None


UPSTREAM_HOST_KEY = v.Check("OpenSSH public key line: " + "|".join(_UPSTREAM_KEY_TYPES)
                            + " BASE64 [comment]", _upstream_host_key)
TIMEZONE = v.Check("IANA time zone name like UTC or Europe/London", _timezone)

# -- anomaly rules: gateway/anomaly.py (G2) defines them; config only places errors -------

def _default_rules() -> list[dict[str, Any]]:
    from gateway.anomaly import CONDITIONS, DEFAULT_RULES

    out = []
    for r in DEFAULT_RULES:
        item: dict[str, Any] = {"id": r.id, "metric": r.metric, "action": r.action}
        cond = next(c for c in CONDITIONS if getattr(r, c) is not None)
        value = getattr(r, cond)
        item[cond] = list(value) if isinstance(value, tuple) else value
        if r.min_sessions != 5 and cond == "above_baseline":
            item["min_sessions"] = r.min_sessions
        if r.description:
            item["description"] = r.description
        out.append(item)
    return out


# -- the table -----------------------------------------------------------------------------

SETTINGS: tuple[Setting, ...] = (
    Setting("listen.address", Kind.STR, "0.0.0.0", "Address the SSH endpoint listens on.",
            v.IP_ADDRESS),
    Setting("listen.port", Kind.INT, 2222, "TCP port.", minimum=1, maximum=65535),
    Setting("listen.login_timeout", Kind.DURATION, "60s",
            "From TCP connect to authenticated; then the connection is dropped.",
            minimum=1, maximum=600),
    Setting("listen.proxy_protocol_from", Kind.ADDRESSES, [],
            "Load balancers (HAProxy with send-proxy-v2) whose connections carry a PROXY "
            "protocol v2 header naming the terminal's address; that address then counts for "
            "rate limits, the audit log and sessions. Empty: no header is read.",
            v.IP_ADDRESS),
    Setting("listen.max_connections", Kind.INT, 2000,
            "Connections held at once; more are refused at accept.", minimum=1,
            maximum=1_000_000),
    Setting("host_key", Kind.PATH, "host_key",
            "The gateway's Ed25519 host key (OpenSSH private key format, mode 0600).", PATH),
    Setting("database", Kind.DATABASE, "store.db",
            "The store: a SQLite file (WAL, synchronous=FULL) or a postgresql:// URL "
            "shared by every replica."),
    Setting("recordings", Kind.PATH, "recordings",
            "Directory for session recordings (asciicast v2).", PATH),
    Setting("replica", Kind.STR, None,
            "This replica's name in logs and session rows (stable across restarts: a "
            "restarted replica closes its crashed predecessor's sessions); null: the host "
            "name.", REPLICA,
            nullable=True),
    Setting("trusted_build_keys", Kind.PATHS, [],
            "PEM Ed25519 public keys (build-key.pub) whose signed reference.json files "
            "`image add` accepts.", PATH),
    Setting("auth.max_failures", Kind.INT, 5,
            "Failed log-ins of one user within auth.failure_window before a lockout.",
            minimum=1, maximum=1000),
    Setting("auth.failure_window", Kind.DURATION, "15m",
            "Window in which a user's failures are counted.", minimum=1, maximum=30 * 86400),
    Setting("auth.lockout", Kind.DURATION, "15m", "How long a locked-out user waits.",
            minimum=1, maximum=30 * 86400),
    Setting("auth.source_max_failures", Kind.INT, 20,
            "Failed log-ins from one address within auth.source_window before that "
            "address is refused (rate-limited) for auth.source_window.",
            minimum=1, maximum=100000),
    Setting("auth.source_window", Kind.DURATION, "10m",
            "Window in which an address's failures are counted.",
            minimum=1, maximum=30 * 86400),
    Setting("auth.totp_window", Kind.INT, 1,
            "30 s steps of clock skew accepted either side of now.", minimum=0, maximum=2),
    Setting("attestation.allow_soft", Kind.BOOL, False,
            "Accept soft (TPM-less) terminals. For development and CI only."),
    Setting("attestation.reattest_interval", Kind.DURATION, "300s",
            "Seconds between re-attestations in a live session.", minimum=5,
            maximum=86400),
    Setting("attestation.deadline", Kind.DURATION, "15s",
            "Time a terminal has to answer a challenge.", minimum=1, maximum=600),
    Setting("attestation.nonce_ttl", Kind.DURATION, "30s", "Lifetime of a challenge nonce.",
            minimum=1, maximum=600),
    Setting("attestation.hello_timeout", Kind.DURATION, "10s",
            "Time from authentication to the first control message.", minimum=1,
            maximum=600),
    Setting("attestation.max_evidence_bytes", Kind.SIZE, "1MiB",
            "Largest evidence or enrollment frame accepted.", minimum=4096,
            maximum=16 << 20),
    Setting("attestation.firmware.trust_on_first_use", Kind.BOOL, True,
            "Record a device's firmware PCRs (0-3, 6, 7) at its first attestation and "
            "require them afterwards."),
    Setting("attestation.require_secure_boot", Kind.BOOL, True,
            "PCR 7 must show Secure Boot on with the image's db certificate. Off only for "
            "test set-ups with unsigned images (the gateway says so loudly at start)."),
    Setting("attestation.ek_ca_bundle", Kind.PATH, None,
            "PEM file of the TPM manufacturers' CA certificates that EK certificates must "
            "chain to at tpm2 enrollment.", PATH, nullable=True),
    Setting("attestation.allow_ek_without_cert", Kind.BOOL, False,
            "Enroll tpm2 terminals whose TPM has no EK certificate (or when no "
            "ek_ca_bundle is set); recorded as allowed-without. A certificate that is "
            "present and fails is still refused."),
    Setting("upstream.ssh.host", Kind.STR, None, "The research harness's SSH server.",
            v.HOST_OR_IP, nullable=True),
    Setting("upstream.ssh.port", Kind.INT, 22, "Its port.", minimum=1, maximum=65535),
    Setting("upstream.ssh.host_key", Kind.STR, None,
            "Its pinned public host key (OpenSSH line); any other key is refused.",
            UPSTREAM_HOST_KEY, nullable=True),
    Setting("upstream.ssh.client_key", Kind.PATH, None,
            "Private key the gateway logs in to the harness with (mode 0600).", PATH,
            nullable=True),
    Setting("upstream.ssh.connect_timeout", Kind.DURATION, "10s",
            "Time to reach and log in to the harness.", minimum=1, maximum=600),
    Setting("upstream.command", Kind.ARGV, None, check=ARGV_ITEM, help=
            "Instead of upstream.ssh: a local command run on a PTY (labs without SSH on "
            "the harness); AUDITBOX_USER holds the user's upstream account.", nullable=True),
    Setting("recording.input", Kind.ENUM, "keys",
            "What is recorded of the auditor's input: keys (and timing), timing only, "
            "or off.", choices=("keys", "timing", "off")),
    Setting("budget.rate", Kind.SIZE, "8KiB",
            "Sustained output per second to the terminal (4 full 80x24 screens).",
            minimum=512, maximum=1 << 30),
    Setting("budget.burst", Kind.SIZE, "256KiB",
            "Output allowed at once above the sustained rate (token bucket size).",
            minimum=2048, maximum=1 << 30),
    Setting("budget.daily", Kind.SIZE, "64MiB",
            "Output per user per UTC day; past it the session is locked.",
            minimum=64 << 10, maximum=1 << 40),
    Setting("anomaly.timezone", Kind.STR, "UTC", "Time zone of the login_hour metric.",
            TIMEZONE),
    Setting("anomaly.baseline_days", Kind.INT, 14,
            "Days of a user's sessions that make up their rolling baseline.", minimum=1,
            maximum=365),
    Setting("anomaly.rules", Kind.RULES, None,
            "Anomaly rules (docs/anomaly.md): each has an id, a metric, an action (log, "
            "alert, lock) and one condition: above, below, outside [FROM, TO] (login_hour) "
            "or above_baseline F (F times the user's own mean; min_sessions of history "
            "first). The default is the built-in set shown here."),
    Setting("audit.journal", Kind.BOOL, True,
            "Also send every audit entry to the systemd journal "
            "(SYSLOG_IDENTIFIER=auditbox-gateway)."),
    # observability (issue 14): Prometheus /metrics and /healthz, off unless a port is set
    Setting("metrics.address", Kind.STR, "127.0.0.1",
            "Address of the local HTTP listener serving /metrics (Prometheus text format) "
            "and /healthz; separate from the SSH port and the web console.", v.IP_ADDRESS),
    Setting("metrics.port", Kind.INT, None, "Its TCP port; null: no listener.",
            minimum=1, maximum=65535, nullable=True),
    Setting("log.format", Kind.ENUM, "text",
            "The server's log lines on stderr: text, or json (one object per line, with "
            "every audit event too).", choices=("text", "json")),
    # the web console (gateway/web/): on only when the file has a `web:` section
    Setting("web.address", Kind.STR, "127.0.0.1", "Address the HTTPS console listens on.",
            v.IP_ADDRESS),
    Setting("web.port", Kind.INT, 8443, "Its TCP port.", minimum=1, maximum=65535),
    Setting("web.certificate", Kind.PATH, "web_cert.pem",
            "PEM certificate (chain) of the console; `gateway init` makes a self-signed one.",
            PATH),
    Setting("web.key", Kind.PATH, "web_key.pem", "Its PEM private key (mode 0600).", PATH),
    Setting("web.session_ttl", Kind.DURATION, "8h",
            "A console log-in lasts at most this long.", minimum=60, maximum=7 * 86400),
    Setting("web.idle_timeout", Kind.DURATION, "30m",
            "A console log-in unused for this long ends.", minimum=60, maximum=86400),
    Setting("web.audit_verify_interval", Kind.DURATION, "10m",
            "How often the console re-verifies the whole audit chain in the background.",
            minimum=1, maximum=86400),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


def group_children(prefix: str, table: tuple[Setting, ...] = SETTINGS) -> list[str]:
    return _group_children(prefix, table)


def is_group(key: str, table: tuple[Setting, ...] = SETTINGS) -> bool:
    return _is_group(key, table)


# -- the typed result ---------------------------------------------------------------------

@dataclass(frozen=True)
class ListenConfig:
    address: str
    port: int
    login_timeout: float
    proxy_protocol_from: tuple[str, ...]
    max_connections: int


@dataclass(frozen=True)
class AuthConfig:
    max_failures: int
    failure_window: float
    lockout: float
    source_max_failures: int
    source_window: float
    totp_window: int


@dataclass(frozen=True)
class FirmwareConfig:
    trust_on_first_use: bool


@dataclass(frozen=True)
class AttestationConfig:
    allow_soft: bool
    reattest_interval: float
    deadline: float
    nonce_ttl: float
    hello_timeout: float
    max_evidence_bytes: int
    firmware: FirmwareConfig
    require_secure_boot: bool
    ek_ca_bundle: Path | None
    allow_ek_without_cert: bool


@dataclass(frozen=True)
class UpstreamSsh:
    host: str | None
    port: int
    host_key: str | None
    client_key: Path | None
    connect_timeout: float


@dataclass(frozen=True)
class UpstreamConfig:
    ssh: UpstreamSsh
    command: tuple[str, ...] | None

    @property
    def kind(self) -> str | None:
        """"ssh", "command" or None (not configured: `serve` refuses)."""
        if self.command is not None:
            return "command"
        return "ssh" if self.ssh.host is not None else None


@dataclass(frozen=True)
class RecordingConfig:
    input: str


@dataclass(frozen=True)
class BudgetConfig:
    rate: int
    burst: int
    daily: int


@dataclass(frozen=True)
class AnomalyConfig:
    timezone: str
    baseline_days: int
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AuditConfig:
    journal: bool


@dataclass(frozen=True)
class MetricsConfig:
    address: str
    port: int | None


@dataclass(frozen=True)
class LogConfig:
    format: str


@dataclass(frozen=True)
class WebConfig:
    address: str
    port: int
    certificate: Path
    key: Path
    session_ttl: float
    idle_timeout: float
    audit_verify_interval: float


@dataclass(frozen=True)
class Config:
    listen: ListenConfig
    host_key: Path
    database: str                      # absolute SQLite path or postgresql:// URL
    recordings: Path
    replica: str | None
    trusted_build_keys: tuple[Path, ...]
    auth: AuthConfig
    attestation: AttestationConfig
    upstream: UpstreamConfig
    recording: RecordingConfig
    budget: BudgetConfig
    anomaly: AnomalyConfig
    audit: AuditConfig
    metrics: MetricsConfig
    log: LogConfig
    web: WebConfig | None = None       # None: no `web:` section, no console
    path: Path | None = None           # the file it was loaded from (None: defaults)
    sha256: str = field(default="", compare=False)  # of that file's bytes (audited at start)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def where(self, key: str) -> InputError:
        """An InputError located at the line of ``key`` (or line 1) for later checks."""
        line = self.lines.get(key) or self.lines.get(key.split(".")[0]) or 1
        return InputError("", file=self.path or DEFAULT_CONFIG, line=line, key=key)

    def error(self, key: str, message: str, allowed: str | None = None) -> InputError:
        e = self.where(key)
        return InputError(message, file=e.file, line=e.line, key=key, allowed=allowed)

    @property
    def replica_name(self) -> str:
        return self.replica or socket.gethostname()

    def require_upstream(self) -> None:
        """`serve` needs an upstream; the admin commands do not."""
        if self.upstream.kind is None:
            raise self.error("upstream", "no upstream configured: set upstream.ssh "
                                         "(host, host_key, client_key) or upstream.command")


# -- loading -------------------------------------------------------------------------------

def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fail(node: YNode, key: str, message: str, allowed: str | None = None) -> InputError:
    return InputError(message, file=node.file, line=node.line, key=key, allowed=allowed)


def _expected(node: YNode, key: str, what: str, allowed: str | None = None) -> InputError:
    hint = ""
    if isinstance(node, Scalar) and not isinstance(node.value, str) and "string" in what:
        hint = " (quote it to make it a string)"
    return _fail(node, key, f"expected {what}, got {type_name(node)}{hint}", allowed)


class _Loader:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.lines: dict[str, int] = {}

    def group(self, node: Map, prefix: str, table: tuple[Setting, ...], table_prefix: str,
              out: dict[str, Any]) -> None:
        allowed = group_children(table_prefix, table)
        for name, entry in node.entries.items():
            key = _join(prefix, name)
            tkey = _join(table_prefix, name)
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(f"unknown key {name!r}{hint}", file=entry.file,
                                 line=entry.key_line, key=key, allowed=", ".join(allowed))
            self.lines[key] = entry.key_line
            if is_group(tkey, table):
                if not isinstance(entry.node, Map):
                    raise _expected(entry.node, key, "a mapping",
                                    ", ".join(group_children(tkey, table)))
                self.group(entry.node, key, table, tkey, out)
            else:
                setting = next(s for s in table if s.key == tkey)
                out[tkey] = self.convert(setting, entry.node, key)
        for s in table:
            parent = s.key.rsplit(".", 1)[0] if "." in s.key else ""
            if s.required and parent == table_prefix and s.key not in out:
                raise _fail(node, _join(prefix, s.name), f"required key {s.name!r} is missing")

    def convert(self, s: Setting, node: YNode, key: str) -> Any:
        if s.nullable and isinstance(node, Scalar) and node.value is None:
            return None
        allowed = s.allowed()
        if s.kind is Kind.STR:
            return self.string(s, node, key)
        if s.kind in (Kind.INT, Kind.NUMBER):
            ok_types: tuple[type, ...] = (int,) if s.kind is Kind.INT else (int, float)
            if (not isinstance(node, Scalar) or isinstance(node.value, bool)
                    or not isinstance(node.value, ok_types)):
                raise _expected(node, key, "an integer" if s.kind is Kind.INT else "a number",
                                allowed)
            return self.in_range(s, node, key, node.value, node.raw)
        if s.kind is Kind.BOOL:
            if (not isinstance(node, Scalar) or not isinstance(node.value, bool)
                    or node.raw.lower() not in ("true", "false")):
                raise _expected(node, key, "a boolean (true or false)")
            return node.value
        if s.kind is Kind.ENUM:
            if not isinstance(node, Scalar) or not isinstance(node.value, str):
                raise _expected(node, key, "a string", allowed)
            if node.value not in s.choices:
                raise _fail(node, key, f"{node.value!r} is not allowed", allowed)
            return node.value
        if s.kind in (Kind.DURATION, Kind.SIZE):
            return self.quantity(s, node, key)
        if s.kind is Kind.PATH:
            return self.base / self.string(s, node, key)
        if s.kind is Kind.PATHS:
            return tuple(self.base / p for p in self.str_list(s, node, key))
        if s.kind is Kind.ADDRESSES:
            return tuple(self.str_list(s, node, key))
        if s.kind is Kind.ARGV:
            argv = self.str_list(s, node, key)
            if not argv:
                raise _fail(node, key, "the command is empty")
            if not argv[0].startswith("/"):
                raise _fail(node, key, f"{argv[0]!r}: the command must be an absolute path")
            return tuple(argv)
        if s.kind is Kind.DATABASE:
            text = self.string(s, node, key)
            if _postgres_url(text):
                return text
            if "://" in text:
                raise _fail(node, key, f"{text!r}: unsupported database URL",
                            "a SQLite file path or postgresql://...")
            problem = PATH(text)
            if problem:
                raise _fail(node, key, problem, "a SQLite file path or postgresql://...")
            return str(self.base / text)
        if s.kind is Kind.RULES:
            return self.rules(node, key)
        raise _fail(node, key, "unsupported setting kind")  # pragma: no cover

    def string(self, s: Setting, node: YNode, key: str) -> str:
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            raise _expected(node, key, "a string", s.allowed())
        value = node.value
        problem = s.check(value) if s.check is not None else (
            "newlines are not allowed" if "\n" in value or "\r" in value else None)
        if problem:
            raise _fail(node, key, problem, s.check.describe if s.check else None)
        return value

    def str_list(self, s: Setting, node: YNode, key: str) -> list[str]:
        if not isinstance(node, Seq):
            raise _expected(node, key, "a list of strings", s.allowed())
        out: list[str] = []
        for item in node.items:
            if not isinstance(item, Scalar) or not isinstance(item.value, str):
                raise _expected(item, key, "a string item", s.allowed())
            problem = s.check(item.value) if s.check else None
            if problem is None and ("\n" in item.value or "\x00" in item.value):
                problem = "newlines and NUL are not allowed"
            if problem:
                raise _fail(item, key, problem, s.check.describe if s.check else None)
            out.append(item.value)
        return out

    def in_range(self, s: Setting, node: YNode, key: str, value: Any, shown: str) -> Any:
        if (s.minimum is not None and value < s.minimum) or (
                s.maximum is not None and value > s.maximum):
            raise _fail(node, key, f"{shown} is out of range", s.allowed())
        return value

    def quantity(self, s: Setting, node: YNode, key: str) -> Any:
        is_duration = s.kind is Kind.DURATION
        what = "a duration like 30s, 5m, 1h, 7d" if is_duration else \
            "a size like 512B, 2KiB, 64MiB, 1GiB"
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            raise _expected(node, key, what, s.allowed())
        value = parse_duration(node.value) if is_duration else parse_size(node.value)
        if value is None:
            raise _fail(node, key, f"{node.value!r} is not {what}", s.allowed())
        return self.in_range(s, node, key, value, node.value)

    def rules(self, node: YNode, key: str) -> tuple[Rule, ...]:
        from gateway.anomaly import check_rule_ids, rule_from_mapping

        if not isinstance(node, Seq):
            raise _expected(node, key, "a list of rule mappings")
        out: list[Rule] = []
        for i, item in enumerate(node.items):
            item_key = f"{key}[{i}]"
            if not isinstance(item, Map):
                raise _expected(item, item_key, "a rule mapping")
            plain: dict[str, Any] = {}
            for name, entry in item.entries.items():
                value = entry.node
                if isinstance(value, Scalar):
                    plain[name] = value.value
                elif isinstance(value, Seq) and all(isinstance(x, Scalar) for x in value.items):
                    plain[name] = [x.value for x in value.items if isinstance(x, Scalar)]
                else:
                    raise _expected(value, f"{item_key}.{name}", "a scalar or a list of scalars")
            try:
                rule = rule_from_mapping(plain)
                check_rule_ids([*out, rule])
            except ValueError as exc:
                text = str(exc)
                name, _, rest = text.partition(": ")
                if name in item.entries and rest:
                    entry = item.entries[name]
                    raise InputError(rest, file=entry.file, line=entry.key_line,
                                     key=f"{item_key}.{name}") from None
                raise _fail(item, item_key, text) from None
            out.append(rule)
        return tuple(out)


def _default(s: Setting, base: Path) -> Any:
    d = s.default
    if s.kind is Kind.RULES:
        from gateway.anomaly import DEFAULT_RULES
        return DEFAULT_RULES
    if d is None:
        return None
    if s.kind is Kind.DURATION:
        return parse_duration(d)
    if s.kind is Kind.SIZE:
        return parse_size(d)
    if s.kind is Kind.PATH:
        return base / d
    if s.kind is Kind.PATHS:
        return tuple(base / p for p in d)
    if s.kind is Kind.DATABASE:
        return d if _postgres_url(d) else str(base / d)
    if s.kind in (Kind.ARGV, Kind.ADDRESSES):
        return tuple(d)
    return d


def _build(cls: type[Any], prefix: str, values: dict[str, Any], base: Path) -> Any:
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    types = {"ListenConfig": ListenConfig, "AuthConfig": AuthConfig,
             "AttestationConfig": AttestationConfig, "FirmwareConfig": FirmwareConfig,
             "UpstreamConfig": UpstreamConfig, "UpstreamSsh": UpstreamSsh,
             "RecordingConfig": RecordingConfig, "BudgetConfig": BudgetConfig,
             "AnomalyConfig": AnomalyConfig, "AuditConfig": AuditConfig,
             "MetricsConfig": MetricsConfig, "LogConfig": LogConfig,
             "WebConfig | None": WebConfig}
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in LOAD_FIELDS:
            continue
        key = _join(prefix, f.name)
        if key in BY_KEY:
            kwargs[f.name] = values[key] if key in values else _default(BY_KEY[key], base)
        elif is_group(key):
            kwargs[f.name] = _build(types[str(hints[f.name])], key, values, base)
        else:  # pragma: no cover - the table/dataclass consistency test catches it
            raise RuntimeError(f"config field {key} has no entry in the settings table")
    return cls(**kwargs)


def _cross_checks(cfg: Config) -> None:
    up = cfg.upstream
    ssh_set = [k for k in cfg.lines if k.startswith("upstream.ssh.")]
    if up.command is not None and ssh_set:
        raise cfg.error("upstream", "set either upstream.ssh or upstream.command, not both")
    if ssh_set or "upstream.ssh" in cfg.lines:
        for name in ("host", "host_key", "client_key"):
            if getattr(up.ssh, name) is None:
                raise cfg.error("upstream.ssh", f"required key {name!r} is missing")
        if up.ssh.host_key is not None and not up.ssh.host_key.startswith("ssh-ed25519 "):
            pass  # any OpenSSH key type the harness has is fine to pin
    at = cfg.attestation
    if at.deadline >= at.reattest_interval:
        raise cfg.error("attestation.deadline",
                        f"{format_duration(at.deadline)} is not shorter than "
                        f"attestation.reattest_interval "
                        f"({format_duration(at.reattest_interval)})")
    if at.nonce_ttl < at.deadline:
        raise cfg.error("attestation.nonce_ttl",
                        f"{format_duration(at.nonce_ttl)} is shorter than attestation.deadline "
                        f"({format_duration(at.deadline)}): a timely answer would be refused")
    if cfg.budget.burst < cfg.budget.rate:
        raise cfg.error("budget.burst", f"{format_size(cfg.budget.burst)} is smaller than "
                                        f"budget.rate ({format_size(cfg.budget.rate)})")
    if cfg.budget.daily < cfg.budget.burst:
        raise cfg.error("budget.daily", f"{format_size(cfg.budget.daily)} is smaller than "
                                        f"budget.burst ({format_size(cfg.budget.burst)})")
    if cfg.metrics.port is not None and cfg.metrics.port == cfg.listen.port:
        raise cfg.error("metrics.port", f"{cfg.metrics.port} is the SSH port (listen.port)")
    if cfg.web is not None and cfg.web.port == cfg.listen.port and (
            cfg.web.address == cfg.listen.address
            or "0.0.0.0" in (cfg.web.address, cfg.listen.address)):
        raise cfg.error("web.port", f"{cfg.web.port} is the SSH port (listen.port)")
    if (cfg.web is not None and cfg.metrics.port is not None
            and cfg.metrics.port == cfg.web.port):
        raise cfg.error("metrics.port", f"{cfg.metrics.port} is the web console's port "
                                        "(web.port)")


def default_config(base: Path | None = None) -> Config:
    """The configuration with every default, paths relative to ``base`` (default: cwd)."""
    base = (base or Path.cwd()).absolute()
    cfg: Config = _build(Config, "", {}, base)
    return dataclasses.replace(cfg, web=None)


def load_config(path: Path | str) -> Config:
    """Load and validate gateway.yaml; raise InputError (FILE:LINE: key: ...) on any problem."""
    path = Path(path)
    tree = load_yaml(path, what="gateway config")
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:       # load_yaml read it a moment ago
        raise InputError(f"cannot read the gateway config: {exc.strerror}", file=path) from None
    loader = _Loader(path.absolute().parent)
    values: dict[str, Any] = {}
    loader.group(tree, "", SETTINGS, "", values)
    cfg: Config = _build(Config, "", values, loader.base)
    cfg = dataclasses.replace(cfg, path=path, sha256=digest, lines=loader.lines,
                              web=cfg.web if "web" in loader.lines else None)
    _cross_checks(cfg)
    return cfg


def with_database(cfg: Config, database: str | None) -> Config:
    """The --database override: a URL, or a path relative to the current directory."""
    if database is None:
        return cfg
    if not _postgres_url(database):
        if "://" in database:
            raise InputError(f"{database!r}: unsupported database URL "
                             "(allowed: a SQLite file path or postgresql://...)",
                             file="<command line>", key="--database")
        database = str(Path(database).absolute())
    return dataclasses.replace(cfg, database=database)


# -- the commented file and the schema ---------------------------------------------------

def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _plain_number(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./@+~:-]+", text) and not re.fullmatch(
            r"(?i)(null|true|false|yes|no|on|off|~|[0-9.:+-]+)", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _yaml_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_scalar(x) for x in value) + "]"
    return _yaml_scalar(value)


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, 88, initial_indent=f"{indent}# ",
                         subsequent_indent=f"{indent}# ", break_on_hyphens=False)


def render_commented(overrides: dict[str, Any] | None = None) -> str:
    """gateway.yaml with every setting, its help as a comment, defaults or ``overrides``
    (values in YAML form: "30s", 2222, ["build-key.pub"]). Loads back to the same values.
    The upstream is written commented out: the admin fills it in before `serve`."""
    overrides = dict(overrides or {})
    out = ["# auditbox gateway configuration (auditbox gateway init wrote this file).",
           "# Every key is shown with its default. Unknown keys are errors. Durations:",
           "# 250ms 30s 5m 1h 7d. Sizes: 512B 2KiB 64MiB 1GiB. Relative paths are relative",
           "# to this file's directory."]
    opened: list[str] = []
    for s in SETTINGS:
        parts = s.key.split(".")
        groups = parts[:-1]
        common = 0
        while common < min(len(opened), len(groups)) and opened[common] == groups[common]:
            common += 1
        opened = opened[:common]
        upstream = parts[0] in ("upstream", "web")
        lead = "# " if upstream else ""
        for depth in range(common, len(groups)):
            indent = "  " * depth
            if depth == 0:
                out.append("")
            if upstream and depth == 0:
                out.append("# The research harness: set upstream.ssh OR upstream.command, "
                           "then `serve`." if parts[0] == "upstream" else
                           "# The web console (HTTPS): uncomment this section to turn it on.")
            out.append(f"{lead}{indent}{groups[depth]}:")
            opened.append(groups[depth])
        indent = "  " * len(groups)
        if not groups:
            out.append("")
        out.extend(lead + line for line in _comment(
            s.help + (f" Allowed: {s.allowed()}." if s.allowed() else ""), indent))
        value = overrides.pop(s.key, s.default)
        if s.kind is Kind.RULES:
            out.append(f"{indent}{s.name}:")
            for rule in value if value is not None else _default_rules():
                items = ", ".join(f"{k}: {_yaml_value(x)}" for k, x in rule.items())
                out.append(f"{indent}  - {{{items}}}")
            continue
        if upstream:
            example = {"upstream.ssh.host": "harness.example", "upstream.ssh.host_key":
                       "ssh-ed25519 AAAA... harness", "upstream.ssh.client_key": "upstream_key",
                       "upstream.command": ["/usr/bin/bash", "-l"]}.get(s.key, value)
            out.append(f"# {indent}{s.name}: {_yaml_value(example)}")
            continue
        out.append(f"{indent}{s.name}: {_yaml_value(value)}")
    if overrides:
        raise KeyError(f"unknown settings: {', '.join(sorted(overrides))}")
    return "\n".join(out) + "\n"


def schema_text() -> str:
    lines = ["auditbox gateway configuration (gateway.yaml)", ""]
    for s in SETTINGS:
        default = s.default if s.kind is not Kind.RULES else "the built-in rules"
        lines.append(f"  {s.key}")
        lines.append(f"      type:    {s.kind.value}{' or null' if s.nullable else ''}")
        lines.append(f"      default: {_yaml_value(default)}")
        if s.allowed():
            lines.append(f"      allowed: {s.allowed()}")
        lines.extend(textwrap.wrap(s.help, 88, initial_indent="      ",
                                   subsequent_indent="      "))
    return "\n".join(lines) + "\n"
