"""Fixtures; the servers themselves are in servers.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import RedisServer, session


@pytest.fixture
def client() -> Iterator[requests.Session]:
    with session() as http:
        yield http


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs it with apt-get")
        pytest.skip("redis-server is not installed (apt-get install redis-server; CI has it)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
