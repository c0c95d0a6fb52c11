"""A requests client that survives `service_instability`: urllib3's Retry on 5xx.

It needs requests (`python3 -m pip install -e '.[examples]'` from the repository)::

    mockforge serve --chaos --chaos-scenario service_instability --seed 6 &
    python examples/retry_client.py http://127.0.0.1:3000
"""

from __future__ import annotations

import sys

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


def make_session(retries: int = 6) -> requests.Session:
    """Retries 5xx answers (the scenario's HTTP errors and its 504 timeouts) at once."""
    retry = Retry(
        total=retries,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=None,  # retry any method: the mock API is idempotent
        backoff_factor=0,
    )
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


def fetch(session: requests.Session, url: str) -> dict[str, object]:
    response = session.get(url + "/api/test", timeout=15)
    response.raise_for_status()
    payload: dict[str, object] = response.json()
    return payload


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3000"
    with make_session() as http:
        for _ in range(10):
            print(fetch(http, base))
