"""The decision core with no WSGI: a Call in, a Plan out (decide.py, request.py)."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from mockforge_wsgi import load_config
from mockforge_wsgi.decide import Decider, InvalidHeaders
from mockforge_wsgi.engine import ScenarioEngine
from mockforge_wsgi.plan import NO_CHAOS
from mockforge_wsgi.request import Call, WSGIRequest
from mockforge_wsgi.state import MemoryStore, StoreError
from mockforge_wsgi.state.base import CONNECTION_SLOTS


def decider(rng: random.Random | None = None, store: Any = None, **chaos: Any) -> Decider:
    config = load_config(environ={}, overrides={"enabled": True, **chaos})
    engine = ScenarioEngine(config, store=store if store is not None else MemoryStore())
    return Decider(engine, config=config, rng=rng)


def decide(core: Decider, call: Call) -> Any:
    return core.decide(core.engine.config_now(), call, 0.0)


def test_the_first_matching_rule_decides_and_its_config_comes_back() -> None:
    rules = [
        {"match": {"path": "/slow/*", "methods": ["POST"]},
         "latency": {"enabled": True, "fixed_delay_ms": 300, "probability": 1.0}},
        {"match": {"header": "X-Canary"},
         "fault_injection": {"enabled": True, "http_errors": [502],
                             "http_error_probability": 1.0}},
    ]  # fmt: skip
    core = decider(rules=rules)
    plan, config = decide(core, Call("POST", "/slow/a"))
    assert (plan.delay_ms, plan.fault) == (300, None)
    assert config.latency.enabled
    plan, config = decide(core, Call("GET", "/slow/a", headers={"x-canary": "1"}))
    assert (plan.delay_ms, plan.fault.status) == (None, 502)  # type: ignore[union-attr]
    plan, config = decide(core, Call("GET", "/slow/a"))
    assert plan is NO_CHAOS
    assert not config.latency.enabled and config is core.engine.config_now()


def test_a_call_and_a_wsgi_request_match_alike() -> None:
    """The same request as plain values and as an environ: the same rule fits."""
    rules = [
        {"match": {"query": {"debug": "*"}, "json_field": {"path": "order.kind",
                   "equals": "express"}, "client_cidr": "10.0.0.0/8", "route": "/orders/<id>"},
         "latency": {"enabled": True, "fixed_delay_ms": 5, "probability": 1.0}},
    ]  # fmt: skip
    core = decider(rules=rules)
    body = json.dumps({"order": {"kind": "express"}}).encode()
    call = Call(
        "POST",
        "/orders/7",
        query="debug=1",
        route="/orders/<id>",
        headers={"Content-Length": str(len(body))},
        client_address="10.1.2.3",
        body=body,
    )
    environ = EnvironBuilder(
        "/orders/7", method="POST", query_string="debug=1", data=body,
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    ).get_environ()  # fmt: skip
    request = WSGIRequest.of(environ, lambda environ: "/orders/<id>")
    assert decide(core, call)[0].delay_ms == 5
    assert decide(core, request)[0].delay_ms == 5
    assert environ["wsgi.input"].read() == body  # the app reads the body we read
    assert decide(core, Call("POST", "/orders/7", query="debug=1", body=body))[0] is NO_CHAOS


def test_the_limiter_refuses_with_a_429_plan_and_keys_on_the_client() -> None:
    core = decider(
        rate_limit={"enabled": True, "global_limit": False, "per_ip": True,
                    "requests_per_second": 0.001, "burst_size": 1,
                    "trusted_proxies": ["10.0.0.0/8"]},
    )  # fmt: skip
    first, _ = decide(core, Call(client_address="192.0.2.1"))
    assert first.admitted_only
    refused, _ = decide(core, Call(client_address="192.0.2.1"))
    assert refused.refused and refused.injections() == [("rate_limited", "per_ip")]
    assert dict(refused.response_headers())["X-Mockforge-Chaos"] == "rate_limit=per_ip"
    # Behind a trusted proxy the client is the X-Forwarded-For hop: one bucket each.
    proxied = Call(client_address="10.0.0.1", headers={"X-Forwarded-For": "192.0.2.1"})
    assert decide(core, proxied)[0].refused
    other = Call(client_address="10.0.0.1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert decide(core, other)[0].admitted_only


def test_a_breaker_opens_on_the_answers_it_is_told_and_then_answers_alone() -> None:
    core = decider(circuit_breaker={"enabled": True, "failure_threshold": 2})
    for _ in range(2):
        plan, config = decide(core, Call())
        assert plan.circuit is not None and not plan.circuit_open
        core.answered(plan.circuit, config.circuit_breaker, "500 INTERNAL SERVER ERROR")
    plan, _ = decide(core, Call())
    assert plan.circuit_open
    assert plan.injections() == [("circuit_open", "global")]


def test_a_slot_is_held_until_its_releaser_runs() -> None:
    core = decider(traffic_shaping={"enabled": True, "max_connections": 1, "queue_timeout_ms": 0})
    held, _ = decide(core, Call())
    assert held.slot is True
    full, _ = decide(core, Call())
    assert full.slot is False and core.releaser(full) is None
    release = core.releaser(held)
    assert release is not None
    release()
    assert core.store.slots_in_use(CONNECTION_SLOTS) == 0
    assert decide(core, Call())[0].slot is True


class BrokenRandom(random.Random):
    def random(self) -> float:
        raise RuntimeError("a bug of ours")


def test_an_internal_error_fails_open_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    core = decider(
        rng=BrokenRandom(), latency={"enabled": True, "fixed_delay_ms": 5, "probability": 0.5}
    )
    with caplog.at_level("ERROR", logger="mockforge_wsgi"):
        plan, _ = decide(core, Call())
    assert plan is NO_CHAOS
    assert core.internal_errors == 1
    assert core.store.counters()["internal_errors"] == 1
    assert "a bug of ours" in caplog.text


class UnreachableStore(MemoryStore):
    def take(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError("store unreachable")

    acquire = take


@pytest.mark.parametrize("on_store_error", ["open", "local", "closed"])
def test_an_unreachable_store_fails_open_local_or_closed_as_configured(
    on_store_error: str,
) -> None:
    core = decider(
        store=UnreachableStore(),
        on_store_error=on_store_error,
        rate_limit={"enabled": True, "requests_per_second": 10},
    )
    if on_store_error == "closed":
        with pytest.raises(StoreError):
            decide(core, Call())
    elif on_store_error == "open":
        assert decide(core, Call())[0] is NO_CHAOS
    else:  # this worker's share (one worker: the whole limit), from its own buckets
        verdict = decide(core, Call())[0].rate_limit
        assert verdict is not None and verdict.allowed and verdict.outcome.limit == 10
    assert core.internal_errors == 0  # not ours: counted as the store's
    assert core.store_errors == 1


def test_chaos_asked_for_by_header_and_a_header_that_cannot_be() -> None:
    core = decider(header_control={"enabled": True})
    plan, _ = decide(core, Call(headers={"X-Mockforge-Delay-Ms": "300"}))
    assert plan.delay_ms == 300
    bad = Call(headers={"x-mockforge-delay-ms": "soon", "X-Mockforge-Fault": "melt"})
    with pytest.raises(InvalidHeaders) as raised:
        decide(core, bad)
    assert raised.value.problems[0] == ("X-Mockforge-Delay-Ms: 'soon' is not a number in [0, inf]")
    assert raised.value.problems[1].startswith("X-Mockforge-Fault: ")
    assert core.internal_errors == 0


def test_decide_now_reads_the_engines_config() -> None:
    core = decider(latency={"enabled": True, "fixed_delay_ms": 7, "probability": 1.0})
    assert core.decide_now(Call())[0].delay_ms == 7
    core.engine.set_enabled(False)
    assert core.decide_now(Call())[0] is NO_CHAOS


def test_a_wsgi_request_reads_the_environ_only_when_asked() -> None:
    environ = EnvironBuilder(
        "/a", method="head", query_string="x=1", headers={"X-Mockforge-Test-Id": "t1"},
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    ).get_environ()  # fmt: skip
    request = WSGIRequest.of(environ)
    assert (request.method, request.path, request.query, request.route) == (
        "HEAD", "/a", "x=1", "/a"
    )  # fmt: skip
    assert (request.client_address, request.test_id) == ("192.0.2.9", "t1")
    assert request.header("content-length") is None and request.json_body() is None
    environ["wsgi.input"] = io.BytesIO(b"{}")
    environ["CONTENT_LENGTH"] = "2"
    assert request.json_body() is None  # read once per request: the first answer stays
    call = Call("head", "", headers={"X-Mockforge-Test-Id": "t2"}, body=b"[1]")
    assert (call.method, call.path, call.test_id, call.json_body()) == ("HEAD", "/", "t2", [1])


def test_decide_lazily_builds_the_request_only_when_the_decision_reads_it() -> None:
    built: list[Any] = []

    def request_of(source: Any) -> Call:
        built.append(source)
        return Call("HEAD", "/x")

    limited = decider(rate_limit={"enabled": True, "requests_per_second": 1000})
    config = limited.engine.config_now()
    assert limited.decide_lazily(config, "environ", request_of, 0.0)[0].admitted_only
    assert built == []  # a global limit reads nothing of the request
    partial = decider(fault_injection={"enabled": True, "partial_response_probability": 1.0})
    config = partial.engine.config_now()
    # Only a partial response depends on the method (a HEAD answer has no body to cut).
    assert partial.decide_lazily(config, "environ", request_of, 0.0)[0] is NO_CHAOS
    assert built == ["environ"]
    assert decide(partial, Call("GET"))[0].fault.kind == "partial_response"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "limits",
    [
        {"requests_per_second": 1, "burst_size": 2},
        {"global_limit": False, "per_ip": True, "requests_per_second": 1, "burst_size": 1},
        {"per_endpoint": True, "per_endpoint_burst_size": 1, "burst_size": 3},
        {"global_limit": False},  # enabled, no level: nothing to check
    ],
)
def test_a_config_with_only_a_limit_decides_as_the_general_path(limits: dict[str, Any]) -> None:
    """The shortcut for a limit and nothing else gives what the whole decide step gives."""
    short, general = (decider(rate_limit={"enabled": True, **limits}) for _ in range(2))
    config = general.engine.config_now()
    general._limits_only = (config, False)  # forced through the whole decide step
    calls = [Call("GET", f"/e{i % 2}", client_address=f"10.0.0.{i % 3}") for i in range(8)]
    for call in calls:
        fast_plan, fast_config = decide(short, call)
        plan, used = decide(general, call)
        assert fast_plan == plan
        assert (fast_plan is NO_CHAOS) == (plan is NO_CHAOS)
        assert fast_config is short.engine.config_now() and used is config
    assert short._limits_only[1]  # the shortcut was taken
