"""TLS: ``mockforge serve --certfile --keyfile [--ca-certs]`` on every port it opens, and
proxy mode to an ``https://`` upstream (``--upstream-ca-certs``, ``--upstream-insecure``),
with a throwaway CA and certificates the tests make (trustme); clients verify them.

Wrong files are usage errors before gunicorn starts (no server needed for those)."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import requests
import trustme
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from servers import Server, free_port, mockforge_serve, session
from werkzeug.test import Client

from mockforge_wsgi.app import create_app
from mockforge_wsgi.cli import main
from mockforge_wsgi.config import ConfigError
from mockforge_wsgi.proxy import UPSTREAM_HEADER

USAGE = 2
# The tests of the one HTTPS server in one pytest-xdist process: it starts once.
SHARED = pytest.mark.xdist_group("tls-https-server")


class Certs(NamedTuple):
    folder: Path
    ca: str  # the CA's certificate: what clients trust
    cert: str  # the server's, for 127.0.0.1 and localhost, issued by the CA
    key: str
    client_cert: str  # a client's, issued by the same CA (mutual TLS)
    client_key: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.org")
    other = trustme.CA().issue_cert("127.0.0.1")  # a key that is not the server's
    ca.cert_pem.write_to_path(folder / "ca.pem")
    server.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    server.private_key_pem.write_to_path(folder / "key.pem")
    server.private_key_and_cert_chain_pem.write_to_path(folder / "both.pem")
    client.cert_chain_pems[0].write_to_path(folder / "client.pem")
    client.private_key_pem.write_to_path(folder / "client-key.pem")
    other.private_key_pem.write_to_path(folder / "other-key.pem")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), None)
    encrypted = serialization.BestAvailableEncryption(b"secret")
    (folder / "encrypted-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted)
    )
    (folder / "junk.pem").write_text("not a certificate\n")
    paths = [str(folder / name) for name in ("ca.pem", "cert.pem", "key.pem")]
    paths += [str(folder / "client.pem"), str(folder / "client-key.pem")]
    return Certs(folder, *paths)


# -- wrong files: one line naming the flag, the value and what is wrong -------------------


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    # A host this machine does not have: were a check missing, serve would stop at the
    # bind (a different error), never start gunicorn in the test process.
    command = ["serve", "--host", "192.0.2.1", "--port", "9", *args]
    result = CliRunner().invoke(main, command, env={"MOCKFORGE_ADMIN_TOKEN": None, **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _one_line_naming(output: str, *fragments: str) -> None:
    assert "Traceback" not in output, output
    assert len(output.splitlines()) <= 6, output  # click's usage lines, at most
    lines = [line for line in output.splitlines() if all(f in line for f in fragments)]
    assert len(lines) == 1, (fragments, output)


BAD_FILES = [
    pytest.param(
        ["--certfile", "nope.pem", "--keyfile", "key.pem"],
        {},
        ["--certfile nope.pem: cannot read it (No such file or directory)"],
        id="certfile-missing",
    ),
    pytest.param(
        ["--certfile", "cert.pem", "--keyfile", "nope.pem"],
        {},
        ["--keyfile nope.pem: cannot read it (No such file or directory)"],
        id="keyfile-missing",
    ),
    pytest.param(
        ["--certfile", "junk.pem", "--keyfile", "key.pem"],
        {},
        ["--certfile junk.pem: holds no PEM certificate"],
        id="certfile-not-a-certificate",
    ),
    pytest.param(
        ["--certfile", "cert.pem", "--keyfile", "junk.pem"],
        {},
        ["--keyfile junk.pem: holds no PEM private key"],
        id="keyfile-not-a-key",
    ),
    pytest.param(
        ["--certfile", "cert.pem", "--keyfile", "other-key.pem"],
        {},
        [
            "--keyfile other-key.pem: the private key does not match the certificate of "
            "--certfile cert.pem"
        ],
        id="key-of-another-certificate",
    ),
    pytest.param(
        ["--certfile", "cert.pem", "--keyfile", "encrypted-key.pem"],
        {},
        ["--keyfile encrypted-key.pem: the private key is encrypted", "openssl pkey"],
        id="key-encrypted",
    ),
    pytest.param(
        ["--certfile", "cert.pem"],
        {},
        ["--certfile cert.pem: holds no private key; give it with --keyfile"],
        id="certfile-without-its-key",
    ),
    pytest.param(
        ["--keyfile", "key.pem"],
        {},
        ["--keyfile key.pem: needs --certfile"],
        id="keyfile-alone",
    ),
    pytest.param(
        ["--certfile", "cert.pem", "--keyfile", "key.pem", "--ca-certs", "junk.pem"],
        {},
        ["--ca-certs junk.pem: holds no PEM certificate"],
        id="ca-certs-not-certificates",
    ),
    pytest.param(
        ["--ca-certs", "ca.pem"],
        {},
        ["--ca-certs ca.pem: needs --certfile"],
        id="ca-certs-without-tls",
    ),
    pytest.param(
        ["--keyfile", "key.pem"],
        {"MOCKFORGE_CERTFILE": "nope.pem"},
        ["MOCKFORGE_CERTFILE=nope.pem: cannot read it (No such file or directory)"],
        id="certfile-variable-missing",
    ),
    pytest.param(
        ["--upstream", "https://127.0.0.1:1", "--upstream-ca-certs", "junk.pem"],
        {},
        ["--upstream-ca-certs junk.pem: holds no PEM certificate"],
        id="upstream-ca-certs-not-certificates",
    ),
    pytest.param(
        ["--upstream", "https://127.0.0.1:1", "--upstream-ca-certs", "nope.pem"],
        {},
        ["--upstream-ca-certs nope.pem: cannot read it (No such file or directory)"],
        id="upstream-ca-certs-missing",
    ),
    pytest.param(
        ["--upstream", "http://127.0.0.1:1", "--upstream-ca-certs", "ca.pem"],
        {},
        [
            "--upstream-ca-certs ca.pem: applies to an https:// --upstream only, not --upstream "
            "http://127.0.0.1:1"
        ],
        id="upstream-ca-certs-for-http",
    ),
    pytest.param(
        ["--upstream-insecure"],
        {},
        ["--upstream-insecure: applies to an https:// --upstream only, not no --upstream"],
        id="upstream-insecure-without-upstream",
    ),
    pytest.param(
        [
            "--upstream",
            "https://127.0.0.1:1",
            "--upstream-ca-certs",
            "ca.pem",
            "--upstream-insecure",
        ],
        {},
        ["--upstream-ca-certs ca.pem and --upstream-insecure: verify with that CA, or not at all"],
        id="upstream-ca-and-insecure",
    ),
    pytest.param(
        ["--upstream", "http://127.0.0.1:1"],
        {"MOCKFORGE_UPSTREAM_INSECURE": "yes"},
        ["MOCKFORGE_UPSTREAM_INSECURE=yes: applies to an https:// --upstream only"],
        id="upstream-insecure-variable-for-http",
    ),
    pytest.param(
        ["--upstream", "https://127.0.0.1:1"],
        {"MOCKFORGE_UPSTREAM_INSECURE": "maybe"},
        [
            "MOCKFORGE_UPSTREAM_INSECURE: 'maybe' is not a boolean (allowed: true/false, "
            "yes/no, on/off, 1/0)"
        ],
        id="upstream-insecure-variable-not-boolean",
    ),
]


@pytest.mark.parametrize(("args", "env", "fragments"), BAD_FILES)
def test_a_wrong_tls_file_is_one_line_before_gunicorn_starts(
    certs: Certs,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    fragments: list[str],
) -> None:
    monkeypatch.chdir(certs.folder)
    result = _invoke(args, env)
    assert result.exit_code == USAGE, result.output
    _one_line_naming(result.output, *fragments)


def test_a_certificate_file_holding_its_key_needs_no_keyfile(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted (gunicorn loads both from it): serve goes on to the bind of the host this
    machine does not have."""
    monkeypatch.chdir(certs.folder)
    result = _invoke(["--certfile", "both.pem"])
    _one_line_naming(result.output, "--port 9: cannot bind")


def test_plain_gunicorn_names_the_variable_of_a_wrong_upstream_ca(certs: Certs) -> None:
    environ = {
        "MOCKFORGE_UPSTREAM": "https://127.0.0.1:1",
        "MOCKFORGE_UPSTREAM_CA_CERTS": str(certs.folder / "junk.pem"),
    }
    with pytest.raises(
        ConfigError, match=r"MOCKFORGE_UPSTREAM_CA_CERTS=.*junk\.pem: holds no PEM"
    ):
        create_app(environ=environ, metrics=False)
    environ = {"MOCKFORGE_UPSTREAM": "http://127.0.0.1:1", "MOCKFORGE_UPSTREAM_INSECURE": "1"}
    with pytest.raises(ConfigError, match=r"MOCKFORGE_UPSTREAM: .* is not https://"):
        create_app(environ=environ, metrics=False)


# -- served over TLS ---------------------------------------------------------------------


def _port(log: str, what: str) -> int:
    found = re.search(rf"{what} https://127\.0\.0\.1:(\d+)", log)
    assert found, log
    return int(found.group(1))


@pytest.fixture(scope="module")
def https_server(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two sync workers (each serves one connection at a time: which one answers can be
    steered), the admin listener and the metrics port, over TLS; the upstream of the
    proxies below."""
    tmp = tmp_path_factory.mktemp("https")
    args = ("--certfile", certs.cert, "--keyfile", certs.key, "--admin-port", "0")
    args += ("--workers", "2", "--worker-class", "sync", "--metrics-port", str(free_port()))
    with mockforge_serve(tmp, *args) as server:
        yield server


def _tls_connection(port: int, certs: Certs, client_cert: bool = False) -> ssl.SSLSocket:
    """A verified TLS connection to 127.0.0.1:port, the handshake done."""
    context = ssl.create_default_context(cafile=certs.ca)
    if client_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _get(connection: ssl.SSLSocket, path: str, head_only: bool = False) -> Any:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    connection.sendall(head.encode() + (b"" if head_only else b"\r\n"))


def _answer(connection: ssl.SSLSocket) -> tuple[int, Any]:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@SHARED
@pytest.mark.server
def test_curl_and_requests_verify_the_served_certificate(
    https_server: Server, certs: Certs
) -> None:
    assert https_server.url.startswith("https://127.0.0.1:")
    assert "Listening at: https://" in https_server.log()
    curl = ["curl", "-sS", "--cacert", certs.ca, "-w", "\n%{http_code}"]
    done = subprocess.run(
        [*curl, https_server.url + "/api/test"], capture_output=True, text=True, timeout=30
    )
    body, _, status = done.stdout.rpartition("\n")
    assert (done.returncode, status) == (0, "200"), done.stderr
    assert json.loads(body)["path"] == "/api/test"
    with session() as http:
        answer = http.get(https_server.url + "/api/test", verify=certs.ca, timeout=10)
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # the test CA is no system CA
            http.get(https_server.url + "/api/test", timeout=10)
    # curl's own verification fails without the CA: exit 60
    done = subprocess.run(
        ["curl", "-sS", https_server.url + "/api/test"], capture_output=True, timeout=30
    )
    assert done.returncode == 60, done.stderr


@SHARED
@pytest.mark.server
def test_the_cli_verbs_say_how_to_trust_a_certificate_they_cannot_verify(
    https_server: Server, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that answers with a certificate the client does not trust is not a server
    that cannot be reached: the hint is SSL_CERT_FILE (docs/serving.md "HTTPS")."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    status = ["chaos", "status", "--url", https_server.url]
    refused = CliRunner().invoke(main, status)
    assert refused.exit_code == 1
    assert refused.output.startswith(f"cannot verify the certificate of {https_server.url} ")
    assert "trust it with SSL_CERT_FILE=cert.pem" in refused.output
    assert "start a server" not in refused.output
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca)
    trusted = CliRunner().invoke(main, status)
    assert trusted.exit_code == 0, trusted.output


@SHARED
@pytest.mark.server
def test_every_worker_serves_tls(https_server: Server, certs: Certs) -> None:
    """The first worker holds a connection whose request is unfinished; the second must
    take the next: both answer over TLS, each with its pid."""
    port = int(https_server.url.rsplit(":", 1)[1])
    with _tls_connection(port, certs) as held, _tls_connection(port, certs) as other:
        _get(held, "/api/chaos/stats", head_only=True)  # a worker shook hands: it is held
        _get(other, "/api/chaos/stats")
        status, second = _answer(other)
        held.sendall(b"\r\n")
        status_held, first = _answer(held)
    assert (status, status_held) == (200, 200)
    assert first["worker"] != second["worker"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET /api/test HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not plain.recv(100).startswith(b"HTTP/1.1 200")  # no plain HTTP served


@SHARED
@pytest.mark.server
@pytest.mark.parametrize(
    ("listener", "path"),
    [("admin listener at", "/api/chaos/status"), ("metrics .*,", "/metrics")],
    ids=["admin-port", "metrics-port"],
)
def test_the_master_s_ports_serve_tls_and_a_silent_client_holds_no_one_up(
    https_server: Server, certs: Certs, listener: str, path: str
) -> None:
    """Each handshake in its connection's thread: a client that connects and sends
    nothing does not stop the listener from answering the next."""
    port = _port(https_server.log(), listener)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10),  # connects, says nothing
        session() as http,
    ):
        answer = http.get(f"https://127.0.0.1:{port}{path}", verify=certs.ca, timeout=5)
        assert answer.status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError), session() as http:
        http.get(f"http://127.0.0.1:{port}{path}", timeout=5)


@pytest.mark.server
def test_client_certificates_are_required_with_ca_certs(certs: Certs, tmp_path: Path) -> None:
    """--ca-certs: the main port, the admin port and the metrics port each refuse a
    client with no certificate and serve one whose certificate the CA issued."""
    metrics_port = free_port()
    args = ("--certfile", certs.cert, "--keyfile", certs.key, "--ca-certs", certs.ca)
    args += ("--admin-port", "0", "--metrics-port", str(metrics_port))
    with mockforge_serve(tmp_path, *args) as server:
        admin_port = _port(server.log(), "admin listener at")
        assert "clients' certificates required" in server.log()
        main_port = int(server.url.rsplit(":", 1)[1])
        for port, path in (
            (main_port, "/api/test"),
            (admin_port, "/api/chaos/status"),
            (metrics_port, "/metrics"),
        ):
            url = f"https://127.0.0.1:{port}{path}"
            with session() as http:
                with pytest.raises(requests.exceptions.ConnectionError):  # SSLError, or reset
                    http.get(url, verify=certs.ca, timeout=10)
                mutual = (certs.client_cert, certs.client_key)
                answer = http.get(url, verify=certs.ca, cert=mutual, timeout=10)
                assert answer.status_code == 200, (url, answer.text)


# -- an https upstream ---------------------------------------------------------------------


@SHARED
@pytest.mark.server
def test_the_proxy_verifies_an_https_upstream_with_its_ca(
    https_server: Server, certs: Certs, tmp_path: Path
) -> None:
    args = ("--upstream", https_server.url, "--upstream-ca-certs", certs.ca)
    with mockforge_serve(tmp_path, *args) as proxy, session() as http:
        assert f"its certificate verified with {certs.ca}" in proxy.log()
        answer = http.get(proxy.url + "/api/echo", timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["headers"]["X-Forwarded-Proto"] == "http"  # ours, to it
        done = subprocess.run(
            ["curl", "-sS", proxy.url + "/api/test"], capture_output=True, timeout=30
        )
        assert json.loads(done.stdout)["path"] == "/api/test"


@SHARED
@pytest.mark.server
def test_without_its_ca_the_upstream_is_a_502_saying_why(https_server: Server) -> None:
    """What a client of the proxy sees when the upstream's CA is not trusted: the same
    proxy ``mockforge serve --upstream`` builds, called in this process."""
    app = create_app(upstream=https_server.url, environ={}, metrics=False)
    answer = Client(app).get("/api/test")
    assert answer.status_code == 502
    assert answer.headers[UPSTREAM_HEADER] == "tls"
    body = answer.get_json()
    assert body["error"] == "upstream tls"
    assert body["injected"] is False
    assert "CERTIFICATE_VERIFY_FAILED" in body["detail"]
    assert "--upstream-ca-certs" in body["hint"]


@SHARED
@pytest.mark.server
def test_plain_gunicorn_trusts_the_upstream_ca_of_its_variable(
    https_server: Server, certs: Certs
) -> None:
    """``gunicorn mockforge_wsgi.app:app`` builds its proxy from the environment."""
    environ = {"MOCKFORGE_UPSTREAM": https_server.url, "MOCKFORGE_UPSTREAM_CA_CERTS": certs.ca}
    answer = Client(create_app(environ=environ, metrics=False)).get("/api/test")
    assert answer.status_code == 200, answer.text
    assert answer.get_json()["path"] == "/api/test"


@SHARED
@pytest.mark.server
def test_upstream_insecure_passes_and_says_so_at_start(
    https_server: Server, tmp_path: Path
) -> None:
    args = ("--upstream", https_server.url, "--upstream-insecure")
    with mockforge_serve(tmp_path, *args) as proxy, session() as http:
        answer = http.get(proxy.url + "/api/test", timeout=10)
        assert answer.status_code == 200, answer.text
        log = proxy.log()
    serving = next(line for line in log.splitlines() if "mockforge: serving" in line)
    assert "UPSTREAM CERTIFICATE NOT VERIFIED: --upstream-insecure" in serving
    assert "--upstream-insecure: the certificate of" in log
    assert "InsecureRequestWarning" not in log  # said once at start, not per request
