"""Plain WSGI apps the tests serve, in-process and under a real gunicorn.

gunicorn loads ``wsgi_apps:app`` (run with ``--chdir tests``): the base app wrapped
in chaos configured by ``MOCKFORGE_CONFIG`` and ``MOCKFORGE_CHAOS_*``; and
``wsgi_apps:flask_app``, a Flask app whose ``wsgi_app`` is wrapped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Flask

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware


def base_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``/bytes/N`` (N bytes, Content-Length), ``/stream/N`` (no length), ``/events/N/MS``
    (N events, MS ms apart, no length: a server-sent stream), ``/echo`` (the request
    body), ``/pid`` (the worker's pid), else ``hello``."""
    path = environ.get("PATH_INFO", "/")
    if path.startswith("/events/"):
        count, gap_ms = (int(part) for part in path.split("/")[2:4])
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return _events(count, gap_ms / 1000.0)
    if path.startswith(("/bytes/", "/stream/")):
        size = int(path.rsplit("/", 1)[1])
        headers = [("Content-Type", "application/octet-stream")]
        if path.startswith("/bytes/"):
            headers.append(("Content-Length", str(size)))
        start_response("200 OK", headers)
        return _chunks(size)
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
    elif path == "/pid":
        body = str(os.getpid()).encode()
    else:
        body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _events(count: int, gap_s: float) -> Iterator[bytes]:
    for n in range(count):
        if n:
            time.sleep(gap_s)
        yield f"data: {n}\n\n".encode()


def _chunks(size: int, chunk: int = 16384) -> Iterator[bytes]:
    while size > 0:
        step = min(size, chunk)
        size -= step
        yield b"x" * step


app = ChaosMiddleware(base_app, config=load_config(os.environ.get("MOCKFORGE_CONFIG")))


# A user's Flask app with chaos mounted the way the README shows, for `gunicorn -w N`.
flask_app = Flask(__name__)


@flask_app.get("/api/test")
def flask_test() -> dict[str, str]:
    return {"message": "from flask"}


flask_app.wsgi_app = ChaosMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, config=load_config(os.environ.get("MOCKFORGE_CONFIG"))
)
