"""max_active_faults: the most requests injected chaos holds at once, in a named slot
pool of the store (the unit side; the server side is tests/test_active_faults_server.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.active_faults import most_held
from mockforge_wsgi.config import ConfigError, config_from_dict
from mockforge_wsgi.state import MemoryStore, StoreError
from mockforge_wsgi.state.embedded import EmbeddedStore

GLOBAL = "active_faults:global"


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def middleware(store: Any, app: Any = hello, **chaos: Any) -> ChaosMiddleware:
    config = load_config(environ={}, overrides={"enabled": True, **chaos})
    return ChaosMiddleware(app, config=config, store=store)


def slow(ms: float = 20.0, cap: int | None = 2, **more: Any) -> dict[str, Any]:
    return {"max_active_faults": cap, "latency": {"fixed_delay_ms": ms}, **more}


def test_over_the_cap_a_request_gets_no_chaos_at_all_annotated_and_counted() -> None:
    store = MemoryStore()
    faults = {"http_error_probability": 1.0, "http_errors": [503]}
    client = Client(middleware(store, **slow(2000, cap=1, fault_injection=faults)))
    assert store.acquire_slot(GLOBAL, 1, 0)  # another request holds the only place
    started = time.monotonic()
    answer = client.get("/x")
    assert time.monotonic() - started < 0.5  # no latency...
    assert answer.status_code == 200  # ...and not its 503 either
    assert answer.data == b"hello"
    assert answer.headers["X-Mockforge-Chaos"] == "max_active_faults=reached"
    assert store.counters()["fault_overflow"] == 1
    assert "latency" not in store.counters()
    assert store.slots_in_use(GLOBAL) == 1  # nothing taken for it


def test_a_place_comes_back_after_each_answer() -> None:
    store = MemoryStore()
    client = Client(middleware(store, **slow(5, cap=1)))
    for _ in range(3):  # one at a time: each gets its latency
        answer = client.get("/x")
        assert answer.headers["X-Mockforge-Chaos"] == "latency=5ms"
    assert store.slots_in_use(GLOBAL) == 0
    assert "fault_overflow" not in store.counters()


def test_two_of_six_concurrent_requests_are_held_the_rest_answer_at_once(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    app = middleware(store, **slow(600, cap=2))
    took: list[tuple[float, str]] = []
    lock = threading.Lock()

    def one() -> None:
        started = time.monotonic()
        answer = Client(app).get("/x")
        with lock:
            took.append((time.monotonic() - started, answer.headers["X-Mockforge-Chaos"]))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = sorted(t for t, annotation in took if annotation == "latency=600ms")
    at_once = [t for t, annotation in took if annotation == "max_active_faults=reached"]
    assert len(held) == 2 and len(at_once) == 4, took
    assert all(t >= 0.55 for t in held)
    assert all(t < 0.4 for t in at_once)
    assert store.slots_in_use(GLOBAL) == 0
    assert store.counters()["fault_overflow"] == 4


def test_an_instant_fault_holds_nothing_and_is_never_capped() -> None:
    store = MemoryStore()
    faults = {"http_error_probability": 1.0, "http_errors": [503]}
    client = Client(middleware(store, max_active_faults=1, fault_injection=faults))
    assert store.acquire_slot(GLOBAL, 1, 0)  # full
    assert client.get("/x").status_code == 503
    assert "fault_overflow" not in store.counters()


@pytest.mark.parametrize(
    "chaos",
    [
        {"fault_injection": {"timeout_probability": 1.0, "timeout_ms": 2000}},
        {"fault_injection": {"after_app_probability": 1.0, "after_app_fault": "stall"}},
        {"traffic_shaping": {"bandwidth_limit_bps": 1}},
        {"traffic_shaping": {"upload_bandwidth_limit_bps": 1}},
    ],
    ids=["timeout", "after-app-stall", "pacing", "upload-pacing"],
)
def test_every_kind_of_hold_takes_a_place(chaos: dict[str, Any]) -> None:
    store = MemoryStore()
    client = Client(middleware(store, max_active_faults=1, **chaos))
    assert store.acquire_slot(GLOBAL, 1, 0)  # full: each is served unharmed at once
    started = time.monotonic()
    answer = client.post("/x", data=b"body")
    assert answer.status_code == 200 and answer.data == b"hello"
    assert time.monotonic() - started < 0.5
    assert answer.headers["X-Mockforge-Chaos"] == "max_active_faults=reached"


def test_the_place_comes_back_when_the_app_raises() -> None:
    store = MemoryStore()

    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("the app failed")

    client = Client(middleware(store, broken, **slow(5, cap=1)))
    with pytest.raises(RuntimeError):
        client.get("/x")
    assert store.slots_in_use(GLOBAL) == 0


def test_the_place_comes_back_when_chaos_off_releases_the_hold() -> None:
    store = MemoryStore()
    app = middleware(store, **slow(5000, cap=1))
    done: list[float] = []

    def held() -> None:
        started = time.monotonic()
        Client(app).get("/x")
        done.append(time.monotonic() - started)

    thread = threading.Thread(target=held)
    thread.start()
    deadline = time.monotonic() + 2
    while store.slots_in_use(GLOBAL) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    Client(app).post("/api/chaos/disable")
    thread.join(2)
    assert done and done[0] < 2
    assert store.slots_in_use(GLOBAL) == 0


def test_a_rule_with_its_own_cap_has_a_pool_of_its_own() -> None:
    store = MemoryStore()
    rules = [{"match": {"path": "/pay"}, "max_active_faults": 1}]
    client = Client(middleware(store, **slow(5, cap=1), rules=rules))
    assert store.acquire_slot(GLOBAL, 1, 0)  # the global pool is full
    assert client.get("/pay").headers["X-Mockforge-Chaos"] == "latency=5ms"
    assert client.get("/other").headers["X-Mockforge-Chaos"] == "max_active_faults=reached"
    assert store.acquire_slot("active_faults:0", 1, 0)
    assert client.get("/pay").headers["X-Mockforge-Chaos"] == "max_active_faults=reached"


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def acquire_slot(self, name: str, limit: int, timeout_s: float) -> bool:
        self.asked += 1
        return super().acquire_slot(name, limit, timeout_s)


def test_unset_it_is_unlimited_and_asks_the_store_nothing() -> None:
    store = CountingStore()
    client = Client(middleware(store, **slow(1, cap=None)))
    for _ in range(3):
        assert client.get("/x").headers["X-Mockforge-Chaos"] == "latency=1ms"
    assert store.asked == 0


class DownStore(MemoryStore):
    def acquire_slot(self, name: str, limit: int, timeout_s: float) -> bool:
        raise StoreError("down")


def test_an_unreachable_store_serves_unharmed_counted_or_503_when_closed() -> None:
    app = middleware(DownStore(), **slow(2000, cap=1), on_store_error="open")
    started = time.monotonic()
    answer = Client(app).get("/x")
    assert answer.status_code == 200 and time.monotonic() - started < 0.5
    assert (app.internal_errors, app.store_errors) == (0, 1)
    closed = middleware(DownStore(), **slow(2000, cap=1), on_store_error="closed")
    assert Client(closed).get("/x").status_code == 503


def test_a_scenario_keeps_the_servers_cap() -> None:
    store = MemoryStore()
    client = Client(middleware(store, max_active_faults=1))
    assert client.post("/api/chaos/scenarios/slow_backend").status_code == 200
    assert store.acquire_slot(GLOBAL, 1, 0)
    assert client.get("/x").headers["X-Mockforge-Chaos"] == "max_active_faults=reached"


@pytest.mark.parametrize("value", [0, 100_001, "many", 1.5])
def test_a_wrong_value_is_one_clear_error(value: Any) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"max_active_faults": value})
    assert len(error.value.problems) == 1
    assert error.value.problems[0].startswith("chaos.max_active_faults: ")
    with pytest.raises(ConfigError, match=r"rules\[0\]\.max_active_faults: "):
        config_from_dict({"rules": [{"match": {"path": "/x"}, "max_active_faults": value}]})


def test_null_the_env_and_a_rule_read_back() -> None:
    assert config_from_dict({"max_active_faults": None}).max_active_faults is None
    config = load_config(environ={"MOCKFORGE_CHAOS_MAX_ACTIVE_FAULTS": "4"})
    assert config.max_active_faults == 4
    rules = [{"match": {"path": "/pay"}, "max_active_faults": 3}]
    config = config_from_dict({"rules": rules})
    assert config_from_dict(config.to_dict()).rules[0].to_dict() == {
        "match": {"path": "/pay"},
        "max_active_faults": 3,
    }


def test_most_held_bounds_what_a_config_can_hold() -> None:
    assert most_held([config_from_dict({})]) == 0
    assert most_held([config_from_dict({"latency": {"fixed_delay_ms": 10}})]) is None
    assert most_held([config_from_dict(slow(10, cap=3))]) == 3
    rules = [{"match": {"path": "/pay"}, "max_active_faults": 2}]
    assert most_held([config_from_dict({**slow(10, cap=3), "rules": rules})]) == 5


def test_serve_warns_in_one_line_when_chaos_can_hold_every_thread() -> None:
    from mockforge_wsgi.cli import _all_threads_held
    from mockforge_wsgi.engine import ScenarioEngine

    def warning(**chaos: Any) -> str | None:
        config = config_from_dict(chaos)
        return _all_threads_held(ScenarioEngine(config, store=MemoryStore()), 2, 8)

    assert warning() is None  # nothing holds
    line = warning(latency={"fixed_delay_ms": 100})
    assert line is not None and "\n" not in line
    assert "all 16 threads" in line and "max_active_faults below 16" in line
    assert warning(latency={"fixed_delay_ms": 100}, max_active_faults=16) is not None
    assert warning(latency={"fixed_delay_ms": 100}, max_active_faults=12) is None
