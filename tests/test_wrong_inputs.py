"""Every wrong input to the ``mockforge`` command and its environment is one line naming
the input and the fix, exit status 2 (usage) or 1 (at run time), never a traceback.

The environment and store cases run the installed ``mockforge`` console script in a
subprocess, as a user would; the rest run in process through click's CliRunner (the same
code, without a process to start). A missing extra is simulated in the subprocess by a
``sitecustomize`` module, first on PYTHONPATH, that puts a finder at the head of
``sys.meta_path`` refusing the extra's top-level modules with ModuleNotFoundError: that
is what ``import redis`` raises when redis is not installed. (``importlib.util.find_spec``
then raises where an absent module would give None; ``_extras.installed`` treats both
as missing, and ``test_a_module_that_is_really_absent_is_a_missing_extra`` checks the
None path with modules that do not exist.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from servers import free_port, werkzeug_server

from mockforge_wsgi import _extras
from mockforge_wsgi.app import create_app
from mockforge_wsgi.cli import main
from mockforge_wsgi.config import ConfigError
from mockforge_wsgi.state import EmbeddedStore, MemoryStore, store_from_url

WORKTREE = Path(__file__).resolve().parent.parent
# The script installed beside this interpreter (as tests/test_serve.py finds it): on PATH
# there may be a version manager's shim first (pyenv's, a shell script that picks a
# Python on every run: ~0.2 s a case here), or another Python's script.
MOCKFORGE = shutil.which("mockforge", path=str(Path(sys.executable).parent)) or shutil.which(
    "mockforge"
)
USAGE, RUNTIME = 2, 1

BLOCKER = """
import sys

BLOCKED = {blocked!r}


class _Absent:
    \"\"\"The extras these tests pretend are not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Absent())
"""


def _closed_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    return free_port()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def _one_line_naming(output: str, *fragments: str) -> None:
    """No traceback, and one line that holds every fragment (the input and the fix)."""
    assert "Traceback" not in output, output
    assert len(output.splitlines()) <= 6, output  # click's usage lines, at most
    lines = [line for line in output.splitlines() if all(f in line for f in fragments)]
    assert len(lines) == 1, (fragments, output)


def _run(
    tmp_path: Path, args: list[str], env: dict[str, str], absent: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The installed console script, in ``tmp_path``, with this worktree's package (and
    ``absent`` top-level modules made unimportable)."""
    assert MOCKFORGE is not None, "the mockforge console script is not installed"
    paths = [str(WORKTREE)]
    if absent:
        blocker = tmp_path / "absent"
        blocker.mkdir(exist_ok=True)
        (blocker / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(absent)))
        paths.insert(0, str(blocker))
    child = {k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")}
    child.update(env, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run(
        [MOCKFORGE, *args],
        env=child,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REDIS_FIX = "pip install 'mockforge-wsgi[redis]'"
STORE_FORMS = (
    "expected memory://, file:///path/to/directory, redis://host:port/db, "
    "redis+cluster://host:port[,host:port...]/ or "
    "redis+sentinel://host:port[,host:port...]/service_name[/db]"
)

# (environment, arguments, modules made absent, exit status, what the one line holds)
PROCESS_CASES = [
    pytest.param(
        {"MOCKFORGE_STORE": "bogus://x"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'bogus://x': unknown store scheme 'bogus'", STORE_FORMS],
        id="store-unknown-scheme",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "localhost:6379"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'localhost:6379'", "did you mean redis://localhost:6379?"],
        id="store-host-port-without-scheme",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "memory"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'memory' is not a store URL", STORE_FORMS],
        id="store-a-bare-word",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "file://"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'file://'", "did you mean file:///"],
        id="store-file-without-a-directory",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "file://relative/dir"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'file://relative/dir'", "three slashes", "/relative/dir?"],
        id="store-file-relative",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "file:///dev/null"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'file:///dev/null': cannot open the embedded store"],
        id="store-file-not-a-directory",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "redis://localhost:abc/0"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'redis://localhost:abc/0'", "Port", STORE_FORMS],
        id="store-redis-port-not-a-number",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "redis://localhost:99999/0"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'redis://localhost:99999/0'", "out of range", STORE_FORMS],
        id="store-redis-port-out-of-range",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "redis://127.0.0.1:6379/0"}, ["serve"], ("redis",), USAGE,
        ["MOCKFORGE_STORE", "needs the `redis` extra", REDIS_FIX],
        id="store-redis-without-the-extra",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "rediss://127.0.0.1:6379/0"}, ["serve"], ("redis",), USAGE,
        ["MOCKFORGE_STORE", REDIS_FIX], id="store-rediss-without-the-extra",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "unix:///tmp/redis.sock"}, ["serve"], ("redis",), USAGE,
        ["MOCKFORGE_STORE", REDIS_FIX], id="store-unix-without-the-extra",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "redis+cluster://127.0.0.1:7000/"}, ["serve"], ("redis",), USAGE,
        ["MOCKFORGE_STORE", REDIS_FIX], id="store-cluster-without-the-extra",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "redis+sentinel://127.0.0.1:26379"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'redis+sentinel://127.0.0.1:26379': a Sentinel URL names the "
         "service the sentinels monitor", "redis+sentinel://localhost:26379/mymaster/0"],
        id="store-sentinel-without-a-service",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "redis+cluster://127.0.0.1:7000/3"}, ["serve"], (), USAGE,
        ["MOCKFORGE_STORE: 'redis+cluster://127.0.0.1:7000/3': a Redis Cluster has one "
         "database, 0"],
        id="store-cluster-with-a-database",
    ),
    pytest.param(
        {"MOCKFORGE_STORE": "redis://127.0.0.1:6379/0"}, ["validate", "chaos.yaml"],
        ("redis",), RUNTIME, ["MOCKFORGE_STORE", REDIS_FIX],
        id="validate-store-redis-without-the-extra",
    ),
    pytest.param(
        {}, ["serve", "--tracing"], ("opentelemetry",), USAGE,
        ["--tracing needs the `otel` extra", "pip install 'mockforge-wsgi[otel]'"],
        id="tracing-without-the-extra",
    ),
    pytest.param(
        {}, ["serve", "--otlp-endpoint", "http://127.0.0.1:4318"], ("opentelemetry",), USAGE,
        ["--otlp-endpoint needs the `otel` extra", "pip install 'mockforge-wsgi[otel]'"],
        id="otlp-endpoint-without-the-extra",
    ),
    pytest.param(
        {"MOCKFORGE_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["serve"], ("opentelemetry",),
        USAGE,
        ["MOCKFORGE_OTLP_ENDPOINT needs the `otel` extra", "pip install 'mockforge-wsgi[otel]'"],
        id="otlp-variable-without-the-extra",
    ),
    pytest.param(
        {}, ["serve", "--metrics"], ("prometheus_client",), USAGE,
        ["--metrics needs the `metrics` extra", "pip install 'mockforge-wsgi[metrics]'"],
        id="metrics-without-the-extra",
    ),
    pytest.param(
        {"MOCKFORGE_RECORDER_DB": "/nonexistent/recorder.db"}, ["serve"], (), USAGE,
        ["MOCKFORGE_RECORDER_DB: '/nonexistent/recorder.db': cannot open it as the recorder's"],
        id="recorder-variable-in-a-missing-directory",
    ),
    pytest.param(
        {"MOCKFORGE_CHAOS_STATE_AT_START": "Adopt"}, ["serve"], (), USAGE,
        ["chaos.state_at_start: 'Adopt' is not one of auto, adopt, startup",
         "(from MOCKFORGE_CHAOS_STATE_AT_START)"],
        id="state-at-start-variable",
    ),
    pytest.param(
        {"MOCKFORGE_UPSTREAM": "notaurl"}, ["serve"], (), USAGE,
        ["MOCKFORGE_UPSTREAM=notaurl", "did you mean http://notaurl?"],
        id="upstream-variable-without-scheme",
    ),
    pytest.param(
        {"MOCKFORGE_URL": "localhost:9140"}, ["chaos", "status"], (), USAGE,
        ["MOCKFORGE_URL=localhost:9140", "did you mean http://localhost:9140?"],
        id="url-variable-without-scheme",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("env", "args", "absent", "status", "fragments"), PROCESS_CASES)
def test_a_wrong_environment_is_one_line_from_the_console_script(
    tmp_path: Path,
    env: dict[str, str],
    args: list[str],
    absent: tuple[str, ...],
    status: int,
    fragments: list[str],
) -> None:
    (tmp_path / "chaos.yaml").write_text("chaos:\n  enabled: true\n")
    result = _run(tmp_path, [*args, "--port", "0"] if args[0] == "serve" else args, env, absent)
    assert result.returncode == status, result.stderr
    _one_line_naming(result.stderr, *fragments)
    assert not list(tmp_path.glob("*.db")), "nothing was started"


def test_the_blocker_makes_only_the_named_extra_absent(tmp_path: Path) -> None:
    """The simulation is what the tests above rely on: with redis made absent, the
    server starts on the other extras as usual (here: a clean --help)."""
    result = _run(tmp_path, ["serve", "--help"], {}, ("redis",))
    assert result.returncode == 0 and "--tracing" in result.stdout, result.stderr


def test_a_module_that_is_really_absent_is_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(_extras.EXTRAS, "otel", ("mockforge_no_such_module",))
    assert not _extras.installed("otel")  # find_spec gives None
    monkeypatch.setitem(_extras.EXTRAS, "otel", ("mockforge_no_such_module.sdk",))
    assert not _extras.installed("otel")  # find_spec raises: its parent is absent
    with pytest.raises(_extras.MissingExtra, match=r"pip install 'mockforge-wsgi\[otel\]'"):
        _extras.require("otel", "--tracing")
    assert _extras.installed("metrics")  # the dev environment has every extra


def test_a_variable_asking_for_a_missing_extra_is_a_config_error_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``gunicorn mockforge_wsgi.app:app`` reads MOCKFORGE_METRICS: one ConfigError."""
    monkeypatch.setitem(_extras.EXTRAS, "metrics", ("mockforge_no_such_module",))
    with pytest.raises(ConfigError) as raised:
        create_app(environ={"MOCKFORGE_METRICS": "1"})
    assert raised.value.problems == [
        "MOCKFORGE_METRICS needs the `metrics` extra (mockforge_no_such_module): "
        "pip install 'mockforge-wsgi[metrics]'"
    ]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        pytest.param("memory://", MemoryStore, id="memory"),
        pytest.param("file:///{tmp}/store", EmbeddedStore, id="file"),
        pytest.param("file://localhost/{tmp}/store", EmbeddedStore, id="file-localhost"),
        pytest.param("redis://127.0.0.1:6379/0", "RedisStore", id="redis"),
        pytest.param("rediss://127.0.0.1:6380/0", "RedisStore", id="rediss"),
        pytest.param("unix:///tmp/redis.sock?db=0", "RedisStore", id="unix"),
    ],
)
def test_every_store_url_form_opens_its_store(tmp_path: Path, url: str, kind: Any) -> None:
    """The forms the errors above point to (Redis is not contacted until used)."""
    store = store_from_url(url.format(tmp=str(tmp_path).lstrip("/")))
    assert type(store).__name__ == (kind if isinstance(kind, str) else kind.__name__)


# -- in process: flags, files and servers ------------------------------------------------


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(main, args, env={"MOCKFORGE_ADMIN_TOKEN": None, **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


CLIENT_VERBS = [
    ["chaos", "status"],
    ["chaos", "enable"],
    ["chaos", "disable"],
    ["chaos", "reset"],
    ["chaos", "scenario", "slow_backend"],
    ["chaos", "stop"],
    ["scenarios"],
]


@pytest.mark.parametrize("verb", [pytest.param(v, id=" ".join(v)) for v in CLIENT_VERBS])
@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        pytest.param(
            "notaurl", ["'notaurl' has no scheme", "did you mean http://notaurl?"], id="bare-word"
        ),
        pytest.param(
            "localhost:9140",
            ["'localhost:9140' has no scheme", "did you mean http://localhost:9140?"],
            id="host-port",
        ),
        pytest.param(
            "http://127.0.0.1:abc", ["the port is not a number in 0-65535"], id="port-not-a-number"
        ),
        pytest.param(
            "http://127.0.0.1:99999",
            ["the port is not a number in 0-65535"],
            id="port-out-of-range",
        ),
        pytest.param("ftp://127.0.0.1", ["expected an http:// or https:// URL"], id="ftp"),
        pytest.param("http://", ["names no host; expected http://host:port"], id="no-host"),
    ],
)
def test_a_url_that_is_not_a_server_is_a_usage_error(
    verb: list[str], url: str, fragments: list[str]
) -> None:
    result = _invoke([*verb, "--url", url])
    assert result.exit_code == USAGE, result.output
    _one_line_naming(result.output, "'--url'", *fragments)


@pytest.mark.parametrize("verb", [pytest.param(v, id=" ".join(v)) for v in CLIENT_VERBS])
def test_an_unreachable_server_is_a_runtime_error_naming_the_url(verb: list[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = _invoke([*verb, "--url", url])
    assert result.exit_code == RUNTIME, result.output
    _one_line_naming(result.output, f"cannot reach {url}", "mockforge serve", "--url")


def test_a_busy_port_names_the_flag_that_asked_for_it(busy_port: int) -> None:
    for flag in ("--admin-port", "--metrics-port"):
        result = _invoke(["serve", "--port", "0", flag, str(busy_port)], {})
        assert result.exit_code == USAGE, result.output
        _one_line_naming(result.output, f"{flag} {busy_port}: cannot bind", f"another {flag}")
    result = _invoke(["serve", "--port", str(busy_port)], {})
    _one_line_naming(result.output, f"--port {busy_port}: cannot bind")
    port = _closed_port()
    result = _invoke(["serve", "--port", str(port), "--metrics-port", str(port)], {})
    assert result.exit_code == USAGE, result.output
    _one_line_naming(result.output, f"--metrics-port {port}: the same port as --port")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            ["serve", "--upstream", "notaurl"],
            ["'--upstream'", "did you mean http://notaurl?"],
            id="upstream-flag",
        ),
        pytest.param(
            ["serve", "--upstream", "ftp://x"], ["'--upstream'", "http://"], id="upstream-ftp"
        ),
        pytest.param(
            ["serve", "--state-at-start", "never"],
            [
                "chaos.state_at_start: 'never' is not one of auto, adopt, startup",
                "(from --state-at-start)",
            ],
            id="state-at-start-flag",
        ),
        pytest.param(
            ["serve", "--otlp-endpoint", "localhost:4318"],
            ["'--otlp-endpoint'", "did you mean http://localhost:4318?"],
            id="otlp-endpoint-without-scheme",
        ),
        pytest.param(
            ["serve", "--recorder-db", "chaos.yaml"],
            ["--recorder-db: '", "chaos.yaml': cannot open it as the recorder's SQLite database"],
            id="serve-recorder-db-not-sqlite",
        ),
        pytest.param(
            ["serve", "--config", "bin.yaml"],
            ["bin.yaml: not a YAML file (not UTF-8 text: byte 0)"],
            id="serve-config-not-text",
        ),
        pytest.param(
            ["validate", "bin.yaml"],
            ["bin.yaml: not a YAML file (not UTF-8 text: byte 0)"],
            id="validate-binary",
        ),
        pytest.param(
            ["report", "--db", "chaos.yaml"],
            ["--db", "'chaos.yaml' is not a SQLite database", "mockforge serve --recorder-db"],
            id="report-db-yaml",
        ),
        pytest.param(
            ["report", "--db", "other.db"],
            ["--db", "'other.db' holds no recorded requests", "--recorder-db"],
            id="report-db-another-sqlite-file",
        ),
        pytest.param(
            ["report", "--db", "chaos.db", "--out", "no/such/dir/report.html"],
            ["--out no/such/dir/report.html: cannot write it"],
            id="report-out-unwritable",
        ),
    ],
)
def test_a_wrong_flag_or_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], fragments: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("chaos.yaml").write_text("chaos:\n  enabled: true\n")
    Path("bin.yaml").write_bytes(b"\xff\xfe\x00chaos")
    with sqlite3.connect("other.db") as other:
        other.execute("CREATE TABLE notes (text)")
    other.close()
    from mockforge_wsgi.recorder import Recorder

    Recorder("chaos.db")
    result = _invoke(args, {})
    usage = args[0] == "serve" or "--db" in fragments
    expected = USAGE if usage else RUNTIME
    assert result.exit_code == expected, result.output
    _one_line_naming(result.output, *fragments)
    if args[0] == "report":
        with sqlite3.connect("other.db") as other:  # the file given was only looked at
            assert [r[0] for r in other.execute("SELECT name FROM sqlite_master")] == ["notes"]
        other.close()


def _not_mockforge(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"<html>some other service</html>"]


def _other_json(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"status": "ok"}']


@pytest.mark.server
@pytest.mark.parametrize("app", [_not_mockforge, _other_json], ids=["html", "other-json"])
@pytest.mark.parametrize("verb", [["chaos", "status"], ["scenarios"]], ids=" ".join)
def test_a_server_that_is_not_mockforge_is_one_line(app: Any, verb: list[str]) -> None:
    with werkzeug_server(app, ready_path="/") as server:
        result = _invoke([*verb, "--url", server.url])
    if app is _other_json and verb == ["chaos", "status"]:
        assert result.exit_code == 0  # any JSON object is a status it can show
        return
    assert result.exit_code == RUNTIME, result.output
    _one_line_naming(result.output, "not a mockforge answer", f"--url {server.url}")


@pytest.mark.server
def test_the_token_comes_from_the_flag_or_the_environment_and_a_401_names_both() -> None:
    with werkzeug_server(create_app(admin_token="s3cret", environ={})) as server:
        refused = _invoke(["chaos", "enable", "--url", server.url])
        assert refused.exit_code == RUNTIME, refused.output
        _one_line_naming(refused.output, "401", "--token or MOCKFORGE_ADMIN_TOKEN")
        wrong = _invoke(["chaos", "enable", "--url", server.url, "--token", "nope"])
        _one_line_naming(wrong.output, "401", "--token or MOCKFORGE_ADMIN_TOKEN")
        by_flag = _invoke(["chaos", "enable", "--url", server.url, "--token", "s3cret"])
        assert by_flag.exit_code == 0, by_flag.output
        assert json.loads(by_flag.output)["enabled"] is True
        by_env = _invoke(
            ["chaos", "disable", "--url", server.url], {"MOCKFORGE_ADMIN_TOKEN": "s3cret"}
        )
        assert by_env.exit_code == 0, by_env.output
        assert json.loads(by_env.output)["enabled"] is False
        unknown = _invoke(["chaos", "scenario", "nope", "--url", server.url, "--token", "s3cret"])
        assert unknown.exit_code == RUNTIME, unknown.output
        _one_line_naming(unknown.output, "POST", "/scenarios/nope", "404")
