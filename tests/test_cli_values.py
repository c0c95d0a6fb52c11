"""What a new user meets first in ``mockforge serve``: a wrong value is the error alone
(click's usage lines only for a command typed wrong), an app that is not one or misses a
dependency said so, no empty admin token, the defaults in ``--help``, a range in a
number's error, the all-threads warning saying how to cap, and plain gunicorn stopping
at a bad config with the message, not a traceback.

Every ``serve`` here binds 192.0.2.1 (an address this machine does not have): were a
check missing, serve would stop at the bind with another error, never start gunicorn in
the test process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from mockforge_wsgi.app import create_app
from mockforge_wsgi.cli import _all_threads_held, main, serve
from mockforge_wsgi.config import ConfigError, config_from_dict, iter_settings
from mockforge_wsgi.engine import ScenarioEngine
from mockforge_wsgi.state import MemoryStore

UNBINDABLE = ["--host", "192.0.2.1", "--port", "9"]


def _serve(args: list[str], env: dict[str, str | None] | None = None) -> Any:
    environ: dict[str, str | None] = {"MOCKFORGE_ADMIN_TOKEN": None, **(env or {})}
    result = CliRunner().invoke(main, ["serve", *UNBINDABLE, *args], env=environ)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _error_alone(result: Any, *fragments: str) -> None:
    """Exit status 2, one ``Error:`` line holding every fragment, no usage lines."""
    assert result.exit_code == 2, result.output
    assert "Usage:" not in result.output and "Traceback" not in result.output, result.output
    assert result.output.startswith("Error: "), result.output
    assert all(fragment in result.output for fragment in fragments), (fragments, result.output)


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        pytest.param(
            ["--chaos-latency-range", "500-100"],
            {},
            ["invalid chaos configuration", "(from --chaos-latency-range)"],
            id="config-flag",
        ),
        pytest.param(
            [],
            {"MOCKFORGE_CHAOS_LATENCY_PROBABILITY": "1.5"},
            ["MOCKFORGE_CHAOS_LATENCY_PROBABILITY"],
            id="config-variable",
        ),
        pytest.param(
            ["--upstream", "notaurl"], {}, ["'--upstream'", "http://notaurl"], id="url-flag"
        ),
        pytest.param([], {"MOCKFORGE_UPSTREAM": "notaurl"}, ["MOCKFORGE_UPSTREAM="], id="url-env"),
        pytest.param(
            ["--certfile", "no-such-cert.pem"], {}, ["--certfile no-such-cert.pem"], id="tls"
        ),
        pytest.param(["--app", "no_such_module_x:app"], {}, ["--app no_such_module_x"], id="app"),
        pytest.param(
            ["--access-log", "/no/such/dir/access.log"], {}, ["--access-log"], id="access-log"
        ),
        pytest.param(["--chdir", "/no/such/dir"], {}, ["--chdir /no/such/dir"], id="chdir"),
    ],
)
def test_a_wrong_value_is_the_error_alone(
    args: list[str], env: dict[str, str | None], fragments: list[str]
) -> None:
    _error_alone(_serve(args, env), *fragments)


def test_a_command_typed_wrong_keeps_the_usage_lines() -> None:
    result = _serve(["--no-such-option"])
    assert result.exit_code == 2 and "Usage: " in result.output, result.output
    assert "No such option" in result.output


@pytest.mark.parametrize("token", ["", "  "])
def test_an_empty_admin_token_is_refused(token: str) -> None:
    _error_alone(_serve(["--admin-token", token]), f"--admin-token {token!r}", "empty")
    _error_alone(_serve([], {"MOCKFORGE_ADMIN_TOKEN": token}), "MOCKFORGE_ADMIN_TOKEN=")


def test_create_app_refuses_an_empty_admin_token_as_plain_gunicorn_reads_it() -> None:
    with pytest.raises(ConfigError, match="MOCKFORGE_ADMIN_TOKEN=' '"):
        create_app(environ={"MOCKFORGE_ADMIN_TOKEN": " "})
    with pytest.raises(ConfigError, match="admin_token ''"):
        create_app(environ={}, admin_token="")
    create_app(environ={"MOCKFORGE_ADMIN_TOKEN": "s3cret"})  # a token is fine


@pytest.fixture
def app_dir(tmp_path: Path) -> Any:
    (tmp_path / "cliux_notcall.py").write_text("app = 5\n")
    (tmp_path / "cliux_needsdep.py").write_text("import cliux_absent_dependency\n\napp = None\n")
    yield tmp_path
    for name in ("cliux_notcall", "cliux_needsdep"):
        sys.modules.pop(name, None)


def test_an_app_that_is_not_callable_is_said_so(app_dir: Path) -> None:
    result = _serve(["--chdir", str(app_dir), "--app", "cliux_notcall:app"])
    _error_alone(result, "--app cliux_notcall:app", "app (5, of type int) is not a WSGI callable")
    assert "current directory" not in result.output


def test_an_app_missing_a_dependency_names_it(app_dir: Path) -> None:
    result = _serve(["--chdir", str(app_dir), "--app", "cliux_needsdep:app"])
    _error_alone(result, "--app cliux_needsdep:app", "'cliux_absent_dependency'")
    assert "current directory" not in result.output


def test_serve_help_shows_every_default() -> None:
    """Each option with a default shows it (``--threads``: 8 for gthread)."""
    ctx = click.Context(serve)
    for param in serve.params:
        if not isinstance(param, click.Option) or param.is_flag:
            continue
        if isinstance(param.get_default(ctx, call=False), (str, int, float)):
            assert param.show_default, param.name
    help_text = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    threads = next(line for line in help_text.splitlines() if "--threads" in line)
    assert "default: (8 for gthread, 1 for sync)" in threads, threads


@pytest.mark.parametrize(
    ("args", "range_"),
    [(["serve", "--port", "notaport"], "0<=x<=65535"), (["serve", "--workers", "x"], "1<=x<=64")],
)
def test_a_number_flag_given_no_number_names_its_range(args: list[str], range_: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and range_ in result.output, result.output


def test_the_all_threads_warning_says_how_to_cap() -> None:
    config = config_from_dict({"latency": {"fixed_delay_ms": 100}})
    line = _all_threads_held(ScenarioEngine(config, store=MemoryStore()), 1, 8)
    assert line is not None
    setting = next(info for info in iter_settings() if info.dotted == "chaos.max_active_faults")
    assert setting.flag is not None
    assert f"{setting.flag.name} 6" in line and setting.env_name in line, line


@pytest.mark.server
@pytest.mark.parametrize("preload", [False, True], ids=["worker", "preload"])
def test_plain_gunicorn_stops_at_a_bad_config_with_the_message(
    tmp_path: Path, preload: bool
) -> None:
    (tmp_path / "bad.yaml").write_text("chaos:\n  rate_limit:\n    requests_per_second: lots\n")
    args = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "mockforge_wsgi.app:app"]
    worktree = str(Path(__file__).resolve().parent.parent)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": worktree, "MOCKFORGE_CONFIG": "bad.yaml"}
    result = subprocess.run(
        [*args, *(["--preload"] if preload else [])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 4, output  # gunicorn's APP_LOAD_ERROR
    assert "Traceback" not in output, output
    assert "chaos.rate_limit.requests_per_second: 'lots' is not a number" in output, output
    if not preload:
        assert "App failed to load" in output, output
