"""Traffic shaping: pacing, the loss model, connection limits and timeouts."""

from __future__ import annotations

import contextlib
import random
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import assert_clean_log, gunicorn_server, session, werkzeug_server
from stats import assert_binomial
from test_server_faults import chaos_env
from werkzeug.test import Client
from wsgi_apps import base_app

from mockforge_wsgi import load_config
from mockforge_wsgi._sockets import Connection
from mockforge_wsgi.config import TrafficShapingConfig
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.state import MemoryStore
from mockforge_wsgi.state.base import CONNECTION_SLOTS
from mockforge_wsgi.traffic_shaping import (
    INITIAL_RTO_S,
    SEGMENT_BYTES,
    PacedBody,
    PacedInput,
    Shaping,
    decide_shaping,
    retransmission_stall,
)


class FakeTime:
    """A clock that only moves when slept on: pacing tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Closing(list[bytes]):
    closed = False

    def close(self) -> None:
        self.closed = True


def paced(
    chunks: list[bytes], shaping: Shaping, fake: FakeTime
) -> tuple[list[tuple[float, int]], Closing]:
    inner = Closing(chunks)
    body = PacedBody(
        inner, shaping, Connection({}), started=0.0, clock=fake.clock, sleep=fake.sleep
    )
    sent = [(fake.now, len(piece)) for piece in body]
    body.close()
    return sent, inner


def test_pacing_rechunks_and_keeps_the_schedule() -> None:
    fake = FakeTime()
    sent, inner = paced([b"x" * 100_000], Shaping(bandwidth_bps=10_000), fake)
    assert inner.closed
    assert {size for _, size in sent} == {200}  # 20 ms worth of 10 kB/s per write
    assert sum(size for _, size in sent) == 100_000
    # Slice k leaves at k * 200 / 10_000 s: no drift however many slices.
    assert sent[-1][0] == pytest.approx((100_000 - 200) / 10_000)


def test_loss_stalls_whole_segments() -> None:
    fake = FakeTime()
    body = b"y" * (SEGMENT_BYTES * 400)
    sent, _ = paced([body], Shaping(loss_percent=10.0, loss_seed=7), fake)
    assert sum(size for _, size in sent) == len(body)
    stalls = fake.sleeps
    # Every stall is a sum of doubling RTOs: 0.2, 0.6, 1.4, ...
    allowed = {round(INITIAL_RTO_S * (2**k - 1), 6) for k in range(1, 8)}
    assert {round(s, 6) for s in stalls} <= allowed
    # Lost segments (first losses) ~ Binomial(400, 0.1).
    assert_binomial(len(stalls), 400, 0.10)


def test_bandwidth_and_loss_together_add_the_stalls_to_the_schedule() -> None:
    """A stall delays everything after it: the body takes its paced time plus every
    stall (the same seed loses the same segments with or without a bandwidth limit)."""
    body = b"z" * (SEGMENT_BYTES * 200)
    loss_only = FakeTime()
    paced([body], Shaping(loss_percent=5.0, loss_seed=11), loss_only)
    stalls = sum(loss_only.sleeps)
    assert stalls > 1.0  # the seed loses segments: the test has something to check
    both = FakeTime()
    sent, _ = paced([body], Shaping(bandwidth_bps=50_000, loss_percent=5.0, loss_seed=11), both)
    assert sum(size for _, size in sent) == len(body)
    last_size = sent[-1][1]
    assert sent[-1][0] == pytest.approx((len(body) - last_size) / 50_000 + stalls)
    # Never faster than the rate after a stall: slice k leaves no earlier than its bytes allow.
    before = 0
    for at, size in sent:
        assert at >= before / 50_000 - 1e-9
        before += size


def test_retransmission_stall_doubles_the_rto() -> None:
    rng = random.Random(3)
    stalls = Counter(round(retransmission_stall(rng, 0.5)[0], 6) for _ in range(4000))
    # P(k retransmissions) = 0.5^k: 0.2 s half the time, 0.6 s a quarter, 1.4 s an eighth.
    assert_binomial(stalls[0.2], 4000, 0.5)
    assert_binomial(stalls[0.6], 4000, 0.25)
    assert_binomial(stalls[1.4], 4000, 0.125)


def test_total_loss_gives_the_connection_up() -> None:
    stall, gave_up = retransmission_stall(random.Random(1), 1.0)
    assert gave_up
    assert stall > 60


def test_request_drop_probability() -> None:
    config = TrafficShapingConfig(enabled=True, request_drop_probability=0.2)
    rng = random.Random(5)
    drops = sum(bool((s := decide_shaping(config, rng)) and s.drop) for _ in range(4000))
    assert_binomial(drops, 4000, 0.2)


def test_paced_input_reads_at_the_rate() -> None:
    import io

    fake = FakeTime()
    stream = PacedInput(io.BytesIO(b"z" * 50_000), 10_000, clock=fake.clock, sleep=fake.sleep)
    assert stream.read(30_000) == b"z" * 30_000
    assert fake.now == pytest.approx(3.0)
    assert stream.read() == b"z" * 20_000
    assert fake.now == pytest.approx(5.0)
    assert stream.read(10) == b""


def _timed_body(port: int, path: str) -> tuple[list[tuple[float, int]], bytes]:
    """GET ``path`` on a raw socket; every recv timed, the body separated from the head."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = b""
        in_body = False
        arrivals: list[tuple[float, int]] = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            now = time.perf_counter()
            if not in_body:
                head += data
                if b"\r\n\r\n" in head:
                    in_body = True
                    head, rest = head.split(b"\r\n\r\n", 1)
                    if rest:
                        arrivals.append((now, len(rest)))
                continue
            arrivals.append((now, len(data)))
    return arrivals, head


@pytest.mark.alone  # wall-clock figures: no other test meanwhile
@pytest.mark.server
def test_bandwidth_through_a_real_server_within_2_percent(tmp_path: Path) -> None:
    """512 KiB at 100 KiB/s, timed byte by byte by a raw-socket client."""
    limit = 100 * 1024
    env = chaos_env(traffic_shaping_enabled="true", traffic_shaping_bandwidth_limit_bps=str(limit))
    with gunicorn_server(tmp_path, env=env, worker_class="gthread") as server:
        port = int(server.url.rsplit(":", 1)[1])
        arrivals, head = _timed_body(port, f"/bytes/{512 * 1024}")
    assert b"X-Mockforge-Chaos: bandwidth=102400Bps" in head
    assert sum(size for _, size in arrivals) == 512 * 1024
    # Rate over the body: bytes after the first arrival over the time they took.
    elapsed = arrivals[-1][0] - arrivals[0][0]
    rate = (512 * 1024 - arrivals[0][1]) / elapsed
    assert abs(rate - limit) <= 0.02 * limit, rate
    assert_clean_log(server)


@pytest.mark.alone  # wall-clock figures: no other test meanwhile
@pytest.mark.server
def test_upload_is_paced_through_a_real_server(tmp_path: Path) -> None:
    limit = 50_000
    env = chaos_env(
        traffic_shaping_enabled="true", traffic_shaping_upload_bandwidth_limit_bps=str(limit)
    )
    body = b"u" * 100_000
    with gunicorn_server(tmp_path, env=env, worker_class="gthread") as server, session() as http:
        start = time.perf_counter()
        response = http.post(server.url + "/echo", data=body, timeout=30)
        elapsed = time.perf_counter() - start
    assert response.content == body
    # The last paced read ends at len/limit = 2 s after the first.
    assert 2.0 <= elapsed <= 2.5


def _planned_stall(env: dict[str, str], segments: int) -> float:
    """The stalls a seeded server's first request must sit through, by the documented
    model written out here (not the code's): each segment lost with the chance, a loss
    costs 200 ms, doubled on each loss of the same segment. The loss draws come from the
    Plan's seed, decided here for the same config's first request."""
    import math

    from mockforge_wsgi.outcome import OUTCOME_KEY

    plans: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        plans.append(environ[OUTCOME_KEY].plan)
        start_response("200 OK", [])
        return []

    Client(ChaosMiddleware(app, config=load_config(environ=env))).get("/", buffered=True)
    shaping = plans[0].shaping
    loss = shaping.loss_percent / 100
    rng = random.Random(shaping.loss_seed)

    def intact_before_next_loss() -> int:
        return int(math.log(1.0 - rng.random()) / math.log(1.0 - loss))

    total, lost = 0.0, intact_before_next_loss()
    while lost < segments:
        rto = 0.2
        while True:
            total += rto
            rto *= 2
            if rng.random() >= loss:
                break
        lost += 1 + intact_before_next_loss()
    return total


@pytest.mark.alone  # wall-clock figures: no other test meanwhile
@pytest.mark.server
def test_packet_loss_through_a_real_server(tmp_path: Path) -> None:
    """Seeded: the server's first request stalls exactly as its Plan says (a loss is
    200 ms, doubled on each loss of the same segment), within 0.5 s of scheduling."""
    env = chaos_env(
        traffic_shaping_enabled="true", traffic_shaping_packet_loss_percent="20", seed="7"
    )
    size = SEGMENT_BYTES * 50
    planned = _planned_stall(env, 50)
    # 50 segments at 20%: no loss at all has chance 0.8^50 ~ 1.4e-5; this seed loses some.
    assert planned >= INITIAL_RTO_S
    with gunicorn_server(tmp_path, env=env, worker_class="gthread") as server, session() as http:
        start = time.perf_counter()
        response = http.get(server.url + f"/bytes/{size}", timeout=60)
        elapsed = time.perf_counter() - start
    assert response.content == b"x" * size
    assert response.headers["X-Mockforge-Chaos"] == "packet_loss=20%"
    assert planned <= elapsed <= planned + 0.5, (planned, elapsed)


@pytest.mark.server
def test_request_drop_cuts_without_an_answer(tmp_path: Path) -> None:
    env = chaos_env(traffic_shaping_enabled="true", traffic_shaping_request_drop_probability="1")
    with (
        gunicorn_server(tmp_path, env=env, worker_class="gthread") as server,
        session() as http,
        pytest.raises(requests.ConnectionError, match="without response"),
    ):
        http.get(server.url + "/hello", timeout=10)
    assert_clean_log(server)


@pytest.mark.server
def test_connection_timeout_cuts_latency(tmp_path: Path) -> None:
    env = chaos_env(
        latency_enabled="true",
        latency_fixed_delay_ms="3000",
        traffic_shaping_enabled="true",
        traffic_shaping_connection_timeout_ms="300",
    )
    with gunicorn_server(tmp_path, env=env, worker_class="gthread") as server, session() as http:
        start = time.perf_counter()
        with pytest.raises(requests.ConnectionError):
            http.get(server.url + "/hello", timeout=10)
        elapsed = time.perf_counter() - start
    assert 0.3 <= elapsed < 2.0
    assert_clean_log(server)


@pytest.mark.server
def test_connection_timeout_cuts_a_paced_body(tmp_path: Path) -> None:
    env = chaos_env(
        traffic_shaping_enabled="true",
        traffic_shaping_bandwidth_limit_bps="10000",
        traffic_shaping_connection_timeout_ms="500",
    )
    with gunicorn_server(tmp_path, env=env, worker_class="sync") as server, session() as http:
        start = time.perf_counter()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            http.get(server.url + "/bytes/100000", timeout=10)
        elapsed = time.perf_counter() - start
    assert 0.5 <= elapsed < 2.0
    assert_clean_log(server)


def _shaped(**traffic: Any) -> ChaosMiddleware:
    config = load_config(
        environ={},
        overrides={"enabled": True, "traffic_shaping": {"enabled": True, **traffic}},
    )
    return ChaosMiddleware(_app_with_failures, config=config)


def _app_with_failures(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the app failed")
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.3)
    return base_app(environ, start_response)


@pytest.mark.server
def test_connection_limit_answers_503_beyond_it() -> None:
    middleware = _shaped(max_connections=2)
    with werkzeug_server(middleware) as server:
        statuses = _concurrent_statuses(server.url + "/slow", 4)
    assert sorted(statuses) == [200, 200, 503, 503]
    assert middleware.store.slots_in_use(CONNECTION_SLOTS) == 0


@pytest.mark.server
def test_connection_limit_queues_up_to_the_timeout() -> None:
    middleware = _shaped(max_connections=2, queue_timeout_ms=5000)
    with werkzeug_server(middleware) as server:
        statuses = _concurrent_statuses(server.url + "/slow", 4)
    assert statuses == [200, 200, 200, 200]


def _concurrent_statuses(url: str, n: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def get() -> None:
        with session() as http:
            status = http.get(url, timeout=10).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=get) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return statuses


@pytest.mark.server
def test_no_slot_leaks_after_1000_mixed_requests() -> None:
    """Faults, app exceptions and clients hanging up mid-body: every slot comes back."""
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "seed": 1,
            "fault_injection": {
                "enabled": True,
                "http_error_probability": 0.1,
                "connection_error_probability": 0.1,
                "partial_response_probability": 0.1,
            },
            "traffic_shaping": {"enabled": True, "max_connections": 6, "queue_timeout_ms": 2000},
        },
    )
    middleware = ChaosMiddleware(_app_with_failures, config=config)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(index: int) -> None:
        with session() as http:
            for n in range(125):
                kind = ("plain", "boom", "hangup", "stream")[(index + n) % 4]
                try:
                    if kind == "hangup":
                        _hang_up_mid_body(port)
                        result = "hung up"
                    else:
                        path = {"plain": "/hello", "boom": "/boom", "stream": "/bytes/200000"}[
                            kind
                        ]
                        result = str(http.get(server.url + path, timeout=10).status_code)
                except requests.RequestException as error:
                    result = type(error).__name__
                with lock:
                    outcomes[result] += 1

    with werkzeug_server(middleware) as server:
        port = int(server.url.rsplit(":", 1)[1])
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        deadline = time.monotonic() + 10
        while middleware.store.slots_in_use(CONNECTION_SLOTS) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert middleware.store.slots_in_use(CONNECTION_SLOTS) == 0
    assert sum(outcomes.values()) == 1000
    # Every kind of ending happened.
    assert {"200", "500", "hung up", "ConnectionError", "ChunkedEncodingError"} <= set(outcomes)


def _hang_up_mid_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /bytes/2000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.recv(1000)


def test_paced_upload_reaches_a_flask_view_intact() -> None:
    from flask import Flask, request

    flask_app = Flask(__name__)

    @flask_app.post("/upload")
    def upload() -> dict[str, int]:
        return {"length": len(request.get_data())}

    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "traffic_shaping": {"enabled": True, "upload_bandwidth_limit_bps": 200_000},
        },
    )
    flask_app.wsgi_app = ChaosMiddleware(flask_app.wsgi_app, config=config)  # type: ignore[method-assign]
    start = time.perf_counter()
    response = flask_app.test_client().post("/upload", data=b"p" * 100_000)
    assert response.json == {"length": 100_000}
    assert time.perf_counter() - start >= 0.5 - 0.02  # 100 kB at 200 kB/s, first slice free


def _one_request(port: int, path: str) -> str:
    """GET on a new connection; the status, or how the connection ended without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                data = client.recv(65536)
                if not data:
                    return "cut"
                received += data
            head, body = received.split(b"\r\n\r\n", 1)
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            while len(body) < length:
                data = client.recv(65536)
                if not data:
                    return "cut"
                body += data
        except ConnectionResetError:
            return "reset"
        return head.split(b" ", 2)[1].decode()


@pytest.mark.server
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({}, id="plain"),
        pytest.param({"connection_error_probability": 0.3}, id="resets"),
        pytest.param({"partial_response_probability": 0.3}, id="partial-responses"),
        pytest.param({"timeout_probability": 0.3, "timeout_ms": 5}, id="timeouts"),
    ],
)
def test_a_sequential_client_never_meets_a_busy_server(
    tmp_path: Path, faults: dict[str, float]
) -> None:
    """max_connections 1, one request at a time: the slot is free before the client
    can tell its answer (or its cut) is complete."""
    env = {
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_ENABLED": "true",
        "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_MAX_CONNECTIONS": "1",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_ENABLED": "true",
        "MOCKFORGE_CHAOS_SEED": "5",
        **{f"MOCKFORGE_CHAOS_FAULT_INJECTION_{k.upper()}": str(v) for k, v in faults.items()},
    }
    outcomes: Counter[str] = Counter()
    with gunicorn_server(tmp_path, env=env, worker_class="gthread") as server:
        port = int(server.url.rsplit(":", 1)[1])
        for _ in range(300):
            # A new connection each time, as a curl loop makes, read by a raw socket
            # client that asks again the moment its answer is complete: another server
            # thread takes it while the one that answered may still be finishing.
            outcomes[_one_request(port, "/bytes/2000")] += 1
    assert outcomes["503"] == 0, outcomes
    assert outcomes["200"] > 100, outcomes


def test_a_waiting_request_gets_a_freed_slot_at_once() -> None:
    """A release wakes a waiter: it does not sleep out its queue timeout."""
    store = MemoryStore()
    assert store.acquire_slot(CONNECTION_SLOTS, 1, 0)
    waited: list[float] = []

    def wait() -> None:
        start = time.monotonic()
        assert store.acquire_slot(CONNECTION_SLOTS, 1, 5.0)
        waited.append(time.monotonic() - start)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    store.release_slot(CONNECTION_SLOTS)
    waiter.join(10)
    assert waited and waited[0] < 1.0, waited
    assert store.slots_in_use(CONNECTION_SLOTS) == 1
