"""Per-request cost of recording: RecorderMiddleware around a bare app, in-process.

    python benchmarks/recorder.py

The cost on the request path is queueing one row (the database is written by a
background thread); it is the difference between the two medians.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mockforge_wsgi.recorder import Recorder, RecorderMiddleware

BATCH = 2_000
SAMPLES = 40


def bare_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


def sample(app: Callable[..., Iterable[bytes]]) -> float:
    start = time.perf_counter_ns()
    for _ in range(BATCH):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/test", "REMOTE_ADDR": "127.0.0.1"}
        body = app(environ, start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter_ns() - start) / BATCH / 1000.0


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        recorder = Recorder(Path(directory) / "bench.db", max_rows=1_000_000)
        apps = {"bare app": bare_app, "recorded": RecorderMiddleware(bare_app, recorder)}
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(SAMPLES):
            for name, app in apps.items():
                samples[name].append(sample(app))
        recorder.flush()
        rows = len(recorder.search({"limit": 1}))
    print(f"# {platform.machine()}, Python {platform.python_version()}")
    print(f"{'case':<12}{'median us':>11}{'p99 us':>9}")
    medians = {}
    for name, values in samples.items():
        medians[name] = statistics.median(values)
        p99 = statistics.quantiles(values, n=100)[98]
        print(f"{name:<12}{medians[name]:>11.2f}{p99:>9.2f}")
    added = medians["recorded"] - medians["bare app"]
    print(f"recording adds {added:.2f} us per request ({rows} row read back)")


if __name__ == "__main__":
    main()
