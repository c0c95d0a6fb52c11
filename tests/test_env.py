"""The process variables: one reading of each, the same booleans as the settings."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from mockforge_wsgi import ConfigError, _env, load_config
from mockforge_wsgi._kinds import BOOL
from mockforge_wsgi.app import create_app
from mockforge_wsgi.middleware import ChaosMiddleware


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("on", True), ("TRUE", True), (" Yes ", True), ("off", False), ("0", False)],
)
def test_a_flag_reads_as_a_boolean_setting_does(raw: str, expected: bool) -> None:
    environ = {_env.DEBUG_HEADERS: raw}
    assert _env.flag(_env.DEBUG_HEADERS, environ) is expected
    assert BOOL.parse(raw) is expected  # the settings' parser agrees


def test_unset_or_empty_is_false_and_anything_else_names_the_variable() -> None:
    assert _env.flag(_env.METRICS, {}) is False
    assert _env.flag(_env.METRICS, {_env.METRICS: ""}) is False
    with pytest.raises(ValueError, match=r"MOCKFORGE_METRICS: 'maybe' is not a boolean"):
        _env.flag(_env.METRICS, {_env.METRICS: "maybe"})


def test_debug_headers_on_means_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_env.DEBUG_HEADERS, "On")
    config = load_config(environ={}, overrides={"enabled": True, "rate_limit": {"enabled": True}})
    response = Client(ChaosMiddleware(hello, config=config)).get("/")
    assert response.headers["X-Mockforge-Worker"].isdigit()


def test_bad_switches_are_one_clear_error_before_anything_is_built() -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(environ={_env.METRICS: "sometimes", _env.DEBUG_HEADERS: "2"})
    assert caught.value.problems == [
        "MOCKFORGE_METRICS: 'sometimes' is not a boolean (allowed: true/false, yes/no, on/off, "
        "1/0)",
        "MOCKFORGE_DEBUG_HEADERS: '2' is not a boolean (allowed: true/false, yes/no, on/off, 1/0)",
    ]


def test_every_process_variable_is_documented() -> None:
    from pathlib import Path

    document = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    names = [v for k, v in vars(_env).items() if k.isupper() and str(v).startswith("MOCKFORGE_")]
    assert len(names) >= 10
    assert [name for name in names if f"`{name}`" not in document] == []


def test_a_bad_upstream_is_one_clear_error_naming_the_variable() -> None:
    import pytest

    from mockforge_wsgi.app import create_app
    from mockforge_wsgi.config import ConfigError

    with pytest.raises(ConfigError, match=r"MOCKFORGE_UPSTREAM: upstream 'ftp://x'"):
        create_app(environ={_env.UPSTREAM: "ftp://x"})
