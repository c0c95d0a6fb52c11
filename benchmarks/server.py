"""Throughput through a real gunicorn, as a ratio to the same Flask app without chaos.

    bash benchmarks/setup.sh          # wrk, redis-server, Flask-Limiter (once)
    python benchmarks/server.py [--workers 2 4] [--rounds 2] [--seconds 5]

For each worker count and round, every case of ``server_app.py`` runs in turn: gunicorn
(sync workers, the default) on 127.0.0.1, a warm-up, then ``wrk -t2 -c16`` for the
given seconds on ``GET /hello``. The ratio is the case's requests per second over the
plain app's in the same round. Every answer must be a 200 (wrk's non-2xx count is
checked), so no case is measured on refusals. A redis-server is started on a free port.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = [
    ("plain", "plain Flask app (the reference)"),
    ("chaos-disabled", "wrapped, chaos disabled"),
    ("limit-memory", "global limit never hit, memory store (per worker)"),
    ("limit-embedded", "global limit never hit, embedded store, lease"),
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


def measure(case: str, workers: int, seconds: float, redis_url: str) -> float:
    port = free_port()
    env = {**os.environ, "BENCH_CASE": case, "BENCH_REDIS": redis_url}
    env.pop("MOCKFORGE_STORE", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--chdir",
            str(HERE),
            "--log-level",
            "warning",
            "--worker-tmp-dir",
            "/dev/shm",
            "server_app:app",
        ],
        env=env,
    )
    try:
        wait_for(port)
        url = f"http://127.0.0.1:{port}/hello"
        subprocess.run(["wrk", "-t2", "-c16", "-d1s", url], capture_output=True, check=True)
        out = subprocess.run(
            ["wrk", "-t2", "-c16", f"-d{seconds:g}s", url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        server.terminate()
        server.wait(30)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad:
        raise RuntimeError(f"{case}: {bad.group(1)} answers were not 200\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if errors and "timeout" in errors.group(1) and not errors.group(1).endswith("timeout 0"):
        print(f"# {case}: {errors.group(1)}", file=sys.stderr)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
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
            f"-d{args.seconds:g}s, gunicorn sync workers; ratio to the plain app per round"
        )
        for workers in args.workers:
            rates: dict[str, list[float]] = {name: [] for name, _ in cases}
            for _ in range(args.rounds):
                for name, _ in cases:
                    rates[name].append(measure(name, workers, args.seconds, redis_url))
            print(f"\n## gunicorn -w {workers}\n")
            print("| case | requests/s | ratio to plain |")
            print("| --- | ---: | ---: |")
            plain = rates["plain"]
            for name, label in cases:
                shown = "-".join(f"{r:,.0f}" for r in sorted(rates[name]))
                ratios = sorted(r / p for r, p in zip(rates[name], plain, strict=True))
                ratio = "-".join(f"{r:.2f}" for r in ratios)
                print(f"| {label} | {shown} | {ratio} |")
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
