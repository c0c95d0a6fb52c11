"""What ChaosMiddleware adds to the paths real requests take, in-process.

    python benchmarks/paths.py [--samples 40] [--batch 5000] [--profile CASE]

Each case calls the WSGI app directly with a prepared environ and a no-op
start_response and consumes (and closes) the body; no server, no sockets. A sample is
the mean over one batch of calls; cases are interleaved sample by sample, so drift in
this VM's speed hits every case alike. The table shows each case's median, and what it
adds over the disabled path (median of the per-sample differences).

Cases (each enables only what it names):
- bare app; wrapped, disabled (the baseline of the others);
- admitted under a global limit (memory store; embedded ``file://`` store): 1,000,000
  rps with a burst of 1,000,000, so no request is ever refused;
- latency of 1 ms on every request, with the sleep itself replaced by a no-op: the
  bookkeeping of an injection (the plan, the annotation, the request id, the counters,
  the log and tracing checks), beyond the delay it asked for;
- connection limit never reached (memory store): a slot taken and released per request;
- HTTP 503 fault on every request (the fault replaces the app).

``--styles`` adds the admitted case (memory store) with each ``rate_limit.headers``
other than the default ``both`` (six headers): ``ietf`` and ``legacy`` (three), ``none``.

``--gunicorn`` answers through gunicorn's own ``Response`` (its start_response checks
each header, then the head is formatted and encoded as gunicorn sends it, into a socket
stand-in): what each header costs in a gunicorn worker, beyond building it.

``--flask`` wraps a real Flask route instead of the bare app (the bare-app row is then
the Flask route alone). ``--profile CASE`` runs one case under cProfile and prints its
top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.test import EnvironBuilder

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware
from mockforge_wsgi.state import EmbeddedStore, MemoryStore

App = Callable[..., Iterable[bytes]]

NEVER_REFUSED = {
    "enabled": True,
    "rate_limit": {"enabled": True, "requests_per_second": 1_000_000, "burst_size": 1_000_000},
}


def bare_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


class _Sink:
    def sendall(self, data: bytes) -> None:
        pass


class _GunicornRequest:
    method = "GET"
    version = (1, 1)

    def should_close(self) -> bool:
        return False


def gunicorn_start_response() -> Callable[..., Any]:
    """A start_response doing what a gunicorn worker does with the status and headers:
    check each (``Response.start_response``), then format and send the head."""
    from gunicorn.config import Config
    from gunicorn.http.wsgi import Response

    config, request, sink = Config(), _GunicornRequest(), _Sink()

    def respond(status: str, headers: Any, exc_info: Any = None) -> Any:
        response = Response(request, sink, config)
        response.start_response(status, headers, exc_info)
        response.send_headers()

    return respond


_BASE = EnvironBuilder(path="/api/test", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()


def environ() -> dict[str, Any]:
    """A fresh copy of one GET /api/test environ, as a server builds per request."""
    return dict(_BASE)


def run(app: App, calls: int) -> float:
    """Mean microseconds per request over ``calls`` requests."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        body = app(environ(), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.perf_counter_ns() - start) / calls / 1000.0


def flask_app() -> App:
    """A real Flask route (``--flask``): what a wrapped app costs on its own."""
    from flask import Flask

    app = Flask("bench")

    @app.get("/api/test")
    def hello() -> tuple[str, int, dict[str, str]]:
        return "hello", 200, {"Content-Type": "text/plain"}

    return app.wsgi_app


INNER: Callable[[], App] = lambda: bare_app  # noqa: E731  (--flask: flask_app)


def wrapped(overrides: dict[str, Any], store: Any = None) -> App:
    config = load_config(environ={}, overrides=overrides)
    return ChaosMiddleware(INNER(), config=config, store=store or MemoryStore())


def no_sleep(until: float, deadline: float | None, *args: Any, **kwargs: Any) -> str:
    """Stands in for the delay's sleep: what is timed is everything around it. Says the
    time came ("due": truthy for older trees, whose sleep_until gave a bool)."""
    return "due"


def styles() -> dict[str, App]:
    """The admitted case (memory) with each rate_limit.headers but the default."""
    return {
        f"admitted, memory, headers: {style}": wrapped(
            {**NEVER_REFUSED, "rate_limit": {**NEVER_REFUSED["rate_limit"], "headers": style}}
        )
        for style in ("ietf", "legacy", "none")
    }


def cases(directory: str) -> dict[str, App]:
    # Only the latency case sleeps; where the apply step lives depends on the commit
    # (compare.py runs this script against older trees too).
    for name in ("mockforge_wsgi.apply", "mockforge_wsgi.middleware"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "sleep_until"):
            module.sleep_until = no_sleep  # type: ignore[attr-defined]
    return {
        "bare app": INNER(),
        "wrapped, disabled": wrapped({}),
        "admitted under a global limit, memory": wrapped(NEVER_REFUSED),
        "admitted under a global limit, embedded": wrapped(
            NEVER_REFUSED, EmbeddedStore(directory)
        ),
        "latency 1 ms on every request, sleep not timed": wrapped(
            {
                "enabled": True,
                "latency": {"enabled": True, "fixed_delay_ms": 1, "probability": 1.0},
            }
        ),
        "connection limit never reached": wrapped(
            {"enabled": True, "traffic_shaping": {"enabled": True, "max_connections": 10_000}}
        ),
        "fault http_503 on every request": wrapped(
            {
                "enabled": True,
                "fault_injection": {
                    "enabled": True,
                    "http_error_probability": 1.0,
                    "http_errors": [503],
                },
            }
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--profile", metavar="CASE", help="profile the case with this prefix")
    parser.add_argument("--top", type=int, default=18, help="functions shown by --profile")
    parser.add_argument("--flask", action="store_true", help="a Flask route, not a bare app")
    parser.add_argument("--styles", action="store_true", help="each rate_limit.headers too")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="only these cases")
    parser.add_argument("--gunicorn", action="store_true", help="gunicorn's Response")
    args = parser.parse_args()
    if args.gunicorn:
        global start_response
        start_response = gunicorn_start_response()  # type: ignore[assignment]
    if args.flask:
        global INNER
        INNER = flask_app
    with tempfile.TemporaryDirectory() as directory:
        apps = cases(directory)
        if args.styles:
            apps.update(styles())
        if args.only:
            keep = ("bare app", "wrapped, disabled")
            apps = {n: a for n, a in apps.items() if n in keep or n.startswith(tuple(args.only))}
        if args.profile:
            name = next(n for n in apps if n.startswith(args.profile))
            run(apps[name], 1_000)
            profiler = cProfile.Profile()
            profiler.runcall(run, apps[name], 50_000)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
            return
        for app in apps.values():
            run(app, 1_000)  # warm up: first-request work, caches
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.samples):
            for name, app in apps.items():
                samples[name].append(run(app, args.batch))
    base = samples["wrapped, disabled"]
    print(f"# {platform.machine()}, Python {platform.python_version()}, {time.strftime('%F')}")
    print(f"# {args.samples} interleaved samples of {args.batch} calls; us per request")
    print(f"| {'case':<42} | {'median':>8} | {'p99':>8} | {'added':>8} |")
    print(f"| {'-' * 42} | {'-' * 7}: | {'-' * 7}: | {'-' * 7}: |")
    bare = samples["bare app"]
    for name, times in samples.items():
        median = statistics.median(times)
        p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
        reference = bare if name == "wrapped, disabled" else base
        added = statistics.median(t - r for t, r in zip(times, reference, strict=True))
        shown = "" if name == "bare app" else f"{added:+.2f}"
        print(f"| {name:<42} | {median:>8.2f} | {p99:>8.2f} | {shown:>8} |")
    print("# added: over the disabled path (the disabled row: over the bare app)")


if __name__ == "__main__":
    main()
