"""The guard's window: the app's own answers over the last ``window_s`` seconds (how
many, how many were errors, their p99), across every worker and host sharing the store.

A process counts the answers it sees in memory (no store call on a request's path) and
adds them to cumulative store counters when it checks, at most every ``CHECK_S``
(:meth:`AnswerWindow.flush`). The window is a difference of those cumulative counters:
each check reads them (one call) and keeps the reading as a snapshot, and the figures
are the reading now minus the one taken ``window_s`` ago, so the window slides with no
per-second keys to expire. The counters are zeroed when chaos is switched on
(``ZEROED``, by the engine), so a window that began since counts from zero.

Times go into a coarse histogram (1-2-5 bounds from 1 ms to 60 s); its p99 is
interpolated within its bucket, as Prometheus' ``histogram_quantile`` does.

Usage::

    window = AnswerWindow()
    window.record(error=False, seconds=0.012)          # per answer: memory only
    window.flush(store)                                # at a check
    figures = window.figures(store, window_s=10, now=time.time(), since=armed_at)
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .state import Store

__all__ = ["BOUNDS_MS", "CHECK_S", "NAMES", "PREFIX", "AnswerWindow", "Figures", "p99_ms"]

# A process checks the window (and sends its counts) at most this often.
CHECK_S = 0.25
PREFIX = "guard_window:"  # the store counters' names (left out of /status counters)
BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 60000)
ANSWERS, ERRORS = PREFIX + "answers", PREFIX + "errors"
# Each bucket counts the answers up to its bound; the last one, the rest.
BUCKETS = (*(f"{PREFIX}le_{bound}" for bound in BOUNDS_MS), PREFIX + "le_inf")
NAMES = (ANSWERS, ERRORS, *BUCKETS)
# A snapshot further than this before the window's start is from before a pause in
# this process's checks: what came after it is not all in the window, so it is dropped.
STALE_S = 1.0


class Figures(NamedTuple):
    """What the window holds: answers, errors among them, the p99 of their times
    (None without answers), and how many seconds of the window were seen."""

    requests: int
    errors: int
    p99_ms: float | None
    span_s: float

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As ``/status`` shows them (under ``guard.figures``)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_ratio": round(self.error_ratio, 4),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 1),
            "window_s": round(self.span_s, 3),
        }


def p99_ms(buckets: Sequence[int]) -> float | None:
    """The 99th percentile of the counts in ``buckets`` (one per ``BUCKETS``), linear
    within its bucket; above the last bound, that bound. None without answers."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = 0.99 * total
    below = 0
    for index, count in enumerate(buckets):
        if count and below + count >= rank:
            if index == len(BOUNDS_MS):
                return float(BOUNDS_MS[-1])
            low = float(BOUNDS_MS[index - 1]) if index else 0.0
            high = float(BOUNDS_MS[index])
            return low + (high - low) * (rank - below) / count
        below += count
    return float(BOUNDS_MS[-1])  # not reached: the counts add up to total


class AnswerWindow:
    """One process's part of the window: answers counted here since the last flush,
    and the snapshots of the store's counters its checks read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = [0] * len(NAMES)
        self.pending = 0  # answers counted here and not yet sent
        # (time, reading before this process's flush, reading after it)
        self._snapshots: collections.deque[tuple[float, tuple[int, ...], tuple[int, ...]]] = (
            collections.deque()
        )
        self._since: float | None = None

    def record(self, error: bool, seconds: float) -> None:
        """One answer of the app: an error or not, and the app's own time."""
        slot = 2 + bisect.bisect_left(BOUNDS_MS, seconds * 1000.0)
        with self._lock:
            pending = self._pending
            pending[0] += 1
            if error:
                pending[1] += 1
            pending[slot] += 1
            self.pending += 1

    def forget_pending(self) -> None:
        """Drop what was counted and not sent (chaos was switched on anew)."""
        with self._lock:
            self._pending = [0] * len(NAMES)
            self.pending = 0

    def flush(self, store: Store) -> tuple[int, ...]:
        """Send what this process counted since the last flush (one store call) and
        return it; on a store error it is kept for the next one, and the error raised."""
        with self._lock:
            pending, self._pending = self._pending, [0] * len(NAMES)
            self.pending = 0
        amounts = {name: amount for name, amount in zip(NAMES, pending, strict=True) if amount}
        if not amounts:
            return tuple(pending)
        try:
            store.add_counts(amounts)
        except Exception:
            with self._lock:
                for index, amount in enumerate(pending):
                    self._pending[index] += amount
                self.pending += pending[0]
            raise
        return tuple(pending)

    def figures(
        self,
        store: Store,
        *,
        window_s: float,
        now: float,
        since: float,
        sent: tuple[int, ...] | None = None,
    ) -> Figures:
        """The window's figures now (one store read), over the last ``window_s``
        seconds, or since ``since`` (when chaos was switched on) if that is later.
        ``sent`` is what :meth:`flush` just sent: a process whose snapshots do not go
        back to the window's start counts from its oldest one as it was before that
        flush, so its own answers count from its first check on."""
        counters = store.counters()
        reading = tuple(counters.get(name, 0) for name in NAMES)
        snapshots = self._snapshots
        if since != self._since:  # switched on anew: the counters were zeroed then
            snapshots.clear()
            self._since = since
        start = now - window_s
        if snapshots and any(a < b for a, b in zip(reading, snapshots[-1][2], strict=True)):
            snapshots.clear()  # zeroed meanwhile (a reset): count from here
        before = (
            reading if sent is None else tuple(r - s for r, s in zip(reading, sent, strict=True))
        )
        snapshots.append((now, before, reading))
        if since >= start:  # the window began since chaos went on: from zero
            base_at, base = since, (0,) * len(NAMES)
        else:
            # The newest snapshot at or before the window's start is the base...
            while len(snapshots) > 1 and snapshots[1][0] <= start:
                snapshots.popleft()
            if len(snapshots) > 1 and snapshots[0][0] < start - STALE_S:
                snapshots.popleft()
            base_at, before_flush, after_flush = snapshots[0]
            # ... as read after its flush; one inside the window, as read before it.
            base = after_flush if base_at <= start else before_flush
        seen = [max(0, a - b) for a, b in zip(reading, base, strict=True)]
        return Figures(seen[0], seen[1], p99_ms(seen[2:]), max(0.0, now - max(base_at, start)))
