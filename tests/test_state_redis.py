"""The Redis store, and gunicorn servers on different ports sharing one real Redis."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from servers import RedisServer, gunicorn_server, session

from mockforge_wsgi.state import Bucket, StoreError, store_from_url
from mockforge_wsgi.state.redis_store import SLOT_LEASE_S, RedisStore

pytestmark = pytest.mark.server


def test_store_basics(redis_server: RedisServer) -> None:
    store = store_from_url(redis_server.url)
    assert isinstance(store, RedisStore)
    assert store.load_state() == (0, None)
    assert store.save_state({"enabled": True}) == 1
    assert store.load_state() == (1, {"enabled": True})
    # Compare-and-set (a guard's trip): written only at the version given.
    assert store.replace_state({"enabled": False}, 1) == 2
    assert store.replace_state({"enabled": True}, 1) == 0
    assert store.load_state() == (2, {"enabled": False})
    assert store.incr("latency", 2) == 2
    store.set_counter("pattern_requests", 0)
    assert store.counters() == {"latency": 2}
    assert store.acquire_slot("connections", 1, 0)
    assert not store.acquire_slot("connections", 1, 0.01)
    store.release_slot("connections")
    assert store.slots_in_use("connections") == 0
    store.reset()
    assert store.counters() == {}


def test_charges_are_all_or_nothing_on_server_time(redis_server: RedisServer) -> None:
    store = store_from_url(redis_server.url)
    levels = [Bucket("global", 1000.0, 5), Bucket("ip:a", 1000.0, 2)]
    # `now` is ignored: the server's TIME is the clock, so host clocks cannot disagree.
    outcomes = [store.acquire(levels, now=12345.0) for _ in range(3)]
    assert [o.allowed for _, o in outcomes] == [True, True, False]
    assert outcomes[2][0] == 1  # refused by the per-IP level
    assert outcomes[0][1].remaining == 1
    others = [store.acquire([levels[0], Bucket("ip:b", 1000.0, 5)], 0.0) for _ in range(4)]
    assert [o.allowed for _, o in others] == [True, True, True, False]  # 5 - 2 left
    assert store.tracked_keys() == 3


def test_event_counts_go_in_batches_and_are_read_whole(redis_server: RedisServer) -> None:
    writer, reader = store_from_url(redis_server.url), store_from_url(redis_server.url)
    assert isinstance(writer, RedisStore)
    for _ in range(500):
        writer.count(["latency", "fault.http_error"])
    assert writer.counters() == {"latency": 500, "fault.http_error": 500}  # its own: sent first
    writer.count(["latency"])
    deadline = time.monotonic() + 2.0
    while reader.counters().get("latency") != 501 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert reader.counters()["latency"] == 501  # another process: within a few ms
    stats = writer._redis.info("commandstats")
    assert stats["cmdstat_hincrby"]["calls"] <= 20, stats["cmdstat_hincrby"]  # not 1,001


def test_a_worker_exiting_right_after_counting_still_sends_its_counts(
    redis_server: RedisServer,
) -> None:
    import subprocess
    import sys

    script = (
        "import sys; from mockforge_wsgi.state import store_from_url; "
        "store_from_url(sys.argv[1]).count(['latency', 'latency', 'rate_limited'])"
    )
    subprocess.run([sys.executable, "-c", script, redis_server.url], check=True, timeout=30)
    counts = store_from_url(redis_server.url).counters()
    assert counts == {"latency": 2, "rate_limited": 1}


def test_outage_fails_fast_and_recovers(redis_server: RedisServer) -> None:
    store = store_from_url(redis_server.url)
    assert isinstance(store, RedisStore)
    store.incr("x")
    redis_server.stop()
    with pytest.raises(StoreError):
        store.incr("x")
    start = time.monotonic()
    with pytest.raises(StoreError):
        store.incr("x")  # while down: no socket wait
    assert time.monotonic() - start < 0.05
    assert store.outages == 1
    redis_server.start()
    time.sleep(0.6)  # past the retry pause
    assert store.incr("x") == 1  # a fresh Redis: nothing persisted
    assert not store.down


def _hammer(urls: list[str], seconds: float, clients: int) -> tuple[Counter[int], float]:
    """Load from ``clients`` threads for ``seconds``: statuses (0: no answer; -5xx: a
    server error that is not an injected one) and the time it took."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + seconds

    def client(url: str) -> None:
        mine: Counter[int] = Counter()
        with session() as http:
            for _ in range(100_000):  # bounded; the clock ends it first
                if time.monotonic() >= stop_at:
                    break
                try:
                    response = http.get(url + "/api/test", timeout=10)
                except requests.RequestException:
                    mine[0] += 1
                    continue
                status = response.status_code
                # A 5xx we did not inject (no annotation) is counted as its negative.
                injected = "X-Mockforge-Chaos" in response.headers
                mine[status if status < 500 or injected else -status] += 1
        with lock:
            statuses.update(mine)

    threads = [
        threading.Thread(target=client, args=(urls[i % len(urls)],)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses, time.monotonic() - start


def test_two_servers_share_one_scenario_and_one_limit(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {
        "MOCKFORGE_STORE": redis_server.url,
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "20",
        "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "5",
    }
    common = {"app": "mockforge_wsgi.app:app", "workers": 2, "worker_class": "gthread", "env": env}
    with (
        gunicorn_server(tmp_path / "a", **common) as first,  # type: ignore[arg-type]
        gunicorn_server(tmp_path / "b", **common) as second,  # type: ignore[arg-type]
        session() as http,
    ):
        statuses, elapsed = _hammer([first.url, second.url], 3.0, 8)
        expected = 5 + 20 * elapsed
        assert set(statuses) <= {200, 429}, statuses
        assert abs(statuses[200] - expected) <= 0.05 * expected, (statuses, elapsed)

        http.post(first.url + "/api/chaos/scenarios/slow_backend", timeout=10).raise_for_status()
        deadline = time.monotonic() + 5
        seen = None
        while time.monotonic() < deadline:
            seen = http.get(second.url + "/api/chaos/status", timeout=10).json()["active_scenario"]
            if seen:
                break
            time.sleep(0.05)
        assert seen is not None
        assert seen["name"] == "slow_backend"


def test_redis_stopping_under_load_gives_no_500s(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {
        "MOCKFORGE_STORE": redis_server.url,
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "5",
        "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "5",
    }
    with gunicorn_server(
        tmp_path / "a", app="mockforge_wsgi.app:app", workers=2, worker_class="gthread", env=env
    ) as server:
        before, _ = _hammer([server.url], 1.0, 4)
        assert before[429] > 0  # the shared limit works
        redis_server.stop()
        during, _ = _hammer([server.url], 1.0, 4)
        # on_store_error: local (the default): each worker limits at its share, no 500s
        assert set(during) <= {200, 429} and during[429] > 0, during
        redis_server.start()
        time.sleep(1.5)  # past the retry pause of every worker
        after, _ = _hammer([server.url], 1.5, 4)
        assert after[429] > 0, after  # shared limits are back without a restart
        assert set(after) <= {200, 429}
    log = server.log()
    assert "unreachable" in log
    assert "reachable again" in log


def test_init_state_seeds_once(redis_server: RedisServer) -> None:
    store = store_from_url(redis_server.url)
    assert store.init_state({"first": True})
    assert not store.init_state({"second": True})
    assert store.load_state() == (1, {"first": True})


def test_stale_slot_holders_expire_and_a_failed_release_does_not_stay_taken(
    redis_server: RedisServer,
) -> None:
    import redis

    store = store_from_url(redis_server.url)
    assert isinstance(store, RedisStore)
    admin = redis.Redis.from_url(redis_server.url)
    now = int(admin.time()[0])
    # A process on another host that died holding 5 slots, last heard of long ago.
    admin.hset("mockforge:slots:connections", "gone:1", 5)
    admin.hset("mockforge:slots-at:connections", "gone:1", now - SLOT_LEASE_S - 1)
    assert store.acquire_slot("connections", 2, 0)  # its slots no longer count
    assert store.acquire_slot("connections", 2, 0)
    assert not store.acquire_slot("connections", 2, 0)
    admin.client_pause(1000)  # Redis stops answering for a second
    with pytest.raises(StoreError):
        store.release_slot("connections")
    time.sleep(1.2 + 0.5)  # the pause and the retry pause are over
    assert store.slots_in_use("connections") == 1  # rewritten on recovery: one held
    assert store.acquire_slot("connections", 2, 0)


def test_redis_outage_and_pauses_under_limits_give_only_injected_5xx(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis

    env = {
        "MOCKFORGE_STORE": redis_server.url,
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "20",
        "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "5",
        # 2 slots held 100 ms each serve 20 requests a second, as many as are admitted:
        # those arriving together wait past the queue timeout (503).
        "MOCKFORGE_CHAOS_LATENCY_ENABLED": "true",
        "MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS": "100",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_ENABLED": "true",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_MAX_CONNECTIONS": "2",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_QUEUE_TIMEOUT_MS": "50",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_ENABLED": "true",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_PATTERN": "every:3:502",
        "MOCKFORGE_CHAOS_ON_STORE_ERROR": "open",  # (local: tests/test_store_outage.py)
    }
    with (
        gunicorn_server(
            tmp_path, app="mockforge_wsgi.app:app", workers=2, worker_class="gthread", env=env
        ) as server,
        session() as http,
    ):
        before, _ = _hammer([server.url], 2.0, 8)
        assert {429, 502, 503} <= set(before), before  # every limit and the pattern bite
        redis_server.stop()
        during, _ = _hammer([server.url], 1.0, 8)
        assert set(during) == {200}, during  # served unharmed: nothing can be decided
        redis_server.start()
        time.sleep(1.5)
        admin = redis.Redis.from_url(redis_server.url)
        pauses = threading.Thread(
            target=lambda: [(admin.client_pause(1000), time.sleep(1.2)) for _ in range(4)]
        )
        pauses.start()
        paused, _ = _hammer([server.url], 5.0, 8)
        pauses.join(30)
        assert all(status > 0 for status in paused), paused  # no 5xx we did not inject
        time.sleep(1.0)
        after, _ = _hammer([server.url], 1.5, 8)
        assert {429, 502} <= set(after), after  # the limits and the pattern are back
        assert set(after) <= {200, 429, 502, 503}, after
        assert after[200] > 0  # slots did not leak for good: requests still get in
        deadline = time.monotonic() + 5
        while (
            http.get(server.url + "/api/chaos/stats", timeout=10).json()["connections_in_use"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert (
            http.get(server.url + "/api/chaos/stats", timeout=10).json()["connections_in_use"] == 0
        )
    log = server.log()
    assert "Traceback" not in log  # outages are one line each, not errors of ours
    assert "mockforge internal error" not in log
    assert "the store is unreachable" in log


def test_a_state_change_reaches_another_process_within_the_poll_interval(
    redis_server: RedisServer,
) -> None:
    """docs/state.md: a change reaches every host within 50 ms (the version poll)."""
    writer, reader = store_from_url(redis_server.url), store_from_url(redis_server.url)
    seen = reader.state_version()
    waits = []
    for round_ in range(5):
        writer.save_state({"round": round_})
        changed = time.monotonic()
        while reader.state_version() == seen:
            assert time.monotonic() - changed < 1.0, "the change never arrived"
            time.sleep(0.002)
        waits.append(time.monotonic() - changed)
        seen = reader.state_version()
    assert max(waits) < 0.2, waits  # 50 ms promised; slack for a slow machine


def test_a_look_in_flight_does_not_answer_other_threads_with_the_old_version(
    redis_server: RedisServer,
) -> None:
    """A gthread worker: one thread's look at the version is under way when another's
    request arrives; the second must not get the version from before the change (it did:
    the look was marked done when it began, so a request 300 ms after a latency change
    was served without it; tests/test_manyhost.py found it)."""
    writer, reader = store_from_url(redis_server.url), store_from_url(redis_server.url)
    seen = reader.state_version()
    writer.save_state({"changed": True})
    time.sleep(0.06)  # the next look is due
    real_get = reader._redis.get  # type: ignore[attr-defined]
    entered, go = threading.Event(), threading.Event()
    first = [True]

    def slow_get(key: str) -> object:
        if first[0]:
            first[0] = False
            entered.set()
            go.wait(5)
        return real_get(key)

    reader._redis.get = slow_get  # type: ignore[attr-defined]
    slow = threading.Thread(target=reader.state_version)
    slow.start()
    try:
        assert entered.wait(5)
        assert reader.state_version() == seen + 1
    finally:
        go.set()
        slow.join(5)


def test_the_version_is_polled_every_50_ms_on_the_stores_clock(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/state.md: workers poll the version every 50 ms. On an injected clock: a change
    is not seen just before 50 ms after the last look (the poll is what makes it cheap)
    and is seen just after (what makes the promise hold), whatever the machine's load."""
    from types import SimpleNamespace

    from mockforge_wsgi.state import redis_store

    now = [1000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0], sleep=time.sleep, time=time.time)
    monkeypatch.setattr(redis_store, "time", clock)
    writer, reader = store_from_url(redis_server.url), store_from_url(redis_server.url)
    for round_ in range(3):
        looked = now[0] = 1000.0 + round_
        seen = reader.state_version()  # a look: the next is due 50 ms later
        writer.save_state({"round": round_})
        now[0] = looked + 0.0499
        assert reader.state_version() == seen
        now[0] = looked + 0.0501
        assert reader.state_version() == seen + 1


def test_gunicorns_child_exit_hook_gives_back_a_dead_workers_places(
    redis_server: RedisServer,
) -> None:
    """The hook ``mockforge serve`` gives gunicorn: on Redis nothing else frees a dead
    worker's places until its lease runs out (SLOT_LEASE_S, minutes)."""
    import os
    from types import SimpleNamespace

    from mockforge_wsgi.cli import _child_exit

    worker = store_from_url(redis_server.url)
    assert worker.acquire_slot("connections", 2, 0)
    assert worker.acquire_slot("bulkhead:3", 1, 0)
    master = store_from_url(redis_server.url)
    assert master.slots_in_use("connections") == 1
    _child_exit(master, None, None, SimpleNamespace(pid=os.getpid()))
    assert master.slots_in_use("connections") == 0
    assert master.slots_in_use("bulkhead:3") == 0
    assert SLOT_LEASE_S >= 60  # why the hook matters: the lease alone is slow


def test_a_dead_workers_places_in_every_pool_are_forgotten(redis_server: RedisServer) -> None:
    """gunicorn's child_exit: the connection slots and each bulkhead's places it held."""
    import os

    store = store_from_url(redis_server.url)
    assert store.acquire_slot("connections", 1, 0)
    assert store.acquire_slot("bulkhead:0", 1, 0)
    master = store_from_url(redis_server.url)  # another process's view, as the master's
    master.release_worker(os.getpid())
    assert master.slots_in_use("connections") == 0
    assert master.slots_in_use("bulkhead:0") == 0


def test_an_idle_process_cut_off_from_redis_applies_the_state_it_polled(
    redis_server: RedisServer,
) -> None:
    """A worker that gets no request still reads the state version (every 1 s; here
    0.05 s): chaos turned off elsewhere, then Redis gone, and its first request applies
    chaos off, not the state it read before the change."""
    from mockforge_wsgi.config import config_from_dict
    from mockforge_wsgi.engine import ScenarioEngine

    config = config_from_dict({"enabled": True})
    idle = ScenarioEngine(config, store=store_from_url(redis_server.url))
    other = ScenarioEngine(config, store=store_from_url(redis_server.url))
    assert idle.effective().enabled
    assert idle.poll_while_idle(every_s=0.05)
    try:
        other.set_enabled(False)
        time.sleep(0.5)
        redis_server.stop()
        assert not idle.effective().enabled
    finally:
        idle.stop_polling()
