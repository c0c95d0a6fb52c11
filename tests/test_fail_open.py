"""Our own failures never look like chaos: a store failing on any one method yields the
app's own answer, counted, and logged once per outage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.state import MemoryStore, Store, StoreError
from mockforge_wsgi.state.base import CONNECTION_SLOTS

# Every method of the Store interface, and who survives its failure on the way of a
# request to the app (with the config below): the middleware (the app's own answer, or
# this worker's share of the limits, counted in its ``store_errors``), the engine (the
# last known config, counted in its ``store_errors``), or nobody needs to (not on the
# request path).
ON_THE_REQUEST_PATH = {
    "acquire": "middleware",  # the rate-limit check (store_mode: exact)
    "take": "middleware",  # the rate-limit check (store_mode: lease, the default)
    "count": "middleware",  # event counters
    "acquire_slot": "middleware",  # max_connections
    "release_slot": "middleware",
    "incr": "middleware",  # event counters, the pattern's and the seed's request numbers
    "state_version": "engine",  # polled per request (this store does not notify)
    "load_state": "engine",
    "set_counter": None,
    "counters": None,
    "save_state": None,
    "replace_state": None,  # a guard's trip, in its watcher's thread
    "init_state": None,
    "tracked_keys": None,
    "slots_in_use": None,
    "reset": None,
    "release_worker": None,
}


def test_the_table_names_every_store_method() -> None:
    optional = {"release_worker", "count"}
    assert set(ON_THE_REQUEST_PATH) == set(Store.__abstractmethods__) | optional


class FailingStore(MemoryStore):
    """A memory store whose method named ``failing`` raises, as an unreachable store."""

    failing: str | None = None
    shared = True  # rate limits are leased, as from a store other processes share

    def subscribe(self, callback: Callable[[], None]) -> bool:
        return False  # like a shared store: polled by version


def _failable(name: str) -> Callable[..., Any]:
    def method(self: FailingStore, *args: Any, **kwargs: Any) -> Any:
        if self.failing == name:
            raise StoreError(f"{name}: store unreachable")
        return getattr(MemoryStore, name)(self, *args, **kwargs)

    return method


for _name in ON_THE_REQUEST_PATH:
    setattr(FailingStore, _name, _failable(_name))


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def answer(client: Client) -> tuple[int, bytes]:
    """One request, its response closed as a server closes it (giving its slot back)."""
    response = client.get("/")
    body = response.data
    response.close()
    return response.status_code, body


CONFIG = {
    "enabled": True,
    "seed": 7,  # numbers requests in the store
    "rate_limit": {"enabled": True, "requests_per_second": 10_000, "burst_size": 1000},
    # Slots a failing release keeps are the store's to expire (tests/test_state_*):
    # room for them here, so each request shows the middleware's own behaviour.
    "traffic_shaping": {"enabled": True, "max_connections": 50},
    "fault_injection": {"enabled": True, "pattern": "every:1000000:503"},
    "latency": {"enabled": True, "fixed_delay_ms": 1},  # an injection to count
}


@pytest.mark.parametrize("on_store_error", ["local", "open"])
@pytest.mark.parametrize("method", sorted(ON_THE_REQUEST_PATH))
def test_a_store_failing_on_any_method_serves_the_app(
    method: str, on_store_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = FailingStore()
    mode = "exact" if method == "acquire" else "lease"
    overrides = {
        **CONFIG,
        "rate_limit": {**CONFIG["rate_limit"], "store_mode": mode},  # type: ignore[dict-item]
        "on_store_error": on_store_error,
    }
    config = load_config(environ={}, overrides=overrides)
    middleware = ChaosMiddleware(hello, config=config, store=store)
    client = Client(middleware)
    assert answer(client) == (200, b"hello")
    store.failing = method
    MemoryStore.save_state(store, {**store._state})  # type: ignore[dict-item]  # re-read
    with caplog.at_level(logging.WARNING, logger="mockforge_wsgi"):
        answers = [answer(client) for _ in range(20)]
    assert answers == [(200, b"hello")] * 20
    survivor = ON_THE_REQUEST_PATH[method]
    assert middleware.internal_errors == 0  # an unreachable store is no bug of ours
    errors = middleware.decider.store_errors if survivor == "middleware" else 0
    errors += middleware.engine.store_errors if survivor == "engine" else 0
    if survivor is None:
        assert middleware.store_errors == 0
        assert not caplog.records
    else:
        assert errors >= 20, (middleware.decider.store_errors, middleware.engine.store_errors)
        assert len(caplog.records) == 1, caplog.records  # one line per outage


def test_an_unreachable_store_at_a_workers_exit_does_not_reach_the_master() -> None:
    from types import SimpleNamespace

    from mockforge_wsgi.cli import _child_exit

    store = FailingStore()
    store.failing = "release_worker"
    _child_exit(store, None, None, SimpleNamespace(pid=12345))  # gunicorn's hook: no raise


@pytest.mark.parametrize("method", ["acquire_slot", "count", "take"])
def test_a_bug_of_ours_in_the_store_fails_open_too(method: str) -> None:
    """Not only an unreachable store: any exception where a request touches the store
    (a connection slot included) yields the app's own answer, counted."""

    class Buggy(FailingStore):
        pass

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug of ours")

    setattr(Buggy, method, broken)
    config = load_config(environ={}, overrides=CONFIG)
    middleware = ChaosMiddleware(hello, config=config, store=Buggy())
    client = Client(middleware)
    assert [answer(client) for _ in range(5)] == [(200, b"hello")] * 5
    assert middleware.internal_errors >= 5
    assert middleware.store.slots_in_use(CONNECTION_SLOTS) == 0


def test_the_watcher_of_held_requests_counts_a_poll_the_store_failed() -> None:
    """release.py polls the state's version while anything is held: a failed poll is
    tried again at the next, and counted as the store's error (not raised to a request)."""

    class Unwatchable(FailingStore):
        def watch_version(self) -> int:
            raise StoreError("store unreachable")

    config = load_config(environ={}, overrides=CONFIG)
    middleware = ChaosMiddleware(hello, config=config, store=Unwatchable())
    with pytest.raises(StoreError):  # release.py's watcher catches it and polls again
        middleware.engine.watched_version()
    assert (middleware.store_errors, middleware.internal_errors) == (1, 0)
