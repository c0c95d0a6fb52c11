"""Verdicts on the client's behaviour, from recorder rows (pure: no server)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mockforge_wsgi.recorder import retry_after_seconds
from mockforge_wsgi.verdicts import Attempt, group_calls, quantile, summarize, verdicts


def row(at: float, status: int = 200, *, ms: float = 10.0, **fields: Any) -> dict[str, Any]:
    """A recorder row that ended at ``at`` after ``ms`` milliseconds."""
    return {
        "time": at,
        "duration_ms": ms,
        "method": fields.pop("method", "GET"),
        "path": fields.pop("path", "/pay"),
        "status": status,
        **fields,
    }


def calls_of(*rows: dict[str, Any], window_s: float = 30.0) -> list[dict[str, Any]]:
    return verdicts(rows, window_s)["calls"]  # type: ignore[no-any-return]


def test_retries_until_a_success_are_one_call_and_a_success_ends_it() -> None:
    found = calls_of(row(1.0, 503), row(2.0, 503), row(3.0, 200), row(4.0, 200))
    assert [call["attempts"] for call in found] == [3, 1]
    assert [call["statuses"] for call in found] == [[503, 503, 200], [200]]
    assert [call["succeeded"] for call in found] == [True, True]


def test_calls_are_told_apart_by_method_path_body_and_test_id() -> None:
    found = calls_of(
        row(1.0, 503, path="/a"),
        row(1.1, 503, path="/b"),
        row(1.2, 503, method="POST", path="/a", body_hash="x"),
        row(1.3, 503, method="POST", path="/a", body_hash="y"),
        row(1.4, 503, path="/a", test_id="t2"),
        row(2.0, 200, path="/a"),
    )
    assert [(c["method"], c["path"], c["attempts"]) for c in found] == [
        ("GET", "/a", 2),
        ("GET", "/b", 1),
        ("POST", "/a", 1),
        ("POST", "/a", 1),
        ("GET", "/a", 1),
    ]


def test_an_idempotency_key_groups_whatever_else_differs() -> None:
    found = calls_of(
        row(1.0, 0, method="POST", body_hash="a", idempotency_key="k", fault_type="after_app"),
        row(2.0, 201, method="POST", body_hash="b", idempotency_key="k"),
    )
    assert len(found) == 1 and found[0]["attempts"] == 2
    assert not found[0]["unsafe_retry"]  # the key makes the retry safe


def test_a_gap_longer_than_the_window_starts_a_new_call() -> None:
    assert len(calls_of(row(1.0, 503), row(5.0, 200), window_s=3.0)) == 2
    assert len(calls_of(row(1.0, 503), row(3.9, 200), window_s=3.0)) == 1


def test_waits_run_from_the_end_of_one_attempt_to_the_start_of_the_next() -> None:
    # ends at 1.0; the next took 500 ms and ended at 3.5: it started at 3.0.
    [call] = calls_of(row(1.0, 503), row(3.5, 200, ms=500))
    assert call["waits_s"] == [2.0]


@pytest.mark.parametrize(("wait", "honoured"), [(1.0, True), (0.96, True), (0.9, False)])
def test_retry_after_is_honoured_when_the_wait_is_long_enough(wait: float, honoured: bool) -> None:
    [call] = calls_of(row(1.0, 503, retry_after_s=1.0), row(1.0 + wait + 0.01, 200))
    assert call["retry_after_honoured"] == [honoured]


def test_only_waits_after_a_retry_after_are_judged() -> None:
    [call] = calls_of(row(1.0, 500), row(1.1, 503, retry_after_s=2.0), row(3.2, 200))
    assert call["retry_after_honoured"] == [True]
    summary = verdicts([row(1.0, 500), row(1.1, 200)])["summary"]
    assert summary["retry_after_honoured_ratio"] is None  # nothing to judge


@pytest.mark.parametrize(
    ("ends", "grew"),
    [
        ([1.0, 1.11, 1.32, 1.73], True),  # waits 0.1, 0.2, 0.4
        ([1.0, 1.51, 2.02, 2.53], False),  # steady 0.5
        ([1.0, 1.41, 1.62], False),  # shrank
        ([1.0, 1.5], None),  # one wait: nothing to compare
    ],
)
def test_backoff_grew(ends: list[float], grew: bool | None) -> None:
    rows = [row(end, 503, ms=10) for end in ends[:-1]] + [row(ends[-1], 200, ms=10)]
    [call] = calls_of(*rows)
    assert call["backoff_grew"] is grew


@pytest.mark.parametrize(
    ("method", "fault", "key", "unsafe"),
    [
        ("POST", "after_app", None, True),
        ("PATCH", "corrupted", None, True),
        ("POST", "partial_response", None, True),
        ("POST", "connection_reset", None, False),  # the app never ran
        ("POST", "http_error", None, False),
        ("PUT", "after_app", None, False),  # idempotent by definition
        ("POST", "after_app", "k1", False),
    ],
)
def test_unsafe_retries(method: str, fault: str, key: str | None, unsafe: bool) -> None:
    first = row(1.0, 0, method=method, fault_type=fault, idempotency_key=key)
    [call] = calls_of(first, row(1.5, 200, method=method, idempotency_key=key))
    assert call["unsafe_retry"] is unsafe


def test_a_post_sent_once_is_never_unsafe() -> None:
    [call] = calls_of(row(1.0, 0, method="POST", fault_type="after_app"))
    assert not call["unsafe_retry"] and not call["succeeded"]


def test_a_whole_answer_that_was_broken_is_not_a_success() -> None:
    assert not Attempt.from_row(row(1.0, 200, fault_type="corrupted")).succeeded
    assert Attempt.from_row(row(1.0, 200, fault_type="latency")).succeeded
    assert not Attempt.from_row(row(1.0, 0)).succeeded
    assert not Attempt.from_row(row(1.0, 429, fault_type="rate_limited")).succeeded


def test_the_summary() -> None:
    rows = [
        row(1.0, 503, retry_after_s=1.0),
        row(2.1, 200),  # waited 1.09 s: honoured
        row(3.0, 503, path="/b", retry_after_s=1.0),
        row(3.2, 503, path="/b", retry_after_s=1.0),  # waited 0.19 s: not
        row(3.4, 503, path="/b"),  # never succeeded
        row(4.0, 0, method="POST", path="/c", fault_type="after_app"),
        row(4.1, 200, method="POST", path="/c"),  # unsafe
        row(5.0, 200, path="/d"),
    ]
    summary = verdicts(rows)["summary"]
    assert summary["calls"] == 4
    assert summary["succeeded"] == 3 and summary["success_ratio"] == 0.75
    assert summary["retried_calls"] == 3
    assert summary["retries_per_call"] == pytest.approx((1 + 2 + 1 + 0) / 4)
    assert summary["max_attempts"] == 3
    assert summary["retry_after_seen"] == 3
    assert summary["retry_after_honoured_ratio"] == pytest.approx(1 / 3)
    assert summary["unsafe_retries"] == 1
    waits = sorted(c.waits[0] for c in group_calls(map(Attempt.from_row, rows)) if c.waits)
    assert summary["backoff_p50_s"] == pytest.approx(quantile(waits, 0.5))


def test_no_rows() -> None:
    summary = summarize([])
    assert summary["calls"] == 0 and summary["max_attempts"] == 0
    assert summary["success_ratio"] is None and summary["backoff_p99_s"] is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([3.0, 1.0, 2.0], 0.5, 2.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0), ([5.0], 0.99, 5.0)],
)
def test_quantile_is_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), (" 7 ", 7.0), ("\u00b2", None), ("", None), (None, None), ("soon", None)],
)
def test_a_retry_after_value_in_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


def test_a_retry_after_date_is_seconds_from_now() -> None:
    from email.utils import formatdate

    assert 8.0 <= (retry_after_seconds(formatdate(time.time() + 10, usegmt=True)) or 0) <= 10.5


def test_without_the_recorder_verdicts_and_the_report_are_a_404_that_says_so() -> None:
    from werkzeug.test import Client

    from mockforge_wsgi import ChaosMiddleware

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    client = Client(ChaosMiddleware(app))
    for route in ("/api/chaos/verdicts", "/api/chaos/report"):
        answer = client.get(route)
        assert answer.status_code == 404
        assert "--recorder" in answer.get_json()["problems"][0]
    assert client.get("/api/chaos/status").get_json()["recorder"] is False


def test_a_call_names_its_requests_and_the_window_is_inclusive() -> None:
    found = verdicts(
        [row(1.0, 503, request_id="a1"), row(4.0, 200, ms=0.0, request_id="a2")], window_s=3.0
    )
    [call] = found["calls"]
    assert call["request_ids"] == ["a1", "a2"]  # 3 s apart: within a 3 s window
    assert found["window_s"] == 3.0
    assert found["summary"]["backoff_p99_s"] == 3.0
    assert found["summary"]["max_attempts"] == 2


def test_a_call_as_the_api_shows_it() -> None:
    rows = [
        row(1.0, 503, ms=100.0, retry_after_s=1.0, test_id="t", idempotency_key="k",
            fault_type="http_error", request_id="r1"),
        row(2.3, 200, ms=100.0, test_id="t", idempotency_key="k", request_id="r2"),
    ]  # fmt: skip
    [call] = verdicts(rows)["calls"]
    assert call == {
        "method": "GET",
        "path": "/pay",
        "test_id": "t",
        "idempotency_key": "k",
        "attempts": 2,
        "statuses": [503, 200],
        "faults": ["http_error", None],
        "waits_s": [1.2],
        "retry_after_s": [1.0, None],
        "retry_after_honoured": [True],
        "backoff_grew": None,
        "unsafe_retry": False,
        "succeeded": True,
        "started": pytest.approx(0.9),
        "request_ids": ["r1", "r2"],
    }


def test_the_apps_own_calls_are_told_apart_by_host_and_by_the_request_served() -> None:
    """Outbound rows: the same path on two hosts is two calls; so is the same call made
    while serving two requests (each request's retries are its own)."""
    out = {"direction": "outbound"}
    found = calls_of(
        row(1.0, 503, host="a.internal:443", request_id="r1", **out),
        row(1.1, 503, host="b.internal:443", request_id="r1", **out),
        row(1.2, 200, host="a.internal:443", request_id="r1", **out),
        row(1.3, 503, host="b.internal:443", request_id="r2", **out),
    )
    assert [(c["host"], c["attempts"], c["request_ids"]) for c in found] == [
        ("a.internal:443", 2, ["r1", "r1"]),
        ("b.internal:443", 1, ["r1"]),
        ("b.internal:443", 1, ["r2"]),
    ]
    assert "host" not in calls_of(row(1.0))[0]  # a request's call: as before
