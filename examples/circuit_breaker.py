"""A pybreaker circuit breaker that opens under `cascading_failure`.

The scenario's 1-5 s delays outlast the client's 0.5 s timeout and its errors fail
calls outright; after three failures the breaker opens and later calls fail fast,
without touching the struggling service.

It needs pybreaker and requests (`python3 -m pip install -e '.[examples]'` from the
repository)::

    mockforge serve --chaos --chaos-scenario cascading_failure &
    python examples/circuit_breaker.py http://127.0.0.1:3000
"""

from __future__ import annotations

import sys

import pybreaker
import requests

breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=60)


@breaker
def call(session: requests.Session, url: str) -> int:
    response = session.get(url + "/api/test", timeout=0.5)
    response.raise_for_status()
    return response.status_code


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3000"
    with requests.Session() as http:
        for attempt in range(10):
            try:
                print(attempt, call(http, base))
            except pybreaker.CircuitBreakerError:
                print(attempt, "breaker open: failing fast")
            except requests.RequestException as error:
                print(attempt, "failed:", type(error).__name__)
