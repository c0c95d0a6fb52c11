"""Times GET requests over one keep-alive connection; prints the milliseconds as JSON.

Run in a fresh interpreter by the latency-accuracy test, so the client's timing is not
disturbed by the test process (its heap, its leftover threads): what is measured is the
server and the injected delay. Usage: python latency_probe.py HOST:PORT PATH COUNT
"""

from __future__ import annotations

import gc
import http.client
import json
import sys
import time


def main() -> None:
    address, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    connection = http.client.HTTPConnection(address, timeout=10)
    timings, annotations = [], set()
    gc.disable()
    for _ in range(count):
        start = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        timings.append((time.perf_counter() - start) * 1000)
        annotations.add(response.getheader("X-Mockforge-Chaos"))
    gc.enable()
    connection.close()
    print(json.dumps({"ms": timings, "annotations": sorted(map(str, annotations))}))


if __name__ == "__main__":
    main()
