"""How long after chaos is turned off the requests it held get their answers.

    python benchmarks/release.py [--runs 5] [--redis redis://127.0.0.1:6379/0]

``mockforge serve --workers 2 --admin-port 0`` with a 3 s delay on every request (gthread,
and sync workers with 4 workers and 4 requests), 8 requests in flight; once all are held,
``POST /api/chaos/disable`` on the admin port (gunicorn's master: the workers learn of it
through the store's state version). The figure is the time from sending the disable to
the last held request's answer. Without ``--redis`` only the embedded store is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from mockforge_wsgi.testing import ChaosServer

CHAOS = "chaos:\n  enabled: true\n  latency: {enabled: true, fixed_delay_ms: 3000}\n"


def _get(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def _post(url: str) -> None:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def one_run(workdir: Path, serve: tuple[str, ...], in_flight: int, store: str | None) -> float:
    (workdir / "chaos.yaml").write_text(CHAOS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKFORGE_")}
    if store:
        env["MOCKFORGE_STORE"] = store
    args = (*serve, "--admin-port", "0", "--config", "chaos.yaml", "--access-log", "off")
    with ChaosServer(*args, env=env, inherit_env=False, cwd=workdir) as server:
        found = None
        while found is None:
            found = re.search(r"admin listener at (http://127\.0\.0\.1:\d+)", server.log())
            time.sleep(0.02)
        admin = found[1] + "/api/chaos"
        done: list[float] = []

        def fetch() -> None:
            _get(server.url + "/api/test")
            done.append(time.monotonic())

        threads = [threading.Thread(target=fetch) for _ in range(in_flight)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while json.loads(_get(admin + "/stats"))["counters"].get("latency", 0) < in_flight:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all held:\n{server.log()}")
            time.sleep(0.02)
        time.sleep(0.2)
        sent = time.monotonic()
        _post(admin + "/disable")
        for thread in threads:
            thread.join(30)
        assert len(done) == in_flight
        return max(done) - sent


def _database(url: str | None, run: int) -> str | None:
    """Each run on a Redis database of its own (1-15): no state left by the last run."""
    return None if url is None else f"{url.rsplit('/', 1)[0]}/{run % 15 + 1}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--redis", help="a Redis server (redis://host:port/0) to measure too, on databases 1-15"
    )
    options = parser.parse_args()
    cases: list[tuple[str, tuple[str, ...], int, str | None]] = [
        ("gthread, 2 workers, embedded", ("--workers", "2"), 8, None),
        ("sync, 4 workers, embedded", ("--workers", "4", "--worker-class", "sync"), 4, None),
    ]
    if options.redis:
        cases.append(("gthread, 2 workers, Redis", ("--workers", "2"), 8, options.redis))
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; {options.runs} runs per case"
    )
    print("| case | held | last answer after the disable: min / median / max |")
    print("| --- | ---: | ---: |")
    for name, serve, in_flight, store in cases:
        with tempfile.TemporaryDirectory() as workdir:
            figures = [
                one_run(Path(workdir), serve, in_flight, _database(store, run)) * 1000
                for run in range(options.runs)
            ]
        print(
            f"| {name} | {in_flight} | {min(figures):.0f} / "
            f"{statistics.median(figures):.0f} / {max(figures):.0f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main()
