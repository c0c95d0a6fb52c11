"""The Flask and Django examples, served by the gunicorn line of their docstrings:
wrapping stays one line, and the API comes along."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_blocks import run_lines, shell
from servers import session

pytestmark = pytest.mark.server

EXAMPLES = Path(__file__).parent.parent / "examples"


def _serve_line(name: str, env: dict[str, str]) -> str:
    (line,) = run_lines(EXAMPLES / name)
    assert line.startswith("gunicorn --chdir examples/"), line
    return " ".join(f"{key}={value}" for key, value in env.items()) + " " + line


def test_flask_example(tmp_path: Path) -> None:
    config = tmp_path / "chaos.yaml"
    config.write_text(
        "chaos:\n  enabled: true\n"
        "  fault_injection: {enabled: true, http_errors: [503], http_error_probability: 1.0}\n"
    )
    line = _serve_line("flask_app/app.py", {"MOCKFORGE_CONFIG": str(config)})
    with shell("examples/flask_app/app.py") as running, session() as http:
        running.run(line)
        running.settle()
        assert http.get(running.url + "/api/test", timeout=10).status_code == 503
        assert http.post(running.url + "/api/chaos/disable", timeout=10).status_code == 200
        answer = http.get(running.url + "/api/test", timeout=10)
        assert answer.json()["message"].startswith("Hello")


def test_django_example() -> None:
    env = {
        "MOCKFORGE_CHAOS_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_GLOBAL_LIMIT": "false",
        "MOCKFORGE_CHAOS_RATE_LIMIT_PER_ENDPOINT": "true",
        "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "0.01",
        "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "2",
    }
    line = _serve_line("django_project/mysite/wsgi.py", env)
    with shell("examples/django_project/mysite/wsgi.py") as running, session() as http:
        running.run(line)
        running.settle()
        users = [http.get(running.url + f"/users/{n}", timeout=10) for n in (1, 2, 3)]
        assert [r.status_code for r in users] == [200, 200, 429]  # one bucket for the route
        assert users[0].json() == {"id": 1}
        assert users[2].headers["X-Mockforge-Chaos"] == "rate_limit=per_endpoint"
        assert http.get(running.url + "/api/test", timeout=10).status_code == 200  # its own
        status = http.get(running.url + "/api/chaos/status", timeout=10).json()
        assert status["counters"]["rate_limited"] == 1


def test_the_flask_examples_docstring_runs_what_this_test_runs() -> None:
    """Its run line serves app:app from its folder (as test_flask_example does), and it
    claims no README section that serves something else (the Quick start serves the
    mock API)."""
    import ast

    source = (EXAMPLES / "flask_app" / "app.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    [run] = [line.split() for line in doc.splitlines() if line.strip().startswith("gunicorn")]
    assert run[run.index("--chdir") + 1] == "examples/flask_app" and run[-1] == "app:app"
    assert "Quick start serves this" not in doc
    assert "Wrap your own app" in (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
