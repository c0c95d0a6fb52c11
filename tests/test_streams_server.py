"""Stream cuts, dribble, broken framing and upload resets through a real ``mockforge
serve`` (issue 26), as requests, httpx, urllib3 and curl see them. One server for the
module (header control on, so most cases ask for their fault by header); a case that
changes the config has it reset after it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import urllib3
from servers import TESTS_DIR, Server, assert_clean_log, mockforge_serve, once_counted, session

pytestmark = [pytest.mark.server, pytest.mark.xdist_group("streams_server")]

FAULT = "X-Mockforge-Fault"
CHUNK = 16384  # wsgi_apps' /stream/N and /bytes/N chunks
UPLOAD = 1_000_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's folder: its config, and a 1 MB file for curl to upload."""
    tmp = tmp_path_factory.mktemp("streams")
    (tmp / "chaos.yaml").write_text("chaos:\n  enabled: true\n  header_control: {enabled: true}\n")
    (tmp / "upload.bin").write_bytes(b"u" * UPLOAD)
    return tmp


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    args = ("--config", "chaos.yaml", "--app", "wsgi_apps:base_app", "--chdir", str(TESTS_DIR))
    with mockforge_serve(workdir, *args, "--access-log", "off") as started:
        yield started
        assert_clean_log(started)  # a cut, a broken reply: no server error for any


@pytest.fixture
def http(server: Server) -> Iterator[requests.Session]:
    with session() as client:
        yield client
    with session() as admin:  # each test starts from the startup config
        admin.post(server.url + "/api/chaos/reset", timeout=10).raise_for_status()


def _put(http: requests.Session, server: Server, section: str, **values: Any) -> None:
    url = f"{server.url}/api/chaos/config/{section}"
    http.put(url, json={"enabled": True, **values}, timeout=10).raise_for_status()


_CURL = ("curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}")


def _curl(url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CURL, *args, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )


def _counter(http: requests.Session, server: Server, name: str) -> int:
    stats = http.get(server.url + "/api/chaos/stats", timeout=10).json()
    return int(stats["counters"].get(name, 0))


def test_a_stream_cut_after_n_chunks_is_a_reset_to_every_client(
    server: Server, http: requests.Session
) -> None:
    url, ask = server.url + "/stream/200000", {FAULT: "cut-after-3-chunks"}
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset"):
        session().get(url, headers=ask, timeout=10)
    with httpx.Client(trust_env=False) as client, pytest.raises(httpx.ReadError, match="reset"):
        client.get(url, headers=ask, timeout=10)
    with pytest.raises(urllib3.exceptions.ProtocolError, match="reset"):
        urllib3.request("GET", url, headers=ask, retries=False, timeout=10)
    curl = _curl(url, "-H", f"{FAULT}: cut-after-3-chunks")
    assert curl.returncode == 56, curl  # "Recv failure: Connection reset by peer"
    assert 0 < int(curl.stdout) <= 3 * CHUNK  # a reset may drop what was not read yet
    assert _counter(http, server, "stream_cut") == 4


def test_a_stream_closed_after_n_chunks_lacks_only_its_end(
    server: Server, http: requests.Session
) -> None:
    """cut_mode close: every byte of the first chunks arrives, then EOF without the
    terminating chunk: each client says the body is incomplete."""
    _put(http, server, "faults", cut_probability=1.0, cut_after_chunks=3, cut_mode="close")
    url = server.url + "/stream/200000"
    curl = _curl(url)
    assert curl.returncode == 18, curl  # "transfer closed with outstanding read data"
    assert int(curl.stdout) == 3 * CHUNK
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="prematurely"):
        session().get(url, timeout=10)
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
    ):
        client.get(url, timeout=10)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        urllib3.request("GET", url, retries=False, timeout=10)


def test_a_stream_cut_after_t_ms_is_cut_while_the_app_sits_between_events(
    server: Server,
) -> None:
    """Three events two seconds apart, cut 300 ms after the first byte: the cut comes on
    time, not with the next event; a body that ends sooner has its end held back."""
    received: list[bytes] = []
    started = time.monotonic()
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        session().get(
            server.url + "/events/3/2000", headers={FAULT: "cut-after-300ms"}, stream=True
        ) as response,
    ):
        for chunk in response.iter_content(None):
            received.append(chunk)
    elapsed = time.monotonic() - started
    assert b"".join(received) == b"data: 0\n\n"
    assert 0.3 <= elapsed < 1.5, elapsed  # the next event would come at 2 s
    started = time.monotonic()
    curl = _curl(server.url + "/stream/1000", "-H", f"{FAULT}: cut-after-300ms")
    assert curl.returncode == 56, curl
    assert time.monotonic() - started >= 0.3  # the whole body came; its end did not


def test_a_cut_timer_is_released_by_disable(server: Server, http: requests.Session) -> None:
    """Chaos off while a short body waits for its cut: the end goes out, uncut."""
    answers: list[requests.Response] = []

    def fetch() -> None:
        answers.append(
            session().get(
                server.url + "/stream/1000", headers={FAULT: "cut-after-20000ms"}, timeout=30
            )
        )

    thread = threading.Thread(target=fetch, daemon=True)
    before = _counter(http, server, "stream_cut")  # the module's earlier tests count too
    started = time.monotonic()
    thread.start()
    # Decided (counted then), so its end is held: now chaos goes off.
    decided = once_counted(lambda: _counter(http, server, "stream_cut"), lambda n: n > before, 5)
    assert decided == before + 1 and not answers
    http.post(server.url + "/api/chaos/disable", timeout=10).raise_for_status()
    thread.join(10)
    [answer] = answers
    assert (answer.status_code, answer.content) == (200, b"x" * 1000)
    assert time.monotonic() - started < 3.0


def test_a_dribble_is_released_by_disable(server: Server, http: requests.Session) -> None:
    """Chaos off while a body dribbles over 20 s: the rest goes at full speed."""
    answers: list[requests.Response] = []

    def fetch() -> None:
        ask = {"X-Mockforge-Body-Duration-Ms": "20000"}
        answers.append(session().get(server.url + "/bytes/10000", headers=ask, timeout=30))

    thread = threading.Thread(target=fetch, daemon=True)
    before = _counter(http, server, "body_dribbled")  # the module's earlier tests count too
    started = time.monotonic()
    thread.start()
    # Decided (counted then), so its body dribbles: now chaos goes off.
    decided = once_counted(
        lambda: _counter(http, server, "body_dribbled"), lambda n: n > before, 5
    )
    assert decided == before + 1 and not answers
    http.post(server.url + "/api/chaos/disable", timeout=10).raise_for_status()
    thread.join(10)
    [answer] = answers
    assert (answer.status_code, answer.content) == (200, b"x" * 10000)
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    ("how", "curl_exit", "curl_says", "requests_error", "httpx_error"),
    [
        pytest.param(
            "malformed_chunk",
            56,
            "hexadecimal",
            requests.exceptions.ChunkedEncodingError,
            "illegal chunk header",
            id="malformed_chunk",
        ),
        pytest.param(
            "random_then_close",
            1,
            "HTTP/0.9",
            requests.ConnectionError,
            "without sending a response|illegal (status|request) line",
            id="random_then_close",
        ),
    ],
)
def test_broken_framing_as_each_client_sees_it(
    server: Server,
    http: requests.Session,
    how: str,
    curl_exit: int,
    curl_says: str,
    requests_error: type[Exception],
    httpx_error: str,
) -> None:
    url, ask = server.url + "/bytes/1000", {FAULT: f"corrupt-{how}"}
    curl = _curl(url, "-H", f"{FAULT}: corrupt-{how}")
    assert curl.returncode == curl_exit, curl
    assert curl_says in curl.stderr, curl.stderr
    with pytest.raises(requests_error):
        session().get(url, headers=ask, timeout=10)
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(httpx.RemoteProtocolError, match=httpx_error),
    ):
        client.get(url, headers=ask, timeout=10)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        urllib3.request("GET", url, headers=ask, retries=False, timeout=10)


def test_an_upload_reset_breaks_the_send_before_the_app_answers(
    server: Server, http: requests.Session, workdir: Path
) -> None:
    """Reset after 64 KB of a 1 MB upload: the client learns it while still sending
    (curl paced to 4 MB/s, requests sending 16 KB pieces: the rest is never sent)."""
    _put(http, server, "faults", upload_reset_probability=1.0, upload_reset_after_bytes=65536)
    url = server.url + "/echo"
    paced = ("--limit-rate", "4M", "--data-binary", "@upload.bin", url)
    curl = subprocess.run(
        [*_CURL[:-1], "%{size_upload}", *paced],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=workdir,
    )
    assert curl.returncode in (55, 56), curl  # send failure or "Connection reset by peer"
    assert int(curl.stdout) < UPLOAD // 2, curl  # the rest was never sent
    pieces: list[int] = []

    def upload() -> Iterator[bytes]:
        for n in range(UPLOAD // CHUNK):
            pieces.append(n)
            time.sleep(0.002)
            yield b"u" * CHUNK

    with pytest.raises(requests.ConnectionError):
        session().post(url, data=upload(), timeout=10)
    assert len(pieces) < UPLOAD // CHUNK // 2, pieces
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises((httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError)),
    ):
        client.post(url, content=b"u" * UPLOAD, timeout=10)
    assert _counter(http, server, "upload_reset") == 3
    # By header, after a given number of bytes:
    with pytest.raises(requests.ConnectionError):
        session().post(
            url, data=b"u" * UPLOAD, headers={FAULT: "upload-reset-after-1000"}, timeout=10
        )


@pytest.mark.alone
def test_a_dribbled_body_lands_when_its_time_is_up(server: Server, http: requests.Session) -> None:
    """1 s over 10 writes: the headers at once, the last byte at 1 s (+-5%, and the time
    to move 100 KB at all)."""
    _put(http, server, "traffic", body_duration_ms=1000, body_chunks=10)
    started = time.monotonic()
    with session().get(server.url + "/bytes/100000", stream=True, timeout=10) as response:
        headers_s = time.monotonic() - started
        assert response.headers["X-Mockforge-Chaos"] == "dribble=1000ms/10"
        reads = [(time.monotonic() - started, len(chunk)) for chunk in response.iter_content(4096)]
    elapsed = time.monotonic() - started
    assert sum(size for _, size in reads) == 100_000
    assert headers_s < 0.2, headers_s
    assert 0.95 <= elapsed <= 1.1, elapsed
    # Spread, not held and sent at once: by the half, about half the bytes were read.
    by_half = sum(size for at, size in reads if at <= 0.55)
    assert 30_000 <= by_half <= 70_000, reads


def _elapsed_s(http: requests.Session, url: str) -> float:
    started = time.monotonic()
    http.get(url, timeout=10).raise_for_status()
    return time.monotonic() - started


def test_the_heavy_tailed_delays_and_a_cited_profile_through_the_server(
    server: Server, http: requests.Session
) -> None:
    """Issue 26 items 6 and 7 on a real server: a Pareto delay is never below its scale
    nor above its cap; an exponential one never above its cap; the `lte` profile (70 ms,
    WebPageTest) delays every answer by its latency."""
    url = server.url + "/bytes/1"
    _put(http, server, "latency", distribution="pareto", scale_ms=60, shape=3, cap_ms=150)
    pareto = [_elapsed_s(http, url) for _ in range(6)]
    assert all(0.060 <= took < 0.150 + 0.5 for took in pareto), pareto  # a margin for load
    _put(http, server, "latency", distribution="exponential", scale_ms=20, cap_ms=80)
    exponential = [_elapsed_s(http, url) for _ in range(6)]
    assert all(took < 0.080 + 0.5 for took in exponential), exponential
    http.post(server.url + "/api/chaos/reset", timeout=10).raise_for_status()
    http.post(server.url + "/api/chaos/scenarios/lte", json={}, timeout=10).raise_for_status()
    lte = [_elapsed_s(http, url) for _ in range(3)]
    assert all(0.070 <= took < 0.070 + 0.5 for took in lte), lte
