"""A checkout service whose payment provider is a dependency it calls with requests:
the app outbound chaos is for. Its tests (``test_checkout.py`` beside it) put the
provider under outbound chaos, with no second server and the URLs unchanged.

What it does towards its provider (``PAYMENTS_URL``, and ``PAYMENTS_FALLBACK_URL`` when
there is a second one):

- a 429 or 503 is retried (twice) after the provider's ``Retry-After``: urllib3's
  ``Retry`` honours it, as it would a real one;
- a refusal or a reset is retried, then the checkout fails over to the fallback
  provider; so does an error status that retries did not cure;
- a read timeout is not retried (the provider may have taken the request): the
  checkout answers 504 at once.

Served with chaos by ``MOCKFORGE_CHAOS_OUTBOUND_ENABLED=true mockforge serve --app
checkout:app`` from this folder (the interception is installed at start; the outbound
section then set through the management API, ``PUT /api/chaos/config/outbound``).
"""

from __future__ import annotations

import os

import requests
from flask import Flask, Response, jsonify
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

app = Flask(__name__)
app.config.from_mapping(
    PAYMENTS_URL=os.environ.get("PAYMENTS_URL", "http://127.0.0.1:8081"),
    PAYMENTS_FALLBACK_URL=os.environ.get("PAYMENTS_FALLBACK_URL", ""),
    PAYMENTS_TIMEOUT=(2.0, float(os.environ.get("PAYMENTS_READ_TIMEOUT_S", "2"))),
)


def payments_session() -> requests.Session:
    """A session whose retry policy is the app's behaviour towards its provider."""
    retry = Retry(
        total=2,
        read=False,  # a read timeout is raised at once: the charge may have gone through
        status_forcelist=(429, 503),
        respect_retry_after_header=True,  # urllib3's default, said out loud
        backoff_factor=0,
        raise_on_status=False,  # the last 503 comes back: the caller fails over
    )
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _quote(base: str) -> requests.Response:
    with payments_session() as session:
        return session.get(base + "/quote", timeout=app.config["PAYMENTS_TIMEOUT"])


@app.get("/checkout")
def checkout() -> tuple[Response, int]:
    """The provider's quote: from the primary, else the fallback; 504 on a read timeout,
    502 when no provider answered."""
    providers = [("primary", app.config["PAYMENTS_URL"])]
    if app.config["PAYMENTS_FALLBACK_URL"]:
        providers.append(("fallback", app.config["PAYMENTS_FALLBACK_URL"]))
    errors = []
    for name, base in providers:
        try:
            answer = _quote(base)
        except requests.Timeout:
            return jsonify(error=f"{name} payments timed out"), 504
        except requests.ConnectionError as error:
            errors.append(f"{name}: {type(error).__name__}")
            continue
        if answer.ok:
            return jsonify(provider=name, status=answer.status_code, quote=answer.text), 200
        errors.append(f"{name}: {answer.status_code}")
    return jsonify(error="no payment provider answered", tried=errors), 502
