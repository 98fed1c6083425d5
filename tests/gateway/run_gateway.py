"""Run a gateway from a config file in this process (the tests' child process).

    python tests/gateway/run_gateway.py gateway.yaml

Until ``auditbox gateway serve`` is wired this is the tests' entry point; it calls the
same ``gateway.server.serve_forever``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.server import serve_forever


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_config(Path(sys.argv[1]))
    return asyncio.run(serve_forever(cfg, ready=lambda port: print(f"ready {port}",
                                                                   flush=True)))


if __name__ == "__main__":
    sys.exit(main())
