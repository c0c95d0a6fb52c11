"""The design note's management flows, against a real gunicorn server."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from servers import gunicorn_server, session

from mockforge_wsgi import load_config
from mockforge_wsgi.plan import decide_plan

pytestmark = pytest.mark.server


def test_dynamic_configuration_flow(tmp_path: Path) -> None:
    """The note's "Dynamic Configuration": start without chaos, enable, configure
    latency, start a scenario."""
    # Seeded: request n draws from (seed, n), so which of the 5 are delayed, and by how
    # much, is known before they are sent (docs/configuration.md "Reproducible runs").
    env = {"MOCKFORGE_CHAOS_SEED": "11"}
    with gunicorn_server(tmp_path, worker_class="gthread", env=env) as server, session() as http:
        api = server.url + "/api/chaos"
        assert (
            http.get(server.url + "/api/test", timeout=10).headers.get("X-Mockforge-Chaos") is None
        )
        assert http.post(api + "/enable", timeout=10).json() == {"enabled": True}
        latency = {
            "enabled": True,
            "fixed_delay_ms": 1000,
            "jitter_percent": 20.0,
            "probability": 0.8,
        }
        response = http.put(api + "/config/latency", json=latency, timeout=10)
        assert response.status_code == 200
        delayed = [
            http.get(server.url + "/api/test", timeout=10).headers.get("X-Mockforge-Chaos", "")
            for _ in range(5)
        ]
        config = load_config(environ={}, overrides={"enabled": True, "seed": 11,
                                                    "latency": latency})  # fmt: skip
        expected = [
            decide_plan(config, random.Random(f"11:{n}")).annotation() for n in (1, 2, 3, 4, 5)
        ]
        assert delayed == expected
        # This seed delays some and spares some: both branches are seen.
        assert "" in delayed and any(value.startswith("latency=") for value in delayed)
        for value in delayed:
            if value:
                assert 800 <= int(value.removeprefix("latency=").removesuffix("ms")) <= 1200
        started = http.post(api + "/scenarios/service_instability", timeout=10)
        assert started.json()["active"]["name"] == "service_instability"
        status = http.get(api + "/status", timeout=10).json()
        assert status["active_scenario"]["name"] == "service_instability"
        assert status["effective_config"]["fault_injection"]["http_error_probability"] == 0.2
        assert status["counters"]["latency"] >= 1


def test_testing_framework_integration_flow(tmp_path: Path) -> None:
    """The note's Jest flow: enable before each test, run a scenario, reset after."""
    with gunicorn_server(tmp_path, worker_class="gthread") as server, session() as http:
        api = server.url + "/api/chaos"
        http.post(api + "/enable", timeout=10).raise_for_status()  # beforeEach
        http.post(api + "/scenarios/network_degradation", timeout=10).raise_for_status()
        start = time.perf_counter()
        response = http.get(server.url + "/api/test", timeout=30)
        elapsed = time.perf_counter() - start
        assert response.status_code == 200
        assert "latency=" in response.headers["X-Mockforge-Chaos"]
        assert "bandwidth=100000Bps" in response.headers["X-Mockforge-Chaos"]
        assert elapsed >= 0.4  # 500 ms +/- 20%
        http.post(api + "/reset", timeout=10).raise_for_status()  # afterEach
        status = http.get(api + "/status", timeout=10).json()
        assert (status["enabled"], status["active_scenario"], status["counters"]) == (
            False,
            None,
            {},
        )
        assert (
            http.get(server.url + "/api/test", timeout=10).headers.get("X-Mockforge-Chaos") is None
        )
