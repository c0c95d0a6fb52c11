"""The Outcome: a Plan plus what applying it found.

The names of injections live in ``injections.py`` (re-exported here, where they were
first defined; ``plan.py`` imports them from there, so plan and outcome do not import
each other). The middleware puts an :class:`Outcome` in ``environ[OUTCOME_KEY]``; the
app and the observers around the middleware (metrics, recorder) read it there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .injections import (  # re-exported: the names were first defined here
    AFTER_APP,
    BANDWIDTH_THROTTLED,
    BULKHEAD_FULL,
    CIRCUIT_OPEN,
    CONNECTION_LIMITED,
    CONNECTION_RESET,
    CONNECTION_TIMEOUT,
    CORRUPTED,
    HTTP_ERROR,
    INJECTION_TYPES,
    LATENCY,
    PACKET_LOSS,
    PARTIAL_RESPONSE,
    RATE_LIMITED,
    REQUEST_DROPPED,
    TIMEOUT,
    Injection,
)

if TYPE_CHECKING:
    from .plan import Plan

__all__ = [
    "AFTER_APP",
    "BANDWIDTH_THROTTLED",
    "BULKHEAD_FULL",
    "CIRCUIT_OPEN",
    "CONNECTION_LIMITED",
    "CONNECTION_RESET",
    "CONNECTION_TIMEOUT",
    "CORRUPTED",
    "HTTP_ERROR",
    "INJECTION_TYPES",
    "LATENCY",
    "OUTCOME_KEY",
    "PACKET_LOSS",
    "PARTIAL_RESPONSE",
    "RATE_LIMITED",
    "REQUEST_DROPPED",
    "TIMEOUT",
    "Injection",
    "Outcome",
]

OUTCOME_KEY = "mockforge.outcome"


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
