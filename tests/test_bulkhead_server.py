"""A bulkhead of 2 on one route through a real ``mockforge serve`` with 4 workers and 10
concurrent clients: 2 in flight at most across the workers, the rest refused at once,
and no place left taken after client hang-ups and a reset."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from servers import mockforge_serve, session

pytestmark = pytest.mark.server

HOLD_MS = 600


def test_two_in_flight_across_four_workers_and_no_place_leaks(tmp_path: Path) -> None:
    # Sync workers take one connection each at a time: the 10 clients are spread over
    # all 4 (a gthread worker could take all 10 alone, and a per-worker cap would pass).
    with mockforge_serve(tmp_path, "--workers", "4", "--worker-class", "sync") as server:
        api = server.url + "/api/chaos"
        rule = {
            "match": {"path": "/api/test"},
            "bulkhead": {"enabled": True, "max_concurrent": 2},
            "latency": {"enabled": True, "fixed_delay_ms": HOLD_MS},  # holds its place
        }
        with session() as admin:
            admin.put(api + "/config", json={"enabled": True, "rules": [rule]}, timeout=10)
        barrier = threading.Barrier(10)
        statuses: list[int] = []

        def client() -> None:
            with session() as http:
                barrier.wait(10)
                statuses.append(http.get(server.url + "/api/test", timeout=10).status_code)

        threads = [threading.Thread(target=client) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert sorted(statuses) == [200, 200] + [503] * 8  # not 2 per worker
        assert requests.get(api + "/stats", timeout=10).json()["bulkheads_in_use"] == {"0": 0}

        # Clients that hang up while holding a place, and a reset meanwhile.
        def impatient() -> None:
            with session() as http, pytest.raises(requests.Timeout):
                http.get(server.url + "/api/test", timeout=0.1)

        quitters = [threading.Thread(target=impatient) for _ in range(2)]
        for thread in quitters:
            thread.start()
        for thread in quitters:
            thread.join(10)
        with session() as admin:
            admin.post(api + "/reset", timeout=10).raise_for_status()
            admin.put(api + "/config", json={"enabled": True, "rules": [rule]}, timeout=10)
        deadline = time.monotonic() + HOLD_MS / 1000 + 5
        in_use = None
        while time.monotonic() < deadline:
            in_use = requests.get(api + "/stats", timeout=10).json()["bulkheads_in_use"]
            if in_use == {"0": 0}:
                break
            time.sleep(0.1)
        assert in_use == {"0": 0}  # given back once the held requests ended
        with session() as http:
            assert http.get(server.url + "/api/test", timeout=10).status_code == 200
