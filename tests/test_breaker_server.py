"""The simulated circuit breaker through a real ``mockforge serve`` with 4 workers: one
breaker for every worker, a truthful Retry-After, a probe that closes it, and a urllib3
client that honours Retry-After getting through."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from servers import (
    Server,
    mockforge_serve,
    once_counted,
    one_request_per_sync_worker,
    session,
    werkzeug_server,
)
from urllib3.util.retry import Retry

from mockforge_wsgi.client import ChaosClient

pytestmark = pytest.mark.server


def test_failures_open_the_breaker_for_every_worker_until_a_probe_closes_it(
    tmp_path: Path,
) -> None:
    env = {"MOCKFORGE_DEBUG_HEADERS": "1"}
    with mockforge_serve(tmp_path, "--workers", "4", "--worker-class", "sync", env=env) as server:
        api = server.url + "/api/chaos"
        one_request_per_sync_worker(server.url, 4)  # all four are up: none boots later
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

        # Every worker refuses: one request to each of the four, three times over (each
        # to a worker of its own for sure, not by the kernel's choice: servers.py). No
        # wait for the third failure's count: its worker takes a held request only once
        # it has closed that answer, and none is decided before all four are taken.
        refused: list[tuple[int, str | None]] = []
        workers: set[str] = set()
        waits: set[str] = set()
        for _ in range(3):
            for status, headers, _ in one_request_per_sync_worker(server.url, 4, "/api/test"):
                refused.append((status, headers.get("X-Mockforge-Chaos")))
                workers.add(headers["X-Mockforge-Worker"])
                waits.add(headers.get("Retry-After", ""))
        assert set(refused) == {(503, "circuit=open")} and len(refused) == 12
        assert len(workers) == 4, workers  # not one worker's private breaker
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
        # The probe's answer is counted when the worker closes it, after the client has
        # read it: a moment later (a clean-clone CI run read half_open here once).
        [breaker] = once_counted(chaos.breakers, lambda read: read[0]["state"] == "closed")
        counters = chaos.status()["counters"]
        assert breaker["state"] == "closed"
        assert counters["circuit_open"] >= len(refused) + 1  # and the polite client's first
        for _ in range(8):
            with session() as fresh:
                assert fresh.get(server.url + "/api/test", timeout=10).status_code == 200
        assert chaos.force_breaker("global", "open")["state"] == "open"
        with session() as fresh:
            assert fresh.get(server.url + "/api/test", timeout=10).status_code == 503


# -- each kind of "no answer" opens it, through a real server ----------------------------

_NO_ANSWER_KINDS = [
    pytest.param({"connection_error_probability": 1.0}, id="reset"),
    pytest.param({"partial_response_probability": 1.0}, id="cut-body"),
    pytest.param({"after_app_probability": 1.0, "after_app_fault": "reset"}, id="after-app"),
    pytest.param(
        {"after_app_probability": 1.0, "after_app_fault": "stall", "timeout_ms": 50}, id="stall"
    ),
]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``mockforge serve`` (gunicorn sync, 1 worker) for every kind below."""
    with mockforge_serve(tmp_path_factory.mktemp("breaker")) as server:
        yield server


def _open_after(server: Server, chaos: dict[str, object], ask: Callable[[], None]) -> None:
    """With failure_threshold 1: ``ask`` once, then the breaker must be open."""
    api = server.url + "/api/chaos"
    config = {
        "enabled": True,
        "circuit_breaker": {"enabled": True, "failure_threshold": 1, "cooldown_s": 60},
        **chaos,
    }
    with session() as admin:
        admin.put(api + "/config", json=config, timeout=10).raise_for_status()
        admin.post(api + "/breakers/global", json={"action": "reset"}, timeout=10)
        ask()
        # The breaker counts when the server closes the answer: wait for that.
        deadline = time.monotonic() + 10
        while admin.get(api + "/breakers", timeout=10).json()["breakers"][0]["state"] != "open":
            assert time.monotonic() < deadline, "the breaker never opened"
            time.sleep(0.02)
    with session() as fresh:
        refused = fresh.get(server.url + "/api/test", timeout=10)
    assert (refused.status_code, refused.headers["X-Mockforge-Chaos"]) == (503, "circuit=open")


@pytest.mark.parametrize("fault", _NO_ANSWER_KINDS)
def test_each_kind_of_no_answer_opens_it(one_worker: Server, fault: dict[str, object]) -> None:
    def ask() -> None:
        broken = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
        with session() as client, pytest.raises(broken):
            client.get(one_worker.url + "/api/test", timeout=10).content  # noqa: B018

    _open_after(one_worker, {"fault_injection": {"enabled": True, **fault}}, ask)


def test_an_after_app_http_error_opens_it(one_worker: Server) -> None:
    def ask() -> None:
        with session() as client:
            assert client.get(one_worker.url + "/api/test", timeout=10).status_code == 503

    fault = {"after_app_probability": 1.0, "after_app_fault": "http_error", "http_errors": [503]}
    _open_after(one_worker, {"fault_injection": {"enabled": True, **fault}}, ask)


def test_a_client_that_went_away_mid_body_opens_it(one_worker: Server) -> None:
    """No fault at all: the body is paced (20 kB/s, 200 kB) and the client hangs up after
    its headers; the server's next write fails, the answer never completed."""

    def ask() -> None:
        with session() as client:
            answer = client.get(one_worker.url + "/api/bytes/200000", timeout=10, stream=True)
            assert answer.status_code == 200
            next(answer.iter_content(1024))
            answer.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # hang up now
            answer.close()

    shaping = {"traffic_shaping": {"enabled": True, "bandwidth_limit_bps": 20000}}
    _open_after(one_worker, shaping, ask)


def test_a_whole_answer_leaves_it_closed(one_worker: Server) -> None:
    """The control: the same paced body read to its end is a success."""
    api = one_worker.url + "/api/chaos"
    # A ratio that never trips (min_requests) makes the breaker count every answer in
    # its window: the test waits until both were counted, as successes.
    breaker_config = {"failure_ratio": 1.0, "min_requests": 1000, "window_s": 60}
    config = {
        "enabled": True,
        "circuit_breaker": {"enabled": True, "failure_threshold": 1, **breaker_config},
        "traffic_shaping": {"enabled": True, "bandwidth_limit_bps": 200000},
    }
    with session() as admin:
        admin.put(api + "/config", json=config, timeout=10).raise_for_status()
        admin.post(api + "/breakers/global", json={"action": "reset"}, timeout=10)
        for _ in range(2):
            with session() as client:
                answer = client.get(one_worker.url + "/api/bytes/20000", timeout=10)
                assert (answer.status_code, len(answer.content)) == (200, 20000)
        [breaker] = once_counted(
            lambda: admin.get(api + "/breakers", timeout=10).json()["breakers"],
            lambda read: read[0]["window"]["requests"] >= 2,
        )
    assert (breaker["state"], breaker["failures_in_a_row"]) == ("closed", 0)
    assert breaker["window"] == {"requests": 2, "failed": 0}, breaker


@pytest.mark.parametrize("fault", _NO_ANSWER_KINDS[:2])
def test_werkzeugs_server_opens_it_on_a_reset_and_a_cut(fault: dict[str, object]) -> None:
    """The same on werkzeug's development server (its socket is werkzeug.socket)."""
    from mockforge_wsgi import ChaosMiddleware, load_config
    from mockforge_wsgi.mock_api import MockApp

    middleware = ChaosMiddleware(MockApp(), config=load_config(environ={}))
    with werkzeug_server(middleware) as server:

        def ask() -> None:
            broken = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
            with session() as client, pytest.raises(broken):
                client.get(server.url + "/api/test", timeout=10).content  # noqa: B018

        _open_after(server, {"fault_injection": {"enabled": True, **fault}}, ask)
