"""``mockforge serve`` as a user runs it: the installed console script (not ``python -m``,
which puts the current directory on sys.path by itself), ``--app`` imported as gunicorn
imports it, and the logs it writes (startup block, access log, one line per injection)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from servers import _stop, gunicorn_server, once_counted, session
from werkzeug.test import Client, EnvironBuilder

from mockforge_wsgi import load_config
from mockforge_wsgi.app import create_app
from mockforge_wsgi.cli import ACCESS_LOG_FORMAT, main
from mockforge_wsgi.middleware import ChaosMiddleware

EXAMPLES = Path(__file__).parent.parent / "examples"
LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")
# Every request fails with a 503 until chaos is turned off: easy to tell apart.
ALWAYS_503 = ("--chaos", "--chaos-http-errors", "503", "--chaos-http-error-probability", "1")

FLASK_APP = """\
from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello():
    return "hello from {name}"
"""


class Served:
    """A running ``mockforge serve``: its URL, and what it wrote to stdout and stderr."""

    def __init__(self, url: str, out: Path, err: Path) -> None:
        self.url, self._out, self._err = url, out, err

    def stdout(self) -> str:
        return self._out.read_text(errors="replace")

    def stderr(self) -> str:
        return self._err.read_text(errors="replace")


@contextlib.contextmanager
def console_serve(cwd: Path, logs: Path, *args: str) -> Iterator[Served]:
    """The installed ``mockforge`` script, ``serve --port 0 ARGS``, run in ``cwd``."""
    script = shutil.which("mockforge", path=str(Path(sys.executable).parent))
    script = script or shutil.which("mockforge")
    assert script is not None, "the mockforge console script is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")}
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"out-{time.monotonic_ns()}.log", logs / f"err-{time.monotonic_ns()}.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [script, "serve", "--port", "0", *args], cwd=cwd, env=env, stdout=stdout, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            found = LISTENING.search(err.read_text(errors="replace"))
            if found:
                break
            assert proc.poll() is None, f"exited {proc.returncode}:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"did not start:\n{err.read_text()}"
            time.sleep(0.05)
        served = Served(found.group(1), out, err)
        with session() as http:
            while True:  # the workers booted: the management API answers
                with contextlib.suppress(OSError):
                    if http.get(served.url + "/api/chaos/status", timeout=5).ok:
                        break
                assert proc.poll() is None, f"exited {proc.returncode}:\n{served.stderr()}"
                assert time.monotonic() < deadline, f"not ready:\n{served.stderr()}"
                time.sleep(0.05)
        yield served
    finally:
        _stop(proc)


def _text(path: Path) -> str:
    """The file's text, or "" while it does not exist yet."""
    return path.read_text() if path.exists() else ""


def _lines(text: str, part: str) -> int:
    """How many whole lines of ``text`` (its last one ended) hold ``part``."""
    return sum(part in line for line in text.splitlines(keepends=True) if line.endswith("\n"))


def assert_wrapped(url: str, path: str, answer: str) -> None:
    """Chaos applies to the wrapped app (a 503), the management API turns it off, then
    the app itself answers, with no chaos from anywhere (an inner ChaosMiddleware too)."""
    with session() as http:
        failed = http.get(url + path, timeout=10)
        assert failed.status_code == 503, failed.text
        assert failed.headers["X-Mockforge-Chaos"] == "fault=http_503"
        assert http.post(url + "/api/chaos/disable", timeout=10).status_code == 200
        for _ in range(10):  # the examples' own chaos.yaml: 80% latency, if it applied
            answered = http.get(url + path, timeout=10)
            assert answered.status_code == 200, answered.text
            assert answer in answered.text
            assert "X-Mockforge-Chaos" not in answered.headers


# -- --app as gunicorn resolves it -----------------------------------------------------


@pytest.mark.server
def test_app_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mf_cwd_app.py").write_text(FLASK_APP.format(name="the cwd app"))
    args = ("--app", "mf_cwd_app:app", "--access-log", "off", *ALWAYS_503)
    with console_serve(tmp_path, tmp_path / "logs", *args) as served:
        assert_wrapped(served.url, "/hello", "hello from the cwd app")
        time.sleep(0.3)  # an access line would be written by now
    assert "GET /hello" not in served.stdout() + served.stderr()  # --access-log off


@pytest.mark.server
def test_chdir_and_pythonpath(tmp_path: Path) -> None:
    """--chdir first, then --pythonpath relative to it (gunicorn's order); --config and
    --access-log stay relative to where the command runs."""
    (tmp_path / "site").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mf_greeting.py").write_text('GREETING = "greetings from lib"\n')
    (tmp_path / "site" / "mf_site_app.py").write_text(
        "from mf_greeting import GREETING\n" + FLASK_APP.replace('"hello from {name}"', "GREETING")
    )
    (tmp_path / "chaos.yaml").write_text("chaos:\n  seed: 7\n")
    args = ("--chdir", "site", "--pythonpath", "../lib", "--app", "mf_site_app:app")
    args += ("--config", "chaos.yaml", "--access-log", "access.log", *ALWAYS_503)
    with console_serve(tmp_path, tmp_path / "logs", *args) as served, session() as http:
        assert_wrapped(served.url, "/hello", "greetings from lib")
        status = http.get(served.url + "/api/chaos/status", timeout=10).json()
        assert status["effective_config"]["seed"] == 7  # the --config file was read
        # gunicorn writes an access line once the answer is out: a moment after.
        access = once_counted(
            lambda: _text(tmp_path / "access.log"), lambda text: _lines(text, "GET /hello ") >= 11
        )
    assert re.search(r'" 503 .* request_id=[0-9a-f]{16} chaos="fault=http_503"\n', access)
    calm = [line for line in access.splitlines() if '"GET /hello HTTP/1.1" 200 ' in line]
    assert len(calm) == 10, access
    assert all(line.endswith('request_id=- chaos="-"') for line in calm), access
    assert "GET /hello" not in served.stdout()  # a file asked for: not stdout


@pytest.mark.server
def test_flask_example_as_documented(tmp_path: Path) -> None:
    """``cd examples/flask_app && mockforge serve --app app:app``: the example wraps
    itself in chaos (chaos.yaml: latency 80%), and steps aside for serve's."""
    with console_serve(EXAMPLES / "flask_app", tmp_path, "--app", "app:app", *ALWAYS_503) as s:
        assert_wrapped(s.url, "/api/test", "Hello from the example app")


@pytest.mark.server
def test_django_example_as_documented(tmp_path: Path) -> None:
    """``cd examples/django_project && mockforge serve --app mysite.wsgi:application``."""
    args = ("--app", "mysite.wsgi:application", *ALWAYS_503)
    with console_serve(EXAMPLES / "django_project", tmp_path, *args) as served:
        assert_wrapped(served.url, "/users/1", '{"id": 1}')


@pytest.mark.parametrize("shape", ["django", "flask"])
def test_an_app_that_wraps_itself_gets_one_chaos(shape: str) -> None:
    """serve's ChaosMiddleware replaces the app's own (its route_for kept), which would
    inject too, under a management API serve's hides."""
    faults = {"enabled": True, "http_errors": [502], "http_error_probability": 1.0}
    always_502 = load_config(environ={}, overrides={"enabled": True, "fault_injection": faults})
    flask_app = Flask("mf_own_chaos")
    flask_app.get("/users/<int:n>")(lambda n: {"id": n})
    if shape == "django":
        app: Any = ChaosMiddleware(flask_app, config=always_502, route_for=lambda e: "users")
    else:
        app = flask_app
        app.wsgi_app = ChaosMiddleware(app.wsgi_app, config=always_502)
    served = create_app(wrap=app, environ={}, metrics=False)
    client = Client(served)
    assert client.get("/users/1").json == {"id": 1}
    assert client.get("/api/chaos/status").json["enabled"] is False  # serve's, in force
    expected = "users" if shape == "django" else "/users/<int:n>"
    assert served.route_for(EnvironBuilder(path="/users/1").get_environ()) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--chdir", "no-such-dir"],
            "--chdir no-such-dir: can't chdir to 'no-such-dir': no such directory",
            id="chdir-missing",
        ),
        pytest.param(
            ["--chdir", "setup.cfg"],
            "--chdir setup.cfg: can't chdir to 'setup.cfg': not a directory",
            id="chdir-a-file",
        ),
        pytest.param(
            ["--pythonpath", "tests,no-such-dir"],
            "--pythonpath tests,no-such-dir: 'no-such-dir' does not exist",
            id="pythonpath-missing",
        ),
        pytest.param(
            ["--access-log", "no-such-dir/access.log"],
            "--access-log no-such-dir/access.log: cannot write it (No such file or directory)",
            id="access-log-unwritable",
        ),
    ],
)
def test_bad_paths_exit_2_before_anything_starts(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).parent.parent)
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = CliRunner().invoke(main, ["serve", "--port", "1", *args], env={})
    assert result.exit_code == 2, result.output
    assert message in result.output


# -- the logs -------------------------------------------------------------------------


@pytest.mark.server
def test_the_logs_a_user_reads(tmp_path: Path) -> None:
    """Startup block (every endpoint), the access log on stdout with the request id and
    the annotation, and one INFO line per injection on stderr, same request id."""
    db = tmp_path / "chaos.db"
    args = (*ALWAYS_503, "--chaos-latency-ms", "5", "--metrics", "--admin-port", "0")
    args += ("--recorder", "--recorder-db", str(db))
    with console_serve(tmp_path, tmp_path / "logs", *args) as served, session() as http:
        failed = http.get(served.url + "/api/test", timeout=10)
        http.post(served.url + "/api/chaos/disable", timeout=10)
        http.get(served.url + "/api/test?calm=1", timeout=10)
        # gunicorn writes the access line once the answer is out: a moment after.
        out = once_counted(served.stdout, lambda text: _lines(text, "GET /api/test") >= 2)
        err = served.stderr()
    request_id = failed.headers["X-Mockforge-Request-Id"]

    admin = re.search(r"mockforge: admin listener at (http://127\.0\.0\.1:\d+)/api/chaos", err)
    assert admin is not None, err
    for line in (
        "mockforge: serving the mock API (1 gthread worker(s), store file://",
        f"chaos on) on {served.url}",
        f"mockforge: management API {served.url}/api/chaos (dashboard {served.url}/api/chaos/ui)",
        f"mockforge: metrics {served.url}/metrics",
        f"and {admin.group(1)}/metrics",
        f"mockforge: recorder database {db}",
        "mockforge: access log stdout",
        "mockforge: started the chaos state from this server's startup config "
        "(a store of its own)",
    ):
        assert line in err, (line, err)

    injected = [line for line in err.splitlines() if "chaos injected" in line]
    assert [line.split("] ", 3)[-1] for line in injected] == [
        f"chaos injected request_id={request_id} type=latency detail= method=GET "
        "path=/api/test delay_ms=5",
        f"chaos injected request_id={request_id} type=http_error detail=503 method=GET "
        "path=/api/test",
    ]
    assert all("[INFO]" in line for line in injected)

    access = [line for line in out.splitlines() if "GET /api/test" in line]
    assert len(access) == 2, out
    assert '"GET /api/test HTTP/1.1" 503 ' in access[0]
    assert access[0].endswith(f'request_id={request_id} chaos="latency=5ms, fault=http_503"')
    assert '"GET /api/test?calm=1 HTTP/1.1" 200 ' in access[1]
    # no chaos, but recorded: the recorder's id, the one in its row
    calm = re.search(r'request_id=([0-9a-f]{16}) chaos="-"$', access[1])
    assert calm is not None and calm.group(1) != request_id, access[1]


@pytest.mark.server
def test_plain_gunicorn_gets_the_same_logs_as_documented(tmp_path: Path) -> None:
    """docs/observability.md: --logger-class GunicornLogger and our access format."""
    args = (
        "--logger-class",
        "mockforge_wsgi.gunicorn_server.GunicornLogger",
        "--access-logfile",
        "-",
    )
    args += ("--access-logformat", ACCESS_LOG_FORMAT)
    env = {
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_ENABLED": "true",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_HTTP_ERRORS": "503",
        "MOCKFORGE_CHAOS_FAULT_INJECTION_HTTP_ERROR_PROBABILITY": "1.0",
    }
    with (
        gunicorn_server(tmp_path, app="mockforge_wsgi.app:app", env=env, extra_args=args) as s,
        session() as http,
    ):
        request_id = http.get(s.url + "/api/test", timeout=10).headers["X-Mockforge-Request-Id"]
        # gunicorn writes the access line once the answer is out: a moment after.
        log = once_counted(s.log, lambda text: _lines(text, '"GET /api/test HTTP/1.1" 503 ') >= 1)
    assert f"[INFO] chaos injected request_id={request_id} type=http_error detail=503" in log
    access = [line for line in log.splitlines() if '"GET /api/test HTTP/1.1" 503 ' in line]
    assert access, log
    assert access[0].endswith(f'request_id={request_id} chaos="fault=http_503"'), log
