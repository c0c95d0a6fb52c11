"""OpenTelemetry: injections as span events, and the note's full observability command."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import free_port, mockforge_serve, session
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.tracing import traces_url


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def test_injections_become_events_on_the_active_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "latency": {"enabled": True, "fixed_delay_ms": 2},
            "fault_injection": {
                "enabled": True,
                "http_errors": [503],
                "http_error_probability": 1,
            },
        },
    )
    client = Client(ChaosMiddleware(hello, config=config))
    with provider.get_tracer("test").start_as_current_span("GET /api/test"):
        response = client.get("/api/test")
    (span,) = exporter.get_finished_spans()
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    request_id = response.headers["X-Mockforge-Request-Id"]
    assert events == [
        (
            "mockforge.chaos",
            {
                "mockforge.chaos.type": "latency",
                "mockforge.chaos.detail": "",
                "mockforge.request_id": request_id,
                "mockforge.chaos.latency_ms": 2.0,
            },
        ),
        (
            "mockforge.chaos",
            {
                "mockforge.chaos.type": "http_error",
                "mockforge.chaos.detail": "503",
                "mockforge.request_id": request_id,
            },
        ),
    ]


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces/", "http://collector:4318/v1/traces"),
        # The design note's Jaeger URL is its legacy Thrift collector: Jaeger's OTLP port
        ("http://localhost:14268/api/traces", "http://localhost:4318/v1/traces"),
        ("https://jaeger.internal/api/traces", "https://jaeger.internal:4318/v1/traces"),
        ("http://[::1]:14268/api/traces/", "http://[::1]:4318/v1/traces"),
        ("http://jaeger:9999/api/traces", "http://jaeger:9999/v1/traces"),  # its own port
    ],
)
def test_spans_go_to_the_otlp_traces_path(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP collector stand-in on 127.0.0.1: keeps the span events it receives."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), CollectorHandler)


class CollectorHandler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    for event in span.events:
                        values = {a.key: a.value.string_value for a in event.attributes}
                        self.server.events.append((span.name, event.name, values))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.server
def test_full_observability_stack_command_starts(tmp_path: Path) -> None:
    """The note's "Full Observability Stack" line, with a local collector stand-in."""
    collector = Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    metrics_port = free_port()
    args = (
        "--chaos", "--chaos-scenario", "slow_backend",
        "--metrics", "--metrics-port", str(metrics_port),
        "--tracing", "--jaeger-endpoint", f"http://127.0.0.1:{collector.server_port}/api/traces",
        "--recorder", "--recorder-db", str(tmp_path / "chaos-observability.db"),
    )  # fmt: skip
    try:
        with (
            mockforge_serve(tmp_path, *args, env={"OTEL_BSP_SCHEDULE_DELAY": "100"}) as server,
            session() as http,
        ):
            response = http.get(server.url + "/api/test", timeout=30)
            assert response.status_code == 200
            deadline = time.monotonic() + 10
            while not collector.events and time.monotonic() < deadline:
                time.sleep(0.1)
            found = http.post(server.url + "/api/recorder/search", json={}, timeout=10).json()
            assert found["requests"][0]["fault_type"] == "latency"
            metrics = http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            assert 'mockforge_chaos_injections_total{detail="",type="latency"} 1.0' in metrics
            log = server.log()  # the startup block names every endpoint opened
            collector_url = f"http://127.0.0.1:{collector.server_port}/v1/traces"
            assert f"mockforge: tracing: spans over OTLP/HTTP to {collector_url}" in log
            metrics_urls = f"{server.url}/metrics, http://127.0.0.1:{metrics_port}/metrics"
            assert f"mockforge: metrics {metrics_urls}" in log
            assert f"mockforge: recorder database {tmp_path / 'chaos-observability.db'}" in log
    finally:
        collector.shutdown()
        collector.server_close()
    span_name, event_name, values = collector.events[0]
    assert (span_name, event_name) == ("GET /api/test", "mockforge.chaos")
    assert values["mockforge.chaos.type"] == "latency"
    assert values["mockforge.request_id"] == response.headers["X-Mockforge-Request-Id"]
