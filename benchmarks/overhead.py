"""Per-request overhead of ChaosMiddleware, in-process (no server, no sockets).

    python benchmarks/overhead.py

Each case calls the WSGI app directly with a prepared environ and a no-op
start_response and consumes the body. A sample is the mean over one batch of calls;
the table shows the median and p99 of the samples and the median overhead over the
bare app. The last case enables latency and fault injection with every probability at
0 (nothing else): the decision is made and nothing is injected, the cheapest enabled
path. ``benchmarks/paths.py`` measures the paths requests under chaos really take.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware

BATCH = 20_000
SAMPLES = int(os.environ.get("SAMPLES", "60"))


def bare_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


def sample(app: Callable[..., Iterable[bytes]]) -> float:
    """Mean microseconds per request over one batch."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/test", "wsgi.input": None}
    start = time.perf_counter_ns()
    for _ in range(BATCH):
        for _chunk in app(environ, start_response):
            pass
    return (time.perf_counter_ns() - start) / BATCH / 1000.0


def cases() -> dict[str, Callable[..., Iterable[bytes]]]:
    disabled = load_config(environ={})
    everything_at_zero = load_config(
        environ={},
        overrides={
            "enabled": True,
            "latency": {"enabled": True, "fixed_delay_ms": 100, "probability": 0.0},
            "fault_injection": {
                "enabled": True,
                "http_error_probability": 0.0,
                "timeout_probability": 0.0,
                "connection_error_probability": 0.0,
                "partial_response_probability": 0.0,
            },
        },
    )
    return {
        "bare app": bare_app,
        "wrapped, disabled": ChaosMiddleware(bare_app, config=disabled),
        "latency and faults on, all at p=0": ChaosMiddleware(bare_app, config=everything_at_zero),
    }


def main() -> None:
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"# {SAMPLES} samples of {BATCH} calls each; microseconds per request")
    print(f"{'case':<32}{'median':>10}{'p99':>10}{'overhead':>10}")
    apps = cases()
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(SAMPLES):  # interleaved, so drift in clock speed hits every case alike
        for name, app in apps.items():
            samples[name].append(sample(app))
    baseline = None
    for name, times in samples.items():
        median = statistics.median(times)
        p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
        baseline = median if baseline is None else baseline
        print(f"{name:<32}{median:>10.3f}{p99:>10.3f}{median - baseline:>+10.3f}")


if __name__ == "__main__":
    main()
