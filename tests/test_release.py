"""Chaos off releases what it holds (release.py): the primitive, then every kind of hold
through the middleware, within 100 ms, in one process and across processes sharing an
embedded store (a change written by another process is seen by the watcher's poll).

Margins: the bound is 100 ms; on this 2-core VM shared with other test runs a thread
may wait its turn for tens of ms, so the in-process assertions allow 0.1 s + MARGIN_S.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from werkzeug.test import Client
from wsgi_apps import base_app

from mockforge_wsgi import load_config
from mockforge_wsgi.config import LatencyConfig, RateLimitConfig
from mockforge_wsgi.engine import ScenarioEngine
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.release import POLL_S, RELEASER, Releaser
from mockforge_wsgi.state import store_from_url

BOUND_S = 0.1
MARGIN_S = 0.15  # a loaded 2-core VM: thread scheduling, not the mechanism


class Source:
    """A stand-in for the engine: a version the test moves."""

    def __init__(self) -> None:
        self.version = 0
        self.polls = 0

    @property
    def known_version(self) -> int:
        return self.version

    def watched_version(self) -> int:
        self.polls += 1
        return self.version


def _in_thread(call: Callable[[], Any]) -> dict[str, Any]:
    """Run ``call`` in a thread; the dict gets its ``result`` and ``done`` (monotonic)."""
    seen: dict[str, Any] = {}

    def run() -> None:
        seen["result"] = call()
        seen["done"] = time.monotonic()

    seen["thread"] = thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return seen


def _finished(seen: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
    seen["thread"].join(within)
    assert "done" in seen, "still held"
    return seen


@contextlib.contextmanager
def _entering_holds() -> Iterator[set[int]]:
    """The threads that have entered a hold of this process's releaser (every held
    request's wait goes through ``RELEASER.hold``), while the block runs."""
    entered: set[int] = set()
    hold = RELEASER.hold

    def counted(*args: Any, **kwargs: Any) -> bool:
        entered.add(threading.get_ident())
        return hold(*args, **kwargs)

    vars(RELEASER)["hold"] = counted  # over the method, for this process's holds
    try:
        yield entered
    finally:
        vars(RELEASER).pop("hold")


def _held(seen: list[dict[str, Any]], entered: set[int]) -> None:
    """Until each request's thread is in a hold (5 s at most), and none has ended."""
    threads = {one["thread"].ident for one in seen}
    deadline = time.monotonic() + 5.0
    while not threads <= entered and time.monotonic() < deadline:
        time.sleep(0.005)
    assert threads <= entered, "not held"
    assert not any("done" in one for one in seen), "not held"


# -- the primitive ------------------------------------------------------------------


def test_a_hold_waits_its_time_when_nothing_releases_it() -> None:
    start = time.monotonic()
    assert Releaser().hold(0.15) is True
    assert 0.15 <= time.monotonic() - start < 0.15 + MARGIN_S


def test_release_wakes_every_hold_within_the_bound() -> None:
    releaser = Releaser()
    holds = [_in_thread(lambda: releaser.hold(5.0)) for _ in range(8)]
    time.sleep(0.1)
    released_at = time.monotonic()
    releaser.release()
    for seen in holds:
        _finished(seen)
        assert seen["result"] is False
        assert seen["done"] - released_at < BOUND_S + MARGIN_S


def test_a_hold_still_wanted_is_not_woken_for_good() -> None:
    """Woken by releases, asked, still wanted: it waits out its whole time."""
    releaser = Releaser()
    asked = []

    def wanted() -> bool:
        asked.append(time.monotonic())
        return True

    start = time.monotonic()
    seen = _in_thread(lambda: releaser.hold(0.4, wanted=wanted))
    for _ in range(3):
        time.sleep(0.05)
        releaser.release()
    _finished(seen)
    assert seen["result"] is True
    assert seen["done"] - start >= 0.4
    assert len(asked) == 4  # once before waiting, once per release


def test_a_hold_no_longer_wanted_before_it_starts_does_not_wait() -> None:
    start = time.monotonic()
    assert Releaser().hold(5.0, wanted=lambda: False) is False
    assert time.monotonic() - start < 0.05


def test_the_watcher_polls_only_while_something_is_held_and_releases_on_a_new_version() -> None:
    releaser, source = Releaser(), Source()
    seen = _in_thread(lambda: releaser.hold(5.0, source=source))
    time.sleep(0.1)
    assert releaser.held_sources() == 1
    assert source.polls >= 2  # polled every POLL_S while held
    moved_at = time.monotonic()
    source.version += 1
    _finished(seen)
    assert seen["result"] is False
    assert seen["done"] - moved_at < POLL_S + BOUND_S + MARGIN_S
    assert releaser.held_sources() == 0
    polls = source.polls
    time.sleep(0.1)
    assert source.polls <= polls + 1  # idle: no polling (one poll may have been under way)


def test_a_version_that_does_not_move_releases_nothing() -> None:
    releaser, source = Releaser(), Source()
    start = time.monotonic()
    assert releaser.hold(0.2, source=source) is True
    assert time.monotonic() - start >= 0.2


# -- through the middleware ---------------------------------------------------------


def _middleware(store_url: str = "memory://", **sections: Any) -> ChaosMiddleware:
    config = load_config(environ={}, overrides={"enabled": True, **sections})
    return ChaosMiddleware(base_app, config=config, store=store_from_url(store_url))


def _get(app: Any, path: str = "/", **kwargs: Any) -> Callable[[], Any]:
    def call() -> tuple[int, bytes, dict[str, str]]:
        response = Client(app).get(path, **kwargs)
        return response.status_code, response.get_data(), dict(response.headers)

    return call


def _released_by(
    app: ChaosMiddleware,
    change: Callable[[], None],
    path: str = "/",
    count: int = 4,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """``count`` requests held, then ``change``: each answered within the bound of it."""
    with _entering_holds() as entered:
        holds = [_in_thread(_get(app, path, **kwargs)) for _ in range(count)]
        _held(holds, entered)
    changed_at = time.monotonic()
    change()
    for seen in holds:
        _finished(seen)
        took = seen["done"] - changed_at
        assert took < BOUND_S + MARGIN_S, f"answered {took:.3f} s after the change"
    return holds


def test_disable_releases_requests_held_by_latency_and_the_app_answers() -> None:
    app = _middleware(latency={"enabled": True, "fixed_delay_ms": 5000})
    holds = _released_by(app, lambda: app.engine.set_enabled(False))
    assert all(seen["result"][:2] == (200, b"hello") for seen in holds)


def test_released_latency_skips_the_fault_planned_after_it() -> None:
    app = _middleware(
        latency={"enabled": True, "fixed_delay_ms": 5000},
        fault_injection={"enabled": True, "http_errors": [503], "http_error_probability": 1.0},
    )
    holds = _released_by(app, lambda: app.engine.set_enabled(False))
    assert all(seen["result"][:2] == (200, b"hello") for seen in holds)


def test_reset_releases_even_when_the_startup_config_holds_again() -> None:
    app = _middleware(latency={"enabled": True, "fixed_delay_ms": 5000})
    _released_by(app, app.engine.reset)


def test_a_shorter_delay_releases_the_longer_holds() -> None:
    app = _middleware(latency={"enabled": True, "fixed_delay_ms": 5000})
    shorter = LatencyConfig(enabled=True, fixed_delay_ms=10)
    _released_by(app, lambda: app.engine.update_config(latency=shorter))


def test_stopping_a_scenario_releases_its_holds() -> None:
    app = _middleware()
    app.engine.activate("slow_backend")
    _released_by(app, app.engine.stop)


def test_a_scenario_that_runs_out_releases_its_holds_with_nobody_asking() -> None:
    """No request and no management call comes: the watcher of the held requests sees
    the scenario's end fall due (slow_backend holds 2 s; it runs 0.4 s)."""
    app = _middleware()
    app.engine.activate("slow_backend", duration_s=0.4)
    start = time.monotonic()
    holds = [_in_thread(_get(app, "/")) for _ in range(3)]
    for seen in holds:
        _finished(seen)
        assert seen["result"][0] == 200
        assert 0.35 <= seen["done"] - start < 0.4 + POLL_S + BOUND_S + MARGIN_S


def test_a_change_that_holds_nothing_keeps_the_holds() -> None:
    """A rate-limit change wakes the holds; they ask, and hold on to the end."""
    app = _middleware(latency={"enabled": True, "fixed_delay_ms": 400})
    start = time.monotonic()
    seen = _in_thread(_get(app))
    time.sleep(0.1)
    app.engine.update_config(rate_limit=RateLimitConfig(enabled=False, requests_per_second=7))
    _finished(seen)
    assert seen["result"][0] == 200
    assert seen["done"] - start >= 0.4


def test_a_timeout_hold_released_lets_the_app_answer() -> None:
    app = _middleware(
        fault_injection={"enabled": True, "timeout_probability": 1.0, "timeout_ms": 30_000}
    )
    holds = _released_by(app, lambda: app.engine.set_enabled(False))
    assert all(seen["result"][:2] == (200, b"hello") for seen in holds)


def test_a_timeout_hold_released_gives_the_app_its_request_body() -> None:
    app = _middleware(
        fault_injection={"enabled": True, "timeout_probability": 1.0, "timeout_ms": 30_000}
    )

    def post() -> Any:
        return Client(app).post("/echo", data=b"x" * 1000).get_data()

    with _entering_holds() as entered:
        seen = _in_thread(post)
        _held([seen], entered)
    app.engine.set_enabled(False)
    assert _finished(seen)["result"] == b"x" * 1000


def test_an_after_app_stall_released_ends_at_once() -> None:
    app = _middleware(
        fault_injection={
            "enabled": True,
            "after_app_probability": 1.0,
            "after_app_fault": "stall",
            "timeout_ms": 30_000,
        }
    )
    _released_by(app, lambda: app.engine.set_enabled(False))


def test_a_paced_body_released_sends_the_rest_at_full_speed() -> None:
    # 20 KB at 2 KB/s: 10 s paced; released once it is paced, the rest goes at once.
    app = _middleware(traffic_shaping={"enabled": True, "bandwidth_limit_bps": 2000})
    holds = _released_by(app, lambda: app.engine.set_enabled(False), path="/bytes/20000")
    assert all(seen["result"][:2] == (200, b"x" * 20000) for seen in holds)


def test_a_connection_timeout_wait_released_lets_the_app_answer() -> None:
    # The delay outlasts the connection deadline: the wait is to the deadline, 20 s.
    app = _middleware(
        latency={"enabled": True, "fixed_delay_ms": 60_000},
        traffic_shaping={"enabled": True, "connection_timeout_ms": 20_000},
    )
    holds = _released_by(app, lambda: app.engine.set_enabled(False))
    assert all(seen["result"][:2] == (200, b"hello") for seen in holds)


def test_a_paced_upload_released_reads_the_rest_at_full_speed() -> None:
    app = _middleware(traffic_shaping={"enabled": True, "upload_bandwidth_limit_bps": 2000})

    def post() -> Any:
        return Client(app).post("/echo", data=b"y" * 20000).get_data()

    with _entering_holds() as entered:
        seen = _in_thread(post)
        _held([seen], entered)
    changed_at = time.monotonic()
    app.engine.set_enabled(False)
    assert _finished(seen)["result"] == b"y" * 20000
    assert seen["done"] - changed_at < BOUND_S + MARGIN_S


def test_a_change_written_by_another_process_releases_through_the_watcher(
    tmp_path: Path,
) -> None:
    """The embedded store written as another process would: no call into this process's
    engine, only the state version in the shared file moves."""
    url = f"file://{tmp_path}/state"
    app = _middleware(url, latency={"enabled": True, "fixed_delay_ms": 5000})

    def elsewhere() -> None:
        other = store_from_url(url)  # another handle on the same file
        _, data = other.load_state()
        assert data is not None
        other.save_state({**data, "enabled": False})  # what /disable elsewhere writes

    calls = RELEASER.generation
    holds = _released_by(app, elsewhere)
    assert RELEASER.generation > calls
    assert all(seen["result"][:2] == (200, b"hello") for seen in holds)


def test_holding_makes_no_store_call_per_request_when_nothing_is_held() -> None:
    """The watcher only exists for held requests: an unheld request names no source."""
    app = _middleware(latency={"enabled": True, "fixed_delay_ms": 0.0})
    assert Client(app).get("/").status_code == 200
    assert RELEASER.held_sources() == 0


def test_seeded_decisions_are_the_same_with_releases_in_between() -> None:
    """Holding and releasing draws nothing from the seeded generator."""

    def decisions(release: bool) -> list[str]:
        config = load_config(
            environ={},
            overrides={
                "enabled": True,
                "seed": 5,
                "latency": {"enabled": True, "probability": 0.5, "fixed_delay_ms": 1},
                "fault_injection": {"enabled": True, "http_error_probability": 0.3},
            },
        )
        engine = ScenarioEngine(config, store=store_from_url("memory://"))
        app = ChaosMiddleware(base_app, config=config, engine=engine)
        seen = []
        for _ in range(30):
            response = Client(app).get("/")
            seen.append(f"{response.status_code} {response.headers.get('X-Mockforge-Chaos')}")
            if release:
                RELEASER.release()
        return seen

    assert decisions(False) == decisions(True)


def test_the_basis_ignores_sections_that_hold_nothing() -> None:
    engine = ScenarioEngine(load_config(environ={}, overrides={"enabled": True}))
    before = engine.basis
    engine.update_config(rate_limit=RateLimitConfig(enabled=True, requests_per_second=3))
    assert engine.basis is not before and engine.basis.alike(before)
    engine.update_config(latency=attrs.evolve(engine.current.latency, fixed_delay_ms=9))
    assert not engine.basis.alike(before)
    changed = engine.basis
    engine.set_enabled(False)
    assert not engine.basis.alike(changed)


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_a_hold_of_nothing_returns_at_once(seconds: float) -> None:
    assert Releaser().hold(seconds) is True
