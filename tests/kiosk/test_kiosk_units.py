"""The kiosk's pieces without a console: configuration, key decoding, burst detection,
USB keyboard discovery, screens at several sizes, and its import boundary."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from builder.planner import make_plan
from builder.profile.loader import load_profile
from kiosk import config as kconfig
from kiosk.injection import BurstDetector, KeyboardWatcher, usb_keyboards
from kiosk.keys import KeyDecoder, count_keys
from kiosk.screens import Field, LoginView, MessageView, Status, login_frame, message_frame

REPO = Path(__file__).resolve().parents[2]
# what the terminal's python3 has besides the standard library (Debian 13 packages)
ALLOWED_THIRD_PARTY = {"paramiko", "cryptography"}
OWN = {"kiosk", "attestation"}


# the programs the image runs (builder/debpkg.py COMMANDS), and the kiosk package whole
ENTRY_POINTS = ("kiosk.main", "attestation.agent_service", "attestation.agent_cli")


def _imports(path: Path, package: str = "") -> set[str]:
    """Dotted names a module imports (relative imports resolved within ``package``)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def _closure() -> dict[str, set[str]]:
    """Every own module the image's programs can import, with what each imports."""
    todo = [*ENTRY_POINTS, *(f"kiosk.{p.stem}" for p in (REPO / "kiosk").glob("*.py"))]
    seen: dict[str, set[str]] = {}
    while todo:
        mod = todo.pop()
        path = REPO / (mod.replace(".", "/") + ".py")
        if mod in seen or not path.exists():
            continue
        seen[mod] = _imports(path, mod.rsplit(".", 1)[0])
        todo += [n for n in seen[mod] if n.split(".")[0] in OWN]
    return seen


def test_terminal_code_imports_only_what_the_image_has() -> None:
    import sys

    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    closure = _closure()
    assert {"kiosk.main", "kiosk.app", "attestation.agent_service", "attestation.tpm2"} <= set(
        closure)
    for mod, names in closure.items():
        tops = {n.split(".")[0] for n in names}
        assert not tops & {"builder", "gateway"}, f"{mod} imports {tops & {'builder', 'gateway'}}"
        foreign = tops - stdlib - ALLOWED_THIRD_PARTY - OWN
        assert not foreign, f"{mod} imports {sorted(foreign)}, which the image does not have"


def test_import_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from builder.planner import make_plan\nimport gateway.server\n"
                   "from . import y\n")
    assert {"builder.planner", "gateway.server", "kiosk.y"} <= _imports(bad, "kiosk")


def test_builder_writes_the_config_the_kiosk_reads(tmp_path: Path) -> None:
    plan = make_plan(load_profile(REPO / "profiles" / "audit-laptop-test.yaml"))
    planned = next(f for f in plan.files if str(f.path) == "/etc/auditbox/kiosk.json")
    path = tmp_path / "kiosk.json"
    path.write_bytes(planned.content)
    cfg = kconfig.load(path)
    assert cfg.tty == "ttyS0" and cfg.gateway_port == 2222
    assert cfg.injection.action == "lock" and cfg.idle_timeout == 900
    prod = make_plan(load_profile(REPO / "profiles" / "audit-laptop-example.yaml"))
    assert kconfig.parse(json.loads(next(f for f in prod.files if str(f.path) ==
                                         "/etc/auditbox/kiosk.json").content)).tty == "tty1"


@pytest.mark.parametrize("change, error", [
    ({"surprise": 1}, "unknown keys ['surprise']"),
    ({"format": 2}, "format"),
    ({"gateway_port": "22"}, "gateway_port: expected int"),
    ({"tty": "../tty1"}, "not a tty name"),
    ({"host_key": "ssh-rsa AAAA"}, "ssh-ed25519"),
    ({"injection": {"action": "shout", "burst_keys": 5, "burst_ms": 5}}, "injection.action"),
    ({"injection": {"action": "lock"}}, "missing keys"),
])
def test_config_refuses_anything_unexpected(change: dict[str, object], error: str) -> None:
    obj = json.loads(kconfig.to_json(kconfig.KioskConfig()))
    obj.update(change)
    with pytest.raises(kconfig.ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
        kconfig.parse(obj)


def test_notice_defaults_to_etc_issue(tmp_path: Path) -> None:
    issue = tmp_path / "issue"
    issue.write_text("AUTHORISED USE ONLY.\x1b[31m Monitored.\\n\n")
    shown = kconfig.notice_text(kconfig.KioskConfig(), issue)
    assert shown == "AUTHORISED USE ONLY.[31m Monitored.n"
    assert kconfig.notice_text(kconfig.KioskConfig(notice="Mine"), issue) == "Mine"


def test_key_decoder() -> None:
    d = KeyDecoder()
    names = [k.name for k in d.feed(b"a\x1b[A\x1bOB\x1bOQ\x1b[12~\x1b[[B\r\t\x7f\x15\x05\x03\x1b")]
    assert names == ["char", "up", "down", "f2", "f2", "f2", "enter", "tab", "backspace",
                     "clear", "f2", "other", "escape"]
    assert [k.char for k in d.feed("é".encode())] == ["é"]
    assert d.feed(b"\x1b[1", final=False) == [] and [k.name for k in d.feed(b"2~")] == ["f2"]
    assert count_keys(b"ab\x1b[A\xc3\xa9\r") == 5


def test_burst_detector() -> None:
    b = BurstDetector(keys=20, window_ms=200)
    # a fast typist: 12 keys per second, for 10 seconds
    assert not any(b.feed(1, now=i / 12) for i in range(120))
    # an injector: 20 keys in 100 ms
    b2 = BurstDetector(keys=20, window_ms=200)
    assert any(b2.feed(1, now=10 + i * 0.005) for i in range(20))
    # a chunk of 40 keys read at once
    assert BurstDetector(20, 200).feed(40, now=1.0)


def _input_device(root: Path, name: str, bus: int, keys: str, phys: str = "") -> None:
    d = root / name
    (d / "id").mkdir(parents=True)
    (d / "capabilities").mkdir()
    (d / "id/bustype").write_text(f"{bus:04x}\n")
    (d / "capabilities/key").write_text(keys + "\n")
    (d / "name").write_text(f"dev {name}\n")
    (d / "phys").write_text(phys + "\n")


def test_usb_keyboards_are_found_and_new_ones_reported(tmp_path: Path) -> None:
    letters = hex((1 << 16) | (1 << 30) | (1 << 44))[2:]
    _input_device(tmp_path, "input0", 0x11, letters)                      # i8042 keyboard
    _input_device(tmp_path, "input1", 0x03, "70000 0 0 0 0 " + "0")       # USB mouse buttons
    watcher = KeyboardWatcher(tmp_path)
    assert watcher.known == set() and usb_keyboards(tmp_path) == set()
    _input_device(tmp_path, "input5", 0x03, "0 0 0 0 " + letters, "usb-0000:00:04.0-1/input0")
    new = watcher.check()
    assert [d.node for d in new] == ["input5"] and new[0].phys.startswith("usb-")
    assert watcher.check() == []


@pytest.mark.parametrize("cols, rows", [(80, 24), (100, 30), (200, 60)])
def test_screens_fit(cols: int, rows: int) -> None:
    notice = " ".join(["All activity is monitored and recorded."] * 12)
    view = LoginView("Lab\nAudit", notice, Status("soft-" + "a" * 32, "soft", "enrolled",
                                                  "10.0.2.2:2222  reachable", "now"),
                     [Field("User name", "alice"), Field("Password", "x", secret=True),
                      Field("One-time code")], focus=1, message="Wrong user name or password.")
    frame = login_frame(view, cols, rows)
    text = [line.text for line in frame.lines]
    assert len(text) == rows and all(len(t) <= cols for t in text)
    joined = "\n".join(text)
    assert "alice" in joined and "(hidden)" in joined
    assert "x" not in joined.split("Password:")[1][:20]
    assert "Wrong user name" in joined and frame.cursor is not None
    msg = message_frame(MessageView("Locked", "Their message: " + notice), cols, rows)
    assert len(msg.lines) == rows and all(len(line.text) <= cols for line in msg.lines)


def test_auth_messages_do_not_repeat_the_gateway() -> None:
    from kiosk.messages import auth_message

    assert auth_message({"code": "bad-password", "text": "wrong user name or password"}) == \
        "Wrong user name or password."
    locked_out = auth_message({"code": "locked-out", "text": "locked until 10:00 UTC"})
    assert locked_out == "Too many failed log-ins for this user. locked until 10:00 UTC"
