"""Chaos asked for by request headers, and per-request generators for reproducible runs."""

from __future__ import annotations

import random
from typing import Any

import pytest
from stats import assert_binomial
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.state import MemoryStore


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def headed(admin_token: str | None = None, **control: Any) -> Client:
    config = load_config(
        environ={},
        overrides={"enabled": True, "header_control": {"enabled": True, **control}},
    )
    return Client(ChaosMiddleware(hello, config=config, admin_token=admin_token))


def test_headers_ask_for_faults_and_delays() -> None:
    client = headed(max_delay_ms=5)
    assert client.get("/", headers={"X-Mockforge-Fault": "503"}).status_code == 503
    slow = client.get("/", headers={"X-Mockforge-Delay-Ms": "60000"})
    assert slow.headers["X-Mockforge-Chaos"] == "latency=5ms"  # capped
    assert client.get("/").status_code == 200  # no headers, no chaos


def test_fault_percent_with_a_seed_is_reproducible() -> None:
    client = headed()
    headers = {"X-Mockforge-Fault": "500", "X-Mockforge-Fault-Percent": "50"}
    seeded = [
        client.get("/", headers={**headers, "X-Mockforge-Seed": str(n)}).status_code
        for n in range(200)
    ]
    again = [
        client.get("/", headers={**headers, "X-Mockforge-Seed": str(n)}).status_code
        for n in range(200)
    ]
    assert seeded == again
    assert_binomial(seeded.count(500), 200, 0.5)  # within 4 sd: 72..128


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        pytest.param(
            {"X-Mockforge-Fault": "700"},
            "X-Mockforge-Fault: '700' is not a number in [400, 599]",
            id="status",
        ),
        pytest.param(
            {"X-Mockforge-Delay-Ms": "soon"},
            "X-Mockforge-Delay-Ms: 'soon' is not a number",
            id="delay",
        ),
        pytest.param(
            {"X-Mockforge-Fault": "503", "X-Mockforge-Fault-Percent": "150"},
            "X-Mockforge-Fault-Percent: '150'",
            id="percent",
        ),
    ],
)
def test_bad_headers_get_a_400_naming_them(headers: dict[str, str], problem: str) -> None:
    response = headed().get("/", headers=headers)
    assert response.status_code == 400
    assert problem in response.get_json()["problems"][0]


def test_off_by_default_and_token_guarded() -> None:
    config = load_config(environ={}, overrides={"enabled": True})
    plain = Client(ChaosMiddleware(hello, config=config))
    assert plain.get("/", headers={"X-Mockforge-Fault": "503"}).status_code == 200
    guarded = headed(admin_token="t0k")
    assert guarded.get("/", headers={"X-Mockforge-Fault": "503"}).status_code == 200  # ignored
    with_token = {"X-Mockforge-Fault": "503", "X-Mockforge-Token": "t0k"}
    assert guarded.get("/", headers=with_token).status_code == 503


def test_a_seed_gives_the_same_decisions_whichever_worker_serves() -> None:
    overrides = {
        "enabled": True,
        "seed": 7,
        "fault_injection": {
            "enabled": True,
            "http_errors": [500, 502, 503],
            "http_error_probability": 0.5,
        },
    }

    def run(workers: int) -> list[int]:
        store = MemoryStore()  # shared, as the embedded store is between processes
        middlewares = [
            ChaosMiddleware(
                hello, config=load_config(environ={}, overrides=overrides), store=store
            )
            for _ in range(workers)
        ]
        clients = [Client(middleware) for middleware in middlewares]
        picks = random.Random(1)
        return [picks.choice(clients).get("/").status_code for _ in range(60)]

    one_worker = run(1)
    assert run(3) == one_worker  # requests spread over three "workers": same decisions
    assert len(set(one_worker)) > 2
