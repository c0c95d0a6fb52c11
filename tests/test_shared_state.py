"""One chaos state for all gunicorn workers: real processes, the embedded store."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import gunicorn_server, mockforge_serve, session

pytestmark = pytest.mark.server

FAULT_ALL = {"enabled": True, "http_errors": [503], "http_error_probability": 1.0}


def _servers(tmp_path: Path, how: str, env: dict[str, str], worker_class: str = "gthread") -> Any:
    env = {"MOCKFORGE_DEBUG_HEADERS": "1", **env}
    if how == "gunicorn":
        env["MOCKFORGE_STORE"] = f"file://{tmp_path / 'store'}"
        return gunicorn_server(
            tmp_path, app="mockforge_wsgi.app:app", workers=4, worker_class=worker_class, env=env
        )
    return mockforge_serve(tmp_path, "--workers", "4", "--worker-class", worker_class, env=env)


def _concurrently(count: int, clients: int, call: Any) -> list[Any]:
    """``count`` calls spread over ``clients`` threads, each on fresh connections."""
    results: list[Any] = []
    lock = threading.Lock()

    def run(share: int) -> None:
        for _ in range(share):
            with session() as fresh:
                result = call(fresh)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=run, args=(count // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _wait_for_workers(url: str, count: int) -> None:
    """Workers boot one after another: wait until ``count`` of them answer."""
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while len(seen) < count and time.monotonic() < deadline:
        stats = _concurrently(
            20, 10, lambda fresh: fresh.get(url + "/api/chaos/stats", timeout=10).json()
        )
        seen |= {answer["worker"] for answer in stats}
    assert len(seen) == count, seen


@pytest.mark.parametrize("how", ["gunicorn", "mockforge serve"])
def test_one_management_call_reaches_every_worker(tmp_path: Path, how: str) -> None:
    # Sync workers take one request at a time, so 10 concurrent clients reach all four.
    with _servers(tmp_path, how, {}, worker_class="sync") as server, session() as http:
        api = server.url + "/api/chaos"
        assert http.post(api + "/enable", timeout=10).status_code == 200
        slow = {"enabled": True, "fixed_delay_ms": 50}  # keeps a worker busy for a moment
        assert http.put(api + "/config/latency", json=slow, timeout=10).ok

        def get(fresh: requests.Session) -> tuple[int, str]:
            response = fresh.get(server.url + "/api/test", timeout=10)
            return response.status_code, response.headers.get("X-Mockforge-Worker", "")

        _wait_for_workers(server.url, 4)
        assert http.put(api + "/config/faults", json=FAULT_ALL, timeout=10).ok
        faulted = _concurrently(100, 10, get)
        assert [status for status, _ in faulted] == [503] * 100
        assert len({pid for _, pid in faulted}) == 4, Counter(pid for _, pid in faulted)
        assert http.post(api + "/disable", timeout=10).status_code == 200
        served = _concurrently(40, 10, get)
        assert [status for status, _ in served] == [200] * 40
        counters = http.get(api + "/status", timeout=10).json()["counters"]
        assert counters["fault.http_error"] == 100


def test_a_global_limit_is_one_limit_for_all_workers(tmp_path: Path) -> None:
    env = {
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "50",
        "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "10",
    }
    with _servers(tmp_path, "mockforge serve", env) as server:
        statuses: Counter[int] = Counter()
        lock = threading.Lock()
        stop_at = time.monotonic() + 5.0
        first: list[float] = []

        def client() -> None:
            mine: Counter[int] = Counter()
            with session() as http:
                for _ in range(100_000):  # bounded; the clock ends it first
                    if time.monotonic() >= stop_at:
                        break
                    mine[http.get(server.url + "/api/test", timeout=10).status_code] += 1
            with lock:
                statuses.update(mine)

        first.append(time.monotonic())
        threads = [threading.Thread(target=client) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - first[0]
    expected = 10 + 50 * elapsed
    assert set(statuses) <= {200, 429}
    assert abs(statuses[200] - expected) <= 0.03 * expected, (statuses, elapsed)


def test_killing_a_worker_under_load(tmp_path: Path) -> None:
    env = {
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_ENABLED": "true",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_MAX_CONNECTIONS": "8",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_QUEUE_TIMEOUT_MS": "5000",
    }
    with _servers(tmp_path, "mockforge serve", env) as server, session() as http:
        api = server.url + "/api/chaos"
        http.post(api + "/scenarios/slow_3g", json={}, timeout=10).raise_for_status()
        http.put(api + "/config/traffic", json={"enabled": True, "max_connections": 8}, timeout=10)
        outcomes: Counter[str] = Counter()
        pids: set[str] = set()
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            with session() as fresh:
                for _ in range(200):
                    if stop.is_set():
                        break
                    try:
                        response = fresh.get(server.url + "/health", timeout=30)
                        with lock:
                            outcomes[str(response.status_code)] += 1
                            pids.add(response.headers.get("X-Mockforge-Worker", ""))
                    except requests.RequestException as error:
                        with lock:
                            outcomes[type(error).__name__] += 1

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(pids - {""}) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        victim = int(sorted(pids - {""})[0])
        os.kill(victim, signal.SIGKILL)
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(60)
        status = http.get(api + "/status", timeout=10).json()
        assert status["active_scenario"]["name"] == "slow_3g"  # the state outlived the worker
        served_after = http.get(server.url + "/health", timeout=30)
        assert served_after.status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if http.get(api + "/stats", timeout=10).json()["connections_in_use"] == 0:
                break
            time.sleep(0.2)
        assert http.get(api + "/stats", timeout=10).json()["connections_in_use"] == 0
    assert outcomes["200"] > 0
    assert set(outcomes) <= {"200", "ConnectionError", "ChunkedEncodingError"}, outcomes


def test_a_per_ip_limit_holds_across_workers(tmp_path: Path) -> None:
    env = {
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_GLOBAL_LIMIT": "false",
        "MOCKFORGE_CHAOS_RATE_LIMIT_PER_IP": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_PER_IP_REQUESTS_PER_SECOND": "20",
        "MOCKFORGE_CHAOS_RATE_LIMIT_PER_IP_BURST_SIZE": "5",
    }
    with _servers(tmp_path, "mockforge serve", env) as server:
        statuses: Counter[int] = Counter()
        lock = threading.Lock()
        start = time.monotonic()
        stop_at = start + 3.0

        def client() -> None:
            mine: Counter[int] = Counter()
            with session() as http:  # every client is 127.0.0.1: one per-IP bucket
                for _ in range(100_000):
                    if time.monotonic() >= stop_at:
                        break
                    mine[http.get(server.url + "/api/test", timeout=10).status_code] += 1
            with lock:
                statuses.update(mine)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - start
    expected = 5 + 20 * elapsed
    assert set(statuses) <= {200, 429}
    assert abs(statuses[200] - expected) <= 0.05 * expected, (statuses, elapsed)


def test_a_connection_limit_holds_across_workers(tmp_path: Path) -> None:
    env = {
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_LATENCY_ENABLED": "true",
        "MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS": "1000",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_ENABLED": "true",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_MAX_CONNECTIONS": "2",
    }
    with (
        _servers(tmp_path, "mockforge serve", env, worker_class="sync") as server,
        session() as http,
    ):
        _wait_for_workers(server.url, 4)
        results = _concurrently(
            4, 4, lambda fresh: fresh.get(server.url + "/api/test", timeout=10)
        )
        statuses = sorted(response.status_code for response in results)
        # Per-worker limits would let all four through (one request per sync worker).
        assert set(statuses) <= {200, 503}
        assert statuses.count(503) >= 1, statuses
        assert statuses.count(200) >= 2, statuses
        assert (
            http.get(server.url + "/api/chaos/stats", timeout=10).json()["connections_in_use"] == 0
        )
