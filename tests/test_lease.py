"""Lease mode: workers sharing a store take tokens in small batches, still one limit."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import RedisServer

from mockforge_wsgi.config import RateLimitConfig
from mockforge_wsgi.rate_limit import LEASE_TTL_S, RateLimiter
from mockforge_wsgi.state import (
    Bucket,
    BucketOutcome,
    EmbeddedStore,
    MemoryStore,
    Store,
    store_from_url,
)
from mockforge_wsgi.state.gcra import charge, take

buckets_strategy = st.lists(
    st.tuples(
        st.sampled_from([0.001, 0.01, 0.1, 0.5, 1.0]),
        st.integers(1, 6),
        st.one_of(st.none(), st.floats(-3.0, 8.0)),
    ),
    min_size=1,
    max_size=3,
)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(buckets_strategy)
def test_a_lease_of_one_decides_exactly_as_a_charge(levels: list[Any]) -> None:
    now = 100.0
    buckets = [Bucket(f"k{i}", interval, burst) for i, (interval, burst, _) in enumerate(levels)]
    tats = {
        f"k{i}": None if ahead is None else now + ahead for i, (*_, ahead) in enumerate(levels)
    }
    index, outcome, stored = charge(tats.get, buckets, now)
    taken_index, taken, granted, taken_stored = take(tats.get, buckets, now, 1)
    assert (taken_index, granted) == (index, int(outcome.allowed))
    assert taken == pytest.approx(outcome)
    assert taken_stored == (None if stored is None else pytest.approx(stored))


def test_a_lease_grants_what_is_free_and_unspent_tokens_come_back() -> None:
    bucket = [Bucket("k", 0.1, 10)]
    tats: dict[str, float] = {}
    _, outcome, granted, stored = take(tats.get, bucket, 10.0, want=4)
    assert (granted, outcome.remaining) == (4, 6)
    assert stored is not None
    tats["k"] = stored[0]
    _, outcome, granted, stored = take(tats.get, bucket, 10.0, want=8)
    assert (granted, outcome.remaining) == (6, 0)  # only what was left
    assert stored is not None
    tats["k"] = stored[0]
    _, outcome, granted, stored = take(tats.get, bucket, 10.0, want=1)
    assert (granted, outcome.allowed) == (0, False)
    assert outcome.retry_after_s == pytest.approx(0.1)
    assert stored is None  # a refusal stores nothing...
    _, outcome, granted, stored = take(tats.get, bucket, 10.0, want=3, give_back=5)
    assert (granted, outcome.remaining) == (3, 2)  # ...but what is given back is stored
    assert stored == [pytest.approx(10.0 + 0.8)]


@attrs.define
class CountingStore:
    """A real store, with its calls counted."""

    store: Store
    takes: list[tuple[int, int]] = attrs.field(factory=list)
    acquires: int = 0

    @property
    def shared(self) -> bool:
        return self.store.shared

    def acquire(self, buckets: Sequence[Bucket], now: float) -> tuple[int, BucketOutcome]:
        self.acquires += 1
        return self.store.acquire(buckets, now)

    def take(
        self, buckets: Sequence[Bucket], now: float, want: int, give_back: int = 0
    ) -> tuple[int, BucketOutcome, int]:
        self.takes.append((want, give_back))
        return self.store.take(buckets, now, want, give_back)


def limiter_on(store: Any) -> RateLimiter:
    return RateLimiter(store)


def test_a_worker_spends_its_lease_locally_and_gives_back_the_rest(tmp_path: Path) -> None:
    store = CountingStore(EmbeddedStore(tmp_path))
    limiter = limiter_on(store)
    # 10,000 rps: a lease is 10 ms of the rate (100 tokens; at most a quarter of the burst).
    config = RateLimitConfig(enabled=True, requests_per_second=10_000, burst_size=1_000)
    now = 50.0
    verdicts = [limiter.check(config, "", "", now) for _ in range(150)]
    assert all(v is not None and v.allowed for v in verdicts)
    assert store.takes == [(100, 0), (100, 0)]
    first = verdicts[0]
    assert first is not None
    assert first.outcome.remaining == 999  # the store's 900 after the lease + 99 held here
    # Past the lease's time, the 50 tokens left go back in the call that takes anew.
    later = limiter.check(config, "", "", now + LEASE_TTL_S + 0.001)
    assert later is not None
    assert later.allowed
    assert store.takes[-1] == (100, 50)


def test_a_refusal_is_remembered_until_a_token_can_be_back(tmp_path: Path) -> None:
    store = CountingStore(EmbeddedStore(tmp_path))
    limiter = limiter_on(store)
    config = RateLimitConfig(enabled=True, requests_per_second=50, burst_size=2)
    now = 50.0
    allowed = [limiter.check(config, "", "", now).allowed for _ in range(5)]  # type: ignore[union-attr]
    assert allowed == [True, True, False, False, False]
    assert len(store.takes) == 3  # two leases of one token, one refusal asked for
    assert limiter.check(config, "", "", now + 0.019).allowed is False  # type: ignore[union-attr]
    assert len(store.takes) == 3
    assert limiter.check(config, "", "", now + 0.0201).allowed  # type: ignore[union-attr]
    # A new config (a reset among the changes that make one) forgets every lease.
    limiter.check(config, "", "", now + 0.0201)
    fresh = attrs.evolve(config)
    takes = len(store.takes)
    limiter.check(fresh, "", "", now + 0.0201)
    assert len(store.takes) == takes + 1


def test_exact_mode_and_the_memory_store_charge_each_request(tmp_path: Path) -> None:
    config = RateLimitConfig(enabled=True, requests_per_second=10_000, burst_size=1_000)
    exact = attrs.evolve(config, store_mode="exact")
    memory = CountingStore(MemoryStore())  # one process: leases would buy nothing
    for store, mode in ((CountingStore(EmbeddedStore(tmp_path)), exact), (memory, config)):
        limiter = limiter_on(store)
        for _ in range(5):
            limiter.check(mode, "", "", 50.0)
        assert (store.acquires, store.takes) == (5, [])


def _spend_in_child(directory: str, results: Any) -> None:
    store = CountingStore(EmbeddedStore(directory))
    limiter = _inherited[0]
    limiter.store = store
    config = _inherited[1]
    limiter.check(config, "", "", 50.0)
    results.put(len(store.takes))


_inherited: list[Any] = []


def test_a_forked_worker_does_not_spend_its_parents_lease(tmp_path: Path) -> None:
    store = CountingStore(EmbeddedStore(tmp_path))
    limiter = limiter_on(store)
    config = RateLimitConfig(enabled=True, requests_per_second=10_000, burst_size=1_000)
    limiter.check(config, "", "", 50.0)  # the parent holds 99 tokens
    _inherited[:] = [limiter, config]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_spend_in_child, args=(str(tmp_path), results))
    child.start()
    child.join(10)
    assert results.get(timeout=5) == 1  # the child took its own lease


@attrs.define
class TimedStore:
    """A real store whose takes are timed: (called, returned, seconds until full after)."""

    store: Store
    takes: list[tuple[float, float, float]] = attrs.field(factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def take(
        self, buckets: Sequence[Bucket], now: float, want: int, give_back: int = 0
    ) -> tuple[int, BucketOutcome, int]:
        called = time.monotonic()
        taken = self.store.take(buckets, now, want, give_back)
        self.takes.append((called, time.monotonic(), taken[1].reset_s))
        return taken


def _hammer(url: str, config: RateLimitConfig, start_at: float, stop_at: float, out: Any) -> None:
    store = TimedStore(store_from_url(url))
    limiter = RateLimiter(store)  # type: ignore[arg-type]
    admitted = 0
    while time.monotonic() < start_at:
        time.sleep(0.001)
    for _ in range(10_000_000):  # bounded; the clock ends it first
        now = time.monotonic()
        if now >= stop_at:
            break
        verdict = limiter.check(config, "", "", now)
        admitted += bool(verdict and verdict.allowed)
    # Tokens leased to this process and not spent when the clock stopped: granted by the
    # store, so not lost, just not used yet.
    held = sum(lease.tokens for lease in limiter._leases.values())
    out.put((admitted, held, store.takes))


@attrs.frozen
class Hammered:
    admitted: int
    held: int
    expected: float  # burst + rate x seconds
    uncapped: float  # what the bucket's refill could not give: it sat full
    left: float  # tokens in the bucket at the end, taken by nobody
    overrun: float  # tokens the last takes may have been granted after the clock stopped


def admitted_by_processes(
    url: str, config: RateLimitConfig, processes: int, seconds: float
) -> Hammered:
    """``processes`` forked processes check as fast as they can for ``seconds``; what they
    admitted and still hold, and from their timed takes, the arithmetic of what could
    not be admitted through no fault of the limiter.

    A bucket loses refill only while it is full. It is full from the start until the
    first take; after a take it is full ``reset_s`` later (the store says so), so until
    the next take (at most from this take's call to the next one's return) it loses
    ``rate x max(0, gap - reset_s)``. After the last take it keeps what it has and what
    refills up to the stop (at most ``burst``), unspent by anyone."""
    context = multiprocessing.get_context("fork")  # forked, as gunicorn's workers are
    results = context.Queue()
    start_at = time.monotonic() + 0.5  # every process is up and hammering from here
    stop_at = start_at + seconds
    workers = [
        context.Process(target=_hammer, args=(url, config, start_at, stop_at, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        counts = [results.get(timeout=30) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
    rate, burst = config.requests_per_second, config.burst_size
    takes = sorted(take for *_, timed in counts for take in timed)
    uncapped = rate * max(0.0, takes[0][1] - start_at)
    for (called, _, full_in), (_, returned, _) in itertools.pairwise(takes):
        uncapped += rate * max(0.0, returned - called - full_in)
    called, _, full_in = takes[-1]
    left = min(float(burst), burst - rate * full_in + rate * max(0.0, stop_at - called))
    overrun = rate * max(0.0, max(returned for _, returned, _ in takes) - stop_at)
    return Hammered(
        admitted=sum(a for a, _, _ in counts),
        held=sum(h for _, h, _ in counts),
        expected=burst + rate * seconds,
        uncapped=uncapped,
        left=left,
        overrun=overrun,
    )


def _assert_one_limit(found: Hammered) -> None:
    """Never more than the limit (but for tokens granted to a take still running when the
    clock stopped); and every token the bucket gave is admitted or still held: what is
    missing is what it could not give (it sat full) or still has, within 1% and a token
    (clocks, whole tokens)."""
    assert found.admitted <= found.expected + found.overrun + 1, found
    unspendable = found.uncapped + found.left
    assert found.admitted + found.held >= 0.99 * (found.expected - unspendable) - 1, found


@pytest.mark.alone  # wall-clock figures: no other test meanwhile
@pytest.mark.server
@pytest.mark.parametrize(("rate", "burst"), [(50, 10), (5_000, 100)])
def test_four_processes_on_the_embedded_store_get_one_limit(
    tmp_path: Path, rate: int, burst: int
) -> None:
    """Bounds right by the lease arithmetic (``admitted_by_processes``, ``_assert_one_limit``),
    not by how fast this machine lets four processes run."""
    config = RateLimitConfig(enabled=True, requests_per_second=rate, burst_size=burst)
    _assert_one_limit(admitted_by_processes(f"file://{tmp_path}", config, 4, 1.5))


@pytest.mark.alone  # wall-clock figures: no other test meanwhile
@pytest.mark.server
def test_four_processes_on_redis_get_one_limit(redis_server: RedisServer) -> None:
    """Two servers of two workers each, say: four processes leasing from one Redis.

    A Redis stall longer than the burst (100 ms of the rate) caps the bucket while nobody
    can take from it: no fault of the limiter, and counted from the timed takes, so the
    bounds are right by the lease arithmetic, not by luck (``_assert_one_limit``). Redis's
    clock and this host's are one here; a lease's grant counts on Redis's."""
    config = RateLimitConfig(enabled=True, requests_per_second=5_000, burst_size=500)
    _assert_one_limit(admitted_by_processes(redis_server.url, config, 4, 1.5))


def test_configs_taking_turns_keep_their_leases(tmp_path: Path) -> None:
    """Per-route rules switch the limiter between configs request by request: leases
    survive it (dropping them each time would lose their tokens, admitting far fewer)."""
    store = CountingStore(EmbeddedStore(tmp_path))
    limiter = limiter_on(store)
    route = RateLimitConfig(enabled=True, requests_per_second=10_000, burst_size=100)
    other = attrs.evolve(route)  # another rule's config: equal, not the same object
    limiter.check(route, "", "", 50.0)  # a lease of 25 (a quarter of the burst)
    # A config never seen is a change of the state: that lease is dropped (24 tokens),
    # and another taken. From here on both configs are known.
    limiter.check(other, "", "", 50.0)
    takes = len(store.takes)
    admitted = sum(
        bool(limiter.check(config, "", "", 50.0).allowed)  # type: ignore[union-attr]
        for _ in range(100)
        for config in (route, other)
    )
    assert admitted == 100 - 25 - 1  # every token left, not a lease's first per switch
    assert len(store.takes) - takes <= 100 // 25 + 2  # about one take per lease of 25


def test_each_client_spends_only_its_own_lease(tmp_path: Path) -> None:
    """Leases are kept per bucket set: a client over its per-IP limit is refused, and the
    next client is not refused with it (nor spends its tokens)."""
    limiter = limiter_on(EmbeddedStore(tmp_path))
    config = RateLimitConfig(
        enabled=True, global_limit=False, per_ip=True, requests_per_second=1, burst_size=8
    )
    now = 50.0
    first = [limiter.check(config, "10.0.0.1", "", now) for _ in range(9)]
    assert [v.allowed for v in first if v is not None] == [True] * 8 + [False]
    second = [limiter.check(config, "10.0.0.2", "", now) for _ in range(8)]
    assert all(v is not None and v.allowed for v in second)
    refused = limiter.check(config, "10.0.0.1", "", now)
    assert refused is not None and not refused.allowed
