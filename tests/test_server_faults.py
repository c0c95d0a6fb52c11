"""Faults and latency as a real client sees them, through real servers."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from servers import assert_clean_log, gunicorn_server, session, werkzeug_server
from wsgi_apps import base_app

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware

pytestmark = pytest.mark.server

WORKERS = [pytest.param("sync", id="sync"), pytest.param("gthread", id="gthread")]


def chaos_env(**settings: str) -> dict[str, str]:
    env = {"MOCKFORGE_CHAOS_ENABLED": "true"}
    env.update({f"MOCKFORGE_CHAOS_{key.upper()}": value for key, value in settings.items()})
    return env


@pytest.mark.alone
def test_fixed_delay_lands_within_5ms_at_p99(tmp_path: Path) -> None:
    """401 requests with a 20 ms delay: each takes >= 20 ms, and what the delay adds to
    the server's own answer is within 5 ms of 20 at p99.

    A rule puts the delay on ``/delayed`` only; the client (tests/latency_probe.py:
    http.client over one keep-alive connection, in a fresh interpreter) asks ``/delayed``
    and ``/plain`` in turn, so the server's own time (gthread's hand-off, the app, the
    loopback: ~1 ms here, more on a slower machine) is timed in the same moments and
    taken out: the delay's own time is a delayed request's time less the median of the
    undelayed ones. The test runs with no other test at the same time (``alone``). The
    VM stalls a process for 5-8 ms now and then, which has nothing to do with the delay:
    of 401 timings (the connection's first request aside) the p99 (inclusive method) is
    the value at rank 0.99 x 400 = 396, exactly the fifth largest, so four stalled
    requests cannot move it. A timer's error does not grow with the delay, the stalls
    come with time: 20 ms rather than 50 ms is the same check in 9 s rather than 21 s,
    with fewer stalls to meet. The failure message counts the delays above the bound and
    shows the largest.
    """
    delay_ms = 20
    rule = {
        "match": {"path": "/delayed"},
        "latency": {"enabled": True, "fixed_delay_ms": delay_ms},
    }
    env = {"MOCKFORGE_CHAOS_ENABLED": "true", "MOCKFORGE_CHAOS_RULES": json.dumps([rule])}
    extra = ("--worker-tmp-dir", "/dev/shm") if Path("/dev/shm").is_dir() else ()
    with gunicorn_server(tmp_path, env=env, worker_class="gthread", extra_args=extra) as server:
        probe = Path(__file__).with_name("latency_probe.py")
        address = server.url.split("//")[1]
        output = subprocess.run(
            [sys.executable, str(probe), address, "402", "/delayed", "/plain"],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
    measured = json.loads(output)
    assert measured["annotations"] == {"/delayed": [f"latency={delay_ms}ms"], "/plain": ["None"]}
    delayed_ms = measured["ms"]["/delayed"][1:]  # the first request opens the connection
    own_ms = statistics.median(measured["ms"]["/plain"])
    assert len(delayed_ms) == 401
    assert min(delayed_ms) >= delay_ms
    added_ms = [ms - own_ms for ms in delayed_ms]
    p99 = statistics.quantiles(added_ms, n=100, method="inclusive")[98]
    assert p99 == pytest.approx(sorted(added_ms)[-5])  # the arithmetic above
    over = [round(ms, 2) for ms in sorted(added_ms) if ms > delay_ms + 5.0]
    assert p99 <= delay_ms + 5.0, (
        f"the server's own answer: {own_ms:.2f} ms; {len(over)} delays over "
        f"{delay_ms + 5} ms, the largest: {over[-10:]}"
    )


@pytest.mark.parametrize("worker_class", WORKERS)
def test_http_error_fault(tmp_path: Path, worker_class: str) -> None:
    env = chaos_env(
        fault_injection_enabled="true",
        fault_injection_http_errors="503",
        fault_injection_http_error_probability="1",
    )
    with (
        gunicorn_server(tmp_path, env=env, worker_class=worker_class) as server,
        session() as http,
    ):
        response = http.post(server.url + "/echo", data=b"y" * 100_000, timeout=10)
        assert response.status_code == 503
        assert response.headers["X-Mockforge-Chaos"] == "fault=http_503"
        assert response.json()["fault"] == "http_503"
        # The connection is still good for the next request (the body was drained).
        assert http.get(server.url + "/api/chaos/status", timeout=10).status_code == 200
    assert_clean_log(server)


@pytest.mark.parametrize("worker_class", WORKERS)
def test_timeout_fault_holds_then_504(tmp_path: Path, worker_class: str) -> None:
    env = chaos_env(
        fault_injection_enabled="true",
        fault_injection_timeout_probability="1",
        fault_injection_timeout_ms="300",
    )
    with (
        gunicorn_server(tmp_path, env=env, worker_class=worker_class) as server,
        session() as http,
    ):
        start = time.perf_counter()
        response = http.get(server.url + "/hello", timeout=10)
        held = time.perf_counter() - start
    assert response.status_code == 504
    assert response.headers["X-Mockforge-Chaos"] == "fault=timeout_300ms"
    assert held >= 0.3
    assert_clean_log(server)


@pytest.mark.parametrize("worker_class", WORKERS)
def test_connection_error_is_a_tcp_reset(tmp_path: Path, worker_class: str) -> None:
    env = chaos_env(
        fault_injection_enabled="true", fault_injection_connection_error_probability="1"
    )
    with (
        gunicorn_server(tmp_path, env=env, worker_class=worker_class) as server,
        session() as http,
    ):
        for path in ("/hello", "/echo"):
            with pytest.raises(requests.ConnectionError) as caught:
                http.post(server.url + path, data=b"z" * 50_000, timeout=10)
            assert _caused_by(caught.value, ConnectionResetError)
        # The server is unharmed.
        assert http.get(server.url + "/api/chaos/status", timeout=10).status_code == 200
    assert_clean_log(server)
    assert "Ignoring connection reset" in server.log()


@pytest.mark.parametrize("worker_class", WORKERS)
@pytest.mark.parametrize("path", ["/bytes/100000", "/stream/100000"], ids=["length", "chunked"])
def test_partial_response_is_cut_at_once(tmp_path: Path, worker_class: str, path: str) -> None:
    env = chaos_env(
        fault_injection_enabled="true", fault_injection_partial_response_probability="1"
    )
    with (
        gunicorn_server(tmp_path, env=env, worker_class=worker_class) as server,
        session() as http,
    ):
        start = time.perf_counter()
        with pytest.raises(requests.exceptions.ChunkedEncodingError) as caught:
            http.get(server.url + path, timeout=10)
        cut_after = time.perf_counter() - start
        assert http.get(server.url + "/api/chaos/status", timeout=10).status_code == 200
    if path.startswith("/bytes"):
        assert "IncompleteRead(50000 bytes read, 50000 more expected)" in str(caught.value)
    # Far below the 5 s keep-alive timeout: the connection was cut, not left idle.
    assert cut_after < 2.0
    assert_clean_log(server)


def test_werkzeug_dev_server_gets_real_reset_and_cut() -> None:
    config = load_config(
        environ={},
        overrides={"enabled": True, "fault_injection": {"enabled": True}},
    )
    middleware = ChaosMiddleware(base_app, config=config)
    with werkzeug_server(middleware) as server, session() as http:
        middleware.config = _with_faults(config, connection_error_probability=1.0)
        with pytest.raises(requests.ConnectionError) as caught:
            http.get(server.url + "/hello", timeout=10)
        assert _caused_by(caught.value, ConnectionResetError)
        middleware.config = _with_faults(config, partial_response_probability=1.0)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            http.get(server.url + "/bytes/4000", timeout=10)
        middleware.config = config
        assert http.get(server.url + "/hello", timeout=10).text == "hello"


def _with_faults(config, **faults):  # type: ignore[no-untyped-def]
    import attrs

    return attrs.evolve(config, fault_injection=attrs.evolve(config.fault_injection, **faults))


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is anywhere in the chain requests and urllib3 wrap errors in."""
    stack, seen = [error], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        linked = (*current.args, current.__cause__, current.__context__)
        stack.extend(item for item in linked if isinstance(item, BaseException))
    return False


def test_bad_config_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    env = chaos_env(latency_probability="1.5")
    with pytest.raises(RuntimeError, match="server exited"), gunicorn_server(tmp_path, env=env):
        pass
    log = next(tmp_path.glob("gunicorn-*.log")).read_text()
    assert "chaos.latency.probability: 1.5 is not in [0, 1]" in log
    assert "(from MOCKFORGE_CHAOS_LATENCY_PROBABILITY)" in log
