"""Throughput through a real gunicorn, as a ratio to the same Flask app without chaos.

    bash benchmarks/setup.sh          # wrk, redis-server, Flask-Limiter (once)
    python benchmarks/server.py [--workers 2 4] [--pairs 8] [--seconds 2]

For each worker count, a gunicorn (sync workers, the default) serving the plain Flask
app stays up; each case of ``server_app.py`` gets its own gunicorn beside it, both on
127.0.0.1 and warmed up, then ``wrk -t2 -c16`` runs on ``GET /hello`` of the plain and
of the case server back to back, ``--pairs`` times (which one first alternates). A
pair's ratio is the case's requests per second over the plain app's in that pair: this
VM's speed drifts by tens of percent over a minute, much less over two runs of a few
seconds. The table shows the median ratio and its quartiles. Every answer must be a 200
(wrk's non-2xx count is checked), so no case is measured on refusals. A redis-server is
started on a free port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = [
    ("plain", "plain Flask app (the reference)"),
    ("plain-with-headers", "plain app adding the admitted path's 7 headers itself"),
    ("chaos-disabled", "wrapped, chaos disabled"),
    ("limit-memory", "global limit never hit, memory store (per worker)"),
    ("limit-embedded", "global limit never hit, embedded store, lease"),
    ("limit-embedded-no-headers", "the same, expose_headers: false"),
    ("limit-embedded-exact", "global limit never hit, embedded store, exact"),
    ("limit-redis", "global limit never hit, Redis, lease"),
    ("limit-redis-exact", "global limit never hit, Redis, exact"),
    ("latency-1us", "latency 0.001 ms on every request (a real sleep call)"),
    ("flask-limiter-memory", "Flask-Limiter 1,000,000/s, memory (per worker)"),
    ("flask-limiter-redis", "Flask-Limiter 1,000,000/s, Redis"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, path: str = "/hello", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as client:
                client.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                if client.recv(12).endswith(b"200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


@contextlib.contextmanager
def serving(case: str, workers: int, redis_url: str) -> Iterator[str]:
    """A gunicorn of ``workers`` sync workers serving the case; yields its URL."""
    port = free_port()
    env = {**os.environ, "BENCH_CASE": case, "BENCH_REDIS": redis_url}
    env.pop("MOCKFORGE_STORE", None)
    args = ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--chdir", str(HERE)]
    args += ["--log-level", "warning", "--worker-tmp-dir", "/dev/shm", "server_app:app"]
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", *args], env=env)
    try:
        wait_for(port)
        url = f"http://127.0.0.1:{port}/hello"
        load(url, 1)  # warm-up: every worker has served, caches are filled
        yield url
    finally:
        server.terminate()
        server.wait(30)


def load(url: str, seconds: int) -> float:
    """Requests per second wrk gets from ``url``; every answer must be a 200."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds:g}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{url}: {bad.group(1)} answers were not 200\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def pairs(plain: str, case: str, count: int, seconds: int) -> tuple[list[float], list[float]]:
    """``count`` back-to-back pairs of runs, plain and case, which first alternating:
    the rates of the case, and its ratio to the plain run beside it in each pair."""
    rates, ratios = [], []
    for index in range(count):
        if index % 2:
            case_rate, plain_rate = load(case, seconds), load(plain, seconds)
        else:
            plain_rate, case_rate = load(plain, seconds), load(case, seconds)
        rates.append(case_rate)
        ratios.append(case_rate / plain_rate)
    return rates, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--pairs", type=int, default=8, help="plain/case pairs per case")
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run (whole seconds)")
    parser.add_argument("--cases", nargs="+", help="only these cases (plain is always run)")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: bash benchmarks/setup.sh installs it")
    cases = [c for c in CASES if not args.cases or c[0] in args.cases or c[0] == "plain"]
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        time.sleep(0.5)
        print(
            f"# {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {time.strftime('%F')}; wrk -t2 -c16 "
            f"-d{args.seconds:g}s, gunicorn sync workers; {args.pairs} plain/case pairs per case"
        )
        for workers in args.workers:
            print(f"\n## gunicorn -w {workers}\n")
            print("| case | requests/s (median) | ratio to plain: median | quartiles |")
            print("| --- | ---: | ---: | ---: |")
            with serving("plain", workers, redis_url) as plain:
                for name, label in cases:
                    if name == "plain":
                        continue
                    with serving(name, workers, redis_url) as url:
                        rates, ratios = pairs(plain, url, args.pairs, args.seconds)
                    low, _, high = statistics.quantiles(ratios, n=4)
                    median, ratio = statistics.median(rates), statistics.median(ratios)
                    row = f"| {label} | {median:,.0f} | {ratio:.2f} | {low:.2f}-{high:.2f} |"
                    print(row, flush=True)
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
