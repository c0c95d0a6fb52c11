"""Soak: a fault mix through `mockforge serve --workers 4` on a real Redis that is stopped
and started again in the middle; are all 5xx ours, and do memory and files stay flat?

    python benchmarks/soak.py [--minutes 2] [--clients 16] [--outage-s 10]

Needs redis-server on PATH. Everything binds 127.0.0.1 on free ports; the load is
bounded by time (and a request cap). Prints requests and outcomes by kind (injected or
not), the server's own counts, and each worker's RSS and open files at start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

FAULT_MIX = {
    "MOCKFORGE_CHAOS_ENABLED": "true",
    "MOCKFORGE_CHAOS_LATENCY_ENABLED": "true",
    "MOCKFORGE_CHAOS_LATENCY_FIXED_DELAY_MS": "10",
    "MOCKFORGE_CHAOS_LATENCY_PROBABILITY": "0.3",
    "MOCKFORGE_CHAOS_FAULT_INJECTION_ENABLED": "true",
    "MOCKFORGE_CHAOS_FAULT_INJECTION_HTTP_ERRORS": "500,503",
    "MOCKFORGE_CHAOS_FAULT_INJECTION_HTTP_ERROR_PROBABILITY": "0.05",
    "MOCKFORGE_CHAOS_FAULT_INJECTION_TIMEOUT_PROBABILITY": "0.01",
    "MOCKFORGE_CHAOS_FAULT_INJECTION_TIMEOUT_MS": "200",
    "MOCKFORGE_CHAOS_FAULT_INJECTION_CONNECTION_ERROR_PROBABILITY": "0.01",
    "MOCKFORGE_CHAOS_FAULT_INJECTION_PARTIAL_RESPONSE_PROBABILITY": "0.01",
    "MOCKFORGE_CHAOS_RATE_LIMIT_ENABLED": "true",
    "MOCKFORGE_CHAOS_RATE_LIMIT_REQUESTS_PER_SECOND": "400",
    "MOCKFORGE_CHAOS_RATE_LIMIT_BURST_SIZE": "100",
    "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_ENABLED": "true",
    "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_MAX_CONNECTIONS": "12",
    "MOCKFORGE_CHAOS_TRAFFIC_SHAPING_QUEUE_TIMEOUT_MS": "100",
}
MAX_REQUESTS = 2_000_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up in {seconds} s")


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), 1), 10, "redis")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry))
    return sorted(found)


def resources(pid: int) -> tuple[int, int]:
    """RSS in KiB and open file descriptors of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def load(url: str, clients: int, stop_at: float) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    budget = MAX_REQUESTS // clients

    def client() -> None:
        mine: Counter[str] = Counter()
        http = requests.Session()
        http.trust_env = False
        for _ in range(budget):
            if time.monotonic() >= stop_at:
                break
            try:
                response = http.get(url + "/api/test", timeout=10)
            except requests.RequestException as error:
                mine[f"no answer ({type(error).__name__})"] += 1
                http = requests.Session()
                http.trust_env = False
                continue
            injected = "X-Mockforge-Chaos" in response.headers
            kind = "injected" if injected else "not injected"
            mine[f"{response.status_code} {kind}" if response.status_code >= 400 else "2xx"] += 1
        with lock:
            outcomes.update(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--outage-s", type=float, default=10.0)
    options = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="mockforge-soak-"))
    redis = Redis(workdir)
    redis.start()
    port = free_port()
    env = {**os.environ, **FAULT_MIX, "MOCKFORGE_STORE": f"redis://127.0.0.1:{redis.port}/0"}
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 (open for the whole run)
    command = [sys.executable, "-m", "mockforge_wsgi", "serve", "--port", str(port)]
    command += ["--workers", "4", "--threads", "8"]
    serve = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/api/chaos/status", timeout=2).ok, 30, "server")
        load(url, options.clients, time.monotonic() + 3)  # warm up: every worker booted
        workers = children(serve.pid)
        before = {pid: resources(pid) for pid in workers}
        seconds = options.minutes * 60
        start = time.monotonic()
        stop_at = start + seconds
        outage = threading.Timer(seconds / 2, redis.stop)
        back = threading.Timer(seconds / 2 + options.outage_s, redis.start)
        outage.start()
        back.start()
        outcomes = load(url, options.clients, stop_at)
        elapsed = time.monotonic() - start
        back.join()
        time.sleep(1)
        after = {pid: resources(pid) for pid in workers if Path(f"/proc/{pid}").exists()}
        counters = requests.get(url + "/api/chaos/stats", timeout=10).json()["counters"]
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        redis.stop()
        log.close()
    server_log = (workdir / "serve.log").read_text(errors="replace")
    total = sum(outcomes.values())
    print(
        f"# {platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"# {options.minutes:g} min, {options.clients} clients, 4 gthread workers x 8 threads,")
    print(f"# Redis stopped for {options.outage_s:g} s at the middle, then started again")
    print(f"requests        {total}  ({total / elapsed:.0f}/s)")
    for kind, count in sorted(outcomes.items()):
        print(f"  {kind:<36} {count:>8}  {100 * count / total:6.2f}%")
    cuts = counters.get("fault.connection_error", 0) + counters.get("fault.partial_response", 0)
    print(f"server counted (after the outage; Redis came back empty): {counters}")
    print(f"  injected cuts (resets + partial) counted: {cuts}")
    print(f"tracebacks in the server log: {server_log.count('Traceback')}")
    print("worker        RSS KiB start -> end      open files start -> end")
    for pid in workers:
        rss0, fd0 = before[pid]
        rss1, fd1 = after.get(pid, (0, 0))
        print(f"  {pid:<10} {rss0:>8} -> {rss1:<8}        {fd0:>4} -> {fd1}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
