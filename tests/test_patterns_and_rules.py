"""Count-based fault patterns and conditional chaos rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi import load_config
from mockforge_wsgi.config import ConfigError, config_from_dict
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.patterns import FaultPattern, parse_pattern
from mockforge_wsgi.scenarios import load_scenarios


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def statuses(
    middleware: ChaosMiddleware, count: int, path: str = "/x", **kwargs: Any
) -> list[int]:
    client = Client(middleware)
    return [client.get(path, **kwargs).status_code for _ in range(count)]


def with_faults(**faults: Any) -> ChaosMiddleware:
    config = load_config(
        environ={}, overrides={"enabled": True, "fault_injection": {"enabled": True, **faults}}
    )
    return ChaosMiddleware(hello, config=config)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param(
            {"fail_first": 3, "status": 503}, [503, 503, 503, 200, 200, 200], id="first-n"
        ),
        pytest.param("every:3:500", [200, 200, 500, 200, 200, 500], id="every-nth"),
        pytest.param({"sequence": [503, 502, 200]}, [503, 502, 200, 200, 200, 200], id="sequence"),
        pytest.param(
            {"sequence": [503, 200], "repeat": True}, [503, 200, 503, 200, 503, 200], id="repeat"
        ),
    ],
)
def test_patterns_through_the_middleware(pattern: Any, expected: list[int]) -> None:
    assert statuses(with_faults(pattern=pattern), 6) == expected


def test_the_count_restarts_on_every_management_change() -> None:
    middleware = with_faults(pattern={"fail_first": 2})
    assert statuses(middleware, 3) == [503, 503, 200]
    Client(middleware).post("/api/chaos/enable")
    assert statuses(middleware, 3) == [503, 503, 200]


def test_patterns_from_the_environment() -> None:
    config = load_config(
        environ={
            "MOCKFORGE_CHAOS_FAULT_INJECTION_PATTERN": "sequence:500,200",
            "MOCKFORGE_CHAOS_RULES": '[{"match": {"path": "/slow"}, "latency": {}}]',
        }
    )
    assert config.fault_injection.pattern == FaultPattern("sequence", statuses=(500, 200))
    assert config.rules[0].match.path == "/slow"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"every": 0}, "every 0 is not >= 1", id="zero"),
        pytest.param(
            {"fail_first": 2, "status": 200}, "status 200 is not in [400, 599]", id="status"
        ),
        pytest.param({"every": 2, "fail_first": 1}, "exactly one of", id="two-kinds"),
        pytest.param({"sequence": []}, "non-empty list", id="empty"),
    ],
)
def test_bad_patterns(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_pattern(raw)


def rules_middleware(rules: list[dict[str, Any]], **global_faults: Any) -> ChaosMiddleware:
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "fault_injection": {"enabled": bool(global_faults), **global_faults},
            "rules": rules,
        },
    )
    return ChaosMiddleware(hello, config=config)


FAIL = {"fault_injection": {"enabled": True, "http_errors": [503], "http_error_probability": 1.0}}


@pytest.mark.parametrize(
    ("match", "request_kwargs", "matched"),
    [
        pytest.param({"path": "/api/*"}, {"path": "/api/pay"}, True, id="glob"),
        pytest.param({"path": "/api/*"}, {"path": "/other"}, False, id="glob-miss"),
        pytest.param({"methods": ["post"]}, {"method": "POST"}, True, id="method"),
        pytest.param({"methods": ["POST"]}, {"method": "GET"}, False, id="method-miss"),
        pytest.param(
            {"header": "X-Chaos"}, {"headers": {"X-Chaos": "1"}}, True, id="header-present"
        ),
        pytest.param(
            {"header": {"name": "X-Chaos", "equals": "on"}},
            {"headers": {"X-Chaos": "off"}},
            False,
            id="header-not-equal",
        ),
        pytest.param({"header": "X-Chaos"}, {}, False, id="header-missing"),
        pytest.param(
            {"client_cidr": "10.0.0.0/8"},
            {"environ_base": {"REMOTE_ADDR": "10.1.2.3"}},
            True,
            id="cidr",
        ),
        pytest.param(
            {"client_cidr": ["10.0.0.0/8"]},
            {"environ_base": {"REMOTE_ADDR": "192.168.1.1"}},
            False,
            id="cidr-miss",
        ),
        pytest.param(
            {"body_size": [10, 100]}, {"method": "POST", "data": b"x" * 50}, True, id="size"
        ),
        pytest.param(
            {"body_size": [10, 100]}, {"method": "POST", "data": b"x" * 500}, False, id="size-miss"
        ),
        pytest.param({"path_regex": "/orders/[0-9]+"}, {"path": "/orders/42"}, True, id="regex"),
        pytest.param(
            {"path_regex": "/orders/[0-9]+"}, {"path": "/orders/42/x"}, False, id="regex-whole"
        ),
        pytest.param(
            {"query": {"debug": "*", "v": "2"}},
            {"query_string": "v=2&debug="},
            True,
            id="query",
        ),
        pytest.param({"query": {"v": "2"}}, {"query_string": "v=3"}, False, id="query-miss"),
        pytest.param(
            {"user_agent": "okhttp/*"}, {"headers": {"User-Agent": "okhttp/4.9"}}, True, id="ua"
        ),
        pytest.param(
            {"user_agent": "okhttp/*"}, {"headers": {"User-Agent": "curl/8"}}, False, id="ua-miss"
        ),
        pytest.param(
            {"json_field": {"path": "order.kind", "equals": "express"}},
            {"method": "POST", "json": {"order": {"kind": "express"}}},
            True,
            id="json",
        ),
        pytest.param(
            {"json_field": {"path": "order.kind", "equals": "express"}},
            {"method": "POST", "json": {"order": {"kind": "standard"}}},
            False,
            id="json-other-value",
        ),
        pytest.param(
            {"json_field": "order.id"},
            {"method": "POST", "data": b"not json"},
            False,
            id="no-json",
        ),
        pytest.param(
            {"path": "/api/*", "not": {"methods": ["GET"]}},
            {"path": "/api/x", "method": "POST"},
            True,
            id="not",
        ),
        pytest.param(
            {"path": "/api/*", "not": {"methods": ["GET"]}},
            {"path": "/api/x", "method": "GET"},
            False,
            id="not-excluded",
        ),
    ],
)
def test_rule_matching(
    match: dict[str, Any], request_kwargs: dict[str, Any], matched: bool
) -> None:
    middleware = rules_middleware([{"match": match, **FAIL}])
    kwargs = {"path": "/x", "method": "GET", **request_kwargs}
    response = Client(middleware).open(**kwargs)
    assert (response.status_code == 503) is matched


def test_first_matching_rule_wins_and_others_fall_back() -> None:
    middleware = rules_middleware(
        [
            {"match": {"path": "/a/*"}, **FAIL},
            {"match": {"path": "/a/b"}, "fault_injection": {"http_errors": [500]}},
        ],
        http_errors=[502],
        http_error_probability=1.0,
    )
    client = Client(middleware)
    assert client.get("/a/b").status_code == 503  # first rule, though the second matches too
    assert client.get("/elsewhere").status_code == 502  # the global config


def test_rule_sections_merge_over_the_global_ones() -> None:
    middleware = rules_middleware(
        [{"match": {"path": "/b"}, "fault_injection": {"http_errors": [504]}}],
        http_errors=[502],
        http_error_probability=1.0,
    )
    assert Client(middleware).get("/b").status_code == 504  # probability from the global section


def test_rule_problems_name_their_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(
            {"rules": [{"match": {"body_size": [5, 1]}, "latency": {"jitter_percent": 200}}, 7]}
        )
    assert caught.value.problems == [
        "chaos.rules[0].match.body_size: [5, 1] is not [min, max] bytes with min <= max",
        "chaos.rules[0].latency.jitter_percent: 200 is not in [0, 100]",
        "chaos.rules[1]: 7 needs a match and config sections",
    ]


def test_custom_scenarios_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text(
        "chaos:\n"
        "  enabled: true\n"
        "  scenarios:\n"
        "    flaky_payments:\n"
        "      description: payments fail half the time\n"
        "      fault_injection: {enabled: true, http_error_probability: 0.5}\n"
    )
    assert load_config(path, environ={}).enabled is True
    (scenario,) = load_scenarios(path)
    middleware = ChaosMiddleware(hello, config=load_config(path, environ={}), scenarios=[scenario])
    client = Client(middleware)
    assert client.post("/api/chaos/scenarios/flaky_payments").status_code == 200
    assert middleware.config.fault_injection.http_error_probability == 0.5


def test_yaml_scenarios_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text(
        "chaos:\n  scenarios:\n    slow_backend: {latency: {enabled: true}}\n"
        "    odd: {latency: {probability: 9}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_scenarios(path)
    assert caught.value.problems == [
        "chaos.scenarios.slow_backend: 'slow_backend' is a built-in scenario; set override: true "
        "to replace it",
        "chaos.scenarios.odd.latency.probability: 9 is not in [0, 1]",
    ]


@pytest.mark.parametrize(
    ("raw", "at", "expected"),
    [
        ({"fail_for_s": 10, "status": 503}, [0, 9.99, 10, 500], [503, 503, None, None]),
        ("fail_for_s:0.5:500", [0.49, 0.5], [500, None]),
        (
            {"burst_s": 2, "every_s": 10},
            [0, 1.99, 2, 9.9, 10, 11.5, 12.5],
            [503, 503, None, None, 503, 503, None],
        ),
        ("burst_s:1/4:502", [0.5, 1.5, 4.2, 5.1], [502, None, 502, None]),
    ],
)  # fmt: skip
def test_time_based_patterns(raw: Any, at: list[float], expected: list[int | None]) -> None:
    pattern = parse_pattern(raw)
    assert pattern.timed
    assert [pattern.status_at(seconds) for seconds in at] == expected
    assert parse_pattern(pattern.describe()) == pattern  # read back as written


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"fail_for_s": 0}, "fail_for_s 0 is not a number of seconds in (0, 2592000]"),
        ({"fail_for_s": "nan"}, "fail_for_s 'nan' is not a number of seconds"),
        ({"burst_s": 5, "every_s": 2}, "burst_s 5 is longer than every_s 2"),
        ({"burst_s": 1}, "every_s None is not a number of seconds"),
        ({"fail_for_s": 1, "every_s": 2}, "needs exactly one of"),
    ],
)
def test_bad_time_patterns(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_pattern(raw)
    assert message in str(error.value)


def test_a_service_down_for_a_while_recovers_and_every_change_restarts_the_clock() -> None:
    from mockforge_wsgi.config import FaultInjectionConfig
    from mockforge_wsgi.engine import ScenarioEngine

    now = [1_000.0]
    engine = ScenarioEngine(config_from_dict({"enabled": True}), clock=lambda: now[0])
    middleware = ChaosMiddleware(hello, engine=engine)
    down = FaultInjectionConfig(enabled=True, pattern=parse_pattern("fail_for_s:10:503"))
    engine.update_config(fault_injection=down)
    assert statuses(middleware, 2) == [503, 503]
    now[0] += 9.9
    assert statuses(middleware, 1) == [503]
    now[0] += 0.2
    assert statuses(middleware, 2) == [200, 200]  # recovered
    engine.set_enabled(True)  # a change: down again, for another 10 s
    assert statuses(middleware, 1) == [503]


def test_a_json_field_match_hands_the_app_the_same_body() -> None:
    seen: list[bytes] = []

    def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        return hello(environ, start_response)

    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "rules": [
                {"match": {"json_field": {"path": "kind", "equals": "slow"}}, **SLOW},
            ],
        },
    )
    response = Client(ChaosMiddleware(echo, config=config)).post("/x", json={"kind": "slow"})
    assert response.headers["X-Mockforge-Chaos"] == "latency=1ms"
    assert seen == [b'{"kind": "slow"}']


SLOW = {"latency": {"enabled": True, "fixed_delay_ms": 1}}


@pytest.mark.parametrize(
    ("match", "problem"),
    [
        ({"path_regex": "(unclosed"}, "rules[0].match.path_regex: '(unclosed' is not a regex"),
        ({"query": {"a": True}}, "rules[0].match.query: "),
        ({"user_agent": ""}, "rules[0].match.user_agent: '' is not a non-empty glob"),
        ({"json_field": {"path": "a..b"}}, "rules[0].match.json_field: "),
        ({"not": {"nope": 1}}, "rules[0].match.not.nope: unknown key"),
    ],
)
def test_bad_new_matchers(match: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"rules": [{"match": match, **SLOW}]})
    assert problem in str(error.value)


def test_new_matchers_read_back_as_written() -> None:
    match = {
        "path_regex": "/orders/[0-9]+",
        "query": {"debug": "*"},
        "user_agent": "okhttp/*",
        "json_field": {"path": "order.kind", "equals": "express"},
        "not": {"methods": ["GET"]},
    }
    config = config_from_dict({"rules": [{"match": match, **SLOW}]})
    assert config.to_dict()["rules"][0]["match"] == match
    assert config_from_dict(config.to_dict()) == config
