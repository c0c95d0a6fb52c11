"""Proxy mode through real gunicorns: requests per second, the proxy's CPU per request
and a 10 MB body's throughput, beside werkzeug's ProxyMiddleware (the peer).

    bash benchmarks/setup.sh          # wrk (once)
    python benchmarks/proxy.py [--pairs 6] [--seconds 2]

An upstream gunicorn (2 workers, the plain Flask app of ``server_app.py``) stays up:
sync workers (they close every connection, so no proxy can keep one alive), then gthread
workers (4 threads each; they keep connections alive). Each proxy case gets a gunicorn
of its own (2 sync workers) in front of it. wrk runs on ``GET /hello`` of werkzeug's
proxy and of the case back to back, ``--pairs`` times (which one first alternating), as
``server.py`` does; the ratio is the case's requests per second over werkzeug's in that
pair. CPU is the proxy server's own (the upstream's is not counted). The body row is
curl fetching ``GET /big`` (10 MB), the median of five.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import time

from server import Server, free_port, load, pairs, serving, spread

CASES = [
    ("plain", "the upstream itself (no proxy)"),
    ("proxy-werkzeug", "werkzeug ProxyMiddleware (the reference)"),
    ("proxy-chaos-disabled", "ChaosProxy, chaos disabled"),
    ("proxy-limit-embedded", "ChaosProxy, a limit never hit (embedded store)"),
]


def body_rate(server: Server) -> float:
    """MB/s of a 10 MB body fetched with curl, median of five."""
    url = server.url.replace("/hello", "/big")
    rates = []
    for _ in range(5):
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        if int(out[0]) != 10 * 1024 * 1024:
            raise RuntimeError(f"{url}: {out[0]} bytes")
        rates.append(int(out[0]) / float(out[1]) / 1e6)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="werkzeug/case pairs per case")
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run (whole seconds)")
    args = parser.parse_args()
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: bash benchmarks/setup.sh installs it")
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%F')}; wrk -t2 -c16 "
        f"-d{args.seconds:g}s; proxies gunicorn -w 2 sync; "
        f"{args.pairs} pairs per case\n"
    )
    for threads in (0, 4):
        kind = f"gthread ({threads} threads: keep-alive)" if threads else "sync (closes)"
        print(f"\n## upstream workers: {kind}\n")
        table(args.pairs, args.seconds, threads)


def table(count: int, seconds: int, upstream_threads: int) -> None:
    print(
        "| case | requests/s | ratio to werkzeug's proxy (quartiles) "
        "| server CPU us/request | 10 MB body, MB/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    unused = f"redis://127.0.0.1:{free_port()}/0"  # no case here uses Redis
    with serving("plain", 2, unused, upstream_threads) as upstream:
        os.environ["BENCH_UPSTREAM"] = upstream.url.removesuffix("/hello")
        with serving("proxy-werkzeug", 2, unused) as reference:
            for name, label in CASES:
                if name == "plain":
                    server, runs = upstream, pairs(reference, upstream, count, seconds)
                    rate = body_rate(upstream)
                elif name == "proxy-werkzeug":
                    server, runs, rate = reference, [], body_rate(reference)
                else:
                    with serving(name, 2, unused) as server:
                        runs = pairs(reference, server, count, seconds)
                        rate = body_rate(server)
                if runs:
                    ratios = spread([case.rate / base.rate for base, case in runs], ".2f")
                    rps = statistics.median(case.rate for _, case in runs)
                    cpu = statistics.median(case.cpu_us for _, case in runs)
                else:
                    loads = [load(server, seconds) for _ in range(3)]
                    ratios = "1.00"
                    rps = statistics.median(one.rate for one in loads)
                    cpu = statistics.median(one.cpu_us for one in loads)
                print(f"| {label} | {rps:,.0f} | {ratios} | {cpu:.0f} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
