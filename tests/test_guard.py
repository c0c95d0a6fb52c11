"""What a browser can be tricked into sending is refused (mockforge_wsgi/_guard.py): the
rules as a table through the real management app, a request at a time."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.test import Client

from mockforge_wsgi._guard import BrowserGuard, GuardError, _arrived_on
from mockforge_wsgi.api import openapi_document
from mockforge_wsgi.app import create_app
from mockforge_wsgi.cli import _exposure_warnings, main
from mockforge_wsgi.config import ConfigError
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.recorder import Recorder, RecorderMiddleware
from mockforge_wsgi.report import inline_scripts

P = "/api/chaos"


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def client(guard: BrowserGuard | None = None) -> tuple[Client, ChaosMiddleware]:
    middleware = ChaosMiddleware(hello, guard=guard)
    return Client(middleware), middleware


def enabled(middleware: ChaosMiddleware) -> bool:
    return middleware.engine.state().enabled


# Host, the guard, the address the request came from (werkzeug's test client has no
# socket: the guard goes by REMOTE_ADDR), the status.
HOSTS = [
    pytest.param("127.0.0.1:3000", BrowserGuard(), "127.0.0.1", 200, id="loopback-address"),
    pytest.param("localhost:3000", BrowserGuard(), "127.0.0.1", 200, id="localhost"),
    pytest.param("[::1]:3000", BrowserGuard(), "127.0.0.1", 200, id="ipv6-loopback"),
    pytest.param("app.localhost", BrowserGuard(), "127.0.0.1", 200, id="under-localhost"),
    pytest.param("evil.example", BrowserGuard(), "127.0.0.1", 403, id="rebound-name"),
    pytest.param("10.0.0.5:3000", BrowserGuard(), "127.0.0.1", 403, id="other-address-on-lo"),
    pytest.param(
        "chaos.example:3000",
        BrowserGuard(allowed_hosts=["chaos.example"]),
        "127.0.0.1",
        200,
        id="allowed-name",
    ),
    pytest.param("evil.example", BrowserGuard(allowed_hosts=["*"]), "127.0.0.1", 200, id="star"),
    pytest.param(
        "evil.example", BrowserGuard(bound="127.0.0.1"), "10.0.0.9", 403, id="serve-on-lo"
    ),
    pytest.param(
        "10.0.0.5:3000", BrowserGuard(bound="0.0.0.0"), "10.0.0.9", 200, id="any-bind-address"
    ),
    pytest.param(
        "evil.example", BrowserGuard(bound="0.0.0.0"), "10.0.0.9", 403, id="any-bind-name"
    ),
    pytest.param(
        "chaos.example",
        BrowserGuard(bound="0.0.0.0", allowed_hosts=["chaos.example"]),
        "10.0.0.9",
        200,
        id="any-bind-allowed",
    ),
    # The middleware in your own app, reached on another address: names not known here.
    pytest.param("chaos.example", BrowserGuard(), "10.0.0.9", 200, id="app-unknown-bind"),
    pytest.param(
        "evil.example",
        BrowserGuard(allowed_hosts=["chaos.example"]),
        "10.0.0.9",
        403,
        id="app-names-given",
    ),
]


@pytest.mark.parametrize(("host", "guard", "remote", "status"), HOSTS)
def test_the_host_check(host: str, guard: BrowserGuard, remote: str, status: int) -> None:
    http, middleware = client(guard)
    base = {"REMOTE_ADDR": remote}
    response = http.post(P + "/enable", headers={"Host": host}, environ_base=base)
    assert response.status_code == status, response.get_json()
    assert enabled(middleware) is (status == 200)
    if status == 403:
        [problem] = response.get_json()["problems"]
        assert "--allowed-host" in problem and "MOCKFORGE_ALLOWED_HOSTS" in problem
        assert response.headers["X-Content-Type-Options"] == "nosniff"


ORIGINS = [
    pytest.param({"Origin": "http://localhost"}, 200, id="own-origin"),
    pytest.param({"Origin": "https://localhost"}, 200, id="own-host-behind-tls-proxy"),
    pytest.param({"Origin": "http://evil.example"}, 403, id="other-origin"),
    pytest.param({"Origin": "http://localhost:8000"}, 403, id="other-port"),
    pytest.param({"Origin": "null"}, 403, id="null-origin"),
    pytest.param({"Origin": "https://tool.example"}, 200, id="allowed-origin"),
    pytest.param(
        {"Origin": "https://tool.example", "Sec-Fetch-Site": "cross-site"},
        200,
        id="allowed-cross-site",
    ),
    pytest.param({"Sec-Fetch-Site": "cross-site"}, 403, id="cross-site-no-origin"),
    pytest.param({"Sec-Fetch-Site": "same-origin"}, 200, id="same-origin"),
    pytest.param({"Sec-Fetch-Site": "none"}, 200, id="typed-url"),
]


@pytest.mark.parametrize(("headers", "status"), ORIGINS)
def test_the_origin_check(headers: dict[str, str], status: int) -> None:
    http, middleware = client(BrowserGuard(allowed_origins=["https://tool.example"]))
    response = http.post(P + "/enable", headers=headers)  # Host: localhost
    assert response.status_code == status, response.get_json()
    assert enabled(middleware) is (status == 200)
    if status == 403:
        [problem] = response.get_json()["problems"]
        assert "--allowed-origin" in problem and "MOCKFORGE_ALLOWED_ORIGINS" in problem


def test_a_cross_site_link_may_open_a_page_but_not_read_or_act() -> None:
    http, _ = client()
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert http.get(P + "/ui", headers=link).status_code == 200
    assert http.post(P + "/enable", headers=link).status_code == 403
    script = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert http.get(P + "/status", headers=script).status_code == 403


BODIES = [
    pytest.param("text/plain", b'{"enabled": true}', 415, id="text-plain"),
    pytest.param("application/x-www-form-urlencoded", b"enabled=1", 415, id="form"),
    pytest.param("multipart/form-data; boundary=x", b"--x--", 415, id="multipart"),
    pytest.param(None, b'{"enabled": true}', 415, id="no-type"),
    pytest.param("application/json", b'{"enabled": true}', 200, id="json"),
    pytest.param("application/json; charset=utf-8", b'{"enabled": true}', 200, id="charset"),
]


@pytest.mark.parametrize(("content_type", "body", "status"), BODIES)
def test_a_body_must_be_json(content_type: str | None, body: bytes, status: int) -> None:
    http, middleware = client()
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.put(P + "/config/latency", data=body, headers=headers)
    assert response.status_code == status, response.get_json()
    assert middleware.engine.editable().latency.enabled is (status == 200)
    if status == 415:
        assert "application/json" in response.get_json()["problems"][0]


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_a_post_without_a_body_needs_no_type(content_type: str | None) -> None:
    http, middleware = client()
    headers = {"Content-Type": content_type} if content_type else {}
    assert http.post(P + "/enable", headers=headers).status_code == 200
    assert enabled(middleware)


def test_answers_are_not_sniffed_and_the_pages_run_only_their_own_scripts() -> None:
    http, _ = client()
    for path in ("/status", "/nope", "/openapi.json"):  # a 404 of the app too
        assert http.get(P + path).headers["X-Content-Type-Options"] == "nosniff", path
    page = http.get(P + "/ui")
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    [script] = re.findall(r"<script>(.*?)</script>", page.get_data(as_text=True), re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    allowed = re.search(r"script-src ([^;]*)", policy)
    assert allowed is not None
    assert allowed.group(1).split() == ["'self'", f"'sha256-{digest}'"]
    assert "http:" not in policy and "https:" not in policy and "*" not in policy
    assert len(inline_scripts()) == 2  # the report's: Chart.js and the drawing


def test_the_openapi_document_declares_the_refusals() -> None:
    paths = openapi_document(P)["paths"]
    assert "403" in paths[P + "/status"]["get"]["responses"]
    assert "415" not in paths[P + "/status"]["get"]["responses"]
    assert "415" in paths[P + "/config/latency"]["put"]["responses"]
    assert "415" in paths[P + "/enable"]["post"]["responses"]


def test_bad_lists_are_one_clear_error_naming_each_value() -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(
            environ={
                "MOCKFORGE_ALLOWED_HOSTS": "ok.example, bad host",
                "MOCKFORGE_ALLOWED_ORIGINS": "https://tool.example/path",
            }
        )
    assert caught.value.problems == [
        "MOCKFORGE_ALLOWED_HOSTS: 'bad host' is not a host name or address "
        "(with an optional port), or *",
        "MOCKFORGE_ALLOWED_ORIGINS: 'https://tool.example/path' is not an origin like "
        "https://host[:port] (scheme and host, no path)",
    ]
    with pytest.raises(GuardError):
        BrowserGuard(allowed_origins=["tool.example"])


def test_serve_refuses_a_bad_flag_before_binding() -> None:
    result = CliRunner().invoke(main, ["serve", "--allowed-origin", "ftp://x", "--port", "0"])
    assert result.exit_code == 2
    assert "--allowed-origin: 'ftp://x' is not an origin" in result.output


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 200, id="plain"),
        pytest.param({"Host": "evil.example"}, 403, id="rebound-host"),
        pytest.param({"Origin": "http://evil.example"}, 403, id="other-origin"),
    ],
)
def test_the_recorders_request_data_is_guarded_too(
    tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    recorder = Recorder(tmp_path / "chaos.db")
    http = Client(RecorderMiddleware(ChaosMiddleware(hello), recorder))
    http.get("/orders")
    response = http.post("/api/recorder/search", data=b"{}", headers=headers)
    assert response.status_code == status, response.get_json()
    if status == 403:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "requests" not in response.get_json()


@pytest.mark.parametrize(
    ("host", "hosts", "token", "said"),
    [
        pytest.param("127.0.0.1", (), None, [], id="loopback"),
        pytest.param("::1", (), None, [], id="ipv6-loopback"),
        pytest.param("0.0.0.0", (), "s3cret", [], id="token-set"),
        pytest.param("0.0.0.0", (), None, ["no --admin-token"], id="no-token"),
        pytest.param("127.0.0.1", ("*",), None, ["the Host check is off"], id="star"),
    ],
)
def test_serve_says_what_leaves_the_api_open(
    host: str, hosts: tuple[str, ...], token: str | None, said: list[str]
) -> None:
    warnings = _exposure_warnings(host, BrowserGuard(allowed_hosts=hosts, bound=host), token)
    assert len(warnings) == len(said)
    assert all(part in warning for part, warning in zip(said, warnings, strict=True))


def test_the_address_a_request_arrived_on_is_the_sockets_own_end(tmp_path: Path) -> None:
    """A server that exposes the connection: its local end beats the client's address;
    a Unix socket (only a local proxy reaches it) counts as loopback."""
    guard = BrowserGuard()
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as sock,
    ):
        environ = {"gunicorn.socket": sock, "REMOTE_ADDR": "10.0.0.9"}
        assert _arrived_on(environ) == "127.0.0.1"
        assert not guard.host_allowed("evil.example", environ)
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "s"))
        environ = {"gunicorn.socket": unix, "REMOTE_ADDR": "10.0.0.9"}
        assert not guard.host_allowed("evil.example", environ)
    assert guard.host_allowed("evil.example", {"REMOTE_ADDR": "10.0.0.9"})  # no socket
