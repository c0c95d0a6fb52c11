"""Verdicts on the client's behaviour: recorded requests grouped into logical calls,
and what each call shows (attempts, waits, Retry-After honoured, backoff, unsafe retries).

Pure: rows in (the recorder's, oldest first), plain data out. A call is the requests
that share an ``Idempotency-Key`` (and test id), or else method, path, body hash and
test id, each within ``window_s`` of the one before; a success ends a call (the same
request sent again after a success is a new call, not a retry).

The same verdicts judge the app towards its dependencies, over the recorder's outbound
rows (``direction: outbound``): there a call is the attempts to one host, method and
path made while serving one request (its request id), so urllib3's own retries of one
call group together, and another request's call is another.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .injections import AFTER_APP, CONNECTION_TIMEOUT, CORRUPTED, PARTIAL_RESPONSE, STREAM_CUT

__all__ = ["Attempt", "Call", "group_calls", "quantile", "summarize", "verdicts"]

DEFAULT_WINDOW_S = 30.0
# How much earlier than Retry-After a retry may come and still honour it: the server
# sees the answer's end a little after the client got it.
RETRY_AFTER_SLACK_S = 0.05
# Waits that differ by less are "the same" when judging whether backoff grew.
BACKOFF_SLACK_S = 0.01
# Methods a client must not repeat blindly once the app may have acted (RFC 9110 9.2.2).
NOT_IDEMPOTENT = frozenset({"POST", "PATCH"})
# Faults that reach the client after the app ran: its side effect is done. (An upload
# reset comes before the app runs: a retry of it is safe.)
APP_RAN = frozenset({AFTER_APP, CORRUPTED, PARTIAL_RESPONSE, CONNECTION_TIMEOUT, STREAM_CUT})
# Shown per call at most (the summary counts them all).
MAX_CALLS_SHOWN = 500


@attrs.frozen
class Attempt:
    """One recorded request, as the verdicts need it."""

    started: float  # Unix seconds
    ended: float
    method: str
    path: str
    status: int  # 0: no answer (reset, drop, cut)
    fault_type: str | None = None
    retry_after_s: float | None = None  # what the answer told the client to wait
    idempotency_key: str | None = None
    body_hash: str | None = None
    test_id: str | None = None
    request_id: str = ""
    host: str | None = None  # the host:port an outbound call went to (None: a request)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Attempt:
        ended = float(row["time"])
        return cls(
            started=ended - float(row.get("duration_ms") or 0.0) / 1000.0,
            ended=ended,
            method=str(row["method"]),
            path=str(row["path"]),
            status=int(row["status"]),
            fault_type=row.get("fault_type"),
            retry_after_s=row.get("retry_after_s"),
            idempotency_key=row.get("idempotency_key") or None,
            body_hash=row.get("body_hash"),
            test_id=row.get("test_id") or None,
            request_id=str(row.get("request_id") or ""),
            host=row.get("host") or None,
        )

    @property
    def succeeded(self) -> bool:
        """A whole answer below 400, not broken on the way."""
        return 200 <= self.status < 400 and self.fault_type not in APP_RAN

    @property
    def key(self) -> tuple[Any, ...]:
        if self.idempotency_key:
            return (self.test_id, "key", self.idempotency_key)
        if self.host is not None:  # the app's own call: the same path on another host
            return (self.test_id, self.host, self.method, self.path, self.request_id)
        return (self.test_id, self.method, self.path, self.body_hash)


@attrs.frozen
class Call:
    """The attempts of one logical call, oldest first."""

    attempts: tuple[Attempt, ...]

    @property
    def waits(self) -> list[float]:
        """Seconds from the end of each attempt to the start of the next."""
        pairs = itertools.pairwise(self.attempts)
        return [max(0.0, later.started - earlier.ended) for earlier, later in pairs]

    @property
    def retry_after_honoured(self) -> list[bool]:
        """For each retry that followed an answer with Retry-After: did it wait that long?"""
        found = []
        for earlier, wait in zip(self.attempts, self.waits, strict=False):
            if earlier.retry_after_s is not None:
                found.append(wait >= earlier.retry_after_s - RETRY_AFTER_SLACK_S)
        return found

    @property
    def backoff_grew(self) -> bool | None:
        """Whether each wait was at least the one before and the last longer than the
        first (None with fewer than two waits)."""
        waits = self.waits
        if len(waits) < 2:
            return None
        steady = all(b >= a - BACKOFF_SLACK_S for a, b in itertools.pairwise(waits))
        return steady and waits[-1] > waits[0] + BACKOFF_SLACK_S

    @property
    def unsafe_retry(self) -> bool:
        """A POST or PATCH without an Idempotency-Key sent again after a fault that came
        after the app ran (its side effect was done: now it is done twice)."""
        first = self.attempts[0]
        if first.method not in NOT_IDEMPOTENT or first.idempotency_key:
            return False
        return any(attempt.fault_type in APP_RAN for attempt in self.attempts[:-1])

    @property
    def succeeded(self) -> bool:
        return self.attempts[-1].succeeded

    def to_dict(self) -> dict[str, Any]:
        first = self.attempts[0]
        return {
            "method": first.method,
            **({"host": first.host} if first.host is not None else {}),
            "path": first.path,
            "test_id": first.test_id,
            "idempotency_key": first.idempotency_key,
            "attempts": len(self.attempts),
            "statuses": [attempt.status for attempt in self.attempts],
            "faults": [attempt.fault_type for attempt in self.attempts],
            "waits_s": [round(wait, 4) for wait in self.waits],
            "retry_after_s": [attempt.retry_after_s for attempt in self.attempts],
            "retry_after_honoured": self.retry_after_honoured,
            "backoff_grew": self.backoff_grew,
            "unsafe_retry": self.unsafe_retry,
            "succeeded": self.succeeded,
            "started": first.started,
            "request_ids": [attempt.request_id for attempt in self.attempts],
        }


def group_calls(attempts: Iterable[Attempt], window_s: float = DEFAULT_WINDOW_S) -> list[Call]:
    """Attempts (oldest first) grouped into calls, in the order each call started."""
    open_calls: dict[tuple[Any, ...], list[Attempt]] = {}
    calls: list[list[Attempt]] = []
    for attempt in sorted(attempts, key=lambda a: a.started):
        current = open_calls.get(attempt.key)
        if current is not None:
            last = current[-1]
            if not last.succeeded and attempt.started - last.ended <= window_s:
                current.append(attempt)
                continue
        current = [attempt]
        open_calls[attempt.key] = current
        calls.append(current)
    return [Call(tuple(call)) for call in calls]


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(calls: Sequence[Call]) -> dict[str, Any]:
    """The figures a test asserts on, over every call."""
    waits = [wait for call in calls for wait in call.waits]
    honoured = [ok for call in calls for ok in call.retry_after_honoured]
    succeeded = sum(call.succeeded for call in calls)
    return {
        "calls": len(calls),
        "succeeded": succeeded,
        "success_ratio": succeeded / len(calls) if calls else None,
        "retried_calls": sum(len(call.attempts) > 1 for call in calls),
        "retries_per_call": (
            sum(len(call.attempts) - 1 for call in calls) / len(calls) if calls else None
        ),
        "max_attempts": max((len(call.attempts) for call in calls), default=0),
        "retry_after_seen": len(honoured),
        "retry_after_honoured_ratio": sum(honoured) / len(honoured) if honoured else None,
        "backoff_p50_s": quantile(waits, 0.5),
        "backoff_p99_s": quantile(waits, 0.99),
        "unsafe_retries": sum(call.unsafe_retry for call in calls),
    }


def verdicts(
    rows: Iterable[Mapping[str, Any]], window_s: float = DEFAULT_WINDOW_S
) -> dict[str, Any]:
    """The summary and (the newest ``MAX_CALLS_SHOWN``) calls of recorder rows."""
    calls = group_calls((Attempt.from_row(row) for row in rows), window_s)
    return {
        "summary": summarize(calls),
        "calls": [call.to_dict() for call in calls[-MAX_CALLS_SHOWN:]],
        "window_s": window_s,
    }
