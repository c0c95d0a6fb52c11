"""Prometheus metrics: what was asked for, what was answered, and what was injected.

``MetricsMiddleware`` wraps the chaos middleware (outside it, so injected latency is in
the measured duration) and serves ``/metrics``. Needs the ``metrics`` extra. Under
several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before
the workers start (``mockforge serve --metrics`` does); ``/metrics`` then sums every
worker's values.

Usage::

    app = MetricsMiddleware(ChaosMiddleware(app, config=config))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _env, outbound
from ._observe import observe
from .outcome import OUTCOME_KEY, Outcome
from .tripwire import GUARD_TRIPPED

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .engine import ScenarioEngine

__all__ = ["ChaosMetrics", "MetricsMiddleware"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The app's own calls are labelled by host:port; a process labels this many hosts, then
# "other" (hosts: ["*"] must not grow the series without end).
MAX_OUTBOUND_HOSTS = 32
OTHER_HOSTS = "other"


class ChaosMetrics:
    """The metric families, on their own registry (or the multiprocess files)."""

    def __init__(self, engine: ScenarioEngine | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode values live in files; this registry only defines them.
        self.requests = Counter(
            "mockforge_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mockforge_http_request_duration_seconds",
            "Time from request to the end of the response, injected chaos included",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.injections = Counter(
            "mockforge_chaos_injections",
            "Chaos injected, by type and detail",
            ["type", "detail"],
            registry=self.registry,
        )
        self.fault_overflow = Counter(
            "mockforge_chaos_fault_overflow",
            "Requests served unharmed because max_active_faults was reached",
            registry=self.registry,
        )
        self.injected_latency = Histogram(
            "mockforge_chaos_injected_latency_seconds",
            "Latency injected per delayed request",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The app's own calls the chaos.outbound section covers (outbound.py).
        self.outbound_calls = Counter(
            "mockforge_outbound_calls",
            "The app's own HTTP calls the outbound section covered, by host and outcome "
            "(the status, or the exception's class name)",
            ["host", "method", "outcome"],
            registry=self.registry,
        )
        self.outbound_duration = Histogram(
            "mockforge_outbound_call_duration_seconds",
            "Time from an outbound call's decision to its answer's head, chaos included",
            ["host"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.outbound_injections = Counter(
            "mockforge_outbound_injections",
            "Chaos injected into the app's own calls, by host, type and detail",
            ["host", "type", "detail"],
            registry=self.registry,
        )
        self._hosts: set[str] = set()

    def observe(self, environ: WSGIEnvironment, route: str, status: str, seconds: float) -> None:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        self.requests.labels(method, route, status).inc()
        self.duration.labels(method, route).observe(seconds)
        outcome = environ.get(OUTCOME_KEY)
        if isinstance(outcome, Outcome):
            for kind, detail in outcome.injections():
                self.injections.labels(kind, detail).inc()
            delay_ms = outcome.plan.delay_ms
            if delay_ms is not None:
                self.injected_latency.observe(delay_ms / 1000.0)
            elif outcome.plan.over_fault_cap:
                self.fault_overflow.inc()

    def observe_call(self, call: outbound.CallRecord) -> None:
        """One outbound call (outbound.watch's callback)."""
        host = self._host_label(call.host)
        outcome = str(call.status) if call.status is not None else str(call.error)
        self.outbound_calls.labels(host, call.method, outcome).inc()
        self.outbound_duration.labels(host).observe(call.duration_ms / 1000.0)
        for kind, detail in call.injections:
            self.outbound_injections.labels(host, kind, detail).inc()

    def _host_label(self, host: str) -> str:
        """``host`` while this process has labelled fewer than MAX_OUTBOUND_HOSTS, then
        "other" for every new one."""
        hosts = self._hosts
        if host in hosts:
            return host
        if len(hosts) >= MAX_OUTBOUND_HOSTS:
            return OTHER_HOSTS
        hosts.add(host)
        return host

    def exposition(self) -> tuple[bytes, str]:
        """The text format: every worker's values in multiprocess mode, plus the gauges."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        registry = self.registry
        if os.environ.get(_env.PROMETHEUS_MULTIPROC_DIR):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
        if self.engine is not None:
            status = self.engine.status()
            enabled = GaugeMetricFamily(
                "mockforge_chaos_enabled", "1 when chaos is on", value=int(status["enabled"])
            )
            active = GaugeMetricFamily(
                "mockforge_chaos_active_scenario", "1 for the active scenario", labels=["name"]
            )
            if status["active_scenario"]:
                active.add_metric([status["active_scenario"]["name"]], 1)
            # Our own failures, from the store's counters (every worker's): apart from
            # chaos, and the store's apart from ours.
            counters = status["counters"]
            store_errors = CounterMetricFamily(
                "mockforge_store_errors",
                "Store calls that failed (served without the store, or at a worker's share)",
                value=counters.get("store_errors", 0),
            )
            internal_errors = CounterMetricFamily(
                "mockforge_internal_errors",
                "Our own failures, each served unharmed",
                value=counters.get("internal_errors", 0),
            )
            # A trip happens in one process's watcher thread: counted in the store.
            tripped = CounterMetricFamily(
                "mockforge_chaos_guard_tripped",
                "Times the guard (chaos.guard) turned chaos off",
                value=counters.get(GUARD_TRIPPED, 0),
            )
            gauges = CollectorRegistry()
            gauges.register(_Fixed([enabled, active, tripped, store_errors, internal_errors]))
            text += generate_latest(gauges)
        return text, CONTENT_TYPE_LATEST


class _Fixed:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


class MetricsMiddleware:
    """Counts and times every response, and serves ``path`` (default ``/metrics``)."""

    def __init__(
        self,
        app: WSGIApplication,
        metrics: ChaosMetrics | None = None,
        *,
        path: str = "/metrics",
        route_for: Callable[[WSGIEnvironment], str] | None = None,
        engine: ScenarioEngine | None = None,
    ) -> None:
        self.app = app
        engine = engine if engine is not None else getattr(app, "engine", None)
        self.metrics = metrics if metrics is not None else ChaosMetrics(engine)
        self.path = path
        self.route_for = route_for or getattr(app, "route_for", None) or _path_of
        outbound.watch(self.metrics.observe_call)  # the app's own calls, counted too

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.path:
            text, content_type = self.metrics.exposition()
            start_response(
                "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(text)))]
            )
            return [text]
        return observe(self.app, environ, start_response, self._done)

    def _done(self, environ: WSGIEnvironment, status: str, seconds: float) -> None:
        self.metrics.observe(environ, self.route_for(environ), status, seconds)


def _path_of(environ: WSGIEnvironment) -> str:
    return str(environ.get("PATH_INFO") or "/")
