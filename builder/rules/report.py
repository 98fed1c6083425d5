"""report.md and report.html: one row per rule with mechanism, references and results."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.profile.model import Profile
from builder.rules.catalogue import Rule
from builder.rules.check import Check
from builder.rules.engine import describe, rule_checks


@dataclass(frozen=True)
class Row:
    rule: Rule
    mechanism: str
    references: str
    static: str
    vm: str
    ok: bool | None          # None: nothing ran


def summarise(checks: list[Check], where: str, results: dict[str, dict[str, Any]]
              ) -> tuple[str, bool | None]:
    mine = [c for c in checks if c.where == where]
    if not mine:
        return "n/a", None
    ran = [(c, results[c.name]) for c in mine if c.name in results]
    if not ran:
        return "not run", None
    failed = [c.name.split(":", 1)[1] for c, r in ran if not r.get("passed")]
    if failed:
        return f"FAIL {len(failed)}/{len(mine)}: {', '.join(failed)}", False
    suffix = "" if len(ran) == len(mine) else f" ({len(mine) - len(ran)} not run)"
    return f"pass {len(ran)}/{len(mine)}{suffix}", True


def rows(rules: list[Rule], profile: Profile, results: dict[str, dict[str, Any]]) -> list[Row]:
    out = []
    for rule in rules:
        checks = rule_checks(rule, profile)
        static, s_ok = summarise(checks, "static", results)
        vm, v_ok = summarise(checks, "vm", results)
        refs = "; ".join(f"{k}: {', '.join(v)}" for k, v in rule.references.items() if v)
        oks = [o for o in (s_ok, v_ok) if o is not None]
        out.append(Row(rule, describe(rule, profile), refs or "-", static, vm,
                       all(oks) if oks else None))
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def markdown(title: str, table: list[Row]) -> str:
    lines = [f"# {title}", "",
             f"{sum(r.ok is True for r in table)} rules pass, "
             f"{sum(r.ok is False for r in table)} fail, "
             f"{sum(r.ok is None for r in table)} not run.", "",
             "| rule | severity | title | mechanism | references | static | VM |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        mech = r.mechanism if len(r.mechanism) < 400 else r.mechanism[:400] + " ..."
        lines.append("| " + " | ".join(_md_cell(x) for x in (
            r.rule.id, r.rule.severity, r.rule.title, mech, r.references, r.static, r.vm)) + " |")
    return "\n".join(lines) + "\n"


CSS = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}
th{background:#eee}pre{white-space:pre-wrap;margin:0;font-size:12px}
.pass{background:#e6ffe6}.fail{background:#ffe6e6}.none{background:#f6f6f6}"""


def _cls(text: str) -> str:
    return "pass" if text.startswith("pass") else "fail" if text.startswith("FAIL") else "none"


def html_report(title: str, table: list[Row]) -> str:
    esc = html.escape
    body = []
    for r in table:
        body.append(
            f"<tr id=\"{esc(r.rule.id)}\"><td><b>{esc(r.rule.id)}</b><br>{esc(r.rule.title)}"
            f"<br><small>{esc(r.rule.rationale)}</small></td><td>{esc(r.rule.severity)}</td>"
            f"<td><pre>{esc(r.mechanism)}</pre></td><td>{esc(r.references)}</td>"
            f"<td class=\"{_cls(r.static)}\">{esc(r.static)}</td>"
            f"<td class=\"{_cls(r.vm)}\">{esc(r.vm)}</td></tr>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
            "<table><tr><th>rule</th><th>severity</th><th>mechanism</th><th>references</th>"
            "<th>static</th><th>VM</th></tr>\n" + "\n".join(body) +
            "\n</table></body></html>\n")


def write_report(out: Path, rules: list[Rule], profile: Profile,
                 results: dict[str, dict[str, Any]]) -> tuple[Path, Path]:
    table = rows(rules, profile, results)
    title = f"auditbox hardening report: {profile.name}"
    out.mkdir(parents=True, exist_ok=True)
    md, page = out / "report.md", out / "report.html"
    md.write_text(markdown(title, table))
    page.write_text(html_report(title, table))
    return md, page
