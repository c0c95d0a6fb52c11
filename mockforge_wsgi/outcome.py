"""The names of what we inject, and the Outcome: a Plan plus what applying it found.

One name per injection, everywhere a user reads one: the store's counters (``/status``,
``/stats``), the ``mockforge_chaos_injections_total`` metric, the recorder, trace events
and log lines. The middleware puts an :class:`Outcome` in ``environ[OUTCOME_KEY]``; the
app and the observers around the middleware (metrics, recorder) read it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["INJECTION_TYPES", "OUTCOME_KEY", "Injection", "Outcome"]

OUTCOME_KEY = "mockforge.outcome"

LATENCY = "latency"
HTTP_ERROR = "http_error"
TIMEOUT = "timeout"
CONNECTION_RESET = "connection_reset"
PARTIAL_RESPONSE = "partial_response"
AFTER_APP = "after_app"
CORRUPTED = "corrupted"
RATE_LIMITED = "rate_limited"
REQUEST_DROPPED = "request_dropped"
BANDWIDTH_THROTTLED = "bandwidth_throttled"
PACKET_LOSS = "packet_loss"
CONNECTION_LIMITED = "connection_limited"
CONNECTION_TIMEOUT = "connection_timeout"
CIRCUIT_OPEN = "circuit_open"
BULKHEAD_FULL = "bulkhead_full"

# Each type, with what its detail holds (docs/observability.md lists the same).
INJECTION_TYPES: dict[str, str] = {
    LATENCY: "",
    HTTP_ERROR: "the status code",
    TIMEOUT: "",
    CONNECTION_RESET: "",
    PARTIAL_RESPONSE: "",
    AFTER_APP: "what followed the app: reset, http_error, stall",
    CORRUPTED: "how: flip, random, invalid_json, truncate, wrong_content_type, empty_reply",
    RATE_LIMITED: "the level: global, per_ip or per_endpoint",
    REQUEST_DROPPED: "",
    BANDWIDTH_THROTTLED: "bytes per second",
    PACKET_LOSS: "the percent",
    CONNECTION_LIMITED: "",
    CONNECTION_TIMEOUT: "",
    CIRCUIT_OPEN: "the breaker: global, or the rule's index",
    BULKHEAD_FULL: "the bulkhead: global, or the rule's index",
}


class Injection(NamedTuple):
    """One thing injected into a request: its type (a key of INJECTION_TYPES) and detail."""

    type: str
    detail: str = ""


class Outcome(NamedTuple):
    """What happened to one request: the Plan decided for it, and what applying it found
    that no plan could say in advance (``found``: a body cut when the connection deadline
    passed mid-body), appended while the response runs; read once it is closed.

    Built per request with chaos as ``Outcome(plan, [])`` (a tuple: cheaper than a class
    instance on that path)."""

    plan: Plan
    found: list[Injection]

    def injections(self) -> list[Injection]:
        """Every injection this request got, planned or found at apply."""
        planned = self.plan.injections()
        return [*planned, *self.found] if self.found else planned

    def annotation(self) -> str:
        """The ``X-Mockforge-Chaos`` value, with what applying found added."""
        parts = [self.plan.annotation()]
        parts.extend(f"cut={injection.type}" for injection in self.found)
        return ", ".join(part for part in parts if part)
