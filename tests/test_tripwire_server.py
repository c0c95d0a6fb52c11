"""The guard on a real server (issue 25, Done when): ``mockforge serve -w 2`` (sync
workers, so both answer), a mock route that answers 500 itself (not an injected fault),
chaos on with a small delay and
``guard: {max_error_ratio: 0.5, window_s: 5, min_requests: 10}``: after 20 such requests
chaos is off, every worker's ``/status`` says why, the trip is counted and recorded; on
the embedded store and on Redis."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from servers import (
    RedisServer,
    mockforge_serve,
    once_counted,
    one_request_per_sync_worker,
    session,
)

from mockforge_wsgi import chaostoolkit
from mockforge_wsgi.client import ChaosClient

pytestmark = pytest.mark.server

CONFIG = """\
chaos:
  enabled: true
  latency: {fixed_delay_ms: 50}
  guard: {max_error_ratio: 0.5, window_s: 5, min_requests: 10}
routes:
  - method: GET
    path: /boom
    status: 500
    text: the app failed
"""
TRIPS_WITHIN_S = 3.0  # a check every 0.25 s per worker; a margin for this VM


def _twenty_errors_turn_chaos_off(tmp_path: Path, env: dict[str, str] | None = None) -> None:
    (tmp_path / "chaos.yaml").write_text(CONFIG)
    env = {"MOCKFORGE_DEBUG_HEADERS": "1", **(env or {})}
    # Sync workers serve a connection at a time: while one sleeps in the delay, the
    # other takes the next connection, so both count answers for the one window.
    args = ("--workers", "2", "--worker-class", "sync", "--config", "chaos.yaml", "--recorder")
    with mockforge_serve(tmp_path, *args, "--access-log", "off", env=env) as server:
        api = server.url + "/api/chaos"
        answers: list[tuple[int, str, str]] = []

        def fetch() -> None:
            for _ in range(5):  # a connection each: the workers share the requests
                with session() as http:
                    response = http.get(server.url + "/boom", timeout=10)
                answers.append(
                    (
                        response.status_code,
                        response.headers.get("X-Mockforge-Chaos", ""),
                        response.headers.get("X-Mockforge-Worker", ""),
                    )
                )

        threads = [threading.Thread(target=fetch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(answers) == 20
        # The app's own 500s, under chaos (the delay annotated), none injected.
        assert all(status == 500 for status, _, _ in answers), answers
        assert sum(note == "latency=50ms" for _, note, _ in answers) >= 10, answers
        # (The last ones may come after the trip: chaos off, no annotation, no worker.)
        assert len({worker for _, _, worker in answers if worker}) == 2, answers

        def every_worker() -> list[dict[str, Any]]:
            """/status from each of the two workers, for sure (servers.py)."""
            got = one_request_per_sync_worker(server.url, 2, "/api/chaos/status")
            return [json.loads(body) for _, _, body in got]

        # Off, and counted, on both workers: the trip is saved, then counted; a worker on
        # Redis reads the state's version every 50 ms, so one may say it before the other.
        [status, other] = once_counted(
            every_worker,
            lambda seen: all(
                not s["enabled"] and s["counters"].get("guard_tripped") == 1 for s in seen
            ),
            TRIPS_WITHIN_S,
        )
        assert not status["enabled"] and not other["enabled"], (status["guard"], other["guard"])
        assert other["guard"] == status["guard"]
        guard = status["guard"]
        print(f"\n{tmp_path.name}: workers {sorted({w for _, _, w in answers})}, {guard}")
        assert guard["tripped"] is True
        assert guard["reason"].startswith("max_error_ratio: "), guard
        figures = guard["figures"]
        assert figures["requests"] >= 10 and figures["errors"] == figures["requests"]
        assert figures["error_ratio"] == 1.0
        assert figures["p99_ms"] < 50  # the app's own time: the injected 50 ms left out
        assert status["counters"]["guard_tripped"] == 1
        # Every worker says the same (the trip is in the store), and chaos stays off.
        seen: dict[int, bool] = {}
        for _ in range(12):
            with session() as http:  # one connection: one worker answers all three
                worker = http.get(api + "/stats", timeout=10).json()["worker"]
                seen[worker] = http.get(api + "/status", timeout=10).json()["guard"]["tripped"]
                after = http.get(server.url + "/boom", timeout=10)
            assert "X-Mockforge-Chaos" not in after.headers  # chaos is off
        assert all(seen.values()), seen
        print(f"status seen from workers {sorted(seen)}")
        # The client and the Chaos Toolkit probes read the same.
        configuration = {"mockforge_url": server.url}
        assert ChaosClient(server.url).guard()["reason"] == guard["reason"]
        assert chaostoolkit.guard_tripped(configuration) is True
        assert chaostoolkit.guard(configuration)["figures"] == figures
        with session() as http:
            events = http.get(server.url + "/api/recorder/events", timeout=10).json()
            assert [e["kind"] for e in events["events"]] == ["guard_tripped"]
            assert events["events"][0]["detail"]["reason"] == guard["reason"]
            # The next enable forgets the trip, and the window starts afresh.
            http.post(api + "/enable", timeout=10)
            deadline = time.monotonic() + 2.0  # Redis: a worker sees it at its next poll
            status = http.get(api + "/status", timeout=10).json()
            while not status["enabled"] and time.monotonic() < deadline:
                time.sleep(0.02)
                status = http.get(api + "/status", timeout=10).json()
        assert status["enabled"] and status["guard"]["tripped"] is False, status["guard"]
        # Redis: each worker reads the state's version every 50 ms.
        tripped = once_counted(lambda: chaostoolkit.guard_tripped(configuration), lambda t: not t)
        assert tripped is False


def test_twenty_app_errors_turn_chaos_off_across_two_workers(tmp_path: Path) -> None:
    _twenty_errors_turn_chaos_off(tmp_path)


def test_on_redis_too(tmp_path: Path, redis_server: RedisServer) -> None:
    _twenty_errors_turn_chaos_off(tmp_path, {"MOCKFORGE_STORE": redis_server.url})
