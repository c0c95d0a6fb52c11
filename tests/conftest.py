"""Fixtures; the servers themselves are in servers.py."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import RedisClusterServers, RedisServer, needs_redis_server, session


@pytest.fixture(autouse=True)
def no_forked_child_left() -> Iterator[None]:
    """A forked child still running when its test ends is killed, and the test fails
    naming it. A child stuck for good (a fork taken while another thread held a lock
    inside a C library, SQLite's say) would otherwise outlive the run: it keeps the
    pipe to the CI log open, and the run never ends."""
    yield
    left = multiprocessing.active_children()
    for child in left:
        child.kill()
        child.join(5)
    assert not left, f"forked children still running at the end of the test: {left}"


@pytest.fixture
def client() -> Iterator[requests.Session]:
    with session() as http:
        yield http


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    needs_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServers]:
    """One real Redis Cluster (3 masters) per test process: starting it costs about 2 s.
    Take it through ``redis_cluster``, which empties it for each module."""
    needs_redis_server()
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def redis_cluster(redis_cluster_servers: RedisClusterServers) -> RedisClusterServers:
    """The process's Redis Cluster, every key gone: each module starts on an empty one
    (test_state_redis_topologies.py and test_manyhost.py share it)."""
    redis_cluster_servers.wait_ok()  # a module may have stopped a node and started it
    redis_cluster_servers.flush()
    return redis_cluster_servers
