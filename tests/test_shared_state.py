"""One chaos state for all gunicorn workers: real processes, the embedded store."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from servers import (
    finish,
    gunicorn_server,
    held_sync_workers,
    mockforge_serve,
    one_request_per_sync_worker,
    session,
)

from mockforge_wsgi.cli import main

pytestmark = pytest.mark.server

FAULT_ALL = {"enabled": True, "http_errors": [503], "http_error_probability": 1.0}


# How a user runs several workers; none of them names a store.
HOW = {
    "gunicorn": "mockforge_wsgi.app:app",  # the usage on the card
    "flask under gunicorn": "wsgi_apps:flask_app",  # app.wsgi_app = ChaosMiddleware(...)
}


def _servers(
    tmp_path: Path,
    how: str,
    env: dict[str, str],
    worker_class: str = "gthread",
    extra_args: tuple[str, ...] = (),
) -> Any:
    env = {"MOCKFORGE_DEBUG_HEADERS": "1", **env}
    if how in HOW:
        return gunicorn_server(
            tmp_path,
            app=HOW[how],
            workers=4,
            worker_class=worker_class,
            env=env,
            extra_args=extra_args,
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


def _wait_for_workers(url: str, count: int) -> set[int]:
    """Waits until ``count`` sync workers all answer (they boot one after another): one
    request to each, for sure (servers.py); their pids."""
    answers = one_request_per_sync_worker(url, count, "/api/chaos/stats")
    seen = {json.loads(body)["worker"] for _, _, body in answers}
    assert len(seen) == count, seen
    return seen


def _per_worker(url: str, count: int) -> list[tuple[int, str]]:
    """One GET /api/test to each of ``count`` sync workers: (status, the worker's pid)."""
    answers = one_request_per_sync_worker(url, count, "/api/test")
    return [(status, headers.get("X-Mockforge-Worker", "")) for status, headers, _ in answers]


@pytest.mark.parametrize(
    ("how", "extra_args"),
    [
        pytest.param("gunicorn", (), id="gunicorn"),
        pytest.param("gunicorn", ("--preload",), id="gunicorn-preload"),
        pytest.param("flask under gunicorn", (), id="flask-under-gunicorn"),
        pytest.param("mockforge serve", (), id="mockforge-serve"),
    ],
)
def test_one_management_call_reaches_every_worker(
    tmp_path: Path, how: str, extra_args: tuple[str, ...]
) -> None:
    # Sync workers take one request at a time, so 10 concurrent clients reach all four.
    servers = _servers(tmp_path, how, {}, worker_class="sync", extra_args=extra_args)
    with servers as server, session() as http:
        api = server.url + "/api/chaos"
        assert http.post(api + "/enable", timeout=10).status_code == 200
        slow = {"enabled": True, "fixed_delay_ms": 50}  # keeps a worker busy for a moment
        assert http.put(api + "/config/latency", json=slow, timeout=10).ok

        def get(fresh: requests.Session) -> tuple[int, str]:
            response = fresh.get(server.url + "/api/test", timeout=10)
            return response.status_code, response.headers.get("X-Mockforge-Worker", "")

        _wait_for_workers(server.url, 4)
        assert http.put(api + "/config/faults", json=FAULT_ALL, timeout=10).ok
        everywhere = _per_worker(server.url, 4)  # each worker once, for sure
        assert [status for status, _ in everywhere] == [503] * 4
        assert len({pid for _, pid in everywhere}) == 4, everywhere
        faulted = _concurrently(100, 10, get)
        assert [status for status, _ in faulted] == [503] * 100
        assert http.post(api + "/disable", timeout=10).status_code == 200
        assert [status for status, _ in _per_worker(server.url, 4)] == [200] * 4
        served = _concurrently(40, 10, get)
        assert [status for status, _ in served] == [200] * 40
        counters = http.get(api + "/status", timeout=10).json()["counters"]
        assert counters["http_error"] == 104


@pytest.mark.alone  # wall-clock figures: no other test meanwhile
@pytest.mark.parametrize("how", ["gunicorn", "mockforge serve"])
def test_a_global_limit_is_one_limit_for_all_workers(tmp_path: Path, how: str) -> None:
    env = {
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "50",
        "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "10",
    }
    with _servers(tmp_path, how, env) as server:
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
        # On top of the scenario (the last write wins): at most 8 in flight, 5 s of queue.
        traffic = {"enabled": True, "max_connections": 8, "queue_timeout_ms": 5000}
        http.put(api + "/config/traffic", json=traffic, timeout=10).raise_for_status()
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


@pytest.mark.alone  # wall-clock figures: no other test meanwhile
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
        # Held 2 s: the four requests, completed together, all arrive while the first
        # two hold their places (a 503 is at once: no queue timeout is set).
        "MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS": "2000",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_ENABLED": "true",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_MAX_CONNECTIONS": "2",
    }
    with (
        _servers(tmp_path, "mockforge serve", env, worker_class="sync") as server,
        session() as http,
    ):
        # Four requests at once, each on a worker of its own for sure (servers.py):
        # per-worker limits would let all four through; one limit lets two.
        with held_sync_workers(server.url, 4, "/api/test") as held:
            results = finish(held)
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 200, 503, 503], results
        assert (
            http.get(server.url + "/api/chaos/stats", timeout=10).json()["connections_in_use"] == 0
        )


def _faulted_share(url: str, count: int) -> float:
    results = _concurrently(count, 10, lambda fresh: fresh.get(url + "/api/test", timeout=10))
    return sum(r.status_code == 503 for r in results) / count


def test_a_change_while_a_scenario_runs_reaches_every_worker(tmp_path: Path) -> None:
    with _servers(tmp_path, "gunicorn", {}, worker_class="sync") as server, session() as http:
        api = server.url + "/api/chaos"
        _wait_for_workers(server.url, 4)
        http.post(api + "/scenarios/service_instability", timeout=10).raise_for_status()
        assert http.put(api + "/config/faults", json=FAULT_ALL, timeout=10).ok
        assert [status for status, _ in _per_worker(server.url, 4)] == [503] * 4  # everywhere
        assert _faulted_share(server.url, 100) == 1.0  # on top of the scenario
        overrides = http.get(api + "/status", timeout=10).json()["overrides"]
        assert overrides["fault_injection"]["http_error_probability"] == 1.0
        http.delete(api + "/scenarios", timeout=10).raise_for_status()
        assert _faulted_share(server.url, 40) == 0.0  # the runtime config is back
        assert [status for status, _ in _per_worker(server.url, 4)] == [200] * 4


def test_a_restarted_server_starts_from_its_startup_config(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    env = {"MOCKFORGE_RUNTIME_DIR": str(runtime)}
    with _servers(tmp_path, "gunicorn", env, worker_class="sync") as server, session() as http:
        api = server.url + "/api/chaos"
        http.post(api + "/enable", timeout=10).raise_for_status()
        assert http.put(api + "/config/faults", json=FAULT_ALL, timeout=10).ok
        assert _faulted_share(server.url, 20) == 1.0
        (first,) = (runtime / f"mockforge-{os.getuid()}").iterdir()
    with _servers(tmp_path, "gunicorn", env, worker_class="sync") as server, session() as http:
        assert _faulted_share(server.url, 20) == 0.0
        assert http.get(server.url + "/api/chaos/status", timeout=10).json()["enabled"] is False
        (second,) = (runtime / f"mockforge-{os.getuid()}").iterdir()  # the old one is gone
    assert first != second
    assert re.fullmatch(r"\d+-\d+", second.name)


def test_worker_churn_keeps_one_state_and_never_fails(tmp_path: Path) -> None:
    # gunicorn --max-requests: every worker is replaced after 3 requests, no hook of
    # ours runs; the state outlives every worker and their rows are reclaimed.
    extra = ("--max-requests", "3")
    with (
        gunicorn_server(
            tmp_path, app=HOW["gunicorn"], workers=2, worker_class="sync", extra_args=extra
        ) as server,
        session() as http,
    ):
        api = server.url + "/api/chaos"
        http.post(api + "/enable", timeout=10).raise_for_status()
        assert http.put(api + "/config/faults", json=FAULT_ALL, timeout=10).ok
        statuses = Counter(
            http.get(server.url + "/api/test", timeout=10).status_code for _ in range(45)
        )
        assert statuses == {503: 45}, statuses
        http.post(api + "/disable", timeout=10).raise_for_status()
        assert {http.get(server.url + "/api/test", timeout=10).status_code for _ in range(9)} == {
            200
        }
        assert "Traceback" not in server.log()
        assert server.log().count("Booting worker") >= 10  # the churn happened


def test_per_process_memory_under_several_workers_is_named_in_a_warning(tmp_path: Path) -> None:
    env = {"MOCKFORGE_STORE": "memory://"}
    with gunicorn_server(tmp_path, app=HOW["gunicorn"], workers=2, env=env) as server:
        assert session().get(server.url + "/api/test", timeout=10).status_code == 200
        log = server.log()
    assert "the chaos state was set to per-process memory" in " ".join(log.split())


def test_the_startup_scenario_resumes_on_every_worker(tmp_path: Path) -> None:
    # A scenario started over the CLI for a while, then one stopped by the CLI: each time
    # the startup scenario comes back, on every worker (503 from the startup one, 502
    # from the others, 200 once none runs).
    (tmp_path / "chaos.yaml").write_text(
        "chaos:\n"
        "  scenarios:\n"
        "    at_start:\n"
        "      fault_injection: {enabled: true, http_errors: [503], http_error_probability: 1}\n"
        "    later:\n"
        "      fault_injection: {enabled: true, http_errors: [502], http_error_probability: 1}\n"
    )
    args = ("--config", "chaos.yaml", "--chaos", "--chaos-scenario", "at_start")
    env = {"MOCKFORGE_DEBUG_HEADERS": "1"}
    with (
        mockforge_serve(
            tmp_path, "--workers", "3", "--worker-class", "sync", *args, env=env
        ) as server,
        session() as http,
    ):
        url = ["--url", server.url]
        runner = CliRunner()

        def answers() -> tuple[set[int], int]:
            """The statuses of one request to each of the 3 workers (each for sure), and
            how many workers said which they were."""
            got = _per_worker(server.url, 3)
            return {status for status, _ in got}, len({pid for _, pid in got if pid})

        def active() -> dict[str, Any]:
            found: dict[str, Any] = http.get(server.url + "/api/chaos/status", timeout=10).json()
            return found["active_scenario"] or {}

        _wait_for_workers(server.url, 3)
        assert (active()["name"], active()["reason"]) == ("at_start", "startup")
        typo = runner.invoke(main, ["chaos", "scenario", "latr", *url])
        assert typo.exit_code == 1
        assert "scenario: unknown scenario 'latr'; did you mean 'later'? (choices: " in (
            typo.output
        )
        assert answers() == ({503}, 3)
        started = runner.invoke(main, ["chaos", "scenario", "later", "--duration", "3", *url])
        assert started.exit_code == 0, started.output
        assert answers() == ({502}, 3)
        deadline = time.monotonic() + 15
        while active()["name"] != "at_start" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert active()["reason"] == "resumed"  # it ran out
        assert answers() == ({503}, 3)
        runner.invoke(main, ["chaos", "scenario", "later", *url])
        assert answers() == ({502}, 3)
        stopped = runner.invoke(main, ["chaos", "stop", *url])
        assert '"resumed": "at_start"' in stopped.output, stopped.output
        assert answers() == ({503}, 3)
        runner.invoke(main, ["chaos", "scenario", "later", *url])
        assert '"resumed": null' in runner.invoke(main, ["chaos", "stop", "--all", *url]).output
        assert answers()[0] == {200}  # (no worker header: nothing injected)
