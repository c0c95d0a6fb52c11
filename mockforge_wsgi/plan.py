"""The Plan: everything decided for one request before anything is applied.

The same frozen Plan feeds the middleware (what to do), the response annotation
header, the counters, and (in an Outcome) metrics, tracing and the recorder, so what is
reported is exactly what was done.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from ._headers import ANNOTATION_HEADER
from .active_faults import REACHED, ActiveFault
from .breaker import OPEN, Circuit
from .bulkhead import Bulkhead
from .config import ChaosConfig
from .fault import Fault, decide_fault
from .injections import (
    AFTER_APP,
    BANDWIDTH_THROTTLED,
    BODY_DRIBBLED,
    BULKHEAD_FULL,
    CIRCUIT_OPEN,
    CONNECTION_LIMITED,
    CONNECTION_TIMEOUT,
    HTTP_ERROR,
    LATENCY,
    PACKET_LOSS,
    PARTIAL_RESPONSE,
    RATE_LIMITED,
    REQUEST_DROPPED,
    STREAM_CUT,
    TIMEOUT,
    UPLOAD_RESET,
    Injection,
)
from .latency import decide_delay
from .rate_limit import RateLimitVerdict
from .traffic_shaping import Shaping, decide_shaping

__all__ = ["ANNOTATION_HEADER", "NO_CHAOS", "Plan", "decide_plan"]


class Plan(NamedTuple):
    """What chaos one request gets. Immutable, so it can be shared and reported.

    Decided before anything is applied, admission included: the rate limiter's verdict,
    and ``slot`` when a connection limit applies (True: a slot is held for this request,
    False: none was free, None: no limit, or the store could not be asked).

    A NamedTuple, not an attrs class: one is built per request with chaos, and a frozen
    attrs instance costs four ``object.__setattr__`` calls (~0.4 us more)."""

    delay_ms: float | None = None
    fault: Fault | None = None
    rate_limit: RateLimitVerdict | None = None
    shaping: Shaping | None = None
    slot: bool | None = None
    circuit: Circuit | None = None  # a simulated circuit breaker's say (breaker.py)
    bulkhead: Bulkhead | None = None  # a place in a route's bulkhead, held or not
    # Plugins' decisions (plugins.py): ((plugin, decision), ...), applied around the app.
    plugged: tuple[tuple[Any, Any], ...] | None = None
    # A place among the active faults (max_active_faults), held, or the pool was full.
    active: ActiveFault | None = None

    @property
    def holds(self) -> bool:
        """Applying it holds the request (a thread of a sync server): latency, a
        timeout's hold or an after-app stall, pacing or loss stalls (max_active_faults
        counts these). Asked only of plans that get as far as the app's turn."""
        if self.delay_ms:
            return True
        fault = self.fault
        stalls = fault is not None and (fault.kind == AFTER_APP and fault.mode == "stall")
        if fault is not None and fault.hold_ms and (fault.kind == TIMEOUT or stalls):
            return True
        if fault is not None and fault.kind == STREAM_CUT and fault.after_ms:
            return True  # a body that ends sooner is held until its cut
        shaping = self.shaping
        return (
            shaping is not None
            and not shaping.drop
            and bool(
                shaping.bandwidth_bps
                or shaping.upload_bps
                or shaping.loss_percent
                or shaping.body_duration_ms
            )
        )

    @property
    def over_fault_cap(self) -> bool:
        """max_active_faults was reached: served unharmed, nothing injected."""
        return self.active is not None and not self.active.held

    @property
    def circuit_open(self) -> bool:
        """The simulated breaker is open: it answers at once, nothing else is applied."""
        return self.circuit is not None and self.circuit.state == OPEN

    @property
    def answered_at_once(self) -> bool:
        """The breaker is open or the bulkhead full: answered at once, nothing else."""
        return (self.circuit is not None or self.bulkhead is not None) and (
            self.circuit_open or self.bulkhead_full
        )

    @property
    def bulkhead_full(self) -> bool:
        """No place in the bulkhead came in time: answered at once, nothing else applied."""
        return self.bulkhead is not None and not self.bulkhead.held

    @property
    def refused(self) -> bool:
        """Refused by the rate limiter: nothing else is applied."""
        return self.rate_limit is not None and not self.rate_limit.allowed

    @property
    def admitted_only(self) -> bool:
        """The limiter admitted the request and nothing else is planned: only its
        RateLimit-* headers are added (the path most requests under a limit take)."""
        return (
            self.delay_ms is None
            and self.fault is None
            and self.shaping is None
            and self.rate_limit is not None
            and self.rate_limit.outcome.allowed
            and self.circuit is None
            and self.bulkhead is None
            and self.plugged is None
            and self.active is None
        )

    @property
    def needs_slot(self) -> bool:
        """A connection limit applies and nothing answers before the app would run."""
        shaping = self.shaping
        return (
            shaping is not None
            and bool(shaping.max_connections)
            and not shaping.drop
            and self.slot is None
            and not self.refused
        )

    def annotation(self) -> str:
        """The ``X-Mockforge-Chaos`` value, e.g. ``latency=512ms, fault=http_503``."""
        if self.answered_at_once:  # rare: one check on the path of every other plan
            return "circuit=open" if self.circuit_open else "bulkhead=full"
        if self.refused:
            assert self.rate_limit is not None
            return f"rate_limit={self.rate_limit.level}"
        if self.slot is False:
            return "connection_limit=full"
        if self.over_fault_cap:
            return REACHED
        parts = []
        if self.shaping is not None:
            parts.extend(self.shaping.annotation_parts())
        if self.delay_ms is not None:
            parts.append(f"latency={self.delay_ms:.0f}ms")
        if self.fault is not None:
            parts.append(f"fault={self.fault.label}")
        if self.cut_by_timeout:
            parts.append("cut=connection_timeout")
        if self.plugged:
            parts.extend(f"{plugin.name}={decision}" for plugin, decision in self.plugged)
        return ", ".join(parts)

    @property
    def cut_by_timeout(self) -> bool:
        """The latency alone outlasts the connection timeout: the request will be cut."""
        timeout = self.shaping.connection_timeout_ms if self.shaping is not None else 0.0
        return bool(timeout and self.delay_ms is not None and self.delay_ms >= timeout)

    def injections(self) -> list[Injection]:
        """What this plan injects, named as counters, metrics and logs name it."""
        if self.answered_at_once:
            if self.circuit is not None and self.circuit_open:
                return [_new(Injection, (CIRCUIT_OPEN, self.circuit.owner))]
            assert self.bulkhead is not None
            return [_new(Injection, (BULKHEAD_FULL, self.bulkhead.owner))]
        if self.refused:
            assert self.rate_limit is not None
            return [_new(Injection, (RATE_LIMITED, self.rate_limit.level))]
        if self.slot is False:
            return [_new(Injection, (CONNECTION_LIMITED, ""))]
        found = []
        shaping = self.shaping
        if shaping is not None:
            if shaping.drop:
                return [_new(Injection, (REQUEST_DROPPED, ""))]
            if shaping.bandwidth_bps:
                found.append(_new(Injection, (BANDWIDTH_THROTTLED, str(shaping.bandwidth_bps))))
            if shaping.loss_percent:
                found.append(_new(Injection, (PACKET_LOSS, f"{shaping.loss_percent:g}%")))
            if shaping.body_duration_ms:
                found.append(_new(Injection, (BODY_DRIBBLED, shaping.dribble)))
        if self.delay_ms is not None:
            found.append(_new(Injection, (LATENCY, "")))
        fault = self.fault
        if fault is not None:
            # A fault's kind is its injection type (the names of injections.py).
            detail = str(fault.status) if fault.kind == HTTP_ERROR else fault.mode
            if fault.kind == UPLOAD_RESET:
                detail = str(fault.limit_bytes)
            found.append(_new(Injection, (fault.kind, detail)))
        if self.cut_by_timeout:
            found.append(_new(Injection, (CONNECTION_TIMEOUT, "")))
        if self.plugged:
            found.extend(_new(Injection, (p.injection, str(d))) for p, d in self.plugged)
        return found

    def response_headers(
        self, expose_rate_limit: bool = True, style: str = "both"
    ) -> list[tuple[str, str]]:
        """Headers added to the response: the annotation, and RateLimit-* when exposed
        (always on a refusal), of the families ``style`` (rate_limit.headers) names."""
        rate_limit = self.rate_limit
        if self.admitted_only:
            return rate_limit.headers(style) if expose_rate_limit else []  # type: ignore[union-attr]
        headers = []
        annotation = self.annotation()
        if annotation:
            headers.append((ANNOTATION_HEADER, annotation))
        if rate_limit is not None and (expose_rate_limit or not rate_limit.allowed):
            headers.extend(rate_limit.headers(style))
        return headers


NO_CHAOS = Plan()
# Faults that cut a body: a HEAD answer has none (they are not planned for it).
_BODY_CUTS = frozenset({PARTIAL_RESPONSE, STREAM_CUT})


def decide_plan(
    config: ChaosConfig,
    rng: random.Random,
    rate_limit: RateLimitVerdict | None = None,
    pattern_number: int | None = None,
    *,
    head: bool = False,
    since_change_s: float | None = None,
    script_step: int | None = None,
) -> Plan:
    """Decide one request's chaos from the config and the rate limiter's verdict.

    Pure: no sleeping, no I/O, draws only from ``rng``. A refused request gets
    nothing else; a dropped one gets no latency or fault. A ``head`` request has no
    body to cut short: a partial response drawn for it is not planned (nor reported).
    """
    if rate_limit is not None and not rate_limit.allowed:
        return _limited(rate_limit)
    if not (
        config.traffic_shaping.enabled or config.latency.enabled or config.fault_injection.enabled
    ):  # only a limit: the request is admitted or not, and nothing else is drawn
        return NO_CHAOS if rate_limit is None else _limited(rate_limit)
    shaping = decide_shaping(config.traffic_shaping, rng)
    if shaping is not None and shaping.drop:
        return Plan(rate_limit=rate_limit, shaping=shaping)
    delay_ms = decide_delay(config.latency, rng)
    fault = decide_fault(config.fault_injection, rng, pattern_number, since_change_s, script_step)
    if head and fault is not None and fault.kind in _BODY_CUTS:
        fault = None  # drawn all the same: the requests after it decide as without HEAD
    if delay_ms is None and fault is None and shaping is None and rate_limit is None:
        return NO_CHAOS
    return Plan(delay_ms=delay_ms, fault=fault, rate_limit=rate_limit, shaping=shaping)


def _limited(verdict: RateLimitVerdict) -> Plan:
    """``Plan(rate_limit=verdict)``, built as a tuple directly (the keyword constructor
    of a NamedTuple is a Python-level call): the plan of most requests under a limit."""
    plan: Plan = _new(Plan, (None, None, verdict, None, None, None, None, None, None))
    return plan


# A NamedTuple's keyword constructor is a Python-level call (~0.3 us): on the path of every
# request with chaos, plans and injections are built as tuples directly.
_new: Any = tuple.__new__
