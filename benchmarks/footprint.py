"""Is the admitted path dearer beside Flask because of Flask, or because of its size?

    python benchmarks/footprint.py [--samples 30] [--batch 500]

The bare app and the bare app wrapped (admitted under a global limit, memory store),
each request followed by other work that is not wrapped and does not touch our
environ or headers: nothing; a Flask route called on its own environ; a mix of standard
library calls (json, re, urllib.parse, datetime, base64, hashlib, http.cookies) of about
the Flask route's size. If our added time grows with the work beside it, whatever that
work is, the cost is the code and data the other work runs between two of our requests
(caches and predictors cooled), not anything Flask does with our request.

Beside ours, ``minimal_limiter``: the least a global limit's admitted path must do in
Python (the clock, the GCRA step under a lock, the seven headers, a request id), written
inline with nothing else: what any Python limiter would cost here.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import http.cookies
import itertools
import json
import re
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paths

_WORD = re.compile(r"(\w+)=(\d+)")


def minimal_limiter(app: paths.App, rate: float = 1e6, burst: int = 1_000_000) -> paths.App:
    """A global GCRA limit that admits and says so, and nothing more (the floor)."""
    lock, interval, tat = threading.Lock(), 1 / rate, [0.0]
    limit = str(burst)
    headers = [
        (prefix + name, value)
        for prefix in ("RateLimit-", "X-RateLimit-")
        for name, value in (("Limit", limit), ("Remaining", limit), ("Reset", "1"))
    ]
    ids = map("{:016x}".format, itertools.count())

    def call(environ: dict[str, Any], start_response: Any) -> Any:
        now = time.monotonic()
        with lock:
            due = max(tat[0], now) + interval
            if due - now > burst * interval:  # never, under this benchmark's limit
                raise RuntimeError("refused")
            tat[0] = due
        extra = [*headers, ("X-Mockforge-Request-Id", next(ids))]

        def respond(status: str, app_headers: list[Any], exc_info: Any = None) -> Any:
            return start_response(status, app_headers + extra, exc_info)

        return app(environ, respond)

    return call


def stdlib_work() -> None:
    """About a Flask request's worth of interpreted work, none of it Flask's."""
    for n in range(3):
        document = json.loads(json.dumps({"id": n, "tags": ["a", "b"], "ok": True}))
        url = urllib.parse.urlsplit(f"https://example.org/a/{n}?x={document['id']}&y=2")
        dict(urllib.parse.parse_qsl(url.query))
        _WORD.findall(url.query)
        datetime.datetime.fromtimestamp(1_700_000_000 + n, datetime.UTC).isoformat()
        base64.b64encode(hashlib.sha256(url.path.encode()).digest())
        cookie = http.cookies.SimpleCookie()
        cookie.load(f"session=abc{n}; theme=dark")
        cookie.output()


def flask_work() -> Callable[[], None]:
    """A Flask route called on its own environ (not wrapped, not the request's)."""
    app = paths.flask_app()

    def call() -> None:
        body = app(paths.environ(), paths.start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return call


def beside(app: paths.App, work: Callable[[], None] | None) -> paths.App:
    """``app``, each request followed by ``work``."""
    if work is None:
        return app

    def call(environ: dict[str, Any], start_response: Any) -> Any:
        body = app(environ, start_response)
        work()
        return body

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    works: dict[str, Callable[[], None] | None] = {
        "nothing": None,
        "a Flask route": flask_work(),
        "standard library calls": stdlib_work,
    }
    apps = {}
    for name, work in works.items():
        apps[(name, "bare")] = beside(paths.bare_app, work)
        apps[(name, "wrapped")] = beside(paths.wrapped(paths.NEVER_REFUSED), work)
        apps[(name, "minimal")] = beside(minimal_limiter(paths.bare_app), work)
    for app in apps.values():
        paths.run(app, 1_000)
    samples: dict[Any, list[float]] = {key: [] for key in apps}
    for _ in range(args.samples):
        for key, app in apps.items():
            samples[key].append(paths.run(app, args.batch))
    print(f"# {args.samples} interleaved samples of {args.batch} calls; us per request")
    print("| beside each request | bare app + work | admitted path, added | minimal limiter |")
    print("| --- | ---: | ---: | ---: |")
    for name in works:
        bare = samples[(name, "bare")]
        added = [
            statistics.median(t - b for t, b in zip(samples[(name, kind)], bare, strict=True))
            for kind in ("wrapped", "minimal")
        ]
        print(f"| {name} | {statistics.median(bare):.2f} | {added[0]:+.2f} | {added[1]:+.2f} |")


if __name__ == "__main__":
    main()
