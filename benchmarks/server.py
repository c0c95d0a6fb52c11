"""Throughput through a real gunicorn, as a ratio to the same Flask app without chaos.

    bash benchmarks/setup.sh          # wrk, redis-server, Flask-Limiter (once)
    python benchmarks/server.py [--workers 2 4] [--pairs 8] [--seconds 2]

For each worker count, a gunicorn (sync workers, the default) serving the plain Flask
app stays up; each case of ``server_app.py`` gets its own gunicorn beside it, both on
127.0.0.1 and warmed up, then ``wrk -t2 -c16`` runs on ``GET /hello`` of the plain and
of the case server back to back, ``--pairs`` times (which one first alternates). A
pair's ratio is the case's requests per second over the plain app's in that pair: this
VM's speed drifts by tens of percent over a minute, much less over two runs of a few
seconds. Each run also reads the server's CPU (user + system of gunicorn's master and
workers, from /proc) over the requests wrk completed: the case's CPU per request minus
the plain app's in the same pair is what the case adds to a request through a real
server, less sensitive to how wrk and the server share the 2 cores than throughput.
The table shows medians and quartiles. Every answer must be a 200
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
from typing import NamedTuple

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


class Server(NamedTuple):
    url: str
    pid: int  # gunicorn's master: its workers are its children


@contextlib.contextmanager
def serving(case: str, workers: int, redis_url: str, threads: int = 0) -> Iterator[Server]:
    """A gunicorn of ``workers`` sync workers serving the case (with ``threads``:
    gthread workers, which keep connections alive)."""
    port = free_port()
    env = {**os.environ, "BENCH_CASE": case, "BENCH_REDIS": redis_url}
    env.pop("MOCKFORGE_STORE", None)
    args = ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--chdir", str(HERE)]
    args += ["--log-level", "warning", "--worker-tmp-dir", "/dev/shm", "server_app:app"]
    if threads:
        args += ["--worker-class", "gthread", "--threads", str(threads)]
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", *args], env=env)
    try:
        wait_for(port)
        server = Server(f"http://127.0.0.1:{port}/hello", process.pid)
        load(server, 1)  # warm-up: every worker has served, caches are filled
        yield server
    finally:
        process.terminate()
        process.wait(30)


def cpu_seconds(master: int) -> float:
    """User + system CPU of gunicorn's master and its workers so far (from /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(stat.parent.name), int(fields[1])
        if master in (pid, ppid):
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


class Load(NamedTuple):
    rate: float  # requests per second
    cpu_us: float  # server CPU per request, microseconds


def load(server: Server, seconds: int) -> Load:
    """What wrk gets from ``server``, and the server's CPU per request meanwhile; every
    answer must be a 200."""
    before = cpu_seconds(server.pid)
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds:g}s", server.url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    used = cpu_seconds(server.pid) - before
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{server.url}: {bad.group(1)} answers were not 200\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Load(rate, used / max(requests, 1) * 1e6)


def pairs(plain: Server, case: Server, count: int, seconds: int) -> list[tuple[Load, Load]]:
    """``count`` back-to-back pairs of runs (plain, case), which first alternating."""
    found = []
    for index in range(count):
        if index % 2:
            case_load, plain_load = load(case, seconds), load(plain, seconds)
        else:
            plain_load, case_load = load(plain, seconds), load(case, seconds)
        found.append((plain_load, case_load))
    return found


def spread(values: list[float], form: str) -> str:
    """The median and, in brackets, the quartiles."""
    low, median, high = statistics.quantiles(values, n=4)
    return f"{median:{form}} ({low:{form}} to {high:{form}})"


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
            print(
                "| case | requests/s | ratio to plain (quartiles) "
                "| server CPU us/request | added over plain (quartiles) |"
            )
            print("| --- | ---: | ---: | ---: | ---: |")
            with serving("plain", workers, redis_url) as plain:
                for name, label in cases:
                    if name == "plain":
                        continue
                    with serving(name, workers, redis_url) as server:
                        runs = pairs(plain, server, args.pairs, args.seconds)
                    ratios = [case.rate / base.rate for base, case in runs]
                    added = [case.cpu_us - base.cpu_us for base, case in runs]
                    rate = statistics.median(case.rate for _, case in runs)
                    cpu = statistics.median(case.cpu_us for _, case in runs)
                    print(
                        f"| {label} | {rate:,.0f} | {spread(ratios, '.2f')} "
                        f"| {cpu:.0f} | {spread(added, '+.0f')} |",
                        flush=True,
                    )
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
