"""Achieved response rate against the configured bandwidth limit, through a real server.

    python benchmarks/bandwidth.py

werkzeug's threaded server on 127.0.0.1 serves a body through ChaosMiddleware with
``bandwidth_limit_bps`` set; a raw-socket client times every ``recv``. The rate is the
bytes after the first arrival over the time between the first and the last arrival.
"""

from __future__ import annotations

import platform
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import make_server

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware

CASES = [(10 * 1024, 64 * 1024), (100 * 1024, 512 * 1024), (1024 * 1024, 4 * 1024 * 1024)]


def body_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    size = int(environ["PATH_INFO"].rsplit("/", 1)[1])
    start_response("200 OK", [("Content-Length", str(size))])
    return [b"x" * size]  # one big chunk: the middleware re-chunks it


def measure(port: int, size: int) -> tuple[float, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        buffer, arrivals = b"", []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            now = time.perf_counter()
            if arrivals or b"\r\n\r\n" in buffer + data:
                if not arrivals:
                    data = (buffer + data).split(b"\r\n\r\n", 1)[1]
                arrivals.append((now, len(data)))
            else:
                buffer += data
    elapsed = arrivals[-1][0] - arrivals[0][0]
    return (sum(n for _, n in arrivals) - arrivals[0][1]) / elapsed, elapsed


def main() -> None:
    print(f"# {platform.machine()}, Python {platform.python_version()}")
    print(f"{'limit B/s':>12}{'body B':>10}{'achieved B/s':>14}{'error %':>9}{'seconds':>9}")
    for limit, size in CASES:
        config = load_config(
            environ={},
            overrides={
                "enabled": True,
                "traffic_shaping": {"enabled": True, "bandwidth_limit_bps": limit},
            },
        )
        server = make_server(
            "127.0.0.1", 0, ChaosMiddleware(body_app, config=config), threaded=True
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            rate, elapsed = measure(server.server_port, size)
        finally:
            server.shutdown()
            server.server_close()
        error = (rate - limit) / limit * 100
        print(f"{limit:>12}{size:>10}{rate:>14.0f}{error:>+9.2f}{elapsed:>9.2f}")


if __name__ == "__main__":
    main()
