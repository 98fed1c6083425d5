"""A real PostgreSQL for tests: Debian's server binaries, ``initdb`` in a temp dir.

    server = PgServer.start()        # initdb + pg_ctl start, loopback, free port
    url = server.create_database()   # a fresh database: postgresql://auditbox:...@127.0.0.1:P/db
    server.stop()                    # pg_ctl stop -m immediate, temp dir removed

PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged
account (``postgres`` if the package made it, else ``nobody``) through ``runuser``.
Password authentication (scram-sha-256) over TCP on 127.0.0.1 only; no Unix socket
outside the temp dir. Fixtures for the gateway tests (and later the fleet tests) are
``pg_server`` (session) and ``pg_url`` (a fresh database per test), in conftest.py.

A missing postgresql installation skips outside CI and fails in CI (tests/tools.py).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "auditbox"
START_TIMEOUT = 60


def pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb, pg_ctl and postgres."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    for initdb in reversed(found):
        if (initdb.parent / "pg_ctl").exists() and (initdb.parent / "postgres").exists():
            return initdb.parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def require_postgres() -> Path:
    bindir = pg_bindir()
    if bindir is None:
        reason = "missing PostgreSQL server binaries (apt package postgresql; run `make deps`)"
        if os.environ.get("CI"):
            pytest.fail(f"CI cannot skip: {reason}", pytrace=False)
        pytest.skip(reason)
    return bindir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[list[str], int, int]:
    """(command prefix, uid, gid) to run the server as a non-root account."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], pw.pw_uid, pw.pw_gid
    raise RuntimeError("no unprivileged account to run PostgreSQL as")


@dataclass
class PgServer:
    bindir: Path
    root: Path           # temp dir: data/, sock/, log, pwfile
    port: int
    password: str
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls) -> PgServer:
        bindir = require_postgres()
        prefix, uid, gid = _run_as()
        root = Path(tempfile.mkdtemp(prefix="auditbox-pg-"))
        os.chmod(root, 0o700)
        password = secrets.token_hex(16)
        (root / "pwfile").write_text(password + "\n")
        (root / "sock").mkdir()
        for p in (root, root / "pwfile", root / "sock"):
            os.chown(p, uid, gid)
        server = cls(bindir, root, 0, password, prefix)
        server._run(str(bindir / "initdb"), "-D", str(server.data), "-U", PG_USER,
                    "--pwfile", str(root / "pwfile"), "--auth", "scram-sha-256",
                    "-E", "UTF8", "--locale", "C.UTF-8", "--no-instructions")
        (root / "pwfile").unlink()
        last: subprocess.CalledProcessError | None = None
        for _ in range(5):      # a port taken between free_port() and the bind: try another
            server.port = free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -c port={server.port} "
                    f"-c unix_socket_directories={root / 'sock'} -c fsync=on "
                    "-c max_connections=200")
            try:
                server._run(str(bindir / "pg_ctl"), "start", "-D", str(server.data), "-w",
                            "-t", str(START_TIMEOUT), "-l", str(root / "server.log"),
                            "-o", opts)
                return server
            except subprocess.CalledProcessError as exc:
                last = exc
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {last}; log: "
                           f"{(root / 'server.log').read_text()[-2000:]}")

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.prefix, *argv], check=True, capture_output=True, cwd=self.root,
                       timeout=START_TIMEOUT + 30)

    def create_database(self) -> str:
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "stop", "-D",
                            str(self.data), "-m", "immediate", "-w"], check=False,
                           capture_output=True, cwd=self.root, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
