"""Proxy mode: a real upstream (gunicorn, tests/upstream_app.py) behind the real
``mockforge serve --upstream``; its answers pass unchanged, chaos applies in front."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest
import requests
from servers import Server, gunicorn_server, mockforge_serve, once_counted, session
from upstream_app import BIG_BYTES, STREAM_CHUNKS

from mockforge_wsgi.proxy import UPSTREAM_HEADER, ChaosProxy

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("upstream")
    with gunicorn_server(
        tmp, app="upstream_app:app", worker_class="gthread", ready_path="/echo"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("proxy")
    recorder = str(tmp / "recorder.db")
    with mockforge_serve(
        tmp, "--upstream", upstream.url, "--workers", "2", "--metrics", "--recorder-db", recorder
    ) as server:
        yield server


@pytest.fixture
def http(proxy: Server) -> Iterator[requests.Session]:
    with session() as client:
        yield client
    with session() as admin:  # each test starts from the startup config
        admin.post(proxy.url + "/api/chaos/reset", timeout=10).raise_for_status()


def test_status_headers_and_cookies_pass_unchanged(proxy: Server, http: requests.Session) -> None:
    response = http.get(proxy.url + "/cookies", timeout=10)
    assert response.status_code == 201
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert response.headers["X-Upstream"] == "yes"
    assert response.headers["Connection"] == "keep-alive"  # ours, not the upstream's
    assert "X-Mockforge-Chaos" not in response.headers  # chaos is off: nothing added
    assert response.content == b"ok"


def test_redirects_are_passed_on_not_followed(proxy: Server, http: requests.Session) -> None:
    response = http.get(proxy.url + "/redirect", timeout=10, allow_redirects=False)
    assert (response.status_code, response.headers["Location"]) == (302, "/elsewhere")


def test_the_request_arrives_whole_with_forwarding_headers(
    proxy: Server, upstream: Server, http: requests.Session
) -> None:
    body = bytes(range(256)) * 400  # 100 KB
    response = http.post(
        proxy.url + "/echo?x=1&y=%2F",
        data=body,
        headers={"Connection": "keep-alive, X-Hop", "X-Hop": "no", "X-Custom": "yes"},
        timeout=10,
    )
    seen = response.json()
    assert (seen["method"], seen["query"], seen["length"]) == ("POST", "x=1&y=%2F", len(body))
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    headers = seen["headers"]
    assert headers["X_CUSTOM"] == "yes"
    assert "X_HOP" not in headers  # named by the client's Connection header
    assert headers["X_FORWARDED_FOR"] == "127.0.0.1"
    assert headers["X_FORWARDED_PROTO"] == "http"
    assert headers["X_FORWARDED_HOST"] == proxy.url.removeprefix("http://")
    assert headers["HOST"] == upstream.url.removeprefix("http://")


def test_chunked_both_ways(proxy: Server, http: requests.Session) -> None:
    response = http.get(proxy.url + "/stream", timeout=10)
    assert "Content-Length" not in response.headers
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert response.text == "".join(f"chunk {n}\n" for n in range(STREAM_CHUNKS))
    parts = [b"a" * 1000, b"b" * 5000, b"c" * 10]
    seen = http.post(proxy.url + "/echo", data=iter(parts), timeout=10).json()
    assert seen["length"] == 6010  # sent chunked, arrived whole
    assert seen["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_chaos_applies_to_proxied_requests(proxy: Server, http: requests.Session) -> None:
    api = proxy.url + "/api/chaos"
    http.post(api + "/enable", timeout=10).raise_for_status()
    faults = {"enabled": True, "http_errors": [503], "http_error_probability": 1.0}
    http.put(api + "/config/faults", json=faults, timeout=10).raise_for_status()
    refused = http.get(proxy.url + "/echo", timeout=10)
    assert refused.status_code == 503
    assert refused.headers["X-Mockforge-Chaos"] == "fault=http_503"
    partial = {"enabled": True, "http_error_probability": 0, "partial_response_probability": 1}
    http.put(api + "/config/faults", json=partial, timeout=10).raise_for_status()
    with (
        pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)),
        http.get(proxy.url + "/big", timeout=10, stream=True) as response,
    ):
        assert response.headers["Content-Length"] == str(BIG_BYTES)  # the full length...
        for _ in response.iter_content(65536):  # ...and half of it, then the cut
            pass


def test_a_paced_proxied_body_takes_its_time(proxy: Server, http: requests.Session) -> None:
    api = proxy.url + "/api/chaos"
    http.post(api + "/enable", timeout=10).raise_for_status()
    shaping = {"enabled": True, "bandwidth_limit_bps": 5_000_000}
    http.put(api + "/config/traffic", json=shaping, timeout=10).raise_for_status()
    started = time.monotonic()
    with http.get(proxy.url + "/big", timeout=30, stream=True) as response:
        received = sum(len(chunk) for chunk in response.iter_content(65536))
    elapsed = time.monotonic() - started
    assert received == BIG_BYTES
    # 10 MB at 5 MB/s: ~2.1 s; each slice leaves on schedule, so no slower than that
    # plus the time to move the bytes at all.
    paced_s = BIG_BYTES / 5_000_000
    assert paced_s * 0.95 <= elapsed <= paced_s + 0.6, elapsed


def test_a_down_upstream_is_a_502_that_says_it_is_not_injected() -> None:
    """As mockforge serve builds it (create_app with an upstream), in this process."""
    from werkzeug.test import Client

    from mockforge_wsgi.app import create_app

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    app = create_app(environ={}, upstream=f"http://127.0.0.1:{closed}")
    response = Client(app).get("/anything")
    stats = Client(app).get("/api/chaos/stats").get_json()
    assert response.status_code == 502
    assert response.headers[UPSTREAM_HEADER] == "unreachable"
    assert response.get_json()["injected"] is False
    assert "X-Mockforge-Chaos" not in response.headers
    assert stats["counters"].get("upstream_errors") == 1
    assert not {"http_error", "connection_reset"} & set(stats["counters"])


def test_a_10_mb_body_streams_through_in_bounded_memory(upstream: Server) -> None:
    """The proxy app called in this process (the upstream a real gunicorn), its body
    read as a server reads it: the peak of Python allocations is a few chunks, not the
    10 MB body. (A client in this process would add its own buffers to the count.)"""
    from werkzeug.test import EnvironBuilder

    proxy = ChaosProxy(upstream.url)
    environ = EnvironBuilder(path="/big").get_environ()
    statuses: list[str] = []
    tracemalloc.start()
    try:
        body = proxy(environ, lambda status, headers, exc_info=None: statuses.append(status))
        received = sum(len(chunk) for chunk in body)
        body.close()  # type: ignore[attr-defined]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert statuses == ["200 OK"]
    assert received == BIG_BYTES
    assert peak < 1024 * 1024, peak  # measured ~0.25 MB; the whole body would be 10 MB


def test_a_silent_upstream_is_a_504() -> None:
    from werkzeug.test import Client

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts, never answers
        proxy = ChaosProxy(f"http://127.0.0.1:{listener.getsockname()[1]}", read_timeout_s=0.3)
        seen: list[str] = []
        proxy.on_error = seen.append
        started = time.monotonic()
        response = Client(proxy).get("/x")
    assert response.status_code == 504
    assert response.headers[UPSTREAM_HEADER] == "timeout"
    assert time.monotonic() - started < 5
    assert seen == ["timeout"]


def _faults(http: requests.Session, proxy: Server, **faults: object) -> None:
    api = proxy.url + "/api/chaos"
    http.post(api + "/enable", timeout=10).raise_for_status()
    changed = http.put(api + "/config/faults", json={"enabled": True, **faults}, timeout=10)
    changed.raise_for_status()


def _curl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_post_reset_after_the_upstream_applied_it_was_applied_once(
    proxy: Server, upstream: Server, http: requests.Session
) -> None:
    """Commit, then fail: the upstream carried the POST out, the client saw a reset."""
    _faults(http, proxy, after_app_probability=1.0, after_app_fault="reset")
    with pytest.raises(requests.ConnectionError):
        session().post(proxy.url + "/count/reset", data=b"{}", timeout=10)
    curl = _curl(proxy.url + "/count/reset", "-X", "POST", "-d", "{}")
    assert curl.returncode == 56, curl  # "Recv failure: Connection reset by peer"
    assert "reset" in curl.stderr.lower(), curl.stderr
    # httpx without proxy settings: 127.0.0.1 only.
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(httpx.ReadError, match="reset"),
    ):
        client.post(proxy.url + "/count/reset", content=b"{}", timeout=10)
    applied = http.get(upstream.url + "/count/reset", timeout=10).json()["count"]
    assert applied == 3  # one per POST, each applied once


def test_an_empty_reply_and_a_stall_after_the_app(
    proxy: Server, upstream: Server, http: requests.Session
) -> None:
    _faults(http, proxy, corruption_probability=1.0, corruption="empty_reply")
    curl = _curl(proxy.url + "/count/empty", "-X", "POST")
    assert curl.returncode == 52, curl  # "Empty reply from server"
    assert "empty reply" in curl.stderr.lower(), curl.stderr
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(httpx.RemoteProtocolError, match="disconnected without sending"),
    ):
        client.post(proxy.url + "/count/empty", timeout=10)
    assert http.get(upstream.url + "/count/empty", timeout=10).json()["count"] == 2
    _faults(http, proxy, after_app_probability=1.0, after_app_fault="stall", timeout_ms=400)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        session().post(proxy.url + "/count/empty", timeout=10)
    assert 0.4 <= time.monotonic() - started < 1.0  # held timeout_ms, then closed
    assert http.get(upstream.url + "/count/empty", timeout=10).json()["count"] == 3


def test_a_corrupted_proxied_body_is_broken_in_place(
    proxy: Server, http: requests.Session
) -> None:
    _faults(http, proxy, corruption_probability=1.0, corruption="invalid_json")
    response = http.get(proxy.url + "/echo", timeout=10)
    assert response.headers["X-Mockforge-Chaos"] == "fault=corrupted_invalid_json"
    assert len(response.content) == int(response.headers["Content-Length"])
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_a_fault_script_is_consumed_across_workers(proxy: Server, http: requests.Session) -> None:
    """Two workers, one script: each step is met once, whichever worker answers; the
    API says the client went through every step."""
    steps = [503, 503, 502, 503, 503, "ok"]
    _faults(http, proxy, script=steps)
    statuses = [session().get(proxy.url + "/echo", timeout=10).status_code for _ in range(8)]
    assert statuses == [503, 503, 502, 503, 503, 200, 200, 200]  # in order, once each
    [report] = http.get(proxy.url + "/api/chaos/scripts", timeout=10).json()["scripts"]
    assert report["done"] and report["not_hit"] == []


def test_a_non_ascii_path_reaches_the_upstream_as_sent(upstream: Server) -> None:
    """PATH_INFO carries the path's bytes as latin-1 (PEP 3333): they go upstream as
    they came, not encoded twice."""
    from werkzeug.test import EnvironBuilder

    proxy = ChaosProxy(upstream.url)
    environ = EnvironBuilder(path="/echo").get_environ()
    environ["PATH_INFO"] = "/echo/caf\u00e9".encode().decode("latin-1")  # as a server has it
    echo = json.loads(b"".join(proxy(environ, lambda *args: None)))
    assert echo["path"].encode("latin-1").decode() == "/echo/caf\u00e9"
    environ["PATH_INFO"] = "/echo/\u20ac"  # a server that decoded the path itself
    echo = json.loads(b"".join(proxy(environ, lambda *args: None)))
    assert echo["path"].encode("latin-1").decode() == "/echo/\u20ac"


def test_rules_scenarios_recorder_and_metrics_work_through_the_proxy(
    proxy: Server, upstream: Server, http: requests.Session
) -> None:
    """A rule for one route replaces the upstream call there and nowhere else; a custom
    scenario applies; both show in /metrics and the recorder as for a wrapped app."""
    api = proxy.url + "/api/chaos"
    before = _injections(http, proxy)
    rule = {"match": {"path": "/count/ruled"}, "fault_injection": _always(500)}
    config = {"enabled": True, "rules": [rule]}
    http.put(api + "/config", json=config, timeout=10).raise_for_status()
    for _ in range(3):
        assert session().post(proxy.url + "/count/ruled", timeout=10).status_code == 500
        assert session().post(proxy.url + "/count/free", timeout=10).status_code == 200
    assert http.get(upstream.url + "/count/ruled", timeout=10).json()["count"] == 0
    assert http.get(upstream.url + "/count/free", timeout=10).json()["count"] == 3

    scenario = {"name": "upstream_down", "fault_injection": _always(504)}
    http.post(api + "/scenarios", json=scenario, timeout=10).raise_for_status()
    http.post(api + "/scenarios/upstream_down", json={}, timeout=10).raise_for_status()
    assert session().get(proxy.url + "/echo", timeout=10).status_code == 504

    # 500 and 504 are this test's own; the module's other tests inject 502 and 503.
    expected = {"500": before.get("500", 0) + 3, "504": before.get("504", 0) + 1}
    after = once_counted(
        lambda: _injections(http, proxy),
        lambda counts: all(counts.get(status, 0) >= n for status, n in expected.items()),
    )
    assert {status: after.get(status, 0) for status in expected} == expected
    search = {"path_prefix": "/count/ruled", "fault_type": "http_error"}
    deadline = time.monotonic() + 10  # the other worker's rows come with its next write
    while time.monotonic() < deadline:
        rows = http.post(proxy.url + "/api/recorder/search", json=search, timeout=10).json()
        if len(rows["requests"]) == 3:
            break
        time.sleep(0.1)
    assert [row["status"] for row in rows["requests"]] == [500, 500, 500]


@pytest.mark.parametrize(
    ("fault", "curl_exit", "httpx_error"),
    [
        ({"partial_response_probability": 1.0}, 18, httpx.RemoteProtocolError),
        ({"corruption_probability": 1.0, "corruption": "truncate"}, 0, None),
    ],
    ids=["partial", "truncate"],
)
def test_a_cut_body_through_the_proxy_as_each_client_sees_it(
    proxy: Server,
    http: requests.Session,
    fault: dict[str, object],
    curl_exit: int,
    httpx_error: type[Exception] | None,
) -> None:
    """partial: the header promises the whole length, the body stops (every client
    reports an incomplete body); truncate: a shorter body under a true length (every
    client takes it as a whole, short answer)."""
    _faults(http, proxy, **fault)
    curl = _curl(proxy.url + "/big", "-o", "/dev/null", "-w", "%{size_download}")
    assert curl.returncode == curl_exit, curl
    assert 0 < int(curl.stdout) < BIG_BYTES
    with httpx.Client(trust_env=False) as client:
        if httpx_error is None:
            assert 0 < len(client.get(proxy.url + "/big", timeout=10).content) < BIG_BYTES
        else:
            with pytest.raises(httpx_error, match=r"incomplete|closed"):
                client.get(proxy.url + "/big", timeout=10)
    if httpx_error is None:
        assert 0 < len(session().get(proxy.url + "/big", timeout=10).content) < BIG_BYTES
    else:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            session().get(proxy.url + "/big", timeout=10)


@pytest.mark.parametrize(
    ("fault", "curl_exit", "httpx_error"),
    [
        (
            {"cut_probability": 1.0, "cut_after_chunks": 3, "cut_mode": "close"},
            18,
            "incomplete",
        ),
        ({"cut_probability": 1.0, "cut_after_chunks": 3}, 56, "reset"),
        ({"corruption_probability": 1.0, "corruption": "malformed_chunk"}, 56, "chunk header"),
    ],
    ids=["stream_cut_close", "stream_cut_reset", "malformed_chunk"],
)
def test_a_cut_or_broken_stream_through_the_proxy(
    proxy: Server,
    http: requests.Session,
    fault: dict[str, object],
    curl_exit: int,
    httpx_error: str,
) -> None:
    """The proxy streams the upstream's chunked body; a cut or a malformed chunk reaches
    each client as from a wrapped app."""
    _faults(http, proxy, **fault)
    curl = _curl(proxy.url + "/stream", "-o", "/dev/null", "-w", "%{size_download}")
    assert curl.returncode == curl_exit, curl
    assert int(curl.stdout) < len("".join(f"chunk {n}\n" for n in range(STREAM_CHUNKS)))
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(httpx.HTTPError, match=httpx_error),
    ):
        client.get(proxy.url + "/stream", timeout=10)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session().get(proxy.url + "/stream", timeout=10)


def test_a_dribbled_proxied_stream_takes_its_time_and_keeps_its_bytes(
    proxy: Server, http: requests.Session
) -> None:
    api = proxy.url + "/api/chaos"
    http.post(api + "/enable", timeout=10).raise_for_status()
    shaping = {"enabled": True, "body_duration_ms": 300, "body_chunks": 5}
    http.put(api + "/config/traffic", json=shaping, timeout=10).raise_for_status()
    started = time.monotonic()
    response = session().get(proxy.url + "/stream", timeout=10)
    assert time.monotonic() - started >= 0.3
    assert response.text == "".join(f"chunk {n}\n" for n in range(STREAM_CHUNKS))
    assert response.headers["X-Mockforge-Chaos"] == "dribble=300ms/5"


def _injections(http: requests.Session, proxy: Server) -> dict[str, float]:
    """HTTP errors injected so far, by status, summed over the workers by /metrics."""
    metrics = http.get(proxy.url + "/metrics", timeout=10).text
    found = re.findall(
        r'^mockforge_chaos_injections_total\{detail="(\d+)",type="http_error"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return {detail: float(value) for detail, value in found}


def _always(status: int) -> dict[str, object]:
    return {"enabled": True, "http_errors": [status], "http_error_probability": 1.0}
