"""The examples/ harnesses, run against a real server."""

from __future__ import annotations

import sys
import time
import unittest
from pathlib import Path

import pybreaker
import pytest
import requests
from servers import mockforge_serve

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))

import circuit_breaker
import retry_client
import unittest_harness

pytestmark = pytest.mark.server


def test_retries_survive_service_instability(tmp_path: Path) -> None:
    # Seed 6: the first 13 requests draw 3 HTTP errors and no 5 s timeout (request n
    # draws from (seed, n)), so the run is the same every time, and short.
    args = ("--chaos", "--chaos-scenario", "service_instability", "--seed", "6")
    with mockforge_serve(tmp_path, *args) as server, retry_client.make_session() as http:
        answers = [retry_client.fetch(http, server.url) for _ in range(10)]
        counters = requests.get(server.url + "/api/chaos/status", timeout=10).json()["counters"]
    assert all(answer["message"] == "Hello from mockforge" for answer in answers)
    assert counters["http_error"] == 3  # each one retried away


def test_the_breaker_opens_under_cascading_failure(tmp_path: Path) -> None:
    args = ("--chaos", "--chaos-scenario", "cascading_failure")
    with mockforge_serve(tmp_path, *args) as server, requests.Session() as http:
        for _ in range(3):
            with pytest.raises((requests.RequestException, pybreaker.CircuitBreakerError)):
                circuit_breaker.call(http, server.url)
        assert circuit_breaker.breaker.current_state == "open"
        start = time.perf_counter()
        with pytest.raises(pybreaker.CircuitBreakerError):
            circuit_breaker.call(http, server.url)
        assert time.perf_counter() - start < 0.1  # failing fast, the service untouched


def test_the_unittest_harness() -> None:
    suite = unittest.defaultTestLoader.loadTestsFromModule(unittest_harness)
    result = unittest.TextTestRunner(verbosity=0).run(suite)
    assert result.wasSuccessful(), result.errors + result.failures
    assert result.testsRun == 2
