"""While the shared store is unreachable, limits degrade to each worker's share.

:class:`DegradingStore` stands between the decision core and a store that can fail
(Redis, the embedded store): the rate limiter, the slot pools (connection slots,
bulkheads, active faults) and the request counters reach the store through it. While
the store answers, every call goes to it, and about once a second one of them also
says this worker is alive there and learns how many are (:meth:`Store.live_workers`).
When a call fails, ``on_store_error`` (read then, never per request) says what next:

- ``local``: this process answers alone, from a :class:`MemoryStore` of its own (the
  same GCRA and slot logic), at its share: every bucket's rate and burst divided by the
  live workers last known (before the store ever answered: the workers the server was
  started with, ``workers``), every slot pool ``max(1, cap // workers)``.
- ``open`` and ``closed``: :class:`StoreError`, for the caller to serve unharmed or 503.

After a failure the store is not called for ``RETRY_S`` (one failure, not one per
request); then the next call tries it, and its first answer ends the outage. Slots
taken locally are given back locally: a pool's slots are alike, so a release goes to
the local pool while this process holds local slots of it, else to the store (which
owes what it cannot write and settles it when back: nothing leaks on either side).

Usage::

    store = DegradingStore(RedisStore(url), mode=lambda: "local", report=print)
    limiter = RateLimiter(store)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .base import StartedState, Store, StoreError
from .gcra import Bucket, BucketOutcome
from .memory import MemoryStore

__all__ = ["RETRY_S", "DegradingStore"]

log = logging.getLogger("mockforge_wsgi")

RETRY_S = 1.0  # while down: how often one call tries the store again
BEAT_S = 1.0  # while up: how often this worker says it is alive and counts the live ones


class DegradingStore(Store):
    """``store``, with this process's share of its limits while it is unreachable.

    ``mode``: the ``on_store_error`` in force (called only when the store fails);
    ``report``: told of each call the store could not answer, and its error (None: not
    tried, the store being down); it counts them and logs at most a line a minute.
    ``workers``: the workers this process's server was started with (gunicorn's
    ``-w``): the share until the store says how many are alive.
    """

    def __init__(
        self,
        store: Store,
        *,
        mode: Callable[[], str],
        report: Callable[[str, StoreError | None], None],
        clock: Callable[[], float] = time.monotonic,
        workers: int = 1,
    ) -> None:
        self.inner = store
        self.shared = store.shared
        self.leases = store.leases
        self.local = MemoryStore()
        # Live workers, as last learned from the store; until then, those started.
        self.workers = max(1, workers)
        self._mode = mode
        self._report = report
        self._clock = clock
        self._beat_at = 0.0
        self._retry_at = 0.0  # nonzero: down (local or failing) until then, then try again
        self._local_held: dict[str, int] = {}  # slots of each pool taken locally
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """Whether the last call found the store unreachable."""
        return bool(self._retry_at)

    def _skip(self) -> bool:
        """Down, and not yet time to try again: go local (or raise) without a store call."""
        return self._clock() < self._retry_at

    def _failed(self, doing: str, error: StoreError | None) -> None:
        """A call failed (``error``) or was skipped while down (None): answered locally
        (and reported), or raised for the caller to handle and count."""
        if error is not None:
            self._retry_at = self._clock() + RETRY_S
        if self._mode() != "local":
            raise error or StoreError("the shared store is unreachable (tried again soon)")
        self._report(doing, error)

    def _answered(self) -> None:
        """A call after an outage answered: shared limits again."""
        self._retry_at = 0.0
        log.warning("mockforge: the shared store answers again (shared limits again)")

    def _beat(self) -> None:
        """About once a second: this worker is alive; learn how many are."""
        self._beat_at = self._clock() + BEAT_S
        self.workers = max(1, self.inner.live_workers())

    # -- rate limits: each bucket at this worker's share ------------------------------
    # acquire, take, acquire_slot and incr each write out the same try-the-store step:
    # they are on the path of every limited request, and one shared helper taking the
    # call and its arguments measured 0.2-0.5 us more per store call.

    def _share(self, buckets: Sequence[Bucket]) -> list[Bucket]:
        n = self.workers
        return [Bucket(key, interval * n, max(1, burst // n)) for key, interval, burst in buckets]

    def acquire(self, buckets: Sequence[Bucket], now: float) -> tuple[int, BucketOutcome]:
        error: StoreError | None = None
        if not (self._retry_at and self._skip()):
            try:
                if self._clock() >= self._beat_at:
                    self._beat()
                answer = self.inner.acquire(buckets, now)
            except StoreError as failed:
                error = failed
            else:
                if self._retry_at:
                    self._answered()
                return answer
        self._failed("checking a rate limit", error)
        return self.local.acquire(self._share(buckets), now)

    def take(
        self, buckets: Sequence[Bucket], now: float, want: int, give_back: int = 0
    ) -> tuple[int, BucketOutcome, int]:
        error: StoreError | None = None
        if not (self._retry_at and self._skip()):
            try:
                if self._clock() >= self._beat_at:
                    self._beat()
                answer = self.inner.take(buckets, now, want, give_back)
            except StoreError as failed:
                error = failed
            else:
                if self._retry_at:
                    self._answered()
                return answer
        self._failed("taking a rate-limit lease", error)
        # The unspent tokens were the store's: not given to the local buckets.
        return self.local.take(self._share(buckets), now, want)

    # -- slot pools: max(1, cap // workers) each, given back where they were taken ------

    def acquire_slot(self, name: str, limit: int, timeout_s: float) -> bool:
        error: StoreError | None = None
        if not (self._retry_at and self._skip()):
            try:
                if self._clock() >= self._beat_at:
                    self._beat()
                held = self.inner.acquire_slot(name, limit, timeout_s)
            except StoreError as failed:
                error = failed
            else:
                if self._retry_at:
                    self._answered()
                return held
        self._failed("taking a place in a slot pool", error)
        held = self.local.acquire_slot(name, max(1, limit // self.workers), timeout_s)
        if held:
            with self._lock:
                self._local_held[name] = self._local_held.get(name, 0) + 1
        return held

    def release_slot(self, name: str) -> None:
        local = 0
        if self._local_held:  # none held locally (no outage): no lock on this path
            with self._lock:
                local = self._local_held.get(name, 0)
                if local > 1:
                    self._local_held[name] = local - 1
                elif local:
                    del self._local_held[name]
        if local:
            self.local.release_slot(name)
        else:  # the store's: it owes what it cannot write now, and settles it when back
            self.inner.release_slot(name)

    def slots_in_use(self, name: str) -> int:
        return self.inner.slots_in_use(name)

    def release_worker(self, pid: int) -> None:
        self.inner.release_worker(pid)

    # -- counters: numbered locally while down ------------------------------------------

    def incr(self, counter: str, amount: int = 1) -> int:
        error: StoreError | None = None
        if not (self._retry_at and self._skip()):
            try:
                value = self.inner.incr(counter, amount)
            except StoreError as failed:
                error = failed
            else:
                if self._retry_at:
                    self._answered()
                return value
        self._failed("numbering a request", error)
        return self.local.incr(counter, amount)

    def count(self, events: Iterable[str]) -> None:
        try:
            self.inner.count(events)  # Redis keeps them and sends them when back
        except StoreError as error:
            self._failed("counting injections", error)

    def set_counter(self, counter: str, value: int) -> None:
        try:
            self.inner.set_counter(counter, value)
        except StoreError as error:
            self._failed("setting a counter", error)
            self.local.set_counter(counter, value)

    def counters(self) -> dict[str, int]:
        return self.inner.counters()

    def tracked_keys(self) -> int:
        return self.inner.tracked_keys()

    # -- the runtime state and leases: the store's, as they are -------------------------

    def state_version(self) -> int:
        return self.inner.state_version()

    def watch_version(self) -> int:
        return self.inner.watch_version()

    def subscribe(self, callback: Callable[[], None]) -> bool:
        return self.inner.subscribe(callback)

    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        return self.inner.load_state()

    def save_state(self, state: dict[str, Any]) -> int:
        return self.inner.save_state(state)

    def replace_state(self, state: dict[str, Any], version: int) -> int:
        return self.inner.replace_state(state, version)

    def init_state(self, state: dict[str, Any]) -> bool:
        return self.inner.init_state(state)

    def start_state(self, state: dict[str, Any], *, server: str, mode: str) -> StartedState:
        return self.inner.start_state(state, server=server, mode=mode)

    def renew_lease(self, server: str) -> None:
        self.inner.renew_lease(server)

    def drop_lease(self, server: str) -> None:
        self.inner.drop_lease(server)

    def live_workers(self) -> int:
        return self.inner.live_workers()

    def reset(self) -> None:
        self.inner.reset()
