"""The examples/ harnesses, run as their docstrings say (``mockforge serve ... &`` then
the script, as a reader would), against a real server."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from doc_blocks import run_lines, shell

pytestmark = pytest.mark.server

EXAMPLES = Path(__file__).parent.parent / "examples"


def _run(name: str) -> tuple[str, str]:
    """Every run line of ``examples/<name>``: what the last printed, and the counters of
    the server its first line started (if it started one)."""
    lines = run_lines(EXAMPLES / name)
    assert lines, f"examples/{name} says how to run it"
    with shell(f"examples/{name}") as running:
        out = ""
        for line in lines:
            _, out = running.run(line)
        counters = ""
        if running.url:
            with urllib.request.urlopen(running.url + "/api/chaos/status", timeout=10) as answer:
                counters = json.dumps(json.load(answer)["counters"])
    return out, counters


def test_retries_survive_service_instability() -> None:
    # --seed 6 (in its run line): the first 13 requests draw 3 HTTP errors and no 5 s
    # timeout (request n draws from (seed, n)), so the run is the same every time.
    out, counters = _run("retry_client.py")
    answers = out.splitlines()
    assert len(answers) == 10 and all("Hello from mockforge" in line for line in answers), out
    assert json.loads(counters)["http_error"] == 3  # each one retried away


def test_the_breaker_opens_under_cascading_failure() -> None:
    out, _ = _run("circuit_breaker.py")
    lines = out.splitlines()
    # two timeouts; the third failure opens the breaker (pybreaker raises its error on
    # that call), and every later call fails fast without touching the service
    assert [line.split(":")[0] for line in lines[:2]] == ["0 failed", "1 failed"], out
    assert lines[2:] == [f"{n} breaker open: failing fast" for n in range(2, 10)], out


def test_the_unittest_harness() -> None:
    out, _ = _run("unittest_harness.py")
    assert "Ran 2 tests" in out and out.rstrip().endswith("OK"), out
