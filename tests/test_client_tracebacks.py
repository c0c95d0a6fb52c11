"""A failed ``chaos.assert_*`` shows the user's test line and our message, not our
source: the assertion helpers hide their frames from pytest (``__tracebackhide__``)."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]
# Plugins that are not ours stay out of the inner run (schemathesis' alone takes a second).
NOT_OURS = ("-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:benchmark")
NOT_OURS += ("-p", "no:anyio")

# The verdicts a server gives for a client that retried at once after a 429 saying
# Retry-After: 1 (no server here: the helpers' own frames are what is tested).
TEST_FILE = textwrap.dedent(
    """
    from mockforge_wsgi.client import ChaosClient

    CALL = {
        "method": "GET", "path": "/api/test", "idempotency_key": None, "attempts": 2,
        "statuses": [429, 200], "faults": ["rate_limit", None], "waits_s": [0.0],
        "retry_after_s": [1.0, None], "retry_after_honoured": [False],
        "backoff_grew": None, "succeeded": True, "unsafe_retry": True,
    }

    def client():
        chaos = ChaosClient("http://127.0.0.1:9")
        chaos.verdicts = lambda **filters: {"calls": [CALL], "summary": {}}
        return chaos

    def test_retries():
        client().assert_retries(honours_retry_after=True)  # the user's line

    def test_unsafe():
        client().assert_no_unsafe_retries()  # the user's line
    """
)


def test_a_failed_assertion_helper_shows_the_users_line_and_our_message(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest(*NOT_OURS)
    result.assert_outcomes(failed=2)
    shown = result.stdout.str()
    result.stdout.fnmatch_lines(["*# the user's line", "E *AssertionError: *"] * 2)
    assert "GET /api/test: told Retry-After [1.0] s, waited [0.00] s" in shown, shown
    assert "GET /api/test: 2 attempts after ['rate_limit'] (statuses 429, 200)" in shown, shown
    assert "client.py" not in shown, shown
    assert "raise AssertionError" not in shown, shown
