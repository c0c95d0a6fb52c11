"""Circuit breaker simulation: the usual state machine, kept in store counters so every
worker (and host, on Redis) sees one breaker.

closed --(failure_threshold failures in a row, or failure_ratio of a window)--> open
open --(cooldown_s)--> half-open: half_open_probes requests let through
half-open --(a probe succeeds)--> closed;  --(a probe fails)--> open again

A failure is an answer of 500 or more, or none at all (a reset, a cut), whether the app
gave it or chaos injected it. The breaker's own answers while open are not counted.
Counters per breaker (``breaker:<owner>:<field>``, owner ``global`` or a rule's index):
``opened_ms`` (Unix ms when it opened; 0: closed), ``failures`` (in a row), ``probes``
(let through since it half-opened), and the ratio window's ``window_ms``, ``requests``,
``failed``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .config import CircuitBreakerConfig
from .state.base import Store

__all__ = [
    "BREAKER_PREFIX",
    "CLOSED",
    "GLOBAL",
    "OPEN",
    "PROBE",
    "Circuit",
    "admit",
    "breaker_status",
    "failed",
    "force",
    "record",
]

BREAKER_PREFIX = "breaker:"
GLOBAL = "global"
CLOSED, PROBE, OPEN = "closed", "probe", "open"
# Half-open with every probe out: the others are told to come back this soon.
PROBE_WAIT_S = 1.0
_FIELDS = ("opened_ms", "failures", "probes", "window_ms", "requests", "failed")


class Circuit(NamedTuple):
    """What the breaker says of one request: let it through (``closed``), let it through
    as a half-open probe (``probe``), or answer ``status`` at once (``open``), with the
    seconds until it half-opens."""

    owner: str
    state: str
    retry_after_s: float = 0.0
    status: int = 503

    @property
    def retry_after(self) -> str:
        """The Retry-After value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


def failed(status: str) -> bool:
    """Whether an answer counts as a failure: a status of 500 or more, or ``"000"``, no
    answer at all (a reset, a cut, a body broken off before its end)."""
    return status == "000" or status >= "500"


def counter(owner: str, field: str) -> str:
    return f"{BREAKER_PREFIX}{owner}:{field}"


def admit(store: Store, owner: str, config: CircuitBreakerConfig, now: float) -> Circuit:
    """Whether the breaker lets a request through now (``now``: Unix seconds)."""
    opened_ms = store.incr(counter(owner, "opened_ms"), 0)
    if not opened_ms:
        return Circuit(owner, CLOSED)
    left = opened_ms / 1000.0 + config.cooldown_s - now
    if left > 0:
        return Circuit(owner, OPEN, left, config.status)
    if store.incr(counter(owner, "probes")) <= config.half_open_probes:
        return Circuit(owner, PROBE)
    return Circuit(owner, OPEN, PROBE_WAIT_S, config.status)


def record(
    store: Store, circuit: Circuit, config: CircuitBreakerConfig, now: float, failed: bool
) -> str | None:
    """Count an answer the breaker let through; returns the transition it caused
    (``opened``, ``closed``, ``reopened``) or None."""
    owner = circuit.owner
    if circuit.state == PROBE:
        if failed:
            _open(store, owner, now)
            return "reopened"
        _zero(store, owner)
        return "closed"
    failures = counter(owner, "failures")
    tripped = False
    if failed:
        tripped = store.incr(failures) >= config.failure_threshold
    elif store.incr(failures, 0):
        store.set_counter(failures, 0)
    if config.failure_ratio and not tripped:
        tripped = _ratio_tripped(store, owner, config, now, failed)
    if tripped and not store.incr(counter(owner, "opened_ms"), 0):  # not already open
        _open(store, owner, now)
        return "opened"
    return None


def _ratio_tripped(
    store: Store, owner: str, config: CircuitBreakerConfig, now: float, failed: bool
) -> bool:
    """Count the answer in the current window (a new one starts every ``window_s``)."""
    now_ms = int(now * 1000)
    start = store.incr(counter(owner, "window_ms"), 0)
    if now_ms - start >= config.window_s * 1000:
        store.set_counter(counter(owner, "window_ms"), now_ms)
        store.set_counter(counter(owner, "requests"), 0)
        store.set_counter(counter(owner, "failed"), 0)
    requests = store.incr(counter(owner, "requests"))
    bad = store.incr(counter(owner, "failed"), 1 if failed else 0)
    return requests >= config.min_requests and bad / requests >= config.failure_ratio


def _open(store: Store, owner: str, now: float) -> None:
    store.set_counter(counter(owner, "opened_ms"), int(now * 1000))
    store.set_counter(counter(owner, "probes"), 0)
    store.set_counter(counter(owner, "failures"), 0)


def _zero(store: Store, owner: str) -> None:
    for field in _FIELDS:
        store.set_counter(counter(owner, field), 0)


def force(store: Store, owner: str, action: str, now: float) -> None:
    """``open`` it now (for its cooldown), ``close`` it, or ``reset`` every count."""
    if action == "open":
        _open(store, owner, now)
    elif action == "close":
        for field in ("opened_ms", "probes", "failures"):
            store.set_counter(counter(owner, field), 0)
    elif action == "reset":
        _zero(store, owner)
    else:
        raise ValueError(f"action {action!r}: expected open, close or reset")


def breaker_status(
    counters: dict[str, int], owner: str, config: CircuitBreakerConfig, now: float
) -> dict[str, Any]:
    """One breaker as /status and /breakers show it, from the store's counters."""

    def value(field: str) -> int:
        return counters.get(counter(owner, field), 0)

    opened_ms = value("opened_ms")
    state, next_s = CLOSED, None
    if opened_ms:
        left = opened_ms / 1000.0 + config.cooldown_s - now
        if left > 0:
            state, next_s = OPEN, round(left, 3)
        else:
            state = "half_open"
    return {
        "owner": owner,
        "state": state,
        "failures_in_a_row": value("failures"),
        "failure_threshold": config.failure_threshold,
        "opened_at": opened_ms / 1000.0 if opened_ms else None,
        "half_open_in_s": next_s,
        "probes_let_through": value("probes") if state == "half_open" else 0,
        "window": {"requests": value("requests"), "failed": value("failed")},
    }
