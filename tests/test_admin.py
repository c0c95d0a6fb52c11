"""The admin listener: the management API that injected delays and slow clients cannot
occupy (`mockforge serve --admin-port`)."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from servers import mockforge_serve, once_counted, session

pytestmark = pytest.mark.server


def _admin_url(log: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"admin listener at (http://127\.0\.0\.1:\d+)/api/chaos", log())
        if found:
            return found[1]
        time.sleep(0.05)
    raise AssertionError(log())


def _timed(call: object) -> tuple[float, requests.Response]:
    start = time.monotonic()
    response = call()  # type: ignore[operator]
    return time.monotonic() - start, response


def _delays_decided(http: requests.Session, admin: str) -> int:
    return int(http.get(admin + "/stats", timeout=10).json()["counters"].get("latency", 0))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_chaos_can_be_seen_and_stopped_at_once_while_every_thread_is_held(
    tmp_path: Path, workers: str
) -> None:
    args = ("--workers", workers, "--threads", "2", "--admin-port", "0")
    args += ("--chaos", "--chaos-scenario", "slow_backend")  # 2 s on every request
    with mockforge_serve(tmp_path, *args) as server:
        admin = _admin_url(server.log) + "/api/chaos"
        took: list[float] = []  # of the first clients: every thread and a queue behind
        first = 2 * int(workers) + 2

        def hold(index: int = first) -> None:
            seconds = _timed(lambda: session().get(server.url + "/api/test", timeout=30))[0]
            if index < first:
                took.append(seconds)

        held = [threading.Thread(target=hold, args=(index,)) for index in range(first)]
        for thread in held:
            thread.start()
        with session() as http:
            # Every thread is asleep in injected latency now: as many delays decided as
            # there are threads (each holds 2 s; the queue behind them is not decided).
            # Which worker accepts a connection is the kernel's choice: add clients
            # until every thread of every worker holds one (at most 12 in all). A gthread
            # worker accepts connections beyond its threads, so with two workers the kernel
            # may queue them all at one (seen in CI under load): then one worker's threads
            # held is the least this test accepts. Within 1.5 s no 2 s hold has ended, so
            # the count is of requests held at once.
            deadline = time.monotonic() + 1.5
            while (held_now := _delays_decided(http, admin)) < 2 * int(workers):
                if time.monotonic() >= deadline:
                    assert held_now >= 2, f"{held_now} threads held, not even one worker's"
                    break
                if len(held) < 12:
                    held.append(threading.Thread(target=hold))
                    held[-1].start()
                time.sleep(0.05)
            seconds, status = _timed(lambda: http.get(admin + "/status", timeout=10))
            assert status.status_code == 200
            assert status.json()["active_scenario"]["name"] == "slow_backend"
            assert seconds < 0.1, seconds
            seconds, stopped = _timed(lambda: http.post(admin + "/disable", timeout=10))
            assert stopped.status_code == 200
            assert seconds < 0.1, seconds
        for thread in held:
            thread.join(30)
        # Held until the disable, which released them (tests/test_release_server.py times it).
        assert len(took) == first, took
        for _ in range(6):  # every worker applies it on its next request
            # A session each (a new connection: the kernel picks the worker), closed
            # before the server stops: a kept-alive one makes gunicorn wait 2 s for it.
            with session() as fresh:
                seconds, response = _timed(
                    lambda fresh=fresh: fresh.get(server.url + "/api/test", timeout=10)
                )
            assert response.status_code == 200
            assert "X-Mockforge-Chaos" not in response.headers
            assert seconds < 1.0, seconds


def test_slow_clients_do_not_take_the_admin_listener_down(tmp_path: Path) -> None:
    with mockforge_serve(tmp_path, "--threads", "2", "--admin-port", "0") as server:
        admin = _admin_url(server.log)
        host, port = admin.removeprefix("http://").split(":")
        stalled = []
        for target_port in (int(server.url.rsplit(":", 1)[1]), int(port)):
            for _ in range(8):  # partial headers, never finished
                sock = socket.create_connection((host, target_port), timeout=5)
                sock.sendall(b"GET /api/chaos/status HTTP/1.1\r\nHost: x\r\n")
                stalled.append(sock)
        try:
            with session() as http:
                seconds, response = _timed(
                    lambda: http.get(admin + "/api/chaos/status", timeout=10)
                )
            assert response.status_code == 200
            assert seconds < 0.1, seconds
        finally:
            for sock in stalled:
                sock.close()


def test_the_admin_listener_serves_the_workers_metrics_too(tmp_path: Path) -> None:
    args = ("--workers", "2", "--metrics", "--admin-port", "0", "--chaos")
    with mockforge_serve(tmp_path, *args) as server, session() as http:
        admin = _admin_url(server.log)
        for _ in range(5):
            assert http.get(server.url + "/api/test", timeout=10).status_code == 200
        counted = 'route="/api/test",status="200"} 5.0'
        metrics = once_counted(
            lambda: http.get(admin + "/metrics", timeout=10), lambda read: counted in read.text
        )
        assert metrics.status_code == 200
        assert counted in metrics.text, metrics.text
        assert http.get(admin + "/api/chaos/status", timeout=10).status_code == 200
