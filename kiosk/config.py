"""The kiosk's configuration: /etc/auditbox/kiosk.json, written by the builder from the
profile (builder/terminal.py) and read-only on the verity root.

The file is one JSON object with exactly the keys of ``KioskConfig`` (``injection`` a
nested object with the keys of ``Injection``) plus ``format`` (1). Anything else is an
error: the kiosk then shows a "this terminal is misconfigured" screen, never a shell.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

CONFIG_PATH = Path("/etc/auditbox/kiosk.json")
ISSUE_PATH = Path("/etc/issue")
FORMAT = 1
_TTY = re.compile(r"tty[0-9]{1,2}|ttyS[0-9]|hvc[0-9]")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Injection:
    action: str = "lock"      # lock | alert | off
    burst_keys: int = 20
    burst_ms: int = 200


@dataclass(frozen=True)
class KioskConfig:
    tty: str = "tty1"
    gateway_host: str | None = None
    gateway_port: int = 22
    host_key: str | None = None
    banner: str = "auditbox terminal"
    notice: str | None = None
    idle_timeout: int = 900
    injection: Injection = Injection()
    agent_socket: str = "/run/auditbox-attest/agent.sock"

    @property
    def gateway(self) -> str:
        return f"{self.gateway_host}:{self.gateway_port}" if self.gateway_host else "-"


def _check(obj: dict[str, Any], cls: type[Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(obj) - names)
    missing = sorted(names - set(obj))
    if unknown or missing:
        raise ConfigError(f"{what}: unknown keys {unknown}, missing keys {missing}")
    return obj


def _typed(value: Any, kind: type, name: str, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if type(value) is not kind:
        raise ConfigError(f"{name}: expected {kind.__name__}")
    return value


def parse(obj: Any) -> KioskConfig:
    if not isinstance(obj, dict):
        raise ConfigError("expected a JSON object")
    if obj.get("format") != FORMAT:
        raise ConfigError(f"format: expected {FORMAT}")
    obj = _check({k: v for k, v in obj.items() if k != "format"}, KioskConfig, "kiosk.json")
    inj = obj["injection"]
    if not isinstance(inj, dict):
        raise ConfigError("injection: expected an object")
    _check(inj, Injection, "injection")
    injection = Injection(_typed(inj["action"], str, "injection.action"),
                          _typed(inj["burst_keys"], int, "injection.burst_keys"),
                          _typed(inj["burst_ms"], int, "injection.burst_ms"))
    if injection.action not in ("lock", "alert", "off"):
        raise ConfigError("injection.action: expected lock, alert or off")
    if injection.burst_keys < 2 or injection.burst_ms < 1:
        raise ConfigError("injection: burst_keys >= 2 and burst_ms >= 1")
    cfg = KioskConfig(
        tty=_typed(obj["tty"], str, "tty"),
        gateway_host=_typed(obj["gateway_host"], str, "gateway_host", nullable=True),
        gateway_port=_typed(obj["gateway_port"], int, "gateway_port"),
        host_key=_typed(obj["host_key"], str, "host_key", nullable=True),
        banner=_typed(obj["banner"], str, "banner"),
        notice=_typed(obj["notice"], str, "notice", nullable=True),
        idle_timeout=_typed(obj["idle_timeout"], int, "idle_timeout"),
        injection=injection,
        agent_socket=_typed(obj["agent_socket"], str, "agent_socket"),
    )
    if not _TTY.fullmatch(cfg.tty):
        raise ConfigError("tty: not a tty name")
    if not 1 <= cfg.gateway_port <= 65535 or cfg.idle_timeout < 1:
        raise ConfigError("gateway_port or idle_timeout out of range")
    if cfg.host_key is not None and not cfg.host_key.startswith("ssh-ed25519 "):
        raise ConfigError("host_key: expected an ssh-ed25519 public key line")
    return cfg


def load(path: Path = CONFIG_PATH) -> KioskConfig:
    try:
        return parse(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_json(cfg: KioskConfig) -> str:
    """The file content for ``cfg`` (the builder writes exactly this)."""
    obj: dict[str, Any] = {"format": FORMAT}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        obj[f.name] = {g.name: getattr(value, g.name) for g in fields(value)} \
            if isinstance(value, Injection) else value
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def notice_text(cfg: KioskConfig, issue: Path = ISSUE_PATH) -> str:
    """The legal notice to show: the profile's, else /etc/issue (printable lines only)."""
    if cfg.notice is not None:
        return cfg.notice
    try:
        text = issue.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "".join(c for c in text if c == "\n" or (c.isprintable() and c != "\\")).strip()
