"""The simulated circuit breaker through a real ``mockforge serve`` with 4 workers: one
breaker for every worker, a truthful Retry-After, a probe that closes it, and a urllib3
client that honours Retry-After getting through."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from servers import mockforge_serve, session
from urllib3.util.retry import Retry

from mockforge_wsgi.client import ChaosClient

pytestmark = pytest.mark.server


def test_failures_open_the_breaker_for_every_worker_until_a_probe_closes_it(
    tmp_path: Path,
) -> None:
    env = {"MOCKFORGE_DEBUG_HEADERS": "1"}
    with mockforge_serve(tmp_path, "--workers", "4", env=env) as server:
        api = server.url + "/api/chaos"
        config = {
            "enabled": True,
            "circuit_breaker": {"enabled": True, "failure_threshold": 3, "cooldown_s": 2},
            # Three injected failures, one per request whichever worker answers.
            "fault_injection": {"enabled": True, "script": [500, 500, 500]},
        }
        with session() as admin:
            admin.put(api + "/config", json=config, timeout=10).raise_for_status()
        statuses = []
        for _ in range(3):
            with session() as fresh:  # a new connection each: the workers take turns
                statuses.append(fresh.get(server.url + "/api/test", timeout=10).status_code)
        assert statuses == [500, 500, 500]

        # Which worker accepts a connection is the kernel's choice: ask from 4 threads at
        # once until two workers have answered (at most 48 requests, well within 2 s).
        refused: list[tuple[int, str | None]] = []
        workers: set[str] = set()
        waits: set[str] = set()

        def ask() -> None:
            for _ in range(12):
                if len(workers) >= 2 and len(refused) >= 12:
                    return
                with session() as fresh:
                    answer = fresh.get(server.url + "/api/test", timeout=10)
                refused.append((answer.status_code, answer.headers.get("X-Mockforge-Chaos")))
                workers.add(answer.headers["X-Mockforge-Worker"])
                waits.add(answer.headers.get("Retry-After", ""))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert set(refused) == {(503, "circuit=open")} and len(refused) >= 12
        assert len(workers) >= 2, workers  # not one worker's private breaker
        assert waits <= {"1", "2"}, waits  # the 2 s left, rounded up

        # A client that honours Retry-After waits it out; its retry is the half-open
        # probe, which the app answers: that closes the breaker for everyone.
        started = time.monotonic()
        retry = Retry(total=3, status_forcelist=[503], respect_retry_after_header=True)
        with requests.Session() as polite:
            polite.trust_env = False
            polite.mount("http://", HTTPAdapter(max_retries=retry))
            assert polite.get(server.url + "/api/test", timeout=10).status_code == 200
        assert time.monotonic() - started >= 0.5  # it did wait
        chaos = ChaosClient(server.url)
        [breaker] = chaos.breakers()
        counters = chaos.status()["counters"]
        assert breaker["state"] == "closed"
        assert counters["circuit_open"] >= len(refused) + 1  # and the polite client's first
        for _ in range(8):
            with session() as fresh:
                assert fresh.get(server.url + "/api/test", timeout=10).status_code == 200
        assert chaos.force_breaker("global", "open")["state"] == "open"
        with session() as fresh:
            assert fresh.get(server.url + "/api/test", timeout=10).status_code == 503
