"""Chaos a request asks for itself, Envoy-style, when ``header_control`` is enabled.

    X-Mockforge-Delay-Ms: 300          delay this request (capped at max_delay_ms)
    X-Mockforge-Fault: 503             answer with this status, or: reset, partial,
                                       after-app-reset, after-app-503, empty-reply,
                                       corrupt-flip (-random, -invalid_json, -truncate,
                                       -wrong_content_type, -malformed_chunk,
                                       -random_then_close), cut-after-500ms,
                                       cut-after-3-chunks, upload-reset-after-65536...
    X-Mockforge-Fault-Percent: 50      ...on this share of such requests (default 100)
    X-Mockforge-Throughput-Bps: 20000  pace the response body (at least 1,000 B/s)
    X-Mockforge-Body-Duration-Ms: 2000 spread the body over this long (10 writes;
                                       capped at max_delay_ms)
    X-Mockforge-Seed: 42               draw this request's dice from this seed

With an admin token set, the headers count only on a request that also carries
``X-Mockforge-Token: <token>``; without it they are ignored, as if absent.
"""

from __future__ import annotations

import hmac
import math
import random
from typing import TYPE_CHECKING

import attrs

from .config import HeaderControlConfig
from .fault import named_fault
from .plan import NO_CHAOS, Plan
from .traffic_shaping import Shaping

if TYPE_CHECKING:
    from .request import Request

__all__ = ["HEADERS", "InvalidHeaders", "decide_from_headers", "requested"]

DELAY, FAULT, PERCENT, SEED, THROUGHPUT, DURATION, TOKEN = (
    "X-Mockforge-Delay-Ms",
    "X-Mockforge-Fault",
    "X-Mockforge-Fault-Percent",
    "X-Mockforge-Seed",
    "X-Mockforge-Throughput-Bps",
    "X-Mockforge-Body-Duration-Ms",
    "X-Mockforge-Token",
)
HEADERS = (DELAY, FAULT, PERCENT, SEED, THROUGHPUT, DURATION)  # each asks for chaos
# The writes a body dribbled by header is sent in (body_chunks' default).
DURATION_WRITES = 10
# The slowest pace a header may ask for: a request cannot hold a worker for hours.
MIN_THROUGHPUT_BPS = 1000


class InvalidHeaders(ValueError):
    """Chaos headers we cannot honour; ``problems`` names each header and value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def requested(request: Request, admin_token: str | None) -> bool:
    """Whether the request asks for chaos by header (and may)."""
    header = request.header
    if not any(header(name) is not None for name in HEADERS):
        return False
    if admin_token:
        given = header(TOKEN) or ""
        return hmac.compare_digest(given.encode(), admin_token.encode())
    return True


def decide_from_headers(request: Request, config: HeaderControlConfig, rng: random.Random) -> Plan:
    """The plan the headers ask for; InvalidHeaders names each header that is wrong."""
    problems: list[str] = []

    def number(name: str, low: float, high: float) -> float | None:
        raw = request.header(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            problems.append(f"{name}: {raw!r} is not a number in [{low:g}, {high:g}]")
            return None
        return value

    delay = number(DELAY, 0, math.inf)
    asked = None
    fault_name = request.header(FAULT)
    if fault_name is not None:
        try:
            asked = named_fault(fault_name, rng)
        except ValueError as error:
            problems.append(f"{FAULT}: {error}")
    percent = number(PERCENT, 0, 100)
    seed = number(SEED, -(2**63), 2**63)
    throughput = number(THROUGHPUT, MIN_THROUGHPUT_BPS, 10_000_000_000)
    duration = number(DURATION, 0, math.inf)
    if problems:
        raise InvalidHeaders(problems)
    if seed is not None:
        rng = random.Random(int(seed))
    fault = None
    if asked is not None and (percent is None or rng.random() * 100 < percent):
        fault = asked
        if fault.kind == "stream_cut" and fault.after_ms > config.max_delay_ms:
            fault = attrs.evolve(fault, after_ms=config.max_delay_ms)  # a cut's timer holds
    delay_ms = min(delay, config.max_delay_ms) if delay else None
    shaping = None
    if throughput or duration:
        spread = min(duration, config.max_delay_ms) if duration else 0.0
        shaping = Shaping(
            bandwidth_bps=int(throughput or 0),
            body_duration_ms=spread,
            body_chunks=DURATION_WRITES if spread else 0,
        )
    if not (delay_ms or fault or shaping):
        return NO_CHAOS
    return Plan(delay_ms=delay_ms, fault=fault, shaping=shaping)
