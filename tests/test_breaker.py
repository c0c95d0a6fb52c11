"""The simulated circuit breaker: its state machine over store counters (a given clock),
and the middleware answering for it."""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.breaker import (
    CLOSED,
    OPEN,
    PROBE,
    Circuit,
    admit,
    breaker_status,
    force,
    record,
)
from mockforge_wsgi.config import CircuitBreakerConfig
from mockforge_wsgi.state import MemoryStore, StoreError

T0 = 1_800_000_000.0  # Unix seconds


def answers(
    store: MemoryStore, config: CircuitBreakerConfig, at: float, *failed: bool
) -> list[Any]:
    """Admit and answer one request per entry of ``failed``; the transitions seen."""
    changes = []
    for bad in failed:
        circuit = admit(store, "global", config, at)
        assert circuit.state != OPEN
        changes.append(record(store, circuit, config, at, bad))
    return changes


def test_failures_in_a_row_open_it_and_a_success_starts_the_count_again() -> None:
    store, config = MemoryStore(), CircuitBreakerConfig(enabled=True, failure_threshold=3)
    assert answers(store, config, T0, True, True, False, True, True) == [None] * 5
    assert answers(store, config, T0, True) == ["opened"]
    circuit = admit(store, "global", config, T0 + 1)
    assert circuit == Circuit("global", OPEN, config.cooldown_s - 1, 503)


def test_retry_after_is_the_time_left_rounded_up() -> None:
    store, config = MemoryStore(), CircuitBreakerConfig(enabled=True, failure_threshold=1)
    answers(store, config, T0, True)
    assert admit(store, "global", config, T0 + 0.5).retry_after == "30"  # 29.5 s left
    assert admit(store, "global", config, T0 + 29.2).retry_after == "1"  # 0.8 s left


def test_half_open_lets_the_probes_through_and_a_success_closes_it() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(
        enabled=True, failure_threshold=1, cooldown_s=10, half_open_probes=2
    )
    answers(store, config, T0, True)
    later = T0 + 10
    first, second, third = (admit(store, "global", config, later) for _ in range(3))
    assert (first.state, second.state) == (PROBE, PROBE)
    assert (third.state, third.retry_after) == (OPEN, "1")  # probes out: come back soon
    assert record(store, first, config, later, False) == "closed"
    assert admit(store, "global", config, later).state == CLOSED
    assert breaker_status(store.counters(), "global", config, later)["state"] == CLOSED


def test_a_failed_probe_opens_it_again_for_a_whole_cooldown() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(enabled=True, failure_threshold=1, cooldown_s=10)
    answers(store, config, T0, True)
    probe = admit(store, "global", config, T0 + 12)
    assert record(store, probe, config, T0 + 12, True) == "reopened"
    assert admit(store, "global", config, T0 + 21).retry_after_s == pytest.approx(1.0)
    assert admit(store, "global", config, T0 + 22).state == PROBE


def test_a_failure_ratio_over_a_window() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(
        enabled=True, failure_threshold=100, failure_ratio=0.5, min_requests=4, window_s=10
    )
    assert answers(store, config, T0, True, False, True) == [None] * 3  # too few yet
    window = breaker_status(store.counters(), "global", config, T0)["window"]
    assert window == {"requests": 3, "failed": 2}
    assert answers(store, config, T0 + 1, False) == ["opened"]  # 2 of 4 failed
    force(store, "global", "reset", T0 + 2)
    # A new window after window_s: the old answers do not count.
    answers(store, config, T0 + 2, True, True, True)
    assert answers(store, config, T0 + 13, False, False, False, True) == [None] * 4


def test_forcing_it_open_closed_and_reset() -> None:
    store, config = MemoryStore(), CircuitBreakerConfig(enabled=True, failure_threshold=2)
    force(store, "global", "open", T0)
    status = breaker_status(store.counters(), "global", config, T0 + 5)
    assert (status["state"], status["half_open_in_s"]) == (OPEN, 25.0)
    force(store, "global", "close", T0 + 5)
    assert admit(store, "global", config, T0 + 5).state == CLOSED
    answers(store, config, T0 + 5, True)
    assert breaker_status(store.counters(), "global", config, T0 + 5)["failures_in_a_row"] == 1
    force(store, "global", "reset", T0 + 5)
    assert breaker_status(store.counters(), "global", config, T0 + 5)["failures_in_a_row"] == 0
    with pytest.raises(ValueError, match="expected open, close or reset"):
        force(store, "global", "explode", T0)


# -- through the middleware -------------------------------------------------------------


def failing_app(failures: list[int]) -> Any:
    """Answers 500 while ``failures`` has entries (taking one each time), then 200."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status = "500 Internal Server Error" if failures and failures.pop() else "200 OK"
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app


def wrapped(app: Any, **chaos: Any) -> tuple[Client, ChaosMiddleware]:
    config = load_config(environ={}, overrides={"enabled": True, **chaos})
    middleware = ChaosMiddleware(app, config=config)
    return Client(middleware), middleware


def test_the_apps_own_failures_open_it_and_it_answers_at_once() -> None:
    calls: list[int] = [1, 1, 1]
    client, middleware = wrapped(
        failing_app(calls), circuit_breaker={"enabled": True, "failure_threshold": 3}
    )
    assert [client.get("/x").status_code for _ in range(3)] == [500, 500, 500]
    refused = client.get("/x")
    assert refused.status_code == 503
    assert refused.headers["X-Mockforge-Chaos"] == "circuit=open"
    assert refused.headers["Retry-After"] == "30"
    assert refused.get_json() == {"error": "circuit open", "injected_by": "mockforge"}
    assert middleware.store.counters()["circuit_open"] == 1
    status = client.get("/api/chaos/status").get_json()
    [shown] = status["breakers"]
    assert (shown["owner"], shown["state"], shown["match"]) == ("global", "open", None)


def test_injected_failures_count_and_a_rule_has_its_own_breaker() -> None:
    rules = [
        {
            "match": {"path": "/pay"},
            "circuit_breaker": {"enabled": True, "failure_threshold": 2, "status": 429},
            "fault_injection": {"enabled": True, "http_errors": [502],
                                "http_error_probability": 1.0},
        }
    ]  # fmt: skip
    client, _ = wrapped(failing_app([]), rules=rules)
    assert [client.get("/pay").status_code for _ in range(3)] == [502, 502, 429]
    assert client.get("/other").status_code == 200  # no breaker there
    breakers = client.get("/api/chaos/breakers").get_json()["breakers"]
    assert [(b["owner"], b["state"], b["match"]) for b in breakers] == [
        ("0", "open", {"path": "/pay"})
    ]


def test_the_api_forces_a_breaker_and_refuses_what_is_not_one() -> None:
    client, _ = wrapped(failing_app([]), circuit_breaker={"enabled": True})
    opened = client.post("/api/chaos/breakers/global", json={"action": "open"})
    assert opened.status_code == 200 and opened.get_json()["state"] == "open"
    assert client.get("/x").status_code == 503
    closed = client.post("/api/chaos/breakers/global", json={"action": "close"})
    assert closed.get_json()["state"] == "closed"
    assert client.get("/x").status_code == 200
    unknown = client.post("/api/chaos/breakers/7", json={"action": "open"})
    assert unknown.status_code == 404
    assert unknown.get_json()["problems"] == ["owner: '7'; in force: global"]
    bad = client.post("/api/chaos/breakers/global", json={"action": "melt", "x": 1})
    assert bad.status_code == 400
    assert bad.get_json()["problems"] == [
        "x: unknown field; allowed: action",
        "action: 'melt' is not one of open, close, reset",
    ]


def test_its_own_answers_do_not_count_and_a_good_probe_closes_it() -> None:
    client, middleware = wrapped(
        failing_app([1]),
        circuit_breaker={"enabled": True, "failure_threshold": 1, "cooldown_s": 0.1},
    )
    assert client.get("/x").status_code == 500
    assert [client.get("/x").status_code for _ in range(5)] == [503] * 5
    time.sleep(0.15)
    # Read whole (an answer the client never read is no answer for the breaker).
    assert client.get("/x", buffered=True).status_code == 200  # the probe, answered
    assert client.get("/x", buffered=True).status_code == 200  # closed again
    assert middleware.store.counters()["circuit_open"] == 5


class BrokenStore(MemoryStore):
    def incr(self, counter: str, amount: int = 1) -> int:
        if counter.startswith("breaker:"):
            raise StoreError("down")
        return super().incr(counter, amount)


def test_an_unreachable_store_serves_the_app_unharmed() -> None:
    config = load_config(
        environ={}, overrides={"enabled": True, "circuit_breaker": {"enabled": True}}
    )
    middleware = ChaosMiddleware(failing_app([]), config=config, store=BrokenStore())
    assert Client(middleware).get("/x").status_code == 200  # local: its own counts
    assert middleware.internal_errors == 0
    assert middleware.store_errors >= 1
    config = attrs.evolve(config, on_store_error="open")
    middleware = ChaosMiddleware(failing_app([]), config=config, store=BrokenStore())
    assert Client(middleware).get("/x").status_code == 200
    assert (middleware.internal_errors, middleware.store_errors) == (0, 1)


def test_at_most_16_rules_have_breakers_of_their_own() -> None:
    from mockforge_wsgi.config import ConfigError, config_from_dict

    rules = [{"match": {"path": f"/{n}"}, "circuit_breaker": {"enabled": True}} for n in range(17)]
    with pytest.raises(ConfigError, match=r"17 rules have a circuit breaker; at most 16"):
        config_from_dict({"rules": rules})
    config_from_dict({"rules": rules[:16]})


def test_every_breaker_and_script_fits_the_embedded_store(tmp_path: Any) -> None:
    """16 rules with a breaker and a script each, plus the global ones: every counter
    name they use fits the embedded store's table (names are never freed)."""
    from mockforge_wsgi.breaker import counter
    from mockforge_wsgi.outcome import INJECTION_TYPES
    from mockforge_wsgi.patterns import script_counter
    from mockforge_wsgi.state.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path)
    owners = ["global", *map(str, range(16))]
    names = [counter(owner, field) for owner in owners for field in (
        "opened_ms", "failures", "probes", "window_ms", "requests", "failed")]  # fmt: skip
    names += [script_counter(None), *(script_counter(n) for n in range(16))]
    names += [*INJECTION_TYPES, "internal_errors", "upstream_errors", "pattern_requests"]
    for name in names:
        store.incr(name)
    assert set(names) <= set(store.counters())


def test_half_open_with_its_probes_out_refuses_with_its_own_status() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(enabled=True, failure_threshold=1, cooldown_s=5, status=429)
    answers(store, config, T0, True)
    assert admit(store, "global", config, T0 + 5).state == PROBE
    assert admit(store, "global", config, T0 + 5) == Circuit("global", OPEN, 1.0, 429)


def test_without_a_ratio_many_answers_never_open_it() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(enabled=True, failure_threshold=3, min_requests=2)
    assert answers(store, config, T0, *[False] * 20, True, True) == [None] * 22


def test_a_failure_counted_after_it_opened_does_not_start_the_cooldown_again() -> None:
    """Another worker's request, let through while closed, fails after the breaker
    opened: the cooldown still runs from the opening."""
    store, config = MemoryStore(), CircuitBreakerConfig(enabled=True, failure_threshold=1)
    late = admit(store, "global", config, T0)  # closed when it was let through
    answers(store, config, T0, True)  # opens it
    assert record(store, late, config, T0 + 5, True) is None
    assert admit(store, "global", config, T0 + 5).retry_after_s == pytest.approx(25.0)


def test_a_new_window_forgets_the_old_ones_answers() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(
        enabled=True, failure_threshold=100, failure_ratio=0.5, min_requests=4, window_s=10
    )
    answers(store, config, T0, *[False] * 10)  # a calm window
    # The next: four failures of four (not four of fourteen).
    assert answers(store, config, T0 + 11, True, True, True, True)[-1] == "opened"


def test_the_status_of_each_state() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(enabled=True, failure_threshold=2, cooldown_s=10)
    answers(store, config, T0, True)
    assert breaker_status(store.counters(), "global", config, T0) == {
        "owner": "global",
        "state": CLOSED,
        "failures_in_a_row": 1,
        "failure_threshold": 2,
        "opened_at": None,
        "half_open_in_s": None,
        "probes_let_through": 0,
        "window": {"requests": 0, "failed": 0},
    }
    answers(store, config, T0, True)
    opened = breaker_status(store.counters(), "global", config, T0 + 4)
    assert (opened["state"], opened["opened_at"], opened["half_open_in_s"]) == (OPEN, T0, 6.0)
    assert opened["failures_in_a_row"] == 0  # the count starts again once it opened
    admit(store, "global", config, T0 + 10)
    half = breaker_status(store.counters(), "global", config, T0 + 10)
    assert (half["state"], half["probes_let_through"], half["half_open_in_s"]) == (
        "half_open",
        1,
        None,
    )
    force(store, "global", "close", T0 + 10)
    closed = breaker_status(store.counters(), "global", config, T0 + 10)
    assert (closed["state"], closed["failures_in_a_row"], closed["probes_let_through"]) == (
        CLOSED,
        0,
        0,
    )
    assert store.counters().get("breaker:global:probes", 0) == 0


# -- what counts as a failure: a 5xx, or no whole answer --------------------------------


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        pytest.param("000", True, id="no-answer"),
        pytest.param("500", True, id="500"),
        pytest.param("599", True, id="599"),
        pytest.param("499", False, id="499"),
        pytest.param("429", False, id="429"),
        pytest.param("200", False, id="200"),
    ],
)
def test_a_failure_is_a_5xx_or_no_answer(status: str, failure: bool) -> None:
    from mockforge_wsgi.breaker import failed

    assert failed(status) is failure
    store, config = MemoryStore(), CircuitBreakerConfig(enabled=True, failure_threshold=1)
    circuit = admit(store, "global", config, T0)
    assert record(store, circuit, config, T0, failed(status)) == ("opened" if failure else None)


def heard(app: Any, environ: dict[str, Any] | None = None, read: str = "all") -> str:
    """What ``observe(..., whole=True)`` reports of one answer, the body read as a
    server would (``all``), broken off after the first chunk (``first``), or never
    iterated (``none``)."""
    from mockforge_wsgi._observe import observe

    seen: list[str] = []
    env = {"REQUEST_METHOD": "GET", **(environ or {})}
    body = observe(
        app, env, lambda *a: lambda data: None, lambda e, s, t: seen.append(s), whole=True
    )
    try:
        if read == "all":
            for _ in body:
                pass
        elif read == "first":
            next(iter(body))
    except ConnectionResetError:
        pass
    finally:
        body.close()  # type: ignore[attr-defined]
    assert len(seen) == 1
    return seen[0]


def answering(status: str, length: int | None, chunks: list[bytes], fail: bool = False) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        headers = [] if length is None else [("Content-Length", str(length))]
        start_response(status, headers)
        yield from chunks
        if fail:
            raise ConnectionResetError("cut mid-body")

    return app


@pytest.mark.parametrize(
    ("app", "environ", "read", "status"),
    [
        pytest.param(answering("200 OK", 4, [b"ab", b"cd"]), {}, "all", "200", id="whole"),
        pytest.param(answering("200 OK", None, [b"ab"]), {}, "all", "200", id="no-length"),
        pytest.param(answering("503 X", 2, [b"ab"]), {}, "all", "503", id="whole-503"),
        pytest.param(answering("200 OK", 4, [b"ab"]), {}, "all", "000", id="short-of-length"),
        pytest.param(
            answering("200 OK", None, [b"ab"], fail=True), {}, "all", "000", id="cut-mid-body"
        ),
        pytest.param(answering("200 OK", 4, [b"ab", b"cd"]), {}, "first", "000", id="broken-off"),
        pytest.param(answering("200 OK", 4, [b"abcd"]), {}, "none", "000", id="never-read"),
        pytest.param(
            answering("200 OK", 4, []), {"REQUEST_METHOD": "HEAD"}, "all", "200", id="head"
        ),
        pytest.param(answering("304 Not Modified", 4, []), {}, "all", "304", id="304"),
    ],
)
def test_an_answer_the_client_did_not_get_whole_is_no_answer(
    app: Any, environ: dict[str, Any], read: str, status: str
) -> None:
    assert heard(app, environ, read) == status


def test_what_the_app_wrote_counts_toward_its_length() -> None:
    def writing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "4")])("abcd")
        return []

    assert heard(writing) == "200"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"connection_error_probability": 1.0}, id="reset"),
        pytest.param({"partial_response_probability": 1.0}, id="cut-body"),
        pytest.param({"after_app_probability": 1.0, "after_app_fault": "reset"}, id="after-app"),
        pytest.param(
            {"after_app_probability": 1.0, "after_app_fault": "stall", "timeout_ms": 1},
            id="stall",
        ),
        pytest.param({"corruption_probability": 1.0, "corruption": "empty_reply"}, id="empty"),
    ],
)
def test_without_a_socket_each_unanswered_kind_opens_it(fault: dict[str, Any]) -> None:
    """werkzeug's test client exposes no socket: each fault answers its closest (a 502
    whose promised body never comes, a body short of its length); each still opens it."""
    client, _ = wrapped(
        failing_app([]),
        circuit_breaker={"enabled": True, "failure_threshold": 1},
        fault_injection={"enabled": True, **fault},
    )
    first = client.get("/x", buffered=True)
    assert first.headers.get("X-Mockforge-Chaos", "").startswith("fault=")
    refused = client.get("/x", buffered=True)
    assert (refused.status_code, refused.headers["X-Mockforge-Chaos"]) == (503, "circuit=open")


def test_a_head_answered_with_its_length_and_no_body_is_a_success() -> None:
    from werkzeug.wrappers import Response

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return Response("hello")(environ, start_response)  # HEAD: length 5, no bytes

    client, _ = wrapped(
        app,
        circuit_breaker={"enabled": True, "failure_threshold": 1},
        latency={"enabled": True, "fixed_delay_ms": 0, "probability": 1.0},
    )
    for _ in range(3):
        assert client.head("/x", buffered=True).status_code == 200
    assert client.get("/x", buffered=True).status_code == 200


# -- found by mutation testing (dev/mutate_one.py breaker tests/test_breaker.py) --------


def test_a_window_ends_exactly_window_s_after_it_began() -> None:
    """At the bound and just before it: 9.995 s after the first answer the window still
    counts it; at 10 s a new one starts (however many answers came in between)."""
    config = CircuitBreakerConfig(
        enabled=True, failure_threshold=100, failure_ratio=0.5, min_requests=4, window_s=10
    )
    store = MemoryStore()
    answers(store, config, T0, True, True, True)
    answers(store, config, T0 + 9.995, False)  # 3 of 4 failed: still this window
    assert breaker_status(store.counters(), "global", config, T0)["window"] == {
        "requests": 4,
        "failed": 3,
    }
    store = MemoryStore()
    answers(store, config, T0, True, True, True)
    answers(store, config, T0 + 10, False)  # a new window: only this answer
    assert breaker_status(store.counters(), "global", config, T0)["window"] == {
        "requests": 1,
        "failed": 0,
    }


def test_closing_it_by_hand_forgets_the_failures_in_a_row() -> None:
    store, config = MemoryStore(), CircuitBreakerConfig(enabled=True, failure_threshold=3)
    answers(store, config, T0, True, True)
    force(store, "global", "close", T0)
    assert breaker_status(store.counters(), "global", config, T0)["failures_in_a_row"] == 0
    assert answers(store, config, T0, True, True) == [None, None]  # two, not four


def test_a_success_touches_only_the_breakers_own_counters() -> None:
    store, config = MemoryStore(), CircuitBreakerConfig(enabled=True, failure_threshold=3)
    answers(store, config, T0, True, False, False)
    assert set(store.counters()) <= {f"breaker:global:{field}" for field in (
        "opened_ms", "failures", "probes", "window_ms", "requests", "failed")}  # fmt: skip


def test_the_time_left_open_is_shown_to_the_millisecond_until_it_half_opens() -> None:
    store = MemoryStore()
    config = CircuitBreakerConfig(enabled=True, failure_threshold=1, cooldown_s=10)
    answers(store, config, T0, True)
    shown = breaker_status(store.counters(), "global", config, T0 + 3.87654)
    assert (shown["state"], shown["half_open_in_s"]) == (OPEN, 6.123)
    last = breaker_status(store.counters(), "global", config, T0 + 9.5)
    assert (last["state"], last["half_open_in_s"]) == (OPEN, 0.5)
