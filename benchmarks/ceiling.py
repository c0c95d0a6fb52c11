"""What a sync server reaches against its physical limit under injected latency.

    python benchmarks/ceiling.py [--seconds 6] [--delays 50 200]

With a delay d on every request, W workers and T threads per worker, a synchronous
server answers at most W*T/d requests per second: every answer holds a thread for d.
For each case, ``mockforge serve`` runs on 127.0.0.1 with ``latency.fixed_delay_ms: d``
and ``--admin-port 0``, and twice as many clients as the server has threads send
``GET /api/test`` back to back, so a thread is always waiting. Three kinds of server and
client: gthread workers with clients that keep their connection alive (all opened at
the start, as a connection pool does), the same workers with a new connection per
request, and sync workers (which close every connection after one answer). After a
second of warm-up the answers completed in ``--seconds`` give the rate, shown beside
the ceiling and as a ratio; the connections each worker holds at the end (read from
/proc) show where keep-alive connections landed. Meanwhile one more client asks the
admin port (gunicorn's master, outside the worker threads) ``GET /api/chaos/status``
every 20 ms: its p99 is what a caller of the management API waits while every thread
is held. Every answer must be a 200.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from mockforge_wsgi.testing import ChaosServer

WARM_UP_S = 1.0
ADMIN_EVERY_S = 0.02


class Case(NamedTuple):
    name: str
    workers: int
    threads: int  # per worker; a sync worker has one
    sync: bool
    keep_alive: bool  # else a new connection per request


CASES = [
    Case("gthread, keep-alive", 2, 8, sync=False, keep_alive=True),
    Case("gthread, a connection per request", 2, 8, sync=False, keep_alive=False),
    Case("sync", 4, 1, sync=True, keep_alive=False),
]


class Figures(NamedTuple):
    rps: float
    median_ms: float  # a request's time as its client saw it (the delay plus the queue)
    admin_p99_ms: float
    admin_samples: int
    spread: list[int]  # established connections per worker at the end


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)


def _get(connection: http.client.HTTPConnection, path: str, keep_alive: bool = True) -> None:
    connection.request("GET", path, headers={} if keep_alive else {"Connection": "close"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status}")
    if not keep_alive or response.getheader("Connection", "").lower() == "close":
        connection.close()  # the next request opens a new one


def _admin_url(server: ChaosServer) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"admin listener at (http://127\.0\.0\.1:\d+)", server.log())
        if found:
            return found[1]
        time.sleep(0.02)
    raise RuntimeError(f"no admin listener:\n{server.log()}")


def _spread(server: ChaosServer) -> list[int]:
    """Established connections to the server's port held by each worker (Linux /proc):
    the master's children, each with the sockets among its file descriptors."""
    port = urlsplit(server.url).port
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            established.add(fields[9])  # the socket's inode
    master = server._process.pid if server._process else 0
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    counts = []
    for pid in children:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with_target = os.readlink(fd) if fd.is_symlink() else ""
            if with_target.startswith("socket:["):
                inodes.add(with_target[8:-1])
        counts.append(len(inodes & established))
    return sorted(counts, reverse=True)


def saturate(case: Case, delay_ms: int, seconds: float, workdir: Path) -> Figures:
    (workdir / "chaos.yaml").write_text(
        f"chaos:\n  enabled: true\n  latency: {{enabled: true, fixed_delay_ms: {delay_ms}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")}
    serve = ["--workers", str(case.workers), "--admin-port", "0", "--config", "chaos.yaml"]
    serve += ["--worker-class", "sync"] if case.sync else ["--threads", str(case.threads)]
    serve += ["--access-log", "off"]
    with ChaosServer(*serve, env=env, inherit_env=False, cwd=workdir) as server:
        admin = _admin_url(server)
        clients = 2 * case.workers * case.threads
        start = time.monotonic()
        begin, end = start + WARM_UP_S, start + WARM_UP_S + seconds
        answered: list[list[float]] = [[] for _ in range(clients)]  # durations in the window
        admin_ms: list[float] = []
        failures: list[BaseException] = []
        spread: list[int] = []

        def client(durations: list[float]) -> None:
            connection = _connection(server.url)
            try:
                while (sent := time.monotonic()) < end:
                    _get(connection, "/api/test", case.keep_alive)
                    done = time.monotonic()
                    if begin <= done < end:
                        durations.append(done - sent)
            except BaseException as error:  # reported below, with the server's log
                failures.append(error)
            finally:
                connection.close()

        def admin_client() -> None:
            connection = _connection(admin)
            try:
                while time.monotonic() < end:
                    sent = time.monotonic()
                    _get(connection, "/api/chaos/status")
                    if sent >= begin:
                        admin_ms.append((time.monotonic() - sent) * 1000)
                    if not spread and sent >= end - 0.5:
                        spread.extend(_spread(server))
                    time.sleep(ADMIN_EVERY_S)
            except BaseException as error:
                failures.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(d,)) for d in answered]
        threads.append(threading.Thread(target=admin_client))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)
        if failures:
            raise RuntimeError(f"{failures[0]!r}\n{server.log()[-2000:]}")
    durations = [d for each in answered for d in each]
    return Figures(
        rps=len(durations) / seconds,
        median_ms=statistics.median(durations) * 1000,
        admin_p99_ms=statistics.quantiles(admin_ms, n=100)[98],
        admin_samples=len(admin_ms),
        spread=spread,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0, help="measured, per case")
    parser.add_argument("--delays", type=int, nargs="+", default=[50, 200], help="d in ms")
    options = parser.parse_args()
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; {options.seconds:g} s per case after "
        f"{WARM_UP_S:g} s of warm-up, 2 clients per thread"
    )
    print(
        "| workers, clients | W x T | d | ceiling W*T/d | achieved | ratio | request median "
        "| connections per worker | admin p99 (samples) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in CASES:
        for delay_ms in options.delays:
            with tempfile.TemporaryDirectory() as workdir:
                got = saturate(case, delay_ms, options.seconds, Path(workdir))
            ceiling = case.workers * case.threads * 1000 / delay_ms
            print(
                f"| {case.name} | {case.workers} x {case.threads} | {delay_ms} ms "
                f"| {ceiling:.0f} rps | {got.rps:.1f} rps | {got.rps / ceiling:.2f} "
                f"| {got.median_ms:.0f} ms | {' / '.join(map(str, got.spread))} "
                f"| {got.admin_p99_ms:.1f} ms ({got.admin_samples}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
