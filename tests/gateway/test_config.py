"""gateway.yaml: every malformed file gives its exact one-line error; good files load."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from builder.errors import InputError
from gateway import config as c
from gateway.anomaly import DEFAULT_RULES

HERE = Path(__file__).parent
BAD = HERE / "config_bad"
EXPECTED: dict[str, str] = yaml.safe_load((BAD / "EXPECTED.yaml").read_text())
LINE = re.compile(r"^error: [^\s:]+\.yaml:\d+: \S+: \S.*$")
HOST_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwYVbP8UR/7YkKIO3Uq2Ozv0T6bF5w45Fp7sx4h3n4S "
            "harness")


def test_corpus_is_complete() -> None:
    files = {p.name for p in BAD.glob("*.yaml") if p.name != "EXPECTED.yaml"}
    assert files == set(EXPECTED)
    assert len(files) >= 35
    assert "LOADED" not in EXPECTED.values()


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_corpus_error_line(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    with pytest.raises(InputError) as info:
        c.load_config(case)
    text = f"error: {info.value}"
    assert text == EXPECTED[case]
    assert LINE.match(text), text
    assert "\n" not in text


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gateway.yaml"
    p.write_text(text)
    return p


def test_minimal_file_is_all_defaults(tmp_path: Path) -> None:
    cfg = c.load_config(_write(tmp_path, "{}\n"))
    assert dataclasses.replace(cfg, path=None, lines={}) == c.default_config(tmp_path)
    assert cfg.database == str(tmp_path / "store.db")
    assert cfg.host_key == tmp_path / "host_key"
    assert cfg.auth.lockout == 900.0 and cfg.budget.rate == 8192
    assert cfg.attestation.max_evidence_bytes == 1 << 20
    assert cfg.anomaly.rules == DEFAULT_RULES
    assert cfg.upstream.kind is None
    with pytest.raises(InputError, match="no upstream configured"):
        cfg.require_upstream()


def test_full_file(tmp_path: Path) -> None:
    cfg = c.load_config(_write(tmp_path, f"""\
listen: {{address: "::1", port: 2022, login_timeout: 90s, max_connections: 10}}
host_key: keys/host_key
database: postgresql://gw@db.example:5432/auditbox
recordings: /srv/recordings
replica: gw-a
trusted_build_keys: [build-key.pub, /etc/auditbox/old-key.pub]
auth: {{max_failures: 3, failure_window: 1h, lockout: 30m, source_max_failures: 50,
        source_window: 5m, totp_window: 0}}
attestation:
  allow_soft: true
  reattest_interval: 2m
  deadline: 1500ms
  firmware: {{trust_on_first_use: false}}
upstream:
  ssh: {{host: 192.0.2.5, port: 2200, host_key: "{HOST_KEY}", client_key: upstream_key}}
budget: {{rate: 16KiB, burst: 1MiB, daily: 1GiB}}
anomaly:
  timezone: Europe/London
  rules:
    - {{id: fast, metric: keys_per_second, action: lock, above: 25}}
    - {{id: hours, metric: login_hour, action: alert, outside: [8, 18]}}
audit: {{journal: false}}
"""))
    assert cfg.listen.address == "::1" and cfg.listen.login_timeout == 90.0
    assert cfg.host_key == tmp_path / "keys/host_key"
    assert cfg.database.startswith("postgresql://")
    assert cfg.recordings == Path("/srv/recordings")
    assert cfg.trusted_build_keys == (tmp_path / "build-key.pub",
                                      Path("/etc/auditbox/old-key.pub"))
    assert cfg.replica_name == "gw-a"
    assert (cfg.auth.max_failures, cfg.auth.failure_window, cfg.auth.totp_window) == (3, 3600, 0)
    assert cfg.attestation.deadline == 1.5 and cfg.attestation.reattest_interval == 120
    assert cfg.attestation.firmware.trust_on_first_use is False
    assert cfg.upstream.kind == "ssh" and cfg.upstream.ssh.port == 2200
    assert cfg.upstream.ssh.client_key == tmp_path / "upstream_key"
    assert cfg.budget.daily == 1 << 30
    assert [r.id for r in cfg.anomaly.rules] == ["fast", "hours"]
    assert cfg.anomaly.rules[1].outside == (8, 18)
    assert cfg.audit.journal is False
    cfg.require_upstream()


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_harness_host_key_of_any_openssh_type(tmp_path: Path, kind: str) -> None:
    """The terminal pins an Ed25519 gateway key; the harness's sshd may have any key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = (rsa.generate_private_key(65537, 2048) if kind == "rsa"
           else ec.generate_private_key(ec.SECP384R1()))
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    cfg = c.load_config(_write(tmp_path, f"upstream:\n  ssh:\n    host: h.example\n"
                                         f"    host_key: \"{line} harness\"\n"
                                         "    client_key: k\n"))
    assert cfg.upstream.ssh.host_key == f"{line} harness"


def test_command_upstream(tmp_path: Path) -> None:
    cfg = c.load_config(_write(tmp_path, "upstream:\n  command: [/usr/bin/bash, -l]\n"))
    assert cfg.upstream.kind == "command"
    assert cfg.upstream.command == ("/usr/bin/bash", "-l")


def test_error_of_a_later_check_names_its_line(tmp_path: Path) -> None:
    cfg = c.load_config(_write(tmp_path, "listen:\n  port: 2222\nbudget:\n  rate: 8KiB\n"))
    e = cfg.error("budget.rate", "too fast")
    assert str(e) == f"{tmp_path / 'gateway.yaml'}:4: budget.rate: too fast"


def test_rendered_file_loads_to_the_defaults(tmp_path: Path) -> None:
    text = c.render_commented({"listen.port": 2200, "trusted_build_keys": ["build-key.pub"]})
    cfg = c.load_config(_write(tmp_path, text))
    want = c.default_config(tmp_path)
    want = dataclasses.replace(want, listen=dataclasses.replace(want.listen, port=2200),
                               trusted_build_keys=(tmp_path / "build-key.pub",))
    assert dataclasses.replace(cfg, path=None, lines={}) == want
    # every setting is written, with its help as a comment
    for s in c.SETTINGS:
        assert re.search(rf"^\s*(# )?\s*{s.name}:", text, re.M), s.key
    assert "# The research harness" in text
    # the upstream is commented out and uncommenting its ssh block makes a valid file
    lines = text.splitlines()
    lines = lines[:lines.index("# The web console (HTTPS): uncomment this section to turn it on.")]
    start = lines.index("# upstream:")
    block = [ln[2:] for ln in lines[start:] if ln.startswith("# ") and "command:" not in ln]
    block = block[:block.index("") if "" in block else len(block)]
    enabled = "\n".join(lines[:start]) + "\n" + "\n".join(block).replace(
        '"ssh-ed25519 AAAA... harness"', f'"{HOST_KEY}"') + "\n"
    cfg2 = c.load_config(_write(tmp_path, enabled))
    assert cfg2.upstream.kind == "ssh" and cfg2.upstream.ssh.host == "harness.example"


def test_table_and_dataclasses_agree() -> None:
    """Every setting has a dataclass field and every field a setting."""
    def fields_of(cls: type, prefix: str) -> set[str]:
        out: set[str] = set()
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            if f.name in c.LOAD_FIELDS:
                continue
            key = f"{prefix}{f.name}"
            nested = getattr(c, str(hints[f.name]).removesuffix(" | None"), None)
            if dataclasses.is_dataclass(nested):
                out |= fields_of(nested, key + ".")   # type: ignore[arg-type]
            else:
                out.add(key)
        return out

    assert fields_of(c.Config, "") == set(c.BY_KEY)


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300),
                                               ("1h", 3600), ("7d", 604800)])
def test_durations(text: str, seconds: float) -> None:
    assert c.parse_duration(text) == seconds
    assert c.format_duration(seconds) == text


@pytest.mark.parametrize("text", ["30", "1.5h", "-5s", "5 m", "1w", "", "s"])
def test_bad_durations(text: str) -> None:
    assert c.parse_duration(text) is None


@pytest.mark.parametrize(("text", "nbytes"), [("512B", 512), ("2KiB", 2048),
                                              ("64MiB", 64 << 20), ("1GiB", 1 << 30)])
def test_sizes(text: str, nbytes: int) -> None:
    assert c.parse_size(text) == nbytes
    assert c.format_size(nbytes) == text


def test_database_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = c.default_config(tmp_path / "etc")
    assert c.with_database(cfg, "other.db").database == str(tmp_path / "other.db")
    assert c.with_database(cfg, "postgresql://x@h/db").database == "postgresql://x@h/db"
    with pytest.raises(InputError, match="unsupported database URL"):
        c.with_database(cfg, "mysql://x")


def test_schema_text_lists_every_key() -> None:
    text = c.schema_text()
    for s in c.SETTINGS:
        assert f"  {s.key}\n" in text
