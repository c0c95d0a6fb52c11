"""Bulkheads: a route's own concurrency cap, in a named slot pool of the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.config import ConfigError, config_from_dict
from mockforge_wsgi.state import MemoryStore, StoreError
from mockforge_wsgi.state.embedded import EmbeddedStore


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def wrapped(store: Any, **chaos: Any) -> Client:
    config = load_config(environ={}, overrides={"enabled": True, **chaos})
    return Client(ChaosMiddleware(hello, config=config, store=store))


def test_a_full_bulkhead_answers_503_and_a_place_comes_back_after_each_answer() -> None:
    store = MemoryStore()
    client = wrapped(store, bulkhead={"enabled": True, "max_concurrent": 1, "retry_after_s": 3})
    for _ in range(3):  # one at a time: the place comes back each time
        assert client.get("/x").status_code == 200
    assert store.slots_in_use("bulkhead:global") == 0
    assert store.acquire_slot("bulkhead:global", 1, 0)  # someone else holds the only place
    full = client.get("/x")
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "3"
    assert full.headers["X-Mockforge-Chaos"] == "bulkhead=full"
    assert full.get_json() == {"error": "bulkhead full", "injected_by": "mockforge"}
    assert store.counters()["bulkhead_full"] == 1


def test_a_rule_has_its_own_pool_and_the_connection_slot_goes_back_when_it_is_full() -> None:
    store = MemoryStore()
    rules = [{"match": {"path": "/pay"}, "bulkhead": {"enabled": True, "max_concurrent": 1}}]
    client = wrapped(
        store,
        rules=rules,
        traffic_shaping={"enabled": True, "max_connections": 5},
    )
    assert store.acquire_slot("bulkhead:0", 1, 0)
    assert client.get("/pay").status_code == 503
    assert client.get("/other").status_code == 200  # no bulkhead there
    assert store.slots_in_use("connections") == 0  # the busy answer gave its slot back
    store.release_slot("bulkhead:0")
    assert client.get("/pay").status_code == 200
    assert store.slots_in_use("bulkhead:0") == 0


def test_a_place_comes_back_when_the_app_raises() -> None:
    store = MemoryStore()

    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("the app failed")

    config = load_config(environ={}, overrides={"enabled": True, "bulkhead": {"enabled": True}})
    client = Client(ChaosMiddleware(broken, config=config, store=store))
    with pytest.raises(RuntimeError):
        client.get("/x")
    assert store.slots_in_use("bulkhead:global") == 0


class DownStore(MemoryStore):
    def acquire_slot(self, name: str, limit: int, timeout_s: float) -> bool:
        raise StoreError("down")


@pytest.mark.parametrize("on_store_error", ["open", "local"])
def test_an_unreachable_store_serves_without_the_cap_or_with_a_local_share(
    on_store_error: str,
) -> None:
    overrides = {"enabled": True, "bulkhead": {"enabled": True}, "on_store_error": on_store_error}
    config = load_config(environ={}, overrides=overrides)
    seen = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(local.slots_in_use("bulkhead:global"))  # while the app answers
        return hello(environ, start_response)

    middleware = ChaosMiddleware(app, config=config, store=DownStore())
    local = getattr(middleware.decider.places, "local")  # noqa: B009 (a DegradingStore's)
    assert Client(middleware).get("/x").status_code == 200
    assert (middleware.internal_errors, middleware.store_errors) == (0, 1)
    held = 1 if on_store_error == "local" else 0  # taken and given back locally
    assert (seen, local.slots_in_use("bulkhead:global")) == ([held], 0)


def test_named_pools_of_the_embedded_store_are_apart(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    assert store.acquire_slot("bulkhead:0", 1, 0)
    assert not store.acquire_slot("bulkhead:0", 1, 0)
    assert store.acquire_slot("connections", 1, 0)  # another pool: free
    store.release_slot("bulkhead:0")
    assert store.slots_in_use("bulkhead:0") == 0
    assert store.slots_in_use("connections") == 1


def test_at_most_16_rules_have_a_bulkhead_of_their_own() -> None:
    rules = [{"match": {"path": f"/{n}"}, "bulkhead": {"enabled": True}} for n in range(17)]
    with pytest.raises(ConfigError, match=r"17 rules have a bulkhead; at most 16"):
        config_from_dict({"rules": rules})


def test_a_half_open_probe_refused_by_the_bulkhead_is_still_counted_by_the_breaker() -> None:
    """Else the breaker waits forever on a probe that never answers through it."""
    store = MemoryStore()
    client = wrapped(
        store,
        bulkhead={"enabled": True, "max_concurrent": 1},
        circuit_breaker={"enabled": True, "failure_threshold": 1, "cooldown_s": 0.1},
    )
    client.post("/api/chaos/breakers/global", json={"action": "open"})
    time.sleep(0.15)  # half-open now
    assert store.acquire_slot("bulkhead:global", 1, 0)  # the bulkhead is full
    assert client.get("/x").status_code == 503  # the probe, refused by the bulkhead
    store.release_slot("bulkhead:global")
    status = client.get("/api/chaos/breakers").get_json()["breakers"][0]
    assert status["state"] == "open"  # the failed probe opened it again: not stuck
