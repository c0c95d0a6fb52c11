"""Cross-site requests and rebound Hosts against a real ``mockforge serve``: curl with the
headers a browser sends, and headless Chromium (a page on another port, a rebound name,
the dashboard and the report under their Content-Security-Policy)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, console_errors
from servers import Server, gunicorn_server, mockforge_serve, session, werkzeug_server
from test_admin import _admin_url

pytestmark = pytest.mark.server

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("guard")
    args = ("--admin-port", "0", "--allowed-host", "chaos.example", "--recorder-db")
    with mockforge_serve(tmp, *args, str(tmp / "recorder.db")) as running:
        yield running


@pytest.fixture
def disabled(server: Server) -> Server:
    assert session().post(server.url + "/api/chaos/disable", timeout=10).status_code == 200
    return server


def _enabled(server: Server) -> bool:
    return bool(session().get(server.url + "/api/chaos/status", timeout=10).json()["enabled"])


def _curl(*args: str) -> tuple[int, str]:
    """curl's status code and body (curl never consults a proxy for 127.0.0.1 here)."""
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is missing: .ci/run installs it with apt-get")
        pytest.skip("curl is not installed (apt-get install curl; CI has it)")
    done = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "--max-time", "10", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_what_the_issue_asks(disabled: Server) -> None:
    url = disabled.url + "/api/chaos"
    forged = ("-X", "POST", "-H", f"Origin: {EVIL}", "-H", "Content-Type: text/plain")
    code, body = _curl(*forged, "--data", "x", url + "/enable")
    assert code == 403, body
    assert "--allowed-origin" in body
    assert not _enabled(disabled)  # changed nothing
    code, body = _curl("-H", "Host: evil.example", url + "/status")
    assert code == 403 and "--allowed-host" in body, body
    code, body = _curl("-X", "POST", url + "/enable")
    assert code == 200, body
    assert _enabled(disabled)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"Host": "chaos.example:8080"}, 200, id="allowed-host"),
        pytest.param({"Host": "other.example"}, 403, id="rebound-host"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, 403, id="script-tag"),
        pytest.param({"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}, 403, id="fetch"),
    ],
)
def test_the_admin_port_refuses_the_same(
    disabled: Server, headers: dict[str, str], status: int
) -> None:
    admin = _admin_url(disabled.log) + "/api/chaos"
    assert session().get(admin + "/status", headers=headers, timeout=10).status_code == status
    response = session().post(admin + "/enable", headers=headers, timeout=10)
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert _enabled(disabled) is (status == 200)


def test_a_form_body_is_refused_and_json_is_taken(disabled: Server) -> None:
    url = disabled.url + "/api/chaos/config/latency"
    body = '{"enabled": true, "fixed_delay_ms": 10}'
    code, answer = _curl("-X", "PUT", url, "-d", body)  # curl -d: a form type
    assert code == 415 and "Content-Type: application/json" in answer, answer
    code, answer = _curl("-X", "PUT", url, "-H", "Content-Type: application/json", "-d", body)
    assert code == 200, answer
    session().post(disabled.url + "/api/chaos/reset", timeout=10)


def test_star_turns_the_host_check_off_and_says_so(tmp_path: Path) -> None:
    with mockforge_serve(tmp_path, "--allowed-host", "*") as running:
        status = running.url + "/api/chaos/status"
        assert session().get(status, headers={"Host": "evil.example"}, timeout=10).ok
        assert "WARNING: --allowed-host '*': the Host check is off" in running.log()


# -- Chromium -------------------------------------------------------------------------


def _page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = b"<!doctype html><title>another site</title><p>nothing here"
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
    return [body]


# Run in the page: a simple cross-origin POST (no preflight: text/plain, no-cors), then a
# read of the status; each outcome as text.
FORGE = """
const [url, done] = arguments;
const results = {};
try {
  const sent = await fetch(url + "/enable", {method: "POST", mode: "no-cors",
    headers: {"Content-Type": "text/plain"}, body: "x"});
  results.post = "sent:" + sent.type;
} catch (error) { results.post = "error:" + error.name; }
try {
  const read = await fetch(url + "/status");
  results.read = "read:" + read.status;
} catch (error) { results.read = "error:" + error.name; }
done(results);
"""


def test_a_page_on_another_port_cannot_drive_the_server(disabled: Server, tmp_path: Path) -> None:
    with werkzeug_server(_page, ready_path="/") as other, chromium(tmp_path) as driver:
        driver.get(other.url + "/")
        results = driver.execute_async_script(FORGE, disabled.url + "/api/chaos")
    assert results["post"] == "sent:opaque"  # the browser sent it: only the server refuses
    assert results["read"] == "error:TypeError"  # no CORS: the page reads nothing
    assert not _enabled(disabled)


def test_a_rebound_name_gets_nothing(disabled: Server, tmp_path: Path) -> None:
    """evil.example resolves to 127.0.0.1 (a rebinding attacker's DNS): the page is
    same-origin with the server, so only the Host check stands in its way."""
    port = disabled.url.rsplit(":", 1)[1]
    rules = "--host-resolver-rules=MAP evil.example 127.0.0.1"
    with chromium(tmp_path, flags=(rules,)) as driver:
        driver.get(f"http://evil.example:{port}/api/test")  # the app itself: served
        served = driver.find_element("tag name", "body").text
        results = driver.execute_async_script(FORGE, f"http://evil.example:{port}/api/chaos")
        driver.get(f"http://evil.example:{port}/api/chaos/ui")
        dashboard = driver.find_element("tag name", "body").text
    assert served and "host not allowed" not in served
    assert results["read"] == "read:403"
    assert "host not allowed" in dashboard
    assert not _enabled(disabled)


def test_the_dashboard_and_report_run_under_their_policy(disabled: Server, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    http = session()
    for _ in range(5):
        http.get(disabled.url + "/api/test", timeout=10)
    status_url = disabled.url + "/api/chaos/status"
    with chromium(tmp_path, height=2200) as driver:
        driver.get(disabled.url + "/api/chaos/ui")
        wait = WebDriverWait(driver, 10)
        driver.find_element("id", "enabled").click()  # a same-origin POST with Origin
        wait.until(lambda d: http.get(status_url, timeout=10).json()["enabled"])
        wait.until(lambda d: len(d.find_elements("css selector", "#requests tbody tr")) > 0)
        dashboard_errors = console_errors(driver)
        driver.get(disabled.url + "/api/chaos/report")  # served: with its policy
        drawn = driver.execute_script(
            "return Object.values(window.charts || {}).map(c => c.getDatasetMeta(0).data.length)"
        )
        # (The dashboard's polling, cut short by leaving it, may log a failed fetch.)
        report_errors = [e for e in console_errors(driver) if "/api/chaos/ui" not in e]
    assert dashboard_errors == [] and report_errors == []
    assert len(drawn) == 4 and drawn[0] > 0, drawn  # Chart.js and the drawing ran
    report = http.get(disabled.url + "/api/chaos/report", timeout=30)
    assert "frame-ancestors 'none'" in report.headers["Content-Security-Policy"]


def test_the_middleware_under_plain_gunicorn_goes_by_the_socket(tmp_path: Path) -> None:
    """No --host known: the connection's own end (127.0.0.1) says loopback."""
    env = {"MOCKFORGE_ALLOWED_HOSTS": "chaos.example"}
    with gunicorn_server(tmp_path, env=env) as running:
        status = running.url + "/api/chaos/status"
        http = session()
        assert http.get(status, timeout=10).status_code == 200
        assert http.get(status, headers={"Host": "chaos.example"}, timeout=10).status_code == 200
        refused = http.get(status, headers={"Host": "evil.example"}, timeout=10)
        assert refused.status_code == 403, refused.text
        assert "MOCKFORGE_ALLOWED_HOSTS=evil.example" in refused.json()["problems"][0]
        assert http.get(running.url + "/", headers={"Host": "evil.example"}, timeout=10).ok
