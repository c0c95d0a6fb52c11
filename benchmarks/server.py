"""Throughput through a real gunicorn, as a ratio to the same Flask app without chaos.

    bash benchmarks/setup.sh          # wrk, redis-server, Flask-Limiter (once)
    python benchmarks/server.py [--workers 2 4] [--pairs 8] [--seconds 2] [--together]

For each worker count, a gunicorn (sync workers, the default) serving the plain Flask
app stays up; each case of ``server_app.py`` gets its own gunicorn beside it, both on
127.0.0.1 and warmed up, then ``wrk -t2 -c16`` runs on ``GET /hello`` of the plain and
of the case server back to back, ``--pairs`` times (which one first alternates). A
pair's ratio is the case's requests per second over the plain app's in that pair: this
VM's speed drifts by tens of percent over a minute, much less over two runs of a few
seconds. Each run also reads the server's CPU (user + system of gunicorn's master and
workers, from /proc) over the requests wrk completed: the plain app's CPU per request
over the case's in the same pair (the CPU ratio) and their difference (what the case
adds to a request through a real server) are less sensitive than throughput to how wrk
and the server share the 2 cores. The first table shows medians, quartiles and the
range; the second splits the CPU per request (workers' user and system time, the
master's) with the load average and the share of the VM's CPU time the hypervisor took
(steal). ``plain-again`` (a second plain app) shows the noise of
the ratios themselves. ``--together`` loads the plain and the case server at the same
time (a wrk on each) instead of in turns: no drift between the two runs of a pair, and
the scheduler shares the cores between them, so the throughput ratio follows the CPU
ratio. Every answer must be a 200 (wrk's non-2xx count is checked), so no case is
measured on refusals. A redis-server is started on a free port, and emptied before each
case (a server adopts the runtime state it finds there).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
CASES = [
    ("plain", "plain Flask app (the reference)"),
    ("plain-again", "a second plain app (the ratios' own noise)"),
    ("plain-with-headers", "plain app adding the admitted path's 7 headers itself"),
    ("chaos-disabled", "wrapped, chaos disabled"),
    ("limit-memory", "global limit never hit, memory store (per worker)"),
    ("limit-embedded", "global limit never hit, embedded store, lease"),
    ("limit-embedded-no-headers", "the same, expose_headers: false"),
    ("limit-embedded-headers-none", "the same, headers: none"),
    ("limit-embedded-exact", "global limit never hit, embedded store, exact"),
    ("limit-redis", "global limit never hit, Redis, lease"),
    ("limit-redis-headers-none", "the same, headers: none"),
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


class Cpu(NamedTuple):
    """CPU seconds: a gunicorn's workers' user and system time, its master's; of the
    workers' time, what their threads other than the main one took; and Redis's."""

    user: float
    system: float
    master: float
    threads: float  # already in user + system
    redis: float  # the redis-server's, not the gunicorn's

    def __sub__(self, other: object) -> Cpu:
        assert isinstance(other, Cpu)
        return Cpu(*(a - b for a, b in zip(self, other, strict=True)))

    @property
    def total(self) -> float:
        """The gunicorn's: master and workers, every thread."""
        return self.user + self.system + self.master


def _ticks(stat: Path) -> tuple[int, int, int]:
    """(parent pid, user, system clock ticks) of a process or thread."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]), int(fields[12])


def cpu_seconds(master: int, redis: int = 0) -> Cpu:
    """User + system CPU of gunicorn's master and its workers so far (from /proc)."""
    user = system = own = threads = redis_ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        try:
            ppid, utime, stime = _ticks(stat)
            if pid == master:
                own += utime + stime
            elif ppid == master:
                user, system = user + utime, system + stime
                for task in stat.parent.glob("task/[0-9]*/stat"):
                    if int(task.parent.name) != pid:
                        threads += sum(_ticks(task)[1:])
            elif pid == redis:
                redis_ticks += utime + stime
        except OSError:
            continue  # gone meanwhile
    tick = os.sysconf("SC_CLK_TCK")
    return Cpu(user / tick, system / tick, own / tick, threads / tick, redis_ticks / tick)


def machine_ticks() -> tuple[int, int]:
    """(stolen, all) clock ticks of this VM's CPUs so far: the hypervisor's steal time."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


class Load(NamedTuple):
    rate: float  # requests per second
    cpu: Cpu  # CPU per request, microseconds
    steal: float  # of the VM's CPU time meanwhile, what the hypervisor took

    @property
    def cpu_us(self) -> float:
        return self.cpu.total


def load(server: Server, seconds: int, redis: int = 0) -> Load:
    """What wrk gets from ``server``, and the server's (and Redis's) CPU per request
    meanwhile; every answer must be a 200."""
    before, ticks = cpu_seconds(server.pid, redis), machine_ticks()
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds:g}s", server.url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    used = cpu_seconds(server.pid, redis) - before
    stolen, total = (b - a for a, b in zip(ticks, machine_ticks(), strict=True))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{server.url}: {bad.group(1)} answers were not 200\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    per_request = Cpu(*(part / max(requests, 1) * 1e6 for part in used))
    return Load(rate, per_request, stolen / max(total, 1))


def answer_bytes(server: Server) -> int:
    """How many bytes one answer takes on the wire (head and body)."""
    port = int(server.url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        return sum(iter(lambda: len(client.recv(65536)), 0))


def pairs(
    plain: Server, case: Server, count: int, seconds: int, redis: int = 0, together: bool = False
) -> list[tuple[Load, Load]]:
    """``count`` back-to-back pairs of runs (plain, case), which first alternating; or
    (``together``) ``count`` runs of a wrk on each at the same time, so that both meet
    the same speed of the VM (each gets about half of it)."""
    found = []
    for index in range(count):
        if together:
            with ThreadPoolExecutor(2) as both:
                plain_run = both.submit(load, plain, seconds, redis)
                case_load, plain_load = load(case, seconds, redis), plain_run.result()
        elif index % 2:
            case_load, plain_load = load(case, seconds, redis), load(plain, seconds, redis)
        else:
            plain_load, case_load = load(plain, seconds, redis), load(case, seconds, redis)
        found.append((plain_load, case_load))
    return found


def spread(values: list[float], form: str) -> str:
    """The median, the quartiles and the range."""
    low, median, high = statistics.quantiles(values, n=4)
    return (
        f"{median:{form}} ({low:{form}} to {high:{form}}; "
        f"{min(values):{form}} to {max(values):{form}})"
    )


def empty_redis(port: int) -> None:
    """FLUSHALL before each case: a server adopts the runtime state it finds in Redis
    (``state_at_start: auto``), so a case would otherwise run the previous one's config."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"FLUSHALL\r\n")
        if not client.recv(16).startswith(b"+OK"):
            raise RuntimeError("redis-server did not flush")


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages (2 cores: above 2, something waits)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median_cpu(loads: list[Load]) -> str:
    """The medians of the parts of the CPU per request: workers' user / system, master,
    workers' other threads, Redis."""
    return " / ".join(
        f"{statistics.median(getattr(one.cpu, part) for one in loads):.0f}" for part in Cpu._fields
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--pairs", type=int, default=8, help="plain/case pairs per case")
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run (whole seconds)")
    parser.add_argument("--cases", nargs="+", help="only these cases (plain is always run)")
    parser.add_argument(
        "--together", action="store_true", help="load plain and case at once, not in turns"
    )
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
            + (", each pair's two runs at once" if args.together else ", alternating")
        )
        print(f"# load average before: {loadavg()}")
        for workers in args.workers:
            print(f"\n## gunicorn -w {workers}\n")
            print(
                "| case | requests/s | throughput ratio to plain "
                "| server CPU us/request | CPU ratio, plain/case | added CPU us over plain |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            split = []
            with serving("plain", workers, redis_url) as plain:
                plain_size = answer_bytes(plain)
                for name, label in cases:
                    if name == "plain":
                        continue
                    before = loadavg()
                    empty_redis(redis_port)
                    with serving(name, workers, redis_url) as server:
                        runs = pairs(
                            plain, server, args.pairs, args.seconds, redis.pid, args.together
                        )
                        size = answer_bytes(server)
                    ratios = [case.rate / base.rate for base, case in runs]
                    cpu_ratios = [base.cpu_us / case.cpu_us for base, case in runs]
                    added = [case.cpu_us - base.cpu_us for base, case in runs]
                    rate = statistics.median(case.rate for _, case in runs)
                    cpu = statistics.median(case.cpu_us for _, case in runs)
                    print(
                        f"| {label} | {rate:,.0f} | {spread(ratios, '.2f')} "
                        f"| {cpu:.0f} | {spread(cpu_ratios, '.2f')} | {spread(added, '+.0f')} |",
                        flush=True,
                    )
                    split.append(
                        f"| {label} | {size} | {median_cpu([c for _, c in runs])} "
                        f"| {median_cpu([b for b, _ in runs])} | {before} "
                        f"| {statistics.median(one.steal for run in runs for one in run):.0%} |"
                    )
            print(
                "\nCPU us/request, medians: workers' user / workers' system / master / workers'"
                " other threads (in user+system) / redis-server. The plain app's answer is"
                f" {plain_size} bytes.\n\n| case | answer bytes | the case | its plain app "
                "| load average at the start | stolen by the hypervisor |"
                "\n| --- | ---: | ---: | ---: | ---: | ---: |"
            )
            print("\n".join(split))
        print(f"\n# load average after: {loadavg()}")
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
