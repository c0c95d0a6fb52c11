"""The guard's window (answer_window.py): the app's own answers over a sliding window of
cumulative store counters, across processes, with a p99 from a coarse histogram; and
which answers the middleware counts (the app's own, not chaos' own answers)."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi.answer_window import BOUNDS_MS, NAMES, AnswerWindow, p99_ms
from mockforge_wsgi.config import config_from_dict
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.state import MemoryStore

WATCHED = {"max_error_ratio": 0.5, "window_s": 5, "min_requests": 10}


def _buckets(**at_ms: int) -> list[int]:
    """Counts by bucket: ``_buckets(b5=99, b1000=1)`` puts 99 answers in the bucket
    whose bound is 5 ms and one in the 1000 ms one."""
    counts = [0] * (len(BOUNDS_MS) + 1)
    for key, count in at_ms.items():
        counts[BOUNDS_MS.index(int(key[1:]))] += count
    return counts


def test_p99_is_interpolated_in_its_bucket() -> None:
    assert p99_ms([0] * (len(BOUNDS_MS) + 1)) is None
    # 100 answers in (2, 5] ms: rank 99 of 100, 99% of the way through the bucket.
    assert p99_ms(_buckets(b5=100)) == pytest.approx(2 + 3 * 0.99)
    # 99 fast and one slow: rank 99 is the last fast one, at the top of its bucket.
    assert p99_ms(_buckets(b5=99, b1000=1)) == pytest.approx(5.0)
    # 98 fast and two slow: rank 99 is the first slow one, half way into (500, 1000].
    assert p99_ms(_buckets(b5=98, b1000=2)) == pytest.approx(750.0)
    over = [0] * len(BOUNDS_MS) + [10]  # above the last bound: that bound
    assert p99_ms(over) == BOUNDS_MS[-1]


def _check(window: AnswerWindow, store: MemoryStore, now: float, since: float = 0.0) -> Any:
    sent = window.flush(store)
    return window.figures(store, window_s=5.0, now=now, since=since, sent=sent)


def test_errors_and_times_counted() -> None:
    store, window = MemoryStore(), AnswerWindow()
    for _ in range(6):
        window.record(True, 0.003)
    for _ in range(4):
        window.record(False, 0.003)
    assert window.pending == 10
    assert store.counters() == {}  # nothing reaches the store before a check
    figures = _check(window, store, now=100.0)
    assert (figures.requests, figures.errors, figures.error_ratio) == (10, 6, 0.6)
    assert 2.0 < figures.p99_ms <= 5.0
    assert window.pending == 0


def test_the_window_slides() -> None:
    store, window = MemoryStore(), AnswerWindow()
    for now, errors in [(100.0, 4), (100.5, 1), (101.0, 1), (101.5, 1)]:
        for _ in range(errors):
            window.record(True, 0.001)
        _check(window, store, now=now)
    for _ in range(4):
        window.record(False, 0.001)
    assert _check(window, store, now=103.0)[:2] == (11, 7)  # all since 100
    for _ in range(2):
        window.record(False, 0.001)
    # At 107 the window starts at 102: the errors sent at 101.5 and before are out of it.
    figures = _check(window, store, now=107.0)
    assert figures[:2] == (6, 0)
    assert figures.span_s == pytest.approx(5.0)


def test_two_processes_share_one_window() -> None:
    """Two workers, one store: the later check sees both workers' answers (chaos was
    switched on at 99, so the window counts from zero there)."""
    store, first, second = MemoryStore(), AnswerWindow(), AnswerWindow()
    for _ in range(5):
        first.record(True, 0.001)
        second.record(True, 0.001)
    assert _check(first, store, now=100.0, since=99.0)[:2] == (5, 5)
    assert _check(second, store, now=100.1, since=99.0)[:2] == (10, 10)


def test_a_switch_on_starts_the_window_afresh() -> None:
    store, window = MemoryStore(), AnswerWindow()
    for _ in range(8):
        window.record(True, 0.001)
    assert _check(window, store, now=100.0).requests == 8
    for name in NAMES:  # what the engine does when chaos is switched on at 101
        store.set_counter(name, 0)
    window.record(False, 0.001)
    assert _check(window, store, now=101.5, since=101.0)[:2] == (1, 0)


def _recorded(config: dict[str, Any], app: Any = None, requests: int = 5) -> list[Any]:
    def answer(environ: Any, start_response: Any) -> list[bytes]:
        start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")])
        return [b"the app failed"]

    middleware = ChaosMiddleware(
        app or answer, config=config_from_dict({"enabled": True, **config})
    )
    seen: list[tuple[bool, float]] = []
    middleware.tripwire.record = lambda error, seconds: seen.append((error, seconds))  # type: ignore[method-assign]
    client = Client(middleware)
    for _ in range(requests):
        client.get("/x").close()
    return seen


@pytest.mark.parametrize(
    "chaos",
    [
        pytest.param(
            {"fault_injection": {"http_errors": [503], "http_error_probability": 1.0}},
            id="injected-503",
        ),
        pytest.param({"fault_injection": {"connection_error_probability": 1.0}}, id="reset"),
        pytest.param({"rate_limit": {"requests_per_second": 0.001, "burst_size": 1}}, id="429"),
    ],
)
def test_injected_answers_are_not_counted(chaos: dict[str, Any]) -> None:
    seen = _recorded({**chaos, "guard": WATCHED})
    # The limiter admits its burst (the app answers, counted); everything else is ours.
    assert len(seen) <= 1, seen


def test_the_apps_answers_under_latency_count_with_the_apps_own_time() -> None:
    seen = _recorded({"latency": {"fixed_delay_ms": 100}, "guard": WATCHED}, requests=3)
    assert [error for error, _ in seen] == [True, True, True]
    assert all(seconds < 0.05 for _, seconds in seen), seen  # not the 100 ms injected


def test_nothing_is_counted_without_a_bound_over_the_window() -> None:
    assert _recorded({"latency": {"fixed_delay_ms": 1}}) == []
    assert _recorded({"latency": {"fixed_delay_ms": 1}, "guard": {"max_duration_s": 60}}) == []
