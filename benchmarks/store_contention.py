"""The rate-limit check on shared stores, each call timed, with 1 and 4 processes at once.

    python benchmarks/store_contention.py [--calls 20000] [--redis]

Each process builds its own store and RateLimiter (as a gunicorn worker does), waits for
a common start, then times ``RateLimiter.check`` one call at a time under a global limit
that is never reached (1,000,000 rps, burst 1,000,000): the admitted path. Median and
p99 are over every call of every process. Stores: memory (one process only), embedded
``file://`` in lease and exact mode, and with ``--redis`` a redis-server this script
starts on 127.0.0.1 (lease and exact); levels: the global one, or global + per-IP +
per-endpoint (one client, one route). Then the per-request version check of each store
(``state_version``; Redis polls at most every 50 ms and answers from its cache between).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import timeit
from typing import Any

from mockforge_wsgi.config import RateLimitConfig
from mockforge_wsgi.rate_limit import RateLimiter
from mockforge_wsgi.state import store_from_url

NEVER_REFUSED = {"enabled": True, "requests_per_second": 1_000_000, "burst_size": 1_000_000}


THREE_LEVELS = {"per_ip": True, "per_endpoint": True}


def timed_checks(url: str, mode: str, levels: str, calls: int, start_at: float, out: Any) -> None:
    limiter = RateLimiter(store_from_url(url))
    extra = THREE_LEVELS if levels == "three" else {}
    config = RateLimitConfig(**NEVER_REFUSED, **extra, store_mode=mode)
    clock = time.perf_counter_ns
    while time.monotonic() < start_at:
        time.sleep(0.001)
    times = []
    for _ in range(calls):
        begin = clock()
        limiter.check(config, "10.0.0.1", "/hello", time.monotonic())
        times.append(clock() - begin)
    out.put(times)


def run(url: str, mode: str, levels: str, processes: int, calls: int) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.monotonic() + 1.5
    args = (url, mode, levels, calls, start_at, results)
    workers = [context.Process(target=timed_checks, args=args) for _ in range(processes)]
    for worker in workers:
        worker.start()
    times = [t / 1000.0 for _ in workers for t in results.get(timeout=120)]
    for worker in workers:
        worker.join(10)
    return statistics.median(times), statistics.quantiles(times, n=100)[98]


def redis_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="checks per process")
    parser.add_argument("--redis", action="store_true", help="also a local redis-server")
    args = parser.parse_args()
    print(f"# {platform.machine()}, Python {platform.python_version()}, {time.strftime('%F')}")
    print(f"# {args.calls} checks per process, each timed; microseconds")
    print("| store | mode | levels | processes | median us | p99 us |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    server = None
    with tempfile.TemporaryDirectory() as directory:
        urls = ["memory://", f"file://{directory}"]
        if args.redis and shutil.which("redis-server"):
            server, url = redis_server()
            urls.append(url)
        try:
            for url in urls:
                modes = ("exact",) if url == "memory://" else ("lease", "exact")
                for mode, levels in [(m, lv) for m in modes for lv in ("global", "three")]:
                    for processes in (1,) if url == "memory://" else (1, 4):
                        median, p99 = run(url, mode, levels, processes, args.calls)
                        store = url.split(":", 1)[0]
                        print(
                            f"| {store} | {mode} | {levels} | {processes} "
                            f"| {median:.1f} | {p99:.1f} |"
                        )
            print("\n| store | version check, us (timeit, best of 5) |\n| --- | ---: |")
            for url in urls:
                store_of = store_from_url(url)
                store_of.state_version()
                best = min(timeit.repeat(store_of.state_version, number=100_000, repeat=5))
                print(f"| {url.split(':', 1)[0]} | {best / 100_000 * 1e6:.3f} |")
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)


if __name__ == "__main__":
    main()
