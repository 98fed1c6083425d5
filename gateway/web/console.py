"""What every console request shares: config, store, auditor, the live-session registry,
the log-in decision, the console's log-ins, the chain state, the page queries and the
templates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

from ..audit import Auditor
from ..auth import Authenticator
from ..config import Config
from ..live import Registry
from ..store.base import Store
from .chain import ChainWatch
from .logins import Logins
from .queries import Queries

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def utc(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def qs(params: dict[str, Any], **more: Any) -> str:
    """A query string of the non-empty values of params and more."""
    return urlencode({k: v for k, v in {**params, **more}.items() if v not in ("", None)})


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(utc=utc, duration=duration, size=size, percent=percent)
    env.globals["qs"] = qs
    return env


@dataclass
class Console:
    cfg: Config
    store: Store
    auditor: Auditor
    registry: Registry
    logins: Logins
    chain: ChainWatch
    auth: Authenticator = field(init=False)
    queries: Queries = field(init=False)
    templates: jinja2.Environment = field(default_factory=environment)

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.store, self.cfg.auth, self.auditor)
        self.queries = Queries(self.store)

    def render(self, template: str, /, **values: Any) -> str:
        return self.templates.get_template(template).render(**values)
