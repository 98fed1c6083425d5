"""Check results: the JSON file the tests write and `auditbox report` reads.

Format: {check_name: {"rule": id, "where": "static"|"vm", "passed": bool, "detail": str}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from builder.rules.check import Check


def load(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def record(check: Check, passed: bool, detail: str, target: Path) -> None:
    """Merge one result into the results file (atomic replace)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = load(target)
    data[check.name] = {"rule": check.rule_id, "where": check.where, "passed": passed,
                        "detail": detail[:2000]}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, target)


def run_and_record(check: Check, target: Any, path: Path) -> None:
    """Run a check, record the outcome, re-raise a failure."""
    try:
        check.run(target)
    except AssertionError as exc:
        record(check, False, str(exc), path)
        raise
    except Exception as exc:
        record(check, False, f"{type(exc).__name__}: {exc}", path)
        raise
    record(check, True, "", path)
