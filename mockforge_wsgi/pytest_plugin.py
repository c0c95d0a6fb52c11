"""pytest plugin (loaded by the ``pytest11`` entry point): chaos one fixture away.

Outbound chaos (the app's own calls through urllib3, requests, httpx), without a server:
``@pytest.mark.chaos_outbound({"fault_injection": {...}}, hosts=["payments.internal:443"])``.

Fixtures: ``chaos_server`` (a real ``mockforge serve`` for the session, recording
requests; ``--mockforge-app module:app`` wraps your app), ``chaos`` (a ChaosClient, reset
after each test, applying ``@pytest.mark.chaos(...)``; its verdicts look at the test's own
requests), ``chaos_middleware`` (wraps an in-process WSGI app)::

    @pytest.mark.chaos(scenario="service_instability")
    def test_retries(chaos, chaos_server):
        ...
        chaos.assert_retries(max_attempts=4, honours_retry_after=True)

After each test that used ``chaos``, a line says what was injected, the verdict and the
seed; the terminal shows them under "chaos summary", JUnit XML as properties.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import outbound
from ._headers import TEST_ID_KEY
from .client import ChaosClient
from .config import load_config
from .injections import INJECTION_TYPES
from .middleware import ChaosMiddleware
from .testing import ChaosServer

SUMMARY = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mockforge")
    group.addoption(
        "--mockforge-app", metavar="MODULE:APP", help="wrap this WSGI app in chaos_server"
    )
    group.addoption(
        "--mockforge-no-verdicts",
        action="store_true",
        help="leave the verdict out of each test's chaos summary (it waits until the "
        "workers have written what they recorded)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos(scenario=None, latency_ms=None, http_errors=None, probability=None): "
        "chaos the `chaos` fixture applies before the test",
    )
    config.addinivalue_line(
        "markers",
        "chaos_outbound(settings=None, hosts=()): outbound chaos for the app's own HTTP "
        "calls during the test (what a `chaos:` block holds; hosts: host:port globs), "
        "without a server; restored exactly after it",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """``@pytest.mark.chaos_outbound(...)``: the test body runs inside
    :func:`outbound.chaos`, which puts everything back when it ends."""
    marker = item.get_closest_marker("chaos_outbound")
    if marker is None:
        return (yield)
    settings = marker.args[0] if marker.args else marker.kwargs.get("settings")
    # The test's calls made outside a request carry its node id as their test id.
    token = outbound.CALLER.set({TEST_ID_KEY: item.nodeid})
    try:
        with outbound.chaos(settings, hosts=marker.kwargs.get("hosts", ())):
            return (yield)
    finally:
        outbound.CALLER.reset(token)


@pytest.fixture(scope="session")
def chaos_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The URL of a real ``mockforge serve`` (127.0.0.1, a free port) for the session,
    recording requests (for verdicts) in a temporary SQLite file."""
    recorder_db = tmp_path_factory.mktemp("mockforge") / "recorder.db"
    server = ChaosServer(
        "--recorder-db", str(recorder_db), app=request.config.getoption("--mockforge-app")
    )
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def chaos(chaos_server: str, request: pytest.FixtureRequest) -> Iterator[ChaosClient]:
    """A client for ``chaos_server``; the marker's chaos before, a reset after. Its
    verdicts count the requests since the test started (or those ``chaos.tag()``ged)."""
    client = ChaosClient(chaos_server)
    client.scope = {"since": time.time()}
    marker = request.node.get_closest_marker("chaos")
    if marker is not None:
        _apply_marker(client, **marker.kwargs)
    try:
        yield client
    finally:
        try:
            _summarize(client, request)
        finally:
            client.reset()


def _summarize(client: ChaosClient, request: pytest.FixtureRequest) -> None:
    """The test's chaos in one line (terminal summary) and as JUnit XML properties:
    injections by type, the verdict, the seed that replays the decisions."""
    status = client.status()
    injected = {k: v for k, v in status["counters"].items() if k in INJECTION_TYPES and v}
    seed = status["effective_config"].get("seed")
    wanted = status.get("recorder") and not request.config.getoption("--mockforge-no-verdicts")
    summary = client.verdicts()["summary"] if wanted else None
    node = request.node
    node.user_properties.append(("chaos_injections", json.dumps(injected, sort_keys=True)))
    node.user_properties.append(("chaos_seed", "none" if seed is None else str(seed)))
    if summary is not None:
        node.user_properties.append(("chaos_verdict", json.dumps(summary, sort_keys=True)))
    guard = status.get("guard") or {}
    tripped = f"; guard tripped: {guard['reason']}" if guard.get("tripped") else ""
    if tripped:
        node.user_properties.append(("chaos_guard_tripped", str(guard["reason"])))
    request.config.stash.setdefault(SUMMARY, []).append(
        f"{node.nodeid}: injected {_counts(injected)}; {_verdict_text(summary)}; "
        f"seed {'none (set one to replay)' if seed is None else seed}{tripped}"
    )


def _counts(injected: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(injected.items())) or "nothing"


def _verdict_text(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "no verdict"
    if not summary["calls"]:
        return "no calls"
    honoured = summary["retry_after_honoured_ratio"]
    parts = [
        f"{summary['calls']} calls",
        f"{summary['success_ratio']:.0%} succeeded",
        f"{summary['retries_per_call']:.2f} retries/call",
        "no retry after a Retry-After"
        if honoured is None
        else f"Retry-After honoured {honoured:.0%}",
        f"{summary['unsafe_retries']} unsafe retries",
    ]
    return "verdict: " + ", ".join(parts)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("chaos summary")
        for line in lines:
            terminalreporter.write_line(line)


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
