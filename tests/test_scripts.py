"""Fault scripts: an ordered list of steps per route (or per test id), consumed across
workers, and the API that says which steps were hit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.config import ConfigError, config_from_dict
from mockforge_wsgi.state.embedded import EmbeddedStore


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def scripted(**chaos: Any) -> tuple[Client, ChaosMiddleware]:
    config = load_config(environ={}, overrides={"enabled": True, **chaos})
    middleware = ChaosMiddleware(hello, config=config)
    return Client(middleware), middleware


def scripts(client: Client) -> list[dict[str, Any]]:
    return client.get("/api/chaos/scripts").get_json()["scripts"]  # type: ignore[no-any-return]


def test_a_script_is_played_in_order_then_the_probabilities_resume() -> None:
    client, _ = scripted(fault_injection={"enabled": True, "script": [503, 503, "reset", "ok"]})
    statuses = [client.get("/x").status_code for _ in range(6)]
    assert statuses == [503, 503, 502, 200, 200, 200]  # 502: a reset without a socket
    [report] = scripts(client)
    assert report["hit"] == ["503", "503", "reset", "ok"] and report["done"]
    assert report["requests"] == 6
    client.post("/api/chaos/enable")  # any change restarts it
    assert scripts(client)[0]["hit"] == []
    assert client.get("/x").status_code == 503


def test_a_script_per_route_says_which_steps_the_client_met() -> None:
    rules = [
        {
            "match": {"path": "/pay"},
            "fault_injection": {"enabled": True, "script": [503, "ok", 502]},
        }
    ]
    client, _ = scripted(rules=rules)
    assert client.get("/other").status_code == 200  # not scripted
    assert client.get("/pay").status_code == 503
    [report] = scripts(client)
    assert (report["rule"], report["match"]) == (0, {"path": "/pay"})
    assert (report["hit"], report["not_hit"], report["done"]) == (["503"], ["ok", "502"], False)
    assert [client.get("/pay").status_code for _ in range(3)] == [200, 502, 200]


def test_a_script_per_test_id() -> None:
    rules = [
        {"match": {"header": {"name": "X-Test-Id", "equals": name}},
         "fault_injection": {"enabled": True, "script": steps}}
        for name, steps in (("a", [503]), ("b", [500, 500]))
    ]  # fmt: skip
    client, _ = scripted(rules=rules)
    for name, expected in (("a", [503, 200]), ("b", [500, 500, 200])):
        got = [client.get("/x", headers={"X-Test-Id": name}).status_code for _ in expected]
        assert got == expected, name
    assert [r["done"] for r in scripts(client)] == [True, True]


def test_named_steps() -> None:
    client, _ = scripted(
        fault_injection={
            "enabled": True,
            "timeout_ms": 1,
            "script": ["timeout", "after-app-503", "corrupt-truncate", "ok"],
        }
    )
    answers = [client.get("/x") for _ in range(4)]
    assert [a.status_code for a in answers] == [504, 503, 200, 200]
    assert answers[2].get_data() == b"he"  # truncated to half, under a true length


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (["503", "explode"], "'explode' is not a step"),
        ([True], "is not a list of steps"),
        (["399"], "'399' is not a step"),
        # A digit to str.isdigit, not to int(): once a 500 (found by schemathesis).
        (["\u00b2"], "'\u00b2' is not a step"),
        (["after-app-\u00b2"], "is not a step"),
        ([503] * 101, "has 101 steps; at most 100"),
    ],
)
def test_bad_scripts(script: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"fault_injection": {"script": script}})
    assert "chaos.fault_injection.script: " in str(error.value)
    assert problem in str(error.value)


def test_a_script_from_the_environment() -> None:
    environ = {"MOCKFORGE_CHAOS_FAULT_INJECTION_SCRIPT": "503, reset,OK"}
    assert load_config(environ=environ).fault_injection.script == ("503", "reset", "ok")


def test_a_rule_that_leaves_the_faults_alone_plays_the_global_script() -> None:
    rules = [{"match": {"path": "/slow"}, "latency": {"enabled": True, "fixed_delay_ms": 1}}]
    client, _ = scripted(fault_injection={"enabled": True, "script": [503, 502]}, rules=rules)
    assert client.get("/slow").status_code == 503  # step 1, through the rule
    assert client.get("/x").status_code == 502  # step 2, without it
    [report] = scripts(client)
    assert report["rule"] is None and report["done"]


def test_a_rule_with_other_fault_settings_still_plays_the_global_script() -> None:
    """Only a rule that sets a script has one of its own: the requests it matches count
    where /scripts reports them."""
    rules = [{"match": {"path": "/slow"}, "fault_injection": {"enabled": True, "timeout_ms": 5}}]
    client, _ = scripted(fault_injection={"enabled": True, "script": [503, 502]}, rules=rules)
    assert client.get("/slow").status_code == 503
    [report] = scripts(client)
    assert (report["rule"], report["hit"]) == (None, ["503"])


def test_a_long_run_of_changed_scripts_keeps_working_on_the_embedded_store(
    tmp_path: Path,
) -> None:
    """The embedded store holds 64 counter names and never forgets one: a counter per
    script (not per owner) ran out after a few dozen scripts and every later one failed
    open, silently playing nothing."""
    config = load_config(environ={}, overrides={"enabled": True})
    middleware = ChaosMiddleware(hello, config=config, store=EmbeddedStore(tmp_path))
    client = Client(middleware)
    for status in range(500, 600):  # a test suite setting a new script per test
        faults = {"enabled": True, "script": [status, "ok"]}
        client.put("/api/chaos/config/faults", json=faults)
        assert [client.get("/x").status_code for _ in range(3)] == [status, 200, 200]
    assert middleware.internal_errors == 0


def test_at_most_16_rules_have_scripts_of_their_own() -> None:
    rules = [{"match": {"path": f"/{n}"}, "fault_injection": {"script": [503]}} for n in range(17)]
    with pytest.raises(ConfigError, match=r"17 rules have a fault script; at most 16"):
        config_from_dict({"rules": rules})
    config_from_dict({"rules": rules[:16]})
