"""How long a verdict takes to answer, and whether it saw the request just finished.

    python benchmarks/verdict_latency.py [--probes 20] [--clients 0]

`mockforge serve --workers 4 --recorder`, and ``--clients`` threads of load (0: idle).
Each probe sends 4 requests with a test id of its own (one per worker, likely), then
times ``GET /api/chaos/verdicts?test_id=...`` and checks that it counted all 4. Prints
the verdict time's median, p90 and max, and how many probes missed a request.
Binds 127.0.0.1 on a free port; bounded by the probe count.
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
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--clients", type=int, default=0)
    options = parser.parse_args()
    times: list[float] = []
    missed = 0
    stop = threading.Event()
    with recording_server("mockforge-verdict-", "v.db") as url:
        try:

            def load() -> None:
                with requests.Session() as http:
                    while not stop.is_set():
                        http.get(url + "/api/test", timeout=10)

            threads = [threading.Thread(target=load) for _ in range(options.clients)]
            for thread in threads:
                thread.start()
            time.sleep(1.0 if threads else 0.0)
            for _ in range(options.probes):
                test_id = uuid.uuid4().hex
                headers = {"X-Mockforge-Test-Id": test_id}
                for n in range(4):  # a fresh connection each: any worker may answer
                    requests.get(f"{url}/probe/{n}", headers=headers, timeout=10)
                asked = time.monotonic()
                found = requests.get(
                    url + "/api/chaos/verdicts", params={"test_id": test_id}, timeout=30
                ).json()["summary"]["calls"]
                times.append(time.monotonic() - asked)
                missed += found != 4
                time.sleep(0.3)
        finally:
            stop.set()
    times.sort()
    print(
        f"# {platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"# 4 workers, {options.clients} clients of load, {len(times)} probes")
    print(
        f"verdict median {statistics.median(times):.3f} s, p90 "
        f"{times[int(0.9 * len(times))]:.3f} s, max {times[-1]:.3f} s; "
        f"{missed} of {len(times)} probes missed a request"
    )


if __name__ == "__main__":
    main()
