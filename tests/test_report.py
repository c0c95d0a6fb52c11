"""The experiment report (pure data, the page) and, in a real headless Chromium, the
report and the live dashboard of a real server with traffic through a scenario."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from browser import chromium, console_errors, screenshot
from requests.adapters import HTTPAdapter
from servers import Server, mockforge_serve
from urllib3.util.retry import Retry

from mockforge_wsgi.report import SCORE_FORMULA, render_report, report_data

TOKEN = "dash-s3cret"


def row(at: float, status: int = 200, ms: float = 10.0, **fields: Any) -> dict[str, Any]:
    return {"time": at, "duration_ms": ms, "method": "GET", "path": "/a", "status": status,
            "fault_type": None, "injected": "", "scenario": None, **fields}  # fmt: skip


def brownout_rows() -> list[dict[str, Any]]:
    """10 s calm (10 ms), 10 s under 'brownout' (100 ms, every other one a 503), 10 s calm."""
    rows = [row(float(t), path=f"/c{t}") for t in range(10)]
    for t in range(10, 20):
        failed = t % 2 == 0
        rows.append(
            row(float(t), 503 if failed else 200, 100.0, path=f"/b{t}", scenario="brownout",
                fault_type="http_error" if failed else "latency", latency_ms=90.0,
                injected="fault=http_503")
        )  # fmt: skip
    rows += [row(float(t), path=f"/d{t}") for t in range(21, 31)]
    return rows


def test_scenario_windows_before_during_and_after() -> None:
    [window] = report_data(brownout_rows())["windows"]
    assert (window["scenario"], window["start"], window["end"]) == ("brownout", 10.0, 19.0)
    assert window["before"] == {"requests": 9, "success_ratio": 1.0, "p50_ms": 10.0,
                                "p99_ms": 10.0}  # fmt: skip  # 1..9 before, 21..28 after: 9 s each
    assert window["during"]["requests"] == 10 and window["during"]["success_ratio"] == 0.5
    assert window["during"]["p99_ms"] == 100.0
    assert window["after"]["requests"] == 8 and window["after"]["success_ratio"] == 1.0


def test_the_score_follows_its_printed_formula() -> None:
    score = report_data(brownout_rows())["score"]
    assert score["formula"] == SCORE_FORMULA
    # 30 calls (each path once), 25 succeeded; p99 100 ms vs 10 ms; first success after
    # the window's end (19) at 21: 2 s to recover.
    assert score["success_ratio"] == pytest.approx(25 / 30)
    assert score["p99_inflation"] == 10.0 and score["recovery_s"] == 2.0
    expected = 100 * (25 / 30) * (1 / 10) ** 0.5 * (1 / (1 + 2 / 10))
    assert score["score"] == pytest.approx(expected, abs=0.05)


def test_a_score_of_0_says_which_factor_made_it_0() -> None:
    never_recovered = [r for r in brownout_rows() if r["time"] < 20]  # nothing after it
    score = report_data(never_recovered)["score"]
    assert score["score"] == 0.0
    assert score["zero_because"] == [
        "recovery factor is 0: no request succeeded after the last scenario ended (the "
        "service never recovered while recording, or nothing was recorded after it)"
    ]
    all_failed = [row(float(t), 503, scenario="down", fault_type="http_error") for t in range(5)]
    reasons = report_data(all_failed)["score"]["zero_because"]
    assert [reason.split(":")[0] for reason in reasons] == [
        "call success ratio is 0",
        "recovery factor is 0",
    ]
    page = render_report(never_recovered)
    assert "0 because the recovery factor is 0: no request succeeded after" in page
    assert report_data(brownout_rows())["score"]["zero_because"] == []  # not 0: no reason
    assert "0 because" not in render_report(brownout_rows())


def test_series_for_the_charts() -> None:
    data = report_data(brownout_rows())
    assert data["injections"] == {"http_error": 5, "latency": 10}  # a delay on each
    assert data["statuses"] == {200: 25, 503: 5}
    assert sum(data["histogram"]["counts"]) == 30
    buckets = data["over_time"]
    assert sum(sum(b["statuses"].values()) for b in buckets) == 30
    assert max(b["p99_ms"] for b in buckets) == 100.0


def test_the_page_is_self_contained() -> None:
    page = render_report(brownout_rows())
    assert "Chart.js v4" in page  # shipped inside, not fetched
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", page)
    data = re.search(r'id="report-data">(.*?)</script>', page, re.DOTALL)
    assert data is not None and json.loads(data.group(1))["requests"] == 30
    assert SCORE_FORMULA.replace(">", "&gt;") in page
    empty = render_report([])
    assert "No requests recorded." in empty and "No scenario ran" in empty


def test_text_in_rows_is_escaped() -> None:
    path = "/</script><img src=x onerror=alert(1)>"
    page = render_report([row(1.0, path=path)])
    before, block = page.split('id="report-data">')
    assert "<img" not in before
    # The data block ends at its own </script>, not at one a recorded path brought in:
    # what is up to the first </script> is the whole JSON, and nothing after it is a tag.
    data, after = block.split("</script>", 1)
    assert path in json.dumps(json.loads(data))
    assert "<img" not in after


def test_the_apps_own_calls_are_shown_apart_by_host() -> None:
    payments = "payments.internal:443"
    calls = [
        row(1.0, 503, 2.0, host=payments, fault_type="http_error", direction="outbound"),
        row(2.0, 200, 30.0, host=payments, direction="outbound"),
        row(3.0, 0, 200.0, host="auth.internal:80", error="ReadTimeoutError",
            fault_type="timeout", direction="outbound"),
    ]  # fmt: skip
    page = render_report(brownout_rows(), outbound=calls)
    data = json.loads(re.findall(r'id="report-data">(.*?)</script>', page, re.DOTALL)[0])
    assert data["requests"] == 30  # the client's requests only: its verdicts and score
    assert data["outbound"][1] == {
        "host": payments,
        "calls": 2,
        "outcomes": {"503": 1, "200": 1},
        "injections": {"http_error": 1},
        "p50_ms": data["outbound"][1]["p50_ms"],
        "p99_ms": data["outbound"][1]["p99_ms"],
    }
    assert data["outbound"][0]["outcomes"] == {"ReadTimeoutError": 1}
    table = page.split('<table id="outbound">', 1)[1].split("</table>", 1)[0]
    assert "<td>payments.internal:443</td><td>2</td><td>503: 1 200: 1</td>" in table
    assert "No outbound call recorded." in render_report(brownout_rows())


# -- a real server, real traffic, a real browser ----------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers, the recorder on, an admin token; traffic before, during and after a
    scenario that slows and fails requests, from a client that retries."""
    tmp = tmp_path_factory.mktemp("report")
    args = ("--recorder-db", str(tmp / "recorder.db"), "--workers", "2")
    with mockforge_serve(tmp, *args, env={"MOCKFORGE_ADMIN_TOKEN": TOKEN}) as running:
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {TOKEN}"
        api = running.url + "/api/chaos"
        # A call that still fails after its retries is part of the picture, not an error.
        retry = Retry(total=4, status_forcelist=[503], backoff_factor=0.01, raise_on_status=False)
        with requests.Session() as client:
            client.mount("http://", HTTPAdapter(max_retries=retry))

            def traffic(seconds: float) -> None:
                ends = time.monotonic() + seconds
                while time.monotonic() < ends:
                    client.get(running.url + "/api/test", timeout=10)

            traffic(0.5)
            brownout = {  # no Retry-After: the client retries at once, traffic goes on
                "name": "brownout",
                "latency": {"enabled": True, "random_delay_range_ms": [20, 60]},
                "fault_injection": {"enabled": True, "http_error_probability": 0.3,
                                    "http_errors": [503], "retry_after_s": 0},
            }  # fmt: skip
            admin.post(api + "/enable", timeout=10).raise_for_status()
            admin.post(api + "/scenarios", json=brownout, timeout=10).raise_for_status()
            admin.post(api + "/scenarios/brownout", json={}, timeout=10).raise_for_status()
            traffic(1.0)
            admin.delete(api + "/scenarios", timeout=10).raise_for_status()
            traffic(0.5)
        admin.post(api + "/disable", timeout=10).raise_for_status()
        yield running


@pytest.mark.server
def test_the_report_opens_offline_and_draws_every_chart(server: Server, tmp_path: Path) -> None:
    answer = requests.get(
        server.url + "/api/chaos/report",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    page = tmp_path / "report.html"
    page.write_bytes(answer.content)
    assert requests.get(server.url + "/api/chaos/report", timeout=10).status_code == 401
    with chromium(tmp_path, height=2200) as driver:
        driver.get(page.as_uri())  # a file: nothing to fetch
        drawn = driver.execute_script(
            "return Object.fromEntries(Object.entries(window.charts).map(([id, chart]) =>"
            " [id, chart.data.datasets.map((_, i) => chart.getDatasetMeta(i).data.length)]))"
        )
        windows = driver.find_element("id", "windows").text
        score = driver.find_element("id", "score").text
        errors = console_errors(driver)
        screenshot(driver, tmp_path, "report")
    assert errors == []
    assert set(drawn) == {
        "latency-over-time",
        "latency-histogram",
        "statuses-over-time",
        "injections",
    }
    assert all(points and all(points) for points in drawn.values()), drawn
    assert "brownout" in windows
    # The score shown is the printed formula applied to the parts the page carries, and
    # this traffic (failures, a slowdown) scores strictly between 0 and 100.
    found = re.search(r'id="report-data">(.*?)</script>', answer.text, re.DOTALL)
    assert found is not None
    parts = json.loads(found.group(1))["score"]
    expected = (
        100
        * parts["success_ratio"]
        * min(1.0, 1 / parts["p99_inflation"]) ** 0.5
        / (1 + parts["recovery_s"] / 10)
    )
    assert 0 < expected < 100
    assert float(score) == pytest.approx(expected, rel=0.01, abs=0.05)


@pytest.mark.server
def test_the_report_from_the_command_line(server: Server, tmp_path: Path) -> None:
    database = next(server.log_path.parent.glob("recorder.db"))
    out = tmp_path / "cli-report.html"
    done = subprocess.run(
        [sys.executable, "-m", "mockforge_wsgi", "report", "--db", str(database), "--out",
         str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    requests_recorded = int(re.match(r".*: (\d+) requests", done.stdout).group(1))  # type: ignore[union-attr]
    assert requests_recorded > 20
    assert "brownout" in out.read_text(encoding="utf-8")


@pytest.mark.server
def test_the_dashboard_shows_and_changes_the_server_state(server: Server, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    status_url = server.url + "/api/chaos/status"
    with chromium(tmp_path) as driver:
        driver.get(server.url + "/api/chaos/ui")
        wait = WebDriverWait(driver, 10)
        # Reads are open; the recorder's requests need the token: the page asks for it.
        wait.until(lambda d: d.find_element("id", "token-box").is_displayed())
        driver.find_element("id", "token").send_keys(TOKEN)
        driver.find_element("id", "token-save").click()
        wait.until(lambda d: len(d.find_elements("css selector", "#requests tbody tr")) > 0)
        assert driver.execute_script("return sessionStorage.getItem('mockforge-token')") == TOKEN

        assert requests.get(status_url, timeout=10).json()["enabled"] is False
        driver.find_element("id", "enabled").click()
        wait.until(lambda d: requests.get(status_url, timeout=10).json()["enabled"])
        driver.find_element("css selector", "button[data-scenario='slow_backend']").click()
        wait.until(
            lambda d: (
                (requests.get(status_url, timeout=10).json()["active_scenario"] or {}).get("name")
                == "slow_backend"
            )
        )
        wait.until(lambda d: d.find_element("id", "active-name").text == "slow_backend")
        assert driver.find_element("id", "active-time").text == "(api, until stopped)"
        points = driver.execute_script(
            "const c = Chart.getChart(document.getElementById('latency'));"
            "return c.getDatasetMeta(0).data.length"
        )
        counters = driver.find_element("id", "counters").text
        errors = [e for e in console_errors(driver) if "401" not in e]  # before the token
        screenshot(driver, tmp_path, "dashboard")
        driver.find_element("id", "reset").click()
        wait.until(
            lambda d: requests.get(status_url, timeout=10).json()["active_scenario"] is None
        )
    assert errors == []
    assert points > 20
    assert "http_error" in counters
