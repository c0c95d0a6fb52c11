"""Chaos off releases what it holds, on a real server: ``mockforge serve -w 2
--admin-port``, a hold on every request, requests in flight on both workers; after
``POST /api/chaos/disable`` on the admin port every one of them has its answer within
100 ms (issue 25). The change is made in gunicorn's master; each worker learns it from
the store's state version (its watcher polls while requests are held): the embedded
store and Redis, gthread and sync workers.

The bound asserted is 100 ms + MARGIN_S: this VM's 2 cores are shared with other test
runs, and a client thread may wait its turn. The figure measured (the last answer after
the disable was sent) is printed; docs/PERFORMANCE.md states it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from servers import TESTS_DIR, RedisServer, mockforge_serve, session
from test_admin import _admin_url

pytestmark = pytest.mark.server

BOUND_S = 0.1
MARGIN_S = 0.15


def _count(http: Any, admin: str, name: str) -> int:
    return int(http.get(admin + "/stats", timeout=10).json()["counters"].get(name, 0))


def _held_then_disabled(
    tmp_path: Path,
    chaos: str,
    *,
    in_flight: int,
    counter: str,
    path: str = "/api/test",
    serve: tuple[str, ...] = ("--workers", "2"),
    env: dict[str, str] | None = None,
    expect: bytes | None = None,
    app: tuple[str, ...] = (),
) -> float:
    """``in_flight`` requests held by ``chaos`` (a YAML block under ``chaos:``), then the
    disable on the admin port; returns how long after it was sent the last one was
    answered, each answer checked as the app's own (a 200, with ``expect`` if given).
    The app is the mock API unless ``app`` names one."""
    (tmp_path / "chaos.yaml").write_text(f"chaos:\n  enabled: true\n{chaos}")
    args = (*serve, "--admin-port", "0", "--config", "chaos.yaml", "--access-log", "off")
    args += app
    with mockforge_serve(tmp_path, *args, env=env) as server:
        admin = _admin_url(server.log) + "/api/chaos"
        answers: list[tuple[float, int, bytes]] = []

        def fetch() -> None:
            with session() as client:
                response = client.get(server.url + path, timeout=60)
                answers.append((time.monotonic(), response.status_code, response.content))

        threads = [threading.Thread(target=fetch, daemon=True) for _ in range(in_flight)]
        for thread in threads:
            thread.start()
        with session() as http:
            deadline = time.monotonic() + 10
            while _count(http, admin, counter) < in_flight:  # every one decided: held
                assert time.monotonic() < deadline, (
                    http.get(admin + "/stats", timeout=10).json(),
                    server.log()[-3000:],
                )
                time.sleep(0.02)
            time.sleep(0.2)  # and asleep in their holds
            assert not answers, "answered before the disable"
            sent = time.monotonic()
            assert http.post(admin + "/disable", timeout=10).status_code == 200
        for thread in threads:
            thread.join(30)
        assert len(answers) == in_flight
        assert all(
            status == 200 and body == (body if expect is None else expect)
            for _, status, body in answers
        ), [(status, body[:40]) for _, status, body in answers]
        last = max(done for done, _, _ in answers) - sent
        print(
            f"\n{tmp_path.name}: the last of {in_flight} held answered {last * 1000:.0f} ms after"
        )
        assert last < BOUND_S + MARGIN_S, f"{last:.3f} s"
        return last


DELAY = "  latency: {enabled: true, fixed_delay_ms: 3000}\n"


def test_8_requests_held_3_s_are_released_by_the_disable(
    tmp_path: Path,
) -> None:
    _held_then_disabled(tmp_path, DELAY, in_flight=8, counter="latency")


def test_sync_workers_are_released_too(tmp_path: Path) -> None:
    serve = ("--workers", "4", "--worker-class", "sync")
    _held_then_disabled(tmp_path, DELAY, in_flight=4, counter="latency", serve=serve)


def test_on_redis_every_worker_is_released(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {"MOCKFORGE_STORE": redis_server.url}
    _held_then_disabled(tmp_path, DELAY, in_flight=8, counter="latency", env=env)


def test_a_timeout_hold_released_lets_the_app_answer_on_a_sync_worker(tmp_path: Path) -> None:
    chaos = "  fault_injection: {enabled: true, timeout_probability: 1.0, timeout_ms: 30000}\n"
    serve = ("--workers", "2", "--worker-class", "sync")
    _held_then_disabled(tmp_path, chaos, in_flight=2, counter="timeout", serve=serve)


def test_a_paced_body_is_released_to_full_speed(tmp_path: Path) -> None:
    # 20 KB at 2 KB/s: 10 s each; released, the rest goes at once.
    chaos = "  traffic_shaping: {enabled: true, bandwidth_limit_bps: 2000}\n"
    _held_then_disabled(
        tmp_path,
        chaos,
        in_flight=4,
        counter="bandwidth_throttled",
        path="/bytes/20000",
        expect=b"x" * 20000,
        app=("--app", "wsgi_apps:base_app", "--chdir", str(TESTS_DIR)),
    )
