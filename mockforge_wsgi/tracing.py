"""OpenTelemetry: each injection becomes an event on the active span.

With the ``otel`` extra installed and a span active (your own instrumentation, or the
one ``mockforge serve --tracing`` sets up), every injection is recorded on it as a
``mockforge.chaos`` event with its type, detail and the request id, so a trace shows
exactly where the injected latency or fault went. Without OpenTelemetry this does
nothing and costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ._observe import ClosingBody
from .injections import LATENCY, Injection

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["TracingMiddleware", "record_injections", "setup_tracing", "traces_url"]

EVENT_NAME = "mockforge.chaos"

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace

    OTEL_AVAILABLE = True
except ImportError:  # the `otel` extra is not installed
    OTEL_AVAILABLE = False


def record_injections(
    injections: Iterable[Injection], request_id: str, delay_ms: float | None = None
) -> None:
    """Add one span event per injection to the current span, if one is recording."""
    if not OTEL_AVAILABLE:
        return
    span = _trace.get_current_span()
    if not span.is_recording():
        return
    for kind, detail in injections:
        attributes: dict[str, Any] = {
            "mockforge.chaos.type": kind,
            "mockforge.chaos.detail": detail,
            "mockforge.request_id": request_id,
        }
        if kind == LATENCY and delay_ms is not None:
            attributes["mockforge.chaos.latency_ms"] = delay_ms
        span.add_event(EVENT_NAME, attributes)


JAEGER_LEGACY_PATH = "/api/traces"  # Jaeger's Thrift-over-HTTP collector (port 14268)


def traces_url(endpoint: str) -> str:
    """Where spans go: the collector's OTLP/HTTP traces path (``<endpoint>/v1/traces``).
    Jaeger's legacy collector URL (``http://HOST:14268/api/traces``, the design note's
    ``--jaeger-endpoint``) takes no OTLP: it means the same Jaeger's OTLP/HTTP endpoint,
    ``http://HOST:4318/v1/traces`` (served since Jaeger 1.35)."""
    url = endpoint.rstrip("/")
    parts = urlsplit(url)
    if parts.path == JAEGER_LEGACY_PATH and parts.hostname:
        port = 4318 if parts.port in (None, 14268) else parts.port
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urlunsplit((parts.scheme, f"{host}:{port}", "/v1/traces", "", ""))
    return url if url.endswith("/v1/traces") else url + "/v1/traces"


def setup_tracing(endpoint: str, service_name: str = "mockforge") -> None:
    """Send spans to an OTLP/HTTP collector at ``endpoint`` (Jaeger accepts OTLP too)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    url = traces_url(endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _trace.set_tracer_provider(provider)


class TracingMiddleware:
    """A server span per request, so the chaos events have a span to land on."""

    def __init__(self, app: WSGIApplication) -> None:
        if not OTEL_AVAILABLE:
            raise RuntimeError(
                "tracing needs the `otel` extra: pip install 'mockforge-wsgi[otel]'"
            )
        self.app = app
        self.tracer = _trace.get_tracer("mockforge_wsgi")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        name = f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO') or '/'}"
        span = self.tracer.start_span(name, kind=_trace.SpanKind.SERVER)
        token = _context.attach(_trace.set_span_in_context(span))

        def traced_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            span.set_attribute("http.response.status_code", int(status[:3]))
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, traced_start_response)
        except BaseException as error:
            span.record_exception(error)
            span.end()
            _context.detach(token)
            raise
        _context.detach(token)
        return ClosingBody(body, span.end)
