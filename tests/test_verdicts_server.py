"""Verdicts on real clients: requests with urllib3's Retry through a real ``mockforge
serve`` (2 workers, the recorder on), judged by /verdicts and ChaosClient's assertions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from servers import Server, mockforge_serve
from urllib3.util.retry import Retry

from mockforge_wsgi.client import ChaosClient
from mockforge_wsgi.verdicts import RETRY_AFTER_SLACK_S

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("verdicts")
    db = str(tmp / "recorder.db")
    with mockforge_serve(tmp, "--recorder-db", db, "--workers", "2") as running:
        yield running


@pytest.fixture
def chaos(server: Server) -> Iterator[ChaosClient]:
    client = ChaosClient(server.url)
    yield client
    client.reset()


def scripted(chaos: ChaosClient, path: str, *steps: Any) -> None:
    """``steps`` for requests to ``path``, once each, in order (any change restarts it)."""
    rule = {"match": {"path": path}, "fault_injection": {"enabled": True, "script": list(steps)}}
    chaos.set_config({"enabled": True, "rules": [rule]})


def client_session(test_id: dict[str, str], retry: Retry) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # 127.0.0.1 only
    session.headers.update(test_id)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


def test_a_client_that_honours_retry_after_is_told_so_and_one_that_does_not_is_named(
    server: Server, chaos: ChaosClient
) -> None:
    scripted(chaos, "/api/test", 503, "ok")  # the 503 says Retry-After: 1
    polite = Retry(total=3, status_forcelist=[503], respect_retry_after_header=True)
    with client_session(chaos.tag("polite"), polite) as http:
        assert http.get(server.url + "/api/test", timeout=10).status_code == 200
    summary = chaos.assert_retries(max_attempts=4, honours_retry_after=True)
    assert summary["calls"] == 1 and summary["retries_per_call"] == 1
    assert summary["retry_after_honoured_ratio"] == 1.0
    [call] = chaos.verdicts()["calls"]
    assert call["statuses"] == [503, 200] and call["retry_after_s"][0] == 1.0
    # urllib3 slept the second it was told. The server measures from when it closed the
    # first answer (a moment after the client read it): within the documented slack.
    assert 1.0 - RETRY_AFTER_SLACK_S <= call["waits_s"][0] < 2.0

    scripted(chaos, "/api/test", 503, "ok")
    hasty = Retry(total=3, status_forcelist=[503], respect_retry_after_header=False)
    with client_session(chaos.tag("hasty"), hasty) as http:
        assert http.get(server.url + "/api/test", timeout=10).status_code == 200
    assert chaos.verdicts()["summary"]["retry_after_honoured_ratio"] == 0.0
    with pytest.raises(
        AssertionError, match=r"GET /api/test: told Retry-After \[1\.0\] s, waited"
    ):
        chaos.assert_retries(honours_retry_after=True)
    with pytest.raises(AssertionError, match=r"2 attempts, more than max_attempts=1"):
        chaos.assert_retries(max_attempts=1)


def test_a_client_that_retries_posts_blindly_is_flagged(
    server: Server, chaos: ChaosClient
) -> None:
    """The app ran (the echo answered), then the connection was reset: the client sent
    the same POST again, with no Idempotency-Key."""
    scripted(chaos, "/api/echo", "after-app-reset", "ok")
    blind = Retry(total=3, allowed_methods=None, status_forcelist=[])  # every method
    with client_session(chaos.tag("blind"), blind) as http:
        answer = http.post(server.url + "/api/echo", json={"order": 7}, timeout=10)
    assert answer.status_code == 200
    summary = chaos.verdicts()["summary"]
    assert summary["unsafe_retries"] == 1 and summary["calls"] == 1
    message = r"1 unsafe retries.*\n  POST /api/echo: 2 attempts after \['after_app'\]"
    with pytest.raises(AssertionError, match=message):
        chaos.assert_no_unsafe_retries()

    scripted(chaos, "/api/echo", "after-app-reset", "ok")
    keyed = {**chaos.tag("keyed"), "Idempotency-Key": "order-7"}
    with client_session(keyed, blind) as http:
        assert http.post(server.url + "/api/echo", json={"order": 7}, timeout=10).ok
    assert chaos.assert_no_unsafe_retries()["calls"] == 1  # the key makes it safe


def test_bad_verdict_queries(server: Server) -> None:
    answer = requests.get(
        server.url + "/api/chaos/verdicts?since=nan&window_s=0&color=red", timeout=10
    )
    assert answer.status_code == 400
    assert answer.json()["problems"] == [
        "color: unknown parameter; allowed: since, until, path, test_id, window_s, direction",
        "since: 'nan' is not a number >= 0 and <= 1e+11",
        "window_s: '0' is not a number > 0 and <= 3600",
    ]
