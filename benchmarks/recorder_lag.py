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
import statistics
import threading
import time
import uuid

import requests
from _recording_server import recording_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    options = parser.parse_args()
    lags: list[float] = []
    with recording_server("mockforge-lag-", "lag.db") as url:
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
