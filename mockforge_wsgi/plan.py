"""The Plan: everything decided for one request before anything is applied.

The same frozen Plan feeds the middleware (what to do), the response annotation
header, and later metrics and the event recorder, so what is reported is exactly
what was done.
"""

from __future__ import annotations

import random

import attrs

from .config import ChaosConfig
from .fault import Fault, decide_fault
from .latency import decide_delay

__all__ = ["ANNOTATION_HEADER", "NO_CHAOS", "PLAN_ENVIRON_KEY", "Plan", "decide_plan"]

ANNOTATION_HEADER = "X-Mockforge-Chaos"
PLAN_ENVIRON_KEY = "mockforge.plan"


@attrs.frozen
class Plan:
    """What chaos one request gets. Immutable, so it can be shared and reported."""

    delay_ms: float | None = None
    fault: Fault | None = None

    def annotation(self) -> str:
        """The ``X-Mockforge-Chaos`` value, e.g. ``latency=512ms, fault=http_503``."""
        parts = []
        if self.delay_ms is not None:
            parts.append(f"latency={self.delay_ms:.0f}ms")
        if self.fault is not None:
            parts.append(f"fault={self.fault.label}")
        return ", ".join(parts)


NO_CHAOS = Plan()


def decide_plan(config: ChaosConfig, rng: random.Random) -> Plan:
    """Decide one request's chaos. Pure: no sleeping, no I/O, draws only from ``rng``."""
    delay_ms = decide_delay(config.latency, rng)
    fault = decide_fault(config.fault_injection, rng)
    if delay_ms is None and fault is None:
        return NO_CHAOS
    return Plan(delay_ms=delay_ms, fault=fault)
