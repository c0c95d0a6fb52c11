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
            "X-Mockforge-Fault: '700' is not a fault; allowed: a status 400-599",
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


def seven_hundred_bytes(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = b'{"a": "' + b"x" * 691 + b'"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "700")])
    return [body]


def asked(fault: str, **extra: str) -> Any:
    config = load_config(
        environ={}, overrides={"enabled": True, "header_control": {"enabled": True}}
    )
    middleware = ChaosMiddleware(seven_hundred_bytes, config=config, store=MemoryStore())
    return Client(middleware).get("/", headers={"X-Mockforge-Fault": fault, **extra})


@pytest.mark.parametrize(
    ("fault", "annotation", "check"),
    [
        ("reset", "fault=connection_reset, fallback=cut", lambda r: r.status_code == 502),
        ("partial", "fault=partial_response", lambda r: len(r.get_data()) == 350),
        ("after-app-503", "fault=after_app_http_503", lambda r: r.status_code == 503),
        ("after-app-reset", "fault=after_app_reset, fallback=cut", lambda r: r.status_code == 502),
        ("corrupt-truncate", "fault=corrupted_truncate", lambda r: len(r.get_data()) == 350),
        ("Corrupt-Flip", "fault=corrupted_flip", lambda r: len(r.get_data()) == 700),
        (
            "empty-reply",
            "fault=corrupted_empty_reply, fallback=cut",
            lambda r: r.status_code == 502,
        ),
    ],
)
def test_a_header_asks_for_any_fault(fault: str, annotation: str, check: Any) -> None:
    response = asked(fault)
    assert response.headers["X-Mockforge-Chaos"] == annotation
    assert check(response)


def test_a_header_asks_for_a_throughput_and_it_is_bounded() -> None:
    import time

    started = time.monotonic()
    response = asked(
        "partial", **{"X-Mockforge-Throughput-Bps": "2000", "X-Mockforge-Fault-Percent": "0"}
    )
    assert response.get_data() == seven_hundred_bytes({}, lambda *a: None)[0]
    assert time.monotonic() - started >= 0.3  # 700 bytes at 2,000 B/s
    assert "bandwidth=2000Bps" in response.headers["X-Mockforge-Chaos"]
    too_slow = asked("partial", **{"X-Mockforge-Throughput-Bps": "10"})
    assert too_slow.status_code == 400
    assert "X-Mockforge-Throughput-Bps: '10' is not a number in [1000, " in too_slow.get_data(
        as_text=True
    )
