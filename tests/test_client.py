"""ChaosClient, the unittest mixin and the pytest plugin, against a real server."""

from __future__ import annotations

import json
import textwrap
import unittest
import urllib.error
import urllib.request
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest

from mockforge_wsgi.client import ChaosClient, InvalidRequest, NotFound, Unauthorized
from mockforge_wsgi.testing import ChaosServer, ChaosTestCase

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server() -> Iterator[ChaosServer]:
    with ChaosServer() as running:
        yield running


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/api/test", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_every_route(server: ChaosServer) -> None:
    chaos = ChaosClient(server.url)
    chaos.reset()
    assert chaos.status()["enabled"] is False
    chaos.enable()
    assert chaos.config()["enabled"] is True
    assert chaos.update_section("latency", fixed_delay_ms=5)["fixed_delay_ms"] == 5
    assert chaos.set_section("rate_limit", {"burst_size": 3})["burst_size"] == 3
    assert chaos.section("traffic")["enabled"] is False
    assert {s["name"] for s in chaos.scenarios()} >= {"slow_backend", "dialup"}
    assert chaos.define_scenario("mine", fault_injection={"enabled": True})["kind"] == "custom"
    assert chaos.start_scenario("mine", duration_s=60)["name"] == "mine"
    assert chaos.active_scenario()["name"] == "mine"  # type: ignore[index]
    chaos.stop_scenario("mine")
    assert chaos.set_schedule([{"start_s": 3600, "scenario": "dialup"}])[0]["name"] == "dialup"
    assert len(chaos.schedule()) == 1
    assert "counters" in chaos.stats()
    assert chaos.openapi()["openapi"] == "3.1.0"
    chaos.set_config({"enabled": False})
    chaos.disable()
    chaos.reset()


def test_errors_carry_the_servers_messages(server: ChaosServer) -> None:
    chaos = ChaosClient(server.url)
    with pytest.raises(InvalidRequest) as caught:
        chaos.update_section("latency", probability=3)
    assert caught.value.problems == ["chaos.latency.probability: 3 is not in [0, 1]"]
    with pytest.raises(NotFound):
        chaos.start_scenario("nope")


def test_context_managers_restore_even_when_the_body_raises(server: ChaosServer) -> None:
    chaos = ChaosClient(server.url)
    chaos.reset()
    with pytest.raises(RuntimeError), chaos.faults(http_errors=[503], probability=1.0):
        assert get(server.url) == 503
        raise RuntimeError("the test failed")
    assert get(server.url) == 200
    assert chaos.section("faults")["http_error_probability"] == 0.0
    assert chaos.status()["enabled"] is False
    with chaos.scenario("service_instability"):
        assert chaos.active_scenario()["name"] == "service_instability"  # type: ignore[index]
        with chaos.disabled():
            assert chaos.status()["enabled"] is False
        assert chaos.status()["enabled"] is True
    assert chaos.active_scenario() is None
    with chaos.latency(fixed_delay_ms=50):
        assert chaos.status()["effective_config"]["latency"]["fixed_delay_ms"] == 50
    assert chaos.section("latency")["enabled"] is False


def test_context_managers_restore_exactly_what_they_changed_on_a_scenario(
    server: ChaosServer,
) -> None:
    chaos = ChaosClient(server.url)
    chaos.reset()
    chaos.start_scenario("service_instability", duration_s=600)
    with chaos.faults(http_errors=[503], probability=1.0):
        assert {get(server.url) for _ in range(10)} == {503}  # on top of the scenario
    assert chaos.status()["overrides"] == {}  # no change left on top of it
    assert chaos.section("faults")["http_error_probability"] == 0.2  # the scenario's own
    chaos.update_section("latency", fixed_delay_ms=1)  # a change of the user's own
    with chaos.latency(fixed_delay_ms=5):
        assert chaos.status()["effective_config"]["latency"]["fixed_delay_ms"] == 5
    assert chaos.status()["overrides"]["latency"]["fixed_delay_ms"] == 1  # theirs is back
    with chaos.scenario("slow_backend"):
        assert chaos.active_scenario()["name"] == "slow_backend"  # type: ignore[index]
    status = chaos.status()
    assert status["active_scenario"]["name"] == "service_instability"  # resumed...
    assert status["active_scenario"]["reason"] == "resumed"  # by the server
    assert 0 < status["active_scenario"]["remaining_s"] <= 600  # ...for what was left
    assert status["overrides"]["latency"]["fixed_delay_ms"] == 1  # with the user's change
    chaos.reset()


def test_admin_token() -> None:
    with ChaosServer("--admin-token", "s3cret") as guarded:
        with pytest.raises(Unauthorized):
            ChaosClient(guarded.url, token="wrong").enable()
        ChaosClient(guarded.url, token="s3cret").enable()


def test_unittest_mixin() -> None:
    seen: list[int] = []

    class Legacy(ChaosTestCase, unittest.TestCase):
        def test_fault(self) -> None:
            with self.chaos.faults(http_errors=[502], probability=1.0):
                seen.append(get(self.chaos.url))

        def test_after_reset(self) -> None:
            seen.append(get(self.chaos.url))

    result = unittest.TextTestRunner(verbosity=0).run(
        unittest.defaultTestLoader.loadTestsFromTestCase(Legacy)
    )
    assert result.wasSuccessful(), result.errors + result.failures
    assert sorted(seen) == [200, 502]


# The pytest run inside the test loads what ours loads (pyproject.toml's addopts), not
# the installed plugins that are not ours (schemathesis' alone takes a second).
NOT_OURS = ("-p", "no:cacheprovider", *("-p", "no:schemathesis", "-p", "no:benchmark"))
NOT_OURS += ("-p", "no:anyio")


def test_pytest_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import urllib.error, urllib.request
            import pytest

            def status(url):
                try:
                    with urllib.request.urlopen(url + "/api/test", timeout=10) as response:
                        return response.status
                except urllib.error.HTTPError as error:
                    return error.code

            @pytest.mark.chaos(http_errors=[503], probability=1.0)
            def test_marker(chaos, chaos_server):
                assert status(chaos_server) == 503

            def test_reset_after_each_test(chaos, chaos_server):
                assert status(chaos_server) == 200
                assert chaos.status()["enabled"] is False

            def test_in_process(chaos_middleware):
                from werkzeug.test import Client

                def app(environ, start_response):
                    start_response("200 OK", [("Content-Length", "2")])
                    return [b"ok"]

                wrapped = chaos_middleware(
                    app, enabled=True,
                    fault_injection={"enabled": True, "http_errors": [500],
                                     "http_error_probability": 1.0},
                )
                assert Client(wrapped).get("/").status_code == 500
            """
        )
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(*NOT_OURS, f"--junitxml={junit}")
    result.assert_outcomes(passed=3)
    # A line per test that used `chaos`: what was injected, the verdict, the seed.
    result.stdout.fnmatch_lines(
        [
            "*chaos summary*",
            "*::test_marker: injected http_error 1; verdict: 1 calls, 0% succeeded, "
            "0.00 retries/call, no retry after a Retry-After, 0 unsafe retries; "
            "seed none (set one to replay)",
            "*::test_reset_after_each_test: injected nothing; verdict: 1 calls, 100% succeeded*",
        ]
    )
    cases = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ElementTree.parse(junit).getroot().iter("testcase")
    }
    assert json.loads(cases["test_marker"]["chaos_injections"]) == {"http_error": 1}
    assert json.loads(cases["test_marker"]["chaos_verdict"])["calls"] == 1
    assert cases["test_marker"]["chaos_seed"] == "none"
    assert "chaos_verdict" not in cases["test_in_process"]  # no `chaos` there
    quick = pytester.runpytest(*NOT_OURS, "--mockforge-no-verdicts", "-k", "test_marker")
    quick.assert_outcomes(passed=1, deselected=2)
    quick.stdout.fnmatch_lines(["*::test_marker: injected http_error 1; no verdict; seed *"])
