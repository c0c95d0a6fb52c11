"""While the shared store is unreachable, limits degrade to each worker's share
(state/degrading.py): the rate, the slot pools, the request numbers; back to the shared
limits when the store answers; nothing leaked on either side."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi import load_config
from mockforge_wsgi.config import RateLimitConfig
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.rate_limit import RateLimiter
from mockforge_wsgi.state import MemoryStore, StoreError
from mockforge_wsgi.state.base import CONNECTION_SLOTS
from mockforge_wsgi.state.degrading import RETRY_S, DegradingStore


class Outage(MemoryStore):
    """A memory store that other workers share (``workers`` of them alive), which can
    be made unreachable: every call then raises StoreError, and is counted."""

    def __init__(self, workers: int = 4, *, shared: bool = True) -> None:
        super().__init__()
        self.shared = shared
        self.up = True
        self.calls = 0
        self.workers = workers

    def _reach(self) -> None:
        self.calls += 1
        if not self.up:
            raise StoreError("store unreachable")

    def live_workers(self) -> int:
        self._reach()
        return self.workers


def _reaching(name: str) -> Any:
    def method(self: Outage, *args: Any, **kwargs: Any) -> Any:
        self._reach()
        return getattr(MemoryStore, name)(self, *args, **kwargs)

    return method


for _name in ("acquire", "take", "acquire_slot", "release_slot", "incr", "set_counter"):
    setattr(Outage, _name, _reaching(_name))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def degrading(inner: Outage, mode: str = "local") -> tuple[DegradingStore, Clock, list[Any]]:
    clock, reports = Clock(), []
    store = DegradingStore(
        inner,
        mode=lambda: mode,
        report=lambda doing, error: reports.append((doing, error)),
        clock=clock,
    )
    return store, clock, reports


def limits(**more: Any) -> RateLimitConfig:
    rate_limit = {"enabled": True, "requests_per_second": 40, "burst_size": 8, **more}
    return load_config(environ={}, overrides={"rate_limit": rate_limit}).rate_limit


def admitted(
    limiter: RateLimiter, config: RateLimitConfig, clock: Clock, seconds: float, **keys: str
) -> int:
    """Requests every 2.5 ms (400 a second, ten times the limit) for ``seconds``."""
    count = 0
    for _ in range(int(seconds * 400)):
        clock.now += 0.0025
        client, endpoint = keys.get("client", ""), keys.get("endpoint", "")
        verdict = limiter.check(config, client, endpoint, clock.now)
        assert verdict is not None
        count += verdict.allowed
    return count


@pytest.mark.parametrize("shared", [False, True], ids=["exact", "lease"])
def test_while_down_each_worker_limits_at_its_share_then_shares_again(shared: bool) -> None:
    inner = Outage(workers=4, shared=shared)
    store, clock, reports = degrading(inner)
    limiter = RateLimiter(store)
    config = limits()
    assert admitted(limiter, config, clock, 2.0) == pytest.approx(8 + 2 * 40, abs=2)
    assert store.workers == 4  # learned from the store while it answered
    inner.up, calls = False, inner.calls
    during = admitted(limiter, config, clock, 10.0)
    # A quarter of the rate (10/s) and of the burst (2): 102, not the whole 408.
    assert during == pytest.approx(2 + 10 * 10, abs=2)
    # No store call per request while down: one try a second.
    assert inner.calls - calls <= 10.0 / RETRY_S + 1
    assert reports and all(doing.startswith(("checking", "taking")) for doing, _ in reports)
    verdict = limiter.check(config, "", "", clock.now)
    assert verdict is not None and verdict.outcome.limit == 2  # the headers say the share
    inner.up = True
    clock.now += RETRY_S  # the next call tries the store again
    after = admitted(limiter, config, clock, 2.0)
    assert not store.down
    assert after == pytest.approx(8 + 2 * 40, abs=2)  # the shared limit again, from the store


def test_per_ip_and_per_endpoint_limits_degrade_to_the_share_too() -> None:
    inner = Outage(workers=2)
    store, clock, _ = degrading(inner)
    limiter = RateLimiter(store)
    config = limits(global_limit=False, per_ip=True, per_endpoint=True)
    admitted(limiter, config, clock, 0.1, client="10.0.0.1", endpoint="/a")  # learns 2
    inner.up = False
    clock.now += 10  # every bucket full again
    per_ip = admitted(limiter, config, clock, 5.0, client="10.0.0.2", endpoint="/a")
    assert per_ip == pytest.approx(4 + 20 * 5, abs=2)  # half of 40/s, half of the burst


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_open_and_closed_raise_for_the_caller_and_skip_the_store_while_down(mode: str) -> None:
    inner = Outage()
    store, clock, reports = degrading(inner, mode)
    limiter = RateLimiter(store)
    inner.up = False
    for _ in range(50):
        clock.now += 0.01
        with pytest.raises(StoreError):
            limiter.check(limits(store_mode="exact"), "", "", clock.now)
    assert inner.calls == 1  # tried once; skipped for RETRY_S after
    assert reports == []  # the caller counts what it serves without the store
    with pytest.raises(StoreError):
        store.acquire_slot(CONNECTION_SLOTS, 4, 0)


def test_slots_taken_locally_are_given_back_locally_and_nothing_leaks() -> None:
    inner = Outage(workers=4)
    store, clock, _ = degrading(inner)
    assert store.acquire_slot(CONNECTION_SLOTS, 8, 0)  # the store's, before the outage
    inner.up = False
    taken = [store.acquire_slot(CONNECTION_SLOTS, 8, 0) for _ in range(3)]
    assert taken == [True, True, False]  # this worker's share: 8 // 4
    assert [store.acquire_slot("bulkhead:global", 2, 0) for _ in range(2)] == [True, False]
    assert store.local.slots_in_use(CONNECTION_SLOTS) == 2
    store.release_slot(CONNECTION_SLOTS)  # while down: a local one goes back first
    assert store.local.slots_in_use(CONNECTION_SLOTS) == 1
    inner.up = True
    clock.now += RETRY_S
    assert store.acquire_slot(CONNECTION_SLOTS, 8, 0)  # shared again: from the store
    for _ in range(3):
        store.release_slot(CONNECTION_SLOTS)
    store.release_slot("bulkhead:global")
    assert store.local.slots_in_use(CONNECTION_SLOTS) == 0
    assert store.local.slots_in_use("bulkhead:global") == 0
    assert inner.slots_in_use(CONNECTION_SLOTS) == 0  # nothing leaked on either side
    assert inner.slots_in_use("bulkhead:global") == 0


def test_a_worker_share_of_a_small_pool_is_one_place() -> None:
    inner = Outage(workers=4)
    store, _, _ = degrading(inner)
    store.incr("warm-up")  # not a beat: the count is learned on limits and places
    assert store.acquire_slot("active:global", 3, 0)
    store.release_slot("active:global")
    inner.up = False
    assert [store.acquire_slot("active:global", 3, 0) for _ in range(2)] == [True, False]


CHAOS = {
    "enabled": True,
    "seed": 7,  # requests are numbered in the store: numbered locally while it is down
    "rate_limit": {"enabled": True, "requests_per_second": 1, "burst_size": 2},
    "traffic_shaping": {"enabled": True, "max_connections": 8},
    "bulkhead": {"enabled": True, "max_concurrent": 8},
    "max_active_faults": 8,
    "latency": {"enabled": True, "fixed_delay_ms": 1},
}


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def test_through_the_middleware_the_limit_stays_and_errors_are_the_stores() -> None:
    inner = Outage(workers=1, shared=False)
    config = load_config(environ={}, overrides=CHAOS)
    middleware = ChaosMiddleware(hello, config=config, store=inner)
    client = Client(middleware)
    inner.up = False
    statuses = [client.get("/").status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]  # the burst of 2, then refused: not unlimited
    assert middleware.internal_errors == 0
    assert middleware.store_errors >= 5
    assert inner.counters()["store_errors"] == middleware.decider.store_errors
    places = middleware.decider.places
    assert isinstance(places, DegradingStore)
    for pool in (CONNECTION_SLOTS, "bulkhead:global", "active:global"):
        assert places.local.slots_in_use(pool) == 0  # the admitted ones gave theirs back
        assert inner.slots_in_use(pool) == 0


def test_the_default_is_local() -> None:
    assert load_config(environ={}).on_store_error == "local"


def test_a_worker_that_starts_with_the_store_down_takes_its_share_of_the_workers_started() -> None:
    """Never reached: no live count yet, so the workers the server was started with
    (gunicorn's -w) divide the limit, not 1 (each worker admitting the whole limit)."""
    inner = Outage(workers=4)
    inner.up = False
    limiter_of = {}
    for started_with in (1, 4):
        store = DegradingStore(
            inner, mode=lambda: "local", report=lambda doing, error: None, workers=started_with
        )
        limiter_of[started_with] = RateLimiter(store)
    limits = RateLimitConfig(enabled=True, requests_per_second=1.0, burst_size=20)
    admitted = {
        n: sum(limiter.check(limits, "c", "GET /", 0.0).allowed for _ in range(30))
        for n, limiter in limiter_of.items()
    }
    assert admitted == {1: 20, 4: 5}


def _loading(owner: Any) -> Any:
    """gunicorn's frame of ``owner`` (a worker's load_wsgi, an app's wsgi()) on the stack."""
    from mockforge_wsgi._gunicorn import loaded_by_gunicorn

    def wsgi(self: Any) -> Any:
        return loaded_by_gunicorn()

    return wsgi(owner)


def test_gunicorn_says_how_many_workers_it_was_started_with() -> None:
    from gunicorn.app.wsgiapp import WSGIApplication
    from gunicorn.config import Config
    from gunicorn.workers.sync import SyncWorker

    from mockforge_wsgi._gunicorn import Loaded, loaded_by_gunicorn

    cfg = Config()
    cfg.set("workers", 3)
    worker = object.__new__(SyncWorker)
    worker.cfg = cfg
    assert _loading(worker) == Loaded(3, in_worker=True)
    application = object.__new__(WSGIApplication)  # the master, loading with --preload
    application.cfg = cfg
    assert _loading(application) == Loaded(3, in_worker=False)
    assert loaded_by_gunicorn() is None  # not loaded by gunicorn
