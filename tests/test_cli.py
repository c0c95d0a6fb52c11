"""The ``mockforge`` command: serve with the design note's flags, client verbs, validate."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from servers import gunicorn_server, mockforge_serve, once_counted, session

from mockforge_wsgi import load_config
from mockforge_wsgi.cli import longest_delay_s, main, worker_timeout
from mockforge_wsgi.scenarios import BUILTIN_SCENARIOS

pytestmark = pytest.mark.server


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--chaos-latency-range", "500-100"],
            "chaos.latency.random_delay_range_ms: 500-100 is not ordered (min <= max) "
            "(from --chaos-latency-range)",
            id="range",
        ),
        pytest.param(
            ["--chaos-http-errors", "700"],
            "chaos.fault_injection.http_errors: 700 not in [400, 599] (from --chaos-http-errors)",
            id="status",
        ),
        pytest.param(
            ["--chaos-http-error-probability", "1.5"],
            "1.5 is not in [0, 1] (from --chaos-http-error-probability)",
            id="probability",
        ),
        pytest.param(["--chaos-packet-loss", "lots"], "'lots' is not a number", id="not-a-number"),
        pytest.param(
            ["--chaos-scenario", "slow_bakend"],
            "chaos.scenario: unknown scenario 'slow_bakend'; did you mean 'slow_backend'? "
            "(choices: network_degradation, ",
            id="scenario",
        ),
        pytest.param(
            ["--app", "no_such_module:app"], "--app no_such_module:app: could not import", id="app"
        ),
        pytest.param(
            ["--chaos-latency-ms", "1e20"],
            "chaos.latency.fixed_delay_ms: 1e+20 is not in [0, 600000] (from --chaos-latency-ms)",
            id="delay-no-server-can-hold",
        ),
        pytest.param(
            ["--worker-class", "sync", "--threads", "4"],
            "--threads 4 with --worker-class sync: gunicorn would run gthread workers",
            id="threads-with-sync",
        ),
    ],
)
def test_bad_flags_exit_2_before_binding(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--port", "1", *args], env={})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port)], env={})
    assert result.exit_code == 2
    assert f"--port {port}: cannot bind" in result.output


def test_worker_timeout_covers_the_longest_injected_delay() -> None:
    config = load_config(
        environ={},
        overrides={
            "fault_injection": {"enabled": True, "timeout_probability": 1, "timeout_ms": 30_000}
        },
    )
    assert longest_delay_s([config]) == 30.0
    assert worker_timeout(config, []) == 60  # a 30 s injected timeout cannot kill a worker
    # cascading_failure: 5 s + 30% jitter, then a 5 s timeout.
    assert worker_timeout(load_config(environ={}), BUILTIN_SCENARIOS.values()) == 30 + 12


def test_verification_network_degradation_takes_about_500ms(tmp_path: Path) -> None:
    with (
        mockforge_serve(tmp_path, "--chaos", "--chaos-scenario", "network_degradation") as server,
        session() as http,
    ):
        elapsed = []
        for _ in range(5):
            start = time.perf_counter()
            assert http.get(server.url + "/api/test", timeout=30).status_code == 200
            elapsed.append(time.perf_counter() - start)
    # 500 ms +/- 20% jitter; the small body and a lost segment (5%) can add to it.
    assert all(value >= 0.4 for value in elapsed), elapsed
    assert sorted(elapsed)[2] <= 0.9, elapsed


def test_verification_http_errors(tmp_path: Path) -> None:
    args = ("--chaos", "--chaos-http-errors", "500", "--chaos-http-error-probability", "1.0")
    with mockforge_serve(tmp_path, *args) as server, session() as http:
        assert [http.get(server.url + "/api/test", timeout=10).status_code for _ in range(5)] == [
            500
        ] * 5


def test_verification_rate_limit(tmp_path: Path) -> None:
    with (
        mockforge_serve(tmp_path, "--chaos", "--chaos-rate-limit", "1") as server,
        session() as http,
    ):
        statuses = [http.get(server.url + "/api/test", timeout=10).status_code for _ in range(10)]
    assert statuses[0] == 200
    assert statuses.count(429) >= 8


def test_verification_status_and_live_switching(tmp_path: Path) -> None:
    with mockforge_serve(tmp_path) as server:
        runner = CliRunner()
        url = ["--url", server.url]
        assert '"enabled": false' in runner.invoke(main, ["chaos", "status", *url]).output
        assert runner.invoke(main, ["chaos", "enable", *url]).exit_code == 0
        switched = runner.invoke(
            main, ["chaos", "scenario", "cascading_failure", "--duration", "60", *url]
        )
        assert '"name": "cascading_failure"' in switched.output
        runner.invoke(main, ["chaos", "scenario", "slow_backend", *url])
        status = runner.invoke(main, ["chaos", "status", *url]).output
        assert '"name": "slow_backend"' in status
        assert '"stopped": "slow_backend"' in runner.invoke(main, ["chaos", "stop", *url]).output
        table = runner.invoke(main, ["scenarios", *url]).output
        assert table.splitlines()[0].split() == ["NAME", "KIND", "DESCRIPTION"]
        assert "dialup" in table
        assert runner.invoke(main, ["chaos", "disable", *url]).exit_code == 0
        assert '"counters": {}' in runner.invoke(main, ["chaos", "reset", *url]).output


def test_client_verbs_report_an_unreachable_server() -> None:
    result = CliRunner().invoke(main, ["chaos", "status", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output


def test_client_verbs_send_the_admin_token(tmp_path: Path) -> None:
    with mockforge_serve(tmp_path, "--admin-token", "t0ken") as server:
        url = ["--url", server.url]
        refused = CliRunner().invoke(
            main, ["chaos", "enable", *url], env={"MOCKFORGE_ADMIN_TOKEN": None}
        )
        assert refused.exit_code == 1
        assert "401" in refused.output
        ok = CliRunner().invoke(
            main, ["chaos", "enable", *url], env={"MOCKFORGE_ADMIN_TOKEN": "t0ken"}
        )
        assert ok.exit_code == 0


def test_yaml_routes_and_per_route_chaos(tmp_path: Path) -> None:
    config = tmp_path / "mock.yaml"
    config.write_text(
        "chaos:\n  enabled: true\n"
        "routes:\n"
        "  - method: GET\n    path: /users/<int:id>\n    json: {name: Ada}\n"
        "    headers: {X-Source: mock}\n"
        "  - method: GET\n    path: /flaky\n    text: nope\n"
        "    chaos:\n      fault_injection:\n"
        "        {enabled: true, http_errors: [502], http_error_probability: 1.0}\n"
    )
    with mockforge_serve(tmp_path, "--config", str(config)) as server, session() as http:
        user = http.get(server.url + "/users/7", timeout=10)
        assert (user.status_code, user.json(), user.headers["X-Source"]) == (
            200,
            {"name": "Ada"},
            "mock",
        )
        assert http.get(server.url + "/flaky", timeout=10).status_code == 502
        missing = http.get(server.url + "/nowhere", timeout=10)
        assert (missing.status_code, missing.json()["error"]) == (404, "not found")
        echoed = http.post(server.url + "/api/echo", json={"a": 1}, timeout=10).json()
        assert echoed["json"] == {"a": 1}
        assert len(http.get(server.url + "/api/bytes/100000", timeout=10).content) == 100000
        assert http.get(server.url + "/health", timeout=10).json() == {"status": "ok"}


def test_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "chaos:\n  enabled: true\n  scenarios:\n    mine: {latency: {enabled: true}}\n"
    )
    result = CliRunner().invoke(main, ["validate", str(good)], env={})
    assert result.exit_code == 0
    assert "valid (chaos enabled, 1 custom scenarios)" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "chaos:\n  latncy: {}\nroutes:\n  - {method: FETCH, path: users, status: 700}\n"
    )
    result = CliRunner().invoke(main, ["validate", str(bad)], env={})
    assert result.exit_code == 1
    for problem in [
        "chaos.latncy: unknown key; did you mean 'latency'?",
        "routes[0].method: 'FETCH' is not one of GET",
        "routes[0].path: 'users' is not a path starting with /",
        "routes[0].status: 700 is not in [100, 599]",
    ]:
        assert problem in result.output


@pytest.mark.parametrize("how", ["mockforge serve", "gunicorn"])
def test_four_workers_start_and_serve(tmp_path: Path, how: str) -> None:
    if how == "gunicorn":
        server_cm = gunicorn_server(
            tmp_path, app="mockforge_wsgi.app:app", workers=4, worker_class="gthread"
        )
    else:
        server_cm = mockforge_serve(tmp_path, "--workers", "4")
    with server_cm as server, session() as http:
        for _ in range(20):
            with session() as fresh:  # new connections, spread over the workers
                assert fresh.get(server.url + "/health", timeout=10).status_code == 200
        assert http.get(server.url + "/api/chaos/status", timeout=10).status_code == 200
        # Workers boot one after another; one may answer all 20 before the last boots.
        booted = once_counted(server.log, lambda log: log.count("Booting worker") >= 4, 10)
    assert booted.count("Booting worker") >= 4, booted


def test_serve_sets_the_worker_timeout_above_an_injected_30s_timeout(tmp_path: Path) -> None:
    env = {
        "MOCKFORGE_CHAOS_FAULT_INJECTION_ENABLED": "true",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_TIMEOUT_PROBABILITY": "0.5",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_TIMEOUT_MS": "30000",
    }
    with mockforge_serve(
        tmp_path, "--log-level", "debug", "--worker-class", "sync", env=env
    ) as server:
        pass
    assert "timeout: 60" in server.log()  # gunicorn's config dump at debug level


@pytest.mark.parametrize(
    ("args", "worker", "threads"),
    [
        pytest.param(("--worker-class", "sync"), "sync", "1", id="sync"),
        pytest.param((), "gthread", "8", id="default"),
        pytest.param(("--threads", "3"), "gthread", "3", id="gthread-3"),
    ],
)
def test_the_worker_class_asked_for_is_the_one_gunicorn_runs(
    tmp_path: Path, args: tuple[str, ...], worker: str, threads: str
) -> None:
    with mockforge_serve(tmp_path, "--log-level", "debug", *args) as server:
        pass
    log = server.log()
    assert f"Using worker: {worker}" in log  # what gunicorn itself says it started
    assert f"threads: {threads}\n" in log
    assert f"1 {worker} worker(s)" in log  # and the banner says the same


@pytest.mark.parametrize(("worker_class", "status"), [("sync", 400), ("gthread", 200)])
def test_sync_workers_refuse_a_delay_they_cannot_live_through(
    tmp_path: Path, worker_class: str, status: int
) -> None:
    with (
        mockforge_serve(tmp_path, "--worker-class", worker_class) as server,
        session() as http,
    ):
        response = http.put(
            server.url + "/api/chaos/config/latency",
            json={"enabled": True, "fixed_delay_ms": 60_000},
            timeout=10,
        )
    assert response.status_code == status, response.text
    if status == 400:  # 30 s + the longest built-in scenario's 12 s, less 1 s
        assert "sync workers are killed after 41 s" in response.json()["problems"][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "chaoss:\n  enabled: true\n",
            "bad.yaml:1: 'chaoss' is not a mockforge key; did you mean 'chaos'?",
            id="one-edit-away",
        ),
        pytest.param(
            "chaos:\n  enabled: true\nrules: []\n",
            "bad.yaml:3: 'rules' is a chaos setting",
            id="rules",
        ),
        pytest.param(
            "chaos: {scenario: nope}\n",
            "chaos.scenario: unknown scenario 'nope' (choices: network_degradation, "
            "service_instability, cascading_failure, peak_traffic, slow_backend, slow_3g, "
            "fast_3g, flaky_wifi, cable, dialup, fast_4g, lte, edge, geo_satellite) (from ",
            id="unknown-scenario",
        ),
        pytest.param(
            "chaos: {scenario: flaky_wify}\n",
            "chaos.scenario: unknown scenario 'flaky_wify'; did you mean 'flaky_wifi'?",
            id="nearest-scenario",
        ),
        pytest.param("chaos: {enabled: [\n", "bad.yaml:2:1: not valid YAML (", id="yaml"),
    ],
)
def test_validate_refuses_what_would_do_nothing(tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(bad)], env={})
    assert result.exit_code == 1
    assert expected in result.output, result.output
    assert "<unicode string>" not in result.output


def test_validate_says_which_settings_do_nothing(tmp_path: Path) -> None:
    path = tmp_path / "chaos.yaml"
    path.write_text("chaos:\n  enabled: true\n  latency: {enabled: false, fixed_delay_ms: 5}\n")
    result = CliRunner().invoke(main, ["validate", str(path)], env={})
    assert result.exit_code == 0
    assert (
        f"mockforge: warning: chaos.latency: fixed_delay_ms set ({path}) but "
        "chaos.latency.enabled is false: nothing of it is injected"
    ) in result.output


def test_an_env_setting_turns_its_section_on_as_a_flag_does(tmp_path: Path) -> None:
    # The case: the variable did nothing while the equivalent flag worked.
    env = {
        "MOCKFORGE_CHAOS_FAULT_INJECTION_PATTERN": "fail_first:3:503",
        "MOCKFORGE_CHAOS_LATENCY_ENABLED": "false",
        "MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS": "100",
    }
    with (
        mockforge_serve(tmp_path, "--chaos", "--workers", "2", env=env) as server,
        session() as http,
    ):
        statuses = [http.get(server.url + "/api/test", timeout=10).status_code for _ in range(5)]
    assert statuses == [503, 503, 503, 200, 200]
    warning = (
        "mockforge: warning: chaos.latency: fixed_delay_ms set "
        "(MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS) but chaos.latency.enabled is false"
    )
    assert server.log().count(warning) == 1  # at start, once (not once per worker)


def test_the_gunicorn_parts_keep_their_old_names_in_cli() -> None:
    """gunicorn_server.py holds them now; ``--logger-class mockforge_wsgi.cli.GunicornLogger``
    (and the format, and the hook some tests call) still name the same objects."""
    from mockforge_wsgi import cli, gunicorn_server

    assert cli.GunicornLogger is gunicorn_server.GunicornLogger
    assert cli.ACCESS_LOG_FORMAT == gunicorn_server.ACCESS_LOG_FORMAT
    assert cli._child_exit is gunicorn_server.child_exit
