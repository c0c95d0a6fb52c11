"""The Flask app `benchmarks/server.py` serves, built for one case (BENCH_CASE).

    BENCH_CASE=limit-embedded gunicorn -w 2 server_app:app     # from benchmarks/

Every case serves the same route (``GET /hello``, a 13-byte text answer); only what
wraps it differs. BENCH_REDIS names the Redis of the Redis cases. The ``proxy-*`` cases
(benchmarks/proxy.py) forward everything to BENCH_UPSTREAM, a server of the plain case
(which also serves ``GET /big``, 10 MB).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.proxy import ChaosProxy
from mockforge_wsgi.state import store_from_url

NEVER_REFUSED = {"enabled": True, "requests_per_second": 1_000_000, "burst_size": 1_000_000}

# Chaos cases: the config, and the store by URL (None: the default one, i.e. under a
# server with several workers the embedded store they share).
CHAOS: dict[str, tuple[dict[str, Any], str | None]] = {
    "chaos-disabled": ({}, None),
    "limit-memory": ({"enabled": True, "rate_limit": NEVER_REFUSED}, "memory://"),
    "limit-embedded": ({"enabled": True, "rate_limit": NEVER_REFUSED}, None),
    "limit-embedded-no-headers": (
        {"enabled": True, "rate_limit": {**NEVER_REFUSED, "expose_headers": False}},
        None,
    ),
    "limit-embedded-headers-none": (
        {"enabled": True, "rate_limit": {**NEVER_REFUSED, "headers": "none"}},
        None,
    ),
    "limit-embedded-exact": (
        {"enabled": True, "rate_limit": {**NEVER_REFUSED, "store_mode": "exact"}},
        None,
    ),
    "limit-redis": ({"enabled": True, "rate_limit": NEVER_REFUSED}, "redis"),
    "limit-redis-headers-none": (
        {"enabled": True, "rate_limit": {**NEVER_REFUSED, "headers": "none"}},
        "redis",
    ),
    "limit-redis-exact": (
        {"enabled": True, "rate_limit": {**NEVER_REFUSED, "store_mode": "exact"}},
        "redis",
    ),
    "latency-1us": (
        {
            "enabled": True,
            "latency": {"enabled": True, "fixed_delay_ms": 0.001, "probability": 1.0},
        },
        None,
    ),
}


SEVEN_HEADERS = [
    ("RateLimit-Limit", "1000000"),
    ("RateLimit-Remaining", "999999"),
    ("RateLimit-Reset", "1"),
    ("X-RateLimit-Limit", "1000000"),
    ("X-RateLimit-Remaining", "999999"),
    ("X-RateLimit-Reset", "1"),
    ("X-Mockforge-Request-Id", "0123456789abcdef"),
]


BIG_BYTES = 10 * 1024 * 1024


def build(case: str) -> Flask:
    app = Flask(__name__)

    @app.get("/hello")
    def hello() -> tuple[str, int, dict[str, str]]:
        return "Hello, world!", 200, {"Content-Type": "text/plain"}

    @app.get("/big")
    def big() -> Any:
        block = b"x" * 65536
        chunks = (block for _ in range(BIG_BYTES // len(block)))
        return app.response_class(chunks, headers={"Content-Length": str(BIG_BYTES)})

    if case.startswith("proxy-"):
        app.wsgi_app = _proxy(case, os.environ["BENCH_UPSTREAM"])  # type: ignore[method-assign]
    elif case in CHAOS:
        overrides, store_url = CHAOS[case]
        if store_url == "redis":
            store_url = os.environ["BENCH_REDIS"]
        store = store_from_url(store_url) if store_url else None
        config = load_config(environ={}, overrides=overrides)
        app.wsgi_app = ChaosMiddleware(app.wsgi_app, config=config, store=store)  # type: ignore[method-assign]
    elif case.startswith("flask-limiter"):
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address

        storage = os.environ["BENCH_REDIS"] if case.endswith("redis") else "memory://"
        Limiter(
            get_remote_address,
            app=app,
            default_limits=["1000000 per second"],
            storage_uri=storage,
        )
    elif case == "plain-with-headers":
        # What the response headers of the admitted path cost alone: the same six
        # RateLimit-* headers and a request id, added by Flask itself, no chaos.
        @app.after_request
        def add_headers(response: Any) -> Any:
            response.headers.extend(SEVEN_HEADERS)
            return response

    elif case not in ("plain", "plain-again"):
        raise SystemExit(f"unknown BENCH_CASE {case!r}")
    return app


def _proxy(case: str, upstream: str) -> Any:
    """A proxy to ``upstream``: werkzeug's ProxyMiddleware (the peer: http.client, a
    connection per request), or ours with chaos off or a limit never hit."""
    if case == "proxy-werkzeug":
        from werkzeug.middleware.http_proxy import ProxyMiddleware

        # It forwards only paths under a prefix ("/" never matches): put one in front.
        proxy = ProxyMiddleware(None, {"/up": {"target": upstream + "/", "remove_prefix": True}})  # type: ignore[arg-type]
        return lambda environ, start: proxy(
            {**environ, "PATH_INFO": "/up" + environ["PATH_INFO"]}, start
        )
    overrides = {
        "proxy-chaos-disabled": {},
        "proxy-limit-embedded": {"enabled": True, "rate_limit": NEVER_REFUSED},
    }[case]
    config = load_config(environ={}, overrides=overrides)
    return ChaosMiddleware(ChaosProxy(upstream), config=config)


app = build(os.environ.get("BENCH_CASE", "plain"))
