"""The Redis store on a real Redis Cluster (3 masters) and on a primary+replica watched
by Sentinel: every script and key layout on a cluster, one limit and one state for
``mockforge serve`` servers of two workers, and an outage (a node down, a failover)
that fails open and recovers without a restart. Starting them is what costs (about 2 s
each): one sentinel set for the module, and the test process's one cluster
(``redis_cluster`` in conftest.py, emptied for each module; test_manyhost.py runs on it
too)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import (
    RedisClusterServers,
    RedisSentinelServers,
    _stop,
    free_port,
    mockforge_serve,
    needs_redis_server,
    session,
)
from test_state_redis import _hammer

from mockforge_wsgi.state import Bucket, StoreError
from mockforge_wsgi.state.redis_store import RETRY_S, RedisStore

# One process runs the module (--dist loadgroup), and test_manyhost.py: the cluster and
# the sentinel set start once, not once per xdist worker.
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("redis_cluster")]

LIMIT = {
    "MOCKFORGE_CHAOS_ENABLED": "true",
    "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
    "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "20",
    "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "5",
}
SERVE = ("--workers", "2", "--threads", "4", "--access-log", "off")


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    return redis_cluster


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelServers]:
    needs_redis_server()
    servers = RedisSentinelServers(tmp_path_factory.mktemp("sentinel"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Redis Cluster (every slot on it) that speaks only TLS, with a
    password: its ``rediss+cluster://`` URL, trusting the throwaway CA."""
    import redis

    needs_redis_server()
    trustme = pytest.importorskip("trustme")
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    port = free_port()
    args = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(directory / "cert.pem"), "--tls-key-file"]
    args += [str(directory / "key.pem"), "--tls-ca-cert-file", str(directory / "ca.pem")]
    args += ["--tls-auth-clients", "no", "--cluster-enabled", "yes", "--tls-cluster", "yes"]
    args += ["--cluster-port", str(free_port())]  # not port + 10000: maybe a client's
    args += ["--requirepass", "s3cret", "--save", "", "--appendonly", "no"]
    with open(directory / "redis.log", "wb") as log:  # why, if it does not start
        proc = subprocess.Popen([*args, "--dir", str(directory)], stdout=log, stderr=log)
    node = redis.Redis(
        host="127.0.0.1",
        port=port,
        password="s3cret",
        ssl=True,
        ssl_ca_certs=str(directory / "ca.pem"),
        socket_timeout=1,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, (directory / "redis.log").read_text()
                time.sleep(0.05)
        while b"cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the TLS cluster is not ok"
            time.sleep(0.05)
        yield f"rediss+cluster://:s3cret@127.0.0.1:{port}/?ssl_ca_certs={directory / 'ca.pem'}"
    finally:
        node.close()
        _stop(proc)


def _every_call(store: RedisStore) -> None:
    """Each Store method once, on a fresh prefix: on a cluster a key layout that puts
    keys one script touches in two slots fails here (CROSSSLOT), not silently open."""
    assert store.load_state() == (0, None)
    assert store.init_state({"first": True})
    assert store.save_state({"enabled": True}) == 2
    assert store.load_state() == (2, {"enabled": True})
    assert store.watch_version() == 2 and store.state_version() == 2
    assert store.replace_state({"enabled": False}, 1) == 0  # moved on: nothing written
    assert store.replace_state({"enabled": True}, 2) == 3
    assert store.load_state() == (3, {"enabled": True})
    started = store.start_state({"enabled": False}, server="web-1:1", mode="auto")
    assert (started.wrote, started.why) == (True, "no live server")
    store.renew_lease("web-1:1")
    other = store.start_state({"x": 1}, server="web-2:2", mode="auto")
    assert (other.wrote, other.why, other.others) == (False, "live servers", ("web-1:1",))
    store.drop_lease("web-1:1")
    levels = [
        Bucket("global", 1000.0, 5),
        Bucket("ip:a", 1000.0, 2),
        Bucket("ep:GET /", 1000.0, 9),
    ]
    outcomes = [store.acquire(levels, 0.0)[1].allowed for _ in range(3)]
    assert outcomes == [True, True, False]  # all levels in one script, all or nothing
    assert store.take([levels[0]], 0.0, 10)[2] == 3  # 5 - 2 left of the global level
    assert store.tracked_keys() == 3
    store.count(["latency", "latency"])
    assert store.incr("fault", 2) == 2
    store.set_counter("pattern_requests", 7)
    assert store.counters() == {"latency": 2, "fault": 2, "pattern_requests": 7}
    assert store.acquire_slot("connections", 1, 0)
    assert not store.acquire_slot("connections", 1, 0.01)
    assert store.acquire_slot("bulkhead:0", 2, 0)
    store.release_slot("connections")
    assert store.slots_in_use("connections") == 0
    store.release_worker(os.getpid())
    assert store.slots_in_use("bulkhead:0") == 0
    store.reset()
    assert store.counters() == {} and store.tracked_keys() == 0
    assert not store.down and store.outages == 0


def test_every_store_call_on_a_cluster_and_where_its_keys_live(
    cluster: RedisClusterServers,
) -> None:
    import redis

    store = RedisStore(cluster.url, prefix="every:")
    _every_call(store)
    # The documented placement (docs/state.md): the state, its version and the leases
    # in one slot; every bucket in one; the slot pools in one; the counters in one.
    store.save_state({"a": 1})
    store.start_state({"a": 1}, server="web-1:1", mode="adopt")
    store.acquire([Bucket("global", 1.0, 5), Bucket("ip:b", 1.0, 5)], 0.0)
    store.acquire([Bucket("ip:c", 1.0, 5)], 0.0)
    store.acquire_slot("connections", 5, 0)
    store.acquire_slot("bulkhead:1", 5, 0)
    store.incr("latency")
    slots: dict[str, set[int]] = {}
    placed: dict[str, set[int]] = {}
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            for raw in node.keys("every:*"):
                key = raw.decode()
                slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
                slots.setdefault(key.split("}")[0] + "}", set()).add(slot)
                placed.setdefault(key.split("}")[0] + "}", set()).add(port)
    assert set(slots) == {"every:{state}", "every:{tat}", "every:{slots}", "every:{counters}"}
    assert all(len(found) == 1 for found in slots.values()), slots
    assert len(set().union(*placed.values())) > 1, placed  # spread over the masters


def test_every_store_call_on_a_cluster_over_tls_with_a_password(tls_cluster: str) -> None:
    _every_call(RedisStore(tls_cluster, prefix="tls:"))
    plain = RedisStore(tls_cluster.replace("rediss+", "redis+"), prefix="tls:")
    with pytest.raises(StoreError):  # the node speaks only TLS: rediss+ is what did it
        plain.load_state()
    wrong = RedisStore(tls_cluster.replace("s3cret", "wrong"), prefix="tls:")
    with pytest.raises(StoreError):  # and the password reached it
        wrong.load_state()


def test_two_servers_of_two_workers_share_one_limit_and_one_state_on_a_cluster(
    tmp_path: Path, cluster: RedisClusterServers
) -> None:
    env = {"MOCKFORGE_STORE": cluster.url, **LIMIT}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with (
        mockforge_serve(tmp_path / "a", *SERVE, env=env) as first,
        mockforge_serve(tmp_path / "b", *SERVE, env=env) as second,
        session() as http,
    ):
        statuses, elapsed = _hammer([first.url, second.url], 3.0, 8)
        expected = 5 + 20 * elapsed
        assert set(statuses) <= {200, 429}, statuses
        assert abs(statuses[200] - expected) <= 0.05 * expected, (statuses, elapsed)

        http.post(first.url + "/api/chaos/scenarios/slow_backend", timeout=10).raise_for_status()
        changed = time.monotonic()
        seen = None
        while time.monotonic() - changed < 5:
            seen = http.get(second.url + "/api/chaos/status", timeout=10).json()["active_scenario"]
            if seen:
                break
            time.sleep(0.01)
        arrived = time.monotonic() - changed
        assert seen is not None and seen["name"] == "slow_backend"
        assert arrived < 1.0, arrived  # polled every 50 ms; slack for this machine
    for server in (first, second):
        assert "unreachable" not in server.log()


def test_a_cluster_node_down_is_one_outage_then_the_store_recovers(
    cluster: RedisClusterServers,
) -> None:
    """The node that holds the buckets stops: calls raise StoreError (the middleware
    fails open), at once while it is down; it comes back: the store recovers by itself,
    counted as one outage (a PING to the other nodes does not make it flap)."""
    store = RedisStore(cluster.url, prefix="down:")
    bucket = [Bucket("global", 0.001, 5)]
    assert store.take(bucket, 0.0, 1)[2] == 1
    port = cluster.node_of("down:{tat}:tat:global")
    cluster.stop_node(port)
    try:
        with pytest.raises(StoreError):
            store.take(bucket, 0.0, 1)
        start = time.monotonic()
        with pytest.raises(StoreError):
            store.take(bucket, 0.0, 1)  # within the retry pause: no socket wait
        assert time.monotonic() - start < 0.05
        for _ in range(3):  # tries after the pause, the node still down: the same outage
            time.sleep(RETRY_S + 0.05)
            with pytest.raises(StoreError):
                store.take(bucket, 0.0, 1)
        assert store.outages == 1
    finally:
        cluster.start_node(port)
    deadline = time.monotonic() + 10
    while True:
        try:
            granted = store.take(bucket, 0.0, 1)[2]
            break
        except StoreError:
            assert time.monotonic() < deadline, "the store did not recover"
            time.sleep(0.1)
    assert granted == 1
    assert store.outages == 1 and not store.down


def test_every_store_call_on_the_primary_sentinel_reports(
    sentinel: RedisSentinelServers,
) -> None:
    _every_call(RedisStore(sentinel.url, prefix="every:"))


def test_a_sentinel_failover_under_load_fails_open_then_limits_again(
    tmp_path: Path, sentinel: RedisSentinelServers
) -> None:
    """The primary is killed while two workers serve: the limit holds before, requests
    are served unharmed (200 or 429, never a 5xx) while Sentinel promotes the replica,
    and once it has, the limit bites again and the state (replicated) is still there:
    no restart."""
    env = {"MOCKFORGE_STORE": sentinel.url, **LIMIT}
    with mockforge_serve(tmp_path, *SERVE, env=env) as server, session() as http:
        version = http.get(server.url + "/api/chaos/status", timeout=10).json()["state"]["version"]
        assert version >= 1
        before, _ = _hammer([server.url], 1.0, 4)
        assert before[429] > 0, before
        during: Counter[int] = Counter()
        load = threading.Thread(
            target=lambda: during.update(_hammer([server.url], 3.0, 4)[0]), daemon=True
        )
        load.start()
        old = sentinel.kill_primary()
        load.join(30)
        assert set(during) <= {200, 429}, during  # fail open: no 5xx, no lost answer
        assert sentinel.primary_port() != old
        time.sleep(0.6)  # past each worker's retry pause (0.5 s)
        after, elapsed = _hammer([server.url], 1.5, 4)
        assert set(after) <= {200, 429}, after
        assert after[429] > 0, after  # the shared limit is back, on the new primary
        assert after[200] <= 5 + 20 * elapsed + 10, (after, elapsed)
        status = http.get(server.url + "/api/chaos/status", timeout=10).json()
        assert status["state"]["version"] == version  # the state came over with the replica
        answer = http.post(server.url + "/api/chaos/scenarios/slow_backend", timeout=10)
        assert answer.status_code == 200, answer.text  # management writes again
    log = server.log()
    assert "unreachable" in log and "reachable again" in log
    assert "Traceback" not in log
