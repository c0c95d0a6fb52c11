"""Stream cuts, dribble, broken framing and upload resets in process: what is decided,
the dribble's schedule on a fake clock, the names, and the fallbacks where the server
gives no socket (the real-server side is tests/test_streams_server.py)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from test_middleware import chaos
from test_traffic_shaping import Closing, FakeTime
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware
from mockforge_wsgi._sockets import Connection
from mockforge_wsgi.config import ConfigError, FaultInjectionConfig, config_from_dict
from mockforge_wsgi.fault import CutBody, Fault, broken_framing, decide_fault, named_fault
from mockforge_wsgi.plan import Plan
from mockforge_wsgi.traffic_shaping import DribbleBody, Shaping
from mockforge_wsgi.verdicts import Attempt, Call


def streamed(environ: dict[str, Any], start_response: Any) -> Any:
    """Five 100-byte chunks, no Content-Length."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing([bytes([65 + n]) * 100 for n in range(5)])


def test_the_new_faults_are_rolled_after_the_others_and_only_when_on() -> None:
    """A cut and an upload reset are rolled 7th and 8th: configs without them draw as
    before (no draw for a fault that is off)."""
    before = FaultInjectionConfig(enabled=True, http_error_probability=0.5)
    after = FaultInjectionConfig(
        enabled=True, http_error_probability=0.5, cut_probability=0.0, upload_reset_probability=0
    )
    draws = [decide_fault(before, random.Random(7)) for _ in range(50)]
    assert draws == [decide_fault(after, random.Random(7)) for _ in range(50)]
    cut = FaultInjectionConfig(
        enabled=True, cut_probability=1.0, cut_after_ms=250, cut_after_chunks=3, cut_mode="close"
    )
    fault = decide_fault(cut, random.Random(1))
    assert fault == Fault("stream_cut", mode="close", after_ms=250, after_chunks=3)
    assert fault.label == "stream_cut_close"
    upload = FaultInjectionConfig(enabled=True, upload_reset_probability=1.0)
    assert decide_fault(upload, random.Random(1)) == Fault("upload_reset", limit_bytes=65536)


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("cut-after-3-chunks", Fault("stream_cut", mode="reset", after_chunks=3)),
        ("cut-after-250ms", Fault("stream_cut", mode="reset", after_ms=250)),
        ("upload-reset-after-1000", Fault("upload_reset", limit_bytes=1000)),
    ],
)
def test_named_faults_with_a_number(name: str, fault: Fault) -> None:
    assert named_fault(name, random.Random(1)) == fault
    assert config_from_dict({"fault_injection": {"script": [name]}})  # a script step too


def test_a_wrong_name_lists_the_numbered_ones() -> None:
    with pytest.raises(ValueError, match=r"cut-after-<N>ms, cut-after-<N>-chunks"):
        named_fault("cut-after-soon", random.Random(1))
    for how in ("malformed_chunk", "random_then_close"):
        assert named_fault(f"corrupt-{how}", random.Random(1)).mode == how  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"cut_mode": "drop"}, "chaos.fault_injection.cut_mode: 'drop' is not one of"),
        ({"cut_after_chunks": -1}, "chaos.fault_injection.cut_after_chunks: -1"),
        ({"upload_reset_after_bytes": 1.5}, "chaos.fault_injection.upload_reset_after_bytes"),
        ({"cut_after_ms": 600_001}, "chaos.fault_injection.cut_after_ms: 600001"),
    ],
)
def test_bad_cut_settings_name_the_setting(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        config_from_dict({"fault_injection": data})


def test_bad_dribble_settings_name_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"chaos.traffic_shaping.body_chunks: 0 is not in"):
        config_from_dict({"traffic_shaping": {"body_chunks": 0}})


def test_what_a_plan_with_them_reports() -> None:
    plan = Plan(
        fault=Fault("upload_reset", limit_bytes=1000),
        shaping=Shaping(body_duration_ms=1000, body_chunks=10),
    )
    assert plan.annotation() == "dribble=1000ms/10, fault=upload_reset"
    assert [tuple(i) for i in plan.injections()] == [
        ("body_dribbled", "1000ms/10"),
        ("upload_reset", "1000"),
    ]
    assert plan.holds  # a dribble holds its thread: max_active_faults counts it
    cut = Plan(fault=Fault("stream_cut", mode="reset", after_ms=100))
    assert cut.holds and not Plan(fault=Fault("stream_cut", mode="reset", after_chunks=2)).holds


def test_a_cut_stream_after_the_app_ran_is_unsafe_to_retry_an_upload_reset_is_not() -> None:
    def call(fault: str) -> Call:
        first = Attempt(0.0, 0.1, "POST", "/orders", 0, fault_type=fault)
        return Call((first, Attempt(0.2, 0.3, "POST", "/orders", 201)))

    assert call("stream_cut").unsafe_retry
    assert not call("upload_reset").unsafe_retry


def _dribbled(
    chunks: list[bytes], shaping: Shaping, fake: FakeTime, length: int | None
) -> list[tuple[float, int]]:
    body = DribbleBody(shaping, clock=fake.clock, sleep=fake.sleep)
    headers = [("Content-Length", str(length))] if length is not None else []
    body.seeing(lambda status, headers, exc_info=None: None)("200 OK", headers)
    inner = Closing(chunks)
    sent = [(fake.now, len(piece)) for piece in body.wrap(inner)]
    body.close()
    assert inner.closed
    return sent


def test_a_dribble_sends_the_headers_at_once_and_n_even_writes_to_the_end() -> None:
    """1,000 bytes in 4 writes over 1 s, from app chunks that do not line up with them:
    250 bytes at 0.25, 0.5, 0.75 and 1.0 s (pieces of one write leave together)."""
    fake = FakeTime()
    sent = _dribbled(
        [b"a" * 100, b"b" * 600, b"c" * 300],
        Shaping(body_duration_ms=1000, body_chunks=4),
        fake,
        1000,
    )
    assert sent[0] == (0.0, 0)  # the headers, before any wait
    by_time: dict[float, int] = {}
    for at, size in sent[1:]:
        by_time[round(at, 9)] = by_time.get(round(at, 9), 0) + size
    assert by_time == {0.25: 250, 0.5: 250, 0.75: 250, 1.0: 250}


def test_a_dribble_without_a_length_spaces_the_apps_chunks() -> None:
    """No length: one app chunk per write on the same schedule; past the n-th, at once."""
    fake = FakeTime()
    chunks = [b"x" * 10] * 5
    sent = _dribbled(chunks, Shaping(body_duration_ms=1000, body_chunks=4), fake, None)
    assert [round(at, 9) for at, size in sent if size] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_a_released_dribble_sends_the_rest_at_once() -> None:
    fake = FakeTime()
    waits: list[float] = []

    def released_at_the_second_wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 2:
            return False
        fake.now += seconds
        return True

    body = DribbleBody(
        Shaping(body_duration_ms=1000, body_chunks=4),
        clock=fake.clock,
        sleep=released_at_the_second_wait,
    )
    body.seeing(lambda *args: None)("200 OK", [("Content-Length", "1000")])
    sent = b"".join(body.wrap([b"y" * 1000]))
    assert sent == b"y" * 1000 and len(waits) == 2  # no wait after the release


def test_a_dribbled_response_through_the_middleware_keeps_its_bytes() -> None:
    config = chaos(traffic_shaping={"body_duration_ms": 10, "body_chunks": 3})
    response = Client(ChaosMiddleware(streamed, config=config)).get("/")
    assert response.get_data() == b"".join(bytes([65 + n]) * 100 for n in range(5))
    assert response.headers["X-Mockforge-Chaos"] == "dribble=10ms/3"


def test_without_a_socket_a_cut_stream_stops_and_says_so() -> None:
    config = chaos(fault_injection={"cut_probability": 1.0, "cut_after_chunks": 2})
    response = Client(ChaosMiddleware(streamed, config=config)).get("/")
    assert response.get_data() == b"A" * 100 + b"B" * 100
    assert response.headers["X-Mockforge-Chaos"] == "fault=stream_cut_reset, fallback=stop"


def test_without_a_socket_a_cut_with_neither_limit_sends_only_the_headers() -> None:
    config = chaos(fault_injection={"cut_probability": 1.0})
    response = Client(ChaosMiddleware(streamed, config=config)).get("/")
    assert (response.status_code, response.get_data()) == (200, b"")


def test_a_head_request_gets_no_stream_cut() -> None:
    config = chaos(fault_injection={"cut_probability": 1.0, "cut_after_chunks": 1})
    response = Client(ChaosMiddleware(streamed, config=config)).head("/")
    assert "X-Mockforge-Chaos" not in response.headers


@pytest.mark.parametrize(
    "faults",
    [
        {"upload_reset_probability": 1.0},
        {"corruption_probability": 1.0, "corruption": "malformed_chunk"},
        {"corruption_probability": 1.0, "corruption": "random_then_close"},
    ],
    ids=["upload_reset", "malformed_chunk", "random_then_close"],
)
def test_without_a_socket_the_faults_that_write_on_it_fall_back_to_a_cut(
    faults: dict[str, Any],
) -> None:
    """No socket to reset or write on: a 502 whose promised body never comes, annotated
    ``fallback=cut`` (as a reset's)."""
    config = chaos(fault_injection=faults)
    response = Client(ChaosMiddleware(streamed, config=config)).post("/", data=b"z" * 1000)
    assert response.status_code == 502
    assert response.headers["X-Mockforge-Chaos"].endswith("fallback=cut")


def test_a_malformed_chunk_carries_the_apps_head_then_a_size_that_is_not_hex() -> None:
    fault = Fault("corrupted", mode="malformed_chunk", seed=3)
    headers = [("Content-Type", "text/plain"), ("Content-Length", "10")]
    data = broken_framing(fault, "201 Created", headers, b"0123456789")
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 201 Created",
        b"Content-Type: text/plain",
        b"Transfer-Encoding: chunked",
        b"Connection: close",
    ]
    assert body.startswith(b"5\r\n01234\r\nzz-not-hex\r\n")


def test_random_then_close_is_seeded_and_never_a_status_line() -> None:
    for seed in range(200):
        fault = Fault("corrupted", mode="random_then_close", seed=seed)
        data = broken_framing(fault, "200 OK", [], b"")
        assert data == broken_framing(fault, "200 OK", [], b"")
        assert 64 <= len(data) <= 512 and not data.upper().startswith(b"H")


def _cut(fault: Fault, hold: Any, headers: list[tuple[str, str]], chunks: list[bytes]) -> bytes:
    body = CutBody(fault, Connection({}), hold)
    body.start_response(lambda status, headers, exc_info=None: None, [])("200 OK", headers)
    inner = Closing(chunks)
    sent = b"".join(body.wrap(inner))
    body.close()
    assert inner.closed
    return sent


def test_a_body_with_a_length_that_ends_before_its_cut_lacks_its_last_byte() -> None:
    """A client that has every promised byte would see no cut: the last one is the end
    held back; released (chaos off), it goes out."""
    fault = Fault("stream_cut", mode="reset", after_ms=30)
    length = [("Content-Length", "500")]
    assert _cut(fault, lambda s: time.sleep(s) or True, length, [b"a" * 200, b"b" * 300]) == (
        b"a" * 200 + b"b" * 299
    )
    assert _cut(fault, lambda s: False, length, [b"a" * 500]) == b"a" * 500  # released
    by_count = Fault("stream_cut", mode="reset", after_chunks=5)
    assert _cut(by_count, None, length, [b"a" * 500]) == b"a" * 499
    assert _cut(by_count, None, [], [b"a" * 500]) == b"a" * 500  # no length: the end is
    # the terminating chunk, which a server without a socket sends all the same


def test_header_control_asks_for_a_dribble_capped_at_max_delay_ms() -> None:
    config = chaos(header_control={"max_delay_ms": 30})
    client = Client(ChaosMiddleware(streamed, config=config))
    response = client.get("/", headers={"X-Mockforge-Body-Duration-Ms": "20"})
    assert response.headers["X-Mockforge-Chaos"] == "dribble=20ms/10"
    assert len(response.get_data()) == 500
    capped = client.get("/", headers={"X-Mockforge-Body-Duration-Ms": "60000"})
    assert capped.headers["X-Mockforge-Chaos"] == "dribble=30ms/10"
    bad = client.get("/", headers={"X-Mockforge-Body-Duration-Ms": "soon"})
    assert bad.status_code == 400
    assert "X-Mockforge-Body-Duration-Ms: 'soon' is not a number" in bad.get_data(as_text=True)
    cut = client.get("/", headers={"X-Mockforge-Fault": "cut-after-2-chunks"})
    assert cut.headers["X-Mockforge-Chaos"] == "fault=stream_cut_reset, fallback=stop"


def test_a_cut_timer_asked_by_name_is_capped() -> None:
    """A cut's timer can hold a body's end: by header at most max_delay_ms, in a
    script at most the longest delay a setting allows."""
    from mockforge_wsgi.config import MAX_DELAY_MS, HeaderControlConfig
    from mockforge_wsgi.header_control import decide_from_headers
    from mockforge_wsgi.request import Call as Asked

    huge = "cut-after-99999999999ms"
    assert named_fault(huge, random.Random(1)).after_ms == MAX_DELAY_MS  # type: ignore[union-attr]
    asked = Asked(headers={"X-Mockforge-Fault": huge})
    plan = decide_from_headers(asked, HeaderControlConfig(max_delay_ms=30), random.Random(1))
    assert plan.fault is not None and plan.fault.after_ms == 30
