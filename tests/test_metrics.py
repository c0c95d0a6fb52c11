"""Prometheus metrics: exact counts in process and across four gunicorn workers."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import free_port, mockforge_serve, once_counted, one_request_per_sync_worker, session
from test_shared_state import _wait_for_workers
from werkzeug.test import Client

from mockforge_wsgi import ChaosMiddleware, load_config
from mockforge_wsgi.metrics import MetricsMiddleware


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def sample(text: str, metric: str, **labels: str) -> float:
    """The value of one sample in the text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_counts_in_process() -> None:
    config = load_config(
        environ={},
        overrides={
            "enabled": True,
            "latency": {"enabled": True, "fixed_delay_ms": 1},
            "fault_injection": {
                "enabled": True,
                "http_errors": [503],
                "pattern": "fail_first:3:503",
            },
        },
    )
    chaos = ChaosMiddleware(hello, config=config)
    client = Client(MetricsMiddleware(chaos))
    statuses = [client.get("/x", buffered=True).status_code for _ in range(5)]
    assert statuses == [503, 503, 503, 200, 200]
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "mockforge_http_requests_total", route="/x", status="503") == 3
    assert sample(text, "mockforge_http_requests_total", route="/x", status="200") == 2
    assert sample(text, "mockforge_chaos_injections_total", type="http_error", detail="503") == 3
    assert sample(text, "mockforge_chaos_injections_total", type="latency") == 5
    assert sample(text, "mockforge_chaos_injected_latency_seconds_count") == 5
    assert sample(text, "mockforge_chaos_enabled") == 1
    assert sample(text, "mockforge_http_request_duration_seconds_count", route="/x") == 5
    assert sample(text, "mockforge_store_errors_total") == 0
    assert sample(text, "mockforge_internal_errors_total") == 0
    chaos.store.count(["store_errors", "store_errors"])  # two calls the store failed
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "mockforge_store_errors_total") == 2


@pytest.mark.server
def test_exact_counts_across_four_workers(tmp_path: Path) -> None:
    metrics_port = free_port()
    args = (
        "--metrics",
        "--metrics-port",
        str(metrics_port),
        "--workers",
        "4",
        "--worker-class",
        "sync",
    )
    with (
        mockforge_serve(tmp_path, *args, env={"MOCKFORGE_DEBUG_HEADERS": "1"}) as server,
        session() as http,
    ):
        api = server.url + "/api/chaos"
        _wait_for_workers(server.url, 4)  # sync workers boot one after another
        http.post(api + "/enable", timeout=10).raise_for_status()
        faults = {"enabled": True, "http_errors": [502], "http_error_probability": 1.0}
        http.put(api + "/config/faults", json=faults, timeout=10).raise_for_status()
        http.put(api + "/config/latency", json={"enabled": True, "fixed_delay_ms": 20}, timeout=10)
        http.post(api + "/scenarios", json={"name": "mine", "fault_injection": faults}, timeout=10)
        http.post(api + "/scenarios/mine", timeout=10).raise_for_status()

        # 40 requests, 10 to each worker for sure (servers.py): every count is the sum.
        results = [
            answer
            for _ in range(10)
            for answer in one_request_per_sync_worker(server.url, 4, "/api/test")
        ]
        assert [status for status, _, _ in results] == [502] * 40
        workers = Counter(headers["X-Mockforge-Worker"] for _, headers, _ in results)
        assert sorted(workers.values()) == [10] * 4, workers
        # Each worker counts an answer when it closes it, after the client read it: the
        # worker that serves /metrics may read another's count a moment early. (The
        # injections are counted last, so once they are all in, the rest is too.)
        text = once_counted(
            lambda: http.get(server.url + "/metrics", timeout=10).text,
            lambda read: sample(read, "mockforge_chaos_injections_total", type="http_error") >= 40,
        )
        assert (
            sample(text, "mockforge_chaos_injections_total", type="http_error", detail="502") == 40
        )
        assert sample(text, "mockforge_http_requests_total", route="/api/test", status="502") == 40
        assert sample(text, "mockforge_chaos_active_scenario", name="mine") == 1
        on_port = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert (
            sample(on_port, "mockforge_chaos_injections_total", type="http_error", detail="502")
            == 40
        )


@pytest.mark.server
@pytest.mark.parametrize("multiproc_dir", [False, True], ids=["no-dir", "dir"])
def test_plain_gunicorn_workers_counting_alone_are_warned_of(
    tmp_path: Path, multiproc_dir: bool
) -> None:
    """``MOCKFORGE_METRICS=1 gunicorn -w 2 mockforge_wsgi.app:app`` without
    PROMETHEUS_MULTIPROC_DIR: each worker counts alone, which the log says (the memory
    store says the same of the chaos state); with the directory, nothing is said."""
    from servers import gunicorn_server

    env = {"MOCKFORGE_METRICS": "1"}
    if multiproc_dir:
        (tmp_path / "prom").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
    with gunicorn_server(
        tmp_path, env=env, workers=2, app="mockforge_wsgi.app:app", ready_path="/api/test"
    ) as server:
        # A worker builds the app before it serves: the one that answered the readiness
        # request has logged its warning (or not) by now; wait only for a missing one.
        warned = "mockforge: metrics: gunicorn runs 2 workers but PROMETHEUS_MULTIPROC_DIR"
        log = once_counted(server.log, lambda text: (warned in text) is not multiproc_dir)
    assert (warned in log) is not multiproc_dir, log
