"""Rate limiting: GCRA arithmetic, levels checked together, real threads, 429s."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from mockforge_wsgi import load_config
from mockforge_wsgi.config import RateLimitConfig
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.rate_limit import RateLimiter, client_ip
from mockforge_wsgi.state import Bucket, MemoryStore, Store, StoreError
from mockforge_wsgi.state.gcra import BucketOutcome, charge


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def limited(**rate_limit: Any) -> ChaosMiddleware:
    config = load_config(
        environ={}, overrides={"enabled": True, "rate_limit": {"enabled": True, **rate_limit}}
    )
    return ChaosMiddleware(hello, config=config)


def test_gcra_admits_the_burst_then_the_rate() -> None:
    bucket = Bucket("k", interval_s=0.1, burst=3)
    tats: dict[str, float] = {}

    def charge_at(now: float) -> BucketOutcome:
        _, outcome, new_tats = charge(tats.get, [bucket], now)
        if new_tats is not None:
            tats["k"] = new_tats[0]
        return outcome

    outcomes = [charge_at(10.0) for _ in range(4)]
    assert [o.allowed for o in outcomes] == [True, True, True, False]
    assert [o.remaining for o in outcomes] == [2, 1, 0, 0]
    assert outcomes[3].retry_after_s == pytest.approx(0.1)
    assert outcomes[3].reset_s == pytest.approx(0.3)
    # One interval later exactly one more request fits.
    assert [charge_at(10.1).allowed for _ in range(2)] == [True, False]


def test_charge_reports_the_tightest_level() -> None:
    tats = {"a": 10.0 + 0.4, "b": 10.0 + 0.1}  # a has 1 token left of 5, b has 4
    buckets = [Bucket("a", 0.1, 5), Bucket("b", 0.1, 5)]
    index, outcome, _ = charge(tats.get, buckets, 10.0)
    assert (index, outcome.allowed, outcome.remaining) == (0, True, 0)
    tats["a"] = 10.5  # a is empty: refused by a, and nothing is charged
    index, outcome, new_tats = charge(tats.get, buckets, 10.0)
    assert (index, outcome.allowed, new_tats) == (0, False, None)


def test_threads_get_burst_plus_rate_times_time() -> None:
    """100 rps, burst 10, 8 threads hammering for 3 s: admitted = 10 + 100 * elapsed,
    less what the bucket could not hold while no thread ran (a loaded machine)."""
    limiter = RateLimiter(MemoryStore())
    config = RateLimitConfig(enabled=True, requests_per_second=100, burst_size=10)
    admitted = 0
    times: list[float] = []
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + 3.0

    def hammer() -> None:
        nonlocal admitted
        mine = 0
        checked = []
        for _ in range(2_000_000):  # bounded; the clock ends it first
            now = time.monotonic()
            if now >= stop_at:
                break
            verdict = limiter.check(config, "", "", now)
            assert verdict is not None
            mine += verdict.allowed
            checked.append(now)
        with lock:
            admitted += mine
            times.extend(checked)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A pause of g seconds with no check (every thread descheduled: the other Pythons'
    # fast loops beside the suite in .ci/run, other jobs) fills the bucket up to its
    # burst and drops the rest: 100 * g - 10 tokens no one could take.
    times.sort()
    lost = sum(max(0.0, 100 * (b - a) - 10) for a, b in itertools.pairwise(times))
    expected = 10 + 100 * (times[-1] - times[0]) - lost
    assert abs(admitted - expected) <= 0.02 * expected, (admitted, expected, lost)


def test_a_refused_request_charges_no_other_level() -> None:
    limiter = RateLimiter(MemoryStore())
    config = RateLimitConfig(
        enabled=True, requests_per_second=0.001, burst_size=5, per_ip=True, per_ip_burst_size=2
    )
    now = 100.0
    a = [limiter.check(config, "10.0.0.1", "", now) for _ in range(3)]
    assert [v.allowed for v in a if v] == [True, True, False]
    assert a[2] is not None
    assert a[2].level == "per_ip"
    # The refused third request took no global token: three are left for others.
    b = [limiter.check(config, f"10.0.1.{i}", "", now) for i in range(4)]
    assert [v.allowed for v in b if v] == [True, True, True, False]
    assert b[3] is not None
    assert b[3].level == "global"


def test_per_ip_and_per_endpoint_limits_are_independent() -> None:
    limiter = RateLimiter(MemoryStore())
    config = RateLimitConfig(
        enabled=True,
        requests_per_second=0.001,
        burst_size=2,
        global_limit=False,
        per_ip=True,
        per_endpoint=True,
        per_endpoint_burst_size=3,
    )
    now = 5.0

    def allowed(ip: str, endpoint: str) -> bool:
        verdict = limiter.check(config, ip, endpoint, now)
        return verdict is not None and verdict.allowed

    assert [allowed("a", "/x") for _ in range(3)] == [True, True, False]  # per-IP limit of a
    assert allowed("b", "/x")  # another IP is untouched; /x has had 3 charges now
    assert not allowed("c", "/x")  # /x's own bucket (3) is spent, whatever the IP
    assert allowed("c", "/y")  # another endpoint is untouched


def test_refusal_is_a_429_with_headers() -> None:
    middleware = limited(requests_per_second=0.5, burst_size=2)
    client = Client(middleware)
    first = client.get("/")
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "2"
    assert first.headers["RateLimit-Remaining"] == "1"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert first.headers["RateLimit-Reset"] == "2"
    assert "X-Mockforge-Chaos" not in first.headers
    client.get("/")
    refused = client.get("/")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"  # 2 s to the next token, whole seconds
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["RateLimit-Reset"] == "4"
    assert refused.headers["X-Mockforge-Chaos"] == "rate_limit=global"
    assert json.loads(refused.data)["level"] == "global"


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    middleware = limited(requests_per_second=100, burst_size=1)
    client = Client(middleware)
    client.get("/")
    refused = client.get("/")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"  # 10 ms rounds up to 1 s


_IETF = {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
_LEGACY = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("both", _IETF | _LEGACY),
        ("ietf", _IETF),
        ("legacy", _LEGACY),
        ("none", set()),
    ],
)
def test_headers_style_chooses_the_families_on_admitted_and_refused_answers(
    style: str, expected: set[str]
) -> None:
    client = Client(limited(requests_per_second=1, burst_size=1, headers=style))
    admitted = client.get("/")
    refused = client.get("/")
    assert admitted.status_code == 200
    assert refused.status_code == 429
    rate_limit_headers = _IETF | _LEGACY
    assert set(admitted.headers.keys()) & rate_limit_headers == expected
    assert set(refused.headers.keys()) & rate_limit_headers == expected
    assert refused.headers["Retry-After"] == "1"  # whatever the style
    if expected:
        limit = next(name for name in sorted(expected) if name.endswith("Limit"))
        assert admitted.headers[limit] == refused.headers[limit] == "1"


def test_headers_style_default_is_both_and_bad_values_are_named() -> None:
    assert load_config(environ={}).rate_limit.headers == "both"
    with pytest.raises(Exception, match=r"rate_limit\.headers.*sometimes") as raised:
        load_config(environ={}, overrides={"rate_limit": {"headers": "sometimes"}})
    assert "ietf" in str(raised.value)


def test_admitted_headers_can_be_switched_off() -> None:
    response = Client(limited(expose_headers=False)).get("/")
    assert response.status_code == 200
    assert "RateLimit-Limit" not in response.headers


@pytest.mark.parametrize(
    ("environ", "trusted", "expected"),
    [
        pytest.param(
            {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "1.2.3.4"},
            (),
            "10.0.0.5",
            id="xff-ignored-by-default",
        ),
        pytest.param(
            {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "1.2.3.4"},
            ("10.0.0.0/8",),
            "1.2.3.4",
            id="trusted-proxy",
        ),
        pytest.param(
            {"REMOTE_ADDR": "9.9.9.9", "HTTP_X_FORWARDED_FOR": "1.2.3.4"},
            ("10.0.0.0/8",),
            "9.9.9.9",
            id="untrusted-peer",
        ),
        pytest.param(
            {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 1.2.3.4, 10.0.0.9"},
            ("10.0.0.0/8",),
            "1.2.3.4",
            id="rightmost-untrusted-hop",
        ),
        pytest.param(
            {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "6.6.6.6, not-an-address"},
            ("10.0.0.0/8",),
            "not-an-address",  # a hop that is no address is nobody's proxy: it is the key
            id="garbage-hop-is-not-skipped",
        ),
        pytest.param(
            {"HTTP_X_FORWARDED_FOR": "6.6.6.6"},
            ("10.0.0.0/8",),
            "unknown",  # no peer address: the header cannot be trusted either
            id="no-peer-address",
        ),
        pytest.param(
            {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "10.0.0.7, 10.0.0.9"},
            ("10.0.0.0/8",),
            "10.0.0.5",  # every hop a proxy: the peer is the best we know
            id="all-hops-trusted",
        ),
        pytest.param(
            {"REMOTE_ADDR": "10.0.0.5"},
            ("10.0.0.0/8",),
            "10.0.0.5",  # a trusted proxy that sent no X-Forwarded-For
            id="trusted-peer-without-header",
        ),
    ],
)
def test_client_ip(environ: dict[str, str], trusted: tuple[str, ...], expected: str) -> None:
    assert client_ip(environ, trusted) == expected


def test_endpoint_key_is_the_flask_route_template() -> None:
    flask_app = Flask(__name__)

    @flask_app.get("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return str(user_id)

    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "rate_limit": {
                "enabled": True,
                "global_limit": False,
                "per_endpoint": True,
                "requests_per_second": 0.001,
                "burst_size": 2,
            },
        },
    )
    flask_app.wsgi_app = ChaosMiddleware(flask_app.wsgi_app, config=config)  # type: ignore[method-assign]
    client = flask_app.test_client()
    statuses = [client.get(f"/users/{n}").status_code for n in (1, 2, 3)]
    assert statuses == [200, 200, 429]  # one bucket for the route, not one per path
    assert client.get("/elsewhere").status_code == 404  # unknown path: keyed by path


def test_table_stays_under_the_cap_and_drops_full_buckets() -> None:
    store = MemoryStore(max_keys=1000)
    limiter = RateLimiter(store)
    config = RateLimitConfig(enabled=True, global_limit=False, per_ip=True, requests_per_second=10)
    for i in range(50_000):
        limiter.check(config, f"ip-{i}", "", 0.0)
        assert store.tracked_keys() <= 1000
    assert store.evicted == 49_000
    # 10 s later every bucket is full again; requests drop them as they pass.
    for i in range(1001):  # each charge checks the least recently charged bucket
        limiter.check(config, "late", "", 10.0 + i)
    assert store.tracked_keys() == 1  # only the bucket still charged


class FailingStore(MemoryStore):
    def acquire(self, buckets: Any, now: float) -> Any:
        raise StoreError("store unreachable")


@pytest.mark.parametrize(
    ("on_store_error", "statuses"),
    [
        pytest.param("open", [200, 200, 200], id="open: no limit"),
        pytest.param("local", [200, 429, 429], id="local: this worker's share"),
    ],
)
def test_an_unreachable_store_fails_open_or_local_and_is_counted(
    on_store_error: str, statuses: list[int]
) -> None:
    limits = {"enabled": True, "requests_per_second": 1, "burst_size": 1}
    config = load_config(
        environ={},
        overrides={"enabled": True, "rate_limit": limits, "on_store_error": on_store_error},
    )
    store: Store = FailingStore()
    middleware = ChaosMiddleware(hello, config=config, store=store)
    client = Client(middleware)
    assert [client.get("/").status_code for _ in range(3)] == statuses
    assert (middleware.internal_errors, middleware.store_errors) == (0, 3)


def test_admitted_headers_follow_each_verdict_and_are_the_callers_to_change() -> None:
    from mockforge_wsgi.rate_limit import RateLimitVerdict

    def verdict(remaining: int, reset_s: float = 0.5) -> RateLimitVerdict:
        return RateLimitVerdict("global", BucketOutcome(True, 10, remaining, reset_s, 0.0))

    first = verdict(5).headers()
    first.append(("X-Mine", "1"))  # a caller adds its own: the next answer must not
    assert dict(verdict(5).headers()) == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "5",
        "RateLimit-Reset": "1",
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "5",
        "X-RateLimit-Reset": "1",
    }
    assert dict(verdict(4).headers())["RateLimit-Remaining"] == "4"
    assert dict(verdict(4, 1.5).headers())["RateLimit-Reset"] == "2"
    refused = RateLimitVerdict("global", BucketOutcome(False, 10, 0, 1.5, 0.2)).headers()
    assert dict(refused)["Retry-After"] == "1"
    assert dict(verdict(0, 1.5).headers()).get("Retry-After") is None


@pytest.fixture(params=["memory", "embedded", pytest.param("redis", marks=pytest.mark.server)])
def any_store(request: pytest.FixtureRequest, tmp_path: Any) -> Store:
    from mockforge_wsgi.state import store_from_url

    if request.param == "memory":
        return MemoryStore()
    if request.param == "embedded":
        return store_from_url(f"file://{tmp_path}")
    server = request.getfixturevalue("redis_server")
    return store_from_url(server.url)


@pytest.mark.parametrize("how", ["acquire", "take"])
def test_an_idle_bucket_refills_to_its_burst_and_no_further(any_store: Store, how: str) -> None:
    """After idling far longer than a refill, a bucket admits `burst` requests at once,
    then refuses: an old TAT is a full bucket, never a bottomless one. On every store
    (Redis charges on its own clock, so the idle time is real)."""
    burst, rate = 3, 20.0  # a token every 50 ms
    bucket = Bucket("idle-test", 1.0 / rate, burst)
    idled = 0.0  # the stores in this process charge on the clock they are given

    def admitted_at_once() -> int:
        now = time.time() + idled
        if how == "take":
            return any_store.take([bucket], now, burst + 5)[2] + sum(
                any_store.take([bucket], now, 1)[2] for _ in range(5)
            )
        return sum(any_store.acquire([bucket], now)[1].allowed for _ in range(burst + 5))

    assert admitted_at_once() == burst
    # 12 intervals: the bucket is full again, and holds no more than full.
    if type(any_store).__name__ == "RedisStore":
        time.sleep(0.6)
    else:
        idled = 0.6
    assert admitted_at_once() == burst
