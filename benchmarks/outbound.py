"""What outbound chaos costs a call it does not touch (issue 27: at most 2 us).

    python benchmarks/outbound.py

Two measurements:

1. **The interception alone**: urllib3's request step (``HTTPConnectionPool._make_request``)
   and httpx's transport (``HTTPTransport.handle_request``) replaced by a stand-in that
   returns at once, called bare, then through the interception: installed with nothing
   served, served with chaos off, and served with ``chaos.outbound`` on for
   ``payments.internal:443`` while the call goes to another host (the dictionary
   lookup). A sample is the mean over one batch; the table shows the median and p99 of
   the samples and the median overhead over the bare step.
2. **A real call** with requests (one keep-alive Session) to a local HTTP server,
   uninstrumented and through the interception (the non-matching case), in alternating
   batches: the median per call of each, and their difference (noisy: a real call costs
   a hundred times the overhead).
"""

from __future__ import annotations

import http.server
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import requests
from urllib3.connectionpool import HTTPConnectionPool

from mockforge_wsgi import outbound
from mockforge_wsgi.config import config_from_dict
from mockforge_wsgi.engine import ScenarioEngine
from mockforge_wsgi.state import MemoryStore

BATCH = 20_000
SAMPLES = int(os.environ.get("SAMPLES", "40"))
REAL_BATCH = 200
REAL_SAMPLES = int(os.environ.get("REAL_SAMPLES", "20"))


URLOPEN_KEYWORDS: dict[str, Any] = {
    "timeout": None,
    "body": None,
    "headers": {"User-Agent": "python-requests/2.32", "Accept": "*/*"},
    "chunked": False,
    "retries": None,
    "response_conn": None,
    "preload_content": False,
    "decode_content": False,
}


def _stand_in_urllib3(  # urllib3 2's signature (install() checks it)
    self: Any,
    conn: Any,
    method: str,
    url: str,
    body: Any = None,
    headers: Any = None,
    retries: Any = None,
    timeout: Any = None,
    chunked: bool = False,
    response_conn: Any = None,
    preload_content: bool = True,
    decode_content: bool = True,
    enforce_content_length: bool = True,
) -> Any:
    return None


def _stand_in_httpx(transport: Any, request: Any) -> Any:
    return None


def _sample(call: Callable[[], Any]) -> float:
    start = time.perf_counter_ns()
    for _ in range(BATCH):
        call()
    return (time.perf_counter_ns() - start) / BATCH / 1000.0


def _engine(enabled: bool) -> ScenarioEngine:
    config = config_from_dict(
        {
            "enabled": enabled,
            "outbound": {
                "hosts": ["payments.internal:443"],
                "fault_injection": {"http_error_probability": 1.0},
            },
        }
    )
    return ScenarioEngine(config, store=MemoryStore())


def _setups() -> dict[str, Callable[[], None]]:
    def bare() -> None:
        outbound.serve(None)
        outbound.uninstall()

    def installed() -> None:
        outbound.install()
        outbound.serve(None)

    def off() -> None:
        outbound.install()
        outbound.serve(_engine(False))

    def other_host() -> None:
        outbound.install()
        outbound.serve(_engine(True))

    return {
        "uninstrumented": bare,
        "installed, nothing served": installed,
        "served, chaos off": off,
        "on for another host (lookup)": other_host,
    }


def interception() -> None:
    original_pool = HTTPConnectionPool.__dict__["_make_request"]
    original_transport = httpx.HTTPTransport.__dict__["handle_request"]
    HTTPConnectionPool._make_request = _stand_in_urllib3  # type: ignore[method-assign]
    httpx.HTTPTransport.handle_request = _stand_in_httpx  # type: ignore[method-assign]
    pool = HTTPConnectionPool("auth.internal", 443)
    transport = httpx.HTTPTransport()
    request = httpx.Request("GET", "https://auth.internal/token")
    calls: dict[str, Callable[[], Any]] = {
        # with the keywords urllib3's urlopen passes (forwarding them is part of the cost)
        "urllib3": lambda: pool._make_request(None, "GET", "/token", **URLOPEN_KEYWORDS),  # type: ignore[arg-type]
        "httpx": lambda: transport.handle_request(request),
    }
    setups = _setups()
    try:
        print("| library | case | median us | p99 us | overhead us |")
        print("| --- | --- | ---: | ---: | ---: |")
        for library, call in calls.items():
            samples: dict[str, list[float]] = {name: [] for name in setups}
            for _ in range(SAMPLES):  # interleaved: drift hits every case alike
                for name, setup in setups.items():
                    setup()
                    samples[name].append(_sample(call))
            base = statistics.median(samples["uninstrumented"])
            for name, values in samples.items():
                median = statistics.median(values)
                p99 = sorted(values)[int(0.99 * (len(values) - 1))]
                print(f"| {library} | {name} | {median:.3f} | {p99:.3f} | {median - base:+.3f} |")
    finally:
        outbound.serve(None)
        outbound.uninstall()
        HTTPConnectionPool._make_request = original_pool  # type: ignore[method-assign]
        httpx.HTTPTransport.handle_request = original_transport  # type: ignore[method-assign]


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # one write: no Nagle wait between headers and body
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    def log_message(self, *args: Any) -> None:
        pass


def real_calls() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    samples: dict[str, list[float]] = {"uninstrumented": [], "on for another host (lookup)": []}
    setups = _setups()
    try:
        with requests.Session() as session:
            session.get(url)
            for _ in range(REAL_SAMPLES):
                for name in samples:
                    setups[name]()
                    start = time.perf_counter_ns()
                    for _ in range(REAL_BATCH):
                        session.get(url).close()
                    samples[name].append((time.perf_counter_ns() - start) / REAL_BATCH / 1000.0)
    finally:
        outbound.serve(None)
        outbound.uninstall()
        server.shutdown()
        server.server_close()
    bare = statistics.median(samples["uninstrumented"])
    lookup = statistics.median(samples["on for another host (lookup)"])
    print()
    print("| requests.get, keep-alive, local server | median us per call |")
    print("| --- | ---: |")
    print(f"| uninstrumented | {bare:.1f} |")
    print(f"| intercepted, on for another host | {lookup:.1f} |")
    print(f"| difference | {lookup - bare:+.1f} |")


def main() -> None:
    print(f"Python {platform.python_version()}, {platform.machine()}, {SAMPLES} x {BATCH} calls")
    interception()
    real_calls()


if __name__ == "__main__":
    main()
