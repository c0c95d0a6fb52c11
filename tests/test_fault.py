"""Fault decisions and rendering."""

from __future__ import annotations

import io
import json
import random
from collections import Counter

import pytest
from stats import assert_binomial

from mockforge_wsgi.config import FaultInjectionConfig
from mockforge_wsgi.fault import Fault, decide_fault, drain_input, fault_body

N = 4000


def decisions(config: FaultInjectionConfig, seed: int = 4321) -> list[Fault | None]:
    rng = random.Random(seed)
    return [decide_fault(config, rng) for _ in range(N)]


def test_disabled_never_faults() -> None:
    config = FaultInjectionConfig(enabled=False, http_error_probability=1.0)
    assert set(decisions(config)) == {None}


def test_each_probability_holds_in_the_documented_order() -> None:
    p_http, p_timeout, p_conn, p_partial = 0.2, 0.3, 0.25, 0.4
    config = FaultInjectionConfig(
        enabled=True,
        http_errors=(500,),
        http_error_probability=p_http,
        timeout_probability=p_timeout,
        connection_error_probability=p_conn,
        partial_response_probability=p_partial,
    )
    counts = Counter(fault.kind if fault else "none" for fault in decisions(config))
    # First hit wins: each later fault only sees what the earlier ones let through.
    left = 1.0
    for kind, probability in [
        ("http_error", p_http),
        ("timeout", p_timeout),
        ("connection_reset", p_conn),
        ("partial_response", p_partial),
    ]:
        assert_binomial(counts[kind], N, left * probability)
        left *= 1.0 - probability
    assert_binomial(counts["none"], N, left)


def test_statuses_are_drawn_uniformly_from_the_list() -> None:
    statuses = (500, 502, 503, 504)
    config = FaultInjectionConfig(enabled=True, http_errors=statuses, http_error_probability=1)
    counts = Counter(fault.status for fault in decisions(config) if fault)
    assert set(counts) == set(statuses)
    for status in statuses:
        assert_binomial(counts[status], N, 1 / len(statuses))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(
            FaultInjectionConfig(enabled=True, timeout_probability=1, timeout_ms=250),
            Fault("timeout", status=504, hold_ms=250.0),
            id="timeout",
        ),
        pytest.param(
            FaultInjectionConfig(enabled=True, connection_error_probability=1),
            Fault("connection_reset"),
            id="connection",
        ),
        pytest.param(
            FaultInjectionConfig(
                enabled=True, partial_response_probability=1, partial_response_fraction=0.25
            ),
            Fault("partial_response", fraction=0.25),
            id="partial",
        ),
    ],
)
def test_certain_faults(config: FaultInjectionConfig, expected: Fault) -> None:
    assert set(decisions(config)) == {expected}


def test_labels() -> None:
    assert Fault("http_error", status=503).label == "http_503"
    assert Fault("timeout", status=504, hold_ms=5000).label == "timeout_5000ms"
    assert Fault("connection_reset").label == "connection_reset"


def test_default_body_names_the_fault() -> None:
    body, content_type = fault_body(Fault("http_error", status=502), FaultInjectionConfig())
    assert content_type == "application/json"
    assert json.loads(body) == {
        "error": "injected fault",
        "fault": "http_502",
        "status": 502,
        "injected_by": "mockforge",
    }


@pytest.mark.parametrize(
    ("error_body", "content_type"),
    [
        pytest.param('{"message":"down"}', "application/json", id="json"),
        pytest.param("Service down", "text/plain; charset=utf-8", id="text"),
    ],
)
def test_custom_body(error_body: str, content_type: str) -> None:
    config = FaultInjectionConfig(error_body=error_body)
    assert fault_body(Fault("http_error", status=500), config) == (
        error_body.encode(),
        content_type,
    )


def test_drain_reads_the_declared_body_and_stops_at_the_limit() -> None:
    stream = io.BytesIO(b"a" * 100_000 + b"NEXT")
    assert drain_input({"wsgi.input": stream, "CONTENT_LENGTH": "100000"}) is True
    assert stream.read() == b"NEXT"
    big = io.BytesIO(b"b" * 10)
    assert drain_input({"wsgi.input": big, "CONTENT_LENGTH": "10"}, limit=5) is False
    assert big.read() == b"b" * 10
