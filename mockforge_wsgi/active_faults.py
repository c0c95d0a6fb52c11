"""``max_active_faults`` (Envoy's field): the most requests injected chaos may hold at
once, across every worker of the server (and every host sharing a Redis store).

A request whose plan holds it (latency, a timeout's hold, an after-app stall, a paced
body or upload, packet-loss stalls; every wait that goes through ``release.py``) takes a
place in a named slot pool of the store, as a bulkhead's place is taken, and gives it
back when its response is complete or closed (also when the hold was released early,
and when the app raised). With the pool full, the request gets no injected chaos at all
(its latency and its fault both dropped: the simplest faithful reading of Envoy's
"active faults"), is annotated ``max_active_faults=reached`` and counted
``fault_overflow``; the admission decisions (rate limit, breaker, connection slot,
bulkhead) stand. A plan that holds nothing (an instant 503, a reset) takes no place and
is never capped: it costs the server no thread.

A rule that sets its own ``max_active_faults`` has a pool of its own (owner: the
rule's index); every other request shares the global pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .config import ChaosConfig

__all__ = ["OVERFLOW", "REACHED", "ActiveFault", "most_held", "pool_name"]

PREFIX = "active_faults:"
OVERFLOW = "fault_overflow"  # the store counter (and metric) of requests over the cap
REACHED = "max_active_faults=reached"  # the annotation of such a request


class ActiveFault(NamedTuple):
    """A request's place among the active faults: ``held`` (given back when its
    response ends), or the pool was full (served unharmed)."""

    owner: str
    held: bool

    @property
    def pool(self) -> str:
        return pool_name(self.owner)


def pool_name(owner: str) -> str:
    """The store's slot pool of active faults: ``global`` or a rule's index."""
    return PREFIX + owner


def can_hold(config: ChaosConfig) -> bool:
    """Whether ``config`` (chaos on) may hold a request: latency, a timeout's hold or an
    after-app stall, pacing or loss, a delay asked for by header."""
    from .config import longest_delay_s

    shaping = config.traffic_shaping
    paces = shaping.enabled and bool(
        shaping.bandwidth_limit_bps
        or shaping.upload_bandwidth_limit_bps
        or shaping.packet_loss_percent
    )
    faults = config.fault_injection
    scripted = faults.enabled and any(
        step in ("timeout", "after-app-stall") for step in faults.script
    )
    return paces or scripted or longest_delay_s([config]) > 0


def most_held(configs: Iterable[ChaosConfig]) -> int | None:
    """The most requests ``configs`` (each with its rules) may hold at once: None
    for no bound, 0 when none of them holds anything."""
    from .config import apply_rule

    most = 0
    for config in configs:
        total = 0
        shared = can_hold(config)  # the requests no rule matches
        for rule in config.rules:
            own = apply_rule(config, rule)
            if not can_hold(own):
                continue
            if not rule.gives("max_active_faults"):
                shared = True
            elif own.max_active_faults is None:
                return None
            else:
                total += own.max_active_faults
        if shared:
            if config.max_active_faults is None:
                return None
            total += config.max_active_faults
        most = max(most, total)
    return most
