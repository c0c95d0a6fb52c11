"""The management API: every route, every 4xx path, auth, and the OpenAPI document."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client, TestResponse

from mockforge_wsgi import load_config
from mockforge_wsgi._sections import URL_SEGMENTS
from mockforge_wsgi.api import ROUTES, create_management_app, openapi_document
from mockforge_wsgi.config import ChaosConfig, ConfigError
from mockforge_wsgi.config_declarations import INBOUND_ONLY_FAULTS
from mockforge_wsgi.engine import ScenarioEngine
from mockforge_wsgi.middleware import ChaosMiddleware

P = "/api/chaos"


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def make(startup: ChaosConfig | None = None, **kwargs: Any) -> tuple[Client, ChaosMiddleware]:
    middleware = ChaosMiddleware(hello, config=startup or ChaosConfig(), **kwargs)
    return Client(middleware), middleware


def call(client: Client, method: str, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
    data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
    if data is not None:  # as every client sends a body (a form type is refused: 415)
        kwargs.setdefault("content_type", "application/json")
    return client.open(P + path, method=method, data=data, **kwargs)


def problems(response: TestResponse) -> list[str]:
    payload = response.get_json()
    assert set(payload) == {"error", "problems"}, payload
    return list(payload["problems"])


def test_status_enable_disable() -> None:
    client, middleware = make()
    status = call(client, "GET", "/status").get_json()
    assert status["enabled"] is False
    assert status["active_scenario"] is None
    assert status["effective_config"]["latency"]["probability"] == 1.0
    assert call(client, "POST", "/enable").get_json() == {"enabled": True}
    assert middleware.config.enabled is True
    assert call(client, "POST", "/disable").get_json() == {"enabled": False}
    assert middleware.config.enabled is False


def test_config_get_put_and_sections() -> None:
    client, middleware = make()
    assert call(client, "GET", "/config").get_json() == ChaosConfig().to_dict()
    latency = {"enabled": True, "fixed_delay_ms": 1000, "jitter_percent": 20.0, "probability": 0.8}
    put = call(client, "PUT", "/config/latency", latency)
    assert put.status_code == 200
    assert put.get_json()["fixed_delay_ms"] == 1000
    # PUT replaces the section: fields not given are back to their defaults.
    call(client, "PUT", "/config/latency", {"cap_ms": 5})
    assert call(client, "GET", "/config/latency").get_json()["fixed_delay_ms"] == 0
    # PATCH merges.
    patched = call(client, "PATCH", "/config/latency", {"fixed_delay_ms": 300})
    assert (patched.get_json()["fixed_delay_ms"], patched.get_json()["cap_ms"]) == (300, 5)
    assert middleware.config.latency.fixed_delay_ms == 300
    for segment, attribute in [
        ("faults", "fault_injection"),
        ("rate-limit", "rate_limit"),
        ("traffic", "traffic_shaping"),
    ]:
        got = call(client, "PATCH", f"/config/{segment}", {"enabled": True}).get_json()
        assert got["enabled"] is True
        assert getattr(middleware.config, attribute).enabled is True
    whole = call(client, "PUT", "/config", {"enabled": True, "seed": 3}).get_json()
    assert (whole["enabled"], whole["seed"], whole["latency"]["fixed_delay_ms"]) == (True, 3, 0)


def test_half_valid_put_changes_nothing() -> None:
    client, middleware = make()
    before = call(client, "GET", "/config").get_json()
    response = call(
        client,
        "PUT",
        "/config",
        {"enabled": True, "latency": {"fixed_delay_ms": 100, "probability": 1.5}, "bogus": 1},
    )
    assert response.status_code == 400
    found = problems(response)
    assert len(found) == 2
    assert found[0].startswith("chaos.bogus: unknown key; allowed: enabled, scenario, seed")
    assert found[1] == "chaos.latency.probability: 1.5 is not in [0, 1]"
    assert call(client, "GET", "/config").get_json() == before
    assert middleware.config.enabled is False


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    [
        pytest.param(
            "PUT", "/config/latency", b"{not json", 400, "body: not valid JSON", id="not-json"
        ),
        pytest.param(
            "PUT", "/config/latency", b"", 400, "body: a JSON body is required", id="empty"
        ),
        pytest.param(
            "PUT", "/config/latency", [1, 2], 400, "body: [1, 2] is not a JSON object", id="list"
        ),
        pytest.param(
            "PATCH",
            "/config/faults",
            {"http_errors": [700]},
            400,
            "chaos.fault_injection.http_errors: 700 not in [400, 599]",
            id="out-of-range",
        ),
        pytest.param(
            "PUT",
            "/config/rate-limit",
            {"burst_size": "ten"},
            400,
            "chaos.rate_limit.burst_size: 'ten' is not an integer",
            id="wrong-type",
        ),
        pytest.param(
            "PATCH",
            "/config/traffic",
            {"bandwith_limit_bps": 5},
            400,
            "chaos.traffic_shaping.bandwith_limit_bps: unknown key; did you mean "
            "'bandwidth_limit_bps'?",
            id="unknown-field",
        ),
        pytest.param(
            "POST",
            "/scenarios/nope",
            None,
            404,
            "scenario: unknown scenario 'nope' (choices: network_degradation, ",
            id="unknown-scenario",
        ),
        pytest.param(
            "POST",
            "/scenarios/slow_backend",
            {"duration_s": -1, "speed": 2},
            400,
            "speed: unknown field; allowed: duration_s, ramp_s",
            id="activation-fields",
        ),
        pytest.param(
            "DELETE",
            "/scenarios/slow_backend",
            None,
            404,
            "scenario: 'slow_backend' is not the active one",
            id="stop-inactive",
        ),
        pytest.param(
            "POST",
            "/scenarios",
            {"name": "slow_backend"},
            400,
            "'slow_backend' is a built-in scenario; set override: true to replace it",
            id="shadowing",
        ),
        pytest.param(
            "POST", "/scenarios", {"latency": {}}, 400, "name: None is not a string", id="no-name"
        ),
        pytest.param(
            "PUT", "/schedule", {"a": 1}, 400, "body: {'a': 1} is not a list", id="schedule-shape"
        ),
        pytest.param(
            "PUT",
            "/schedule",
            [{"start_s": -1, "scenario": "slow_backend"}],
            400,
            "[0].start_s: -1 is not a number >= 0",
            id="schedule-value",
        ),
        pytest.param(
            "PUT",
            "/schedule",
            [{"scenario": "nope"}],
            404,
            "schedule[0].scenario: unknown scenario 'nope' (choices: ",
            id="schedule-unknown",
        ),
    ],
)
def test_bad_input(method: str, path: str, body: Any, status: int, expected: str) -> None:
    client, _ = make()
    before = call(client, "GET", "/status").get_json()
    response = call(client, method, path, body)
    assert response.status_code == status
    assert any(expected in problem for problem in problems(response)), problems(response)
    assert call(client, "GET", "/status").get_json() == before


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PATCH", "/config/fault_injection", "did you mean /api/chaos/config/faults?"),
        ("GET", "/config/rate_limit", "did you mean /api/chaos/config/rate-limit?"),
        ("PUT", "/config/latencyy", "did you mean /api/chaos/config/latency?"),
        ("DELETE", "/config/zzz", "'zzz' (choices"),
    ],
)
def test_an_unknown_config_section_names_the_url_and_the_sections(
    method: str, path: str, expected: str
) -> None:
    """/status names sections by attribute (``fault_injection``), the URLs by segment."""
    client, _ = make()
    response = call(client, method, path, {"http_errors": [700]} if method != "GET" else None)
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown config section"
    [problem] = problems(response)
    assert problem.startswith(f"section: unknown config section '{path[8:]}'")
    assert expected in problem
    assert problem.endswith(f"(choices: {', '.join(URL_SEGMENTS)})")


def test_body_over_64kb_is_413() -> None:
    client, _ = make()
    response = call(client, "PUT", "/config", b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413
    assert problems(response) == ["body: larger than 65536 bytes"]


def test_unknown_route_and_method_are_json() -> None:
    client, _ = make()
    missing = call(client, "GET", "/nope")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/json"
    assert missing.get_json() == {"error": "not found", "problems": []}
    wrong = call(client, "DELETE", "/status")
    assert wrong.status_code == 405
    assert wrong.headers["Content-Type"] == "application/json"
    assert wrong.get_json() == {"error": "method not allowed", "problems": []}
    assert "GET" in wrong.headers["Allow"]


def test_scenarios_routes() -> None:
    client, middleware = make()
    listed = call(client, "GET", "/scenarios").get_json()["scenarios"]
    names = {s["name"] for s in listed}
    assert {"network_degradation", "slow_3g"} <= names
    nd = next(s for s in listed if s["name"] == "network_degradation")
    assert nd["latency"]["fixed_delay_ms"] == 500
    created = call(
        client,
        "POST",
        "/scenarios",
        {
            "name": "flaky",
            "description": "half fail",
            "fault_injection": {"enabled": True, "http_error_probability": 0.5},
        },
    )
    assert created.status_code == 201
    assert created.get_json()["kind"] == "custom"
    started = call(client, "POST", "/scenarios/flaky", {"duration_s": 60, "ramp_s": 5})
    assert started.get_json()["active"]["name"] == "flaky"
    active = call(client, "GET", "/scenarios/active").get_json()["active"]
    assert (active["name"], active["duration_s"], active["ramp_s"]) == ("flaky", 60, 5)
    stopped = call(client, "DELETE", "/scenarios/flaky").get_json()
    assert stopped == {"stopped": "flaky", "resumed": None}
    assert call(client, "GET", "/scenarios/active").get_json() == {"active": None}
    call(client, "POST", "/scenarios/slow_backend")
    stopped = call(client, "DELETE", "/scenarios").get_json()
    assert stopped == {"stopped": "slow_backend", "resumed": None}
    assert call(client, "DELETE", "/scenarios").get_json() == {"stopped": None, "resumed": None}
    assert middleware.config.latency.enabled is False


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_query_all_that_is_not_a_boolean_is_refused_naming_it(method: str) -> None:
    """The OpenAPI document declares ``all`` a boolean on /scenarios (found by schemathesis:
    ``GET ?all=2`` was a 200)."""
    client, _ = make()
    refused = call(client, method, "/scenarios?all=2")
    assert refused.status_code == 400
    assert problems(refused) == ["all: '2' is not a boolean; allowed: true, false, 1, 0"]
    assert call(client, "GET", "/scenarios?all=true").status_code == 200


def test_schedule_and_stats_and_reset() -> None:
    client, middleware = make(
        load_config(
            environ={},
            overrides={"enabled": True, "latency": {"enabled": True, "fixed_delay_ms": 1}},
        )
    )
    got = call(
        client,
        "PUT",
        "/schedule",
        [{"start_s": 3600, "scenario": "slow_backend", "duration_s": 10}],
    )
    assert got.get_json()["schedule"][0]["name"] == "slow_backend"
    assert call(client, "GET", "/schedule").get_json() == got.get_json()
    client.get("/api/test")
    stats = call(client, "GET", "/stats").get_json()
    assert stats["counters"]["latency"] == 1
    assert stats["connections_in_use"] == 0
    call(client, "POST", "/scenarios/slow_backend")
    reset = call(client, "POST", "/reset").get_json()
    assert reset["active_scenario"] is None
    assert reset["schedule"] == []
    assert reset["counters"] == {}
    assert middleware.config.latency.fixed_delay_ms == 1


def test_admin_token_guards_mutations() -> None:
    client, _ = make(admin_token="s3cret")
    assert call(client, "GET", "/status").status_code == 200
    refused = call(client, "POST", "/enable")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = call(client, "POST", "/enable", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = call(client, "POST", "/enable", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_admin_token_can_guard_reads_and_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOCKFORGE_ADMIN_TOKEN", "envtoken")
    client, _ = make(protect_reads=True)
    assert call(client, "GET", "/status").status_code == 401
    assert (
        call(client, "GET", "/status", headers={"Authorization": "Bearer envtoken"}).status_code
        == 200
    )


def test_the_management_app_is_built_at_its_first_call_from_the_settings_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ChaosMiddleware builds its Flask app at the first management call (most never get
    one); what the environment said when the middleware was made is what it serves by,
    and a bad value fails then."""
    monkeypatch.setenv("MOCKFORGE_ADMIN_TOKEN", "envtoken")
    monkeypatch.setenv("MOCKFORGE_MAX_HOLD_S", "5")
    client, middleware = make()
    assert middleware.management is not None
    assert getattr(middleware.management, "_app", "built") is None  # not built yet
    monkeypatch.delenv("MOCKFORGE_ADMIN_TOKEN")
    monkeypatch.delenv("MOCKFORGE_MAX_HOLD_S")
    assert call(client, "POST", "/enable").status_code == 401  # the token it was made with
    held = call(client, "PUT", "/config/latency", {"enabled": True, "fixed_delay_ms": 6000},
                headers={"Authorization": "Bearer envtoken"})  # fmt: skip
    assert held.status_code == 400, held.get_json()  # held past the 5 s it was made with
    monkeypatch.setenv("MOCKFORGE_MAX_HOLD_S", "abc")
    with pytest.raises(ConfigError, match=r"MOCKFORGE_MAX_HOLD_S: .* is not a number of seconds"):
        make()


def test_management_is_never_subject_to_chaos() -> None:
    startup = load_config(
        environ={},
        overrides={
            "enabled": True,
            "rate_limit": {"enabled": True, "requests_per_second": 1, "burst_size": 1},
            "fault_injection": {"enabled": True, "http_error_probability": 1.0},
        },
    )
    client, _ = make(startup)
    assert client.get("/api/test").status_code in (429, 500, 502, 503, 504)
    for _ in range(20):
        assert call(client, "GET", "/status").status_code == 200
    assert call(client, "POST", "/disable").status_code == 200
    assert client.get("/api/test").status_code == 200


def test_api_mounts_at_any_prefix() -> None:
    middleware = ChaosMiddleware(hello, api_prefix="/_chaos")
    client = Client(middleware)
    assert client.post("/_chaos/enable").get_json() == {"enabled": True}
    assert client.get("/api/chaos/status").data == b"hello"  # the app's own path now


def test_openapi_documents_exactly_the_registered_routes() -> None:
    app = create_management_app(ScenarioEngine(ChaosConfig()), prefix=P)
    registered = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("mockforge_chaos.")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    document = Client(app).get(P + "/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == registered
    assert document == openapi_document(P)
    assert len(ROUTES) == 26
    outbound = document["components"]["schemas"]["OutboundConfig"]["properties"]
    assert outbound["latency"] == {"$ref": "#/components/schemas/OutboundLatencyConfig"}
    latency = document["components"]["schemas"]["LatencyConfig"]["properties"]
    assert latency["probability"]["type"] == "number"


def test_a_section_written_while_a_scenario_runs_applies_on_top_until_it_stops() -> None:
    client, _middleware = make()
    call(client, "POST", "/scenarios/service_instability").get_json()
    before = call(client, "GET", "/config/faults").get_json()
    assert before["http_error_probability"] == 0.2  # the scenario's, as in force
    faults = {"enabled": True, "http_errors": [503], "http_error_probability": 1.0}
    assert call(client, "PUT", "/config/faults", faults).get_json()["http_errors"] == [503]
    assert {client.get("/").status_code for _ in range(20)} == {503}  # the last write wins
    status = call(client, "GET", "/status").get_json()
    assert status["active_scenario"]["name"] == "service_instability"
    assert status["overrides"]["fault_injection"]["http_error_probability"] == 1.0
    assert status["effective_config"]["fault_injection"]["http_error_probability"] == 1.0
    patched = call(client, "PATCH", "/config/faults", {"http_errors": [502]}).get_json()
    assert (patched["http_errors"], patched["http_error_probability"]) == ([502], 1.0)
    assert call(client, "DELETE", "/config/faults").get_json() == before  # scenario's own
    assert call(client, "GET", "/status").get_json()["overrides"] == {}
    call(client, "PATCH", "/config/faults", {"http_error_probability": 1.0})
    call(client, "DELETE", "/scenarios")
    assert {client.get("/").status_code for _ in range(20)} == {200}  # runtime config back
    assert call(client, "GET", "/config/faults").get_json()["enabled"] is False
    assert call(client, "DELETE", "/config/faults").status_code == 200  # nothing to drop


def test_without_a_scenario_delete_puts_the_startup_section_back() -> None:
    """A user undoing their PATCH with DELETE gets the section they started with, and
    only that section."""
    client, _middleware = make()
    startup = call(client, "GET", "/config/faults").get_json()
    call(client, "POST", "/enable")
    call(client, "PATCH", "/config/faults", {"http_errors": [503], "http_error_probability": 1.0})
    call(client, "PATCH", "/config/latency", {"fixed_delay_ms": 1})
    assert {client.get("/").status_code for _ in range(5)} == {503}
    assert call(client, "DELETE", "/config/faults").get_json() == startup
    assert {client.get("/").status_code for _ in range(5)} == {200}
    assert call(client, "GET", "/config/latency").get_json()["fixed_delay_ms"] == 1


def _number_settings() -> list[Any]:
    from mockforge_wsgi.config import iter_settings

    found = []
    for info in iter_settings():
        label = info.field.metadata["kind"].label
        if "number" in label or "integer" in label or "range" in label:
            found.append(pytest.param(info.path, id=".".join(info.path)))
    return found


@pytest.mark.parametrize("path", _number_settings())
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(10**400, id="400-digit-integer"),
        pytest.param(1e308, id="1e308"),
        pytest.param(-(10**400), id="negative-400-digits"),
    ],
)
def test_no_number_field_takes_a_value_no_server_can_run(
    path: tuple[str, ...], value: Any
) -> None:
    client, _middleware = make()
    before = call(client, "GET", "/config").get_json()
    body: dict[str, Any] = {}
    target = body
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = [0, value] if path[-1].endswith("range_ms") else value
    response = call(client, "PUT", "/config", body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert any(p.startswith("chaos." + ".".join(path)) for p in problems(response))
    assert all(len(p) < 200 for p in problems(response))  # a hostile value does not flood
    assert call(client, "GET", "/config").get_json() == before  # nothing half-applied


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("PUT", "/config/latency", '{"fixed_delay_ms": 1e20}', id="delay-1e20"),
        pytest.param("PUT", "/config/faults", '{"timeout_ms": 1e20}', id="timeout-1e20"),
        pytest.param("PUT", "/config/latency", '{"fixed_delay_ms": NaN}', id="NaN"),
        pytest.param("PUT", "/config/latency", '{"fixed_delay_ms": Infinity}', id="Infinity"),
        pytest.param("PUT", "/config", "[" * 5000 + "]" * 5000, id="nested-5000"),
        pytest.param(
            "PUT", "/schedule", '[{"scenario": "dialup", "duration_s": NaN}]', id="schedule-NaN"
        ),
        pytest.param(
            "PUT", "/schedule", '[{"scenario": "dialup", "start_s": 1e308}]', id="schedule-1e308"
        ),
        pytest.param(
            "PUT",
            "/schedule",
            '[{"scenario": "dialup", "duration_s": -Infinity}]',
            id="schedule-infinity",
        ),
        pytest.param("POST", "/scenarios/dialup", '{"duration_s": 1e308}', id="duration-1e308"),
        pytest.param("POST", "/scenarios/dialup", '{"ramp_s": 1e300}', id="ramp-1e300"),
    ],
)
def test_hostile_numbers_and_payloads_get_400_and_change_nothing(
    method: str, path: str, body: str
) -> None:
    client, _ = make()
    before = call(client, "GET", "/status").get_json()
    response = call(client, method, path, body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert problems(response)
    assert call(client, "GET", "/status").get_json() == before


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"{not json", "at line 1, column 2", id="not-json"),
        # Python 3.13 words a trailing comma its own way, and places it a column earlier
        # (at the comma, not at the brace): the position is the parser's, the words ours.
        pytest.param(b'{"probability": 1,}', "at line 1, column 1[89]", id="trailing-comma"),
        pytest.param(b'{"probability": "\xff"}', "not UTF-8 at byte 17", id="not-utf8"),
        pytest.param(b'{"probability": NaN}', "NaN is not a JSON number", id="NaN"),
        # 101 levels: every Python parses it, and it is refused all the same; 5,000: where
        # 3.11 stops (RecursionError) and 3.13 parses, the same words.
        pytest.param(b"[" * 101 + b"]" * 101, "nested deeper than 100 levels", id="nested-101"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "nested deeper than 100 levels", id="nested-5000"),
        pytest.param(
            b'{"probability": -' + b"9" * 601 + b"}",
            "an integer of 601 digits; at most 600",
            id="int-601-digits",
        ),
        pytest.param(
            b'{"probability": ' + b"9" * 5000 + b"}",  # beyond Python's own 4,300-digit limit
            "an integer of 5000 digits; at most 600",
            id="int-5000-digits",
        ),
    ],
)
def test_a_body_that_is_not_json_is_refused_in_our_own_words(body: bytes, expected: str) -> None:
    client, _ = make()
    response = call(client, "PUT", "/config/latency", body)
    assert response.status_code == 400
    [problem] = problems(response)
    assert re.fullmatch(rf"body: not valid JSON \({expected}\)", problem), problem


def test_json_as_deep_as_the_limit_is_read() -> None:
    from mockforge_wsgi._kinds import MAX_JSON_DEPTH, MAX_JSON_DIGITS, strict_json

    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert strict_json(deepest) == json.loads(deepest)
    longest = "9" * MAX_JSON_DIGITS
    assert strict_json('{"a": [{"b": -' + longest + "}]}") == {"a": [{"b": -int(longest)}]}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_auth_scheme_is_case_insensitive(scheme: str) -> None:
    client, _ = make(admin_token="s3cret")
    response = call(client, "POST", "/enable", headers={"Authorization": f"{scheme} s3cret"})
    assert response.status_code == 200
    wrong = call(client, "POST", "/enable", headers={"Authorization": f"{scheme} s3cre"})
    assert wrong.status_code == 401
    assert (
        call(client, "POST", "/enable", headers={"Authorization": "Basic s3cret"}).status_code
        == 401
    )


def test_a_big_body_is_refused_where_no_body_is_read() -> None:
    client, middleware = make()
    response = call(client, "POST", "/enable", b"x" * (10 * 1024 * 1024))
    assert response.status_code == 413
    assert problems(response) == ["body: larger than 65536 bytes"]
    assert middleware.config.enabled is False  # nothing changed


def test_405_says_which_methods_are_allowed() -> None:
    client, _ = make()
    response = call(client, "TRACE", "/status")
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}
    assert response.get_json()["error"] == "method not allowed"


def test_a_config_naming_an_unknown_scenario_is_refused() -> None:
    client, middleware = make()
    response = call(client, "PUT", "/config", {"enabled": True, "scenario": "slow_bakend"})
    assert response.status_code == 400
    [problem] = problems(response)
    assert problem.startswith("chaos.scenario: unknown scenario 'slow_bakend'; did you mean")
    assert "'slow_backend'? (choices: network_degradation, " in problem
    assert middleware.config.enabled is False


def test_a_state_too_big_for_the_store_is_413_not_an_outage(tmp_path: Any) -> None:
    from mockforge_wsgi.state import EmbeddedStore

    client, _ = make(store=EmbeddedStore(tmp_path))
    big = "x" * 60_000
    statuses = []
    for n in range(20):  # 20 x 60 KB > the embedded store's 1 MiB
        scenario = {"name": f"big{n}", "fault_injection": {"error_body": big}}
        response = call(client, "POST", "/scenarios", scenario)
        statuses.append(response.status_code)
        if response.status_code != 201:
            break
    assert statuses[-1] == 413, statuses
    assert set(statuses[:-1]) == {201}
    assert "at most 1048576" in problems(response)[0]
    assert call(client, "GET", "/status").status_code == 200  # the store is fine


def _bounded_settings() -> list[Any]:
    from mockforge_wsgi._kinds import Between
    from mockforge_wsgi.config import iter_settings

    return [
        pytest.param(info.path, info.check, id=".".join(info.path))
        for info in iter_settings()
        if isinstance(info.check, Between)
    ]


@pytest.mark.parametrize(("path", "check"), _bounded_settings())
def test_the_openapi_bounds_are_the_apis_bounds(path: tuple[str, ...], check: Any) -> None:
    client, _ = make()
    document = call(client, "GET", "/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    schema = schemas["ChaosConfig"]
    for part in path:  # a plugin's setting is a section deeper (plugins.<name>.<field>)
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        schema = schema["properties"][part]
    # chaos.outbound takes no fault of a server's side of a connection: only 0.
    inbound_only = path[0] == "outbound" and path[-1] in INBOUND_ONLY_FAULTS
    high = 0 if inbound_only else check.high
    assert (schema["minimum"], schema["maximum"]) == (check.low, high)

    def put(value: Any) -> int:
        body: dict[str, Any] = {"enabled": True}
        target = body
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
        return call(client, "PUT", "/config", body).status_code

    assert put(high) == 200
    assert put(check.low) == 200
    above = check.high + 1 if isinstance(check.high, int) else check.high * 1.001
    assert put(check.high / 2 if inbound_only else above) == 400


def test_the_openapi_document_lists_what_routes_answer() -> None:
    client, _ = make()
    document = call(client, "GET", "/openapi.json").get_json()
    define = document["paths"]["/api/chaos/scenarios"]["post"]["responses"]
    assert "201" in define and "200" not in define
    assert call(client, "POST", "/scenarios", {"name": "mine"}).status_code == 201
    timing = document["components"]["schemas"]["Activation"]["properties"]
    assert "null" in timing["duration_s"]["type"]
    assert call(client, "POST", "/scenarios/dialup", {"duration_s": None}).status_code == 200
    body = document["components"]["schemas"]["FaultInjectionConfig"]["properties"]["error_body"]
    assert "array" in body["type"]
    listed = call(client, "PUT", "/config/faults", {"error_body": [1, 2]})
    assert listed.get_json()["error_body"] == "[1,2]"  # a list is sent as JSON, as documented


def test_a_config_that_outlasts_the_workers_is_refused_with_the_reason() -> None:
    from mockforge_wsgi.api import create_management_app
    from mockforge_wsgi.engine import ScenarioEngine

    engine = ScenarioEngine(ChaosConfig())
    client = Client(create_management_app(engine, max_hold_s=30))
    held = call(client, "PUT", "/config/latency", {"enabled": True, "fixed_delay_ms": 40_000})
    assert held.status_code == 400
    assert problems(held) == [
        "chaos.latency: can hold a request for 40 s; this server's sync workers are killed "
        "after 30 s (gunicorn --timeout): use gthread workers or shorter delays"
    ]
    faults = {"enabled": True, "timeout_probability": 0.1, "timeout_ms": 25_000}
    assert call(client, "PUT", "/config/faults", faults).status_code == 200
    more = {"enabled": True, "fixed_delay_ms": 6_000}  # 6 s, then the 25 s timeout
    assert call(client, "PUT", "/config/latency", more).status_code == 400
    scenario = {"name": "slow", "latency": {"enabled": True, "fixed_delay_ms": 31_000}}
    assert call(client, "POST", "/scenarios", scenario).status_code == 400
    assert engine.effective().latency.fixed_delay_ms == 0  # nothing changed


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", "1e400"])
def test_a_bad_max_hold_in_the_environment_is_one_clear_error(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mockforge_wsgi.api import create_management_app
    from mockforge_wsgi.config import ConfigError
    from mockforge_wsgi.engine import ScenarioEngine

    monkeypatch.setenv("MOCKFORGE_MAX_HOLD_S", raw)
    with pytest.raises(ConfigError, match=r"MOCKFORGE_MAX_HOLD_S: .* is not a number of seconds"):
        create_management_app(ScenarioEngine(ChaosConfig()))


def _every_route_and_method() -> list[tuple[str, str]]:
    from mockforge_wsgi.api import ROUTES

    cases = []
    for route in ROUTES:
        path = route.rule.replace("<name>", "slow_backend")
        cases.extend((method, path) for method in route.methods)
    return cases


@pytest.mark.parametrize(("method", "path"), _every_route_and_method())
@pytest.mark.parametrize("protect_reads", [False, True])
def test_the_admin_token_guards_every_mutating_route_and_method(
    method: str, path: str, protect_reads: bool
) -> None:
    """docs/api.md: every mutating route needs the token (reads too with protect_reads,
    and always those of request data: verdicts, the report); refused, nothing changes."""
    client, middleware = make(admin_token="s3cret", protect_reads=protect_reads)
    before = middleware.engine.status()
    body = {"latency_ms": 1} if method in ("PUT", "PATCH", "POST") else None
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = call(client, method, path, body, headers=headers)
        private = any(route.private and route.rule == path for route in ROUTES)
        if method == "GET" and not protect_reads and not private:
            assert response.status_code == 200, (method, path)
        else:
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert middleware.engine.status() == before
    allowed = call(client, method, path, body, headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code != 401, (method, path)


def test_each_url_segment_names_a_section_a_rule_may_override() -> None:
    from mockforge_wsgi._sections import URL_SEGMENTS
    from mockforge_wsgi.config import RULE_SECTIONS, SECTION_CLASSES

    assert set(URL_SEGMENTS.values()) <= set(SECTION_CLASSES)
    # the same, in one order; and chaos.outbound, which a rule does not override
    assert tuple(URL_SEGMENTS.values()) == (*RULE_SECTIONS, "outbound")


def test_a_section_with_a_pattern_headers_and_bodies_patches_and_reads_back() -> None:
    """PATCH merges over the section as GET shows it: a pattern in its own words, headers
    and bodies as mappings (a field dict of the pattern used to be refused)."""
    client, middleware = make()
    first = {
        "pattern": "fail_first:2:503",
        "error_headers": {"X-A": "1"},
        "error_bodies": {"503": "busy"},
    }
    assert call(client, "PATCH", "/config/faults", first).status_code == 200
    again = call(client, "PATCH", "/config/faults", {"retry_after_s": 3})
    assert again.status_code == 200, again.get_json()
    shown = call(client, "GET", "/config/faults").get_json()
    assert shown["pattern"] == {"fail_first": 2, "status": 503}
    assert (shown["error_headers"], shown["error_bodies"]) == ({"X-A": "1"}, {"503": "busy"})
    assert middleware.config.fault_injection.retry_after_s == 3


THIRTY_DAYS_S = 30 * 24 * 3600  # docs/api.md's bound, written out (not the constant)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        pytest.param(
            "POST", "/scenarios/slow_backend", lambda s: {"duration_s": s}, "duration_s",
            id="duration_s",
        ),
        pytest.param(
            "POST", "/scenarios/slow_backend",
            lambda s: {"duration_s": THIRTY_DAYS_S, "ramp_s": s}, "ramp_s", id="ramp_s",
        ),
        pytest.param(
            "PUT", "/schedule", lambda s: [{"start_s": s, "scenario": "slow_backend"}],
            "[0].start_s", id="schedule-start_s",
        ),
        pytest.param(
            "PUT", "/schedule",
            lambda s: [{"start_s": 0, "duration_s": s, "scenario": "slow_backend"}],
            "[0].duration_s", id="schedule-duration_s",
        ),
    ],
)  # fmt: skip
def test_seconds_are_at_most_30_days_at_the_bound_and_one_past_it(
    method: str, path: str, body: Any, field: str
) -> None:
    client, _ = make()
    over = call(client, method, path, body(THIRTY_DAYS_S + 1))
    assert over.status_code == 400
    [problem] = problems(over)
    assert problem.startswith(f"{field}: {THIRTY_DAYS_S + 1} is not a number")
    assert problem.endswith("<= 2.592e+06")
    at = call(client, method, path, body(THIRTY_DAYS_S))
    assert at.status_code in (200, 201), at.get_json()


# Numbers a careless or hostile client sends: JSON integers have no bound (10**400 is one
# token), floats run to 1e308; NaN and Infinity are not JSON (RFC 8259) but Python's
# json module writes them, so they arrive too.
HUGE_INTEGERS = st.integers(min_value=2**63) | st.integers(max_value=-(2**63))
HUGE_NUMBERS = (
    HUGE_INTEGERS
    | st.sampled_from([10**400, -(10**400), 10**4000, 2**1024])
    | st.floats(min_value=1e15, allow_infinity=False)
    | st.floats(max_value=-1e15, allow_infinity=False)
    | st.sampled_from([math.nan, math.inf, -math.inf])
)
NUMBERS = HUGE_NUMBERS | st.integers() | st.floats()
SECONDS_FIELDS = ("start_s", "duration_s")
SECTIONS_BY_SEGMENT = {segment: name for segment, name in URL_SEGMENTS.items()}


def _number_paths() -> list[tuple[str, str]]:
    """(URL segment, field) of every number a config section takes."""
    segments = {name: segment for segment, name in URL_SEGMENTS.items()}
    return [
        (segments[param.values[0][0]], param.values[0][1])
        for param in _number_settings()
        if len(param.values[0]) == 2 and param.values[0][0] in segments
    ]


@st.composite
def _number_requests(draw: st.DrawFn) -> tuple[str, str, str]:
    """A route that takes a number, with a number in one of its fields."""
    number = draw(NUMBERS)
    where = draw(st.sampled_from(["activate", "schedule", "section", "config", "define"]))
    if where == "activate":
        field = draw(st.sampled_from(["duration_s", "ramp_s"]))
        return "POST", "/scenarios/slow_backend", json.dumps({field: number})
    if where == "schedule":
        item: dict[str, Any] = {"scenario": "slow_backend", "duration_s": 10}
        item[draw(st.sampled_from(SECONDS_FIELDS))] = number
        return "PUT", "/schedule", json.dumps([item])
    segment, field = draw(st.sampled_from(_number_paths()))
    if where == "section":
        return "PUT", f"/config/{segment}", json.dumps({"enabled": True, field: number})
    if where == "define":  # a custom scenario carries sections too
        name = SECTIONS_BY_SEGMENT[segment]
        body = {"name": "huge", "description": "x", name: {"enabled": True, field: number}}
        return "POST", "/scenarios", json.dumps(body)
    return "PUT", "/config", json.dumps({"enabled": True, segment: {field: number}})


@given(_number_requests())
@settings(max_examples=200, deadline=None, derandomize=True)
def test_any_number_in_any_field_is_taken_or_refused_naming_the_field(
    request: tuple[str, str, str],
) -> None:
    """Never a 500: a number is accepted, or refused with a 400 whose problems name a
    field (or the body, for NaN and Infinity, which are not JSON)."""
    method, path, body = request
    client, _ = make()
    before = call(client, "GET", "/status").get_json()
    response = call(client, method, path, body)
    assert response.status_code in (200, 201, 400), (response.status_code, response.get_data())
    if response.status_code == 400:
        found = problems(response)
        assert found and all(len(p) < 300 for p in found), found
        assert all(":" in p for p in found), found  # "<field>: <value> is not ..."
        assert call(client, "GET", "/status").get_json() == before  # nothing half-applied


def test_naming_a_setting_turns_its_section_on_and_settings_that_do_nothing_are_said() -> None:
    client, middleware = make()
    patched = call(client, "PATCH", "/config/faults", {"http_error_probability": 1.0}).get_json()
    assert patched["enabled"] is True  # naming a setting turned the section on
    assert patched["warnings"] == [
        "chaos.enabled is false: fault_injection set, but nothing is injected until chaos is "
        "turned on (chaos.enabled: true, --chaos, MOCKFORGE_CHAOS_ENABLED=true, or "
        "POST /api/chaos/enable)"
    ]
    call(client, "POST", "/enable")
    off = call(client, "PUT", "/config/latency", {"enabled": False, "fixed_delay_ms": 5})
    assert off.get_json()["enabled"] is False  # the same source said off: off it stays
    assert off.get_json()["warnings"] == [
        "chaos.latency: fixed_delay_ms set (this request) but chaos.latency.enabled is false: "
        "nothing of it is injected"
    ]
    whole = call(client, "PUT", "/config", {"enabled": True, "latency": {"fixed_delay_ms": 5}})
    assert whole.get_json()["warnings"] == []
    assert middleware.engine.effective().latency.enabled is True
    assert middleware.engine.effective().fault_injection.enabled is False  # PUT replaced all
    assert "warnings" not in call(client, "GET", "/config/latency").get_json()


def test_outbound_chaos_set_on_a_server_started_without_it_says_it_is_not_intercepted() -> None:
    """The interception of the app's calls is installed at start (chaos.outbound.enabled
    in the startup config): set later through the API alone, the app's calls stay
    untouched, and the answer says so instead of an empty warnings list."""
    section = {"enabled": True, "hosts": ["127.0.0.1:*"], "refused_probability": 1.0}
    client, _middleware = make()
    warned = call(client, "PUT", "/config/outbound", section).get_json()["warnings"]
    assert any("the app's calls are not intercepted" in w for w in warned), warned
    whole = {"enabled": True, "outbound": section}
    warned = call(client, "PUT", "/config", whole).get_json()["warnings"]
    assert any("chaos.outbound.enabled: true" in w for w in warned), warned
    started_with = load_config(environ={}, overrides={"outbound": {"enabled": True}})
    engine = ScenarioEngine(started_with)  # the API alone: no interception installed here
    client = Client(create_management_app(engine, prefix=P))
    call(client, "POST", "/enable")
    assert call(client, "PUT", "/config/outbound", section).get_json()["warnings"] == []
