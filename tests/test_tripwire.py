"""The guard's decision and its watcher (tripwire.py), and the engine's side of a trip:
chaos off as /disable does, shown in /status until the next enable or reset, counted
once; max_duration_s with no traffic; our own failures fail open."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from werkzeug.test import Client

from mockforge_wsgi.answer_window import Figures
from mockforge_wsgi.config import GuardConfig, config_from_dict
from mockforge_wsgi.engine import ScenarioEngine
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.release import RELEASER
from mockforge_wsgi.state import MemoryStore, StoreError
from mockforge_wsgi.state.embedded import EmbeddedStore
from mockforge_wsgi.tripwire import trip_reason

GUARD = GuardConfig(max_error_ratio=0.5, max_p99_ms=200.0, window_s=5.0, min_requests=10)


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        pytest.param(Figures(9, 9, 1.0, 5.0), None, id="under-min_requests"),
        pytest.param(Figures(10, 5, 1.0, 5.0), None, id="ratio-at-the-bound"),
        pytest.param(Figures(10, 6, 1.0, 5.0), "max_error_ratio: ", id="ratio-above"),
        pytest.param(Figures(10, 0, 200.0, 5.0), None, id="p99-at-the-bound"),
        pytest.param(Figures(10, 0, 201.0, 5.0), "max_p99_ms: ", id="p99-above"),
        pytest.param(Figures(10, 0, None, 5.0), None, id="no-times"),
    ],
)
def test_trip_reason_over_the_window(figures: Figures, expected: str | None) -> None:
    decided = trip_reason(GUARD, figures, None)
    if expected is None:
        assert decided is None
    else:
        assert decided is not None
        reason, shown = decided
        assert reason.startswith(expected), reason
        assert shown == figures.to_dict()


def test_unset_bounds_never_trip() -> None:
    assert trip_reason(GuardConfig(), Figures(10_000, 10_000, 60_000.0, 5.0), 1e9) is None


def test_trip_reason_after_max_duration() -> None:
    guard = GuardConfig(max_duration_s=60.0)
    assert trip_reason(guard, None, 59.9) is None
    assert trip_reason(guard, None, None) is None  # on since start: no deadline
    reason, shown = trip_reason(guard, None, 60.0) or ("", {})
    assert reason.startswith("max_duration_s: ")
    assert shown == {"on_for_s": 60.0, "max_duration_s": 60.0}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _engine(guard: dict[str, Any], clock: Any = time.time) -> ScenarioEngine:
    config = config_from_dict({"enabled": False, "guard": guard})
    return ScenarioEngine(config, store=MemoryStore(), clock=clock)


def _until(condition: Any, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_max_duration_with_no_traffic_and_renewal() -> None:
    clock = Clock()
    engine = _engine({"max_duration_s": 60}, clock)
    engine.set_enabled(True)
    assert engine.tripwire.running  # switched on by the API: the watcher waits for it
    assert engine.guard_status()["expires_at"] == clock.now + 60
    clock.now += 50
    engine.renew()
    clock.now += 50  # 100 s on, 50 since the renewal
    engine.tripwire.changed()
    time.sleep(0.1)
    assert engine.state().enabled
    clock.now += 10.5
    engine.tripwire.changed()  # the watcher looks at the (fake) clock again
    assert _until(lambda: not engine.state().enabled)
    guard = engine.status()["guard"]
    assert guard["tripped"] and guard["reason"].startswith("max_duration_s: ")
    assert guard["figures"] == {"on_for_s": 60.5, "max_duration_s": 60.0}
    assert engine.store.counters()["guard_tripped"] == 1
    assert _until(lambda: not engine.tripwire.running)  # chaos off: the watcher ends


def test_max_duration_trips_by_itself() -> None:
    """No request, no call, a real clock: the watcher's own timer turns chaos off."""
    engine = _engine({"max_duration_s": 1})
    engine.set_enabled(True)
    started = time.monotonic()
    assert _until(lambda: not engine.state().enabled, within_s=5.0)
    assert 0.9 <= time.monotonic() - started < 3.0
    assert engine.status()["guard"]["tripped"]


def test_chaos_on_since_start_counts_max_duration_from_the_start() -> None:
    """Chaos on in the config: the deadline counts from the start (and from a reset,
    which brings the startup state back); chaos off at start has none."""
    now = [1000.0]
    config = config_from_dict({"enabled": True, "guard": {"max_duration_s": 30}})
    engine = ScenarioEngine(config, store=MemoryStore(), clock=lambda: now[0])
    assert engine.guard_status()["expires_at"] == 1030.0
    now[0] = 1029.0
    assert engine.tripwire.check() is None
    now[0] = 1030.0
    assert (engine.tripwire.check() or "").startswith("max_duration_s: chaos was on for 30.0 s")
    assert not engine.state().enabled
    now[0] = 2000.0
    engine.reset()
    assert engine.state().enabled
    assert engine.guard_status()["expires_at"] == 2030.0
    off = ScenarioEngine(attrs.evolve(config, enabled=False), store=MemoryStore())
    assert off.guard_status()["expires_at"] is None


def test_a_trip_is_a_disable_releasing_held_requests() -> None:
    engine = _engine({"max_error_ratio": 0.5})
    engine.set_enabled(True)
    released: list[bool] = []
    basis = engine.basis
    holder = threading.Thread(
        target=lambda: released.append(
            not RELEASER.hold(10.0, source=engine, wanted=lambda: engine.still_holds(basis))
        )
    )
    holder.start()
    time.sleep(0.05)
    assert engine.trip("max_error_ratio: test", {"requests": 10})
    holder.join(2.0)
    assert released == [True]
    assert not engine.state().enabled


def test_a_trip_is_shown_until_the_next_enable_or_reset() -> None:
    engine = _engine({"max_error_ratio": 0.5})
    engine.set_enabled(True)
    armed = engine.state().guard_armed_at
    assert engine.trip("max_error_ratio: test", {"requests": 10}, armed_at=armed)
    assert not engine.trip("max_error_ratio: again", {}, armed_at=armed)  # off already
    assert engine.store.counters()["guard_tripped"] == 1
    engine.set_enabled(False)  # a manual disable keeps it shown
    assert engine.status()["guard"]["tripped"]
    engine.set_enabled(True)
    assert engine.status()["guard"] == {
        "tripped": False,
        "reason": None,
        "at": None,
        "figures": None,
        "expires_at": None,
    }
    assert not engine.trip("stale", {}, armed_at=armed)  # figures of the run before
    engine.trip("max_error_ratio: test", {})
    engine.reset()
    assert not engine.status()["guard"]["tripped"]


def test_a_scenario_keeps_the_servers_guard() -> None:
    engine = _engine({"max_duration_s": 30})
    engine.activate("network_degradation")
    assert engine.effective().guard.max_duration_s == 30
    assert engine.guard_status()["expires_at"] is not None


def _failing_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")])
    return [b"the app failed"]


def test_the_apps_errors_turn_chaos_off_in_process() -> None:
    config = config_from_dict(
        {
            "enabled": True,
            "latency": {"fixed_delay_ms": 1},
            "guard": {"max_error_ratio": 0.5, "window_s": 5, "min_requests": 10},
        }
    )
    middleware = ChaosMiddleware(_failing_app, config=config)
    client = Client(middleware)
    for _ in range(20):
        assert client.get("/x").status_code == 500
    assert _until(lambda: not middleware.engine.state().enabled)
    guard = client.get("/api/chaos/status").get_json()["guard"]
    assert guard["tripped"] and guard["reason"].startswith("max_error_ratio: ")
    assert guard["figures"]["requests"] >= 10


class BrokenStore(MemoryStore):
    error: Exception = StoreError("the store is down")

    def add_counts(self, amounts: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (StoreError("the store is down"), "store_errors"),
        (RuntimeError("a bug"), "internal_errors"),
    ],
)
def test_a_failing_guard_fails_open(error: Exception, counted: str) -> None:
    """An unreachable store is counted as a store error, a bug of ours as an internal
    one: either way chaos stays as it was and the app's answers go out unharmed."""
    config = config_from_dict(
        {"enabled": True, "guard": {"max_error_ratio": 0.5, "min_requests": 1}}
    )
    store = BrokenStore()
    store.error = error
    middleware = ChaosMiddleware(_failing_app, config=config, store=store)
    client = Client(middleware)
    for _ in range(5):
        response = client.get("/x")
        assert response.status_code == 500 and "X-Mockforge-Chaos" not in response.headers
    assert _until(lambda: getattr(middleware, counted) > 0)
    time.sleep(0.3)
    assert middleware.engine.state().enabled  # chaos stays as it was
    assert middleware.engine.store.counters()[counted] >= 1


def test_renew_through_the_api() -> None:
    config = config_from_dict({"enabled": False, "guard": {"max_duration_s": 60}})
    middleware = ChaosMiddleware(_failing_app, config=config)
    client = Client(middleware)
    client.post("/api/chaos/enable")
    first = client.get("/api/chaos/status").get_json()["guard"]["expires_at"]
    time.sleep(0.02)
    renewed = client.post("/api/chaos/guard/renew").get_json()
    assert renewed["expires_at"] > first
    assert not renewed["tripped"]


def test_the_metric_counts_trips() -> None:
    pytest.importorskip("prometheus_client")
    from mockforge_wsgi.metrics import ChaosMetrics

    engine = _engine({"max_error_ratio": 0.5})
    engine.set_enabled(True)
    engine.trip("max_error_ratio: test", {})
    text, _ = ChaosMetrics(engine).exposition()
    assert b"mockforge_chaos_guard_tripped_total 1.0" in text


def test_the_pytest_plugin_names_a_trip() -> None:
    from mockforge_wsgi import pytest_plugin

    tripped = {"tripped": True, "reason": "max_error_ratio: 12 errors", "at": 1.0}

    class Stub:
        def status(self) -> dict[str, Any]:
            return {"counters": {}, "effective_config": {}, "recorder": False, "guard": tripped}

    class Config:
        stash: dict[Any, Any] = {}

        def getoption(self, name: str) -> bool:
            return False

    class Node:
        nodeid = "test_x.py::test_x"
        user_properties: list[tuple[str, str]] = []

    class Request:
        config, node = Config(), Node()

    request: Any = Request()
    pytest_plugin._summarize(Stub(), request)  # type: ignore[arg-type]
    [line] = request.config.stash[pytest_plugin.SUMMARY]
    assert line.endswith("; guard tripped: max_error_ratio: 12 errors")
    assert ("chaos_guard_tripped", "max_error_ratio: 12 errors") in Node.user_properties


class RacingStore(MemoryStore):
    """Another process trips between this one's read of the state and its save."""

    other: ScenarioEngine | None = None

    def replace_state(self, state: dict[str, Any], version: int) -> int:
        other, self.other = self.other, None
        if other is not None:
            assert other.trip("max_duration_s: the other worker", {})
        return super().replace_state(state, version)


def test_two_processes_tripping_at_once_count_it_once() -> None:
    """Both judged chaos on at the same version; the second to save finds the version
    moved, writes nothing and does not count: one trip, the winner's."""
    config = config_from_dict({"enabled": True, "guard": {"max_duration_s": 30}})
    store = RacingStore()
    one = ScenarioEngine(config, store=store)
    other = ScenarioEngine(config, store=store)
    store.other = other
    assert one.trip("max_duration_s: this worker", {}) is False
    assert store.counters()["guard_tripped"] == 1
    assert not one.state().enabled
    assert one.guard_status()["reason"] == "max_duration_s: the other worker"


def test_replace_state_writes_only_at_the_version_given(tmp_path: Path) -> None:
    for store in (MemoryStore(), EmbeddedStore(tmp_path)):
        version = store.save_state({"n": 1})
        assert store.replace_state({"n": 2}, version) == version + 1
        assert store.replace_state({"n": 3}, version) == 0  # moved: nothing written
        assert store.load_state() == (version + 1, {"n": 2})
