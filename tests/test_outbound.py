"""Outbound chaos (mockforge_wsgi/outbound.py): interception, decisions, the holds, the
blocks and the middleware's section, with urllib3's request step stood in for (no
server); then the exception table against a real upstream on 127.0.0.1."""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import requests
import urllib3
from upstream_faults import closed_port, upstream
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from mockforge_wsgi import outbound
from mockforge_wsgi.config import (
    ConfigError,
    OutboundConfig,
    config_from_dict,
    load_config,
    longest_delay_s,
)
from mockforge_wsgi.fault import Fault
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.patterns import PATTERN_COUNTER
from mockforge_wsgi.request import Call
from mockforge_wsgi.state import StoreError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    """Each test starts with nothing installed or served (a config another test of this
    process validated may have left its middleware's), and leaves it so."""
    outbound.serve(None)
    outbound.uninstall()
    original = HTTPConnectionPool.__dict__["_make_request"]
    yield
    outbound.serve(None)
    outbound.uninstall()
    assert HTTPConnectionPool.__dict__["_make_request"] is original


PAID = b'{"paid": true, "id": 42}'  # what the stand-in host answers


class _Sent:
    """urllib3's real request step, stood in for: records each call that reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def step(self) -> Callable[..., Any]:
        calls = self.calls

        def _make_request(  # urllib3 2's signature, which install() checks
            self: Any,
            conn: Any,
            method: str,
            url: str,
            body: Any = None,
            headers: Any = None,
            retries: Any = None,
            timeout: Any = None,
            chunked: bool = False,
            response_conn: Any = None,
            preload_content: bool = True,
            decode_content: bool = True,
            enforce_content_length: bool = True,
        ) -> Any:
            calls.append(f"{method} {url}")
            return urllib3.HTTPResponse(
                body=io.BytesIO(PAID),
                headers={"Content-Type": "application/json", "Content-Length": str(len(PAID))},
                status=200,
                preload_content=preload_content,
            )

        return _make_request


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Sent]:
    """Installs over a stand-in for urllib3's request step (put back after the test,
    the interception first)."""
    stand_in = _Sent()
    monkeypatch.setattr(HTTPConnectionPool, "_make_request", stand_in.step())
    yield stand_in
    outbound.serve(None)
    outbound.uninstall()


def _send(
    host: str = "payments.internal",
    port: int = 443,
    method: str = "GET",
    url: str = "/pay",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> Any:
    pool = HTTPConnectionPool(host, port)
    return pool._make_request(None, method, url, headers=headers or {}, **kw)  # type: ignore[arg-type]


def _outcome(send: Callable[[], Any]) -> str:
    try:
        response = send()
    except Exception as error:
        return type(error).__name__
    return f"{response.status}"


# -- installing, and putting back --------------------------------------------------


def test_install_is_idempotent_and_uninstall_puts_back_exactly() -> None:
    pool_original = HTTPConnectionPool.__dict__["_make_request"]
    transport_original = httpx.HTTPTransport.__dict__["handle_request"]
    outbound.install()
    wrapped = HTTPConnectionPool.__dict__["_make_request"]
    outbound.install()  # a second call changes nothing
    assert HTTPConnectionPool.__dict__["_make_request"] is wrapped is not pool_original
    assert wrapped.__wrapped__ is pool_original
    assert httpx.HTTPTransport.__dict__["handle_request"] is not transport_original
    outbound.uninstall()
    assert HTTPConnectionPool.__dict__["_make_request"] is pool_original
    assert httpx.HTTPTransport.__dict__["handle_request"] is transport_original
    assert not outbound.installed()


def test_a_block_restores_exactly_what_was_there(sent: _Sent) -> None:
    stand_in = HTTPConnectionPool.__dict__["_make_request"]
    with outbound.chaos({"fault_injection": {"http_error_probability": 1.0}}) as outer:
        with outbound.chaos({"fault_injection": {"connection_error_probability": 1.0}}):
            assert _outcome(_send) == "ConnectionResetError"  # the innermost decides
        assert outbound._current is outer
        assert _outcome(_send).startswith("5")
    assert HTTPConnectionPool.__dict__["_make_request"] is stand_in  # uninstalled: it installed
    assert outbound._current is None and not outbound.installed()
    assert _outcome(_send) == "200"


def test_a_block_leaves_an_installation_it_did_not_make(sent: _Sent) -> None:
    outbound.install()
    with outbound.chaos({"fault_injection": {"http_error_probability": 1.0}}):
        pass
    assert outbound.installed()
    outbound.uninstall()
    with outbound.chaos({"fault_injection": {"http_error_probability": 1.0}}):
        outbound.install()  # asked for meanwhile (a middleware built in the block)
    assert outbound.installed()


# -- which calls: hosts, rules, and the cost of the others -------------------------


def test_a_call_outside_the_hosts_reaches_the_host_without_a_decision(sent: _Sent) -> None:
    faults = {"fault_injection": {"http_error_probability": 1.0}}
    with outbound.chaos(faults, hosts=["payments.internal:443"]) as source:
        source.decider.decide = None  # type: ignore[assignment,method-assign]  # any call fails
        calls_before = source.engine.store.counters()
        assert _outcome(lambda: _send("auth.internal", 443)) == "200"
        assert _outcome(lambda: _send("payments.internal", 8443)) == "200"
        assert source.engine.store.counters() == calls_before  # no store call either
        assert set(source._seen[2]) == {("auth.internal", 443), ("payments.internal", 8443)}
    assert sent.calls == ["GET /pay", "GET /pay"]


def test_rules_pick_calls_by_host_method_path_and_header(sent: _Sent) -> None:
    rules = [
        {
            "match": {"host": "payments.*:443", "methods": ["POST"], "path": "/pay*"},
            "fault_injection": {"http_errors": [503], "http_error_probability": 1.0},
        },
        {
            "match": {
                "path_regex": "/users/[0-9]+",
                "header": {"name": "X-Tenant", "equals": "a"},
            },
            "fault_injection": {"connection_error_probability": 1.0},
        },
    ]
    with outbound.chaos({"rules": rules}):
        assert _outcome(lambda: _send(method="POST", url="/pay?x=1")) == "503"
        assert _outcome(lambda: _send(method="GET", url="/pay")) == "200"
        assert _outcome(lambda: _send("payments.internal", 80, method="POST")) == "200"
        tenant = {"X-Tenant": "a"}
        assert _outcome(lambda: _send(url="/users/7", headers=tenant)) == "ConnectionResetError"
        assert _outcome(lambda: _send(url="/users/x", headers=tenant)) == "200"
        assert _outcome(lambda: _send(url="/users/7", headers={"X-Tenant": "b"})) == "200"


def test_with_only_rules_a_host_no_rule_names_is_not_decided(sent: _Sent) -> None:
    rules = [{"match": {"host": "payments.internal:*"}, "fault_injection": {"script": ["503"]}}]
    with outbound.chaos({"rules": rules}) as source:
        assert source.covering("auth.internal", 443) is None
        assert source.covering("payments.internal", 443) is not None


def test_hosts_match_without_regard_to_case_and_ipv6_in_brackets(sent: _Sent) -> None:
    faults = {"fault_injection": {"http_error_probability": 1.0}}
    with outbound.chaos(faults, hosts=["Payments.Internal:443", "[::1]:*"]) as source:
        assert source.covering("payments.internal", 443) is not None
        assert source.covering("::1", 8080) is not None
        assert source.covering("::2", 8080) is None
    rules = [{"match": {"host": "[::1]:*"}, "fault_injection": {"script": ["503"]}}]
    with outbound.chaos({"rules": rules}) as source:
        config = source.covering("::1", 8080)
        assert config is not None
        plan, _ = source.decide(config, Call(headers={"Host": "[::1]:8080"}))
        assert plan.fault is not None and plan.fault.status == 503
        assert config.rules[0].match.to_dict() == {"host": "[::1]:*"}  # as written


def test_a_call_through_an_http_proxy_is_matched_by_its_target(sent: _Sent) -> None:
    faults = {"fault_injection": {"http_error_probability": 1.0}}
    with outbound.chaos(faults, hosts=["payments.internal:80"]):
        # a ProxyManager's pool is the proxy's; the request target names the host
        via_proxy = "http://payments.internal/pay"
        assert _outcome(lambda: _send("proxy.local", 3128, url=via_proxy)).startswith("5")
        assert _outcome(lambda: _send("proxy.local", 3128, url="http://auth.internal/")) == "200"


# -- our own failures are not chaos ---------------------------------------------------


def test_an_unreachable_store_lets_the_call_through_counted(sent: _Sent) -> None:
    settings = {"seed": 1, "fault_injection": {"http_error_probability": 1.0}}
    with outbound.chaos(settings) as source:
        source.engine.startup = source.engine.current = attrs.evolve(
            source.engine.current, on_store_error="closed"
        )

        def unreachable(name: str) -> int:
            raise StoreError("down")

        source.engine.store.incr = unreachable  # type: ignore[method-assign]
        assert _outcome(_send) == "200"  # inbound would answer 503 (closed); a call goes on
        assert (source.decider.store_errors, source.decider.internal_errors) == (1, 0)


def test_a_failure_of_ours_while_answering_lets_the_call_through(
    sent: _Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(outbound, "_answer", broken)
    with outbound.chaos({"fault_injection": {"http_error_probability": 1.0}}) as source:
        assert _outcome(_send) == "200"
        assert source.decider.internal_errors == 1
    assert sent.calls == ["GET /pay"]


def test_the_longest_hold_of_a_call_counts_for_the_worker_timeout() -> None:
    config = config_from_dict(
        {
            "outbound": {
                "latency": {"fixed_delay_ms": 100},
                "fault_injection": {"timeout_probability": 0.1, "timeout_ms": 2000},
                "rules": [{"match": {"host": "a:1"}, "latency": {"fixed_delay_ms": 40_000}}],
            }
        }
    )
    assert longest_delay_s([config]) == 42.0  # the rule's latency, then the read timeout
    assert longest_delay_s([attrs.evolve(config, outbound=OutboundConfig())]) == 0.0


# -- the faults, as the library raises them ------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({"refused_probability": 1.0}, NewConnectionError, id="refused"),
        pytest.param(
            {"fault_injection": {"connection_error_probability": 1.0}},
            ConnectionResetError,  # urlopen makes it ProtocolError('Connection aborted.')
            id="reset",
        ),
    ],
)
def test_a_refusal_or_a_reset_never_calls_the_host(
    sent: _Sent, settings: dict[str, Any], expected: type[Exception]
) -> None:
    with outbound.chaos(settings), pytest.raises(expected):
        _send()
    assert sent.calls == []


def test_an_injected_status_is_answered_without_the_host_with_retry_after(sent: _Sent) -> None:
    faults = {
        "http_errors": [503],
        "http_error_probability": 1.0,
        "retry_after_s": 7,
        "error_headers": {"X-Fault": "injected"},
    }
    with outbound.chaos({"fault_injection": faults}):
        response = _send()
    assert sent.calls == []
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-Fault"] == "injected"
    assert response.headers["X-Mockforge-Chaos"] == "fault=http_503"
    assert b'"fault": "http_503"' in response.data


def _not_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(
    ("mode", "broken"),
    [
        pytest.param("flip", lambda r: len(r.data) == len(PAID) and r.data != PAID, id="flip"),
        pytest.param("random", lambda r: len(r.data) == len(PAID) and r.data != PAID, id="random"),
        pytest.param("invalid_json", lambda r: _not_json(r.data), id="invalid_json"),
        pytest.param(
            "truncate",
            lambda r: (
                r.data == PAID[: len(PAID) // 2]
                and r.headers["Content-Length"] == str(len(PAID) // 2)
            ),
            id="truncate",
        ),
        pytest.param(
            "wrong_content_type",
            lambda r: r.data == PAID and r.headers["Content-Type"].startswith("text/html"),
            id="wrong_content_type",
        ),
    ],
)
def test_a_corrupted_body_is_the_hosts_broken_as_inbound_breaks_it(
    sent: _Sent, mode: str, broken: Callable[[Any], bool]
) -> None:
    faults = {"corruption_probability": 1.0, "corruption": mode}
    with outbound.chaos({"seed": 5, "fault_injection": faults}):
        response = _send()
    assert sent.calls == ["GET /pay"]  # the host answered; its answer is broken
    assert response.status == 200 and broken(response), (response.headers, response.data)


def test_an_empty_reply_is_the_host_closing_without_an_answer(sent: _Sent) -> None:
    faults = {"corruption_probability": 1.0, "corruption": "empty_reply"}
    closed = pytest.raises(http.client.RemoteDisconnected)
    with outbound.chaos({"fault_injection": faults}), closed:
        _send()  # urlopen makes it ProtocolError('Connection aborted.', ...), as for real
    assert sent.calls == ["GET /pay"]


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [
        pytest.param("reset", "ConnectionResetError", id="reset"),
        pytest.param("http_error", "502", id="http_error"),
        pytest.param("stall", "ReadTimeoutError", id="stall"),
    ],
)
def test_after_app_the_host_has_done_its_part_then_the_fault(
    sent: _Sent, monkeypatch: pytest.MonkeyPatch, mode: str, outcome: str
) -> None:
    """Did the app retry a POST the host had already taken? The host is called first."""
    monkeypatch.setattr(outbound, "RELEASER", _Holds(True))
    faults = {"after_app_probability": 1.0, "after_app_fault": mode, "http_errors": [502]}
    with outbound.chaos({"fault_injection": faults}):
        assert _outcome(lambda: _send(method="POST")) == outcome
    assert sent.calls == ["POST /pay"]


@pytest.fixture
def httpx_sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """httpx's transport, stood in for: answers PAID, records each call that reached it."""
    calls: list[str] = []

    def handle_request(self: Any, request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, headers={"Content-Type": "application/json"}, content=PAID)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle_request)
    yield calls
    outbound.serve(None)
    outbound.uninstall()


@pytest.mark.parametrize(
    ("faults", "outcome", "reached"),
    [
        pytest.param({"connection_error_probability": 1.0}, "ReadError", False, id="reset"),
        pytest.param(
            {"http_errors": [429], "http_error_probability": 1.0}, 429, False, id="status"
        ),
        pytest.param({"after_app_probability": 1.0}, "ReadError", True, id="after-app-reset"),
        pytest.param({"partial_response_probability": 1.0}, "RemoteProtocolError", True, id="cut"),
        pytest.param(
            {"corruption_probability": 1.0, "corruption": "truncate"},
            len(PAID) // 2,
            True,
            id="truncate",
        ),
    ],
)
def test_httpx_calls_get_the_same_faults(
    httpx_sent: list[str], faults: dict[str, Any], outcome: Any, reached: bool
) -> None:
    with outbound.chaos({"fault_injection": faults}), httpx.Client() as client:
        try:
            response = client.get("https://payments.internal/pay")
            got: Any = (
                response.status_code if response.status_code != 200 else len(response.content)
            )
        except httpx.HTTPError as error:
            got = type(error).__name__
    assert got == outcome
    assert httpx_sent == (["GET /pay"] if reached else [])


def test_httpx_calls_over_a_hosts_rate_limit_get_its_429_unsent(httpx_sent: list[str]) -> None:
    limit = {"rate_limit": {"requests_per_second": 0.01, "burst_size": 1}}
    with outbound.chaos(limit), httpx.Client() as client:
        got = [client.get("https://payments.internal/pay") for _ in range(2)]
    assert [r.status_code for r in got] == [200, 429] and httpx_sent == ["GET /pay"]
    assert got[1].headers["Retry-After"] == "100"
    assert got[1].headers["X-Mockforge-Chaos"] == "rate_limit=per_host"


def test_a_script_plays_its_steps_in_order_then_the_probabilities(sent: _Sent) -> None:
    with outbound.chaos({"fault_injection": {"script": [503, "reset", "ok"]}}):
        seen = [_outcome(_send) for _ in range(4)]
    assert seen == ["503", "ConnectionResetError", "200", "200"]
    assert len(sent.calls) == 2


def test_a_script_restarts_at_every_change_as_inbound(sent: _Sent) -> None:
    with outbound.chaos({"fault_injection": {"script": [503]}}) as source:
        assert [_outcome(_send) for _ in range(2)] == ["503", "200"]
        engine = source.engine
        section = engine.editable().outbound
        engine.update_config(outbound=attrs.evolve(section, hosts=("*:*",)))  # a change
        assert [_outcome(_send) for _ in range(2)] == ["503", "200"]


def test_a_pattern_counts_the_calls_apart_from_the_inbound_requests(sent: _Sent) -> None:
    """`fail_first` numbers the app's calls in their own counter (outbound:...): the
    first two calls fail whatever the inbound requests did meanwhile."""
    pattern = {"fail_first": 2, "status": 503}
    with outbound.chaos({"fault_injection": {"pattern": pattern}}) as source:
        source.engine.store.incr(PATTERN_COUNTER, 5)  # inbound requests numbered meanwhile
        seen = [_outcome(_send) for _ in range(3)]
    assert seen == ["503", "503", "200"]
    assert sent.calls == ["GET /pay"]


def test_each_attempt_of_urllib3s_own_retries_is_decided_afresh(sent: _Sent) -> None:
    """Inside urlopen's retry loop: the app's Retry policy meets each injected fault as
    it would the real one (a 503 retried by status, a reset retried as a read error)."""
    pool = HTTPConnectionPool("payments.internal", 443)
    retry = urllib3.Retry(total=3, status_forcelist=[503], respect_retry_after_header=False)
    with outbound.chaos({"fault_injection": {"script": [503, "reset", "ok"]}}):
        response = pool.urlopen("GET", "/pay", retries=retry)
    assert response.status == 200
    assert sent.calls == ["GET /pay"]  # the third attempt, the only one sent
    reset_once = outbound.chaos({"fault_injection": {"script": ["reset"]}})
    with reset_once, pytest.raises(urllib3.exceptions.ProtocolError):  # a POST: not retried
        pool.urlopen("POST", "/pay", retries=urllib3.Retry(total=3))
    assert sent.calls == ["GET /pay"]


class _Holds:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[float] = []

    def hold(self, seconds: float, **_: Any) -> bool:
        self.asked.append(seconds)
        return self.answer


@pytest.mark.parametrize(
    ("timeout", "held"),
    [
        pytest.param(urllib3.Timeout(connect=1.0, read=0.25), 0.25, id="the-callers-read-timeout"),
        pytest.param(urllib3.Timeout(connect=1.0, read=None), 0.4, id="none-timeout_ms"),
    ],
)
def test_a_read_timeout_fires_when_the_callers_own_would(
    sent: _Sent, monkeypatch: pytest.MonkeyPatch, timeout: Any, held: float
) -> None:
    holds = _Holds(True)
    monkeypatch.setattr(outbound, "RELEASER", holds)
    settings = {"fault_injection": {"timeout_probability": 1.0, "timeout_ms": 400}}
    said = re.escape(f"read timeout={timeout.read_timeout}")
    with outbound.chaos(settings), pytest.raises(ReadTimeoutError, match=said):
        _send(timeout=timeout)
    assert holds.asked == [held]  # held exactly as long as the caller waits, no longer
    assert sent.calls == []


def test_latency_holds_the_drawn_delay_then_the_call_goes(
    sent: _Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    holds = _Holds(True)
    monkeypatch.setattr(outbound, "RELEASER", holds)
    with outbound.chaos({"latency": {"fixed_delay_ms": 250}}):
        assert _outcome(_send) == "200"
    assert holds.asked == [0.25] and sent.calls == ["GET /pay"]


@pytest.mark.parametrize(
    ("settings", "hit"),
    [
        pytest.param({"fault_injection": {"http_error_probability": 0.3}}, "5", id="status"),
        pytest.param({"refused_probability": 0.3}, "NewConnectionError", id="refused"),
    ],
)
def test_a_probability_is_per_call(sent: _Sent, settings: dict[str, Any], hit: str) -> None:
    calls = 2000
    with outbound.chaos({"seed": 11, **settings}):
        hits = sum(_outcome(_send).startswith(hit) for _ in range(calls))
    # binomial(2000, 0.3): sd 20.5; 5 sd either side
    assert abs(hits - 0.3 * calls) <= 5 * (calls * 0.3 * 0.7) ** 0.5, hits


@pytest.mark.parametrize(
    ("fraction", "limit", "total", "kept"),
    [
        pytest.param(0.5, 0, 1000, 500, id="half"),
        pytest.param(0.5, 10, 1000, 10, id="limit-bytes"),
        pytest.param(1.0, 0, 1000, 999, id="always-short-of-it"),
        pytest.param(0.5, 5000, 1000, 999, id="limit-beyond"),
        pytest.param(0.5, 0, 0, 0, id="empty"),
    ],
)
def test_a_cut_body_keeps_its_share_always_short_of_the_whole(
    fraction: float, limit: int, total: int, kept: int
) -> None:
    fault = Fault("partial_response", fraction=fraction, limit_bytes=limit)
    assert outbound._cut_at(fault, total) == kept


def test_a_released_hold_goes_on_as_if_chaos_were_off(
    sent: _Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbound, "RELEASER", _Holds(False))
    settings = {
        "latency": {"fixed_delay_ms": 5000},
        "fault_injection": {"timeout_probability": 1.0},
    }
    with outbound.chaos(settings):
        assert _outcome(lambda: _send(timeout=urllib3.Timeout(read=5.0))) == "200"
    assert sent.calls == ["GET /pay"]


def test_chaos_off_wakes_a_held_call(sent: _Sent) -> None:
    done: list[str] = []
    with outbound.chaos({"latency": {"fixed_delay_ms": 30_000}}) as source:
        caller = threading.Thread(target=lambda: done.append(_outcome(_send)))
        started = time.monotonic()
        caller.start()
        time.sleep(0.1)
        source.engine.set_enabled(False)
        caller.join(10.0)
    assert done == ["200"]
    assert time.monotonic() - started < 5.0  # not the 30 s it was decided


def test_seeded_calls_repeat_and_number_apart_from_inbound(sent: _Sent) -> None:
    settings = {"seed": 7, "fault_injection": {"http_error_probability": 0.5}}
    runs = []
    for _ in range(2):
        with outbound.chaos(settings) as source:
            runs.append([_outcome(_send) for _ in range(30)])
            counters = source.engine.store.counters()
    assert runs[0] == runs[1]
    assert {"200", "500", "502", "503", "504"} >= set(runs[0]) > {"200"}
    assert counters.get("outbound:sequence") == 30 and not counters.get("sequence")


def test_the_decision_is_the_inbound_core_over_a_call() -> None:
    """The same Decider, rules and Plan as inbound: a Call with Host: host:port."""
    rules = [{"match": {"host": "*.internal:443"}, "fault_injection": {"script": ["429"]}}]
    with outbound.chaos({"rules": rules}) as source:
        config = source.covering("payments.internal", 443)
        assert config is not None
        call = Call("GET", "/pay", headers={"Host": "payments.internal:443"})
        plan, _ = source.decide(config, call)
    assert plan.fault is not None and plan.fault.status == 429


# -- the config section, served by the middleware ------------------------------------


def test_the_middleware_serves_its_sections_outbound_chaos_from_the_shared_state(
    sent: _Sent,
) -> None:
    config = config_from_dict({"enabled": True, "outbound": {"enabled": True}})
    middleware = ChaosMiddleware(lambda environ, start: [], config=config)
    assert outbound.installed()
    assert _outcome(_send) == "200"  # the section is on, with no chaos in it yet
    faults = {"http_errors": [502], "http_error_probability": 1.0}
    section = config_from_dict({"outbound": {"fault_injection": faults}}).outbound
    middleware.engine.update_config(outbound=section)  # as PUT /config/outbound does
    assert _outcome(_send) == "502"
    middleware.engine.set_enabled(False)
    assert _outcome(_send) == "200"


def test_the_section_through_the_management_api_patch_merges_nested_sections() -> None:
    from werkzeug.test import Client

    middleware = ChaosMiddleware(lambda environ, start: [], config=config_from_dict({}))
    client = Client(middleware)
    url = "/api/chaos/config/outbound"
    put = {"hosts": ["payments.internal:443"], "fault_injection": {"http_error_probability": 1}}
    assert client.put(url, json=put).status_code == 200
    patch = {"fault_injection": {"timeout_probability": 0.5}, "latency": {"fixed_delay_ms": 9}}
    answer = client.patch(url, json=patch).get_json()
    faults = answer["fault_injection"]
    assert (faults["http_error_probability"], faults["timeout_probability"]) == (1.0, 0.5)
    assert answer["latency"]["fixed_delay_ms"] == 9.0 and answer["latency"]["enabled"]
    assert answer["hosts"] == ["payments.internal:443"] and answer["enabled"]
    section = middleware.engine.editable().outbound
    assert section.fault_injection.http_error_probability == 1.0
    bad = client.put(url, json={"hosts": ["payments.internal"]})
    assert bad.status_code == 400
    assert "chaos.outbound.hosts: 'payments.internal' is not a host:port glob" in bad.text
    answer.pop("warnings")
    assert client.get(url).get_json() == answer


def test_a_middleware_without_the_section_installs_nothing() -> None:
    ChaosMiddleware(lambda environ, start: [], config=config_from_dict({"enabled": True}))
    assert not outbound.installed() and outbound._current is None


def test_the_section_reads_from_the_environment_and_refuses_bad_hosts() -> None:
    config = load_config(
        environ={
            "MOCKFORGE_CHAOS_OUTBOUND_HOSTS": "payments.internal:443,*.auth:*",
            "MOCKFORGE_CHAOS_OUTBOUND_FAULT_INJECTION_TIMEOUT_PROBABILITY": "0.5",
        }
    )
    assert config.outbound.enabled and config.outbound.hosts == (
        "payments.internal:443",
        "*.auth:*",
    )
    assert config.outbound.fault_injection.enabled
    assert config.outbound.fault_injection.timeout_probability == 0.5
    with pytest.raises(ConfigError) as error:
        config_from_dict({"outbound": {"hosts": ["payments.internal"]}})
    assert str(error.value).endswith(
        "chaos.outbound.hosts: 'payments.internal' is not a host:port glob "
        "(e.g. payments.internal:443, *:*)"
    )


def test_a_call_rule_may_set_latency_and_faults_only() -> None:
    """A call holds no slot, bulkhead place or active fault, nor counts in a limit or a
    breaker: a rule asking for one would take what is never given back."""
    rule = {"match": {"host": "a:1"}, "bulkhead": {"max_concurrent": 1}, "max_active_faults": 2}
    with pytest.raises(ConfigError) as error:
        config_from_dict({"outbound": {"rules": [rule]}})
    allowed = "not for outbound calls; allowed: match, latency, fault_injection"
    assert error.value.problems == [
        f"chaos.outbound.rules[0].bulkhead: {allowed}",
        f"chaos.outbound.rules[0].max_active_faults: {allowed}",
    ]


def test_faults_of_the_server_side_are_refused_for_calls() -> None:
    """A stream cut on a timer, an upload reset and framing written on the client's
    socket have no place in a client call: refused, not silently ignored."""
    section = {
        "fault_injection": {"cut_probability": 0.5, "corruption": "random_then_close"},
        "rules": [{"match": {"host": "a:1"}, "fault_injection": {"upload_reset_probability": 1}}],
    }
    with pytest.raises(ConfigError) as error:
        config_from_dict({"outbound": section})
    assert error.value.problems == [
        "chaos.outbound.fault_injection.cut_probability: 0.5 is for inbound requests only; "
        "an outbound call has no stream to cut on a timer nor upload to reset (0 here)",
        "chaos.outbound.fault_injection.corruption: 'random_then_close' is for inbound "
        "requests only (written on the client's socket); allowed: flip, random, "
        "invalid_json, truncate, wrong_content_type, empty_reply",
        "chaos.outbound.rules[0].fault_injection.upload_reset_probability: 1.0 is for "
        "inbound requests only; an outbound call has no stream to cut on a timer nor "
        "upload to reset (0 here)",
    ]


@pytest.mark.chaos_outbound(
    {"fault_injection": {"http_errors": [429], "http_error_probability": 1.0}},
    hosts=["payments.internal:*"],
)
def test_the_marker_puts_the_test_body_under_outbound_chaos(sent: _Sent) -> None:
    assert outbound.installed()
    assert _outcome(_send) == "429"
    assert _outcome(lambda: _send("auth.internal")) == "200"


# -- counted, recorded, and carrying the test id of the request being served ----------


def test_each_covered_call_is_counted_in_the_store_by_what_it_got(sent: _Sent) -> None:
    faults = {"fault_injection": {"script": [503, "reset", "ok"]}}
    with outbound.chaos({**faults, "refused_probability": 0.0}, hosts=["*.internal:*"]) as src:
        for _ in range(3):
            _outcome(_send)
        _outcome(lambda: _send("example.com", 80))  # not covered: not counted
    counters = src.engine.store.counters()
    assert counters["outbound_calls"] == 3
    assert counters["outbound_http_error"] == counters["outbound_connection_reset"] == 1
    with outbound.chaos({"refused_probability": 1.0}) as src:
        _outcome(_send)
    assert src.engine.store.counters()["outbound_refused"] == 1


def _serving(app: Any, *, outbound_section: dict[str, Any], recorder: Any = None) -> Any:
    """A Client of ``app`` under ChaosMiddleware with the outbound section (and a
    RecorderMiddleware around it, given a recorder)."""
    from werkzeug.test import Client

    from mockforge_wsgi.recorder import RecorderMiddleware

    config = config_from_dict({"enabled": True, "outbound": outbound_section})
    wrapped: Any = ChaosMiddleware(app, config=config)
    if recorder is not None:
        wrapped = RecorderMiddleware(wrapped, recorder)
    return Client(wrapped)


def _paying_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """An app that calls payments.internal while serving each request."""
    got = _outcome(_send).encode()
    start_response("200 OK", [("Content-Length", str(len(got)))])
    return [got]


def test_a_rule_picks_one_tests_calls_by_the_test_id_of_the_request_served(
    sent: _Sent,
) -> None:
    rule = {
        "match": {"header": {"name": "X-Mockforge-Test-Id", "equals": "test_checkout"}},
        "fault_injection": {"http_errors": [503], "http_error_probability": 1.0},
    }
    client = _serving(_paying_app, outbound_section={"enabled": True, "rules": [rule]})
    mine = client.get("/", headers={"X-Mockforge-Test-Id": "test_checkout"})
    other = client.get("/", headers={"X-Mockforge-Test-Id": "test_refund"})
    assert (mine.get_data(), other.get_data(), client.get("/").get_data()) == (
        b"503",
        b"200",
        b"200",
    )
    assert outbound.CALLER.get() is None  # the request's caller ends with it
    assert "x-mockforge-test-id" not in str(sent.calls).lower()  # not sent to the host


def test_the_app_s_calls_are_recorded_apart_with_the_request_s_ids(
    sent: _Sent, tmp_path: Path
) -> None:
    from mockforge_wsgi.recorder import Recorder

    recorder = Recorder(tmp_path / "calls.db")
    faults = {"fault_injection": {"http_errors": [503], "http_error_probability": 1.0}}
    section = {"enabled": True, "hosts": ["payments.internal:443"], **faults}
    client = _serving(_paying_app, outbound_section=section, recorder=recorder)
    assert client.get("/buy", headers={"X-Mockforge-Test-Id": "t-1"}).get_data() == b"503"
    [served] = recorder.search({})
    [called] = recorder.search({"direction": "outbound"})
    assert (served["direction"], served["path"], served["status"]) == ("inbound", "/buy", 200)
    assert called["direction"] == "outbound" and called["host"] == "payments.internal:443"
    assert (called["method"], called["path"], called["status"]) == ("GET", "/pay", 503)
    assert (called["fault_type"], called["test_id"]) == ("http_error", "t-1")
    assert called["request_id"] == served["request_id"] != ""
    assert called["retry_after_s"] == 1.0
    report = client.get("/api/chaos/report").get_data(as_text=True)
    assert "<td>payments.internal:443</td><td>1</td><td>503: 1</td>" in report
    assert '"requests": 1' in report  # the client's one request; the call shown apart


def test_a_call_that_raised_is_recorded_with_its_exception(sent: _Sent, tmp_path: Path) -> None:
    from mockforge_wsgi.recorder import Recorder

    recorder = Recorder(tmp_path / "calls.db")
    section = {"enabled": True, "refused_probability": 1.0}
    client = _serving(_paying_app, outbound_section=section, recorder=recorder)
    assert client.get("/").get_data() == b"NewConnectionError"
    [called] = recorder.search({"direction": "outbound"})
    assert (called["status"], called["error"], called["fault_type"]) == (
        0,
        "NewConnectionError",
        "connection_reset",
    )


def test_a_watcher_that_fails_never_fails_the_call(
    sent: _Sent, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[outbound.CallRecord] = []

    def broken(record: outbound.CallRecord) -> None:
        told.append(record)
        raise RuntimeError("a watcher's bug")

    outbound.watch(broken)
    try:
        with outbound.chaos({"latency": {"fixed_delay_ms": 0}}):
            assert _outcome(_send) == "200"
    finally:
        outbound._WATCHERS[:] = [w for w in outbound._WATCHERS if w() is not broken]
    assert [(r.host, r.status) for r in told] == [("payments.internal:443", 200)]
    assert "telling of an outbound call" in caplog.text


def test_prometheus_counts_calls_by_host_with_the_hosts_bounded(sent: _Sent) -> None:
    pytest.importorskip("prometheus_client")
    from mockforge_wsgi.metrics import MAX_OUTBOUND_HOSTS, ChaosMetrics

    metrics = ChaosMetrics()
    outbound.watch(metrics.observe_call)
    faults = {"fault_injection": {"http_errors": [502], "http_error_probability": 1.0}}
    with outbound.chaos(faults):
        for n in range(MAX_OUTBOUND_HOSTS + 5):
            _outcome(lambda n=n: _send(f"h{n}.internal"))
        _outcome(lambda: _send("h0.internal"))
    text = metrics.exposition()[0].decode()
    calls = re.findall(r'^mockforge_outbound_calls_total\{host="([^"]+)".*\} (\S+)$', text, re.M)
    hosts = {host: float(value) for host, value in calls}
    assert len(hosts) == MAX_OUTBOUND_HOSTS + 1 and hosts["other"] == 5.0
    assert hosts["h0.internal:443"] == 2.0
    assert 'mockforge_outbound_injections_total{detail="502",host="h1.internal:443"' in text


@pytest.mark.chaos_outbound(
    {
        "rules": [
            {
                "match": {"header": {"name": "X-Mockforge-Test-Id", "equals": "nope"}},
                "fault_injection": {"http_errors": [500], "http_error_probability": 1.0},
            }
        ],
        "fault_injection": {"http_errors": [418], "http_error_probability": 1.0},
    },
    hosts=["payments.internal:*"],
)
def test_under_the_marker_a_call_carries_the_tests_node_id(sent: _Sent) -> None:
    caller = outbound.CALLER.get()
    assert caller is not None
    assert caller["HTTP_X_MOCKFORGE_TEST_ID"].endswith(
        "test_under_the_marker_a_call_carries_the_tests_node_id"
    )
    assert _outcome(_send) == "418"  # the rule for another test id left it alone


def test_a_rate_limit_per_host_answers_429_with_its_headers_unsent(sent: _Sent) -> None:
    limit = {"rate_limit": {"requests_per_second": 0.01, "burst_size": 2}}
    with outbound.chaos(limit, hosts=["*.internal:*"]) as source:
        got = [_send() for _ in range(3)]
        other = [_outcome(lambda: _send("auth.internal")) for _ in range(2)]
    assert [r.status for r in got] == [200, 200, 429] and other == ["200", "200"]
    assert len(sent.calls) == 4  # the refused call never reached the host
    refused = got[2]
    assert refused.headers["Retry-After"] == "100"  # a token back in 1 / 0.01 s
    assert refused.headers["RateLimit-Limit"] == "2"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["X-Mockforge-Chaos"] == "rate_limit=per_host"
    assert json.loads(refused.data)["level"] == "per_host"
    assert source.engine.store.counters()["outbound_rate_limited"] == 1
    buckets = set(source.engine.store._tats)  # type: ignore[attr-defined]
    assert buckets == {
        "outbound:endpoint:payments.internal:443",
        "outbound:endpoint:auth.internal:443",
    }


def test_outbound_buckets_are_named_apart_from_inbounds() -> None:
    """The same store, the same limit, the same key: outbound's bucket is its own."""
    from mockforge_wsgi.config import RateLimitConfig
    from mockforge_wsgi.rate_limit import RateLimiter
    from mockforge_wsgi.state import MemoryStore

    store = MemoryStore()
    limits = RateLimitConfig(
        enabled=True, requests_per_second=0.01, burst_size=1, per_endpoint=True
    )
    inbound, calls = RateLimiter(store), RateLimiter(store, prefix="outbound:")
    assert calls.check(limits, "", "x:443", 0.0).allowed  # type: ignore[union-attr]
    assert not calls.check(limits, "", "x:443", 0.0).allowed  # type: ignore[union-attr]
    assert inbound.check(limits, "", "x:443", 0.0).allowed  # type: ignore[union-attr]
    assert sorted(store._tats) == [
        "endpoint:x:443",
        "global",
        "outbound:endpoint:x:443",
        "outbound:global",
    ]


def _retrying_app(method: str, retry: urllib3.Retry) -> Callable[..., list[bytes]]:
    """An app that calls payments.internal with urllib3's own retries while serving."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        pool = HTTPConnectionPool("payments.internal", 443)
        got = _outcome(lambda: pool.urlopen(method, "/pay", retries=retry.new())).encode()
        start_response("200 OK", [("Content-Length", str(len(got)))])
        return [got]

    return app


def test_verdicts_judge_the_apps_own_retries_towards_its_dependency(
    sent: _Sent, tmp_path: Path
) -> None:
    """Retry-After honoured or not, and a POST retried after the host had taken it, as
    the verdicts over the recorder's outbound rows say (and the report)."""
    from mockforge_wsgi.recorder import Recorder
    from mockforge_wsgi.verdicts import verdicts

    once_503 = {"fault_injection": {"script": [503, "ok"], "retry_after_s": 1}}
    after_host = {"fault_injection": {"after_app_probability": 1.0, "after_app_fault": "reset"}}
    apps = {
        "honours": (
            _retrying_app("GET", urllib3.Retry(total=2, status_forcelist=[503])),
            once_503,
        ),
        "ignores": (
            _retrying_app(
                "GET",
                urllib3.Retry(total=2, status_forcelist=[503], respect_retry_after_header=False),
            ),
            once_503,
        ),
        "unsafe": (
            _retrying_app("POST", urllib3.Retry(total=1, allowed_methods=None)),
            after_host,
        ),
    }
    found = {}
    for name, (app, faults) in apps.items():
        recorder = Recorder(tmp_path / f"{name}.db")
        client = _serving(app, outbound_section={"enabled": True, **faults}, recorder=recorder)
        client.get("/", headers={"X-Mockforge-Test-Id": name}, buffered=True)
        rows = recorder.attempts({"direction": "outbound"}, settle=False)
        found[name] = verdicts(rows)["summary"]
        assert verdicts(recorder.attempts({}, settle=False))["summary"]["calls"] == 1
    assert found["honours"]["calls"] == 1 and found["honours"]["retried_calls"] == 1
    assert found["honours"]["retry_after_honoured_ratio"] == 1.0
    assert found["ignores"]["retry_after_honoured_ratio"] == 0.0
    assert found["unsafe"]["unsafe_retries"] == 1
    assert found["honours"]["unsafe_retries"] == 0


def test_the_verdicts_api_reads_the_outbound_rows_when_asked(sent: _Sent, tmp_path: Path) -> None:
    from mockforge_wsgi.recorder import Recorder

    recorder = Recorder(tmp_path / "calls.db")
    faults = {"fault_injection": {"after_app_probability": 1.0, "after_app_fault": "reset"}}
    app = _retrying_app("POST", urllib3.Retry(total=1, allowed_methods=None))
    client = _serving(app, outbound_section={"enabled": True, **faults}, recorder=recorder)
    client.post("/checkout", buffered=True)
    towards = client.get("/api/chaos/verdicts?direction=outbound").get_json()
    [call] = towards["calls"]
    assert (call["host"], call["method"], call["attempts"]) == ("payments.internal:443", "POST", 2)
    assert towards["summary"]["unsafe_retries"] == 1
    served = client.get("/api/chaos/verdicts").get_json()
    assert served["summary"]["unsafe_retries"] == 0 and served["calls"][0]["path"] == "/checkout"
    bad = client.get("/api/chaos/verdicts?direction=sideways")
    assert bad.status_code == 400 and "direction: 'sideways' is not one of" in bad.text
    report = client.get("/api/chaos/report").get_data(as_text=True)
    assert "<td>unsafe retries</td><td>1</td>" in report


# -- the exception table: each library, each fault, as the real event raises it --------

LIBRARIES: dict[str, Callable[[str], Any]] = {}


def _library(name: str) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    def register(send: Callable[[str], Any]) -> Callable[[str], Any]:
        LIBRARIES[name] = send
        return send

    return register


READ_TIMEOUT_S = 0.2


@_library("urllib3")
def _urllib3(url: str) -> str:
    with urllib3.PoolManager(retries=False) as pool:
        timeout = urllib3.Timeout(connect=2.0, read=READ_TIMEOUT_S)
        response = pool.request("GET", url, timeout=timeout)
        return f"{response.status} Retry-After: {response.headers.get('Retry-After')}"


@_library("requests")
def _requests(url: str) -> str:
    with requests.Session() as session:
        response = session.get(url, timeout=(2.0, READ_TIMEOUT_S))
        return f"{response.status_code} Retry-After: {response.headers.get('Retry-After')}"


@_library("httpx")
def _httpx(url: str) -> str:
    with httpx.Client(timeout=httpx.Timeout(2.0, read=READ_TIMEOUT_S)) as client:
        response = client.get(url)
        return f"{response.status_code} Retry-After: {response.headers.get('Retry-After')}"


FAULTS = {
    "refused": {"refused_probability": 1.0},
    "reset": {"fault_injection": {"connection_error_probability": 1.0}},
    "read timeout": {"fault_injection": {"timeout_probability": 1.0}},
    "cut body": {"fault_injection": {"partial_response_probability": 1.0}},
    "empty reply": {
        "fault_injection": {"corruption_probability": 1.0, "corruption": "empty_reply"}
    },
    "injected status": {
        "fault_injection": {
            "http_errors": [503],
            "http_error_probability": 1.0,
            "retry_after_s": 1,
        }
    },
}
REAL_PATHS = {
    "reset": "/reset",
    "read timeout": "/slow",
    "cut body": "/cut",
    "empty reply": "/empty",
    "injected status": "/503",
}


def _raised(send: Callable[[], str]) -> str:
    try:
        return send()
    except Exception as error:
        kind = type(error)
        module = "httpx" if kind.__module__.startswith("httpx") else kind.__module__
        return f"{module}.{kind.__qualname__}"


def _documented_table() -> dict[tuple[str, str], str]:
    """docs/outbound.md's table: (fault, library) -> what the caller gets."""
    text = (ROOT / "docs" / "outbound.md").read_text(encoding="utf-8")
    table = text.split("<!-- the exception table -->", 1)[1].strip().splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    found = {}
    for line in table[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        for library, cell in zip(header[2:], cells[2:], strict=True):
            found[(cells[0], library)] = cell
    return found


def test_the_documented_table_covers_every_library_and_fault() -> None:
    assert set(_documented_table()) == {(f, lib) for f in FAULTS for lib in LIBRARIES}


@pytest.fixture(scope="module")
def real_upstream() -> Iterator[tuple[str, int]]:
    with upstream() as address:
        yield address


@pytest.mark.server
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("library", list(LIBRARIES))
def test_each_fault_raises_what_the_real_event_raises(
    real_upstream: tuple[str, int], library: str, fault: str
) -> None:
    host, port = real_upstream
    send = LIBRARIES[library]
    if fault == "refused":
        real_url = f"http://127.0.0.1:{closed_port()}/"
    else:
        real_url = f"http://{host}:{port}{REAL_PATHS[fault]}"
    real = _raised(lambda: send(real_url))
    with outbound.chaos(FAULTS[fault], hosts=[f"{host}:{port}"]):
        injected = _raised(lambda: send(f"http://{host}:{port}/ok"))
    assert injected == real == _documented_table()[(fault, library)]
    assert _raised(lambda: send(f"http://{host}:{port}/ok")) == "200 Retry-After: None"


# -- served: the checkout example under mockforge serve --app, two workers, the section
# set through the management API -------------------------------------------------------


@pytest.mark.server
def test_serve_takes_outbound_faults_set_through_the_management_api(
    tmp_path: Path, real_upstream: tuple[str, int]
) -> None:
    """``cd examples/checkout && mockforge serve --app checkout:app``: its calls to its
    payment provider (here the raw upstream) take the faults PUT to the API, on each of
    the two workers (one state for both)."""
    from servers import mockforge_serve, one_request_per_sync_worker, session

    host, port = real_upstream
    (tmp_path / "chaos.yaml").write_text(
        f'chaos:\n  enabled: true\n  outbound: {{enabled: true, hosts: ["{host}:{port}"]}}\n'
    )
    args = ("--workers", "2", "--worker-class", "sync", "--config", "chaos.yaml")
    app = ("--app", "checkout:app", "--chdir", str(ROOT / "examples" / "checkout"))
    env = {"PAYMENTS_URL": f"http://{host}:{port}"}
    with mockforge_serve(tmp_path, *args, "--access-log", "off", *app, env=env) as server:

        def each_worker() -> set[str]:
            """What the checkout answered, on each of the two workers (for sure)."""
            got = one_request_per_sync_worker(server.url, 2, "/checkout")
            return {f"{status} {json.loads(body).get('tried')}" for status, _, body in got}

        assert each_worker() == {"200 None"}
        faults = {"fault_injection": {"http_errors": [500], "http_error_probability": 1.0}}
        with session() as http:
            put = http.put(f"{server.url}/api/chaos/config/outbound", json=faults, timeout=10)
        assert put.status_code == 200, put.text
        assert put.json()["fault_injection"]["http_error_probability"] == 1.0
        assert each_worker() == {"502 ['primary: 500']"}, server.log()[-2000:]
        with session() as http:
            refused = {"refused_probability": 1.0}
            assert http.put(f"{server.url}/api/chaos/config/outbound", json=refused).ok
        assert each_worker() == {"502 ['primary: ConnectionError']"}
        with session() as http:
            assert http.post(f"{server.url}/api/chaos/disable", timeout=10).ok
            counters = http.get(f"{server.url}/api/chaos/stats", timeout=10).json()["counters"]
        assert each_worker() == {"200 None"}
        # Both workers' calls counted in the one store, each attempt (none before the
        # faults: the section covered no call): a 500 is not retried; a refusal is, twice
        # (the example's Retry(total=2)), on each worker.
        counted = {k: v for k, v in counters.items() if k.startswith("outbound_")}
        assert counted == {"outbound_calls": 8, "outbound_http_error": 2, "outbound_refused": 6}
