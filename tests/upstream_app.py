"""The upstream service the proxy tests forward to (served by a real gunicorn)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

BIG_BYTES = 10 * 1024 * 1024
STREAM_CHUNKS = 20


COUNTS: dict[str, int] = {}  # POST /count/<key> adds one (the tests run one sync worker)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.startswith("/count/"):
        key = path.removeprefix("/count/")
        if environ["REQUEST_METHOD"] == "POST":
            COUNTS[key] = COUNTS.get(key, 0) + 1
        data = json.dumps({"count": COUNTS.get(key, 0)}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]
    if path == "/echo" or path.startswith("/echo/"):
        stream, length = environ["wsgi.input"], environ.get("CONTENT_LENGTH")
        chunked = environ.get("wsgi.input_terminated")
        body = stream.read(int(length)) if length else stream.read() if chunked else b""
        seen = {
            "method": environ["REQUEST_METHOD"],
            "path": path,
            "query": environ.get("QUERY_STRING", ""),
            "headers": {k[5:]: v for k, v in environ.items() if k.startswith("HTTP_")},
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        data = json.dumps(seen).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]
    if path == "/cookies":
        start_response(
            "201 Created",
            [
                ("Content-Length", "2"),
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; Path=/; HttpOnly"),
                ("X-Upstream", "yes"),
            ],
        )
        return [b"ok"]
    if path == "/redirect":
        start_response("302 Found", [("Location", "/elsewhere"), ("Content-Length", "0")])
        return [b""]
    if path == "/stream":  # no Content-Length: the server sends it chunked
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {n}\n".encode() for n in range(STREAM_CHUNKS))
    if path == "/big":
        start_response("200 OK", [("Content-Length", str(BIG_BYTES))])
        return _big()
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


def _big() -> Iterator[bytes]:
    block = b"x" * 65536
    for _ in range(BIG_BYTES // len(block)):
        yield block
