"""A running fleet for the module: two replicas on the session's PostgreSQL, HAProxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.fleetharness import Fleet
from tests.gateway.pg import PgServer


@pytest.fixture(scope="module")
def fleet(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    url = pg_server.create_database()
    f = Fleet.create(tmp_path_factory.mktemp("fleet"), url,
                     extra="log:\n  format: json\nauth:\n  source_max_failures: 10000\n")
    try:
        f.start()
        yield f
    except BaseException:
        print(f.logs())
        raise
    finally:
        f.stop()
        pg_server.drop_database(url)
