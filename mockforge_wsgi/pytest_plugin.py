"""pytest plugin (loaded by the ``pytest11`` entry point): chaos one fixture away.

Fixtures: ``chaos_server`` (a real ``mockforge serve`` for the session; ``--mockforge-app
module:app`` wraps your app), ``chaos`` (a ChaosClient, reset after each test, applying
``@pytest.mark.chaos(...)``), ``chaos_middleware`` (wraps an in-process WSGI app)::

    @pytest.mark.chaos(scenario="service_instability")
    def test_retries(chaos, chaos_server):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .client import ChaosClient
from .config import load_config
from .middleware import ChaosMiddleware
from .testing import ChaosServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mockforge")
    group.addoption(
        "--mockforge-app", metavar="MODULE:APP", help="wrap this WSGI app in chaos_server"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos(scenario=None, latency_ms=None, http_errors=None, probability=None): "
        "chaos the `chaos` fixture applies before the test",
    )


@pytest.fixture(scope="session")
def chaos_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a real ``mockforge serve`` (127.0.0.1, a free port) for the session."""
    server = ChaosServer(app=request.config.getoption("--mockforge-app"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def chaos(chaos_server: str, request: pytest.FixtureRequest) -> Iterator[ChaosClient]:
    """A client for ``chaos_server``; the marker's chaos before, a reset after."""
    client = ChaosClient(chaos_server)
    marker = request.node.get_closest_marker("chaos")
    if marker is not None:
        _apply_marker(client, **marker.kwargs)
    try:
        yield client
    finally:
        client.reset()


def _apply_marker(
    client: ChaosClient,
    scenario: str | None = None,
    latency_ms: float | None = None,
    http_errors: list[int] | None = None,
    probability: float | None = None,
) -> None:
    client.enable()
    if scenario is not None:
        client.start_scenario(scenario)
    if latency_ms is not None:
        client.update_section("latency", enabled=True, fixed_delay_ms=latency_ms)
    if http_errors is not None or probability is not None:
        faults: dict[str, Any] = {"enabled": True}
        if http_errors is not None:
            faults["http_errors"] = http_errors
        faults["http_error_probability"] = 1.0 if probability is None else probability
        client.update_section("faults", **faults)


@pytest.fixture
def chaos_middleware() -> Callable[..., ChaosMiddleware]:
    """``wrap(app, **config)``: the app in a ChaosMiddleware, in this process."""

    def wrap(app: Any, **config: Any) -> ChaosMiddleware:
        return ChaosMiddleware(app, config=load_config(environ={}, overrides=config))

    return wrap
