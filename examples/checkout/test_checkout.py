"""The checkout example under outbound chaos: its provider refused, slow, or answering
503 with Retry-After, and what the app does about it. Two real providers on 127.0.0.1
(threads of this process); the chaos is in the app's own calls, the URLs unchanged."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest
from checkout import app
from flask.testing import FlaskClient

from mockforge_wsgi import outbound


class Provider(http.server.ThreadingHTTPServer):
    """A payment provider: answers ``GET /quote`` with its name, counting the calls."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0
        super().__init__(("127.0.0.1", 0), _Quote)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Quote(http.server.BaseHTTPRequestHandler):
    server: Provider

    def do_GET(self) -> None:
        self.server.calls += 1
        body = json.dumps({"provider": self.server.name, "amount": 42}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Provider, Provider]]:
    primary, fallback = Provider("primary"), Provider("fallback")
    for server in (primary, fallback):
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield primary, fallback
    for server in (primary, fallback):
        server.shutdown()
        server.server_close()


@pytest.fixture
def providers(running: tuple[Provider, Provider]) -> tuple[Provider, Provider]:
    """The two providers, their counts at zero, and the app pointed at them."""
    primary, fallback = running
    primary.calls = fallback.calls = 0
    app.config.update(
        PAYMENTS_URL=f"http://{primary.address}",
        PAYMENTS_FALLBACK_URL=f"http://{fallback.address}",
        PAYMENTS_TIMEOUT=(2.0, 0.2),  # the read timeout a slow provider meets
    )
    return running


@pytest.fixture
def client(providers: tuple[Provider, Provider]) -> FlaskClient:
    return app.test_client()


def test_without_chaos_the_primary_answers(
    client: FlaskClient, providers: tuple[Provider, Provider]
) -> None:
    answer = client.get("/checkout")
    assert answer.status_code == 200 and answer.json["provider"] == "primary"
    assert [p.calls for p in providers] == [1, 0]


def test_a_refused_primary_fails_over_to_the_fallback(
    client: FlaskClient, providers: tuple[Provider, Provider]
) -> None:
    primary, fallback = providers
    with outbound.chaos({"refused_probability": 1.0}, hosts=[primary.address]):
        answer = client.get("/checkout")
    assert answer.status_code == 200 and answer.json["provider"] == "fallback"
    assert (primary.calls, fallback.calls) == (0, 1)  # refused: never reached


def test_a_primary_that_keeps_answering_503_fails_over_after_its_retries(
    client: FlaskClient, providers: tuple[Provider, Provider]
) -> None:
    primary, fallback = providers
    always_503 = {"http_errors": [503], "http_error_probability": 1.0, "retry_after_s": 0}
    with outbound.chaos({"fault_injection": always_503}, hosts=[primary.address]):
        answer = client.get("/checkout")
    assert answer.json["provider"] == "fallback"
    assert (primary.calls, fallback.calls) == (0, 1)


def test_a_503_with_retry_after_is_retried_after_the_wait_it_asks_for(
    client: FlaskClient, providers: tuple[Provider, Provider]
) -> None:
    primary, fallback = providers
    # the first call 503 with Retry-After: 1, then the provider itself (the script)
    once = {"fault_injection": {"script": [503, "ok"], "retry_after_s": 1}}
    with outbound.chaos(once, hosts=[primary.address]):
        started = time.monotonic()
        answer = client.get("/checkout")
        waited = time.monotonic() - started
    assert answer.json["provider"] == "primary"
    assert (primary.calls, fallback.calls) == (1, 0)  # the retry reached it
    assert waited >= 1.0  # urllib3 slept what Retry-After asked for


@pytest.mark.chaos_outbound(
    {"fault_injection": {"timeout_probability": 1.0}}, hosts=["127.0.0.1:*"]
)
def test_a_slow_provider_times_out_at_the_apps_read_timeout_unretried(
    client: FlaskClient, providers: tuple[Provider, Provider]
) -> None:
    started = time.monotonic()
    answer = client.get("/checkout")
    waited = time.monotonic() - started
    assert answer.status_code == 504 and answer.json["error"] == "primary payments timed out"
    assert [p.calls for p in providers] == [0, 0]  # neither reached, no failover
    assert waited >= 0.2  # held until the app's own read timeout fired
