"""One name per injection (counters, metrics, recorder, docs), and what applying finds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_metrics import sample
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.metrics import MetricsMiddleware
from mockforge_wsgi.outcome import INJECTION_TYPES, OUTCOME_KEY, Outcome
from mockforge_wsgi.recorder import Recorder, RecorderMiddleware
from mockforge_wsgi.state import MemoryStore

DOCS = Path(__file__).resolve().parent.parent / "docs"


def body_app(size: int) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
        return [b"x" * size]

    return app


# One config per injection type (each request gets that injection and no other fault).
CASES: dict[str, dict[str, Any]] = {
    "latency": {"latency": {"enabled": True, "fixed_delay_ms": 1}},
    "http_error": {"fault_injection": {"enabled": True, "http_error_probability": 1}},
    "timeout": {"fault_injection": {"enabled": True, "timeout_probability": 1, "timeout_ms": 1}},
    "connection_reset": {"fault_injection": {"enabled": True, "connection_error_probability": 1}},
    "partial_response": {"fault_injection": {"enabled": True, "partial_response_probability": 1}},
    "stream_cut": {
        "fault_injection": {"enabled": True, "cut_probability": 1, "cut_after_chunks": 1}
    },
    "upload_reset": {"fault_injection": {"enabled": True, "upload_reset_probability": 1}},
    "body_dribbled": {"traffic_shaping": {"enabled": True, "body_duration_ms": 1}},
    "rate_limited": {"rate_limit": {"enabled": True, "requests_per_second": 1, "burst_size": 1}},
    "request_dropped": {"traffic_shaping": {"enabled": True, "request_drop_probability": 1}},
    "bandwidth_throttled": {
        "traffic_shaping": {"enabled": True, "bandwidth_limit_bps": 1_000_000}
    },
    "packet_loss": {"traffic_shaping": {"enabled": True, "packet_loss_percent": 0.001}},
    "connection_timeout": {
        "latency": {"enabled": True, "fixed_delay_ms": 50},
        "traffic_shaping": {"enabled": True, "connection_timeout_ms": 10},
    },
    "circuit_open": {  # the first answer (an injected 500) opens it for the second
        "circuit_breaker": {"enabled": True, "failure_threshold": 1},
        "fault_injection": {"enabled": True, "http_errors": [500], "http_error_probability": 1},
    },
}


def test_every_name_is_declared_once_and_documented() -> None:
    table = (DOCS / "observability.md").read_text()
    section = table.split("### Injection names", 1)[1].split("\n\n", 2)[2]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert documented == list(INJECTION_TYPES)
    api = (DOCS / "api.md").read_text()
    assert all(f"`{name}`" in api for name in INJECTION_TYPES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_counters_metrics_and_recorder_use_the_same_name(name: str, tmp_path: Path) -> None:
    config = load_config(environ={}, overrides={"enabled": True, **CASES[name]})
    store = MemoryStore()
    chaos = ChaosMiddleware(body_app(100), config=config, store=store)
    recorder = Recorder(tmp_path / "r.db")
    client = Client(RecorderMiddleware(MetricsMiddleware(chaos), recorder))
    for _ in range(2):  # a rate limit of one refuses the second
        client.get("/x", buffered=True)
    counters = {k: v for k, v in store.counters().items() if k in INJECTION_TYPES}
    text = client.get("/metrics").get_data(as_text=True)
    metric_types = set(re.findall(r'mockforge_chaos_injections_total\{.*?type="(\w+)"', text))
    recorder.flush()
    recorded = {row["fault_type"] for row in recorder.search({}) if row["fault_type"]}
    assert name in counters
    assert set(counters) == metric_types
    assert recorded <= set(counters), recorded
    if name != "latency":
        assert name in recorded


def test_a_body_cut_at_the_deadline_mid_body_is_reported_when_it_happens() -> None:
    """Pacing outlasts the connection timeout: the cut is counted, shown to metrics and
    in the outcome (it was not planned: nothing else said so)."""
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "traffic_shaping": {
                "enabled": True,
                "bandwidth_limit_bps": 10_000,  # 20,000 bytes: 2 s
                "connection_timeout_ms": 100,
            },
        },
    )
    store = MemoryStore()
    seen: list[Outcome] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ[OUTCOME_KEY])
        return body_app(20_000)(environ, start_response)

    client = Client(MetricsMiddleware(ChaosMiddleware(app, config=config, store=store)))
    response = client.get("/x")
    assert 0 < len(response.get_data()) < 20_000  # cut short
    response.close()
    assert store.counters().get("connection_timeout") == 1
    assert ("connection_timeout", "") in seen[0].injections()
    assert seen[0].annotation().endswith("cut=connection_timeout")
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "mockforge_chaos_injections_total", type="connection_timeout") == 1


def test_a_paced_body_that_completes_reports_no_cut() -> None:
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "traffic_shaping": {
                "enabled": True,
                "bandwidth_limit_bps": 1_000_000,
                "connection_timeout_ms": 5_000,
            },
        },
    )
    store = MemoryStore()
    client = Client(ChaosMiddleware(body_app(2_000), config=config, store=store))
    response = client.get("/x")
    assert len(response.get_data()) == 2_000
    response.close()
    assert "connection_timeout" not in store.counters()
    assert store.counters().get("bandwidth_throttled") == 1
