"""How far recorder rows lag behind their requests under load, across workers.

    python benchmarks/recorder_lag.py [--seconds 20] [--clients 16]

`mockforge serve --workers 4 --recorder` under load from ``--clients`` threads; a probe
thread sends a request with a unique path every 0.25 s and times how long until a
search (answered by any worker) finds its row. Prints the lag's median, p90 and max.
Binds 127.0.0.1 on a free port; bounded by time.
"""

from __future__ import annotations

import argparse
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mockforge-lag-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mockforge_wsgi", "serve", "--port", str(port)]
    command += ["--workers", "4", "--recorder", "--recorder-db", str(workdir / "lag.db")]
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 (open for the whole run)
    serve = subprocess.Popen(command, stdout=log, stderr=log, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    lags: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        stop_at = time.monotonic() + options.seconds

        def load() -> None:
            http = requests.Session()
            while time.monotonic() < stop_at:
                http.get(url + "/api/test", timeout=10)

        threads = [threading.Thread(target=load) for _ in range(options.clients)]
        for thread in threads:
            thread.start()
        http = requests.Session()
        while time.monotonic() < stop_at:
            marker = f"/probe-{uuid.uuid4().hex}"
            http.get(url + marker, timeout=10)
            sent = time.monotonic()
            while time.monotonic() - sent < 30:
                found = requests.post(
                    url + "/api/recorder/search", json={"path_prefix": marker}, timeout=10
                ).json()["count"]
                if found:
                    lags.append(time.monotonic() - sent)
                    break
                time.sleep(0.02)
            time.sleep(0.25)
        for thread in threads:
            thread.join()
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        log.close()
    lags.sort()
    print(
        f"# {platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"# 4 workers, {options.clients} clients, {options.seconds:g} s, {len(lags)} probes")
    print(
        f"lag median {statistics.median(lags):.3f} s, p90 {lags[int(0.9 * len(lags))]:.3f} s, "
        f"max {lags[-1]:.3f} s"
    )


if __name__ == "__main__":
    main()
