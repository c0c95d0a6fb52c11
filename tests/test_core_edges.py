"""Edges of the pure core that mutation testing found unguarded (docs/RELIABILITY.md,
"Mutation testing"): each test fails on the mutant named in its docstring."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from mockforge_wsgi.config import ChaosConfig, FaultInjectionConfig, config_from_dict
from mockforge_wsgi.config import longest_delay_s as longest
from mockforge_wsgi.fault import Fault, decide_fault
from mockforge_wsgi.outcome import Injection
from mockforge_wsgi.patterns import parse_pattern
from mockforge_wsgi.plan import Plan, decide_plan
from mockforge_wsgi.rate_limit import RateLimitVerdict
from mockforge_wsgi.state.gcra import Bucket, BucketOutcome, take
from mockforge_wsgi.traffic_shaping import Shaping


def chaos(**sections: Any) -> ChaosConfig:
    config: ChaosConfig = config_from_dict({"enabled": True, **sections})
    return config


@pytest.mark.parametrize(
    ("sections", "seconds"),
    [
        ({"latency": {"enabled": True, "fixed_delay_ms": 100, "jitter_percent": 10}}, 0.11),
        (
            {"latency": {"enabled": True, "fixed_delay_ms": 100,
                         "random_delay_range_ms": "50-400", "distribution": "uniform"}},
            0.4,
        ),
        (
            {"latency": {"enabled": True, "fixed_delay_ms": 100, "distribution": "normal",
                         "stddev_ms": 10}},
            0.16,
        ),
        (
            {"latency": {"enabled": True, "distribution": "lognormal", "median_ms": 100,
                         "sigma": 0.5}},
            0.1 * math.exp(3),
        ),
        (  # the one-in-a-billion quantiles, as lognormal's 6 sigma
            {"latency": {"enabled": True, "distribution": "pareto", "scale_ms": 10,
                         "shape": 3}},
            0.01 * 1e3,
        ),
        (
            {"latency": {"enabled": True, "distribution": "exponential", "scale_ms": 100}},
            0.1 * math.log(1e9),
        ),
        ({"latency": {"enabled": True, "fixed_delay_ms": 1000, "cap_ms": 150}}, 0.15),
        ({"latency": {"enabled": False, "fixed_delay_ms": 1000}}, 0.0),  # latency off
        ({"header_control": {"enabled": True, "max_delay_ms": 5000}}, 5.0),
        (
            {"latency": {"enabled": True, "fixed_delay_ms": 100},
             "traffic_shaping": {"enabled": True, "max_connections": 2, "queue_timeout_ms": 300},
             "fault_injection": {"enabled": True, "timeout_probability": 0.1,
                                 "timeout_ms": 700}},
            1.1,
        ),
        ({"traffic_shaping": {"enabled": True, "queue_timeout_ms": 300}}, 0.0),  # no limit
        ({"fault_injection": {"enabled": True, "timeout_ms": 700}}, 0.0),  # never a timeout
    ],
)  # fmt: skip
def test_the_longest_delay_of_a_config(sections: dict[str, Any], seconds: float) -> None:
    """config.longest_delay_s (the worker timeout `mockforge serve` sets): 37 survivors."""
    assert longest([chaos(**sections)]) == pytest.approx(seconds)


def test_the_longest_delay_of_several_configs_is_the_largest() -> None:
    configs = [chaos(latency={"enabled": True, "fixed_delay_ms": ms}) for ms in (5, 900, 40)]
    assert longest(configs) == pytest.approx(0.9)
    assert longest([]) == 0.0


def test_a_fault_that_is_off_draws_nothing() -> None:
    """fault._hit `probability >= 0.0`: an off fault would consume a draw, so turning one
    fault on would change every other's decisions under a seed."""
    rng = random.Random(3)
    before = rng.getstate()
    assert decide_fault(FaultInjectionConfig(enabled=True), rng) is None
    assert rng.getstate() == before
    certain = FaultInjectionConfig(enabled=True, timeout_probability=1.0, timeout_ms=5)
    assert decide_fault(certain, rng) == Fault("timeout", status=504, hold_ms=5.0)
    assert rng.getstate() == before  # a certain fault needs no draw either


def test_a_non_repeating_sequence_ends_and_passes_2xx_through() -> None:
    """patterns.status_for `number >= len`, `status > 400`, `or True`."""
    pattern = parse_pattern({"sequence": [503, 200, 400]})
    assert [pattern.status_for(n) for n in range(1, 6)] == [503, None, 400, None, None]
    again = parse_pattern({"sequence": [503, 200], "repeat": True})
    assert [again.status_for(n) for n in range(1, 6)] == [503, None, 503, None, 503]


VERDICT = RateLimitVerdict("global", BucketOutcome(True, 10, 9, 0.1, 0.0))


def test_a_plan_keeps_the_verdict_beside_what_else_it_injects() -> None:
    """plan.decide_plan `rate_limit=None`: a delayed (or dropped) request under a limit
    would lose its RateLimit-* headers."""
    delayed = decide_plan(
        chaos(latency={"enabled": True, "fixed_delay_ms": 5}), random.Random(1), VERDICT
    )
    assert delayed.rate_limit is VERDICT
    dropped = decide_plan(
        chaos(traffic_shaping={"enabled": True, "request_drop_probability": 1}),
        random.Random(1),
        VERDICT,
    )
    assert dropped.rate_limit is VERDICT
    assert dropped.shaping is not None and dropped.shaping.drop


@pytest.mark.parametrize(
    ("plan", "injections"),
    [
        (Plan(shaping=Shaping(max_connections=2), slot=False), [("connection_limited", "")]),
        (Plan(shaping=Shaping(max_connections=2), slot=True), []),
        (Plan(shaping=Shaping(drop=True)), [("request_dropped", "")]),
        (Plan(shaping=Shaping(bandwidth_bps=500)), [("bandwidth_throttled", "500")]),
        (Plan(fault=Fault("timeout", status=504, hold_ms=1)), [("timeout", "")]),
        (Plan(fault=Fault("http_error", status=502)), [("http_error", "502")]),
        (
            Plan(delay_ms=50, shaping=Shaping(connection_timeout_ms=10)),
            [("latency", ""), ("connection_timeout", "")],
        ),
    ],
)
def test_each_injection_and_its_detail(plan: Plan, injections: list[tuple[str, str]]) -> None:
    """plan.Plan.injections: `slot is True`, details "XXXX", `str(None)`."""
    assert plan.injections() == [Injection(*item) for item in injections]


def test_the_tightest_level_is_the_one_with_fewest_tokens_whatever_its_rate() -> None:
    """gcra.take `room / interval`: levels with different rates, the slower one second."""
    fast_small = Bucket("per-ip", 0.01, 5)  # 100/s, burst 5
    slow_large = Bucket("global", 0.1, 10)  # 10/s, burst 10
    index, outcome, granted, _ = take(lambda key: None, [fast_small, slow_large], 0.0, 1)
    assert (index, outcome.remaining, granted) == (0, 4, 1)


def test_a_refused_take_still_stores_the_tokens_it_gave_back() -> None:
    """gcra.take `tats if give_back and False`: unspent tokens of a lease returned in a
    refused take would be lost (the bucket stays emptier than it is)."""
    bucket = Bucket("global", 1.0, 2)
    now = 100.0
    full_until = now + 2.0  # both tokens spent
    _, outcome, granted, tats = take(lambda key: full_until, [bucket], now, 1, give_back=0)
    assert (granted, tats) == (0, None)  # refused, nothing given back: nothing to store
    _, outcome, granted, tats = take(lambda key: full_until + 5.0, [bucket], now, 1, 1)
    assert granted == 0 and not outcome.allowed
    assert tats == [full_until + 4.0]  # one token back, stored though the take was refused


def test_the_annotation_of_a_full_server_and_of_a_cut() -> None:
    """plan.Plan.annotation: `slot is True`, the texts."""
    assert Plan(shaping=Shaping(max_connections=2), slot=False).annotation() == (
        "connection_limit=full"
    )
    assert Plan(shaping=Shaping(max_connections=2), slot=True).annotation() == ""
    cut = Plan(delay_ms=50, shaping=Shaping(connection_timeout_ms=10)).annotation()
    assert cut == "connection_timeout=10ms, latency=50ms, cut=connection_timeout"


REFUSED = RateLimitVerdict("per_ip", BucketOutcome(False, 10, 0, 1.0, 0.5))


def test_rate_limit_headers_are_exposed_when_asked_and_always_on_a_refusal() -> None:
    """plan.Plan.response_headers: the default, `and`, `or rate_limit.allowed`."""

    def names(headers: list[tuple[str, str]]) -> set[str]:
        return {name for name, _ in headers}

    delayed = Plan(delay_ms=5, rate_limit=VERDICT)
    assert "RateLimit-Limit" in names(delayed.response_headers())  # exposed by default
    assert "RateLimit-Limit" not in names(delayed.response_headers(False))
    refused = Plan(rate_limit=REFUSED)
    assert {"RateLimit-Limit", "Retry-After"} <= names(refused.response_headers(False))


def test_decide_plan_edges() -> None:
    """plan.decide_plan: nothing to inject is NO_CHAOS itself (the middleware's shortcut
    compares identity); an undrawn delay keeps the verdict; HEAD is asked for."""
    from mockforge_wsgi.plan import NO_CHAOS

    assert decide_plan(chaos(), random.Random(1)) is NO_CHAOS
    never = chaos(latency={"enabled": True, "fixed_delay_ms": 5, "probability": 0})
    assert decide_plan(never, random.Random(1)) is NO_CHAOS
    assert decide_plan(never, random.Random(1), VERDICT).rate_limit is VERDICT
    partial = chaos(fault_injection={"enabled": True, "partial_response_probability": 1})
    assert decide_plan(partial, random.Random(1)).fault is not None  # a GET by default
    assert decide_plan(partial, random.Random(1), head=True) is NO_CHAOS
