"""Cost against work: the admitted path with many tracked keys, and the embedded store's
check with many processes.

    python benchmarks/scale.py keys [--keys 1 10 1000 100000] [--stores memory embedded redis]
                                    [--samples 5] [--batch 2000] [--flask]
    python benchmarks/scale.py processes [--processes 1 2 4 8] [--calls 5000]

``keys``: ChaosMiddleware around the bare app (``--flask``: a Flask route) under a
per-IP limit that is never reached (0.001 rps, a burst of 1,000,000: each request moves
its client's bucket 1,000 s ahead, so every key stays tracked for the whole run), with N
clients (``REMOTE_ADDR`` 10.x.y.z) taking turns. Every client is first charged once
(untimed), so the store holds N buckets; then samples of ``batch`` requests go round the
clients, interleaved with the same requests through the middleware with chaos disabled;
*added* is the median of the per-sample differences. On a shared store (embedded,
Redis) lease mode takes one token at a time at this rate: each request is a store call,
as a per-IP limit of a few requests a second per client gives. Redis: a redis-server
this script starts on a free loopback port (as the tests do).

``processes``: ``store_contention.py``'s timed ``RateLimiter.check`` (a global limit
never reached; one call timed at a time, median and p99 over every call of every
process) on the embedded store with 1, 2, 4 and 8 processes at once.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import paths
import store_contention

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.state import store_from_url

PER_IP = {
    "enabled": True,
    "rate_limit": {
        "enabled": True,
        "global_limit": False,
        "per_ip": True,
        "requests_per_second": 0.001,
        "burst_size": 1_000_000,
        "max_tracked_keys": 200_000,
    },
}


def addresses(n: int) -> list[str]:
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)]


def run(app: Callable[..., Iterable[bytes]], clients: list[str], start: int, calls: int) -> float:
    """Mean microseconds per request over ``calls`` requests, clients taken in turn."""
    base = paths._BASE
    respond = paths.start_response
    n = len(clients)
    began = time.perf_counter_ns()
    for i in range(start, start + calls):
        environ = dict(base)
        environ["REMOTE_ADDR"] = clients[i % n]
        body = app(environ, respond)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter_ns() - began) / calls / 1000.0


def keys(args: argparse.Namespace) -> None:
    inner = paths.flask_app if args.flask else (lambda: paths.bare_app)
    server = None
    print(f"# {platform.machine()}, Python {platform.python_version()}, {time.strftime('%F')}")
    print(
        f"# per-IP limit never reached; {args.samples} interleaved samples of {args.batch}"
        f" requests; {'a Flask route' if args.flask else 'the bare app'}; us per request"
    )
    print("| store | tracked keys | disabled us | admitted us | added us | keys held |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as directory:
        try:
            for store_name in args.stores:
                for n in args.keys:
                    if store_name == "memory":
                        url = "memory://"
                    elif store_name == "embedded":
                        url = f"file://{directory}/{n}"
                    else:
                        if server is None:
                            if not shutil.which("redis-server"):
                                print("| redis | (redis-server not installed) | | | | |")
                                break
                            server, redis_url = store_contention.redis_server()
                        url = redis_url.rsplit("/", 1)[0] + f"/{args.keys.index(n) + 1}"
                    store = store_from_url(url, max_keys=200_000)
                    config = load_config(environ={}, overrides=PER_IP)
                    admitted = ChaosMiddleware(inner(), config=config, store=store)
                    disabled = ChaosMiddleware(inner(), config=load_config(environ={}))
                    clients = addresses(n)
                    run(admitted, clients, 0, n)  # every client charged once: n buckets
                    run(disabled, clients, 0, min(n, 1_000))
                    offset = n
                    on: list[float] = []
                    off: list[float] = []
                    for _ in range(args.samples):
                        on.append(run(admitted, clients, offset, args.batch))
                        off.append(run(disabled, clients, offset, args.batch))
                        offset += args.batch
                    added = statistics.median(a - b for a, b in zip(on, off, strict=True))
                    print(
                        f"| {store_name} | {n:,} | {statistics.median(off):.2f} "
                        f"| {statistics.median(on):.2f} | {added:+.2f} | {held(store):} |",
                        flush=True,
                    )
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)


def held(store: Any) -> str:
    """How many buckets the store holds, where it can say (memory, Redis)."""
    tats = getattr(store, "_tats", None)
    if tats is not None:
        return f"{len(tats):,}"
    client = getattr(store, "_redis", None)
    if client is not None and hasattr(client, "dbsize"):
        return f"{client.dbsize():,}"
    return ""


def processes(args: argparse.Namespace) -> None:
    print(f"# {platform.machine()}, Python {platform.python_version()}, {time.strftime('%F')}")
    print(f"# embedded store; {args.calls} checks per process, each timed; microseconds")
    print("| mode | levels | processes | median us | p99 us |")
    print("| --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as directory:
        for mode, levels in (("lease", "global"), ("lease", "three"), ("exact", "global")):
            for count in args.processes:
                url = f"file://{directory}/{mode}-{levels}-{count}"
                median, p99 = store_contention.run(url, mode, levels, count, args.calls)
                print(f"| {mode} | {levels} | {count} | {median:.1f} | {p99:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts = parser.add_subparsers(dest="part", required=True)
    by_keys = parts.add_parser("keys", help="admitted-path cost against tracked keys")
    by_keys.add_argument("--keys", type=int, nargs="+", default=[1, 10, 1_000, 100_000])
    by_keys.add_argument(
        "--stores",
        nargs="+",
        default=["memory", "embedded", "redis"],
        choices=["memory", "embedded", "redis"],
    )
    by_keys.add_argument("--samples", type=int, default=5)
    by_keys.add_argument("--batch", type=int, default=2_000)
    by_keys.add_argument("--flask", action="store_true", help="a Flask route, not a bare app")
    by_processes = parts.add_parser("processes", help="embedded check against processes")
    by_processes.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    by_processes.add_argument("--calls", type=int, default=5_000)
    args = parser.parse_args()
    keys(args) if args.part == "keys" else processes(args)


if __name__ == "__main__":
    main()
