"""``chaos.guard.max_duration_s`` for chaos on at start, on real servers: the deadline
counts from the start, and every gunicorn worker watches it from when it loads the app,
so chaos goes off with no request at all; counted once, though both workers trip it at
the same instant."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from servers import READY_APP, gunicorn_server, mockforge_serve, session

pytestmark = pytest.mark.server

CONFIG = """\
chaos:
  enabled: true
  latency: {fixed_delay_ms: 10}
  guard: {max_duration_s: 1}
"""


def _status_once_off(url: str, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    with session() as http:
        status = http.get(url + "/api/chaos/status", timeout=10).json()
        while status["enabled"] and time.monotonic() < deadline:
            time.sleep(0.05)
            status = http.get(url + "/api/chaos/status", timeout=10).json()
    return status


def test_mockforge_serve_turns_chaos_on_at_start_off_at_max_duration(tmp_path: Path) -> None:
    (tmp_path / "chaos.yaml").write_text(CONFIG)
    args = ("--workers", "2", "--config", "chaos.yaml", "--access-log", "off")
    with mockforge_serve(tmp_path, *args) as server:
        status = _status_once_off(server.url, within_s=5.0)
        assert not status["enabled"], status["guard"]
        guard = status["guard"]
        assert guard["tripped"] is True
        assert guard["reason"].startswith("max_duration_s: chaos was on for "), guard
        assert guard["figures"]["max_duration_s"] == 1
        assert status["counters"]["guard_tripped"] == 1
        with session() as http:
            answer = http.get(server.url + "/", timeout=10)
        assert "X-Mockforge-Chaos" not in answer.headers  # chaos is off
    assert "guard tripped, chaos off: max_duration_s" in server.log()


def test_idle_gunicorn_workers_trip_with_no_request(tmp_path: Path) -> None:
    """Plain ``gunicorn -w 2``, nothing asked of the chaos state until 2.5 s after the
    server is ready: the trip happened at the deadline, before the first request."""
    (tmp_path / "chaos.yaml").write_text(CONFIG)
    (tmp_path / "ready_app.py").write_text(READY_APP)
    env = {"MOCKFORGE_CONFIG": str(tmp_path / "chaos.yaml")}
    with gunicorn_server(
        tmp_path, env=env, workers=2, app="ready_app:app", chdir=tmp_path, ready_path="/ready"
    ) as server:
        time.sleep(2.5)
        asked_at = time.time()
        with session() as http:
            status = http.get(server.url + "/api/chaos/status", timeout=10).json()
        assert not status["enabled"], status["guard"]
        guard = status["guard"]
        assert guard["reason"].startswith("max_duration_s: "), guard
        # Tripped by a watcher that ran from the start, not by this request's worker.
        assert guard["at"] < asked_at - 1.0, (guard["at"], asked_at)
        assert status["counters"]["guard_tripped"] == 1
