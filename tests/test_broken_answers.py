"""Faults after the app ran (commit, then fail), corrupted answers, and partial
responses cut after N bytes: in process (the real-server side is in test_proxy.py)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from test_middleware import RecordingApp, chaos
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware
from mockforge_wsgi.config import FaultInjectionConfig
from mockforge_wsgi.fault import Fault, decide_fault

DOCUMENT = json.dumps({"order": 42, "items": ["a" * 300, "b" * 300]}).encode()


class SideEffects:
    """A JSON app that counts the requests it carried out."""

    def __init__(self) -> None:
        self.done = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.done += 1
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(DOCUMENT)))],
        )
        return [DOCUMENT[:200], DOCUMENT[200:]]


def test_the_new_faults_are_rolled_after_the_others_and_only_when_on() -> None:
    rng = random.Random(5)
    before = rng.getstate()
    after = FaultInjectionConfig(
        enabled=True, after_app_probability=1.0, after_app_fault="stall", timeout_ms=20
    )
    assert decide_fault(after, rng) == Fault("after_app", hold_ms=20.0, mode="stall")
    assert rng.getstate() == before  # certain, and nothing else on: no draw
    broken = FaultInjectionConfig(enabled=True, corruption_probability=1.0, corruption="random")
    fault = decide_fault(broken, rng)
    assert fault is not None and (fault.kind, fault.mode) == ("corrupted", "random")
    first = FaultInjectionConfig(
        enabled=True, http_error_probability=1.0, after_app_probability=1.0
    )
    assert decide_fault(first, random.Random(1)).kind == "http_error"  # type: ignore[union-attr]


def test_commit_then_fail_with_an_error_runs_the_app_once() -> None:
    app = SideEffects()
    config = chaos(
        fault_injection={
            "after_app_probability": 1.0,
            "after_app_fault": "http_error",
            "http_errors": [503],
        }
    )
    middleware = ChaosMiddleware(app, config=config)
    response = Client(middleware).post("/orders", data=b"{}")
    assert app.done == 1  # the order was placed...
    assert response.status_code == 503  # ...and the client was told it failed
    assert response.headers["X-Mockforge-Chaos"] == "fault=after_app_http_503"
    assert response.get_json()["fault"] == "after_app_http_503"
    assert middleware.store.counters()["after_app"] == 1


@pytest.mark.parametrize("mode", ["reset", "stall"])
def test_commit_then_fail_without_a_socket_falls_back_to_a_cut(mode: str) -> None:
    app = SideEffects()
    config = chaos(
        fault_injection={"after_app_probability": 1, "after_app_fault": mode, "timeout_ms": 1}
    )
    response = Client(ChaosMiddleware(app, config=config)).post("/orders", data=b"{}")
    assert app.done == 1
    assert response.status_code == 502  # what a WSGI app without the socket can do
    assert response.headers["X-Mockforge-Chaos"] == f"fault=after_app_{mode}, fallback=cut"


def corrupted(mode: str) -> tuple[Any, SideEffects]:
    app = SideEffects()
    config = chaos(fault_injection={"corruption_probability": 1, "corruption": mode})
    response = Client(ChaosMiddleware(app, config=config)).get("/order")
    return response, app


@pytest.mark.parametrize("mode", ["flip", "random"])
def test_bytes_broken_in_place_keep_the_length(mode: str) -> None:
    response, app = corrupted(mode)
    body = response.get_data()
    assert app.done == 1
    assert response.headers["Content-Length"] == str(len(DOCUMENT))
    assert len(body) == len(DOCUMENT) and body != DOCUMENT
    assert response.headers["X-Mockforge-Chaos"] == f"fault=corrupted_{mode}"
    if mode == "flip":  # a bit in about one byte in a hundred
        changed = sum(a != b for a, b in zip(body, DOCUMENT, strict=True))
        assert 1 <= changed <= len(DOCUMENT) // 100 + 2


def test_invalid_json_keeps_the_length_and_no_longer_parses() -> None:
    response, _ = corrupted("invalid_json")
    body = response.get_data()
    assert len(body) == len(DOCUMENT) and body[1:] == DOCUMENT[1:]
    with pytest.raises(ValueError):
        json.loads(body)


def test_truncate_sends_a_shorter_body_under_a_true_length() -> None:
    response, _ = corrupted("truncate")
    half = len(DOCUMENT) // 2
    assert response.headers["Content-Length"] == str(half)
    assert response.get_data() == DOCUMENT[:half]


def test_a_wrong_content_type() -> None:
    response, _ = corrupted("wrong_content_type")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.get_data() == DOCUMENT


def test_an_empty_reply_runs_the_app_then_answers_nothing() -> None:
    response, app = corrupted("empty_reply")
    assert app.done == 1
    assert response.status_code == 502  # the no-socket fallback; a server closes instead
    assert response.headers["X-Mockforge-Chaos"] == "fault=corrupted_empty_reply, fallback=cut"


def test_the_same_seed_breaks_the_same_bytes() -> None:
    seeded = chaos(fault_injection={"corruption_probability": 1, "corruption": "flip"})
    bodies = []
    for _ in range(2):
        middleware = ChaosMiddleware(SideEffects(), config=seeded, rng=random.Random(9))
        bodies.append(Client(middleware).get("/order").get_data())
    assert bodies[0] == bodies[1] != DOCUMENT


def test_a_partial_response_cut_after_n_bytes() -> None:
    app = RecordingApp([b"abcdefgh", b"ijklmnop"])
    config = chaos(
        fault_injection={"partial_response_probability": 1, "partial_response_limit_bytes": 5}
    )
    response = Client(ChaosMiddleware(app, config=config)).get("/", buffered=True)
    assert response.headers["Content-Length"] == "16"  # the full length is promised
    assert response.data == b"abcde"
    assert app.bodies[0].closed


@pytest.mark.parametrize(
    ("status", "retry_after_s", "expected"),
    [(503, 1, "1"), (429, 7, "7"), (500, 7, None), (503, 0, None)],
)
def test_retry_after_on_injected_503_and_429(
    status: int, retry_after_s: int, expected: str | None
) -> None:
    config = chaos(
        fault_injection={
            "http_error_probability": 1,
            "http_errors": [status],
            "retry_after_s": retry_after_s,
        }
    )
    response = Client(ChaosMiddleware(SideEffects(), config=config)).get("/")
    assert response.status_code == status
    assert response.headers.get("Retry-After") == expected


def test_error_headers_on_every_injected_error_answer() -> None:
    headers = {"X-Fault": "injected", "Cache-Control": "no-store"}
    for faults in (
        {"http_error_probability": 1},
        {"timeout_probability": 1, "timeout_ms": 1},
        {"after_app_probability": 1, "after_app_fault": "http_error"},
    ):
        config = chaos(fault_injection={**faults, "error_headers": headers})
        response = Client(ChaosMiddleware(SideEffects(), config=config)).get("/")
        assert response.status_code >= 500, faults
        assert response.headers["X-Fault"] == "injected", faults
        assert response.headers["Cache-Control"] == "no-store", faults
    assert config.to_dict()["fault_injection"]["error_headers"] == headers  # read back as sent


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"X Bad": "1"}, "header name 'X Bad' is not a token"),
        ({"X-Ok": "one\r\nX-Evil: two"}, "header X-Ok: value is not one line"),
        ({f"X-{n}": "1" for n in range(21)}, "has 21 headers; at most 20"),
        ("not json", "is not a JSON mapping of header name to value"),
    ],
)
def test_bad_error_headers_name_the_setting_and_the_problem(value: Any, problem: str) -> None:
    from mockforge_wsgi.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as error:
        config_from_dict({"fault_injection": {"error_headers": value}})
    assert "chaos.fault_injection.error_headers: " in str(error.value)
    assert problem in str(error.value)


def test_error_headers_from_the_environment() -> None:
    from mockforge_wsgi import load_config

    environ = {"MOCKFORGE_CHAOS_FAULT_INJECTION_ERROR_HEADERS": '{"X-Fault": "env"}'}
    assert load_config(environ=environ).fault_injection.error_headers == (("X-Fault", "env"),)


def test_a_body_per_status() -> None:
    bodies = {503: '{"error": "busy", "retry": true}', "500": "<h1>oops</h1>", 502: "42"}
    config = chaos(
        fault_injection={
            "http_error_probability": 1,
            "http_errors": [503],
            "error_bodies": bodies,
            "error_body": "fallback",
        }
    )
    response = Client(ChaosMiddleware(SideEffects(), config=config)).get("/")
    assert response.get_json() == {"error": "busy", "retry": True}
    assert response.headers["Content-Type"] == "application/json"
    other = chaos(
        fault_injection={"http_error_probability": 1, "http_errors": [500], "error_bodies": bodies}
    )
    answer = Client(ChaosMiddleware(SideEffects(), config=other)).get("/")
    assert answer.get_data() == b"<h1>oops</h1>"
    assert answer.headers["Content-Type"].startswith("text/plain")
    unlisted = chaos(
        fault_injection={
            "http_error_probability": 1,
            "http_errors": [504],
            "error_bodies": bodies,
            "error_body": "fallback",
        }
    )
    assert (
        Client(ChaosMiddleware(SideEffects(), config=unlisted)).get("/").get_data() == b"fallback"
    )
    written = config.to_dict()["fault_injection"]["error_bodies"]
    assert written == {
        "500": "<h1>oops</h1>",
        "502": "42",
        "503": '{"error": "busy", "retry": true}',
    }
    from mockforge_wsgi.config import config_from_dict

    assert config_from_dict(config.to_dict()) == config  # read back as written


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"200": "ok"}, "status '200' is not in [400, 599]"),
        ({"5\u00b2": "x"}, "status '5\u00b2' is not in [400, 599]"),
        ({503: 7}, "the body of 503 is not text (JSON text is sent as JSON)"),
        ({503: {"error": "busy"}}, "the body of 503 is not text"),
        ({503: "x" * 20_000}, "the body of 503 is over 16384 characters"),
    ],
)
def test_bad_error_bodies(value: Any, problem: str) -> None:
    from mockforge_wsgi.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as error:
        config_from_dict({"fault_injection": {"error_bodies": value}})
    assert "chaos.fault_injection.error_bodies: " in str(error.value)
    assert problem in str(error.value)
