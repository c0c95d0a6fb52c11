"""Times GET requests over one keep-alive connection; prints the milliseconds as JSON.

Run in a fresh interpreter by the latency-accuracy test, so the client's timing is not
disturbed by the test process (its heap, its leftover threads): what is measured is the
server and the injected delay. The paths are asked in turn (a, b, a, b, ...), so a path
without the delay is timed beside the delayed one, in the same moments of the machine.

Usage: python latency_probe.py HOST:PORT COUNT PATH [PATH ...]  (COUNT requests per path)
Prints ``{"ms": {path: [timings]}, "annotations": {path: [X-Mockforge-Chaos values]}}``.
"""

from __future__ import annotations

import gc
import http.client
import json
import sys
import time


def main() -> None:
    address, count, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    connection = http.client.HTTPConnection(address, timeout=10)
    timings: dict[str, list[float]] = {path: [] for path in paths}
    annotations: dict[str, set[str]] = {path: set() for path in paths}
    gc.disable()
    for _ in range(count):
        for path in paths:
            start = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            timings[path].append((time.perf_counter() - start) * 1000)
            annotations[path].add(str(response.getheader("X-Mockforge-Chaos")))
    gc.enable()
    connection.close()
    found = {path: sorted(values) for path, values in annotations.items()}
    print(json.dumps({"ms": timings, "annotations": found}))


if __name__ == "__main__":
    main()
